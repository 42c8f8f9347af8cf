"""The container entrypoint gives tritonserver a WHISPER_ENGINE_SECRET (a random one unless it
is set), directly and through the launcher; run with a stand-in tritonserver and python3."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ENTRYPOINT = Path(__file__).resolve().parents[1] / "scripts" / "container-entrypoint"
# Both stand-ins record the secret they were started with.
RECORDER = """#!/bin/sh
if [ "$1" = --help ]; then exit 0; fi
printf '%s' "${WHISPER_ENGINE_SECRET-unset}" > "$FAKE_OUT"
"""


def _secret(tmp_path, env):
    bin_dir = tmp_path / "triton" / "bin"
    path_dir = tmp_path / "path"
    for folder, name in ((bin_dir, "tritonserver"), (path_dir, "python3")):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(RECORDER)
        (folder / name).chmod(0o755)
    out = tmp_path / "secret"
    base = {"PATH": f"{path_dir}{os.pathsep}{os.environ['PATH']}",
            "TRITONSERVER_DIR": str(tmp_path / "triton"), "FAKE_OUT": str(out),
            "TRITON_ADMIN_KEY": "k", "WHISPER_MODEL_CHECK": "0"}
    result = subprocess.run(["sh", str(ENTRYPOINT)], env={**base, **env}, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return out.read_text()


@pytest.mark.parametrize("supervise", ["0", "1"])
def test_entrypoint_sets_a_random_engine_secret_unless_one_is_given(tmp_path, supervise):
    first = _secret(tmp_path, {"WHISPER_SUPERVISE": supervise})
    second = _secret(tmp_path, {"WHISPER_SUPERVISE": supervise, "WHISPER_ENGINE_SECRET": ""})
    assert re.fullmatch(r"[0-9a-f]{32}", first) and re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second
    given = _secret(tmp_path, {"WHISPER_SUPERVISE": supervise, "WHISPER_ENGINE_SECRET": "mine"})
    assert given == "mine"
