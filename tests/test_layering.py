"""Which package may import which, read from the source with `ast` (nothing is imported or run).

    whisper_triton (client/)       the client: its own distribution, no server code at all
    whisper_service (src/)         the inference library every Python-backend stub imports
    model_repository/*/1/model.py  the stubs themselves
    whisper_ops (src/)             launcher, start-up check, watchdog, servers for tests/bench/soak
    whisper_gateway (src/)         the OpenAI-compatible gateway: a client of Triton

whisper_ops may import whisper_service and whisper_triton; nothing imports whisper_ops but
whisper_ops, the scripts and the tests; the gateway is built on the client alone (no
whisper_service, no faster-whisper or CTranslate2, no whisper_ops), and no server package imports
it (the launcher runs it as a process); and no package reaches into tests/, by import or by
putting it on sys.path.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "client" / "whisper_triton"
SERVICE = ROOT / "src" / "whisper_service"
OPS = ROOT / "src" / "whisper_ops"
GATEWAY = ROOT / "src" / "whisper_gateway"
STUBS = sorted((ROOT / "model_repository").glob("*/1/model.py"))
# What lives in tests/ (corpus, raw_triton, conftest, ...), importable once tests/ is on sys.path.
TEST_MODULES = {"tests"} | {p.stem for p in (ROOT / "tests").glob("*.py")}


def imported_modules(source: str) -> Iterator[Tuple[int, str]]:
    """(line, absolute module name) of every import, wherever it is (functions too).

    Relative imports are the package's own and are left out. `importlib.import_module("x")` and
    `__import__("x")` with a constant name count as imports of x.
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:  # `from tests import corpus`
                yield node.lineno, f"{node.module}.{alias.name}"
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id == "__import__"))):
            yield node.lineno, node.args[0].value


def sys_path_changes(source: str) -> List[int]:
    """Lines that change sys.path (insert, append, extend, assignment to it or to a slice)."""
    def is_sys_path(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "path"
                and isinstance(node.value, ast.Name) and node.value.id == "sys")

    lines = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("insert", "append", "extend") and is_sys_path(node.func.value)):
            lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if is_sys_path(target) or (isinstance(target, ast.Subscript) and is_sys_path(target.value)):
                    lines.append(node.lineno)
    return sorted(lines)


def _python_files(package: Path) -> List[Path]:
    files = sorted(package.rglob("*.py"))
    assert files, f"no Python files in {package}"
    return files


def violations(files: List[Path], forbidden: Set[str]) -> List[str]:
    found = []
    for path in files:
        for line, module in imported_modules(path.read_text()):
            if module.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def test_the_checks_see_every_kind_of_import():
    source = (
        "import os, whisper_ops.launcher\n"
        "from whisper_service.settings import resolve\n"
        "from . import sibling\n"
        "from tests import corpus\n"
        "def later():\n"
        "    import raw_triton\n"
        "    importlib.import_module('whisper_ops.soak')\n"
        "    return __import__('corpus')\n"
    )
    assert sorted({m for _, m in imported_modules(source)}) == sorted({
        "os", "whisper_ops.launcher", "whisper_service.settings",
        "whisper_service.settings.resolve", "tests", "tests.corpus", "raw_triton",
        "whisper_ops.soak", "corpus"})
    assert sys_path_changes("import sys\nsys.path.insert(0, 'tests')\nsys.path[:0] = ['x']\n"
                            "sys.path += ['y']\nsys.path.append('z')\n") == [2, 3, 4, 5]
    # and on the real tree: the launcher does import the watchdog, the stubs the library
    assert "whisper_ops.watchdog" in {m for _, m in imported_modules((OPS / "launcher.py").read_text())}
    assert any(m.startswith("whisper_service") for stub in STUBS
               for _, m in imported_modules(stub.read_text()))


def test_the_inference_library_and_the_stubs_import_neither_ops_nor_tests():
    assert STUBS, "no model_repository/*/1/model.py"
    found = violations(_python_files(SERVICE) + STUBS, {"whisper_ops"} | TEST_MODULES)
    assert not found, "\n".join(found)


def test_the_client_imports_no_server_code_and_nothing_from_tests():
    found = violations(_python_files(CLIENT), {"whisper_service", "whisper_ops"} | TEST_MODULES)
    assert not found, "\n".join(found)


def test_the_gateway_is_a_client_of_triton_only():
    heavy = {"whisper_service", "whisper_ops", "faster_whisper", "ctranslate2", "av",
             "onnxruntime", "triton_python_backend_utils"}
    found = violations(_python_files(GATEWAY), heavy | TEST_MODULES)
    assert not found, "\n".join(found)
    found = violations(_python_files(SERVICE) + STUBS + _python_files(CLIENT) + _python_files(OPS),
                       {"whisper_gateway"})
    assert not found, "\n".join(found)


def test_operational_code_does_not_reach_into_tests():
    found = violations(_python_files(OPS), TEST_MODULES)
    assert not found, "\n".join(found)


def test_no_package_puts_anything_on_sys_path():
    # The stubs add this environment's site-packages (Triton's stub ignores PYTHONPATH): they
    # are the one allowed place, and are not checked here.
    found = [f"{path.relative_to(ROOT)}:{line} changes sys.path"
             for path in (_python_files(CLIENT) + _python_files(SERVICE) + _python_files(OPS)
                          + _python_files(GATEWAY))
             for line in sys_path_changes(path.read_text())]
    assert not found, "\n".join(found)
