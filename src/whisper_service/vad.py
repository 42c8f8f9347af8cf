"""Silero voice activity detection: where speech is, in sample ranges.

The model is the ONNX file faster-whisper ships, run as faster-whisper's own VAD filter runs it
(chunks of 512 samples, each read with the 64 samples before it, the recurrent state carried
from batch to batch), so the spans are the ones faster-whisper finds: a test compares them on
real recordings and noise. It lives here so that a front process needs
ONNX Runtime only, not the faster_whisper package (see faster_whisper_files), and so that
the chunks are built a batch at a time instead of as one copy of the whole upload.
"""

from __future__ import annotations

import threading
from typing import List, Optional, Tuple

import numpy as np

from whisper_service.faster_whisper_files import silero_vad_model

SAMPLE_RATE = 16000
CHUNK = 512           # samples the model judges at a time (32 ms)
CONTEXT = 64          # samples of the chunk before, read with each chunk
# Chunks per model run (the recurrent state runs on between runs, so the probabilities do not
# depend on it). faster-whisper runs 10000 (320 s); measured on 300 s of audio, that holds
# 133 MB of ONNX Runtime intermediates at its peak, 1000 holds 14 MB at the same speed, with
# equal probabilities. Eight long uploads read by the VAD at once made that a gigabyte.
BATCH_CHUNKS = 1000
STATE_SHAPE = (1, 1, 128)


class SileroVad:
    def __init__(self) -> None:
        import onnxruntime  # loaded on first use: about 15 MB per process

        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(
            str(silero_vad_model()), providers=["CPUExecutionProvider"], sess_options=options)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each chunk of the audio, zero-padded to whole chunks (a full
        chunk of zeros when it is whole already, as faster-whisper pads)."""
        chunks = audio.size // CHUNK + 1
        # faster-whisper's VAD reads the last CONTEXT samples of the last chunk as zeros (it
        # zeroes them in place while it builds the contexts): so does this, to find its spans.
        readable = min(audio.size, chunks * CHUNK - CONTEXT)
        h = np.zeros(STATE_SHAPE, np.float32)
        c = np.zeros(STATE_SHAPE, np.float32)
        outputs = []
        for first in range(0, chunks, BATCH_CHUNKS):
            rows = _rows(audio, readable, first, min(chunks, first + BATCH_CHUNKS))
            output, h, c = self.session.run(None, {"input": rows, "h": h, "c": c})
            outputs.append(output.reshape(-1))
        return np.concatenate(outputs)


def _rows(audio: np.ndarray, readable: int, first: int, end: int) -> np.ndarray:
    """[end - first, CONTEXT + CHUNK] float32: chunks first..end-1 of the audio's first
    `readable` samples (zeros after them), each after the last CONTEXT samples of the chunk
    before it (zeros before the first chunk)."""
    begin = first * CHUNK - CONTEXT
    flat = np.zeros((end - first) * CHUNK + CONTEXT, np.float32)
    lo, hi = max(begin, 0), min(end * CHUNK, readable)
    if hi > lo:
        flat[lo - begin:hi - begin] = audio[lo:hi]
    windows = np.lib.stride_tricks.sliding_window_view(flat, CONTEXT + CHUNK)[::CHUNK]
    return np.ascontiguousarray(windows)


_model: Optional[SileroVad] = None
_model_lock = threading.Lock()


def model() -> SileroVad:
    """One session per process, made on first use."""
    global _model
    with _model_lock:
        if _model is None:
            _model = SileroVad()
        return _model


def speech_timestamps(audio: np.ndarray, threshold: float = 0.5,
                      min_silence_duration_ms: int = 2000, speech_pad_ms: int = 400,
                      min_speech_duration_ms: int = 0) -> List[Tuple[int, int]]:
    """Sample ranges of speech, with faster-whisper's VadOptions defaults.

    Speech starts at a chunk whose probability reaches `threshold` and ends where it falls
    below `threshold - 0.15` for at least `min_silence_duration_ms` (a chunk back at the
    threshold meanwhile cancels the end); spans of at most `min_speech_duration_ms` are dropped;
    each span is padded by `speech_pad_ms`, or by half the gap when two spans are closer than
    twice that. (faster-whisper's `max_speech_duration_s` is not offered: it stays unlimited.)
    """
    probabilities = model().probabilities(audio)
    return spans_from_probabilities(probabilities, audio.size, threshold,
                                    min_silence_duration_ms, speech_pad_ms,
                                    min_speech_duration_ms)


def spans_from_probabilities(probabilities: np.ndarray, length: int, threshold: float = 0.5,
                             min_silence_duration_ms: int = 2000, speech_pad_ms: int = 400,
                             min_speech_duration_ms: int = 0) -> List[Tuple[int, int]]:
    """speech_timestamps' rules on per-chunk probabilities of `length` samples of audio."""
    release = max(threshold - 0.15, 0.01)
    min_silence = SAMPLE_RATE * min_silence_duration_ms / 1000
    min_speech = SAMPLE_RATE * min_speech_duration_ms / 1000
    pad = SAMPLE_RATE * speech_pad_ms / 1000

    spans: List[List[int]] = []
    start: Optional[int] = None
    silence_from = 0  # where the current pause began (0: none)
    for i, probability in enumerate(probabilities):
        at = CHUNK * i
        if probability >= threshold:
            silence_from = 0
            if start is None:
                start = at
            continue
        if start is None or probability >= release:
            continue
        if not silence_from:
            silence_from = at
        if at - silence_from < min_silence:
            continue
        if silence_from - start > min_speech:
            spans.append([start, silence_from])
        start, silence_from = None, 0
    if start is not None and length - start > min_speech:
        spans.append([start, length])

    for i, span in enumerate(spans):
        if i == 0:
            span[0] = int(max(0, span[0] - pad))
        if i + 1 == len(spans):
            span[1] = int(min(length, span[1] + pad))
            continue
        following = spans[i + 1]
        gap = following[0] - span[1]
        if gap < 2 * pad:  # close spans meet halfway
            span[1] += gap // 2
            following[0] = max(0, following[0] - gap // 2)
        else:
            span[1] = int(min(length, span[1] + pad))
            following[0] = int(max(0, following[0] - pad))
    return [(begin, end) for begin, end in spans]
