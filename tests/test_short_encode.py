"""English and Mandarin windows are encoded on their speech and a few seconds of padding, not
on the whole 30 s window; other languages, and windows whose language detected on the short
encode is another or unsure, on the whole window (the real base model)."""

from __future__ import annotations

import pytest

import corpus
import evalset
from whisper_service import packing
from whisper_service.accuracy import cer, wer
from whisper_service.audio import decode_audio
from whisper_service.decoder import WhisperDecoder
from whisper_service.decoding import DecodeWindow
from whisper_service.features import WindowFeatures
from whisper_service.options import DecodeOptions
from whisper_service.settings import resolve
from whisper_service.windows import fixed_windows

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def decoder():
    settings = resolve({"model": "base", "cpu_workers": "1", "cpu_threads": "1"},
                       gpu_available=False, env={})
    assert settings.encode_padding_frames == 500  # the CPU's default
    made = WhisperDecoder(settings)
    yield made
    made.release()


def _window(decoder, audio, language=None) -> DecodeWindow:
    features, frames = WindowFeatures(decoder.n_mels)(fixed_windows(audio)[:1])
    return DecodeWindow(features[0], frames[0], DecodeOptions(language=language))


def _encodes(decoder, monkeypatch):
    """The frames of every encode the decoder runs."""
    seen = []
    encode = decoder._encode
    monkeypatch.setattr(decoder, "_encode", lambda features, frames=packing.FRAMES: (
        seen.append(frames) or encode(features, frames)))
    return seen


def _text(result) -> str:
    return "".join(segment.text for segment in result.segments).strip()


@pytest.mark.parametrize("recording", [corpus.JFK, corpus.AISHELL], ids=lambda r: r.language)
@pytest.mark.parametrize("given", [False, True], ids=["detected", "given"])
def test_an_english_or_mandarin_window_is_encoded_on_its_speech_and_5_s_more(
        decoder, monkeypatch, recording, given):
    window = _window(decoder, decode_audio(recording.read_bytes(), 3600),
                     recording.language if given else None)
    seen = _encodes(decoder, monkeypatch)
    result = decoder.decode([window])[0]
    assert seen == [window.num_frames + window.num_frames % 2 + 500] and seen[0] < packing.FRAMES
    assert result.language == recording.language
    assert (result.language_probability < 1.0) is not given  # detected on the short encode
    score = wer if recording.language == "en" else cer
    assert score(recording.transcript, _text(result)) < 0.2


@pytest.mark.skipif(not evalset.available(), reason="../shared/evalset not found")
def test_a_window_in_another_language_is_encoded_whole(decoder, monkeypatch):
    german = next(u for u in evalset.utterances() if u.language == "de")
    audio = evalset.samples(german.path)
    given = _window(decoder, audio, "de")
    seen = _encodes(decoder, monkeypatch)
    result = decoder.decode([given])[0]
    assert seen == [packing.FRAMES] and result.language == "de"
    assert wer(german.reference, _text(result)) < 0.2
    # Detected: encoded short first, like English or Mandarin; German there, so again whole.
    seen.clear()
    detected = decoder.decode([_window(decoder, audio)])[0]
    assert seen == [given.num_frames + given.num_frames % 2 + 500, packing.FRAMES]
    assert detected.language == "de" and _text(detected) == _text(result)
