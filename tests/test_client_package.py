"""The client installs without any server code: client/pyproject.toml builds a wheel of
whisper_triton alone (distribution whisper-triton-client), with the same pinned dependencies,
`cli` extra and `whisper-triton` command as the top-level project."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "client"


def _toml(path: Path) -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads(path.read_text())


@pytest.mark.unit
def test_client_distribution_matches_the_top_level_project():
    top = _toml(ROOT / "pyproject.toml")["project"]
    client = _toml(CLIENT / "pyproject.toml")
    project = client["project"]
    assert project["name"] == "whisper-triton-client"
    assert project["dependencies"] == top["dependencies"]
    assert project["optional-dependencies"] == {"cli": top["optional-dependencies"]["cli"]}
    assert project["scripts"] == {"whisper-triton": "whisper_triton.cli:main"}
    assert project["scripts"]["whisper-triton"] == top["scripts"]["whisper-triton"]
    assert project["version"] == top["version"]
    assert project["requires-python"] == top["requires-python"]
    assert client["tool"]["setuptools"]["packages"] == ["whisper_triton"]
    assert client["build-system"] == _toml(ROOT / "pyproject.toml")["build-system"]


def _builds_wheels_in_place() -> bool:
    """Whether this environment's setuptools can build a wheel without build isolation."""
    return (importlib.util.find_spec("wheel") is not None
            or importlib.util.find_spec("setuptools.command.bdist_wheel") is not None)


@pytest.mark.slow
def test_client_wheel_holds_only_the_client(tmp_path):
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path / "client"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns(
        "__pycache__", "*.pyc", "build", "dist", "*.egg-info"))
    wheels = tmp_path / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels),
           str(source)]
    if _builds_wheels_in_place():
        cmd.insert(4, "--no-build-isolation")
    # else pip fetches the pinned build backend (setuptools) as scripts/_setup.sh's install does
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = wheels.glob("whisper_triton_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = archive.read(metadata).decode()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"whisper_triton"}, sorted(names)
    assert not [n for n in names if "whisper_service" in n or "whisper_ops" in n]
    # every module of the client is in it
    expected = {f"whisper_triton/{p.name}" for p in (CLIENT / "whisper_triton").glob("*.py")}
    assert expected <= set(names), sorted(expected - set(names))
    assert "Name: whisper-triton-client" in meta
    assert "whisper-triton = whisper_triton.cli:main" in scripts
    project = _toml(CLIENT / "pyproject.toml")["project"]
    for requirement in project["dependencies"]:
        assert f"Requires-Dist: {requirement}\n" in meta, requirement
    for requirement in project["optional-dependencies"]["cli"]:
        assert f'Requires-Dist: {requirement}; extra == "cli"' in meta, requirement
