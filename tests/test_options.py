"""The one options schema (whisper_triton.options): client, server, CLI and the model's
config agree on every option, its rule and its message; the language codes match the model.

Every test here is pure (marked unit) except the last, which loads the bundled base model.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest

from whisper_service.errors import InvalidInputError
from whisper_service.options import DecodeOptions, Limits, parse_options
from whisper_triton import (LANGUAGES, OPTIONS, AsyncWhisperClient, InvalidArgumentError,
                            InvalidOptionError, TranscribeOptions, WhisperClient, cli)
from whisper_triton.options import from_tensors, tensors, validate

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "model_repository" / "whisper" / "config.pbtxt"
LIMITS = Limits()
unit = pytest.mark.unit

# Triton config types -> the datatypes clients send.
_CONFIG_TYPES = {"TYPE_STRING": "BYTES", "TYPE_INT32": "INT32", "TYPE_BOOL": "BOOL",
                 "TYPE_FP32": "FP32"}
_WIRE = {"BYTES": lambda v: v.encode("utf-8"), "INT32": np.int32, "BOOL": np.bool_,
         "FP32": np.float32}


def wire(options):
    """What the server's front reads for these client keywords: one value per input, as
    the tensors carry it (UTF-8 bytes, int32, bool, float32)."""
    by_name = {o.name: o for o in OPTIONS}
    return {by_name[k].tensor: _WIRE[by_name[k].datatype](v) for k, v in options.items()}


def client_side(options):
    try:
        return "ok", asdict(TranscribeOptions(**options))
    except InvalidArgumentError as exc:
        return "refused", exc


def server_side(raw, limits=LIMITS):
    try:
        return "ok", asdict(parse_options(raw, limits))
    except InvalidInputError as exc:
        return "refused", exc


# Values the wire can carry (the client also refuses wrong Python types, which no tensor
# can hold: see test_client_unit.test_bad_options_fail_before_sending).
SAME_DECISIONS = [
    {},
    {"language": " EN "}, {"language": "auto"}, {"language": ""}, {"language": "AUTO"},
    {"language": "yue"}, {"language": "haw"}, {"language": "jw"}, {"language": "zh"},
    {"language": "klingon"}, {"language": "english"}, {"language": "xx"}, {"language": "e"},
    {"task": "Translate"}, {"task": " transcribe "}, {"task": ""}, {"task": "summarize"},
    {"beam_size": 1}, {"beam_size": 3}, {"beam_size": 10}, {"beam_size": 0},
    {"beam_size": -2},
    {"temperature": 0.0}, {"temperature": 0.2}, {"temperature": 1.0}, {"temperature": 1.5},
    {"temperature": -0.1}, {"temperature": float("nan")}, {"temperature": float("inf")},
    {"word_timestamps": True}, {"vad_filter": True}, {"word_timestamps": False},
    {"initial_prompt": "以下是普通话的句子。"}, {"initial_prompt": "   "},
    {"hotwords": "ComfyUI Triton"}, {"hotwords": ""},
    {"language": "de", "task": "translate", "beam_size": 2, "word_timestamps": True,
     "vad_filter": True, "initial_prompt": "Guten Tag.", "hotwords": "Kubernetes",
     "temperature": 0.4},
]


@unit
@pytest.mark.parametrize("options", SAME_DECISIONS, ids=repr)
def test_client_and_server_decide_alike(options):
    client, server = client_side(options), server_side(wire(options))
    assert client[0] == server[0], (client, server)
    if client[0] == "ok":
        assert client[1] == server[1]  # the same normalised values, field by field
        return
    refused, reason = client[1], server[1].reason
    assert isinstance(refused, InvalidOptionError) and refused.reason == reason
    option = next(o for o in OPTIONS if o.name == refused.option)
    if option.limit is None:  # options the server bounds name its limit instead
        assert str(refused) == str(server[1])


@unit
@pytest.mark.parametrize("options", [o for o in SAME_DECISIONS if client_side(o)[0] == "ok"],
                         ids=repr)
def test_client_tensors_read_back_as_the_same_options(options):
    sent = TranscribeOptions(**options)
    inputs = {name: array[0, 0] for name, _, array in sent.tensors()}
    assert all(array.shape == (1, 1) for _, _, array in sent.tensors())
    assert asdict(parse_options(inputs, LIMITS)) == asdict(sent)
    assert validate(from_tensors(inputs)) == asdict(sent)


@unit
def test_a_bad_language_gets_one_message_everywhere(capsys, tmp_path):
    with pytest.raises(InvalidArgumentError) as client:
        WhisperClient._options(language="klingon")
    with pytest.raises(InvalidInputError) as server:
        parse_options({"LANGUAGE": b"klingon"}, LIMITS)
    assert str(client.value) == str(server.value)
    assert server.value.reason == client.value.reason == "invalid_language"
    assert str(server.value).startswith("LANGUAGE 'klingon' is not a Whisper language code")
    (tmp_path / "a.wav").write_bytes(b"x")
    assert cli.main(["transcribe", str(tmp_path / "a.wav"), "--language", "klingon"]) == 2
    assert str(server.value) in capsys.readouterr().err


@unit
def test_server_limits_only_add_refusals():
    assert TranscribeOptions(beam_size=11).beam_size == 11  # the server's limit decides
    with pytest.raises(InvalidInputError) as info:
        parse_options({"BEAM_SIZE": 11}, LIMITS)
    assert (str(info.value), info.value.reason) == (
        "BEAM_SIZE 11 is out of range; use 1 to 10.", "invalid_beam_size")
    assert parse_options({"BEAM_SIZE": 4}, Limits(max_beam_size=4)).beam_size == 4
    with pytest.raises(InvalidInputError, match="use 1 to 3"):
        parse_options({"BEAM_SIZE": 4}, Limits(max_beam_size=3))
    long_text = "x" * (LIMITS.max_prompt_chars + 1)
    assert TranscribeOptions(initial_prompt=long_text).initial_prompt == long_text
    for name in ("INITIAL_PROMPT", "HOTWORDS"):
        with pytest.raises(InvalidInputError) as info:
            parse_options({name: long_text.encode()}, LIMITS)
        assert info.value.reason == "text_too_long" and name in str(info.value)


@unit
def test_text_inputs_must_be_utf8_and_unknown_options_are_named():
    with pytest.raises(InvalidInputError) as info:
        parse_options({"HOTWORDS": b"\xff\xfe"}, LIMITS)
    assert info.value.reason == "invalid_text" and "UTF-8" in str(info.value)
    with pytest.raises(InvalidOptionError, match="unknown option.*beamsize") as info:
        validate({"beamsize": 3})
    assert info.value.reason == "unknown_option"
    # Inputs that are not options (AUDIO) are not the schema's business.
    assert parse_options({"AUDIO": b"...", "TASK": b"translate"}, LIMITS).task == "translate"


@unit
def test_the_engine_checks_the_options_it_receives_by_the_same_rules():
    options = parse_options(wire(SAME_DECISIONS[-1]), LIMITS)
    assert DecodeOptions.from_json(options.to_json()) == options
    assert DecodeOptions.from_json(b"") == DecodeOptions()
    assert DecodeOptions.from_json('{"beam_size": 2, "added_later": 1}').beam_size == 2
    for text, reason in [(b"{not json", "invalid_options"), ("[1, 2]", "invalid_options"),
                         ('{"language": "klingon"}', "invalid_language"),
                         ('{"beam_size": true}', "invalid_beam_size"),
                         ('{"temperature": "hot"}', "invalid_temperature")]:
        with pytest.raises(InvalidInputError) as info:
            DecodeOptions.from_json(text)
        assert info.value.reason == reason, text


@unit
def test_validation_is_idempotent():
    for options in SAME_DECISIONS:
        if client_side(options)[0] == "ok":
            once = validate(options)
            assert validate(once) == once


# --- one schema, every surface -----------------------------------------------------------

def _config_inputs():
    text = CONFIG.read_text(encoding="utf-8")
    block = re.search(r"^input \[(.*?)^\]", text, re.S | re.M).group(1)
    inputs = {}
    for entry in re.findall(r"\{([^}]*)\}", block):
        name = re.search(r'name:\s*"(\w+)"', entry).group(1)
        dtype = re.search(r"data_type:\s*(\w+)", entry).group(1)
        optional = re.search(r"optional:\s*true", entry) is not None
        inputs[name] = (_CONFIG_TYPES[dtype], optional)
    return inputs


@unit
def test_every_option_is_an_optional_input_of_the_model():
    inputs = _config_inputs()
    assert inputs.pop("AUDIO") == ("BYTES", False)
    assert inputs == {o.tensor: (o.datatype, True) for o in OPTIONS}
    array_types = {"BYTES": np.object_, "INT32": np.int32, "BOOL": np.bool_, "FP32": np.float32}
    every = {"language": "en", "initial_prompt": "a", "hotwords": "b"}
    sent = tensors(validate(every))
    assert [name for name, _, _ in sent] == [o.tensor for o in OPTIONS]
    assert all(array.dtype == array_types[dtype] and inputs[name][0] == dtype
               for name, dtype, array in sent)


@unit
def test_the_front_model_reads_every_option_input():
    """model_repository/whisper/1/model.py hands `parse_options` the inputs it lists."""
    tree = ast.parse((ROOT / "model_repository" / "whisper" / "1" / "model.py").read_text("utf-8"))
    listed = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "OPTIONAL_INPUTS" for t in node.targets))
    try:
        names = ast.literal_eval(listed)
    except ValueError:  # computed from the schema itself
        return
    assert tuple(names) == tuple(o.tensor for o in OPTIONS)


@unit
def test_every_option_is_a_keyword_of_both_clients_and_a_field_on_both_sides():
    for method in (WhisperClient.transcribe, AsyncWhisperClient.transcribe):
        params = inspect.signature(method).parameters
        for option in OPTIONS:
            assert option.name in params, f"{method.__qualname__} lacks {option.name}"
            assert params[option.name].kind is inspect.Parameter.KEYWORD_ONLY
            assert params[option.name].default == option.default
    for cls in (TranscribeOptions, DecodeOptions):
        assert [(f.name, f.default) for f in fields(cls)] == [(o.name, o.default) for o in OPTIONS]
    assert asdict(DecodeOptions()) == asdict(TranscribeOptions()) == validate({})


@unit
def test_every_option_is_a_cli_flag():
    parser = cli._parser()
    defaults = parser.parse_args(["transcribe", "x.wav"])
    samples = {str: "zh", int: "2", float: "0.5"}
    for option in OPTIONS:
        assert getattr(defaults, option.name) == option.default
        for flag in option.cli_flags:
            if option.type is bool:
                argv, expected = [flag], True
            else:
                text = option.choices[-1] if option.choices else samples[option.type]
                argv, expected = [flag, text], option.type(text)
            args = parser.parse_args(["transcribe", "x.wav"] + argv)
            assert getattr(args, option.name) == expected, flag
    argv = ["transcribe", "x.wav", "--language", "DE", "--task", "translate", "--beam-size",
            "2", "--word-timestamps", "--vad", "--initial-prompt", "Hallo.", "--hotwords",
            "Triton", "--temperature", "0.2"]
    assert cli._options(parser.parse_args(argv)) == {
        "language": "de", "task": "translate", "beam_size": 2, "word_timestamps": True,
        "vad_filter": True, "initial_prompt": "Hallo.", "hotwords": "Triton",
        "temperature": 0.2}
    assert cli._options(parser.parse_args(["transcribe", "x.wav"])) == validate({})


# --- languages ---------------------------------------------------------------------------

@unit
def test_language_codes():
    assert len(LANGUAGES) == len(set(LANGUAGES)) == 100
    assert (LANGUAGES[0], LANGUAGES[-1]) == ("en", "yue")
    assert {"haw", "jw", "yue", "zh"} <= set(LANGUAGES)
    assert all(re.fullmatch(r"[a-z]{2,3}", code) for code in LANGUAGES)
    assert all(TranscribeOptions(language=code.upper()).language == code for code in LANGUAGES)


@unit
def test_schema_modules_need_only_the_client_dependencies():
    """whisper_triton.options/languages import no faster-whisper and nothing of the server,
    and no server module reaches into faster-whisper's private language list."""
    allowed = {"__future__", "dataclasses", "math", "typing", "numpy"}
    for name in ("options.py", "languages.py"):
        tree = ast.parse((ROOT / "client" / "whisper_triton" / name).read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert {a.name.split(".")[0] for a in node.names} <= allowed, name
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in allowed, (name, node.module)
    servers = list((ROOT / "src").rglob("*.py")) + list((ROOT / "model_repository").rglob("*.py"))
    assert not [p for p in servers if "_LANGUAGE_CODES" in p.read_text("utf-8")]


@pytest.mark.model
def test_language_codes_match_the_multilingual_model():
    """Same codes as faster-whisper's public list for the bundled multilingual model, in
    the order of the model's language tokens (base predates "yue", added by large-v3)."""
    from faster_whisper import WhisperModel

    from whisper_service.bundled_models import bundled_model_dir

    path = bundled_model_dir("base")
    if path is None:
        pytest.skip("bundled multilingual model not installed (the `models` extra)")
    model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=1)
    supported = model.supported_languages
    assert len(supported) == len(LANGUAGES) and set(supported) == set(LANGUAGES)
    ids = [model.hf_tokenizer.token_to_id(f"<|{code}|>") for code in LANGUAGES]
    assert ids[-1] is None  # yue
    assert ids[:-1] == list(range(ids[0], ids[0] + len(LANGUAGES) - 1))
