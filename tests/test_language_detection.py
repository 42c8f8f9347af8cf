"""Short clips of unknown language on the real multilingual model: each clip's language is
detected on its speech alone, and clips are packed and decoded by the language detected."""

from __future__ import annotations

import pytest

import corpus
from whisper_service.accuracy import cer, wer
from whisper_service.audio import decode_audio
from whisper_service.decoding import BatchLayout, DecodeWindow
from whisper_service.engine import WhisperEngine
from whisper_service.features import WindowFeatures
from whisper_service.options import DecodeOptions
from whisper_service.settings import resolve
from whisper_service.windows import fixed_windows

pytestmark = pytest.mark.model

CLIPS = (corpus.JFK, corpus.AISHELL, corpus.STEREO)


@pytest.fixture(scope="module", params=[BatchLayout.PER_WINDOW, BatchLayout.BATCHED],
                ids=lambda layout: layout.value)
def engine(request):
    settings = resolve({"model": "base", "cpu_workers": "2", "cpu_threads": "1",
                        "batch_layout": request.param.value,
                        "pack_short_windows": "true"}, gpu_available=False, env={})
    made = WhisperEngine(settings)
    yield made
    made.release()


def _features(engine, recordings):
    windows = [fixed_windows(decode_audio(r.read_bytes(), 3600))[0] for r in recordings]
    return WindowFeatures(engine.n_mels)(windows)


def _text(result):
    return "".join(segment.text for segment in result.segments).strip()


def test_languages_detected_on_speech_alone_agree_with_detection_on_the_padded_window(engine):
    features, frames = _features(engine, CLIPS)
    windows = [DecodeWindow(features[i], frames[i], DecodeOptions()) for i in range(len(CLIPS))]
    detected = engine.decoder.detect_languages(windows)
    alone = engine.decoder.decode(windows)
    assert [next(iter(found)) for found in detected] == [r.language for r in CLIPS]
    assert [result.language for result in alone] == [r.language for r in CLIPS]
    assert all(next(iter(found.values())) > 0.5 for found in detected)


def test_clips_of_unknown_languages_in_one_batch_are_each_decoded_in_their_own(engine,
                                                                               monkeypatch):
    detected, decoded = [], []
    detect, decode = engine.decoder.detect_languages, engine.decoder.decode
    monkeypatch.setattr(engine.decoder, "detect_languages",
                        lambda windows: detected.extend(windows) or detect(windows))
    monkeypatch.setattr(engine.decoder, "decode", lambda windows, fallback=True: decoded.extend(
        windows) or decode(windows, fallback))
    features, frames = _features(engine, CLIPS)
    outcomes = engine.transcribe_windows(features, frames, [DecodeOptions()] * len(CLIPS))
    assert len(detected) == len(CLIPS)
    # The English clips share a window, decoded in English; the Mandarin one is decoded alone
    # in Mandarin (and a clip may be given back by the pack, to be decoded alone).
    shapes = [(len(w.clip_frames or [0]), w.options.language) for w in decoded]
    assert (2, "en") in shapes and (1, "zh") in shapes, shapes
    assert set(shapes) <= {(2, "en"), (1, "en"), (1, "zh")}, shapes
    assert [o.language for o in outcomes] == [r.language for r in CLIPS]
    assert all(o.language_probability < 1.0 for o in outcomes)  # detected, not assumed
    assert wer(corpus.JFK.transcript, _text(outcomes[0])) < 0.2
    assert cer(corpus.AISHELL.transcript, _text(outcomes[1])) < 0.3
    assert "curtain" in _text(outcomes[2]).lower()  # base hears this clip poorly anyway
