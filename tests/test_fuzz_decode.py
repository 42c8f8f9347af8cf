"""The audio decoder against broken and hostile uploads, in-process (cases: tests/fuzz_cases.py).

Every case either decodes to float32 mono 16 kHz samples (finite, no longer than the limit) or
is refused with an InvalidAudioError/InvalidInputError whose message is a sentence (no traceback,
path, error code or class name); nothing raises anything else, opens another input, or
allocates much more than the upload, whatever its headers declare.
"""

from __future__ import annotations

import io
import resource
import tracemalloc

import av
import numpy as np
import pytest
import soundfile

import fuzz_cases
from corpus import AUDIO_DIR, SAMPLE_RATE
from fuzz_cases import Case, sentence_problems
from whisper_service import audio as audio_module
from whisper_service.audio import MAX_SAMPLE_MAGNITUDE, decode_audio
from whisper_service.errors import InvalidAudioError, InvalidInputError
from whisper_service.features import WindowFeatures
from whisper_service.options import DecodeOptions, Limits
from whisper_service.pipeline import MIN_AUDIO_SECONDS, Pipeline

# A hang guard (a decoder stuck in C never returns to a signal handler: the thread method).
pytestmark = [pytest.mark.unit, pytest.mark.timeout(120, method="thread")]
LIMITS = Limits()
# No case holds more than a few seconds; a header lie may stretch them, not to minutes.
PLAUSIBLE_SECONDS = 60.0


@pytest.fixture(autouse=True)
def _in_the_recordings_folder(monkeypatch):
    """Cases that name other files name recordings: found here, should FFmpeg open them."""
    if AUDIO_DIR.is_dir():
        monkeypatch.chdir(AUDIO_DIR)


def _decode_problems(case: Case):
    """(what went wrong or None, the samples or None)."""
    try:
        audio = decode_audio(case.data, LIMITS.max_audio_seconds)
    except InvalidInputError as exc:
        message = str(exc)
        problems = sentence_problems(message)
        if problems:
            return f"refused with {message!r}: {'; '.join(problems)}", None
        if case.refuse and not any(words in message for words in case.refuse):
            return f"refused with {message!r}, which says none of {case.refuse}", None
        return None, None
    except BaseException as exc:  # noqa: BLE001 - the point: nothing else may escape
        return f"raised {type(exc).__name__}: {exc}", None
    if case.refuse:
        return f"decoded {audio.size / SAMPLE_RATE:.2f} s; expected a refusal saying {case.refuse}", None
    if not isinstance(audio, np.ndarray) or audio.dtype != np.float32 or audio.ndim != 1:
        return f"returned {type(audio).__name__} {getattr(audio, 'dtype', '')} {getattr(audio, 'shape', '')}", None
    if not np.all(np.isfinite(audio)):
        return "returned non-finite samples", None
    seconds = audio.size / SAMPLE_RATE
    if seconds > min(LIMITS.max_audio_seconds, PLAUSIBLE_SECONDS):
        return f"returned {seconds:.1f} s of samples", None
    return None, audio


def _prepare_problem(pipeline: Pipeline, case: Case, audio) -> str | None:
    """Pipeline.prepare must agree with decode_audio: a Job where the samples are long enough,
    else a refusal in a sentence."""
    try:
        job = pipeline.prepare(case.data, DecodeOptions())
    except InvalidInputError as exc:
        problems = sentence_problems(str(exc))
        if problems:
            return f"prepare refused with {str(exc)!r}: {'; '.join(problems)}"
        if audio is not None and audio.size >= MIN_AUDIO_SECONDS * SAMPLE_RATE:
            return f"prepare refused what decoded: {exc}"
        return None
    except BaseException as exc:  # noqa: BLE001
        return f"prepare raised {type(exc).__name__}: {exc}"
    if audio is None:
        return "prepare accepted what decode_audio refused"
    if abs(job.duration - audio.size / SAMPLE_RATE) > 1e-6:
        return f"prepare says {job.duration} s, decode_audio {audio.size / SAMPLE_RATE} s"
    return None


@pytest.mark.parametrize("generate", fuzz_cases.GENERATORS, ids=lambda g: g.__name__)
def test_every_case_decodes_or_is_refused_in_a_sentence(generate):
    pipeline = Pipeline(LIMITS, 80)
    cases = list(generate())
    assert cases
    failures = []
    for case in cases:
        problem, audio = _decode_problems(case)
        problem = problem or _prepare_problem(pipeline, case, audio)
        if problem:
            failures.append(f"{case.name} ({len(case.data)} bytes): {problem}")
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n  " + "\n  ".join(failures)


def test_the_cases_cover_what_they_claim():
    names = {case.name for case in fuzz_cases.all_cases()}
    for fmt in fuzz_cases.FORMATS:
        assert sum(name.startswith(f"{fmt}-cut-") for name in names) >= 10, fmt
        assert sum(name.startswith(f"{fmt}-flip-") for name in names) == fuzz_cases.FLIPS_PER_FORMAT
    for needed in ("empty", "text", "wav-2^31-frames-1s-data", "wav-rate-1", "wav-rate-0",
                   "wav-rate-4000000000", "wav-channels-0", "wav-channels-255",
                   "wav-channels-65535", "mp3-id3-4MB", "flac-vorbis-comment-4MB",
                   "wav-in-matroska", "zip-of-wav", "png-image", "video-only-mp4",
                   "two-audio-streams-mkv"):
        assert needed in names, needed
    # The valid files are valid: what the mutations start from decodes to the speech.
    for fmt in fuzz_cases.FORMATS:
        audio = decode_audio(fuzz_cases.valid(fmt), 60)
        assert abs(audio.size / SAMPLE_RATE - fuzz_cases.BASE_SECONDS) < 0.2, fmt


ABSURD_DURATIONS = ("wav-2^31-frames-1s-data", "wav-4GB-data-1s", "rf64-2^31-frames-1s-data",
                    "rf64-2^40-frames-1s-data", "flac-declares-2^36-samples", "wav-rate-1",
                    "wav-rate-1-byte-rate-ok", "wav-rate-100", "mp3-id3-declares-256MB",
                    "wav-chunk-size-loops", "wav-fmt-size-huge", "m4a-largesize")
MEMORY_BOUND_BYTES = 200 * 1024 * 1024


def test_absurd_declared_durations_cost_bounded_memory():
    """A header declaring hours (or a 1 Hz rate that would stretch 1 s of bytes into hours)
    is refused before memory follows the header: Python-side peak (tracemalloc sees NumPy)
    and the process's peak resident size both stay far below a decode of the limit (4 h at
    16 kHz is 0.9 GB of float32)."""
    cases = {case.name: case for case in fuzz_cases.all_cases()}
    control = fuzz_cases.valid("wav")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        decode_audio(control, LIMITS.max_audio_seconds)
        _, control_peak = tracemalloc.get_traced_memory()
        # The measure sees decoded samples at all: the control's 2 s of float32.
        assert control_peak >= fuzz_cases.BASE_SECONDS * SAMPLE_RATE * 4
        for name in ABSURD_DURATIONS:
            tracemalloc.reset_peak()
            with pytest.raises(InvalidInputError):
                decode_audio(cases[name].data, LIMITS.max_audio_seconds)
            _, peak = tracemalloc.get_traced_memory()
            assert peak < MEMORY_BOUND_BYTES, (name, peak)
    finally:
        tracemalloc.stop()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert grown < MEMORY_BOUND_BYTES, grown


@pytest.mark.parametrize("name", ["ffconcat-relative", "hls-relative", "sdp-rtp-sockets",
                                  "ffconcat", "concat-protocol", "file-url"])
def test_uploads_that_name_other_inputs_open_nothing(name):
    """An ffconcat list naming a file relative to the working folder (here, the recordings)
    was decoded from the server's disk; an SDP file opened RTP sockets and waited for them.
    FFmpeg may now open no nested input at all."""
    case = next(c for c in fuzz_cases.all_cases() if c.name == name)
    with pytest.raises(InvalidAudioError, match="could not be decoded") as info:
        decode_audio(case.data, 60)
    assert not sentence_problems(str(info.value))


def _float_wav(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, values.astype(np.float32), SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_samples_beyond_any_scale_are_refused_and_the_largest_accepted_make_finite_features():
    loud = fuzz_cases.speech() / np.max(np.abs(fuzz_cases.speech()))
    accepted = decode_audio(_float_wav(loud * MAX_SAMPLE_MAGNITUDE), 60)
    assert np.all(np.isfinite(WindowFeatures(80).window(accepted)))
    # Integer PCM written as float without scaling still decodes.
    assert decode_audio(_float_wav(loud * 2.0 ** 31), 60).size == loud.size
    with pytest.raises(InvalidAudioError, match="far outside the range of audio") as info:
        decode_audio(_float_wav(loud * 1e20), 60)
    assert not sentence_problems(str(info.value))


def _frames(rate: int, seconds: float, layout: str = "mono"):
    channels = 2 if layout == "stereo" else 1
    samples = np.zeros((channels, int(rate * seconds)), dtype=np.float32)
    for start in range(0, samples.shape[1], 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]),
                                           format="fltp", layout=layout)
        frame.sample_rate = rate
        yield frame


def test_a_stream_that_changes_rate_or_layout_midway_is_resampled_not_refused():
    """A spliced MP3 switches from 16 to 44.1 kHz mid-stream: one resampler refused the
    second part ("Frame does not match AudioResampler setup", reported with a class name)."""
    decoder = audio_module._Decoder(max_samples=60 * SAMPLE_RATE, max_seconds=60,
                                    declared_seconds=0.0, claim=None)
    for frame in [*_frames(16000, 1.0), *_frames(44100, 1.0, "stereo"), *_frames(22050, 0.5)]:
        decoder.add(frame)
    decoder.flush()
    assert abs(decoder.samples().size - 2.5 * SAMPLE_RATE) < 0.01 * SAMPLE_RATE
    with pytest.raises(InvalidAudioError, match="sample rate of 1000 Hz"):
        decoder.add(next(_frames(1000, 0.1)))


def test_ogg_cut_inside_its_last_page_is_refused_and_a_whole_one_is_not():
    ogg = fuzz_cases.valid("ogg")
    assert decode_audio(ogg, 60).size > 0
    for cut in (len(ogg) // 2, len(ogg) - 1):
        with pytest.raises(InvalidAudioError, match="truncated"):
            decode_audio(ogg[:cut], 60)
    # Trailing bytes after the last page are not a cut.
    assert decode_audio(ogg + b"\0" * 10, 60).size > 0


@pytest.mark.parametrize("header,words", [
    (dict(rate=8000), None), (dict(rate=1), "sample rate of 1 Hz"),
    (dict(rate=0), "sample rate of 0 Hz"), (dict(channels=2), None),
    (dict(channels=0), "0 channels"), (dict(channels=65535), "65535 channels"),
])
def test_wav_header_rates_and_channels(header, words):
    second = fuzz_cases.pcm16(fuzz_cases.speech()[:SAMPLE_RATE])
    data = fuzz_cases.wav(second, **header)
    if words is None:
        assert decode_audio(data, 60).size > 0
        return
    with pytest.raises(InvalidAudioError, match=words) as info:
        decode_audio(data, 60)
    assert not sentence_problems(str(info.value))


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "m4a", "mkv"])
def test_a_file_declaring_more_than_the_limit_is_refused_before_it_is_decoded(fmt):
    """Containers whose length is exact say so in their header: no decoding up to the limit
    first (4 h of decoding, 0.9 GB of samples, for a file that will be refused anyway)."""
    data = (fuzz_cases._mux("matroska", [fuzz_cases._audio("flac")]) if fmt == "mkv"
            else fuzz_cases.valid(fmt))
    with pytest.raises(InvalidAudioError, match=r"longer than the limit of 0.5 s \(the file "
                                                r"declares 2 s\)"):
        decode_audio(data, max_seconds=0.5)
