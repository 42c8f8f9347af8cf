"""Pure logic without a model or a server: windows, time maps, token splitting, options,
stitching, settings and the result schema."""

from __future__ import annotations

import json

import numpy as np
import pytest

from whisper_service.accuracy import cer, wer
from whisper_service.errors import InvalidInputError
from whisper_service.options import DecodeOptions, Limits, parse_options
from whisper_service.segments import split_by_timestamps
from whisper_service.settings import mel_bins, read_config_parameters, resolve
from whisper_service.stitch import stitch
from whisper_service.window_result import WindowResult
from whisper_service.windows import (SAMPLE_RATE, WINDOW_SAMPLES, Window, fixed_windows,
                                     speech_windows, tail)
from whisper_triton.result import Transcription

pytestmark = pytest.mark.unit
TS = 1000  # a stand-in timestamp_begin


def tone(seconds, amplitude=0.3, freq=300):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds):
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


# ------------------------------------------------------------------------------- windows
def test_windows_cover_long_audio_within_30_s_and_cut_in_the_quiet():
    # 27 s of sound, 0.5 s pause, 30 s of sound, 0.5 s pause, 10 s of sound
    audio = np.concatenate([tone(27), silence(0.5), tone(30), silence(0.5), tone(10)])
    windows = fixed_windows(audio)
    assert all(w.audio.size <= WINDOW_SAMPLES for w in windows)
    first_cut = windows[1].spans[0][1] / SAMPLE_RATE
    assert 27.0 <= first_cut <= 27.5 + 0.3  # in the pause (or its lead-in)
    # every loud sample belongs to exactly one window
    covered = np.zeros(audio.size, dtype=int)
    for w in windows:
        for _, start, length in w.spans:
            covered[start:start + length] += 1
    loud = np.abs(audio) > 0
    assert covered[loud].min() == 1 and covered.max() == 1


def test_windows_skip_leading_and_inner_silence():
    audio = np.concatenate([silence(50), tone(5), silence(70), tone(3)])
    windows = fixed_windows(audio)
    assert len(windows) == 2
    assert windows[0].start == pytest.approx(50 - 0.3, abs=0.03)
    assert windows[1].start == pytest.approx(125 - 0.3, abs=0.03)


def test_silent_audio_gives_no_window():
    assert fixed_windows(silence(40)) == []
    assert fixed_windows(np.zeros(0, dtype=np.float32)) == []


def test_window_time_maps_back_to_the_upload():
    audio = np.concatenate([tone(2), silence(10), tone(3)])
    speech = [(0, 2 * SAMPLE_RATE), (12 * SAMPLE_RATE, 15 * SAMPLE_RATE)]
    (window,) = speech_windows(audio, speech)
    assert window.duration == pytest.approx(5.0)
    assert window.to_original(1.0) == pytest.approx(1.0)
    assert window.to_original(2.5) == pytest.approx(12.5)
    assert window.to_original(2.0, is_end=True) == pytest.approx(2.0)
    assert window.to_original(2.0) == pytest.approx(12.0)
    assert window.to_original(5.0, is_end=True) == pytest.approx(15.0)


def test_speech_spans_longer_than_a_window_are_split():
    audio = tone(70)
    windows = speech_windows(audio, [(0, audio.size)])
    assert [round(w.duration) for w in windows] == [30, 30, 10]


def test_tail_keeps_the_time_map():
    audio = np.concatenate([tone(2), silence(10), tone(3)])
    (window,) = speech_windows(audio, [(0, 2 * SAMPLE_RATE), (12 * SAMPLE_RATE, 15 * SAMPLE_RATE)])
    rest = tail(window, 1.5)
    assert rest.duration == pytest.approx(3.5)
    assert rest.to_original(0.0) == pytest.approx(1.5)
    assert rest.to_original(1.0) == pytest.approx(12.5)


# ------------------------------------------------------------------------------ options
LIMITS = Limits()


def test_defaults_and_text_inputs():
    options = parse_options({"LANGUAGE": b" ZH ", "TASK": b"translate", "HOTWORDS": b"ComfyUI"}, LIMITS)
    assert options == DecodeOptions(language="zh", task="translate", hotwords="ComfyUI")
    assert parse_options({"LANGUAGE": b"auto"}, LIMITS).language is None
    assert DecodeOptions.from_json(options.to_json()) == options
    assert DecodeOptions.from_json(b"") == DecodeOptions()


@pytest.mark.parametrize("raw,words", [
    ({"LANGUAGE": b"klingon"}, "LANGUAGE"),
    ({"TASK": b"summarize"}, "TASK"),
    ({"BEAM_SIZE": 0}, "BEAM_SIZE"),
    ({"BEAM_SIZE": 11}, "BEAM_SIZE"),
    ({"TEMPERATURE": float("nan")}, "TEMPERATURE"),
    ({"TEMPERATURE": 1.5}, "TEMPERATURE"),
    ({"INITIAL_PROMPT": b"x" * 1001}, "INITIAL_PROMPT"),
    ({"HOTWORDS": b"\xff\xfe"}, "UTF-8"),
])
def test_bad_options_say_what_to_change(raw, words):
    with pytest.raises(InvalidInputError) as info:
        parse_options(raw, LIMITS)
    assert words in str(info.value)


def test_limits_from_parameters():
    limits = Limits.from_parameters({"max_beam_size": "3", "max_audio_seconds": "60"})
    assert limits.max_beam_size == 3 and limits.max_audio_seconds == 60.0
    with pytest.raises(ValueError):
        Limits.from_parameters({"max_beam_size": "0"})


# ----------------------------------------------------------------------------- stitching
def test_stitch_puts_segments_on_the_upload_time_line_in_order():
    audio = np.concatenate([tone(2), silence(10), tone(3)])
    (window,) = speech_windows(audio, [(0, 2 * SAMPLE_RATE), (12 * SAMPLE_RATE, 15 * SAMPLE_RATE)])
    later = Window(audio=tone(1), spans=[(0, 20 * SAMPLE_RATE, SAMPLE_RATE)])
    result = {"language": "en", "language_probability": 0.9, "avg_logprob": -0.2,
              "no_speech_prob": 0.01, "compression_ratio": 1.2, "temperature": 0.0}
    result["language_probs"] = {"en": 0.9}
    results = [
        WindowResult.from_dict(dict(result, segments=[{"start": 20 * 0, "end": 0.5,
                                                       "text": " third"}])),
        WindowResult.from_dict(dict(result, segments=[{"start": 0.0, "end": 1.8, "text": " one"},
                                                      {"start": 2.2, "end": 4.9, "text": " two"}])),
    ]
    out = stitch([later, window], results, DecodeOptions(), duration=21.0)
    assert [(s.start, s.end, s.text) for s in out.segments] == [
        (0.0, 1.8, " one"), (12.2, 14.9, " two"), (20.0, 20.5, " third")]
    assert [s.id for s in out.segments] == [0, 1, 2]
    assert out.text == "one two third" and out.language == "en"


def test_stitch_of_nothing_is_empty():
    out = stitch([], [], DecodeOptions(), duration=3.0)
    assert out.text == "" and out.segments == [] and out.language is None


# ------------------------------------------------------------------------------ settings
def test_auto_settings_follow_the_device(tmp_path):
    cpu = resolve({}, gpu_available=False, env={}, materialize=False)
    assert (cpu.model, cpu.device, cpu.compute_type) == ("base", "cpu", "int8")
    gpu = resolve({}, gpu_available=True, env={}, materialize=False)
    assert (gpu.model, gpu.device, gpu.compute_type) == ("large-v3", "cuda", "float16")
    assert gpu.n_mels == 128 and cpu.n_mels == 80
    assert "no GPU" in cpu.reason


def test_environment_wins_and_model_size_is_an_alias():
    chosen = resolve({"model": "tiny"}, False, env={"MODEL_SIZE": "small"}, materialize=False)
    assert chosen.model == "small"
    chosen = resolve({"model": "tiny"}, False, env={"WHISPER_MODEL": "medium", "MODEL_SIZE": "small"},
                     materialize=False)
    assert chosen.model == "medium"
    with pytest.raises(ValueError):
        resolve({}, False, env={"WHISPER_DEVICE": "cuda"})


def test_mel_bins_from_a_model_directory(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128}))
    assert mel_bins(str(tmp_path)) == 128
    assert mel_bins("distil-large-v3") == 128 and mel_bins("base") == 80


def test_engine_parameters_are_read_from_its_config(tmp_path):
    config = tmp_path / "config.pbtxt"
    config.write_text('parameters { key: "model" value: { string_value: "tiny.en" } }\n'
                      'parameters { key: "device" value: { string_value: "cpu" } }\n')
    assert read_config_parameters(config) == {"model": "tiny.en", "device": "cpu"}


# ------------------------------------------------------------------------ result schema
def test_result_json_round_trip_without_and_with_words():
    data = {"text": "hi", "language": "en", "language_probability": 0.9, "duration": 1.0,
            "task": "transcribe", "duration_after_vad": None,
            "segments": [{"id": 0, "start": 0.0, "end": 1.0, "text": " hi", "avg_logprob": -0.1,
                          "no_speech_prob": 0.0, "compression_ratio": 1.0, "temperature": 0.0,
                          "language": "en", "words": [{"start": 0.0, "end": 0.5, "word": " hi",
                                                       "probability": 0.9}]}]}
    parsed = Transcription.from_json(json.dumps(data))
    assert parsed.words[0].word == " hi"
    assert json.loads(parsed.to_json()) == data
    data["segments"][0].pop("words")
    assert "words" not in json.loads(Transcription.from_dict(data).to_json())["segments"][0]


def test_error_rates():
    assert wer("Ask not, what", "ask not what") == 0.0
    assert wer("a b c d", "a x c") == 0.5
    assert cer("甚至出现", "甚至出") == 0.25


# ------------------------------------------------------------------------------ packing
from whisper_service import packing  # noqa: E402


def test_plan_packs_short_windows_with_equal_keys_first_fit():
    assert packing.plan([400, 1000, 2000, 300, 500, 1500], ["a", "a", "a", None, "b", "a"]) == [
        [0, 1], [2], [3], [4], [5]]
    assert packing.plan([1000] * 4, ["k"] * 4) == [[0, 1], [2, 3]]
    assert packing.plan([500, 500], ["x", "y"]) == [[0], [1]]


def test_pack_features_lays_clips_side_by_side_with_their_own_silence():
    clips = np.stack([np.full((2, 3000), float(i)) for i in range(3)])
    for i in range(3):
        clips[i, :, :] = -1.0          # padding ("silence") of each clip
        clips[i, :, :[400, 300, 200][i]] = i + 1.0
    packed, content = packing.pack_features(clips, [400, 300, 200])
    assert content == 400 + 100 + 300 + 100 + 200
    assert (packed[:, :400] == 1).all() and (packed[:, 400:500] == -1).all()
    assert (packed[:, 500:800] == 2).all() and (packed[:, 900:1100] == 3).all()
    assert (packed[:, 1100:] == -1).all()


def test_split_result_gives_each_clip_its_words_in_its_own_time():
    word = lambda w, s, e: {"word": w, "start": s, "end": e, "probability": 0.9}  # noqa: E731
    packed = WindowResult.from_dict({
        "language": "en", "language_probability": 1.0, "language_probs": {"en": 1.0},
        "avg_logprob": -0.2, "no_speech_prob": 0.0, "compression_ratio": 1.1, "temperature": 0.0,
        "covered": 6.3, "segments": [{"start": 0.0, "end": 6.2, "text": " one two three",
                                      "words": [word(" one", 0.1, 0.6), word(" two", 1.2, 1.8),
                                                word(" three", 5.2, 5.9)]}]})
    # clips of 2 s and 3 s and 1 s: offsets 0, 3 and 7 s (1 s gaps)
    clips = packing.split_result(packed, [200, 300, 100], keep_words=[True, False, True])
    assert [s.text for s in clips[0].segments] == [" one two"]
    assert clips[0].segments[0].words[1].end == 1.8
    assert clips[1].segments[0].text == " three"
    assert (clips[1].segments[0].start, clips[1].segments[0].end) == (2.2, 2.9)
    assert clips[1].segments[0].words is None
    assert clips[2].segments == []
    assert [c.covered for c in clips] == [2.0, 3.0, 0.0]
    # Each clip has its own copy of what the window shared.
    assert clips[0].language_probs is not clips[1].language_probs


def test_a_word_timed_in_the_gap_between_clips_goes_with_its_nearest_word_in_a_clip():
    word = lambda w, s, e: {"word": w, "start": s, "end": e, "probability": 0.9}  # noqa: E731
    # clips of 5 s and 4 s: speech at 0-5 and 6-10 s. Seen served: DTW timed a clip's first
    # word, "Then", at 5.12-5.4 s, in the gap before it, and by its middle it went to the
    # clip before, which said nothing.
    packed = _packed_result([{"start": 5.1, "end": 10.0, "text": "", "words": [
        word(" Then", 5.12, 5.4), word(" you", 6.1, 6.3), word(" go", 6.3, 6.5),
        word(" folder.", 9.5, 9.98), word(" Mm", 9.99, 9.99)]}])
    clips = packing.split_result(packed, [500, 400], keep_words=[True, True])
    assert clips[0].segments == []
    assert clips[1].text == " Then you go folder. Mm"
    # Between two clips' words, it goes with the nearer.
    packed = _packed_result([{"start": 4.0, "end": 7.0, "text": "", "words": [
        word(" silly.", 4.6, 4.95), word(" oh", 5.1, 5.2), word(" Then", 5.6, 5.9),
        word(" you", 6.1, 6.3)]}])
    clips = packing.split_result(packed, [500, 400], keep_words=[True, True])
    assert (clips[0].text, clips[1].text) == (" silly. oh", " Then you")
    # A segment none of whose words touches a clip goes by their middles, as before.
    lost = _packed_result([{"start": 5.0, "end": 5.9, "text": "", "words": [
        word(" uh", 5.05, 5.2), word(" um", 5.7, 5.9)]}])
    assert [c.text for c in packing.split_result(lost, [500, 400], [True, True])] == [" uh", " um"]


def test_a_word_said_across_two_packed_clips_is_caught():
    word = lambda w, s, e: {"word": w, "start": s, "end": e, "probability": 0.9}  # noqa: E731
    # clips of 4 s each: speech at 0-4, 5-9 and 10-14 s (1 s gaps)
    frames = [400, 400, 400]

    def result(*words):
        return _packed_result([{"start": 0.0, "end": 14.0, "text": "", "words": list(words)}])

    # A last word whose timing runs on into the gap (or just past it) is normal DTW.
    assert packing.straddling_words(result(word(" eye.", 3.4, 5.1), word(" he", 5.2, 5.5)),
                                    frames) == 0
    # A word stretched from the middle of clip 2 deep into clip 3: the decode lost its place.
    assert packing.straddling_words(result(word(" comfy", 6.7, 12.5), word(" i", 12.5, 12.6)),
                                    frames) == 1


def test_a_segment_said_across_two_packed_clips_is_caught():
    # clips of 4 s each: speech at 0-4, 5-9 and 10-14 s (1 s gaps)
    frames = [400, 400, 400]

    def crosses(*spans):
        segments = [{"start": a, "end": b, "text": " x"} for a, b in spans]
        return packing.segments_cross_clips(_packed_result(segments), frames)

    # Whisper ends a segment where the next speech starts: no crossing, no alignment needed.
    assert not crosses((0.0, 5.0), (5.0, 9.0), (10.0, 14.0))
    assert not crosses((0.0, 5.1), (5.1, 10.08))
    # The end of clip 1 and the start of clip 2 in one segment: its words must say where to cut.
    assert crosses((0.0, 6.0))
    assert crosses((5.0, 7.0), (7.0, 11.5))
    assert not crosses()


def test_spread_gives_every_worker_a_window_when_clips_allow():
    assert packing.spread([[0, 1, 2, 3]], 2) == [[0, 1], [2, 3]]
    assert packing.spread([[0, 1, 2], [3]], 2) == [[0, 1, 2], [3]]
    assert packing.spread([[0]], 2) == [[0]]
    assert packing.spread([], 2) == []
    assert packing.spread([[0, 1, 2, 3, 4]], 4) == [[0], [1], [2], [3, 4]]


@pytest.mark.parametrize("seconds", [0.02, 4.0, 11.0, 29.97, 30.0])
def test_window_features_equal_faster_whispers_on_30_s_of_padding(seconds):
    from faster_whisper.feature_extractor import FeatureExtractor

    from whisper_service.features import WindowFeatures

    audio = np.concatenate([tone(seconds / 2), tone(seconds / 2, amplitude=0.05, freq=900)])
    for n_mels in (80, 128):
        padded = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        padded[: audio.size] = audio
        expected = FeatureExtractor(feature_size=n_mels)(padded, padding=160)[:, :3000]
        np.testing.assert_allclose(WindowFeatures(n_mels).window(audio), expected, atol=1e-6)


def test_copies_of_one_recording_are_not_packed_together():
    rng = np.random.default_rng(0)

    def smooth(shape):  # log-mel features change slowly from frame to frame
        return np.cumsum(rng.normal(size=shape), axis=1) / 30

    speech, other = smooth((80, 3000)), smooth((80, 3000))
    copy = np.roll(speech, 2, axis=1) * 0.9 + rng.normal(scale=0.05, size=speech.shape)
    features = np.stack([speech, copy, other]).astype(np.float32)
    frames = [400, 402, 400]
    alike = packing.look_alike(features, frames)
    assert alike(0, 1) and not alike(0, 2) and not alike(1, 2)
    assert packing.plan(frames, ["k"] * 3) == [[0, 1, 2]]
    assert packing.plan(frames, ["k"] * 3, alike=alike) == [[0, 2], [1]]


def _packed_result(segments) -> WindowResult:
    return WindowResult.from_dict({
        "language": "en", "language_probability": 1.0, "language_probs": {"en": 1.0},
        "avg_logprob": -0.2, "no_speech_prob": 0.0, "compression_ratio": 1.1, "temperature": 0.0,
        "segments": segments})


def test_batch_layout_follows_the_device_unless_forced():
    assert resolve({}, gpu_available=False, env={}, materialize=False).batch_layout == "per_window"
    assert resolve({}, gpu_available=True, env={}, materialize=False).batch_layout == "batched"
    forced = resolve({"batch_layout": "per_window"}, True, env={"WHISPER_BATCH_LAYOUT": "batched"},
                     materialize=False)
    assert forced.batch_layout == "batched" and "WHISPER_BATCH_LAYOUT" in forced.reason
    with pytest.raises(ValueError, match="batch_layout"):
        resolve({"batch_layout": "gpu"}, False, env={}, materialize=False)
    assert not resolve({}, False, env={"WHISPER_PACK_WINDOWS": "false"},
                       materialize=False).pack_windows


def test_encode_padding_is_short_on_the_cpu_and_packing_follows_it_unless_forced():
    cpu = resolve({}, gpu_available=False, env={}, materialize=False)
    assert (cpu.encode_padding_frames, cpu.pack_windows) == (500, False)
    assert "encode padding 5 s" in cpu.reason and "packing off" in cpu.reason
    gpu = resolve({}, gpu_available=True, env={}, materialize=False)
    assert (gpu.encode_padding_frames, gpu.pack_windows) == (3000, True)
    full = resolve({"encode_padding": "full"}, False, env={}, materialize=False)
    assert (full.encode_padding_frames, full.pack_windows) == (3000, True)
    both = resolve({"encode_padding": "8", "pack_short_windows": "true"}, False, env={},
                   materialize=False)
    assert (both.encode_padding_frames, both.pack_windows) == (800, True)
    forced = resolve({"encode_padding": "8"}, False, env={"WHISPER_ENCODE_PADDING": "2.5"},
                     materialize=False)
    assert forced.encode_padding_frames == 250
    for bad in ("0", "31", "soon"):
        with pytest.raises(ValueError, match="encode_padding"):
            resolve({"encode_padding": bad}, False, env={}, materialize=False)
