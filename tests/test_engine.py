"""WhisperEngine on the real bundled tiny.en model, without a server: how it groups windows.

Every test runs on both batch layouts: per_window (the CPU's) and batched (the GPU's, which
CI has no GPU for: here it runs on the CPU, the same code path but the device)."""

from __future__ import annotations

import numpy as np
import pytest

import corpus
from whisper_service import packing, quality
from whisper_service.accuracy import wer
from whisper_service.audio import decode_audio
from whisper_service.decoding import BatchLayout, DecodeWindow
from whisper_service.engine import WhisperEngine
from whisper_service.features import WindowFeatures
from whisper_service.options import DecodeOptions
from whisper_service.settings import resolve
from whisper_service.windows import fixed_windows


pytestmark = pytest.mark.model


@pytest.fixture(scope="module", params=[BatchLayout.PER_WINDOW, BatchLayout.BATCHED],
                ids=lambda layout: layout.value)
def engine(request):
    settings = resolve({"model": "tiny.en", "cpu_workers": "2", "cpu_threads": "1",
                        "batch_layout": request.param.value,
                        "pack_short_windows": "true"}, gpu_available=False, env={})
    made = WhisperEngine(settings)
    assert made.layout is request.param
    yield made
    made.release()


def _features(engine, recording):
    windows = fixed_windows(decode_audio(recording.read_bytes(), 3600))
    return WindowFeatures(engine.n_mels)(windows[:1])


def _text(result):
    return " ".join(segment.text.strip() for segment in result.segments)


def test_copies_of_one_clip_packed_together_each_get_the_whole_text(engine):
    """Whisper skips a copy when it hears one sentence four times in one window; the word
    timings then run across clips, and the clips must be decoded alone, not lose words."""
    features, frames = _features(engine, corpus.HOTWORDS)
    copies = 4
    outcomes = engine.transcribe_windows(np.repeat(features, copies, axis=0), frames * copies,
                                         [DecodeOptions()] * copies)
    for outcome in outcomes:
        assert wer(corpus.HOTWORDS.transcript, _text(outcome)) < 0.5, _text(outcome)
        assert not quality.too_repetitive(outcome.compression_ratio)


def test_mixed_clips_keep_their_own_words(engine):
    jfk, jfk_frames = _features(engine, corpus.JFK)
    stereo, stereo_frames = _features(engine, corpus.STEREO)
    hot, hot_frames = _features(engine, corpus.HOTWORDS)
    outcomes = engine.transcribe_windows(np.concatenate([jfk, hot, stereo, jfk]),
                                         jfk_frames + hot_frames + stereo_frames + jfk_frames,
                                         [DecodeOptions()] * 4)
    assert wer(corpus.JFK.transcript, _text(outcomes[0])) < 0.2
    assert wer(corpus.HOTWORDS.transcript, _text(outcomes[1])) < 0.5
    assert "curtain" in _text(outcomes[2]).lower()
    assert wer(corpus.JFK.transcript, _text(outcomes[3])) < 0.2


def test_a_pack_whisper_ends_early_is_decoded_on_from_the_next_clip(engine, monkeypatch):
    """hotwords.mp3 stops mid-sentence; packed first, Whisper takes it for the end of the
    window and says end-of-text before jfk and stereo. The engine decodes on from the next
    clip on the same encoder output: every clip gets its words, with no second encode."""
    recordings = [corpus.HOTWORDS, corpus.JFK, corpus.STEREO]
    parts = [_features(engine, r) for r in recordings]
    features = np.concatenate([f for f, _ in parts])
    frames = [n[0] for _, n in parts]
    packed, content = packing.pack_features(features, frames)
    plain = engine.decoder.decode([DecodeWindow(packed, content,
                                                DecodeOptions(word_timestamps=True))], False)[0]
    assert max(s.end for s in plain.segments) < 5.0  # without: only the first clip

    encodes = []
    original = engine.decoder._encode
    monkeypatch.setattr(engine.decoder, "_encode",
                        lambda f, *frames: encodes.append(len(f)) or original(f, *frames))
    outcomes = engine.transcribe_windows(features, frames, [DecodeOptions()] * 3, workers=1)
    assert encodes == [1]
    for recording, outcome in zip(recordings, outcomes):
        limit = 0.5 if recording is corpus.HOTWORDS else 0.2
        if recording is corpus.STEREO:
            assert "curtain" in _text(outcome).lower(), _text(outcome)
        else:
            assert wer(recording.transcript, _text(outcome)) < limit, _text(outcome)


def test_a_pack_is_aligned_only_when_asked_or_when_a_segment_crosses_clips(engine, monkeypatch):
    """Word alignment tells where to cut a segment said across two clips; a pack whose
    segments each stay in one clip is split without it, unless a clip asked for words."""
    recordings = [corpus.JFK, corpus.HOTWORDS, corpus.STEREO]
    parts = [_features(engine, r) for r in recordings]
    features = np.concatenate([f for f, _ in parts])
    frames = [n[0] for _, n in parts]
    aligned, crossings = [], []
    model = engine.decoder.model
    align, cross = model.add_word_timestamps, packing.segments_cross_clips
    monkeypatch.setattr(model, "add_word_timestamps",
                        lambda segments, *a: aligned.append(len(segments)) or align(segments, *a))
    monkeypatch.setattr(packing, "segments_cross_clips",
                        lambda *a, **k: crossings.append(cross(*a, **k)) or crossings[-1])

    plain = engine.transcribe_windows(features, frames, [DecodeOptions()] * 3, workers=1)
    assert len(crossings) == 1 and len(aligned) == int(crossings[0])
    assert all(s.words is None for outcome in plain for s in outcome.segments)
    assert wer(corpus.JFK.transcript, _text(plain[0])) < 0.2, _text(plain[0])
    assert "curtain" in _text(plain[2]).lower(), _text(plain[2])

    aligned.clear()
    options = [DecodeOptions(), DecodeOptions(word_timestamps=True), DecodeOptions()]
    worded = engine.transcribe_windows(features, frames, options, workers=1)
    assert aligned == [1]
    assert all(s.words for s in worded[1].segments)
    assert all(s.words is None for s in worded[0].segments + worded[2].segments)
    assert [_text(o) for o in worded] == [_text(o) for o in plain]
