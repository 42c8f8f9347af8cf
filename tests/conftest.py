"""Shared fixtures: a real Triton server of this repository, started once per test session;
and the layers of the suite, enforced.

Set WHISPER_TEST_HTTP_URL and WHISPER_TEST_GRPC_URL to test a server that is already running
instead (for example one started with scripts/serve).

Every test declares its layer with a marker (see [tool.pytest.ini_options] in pyproject.toml):
`unit` (pure logic), `model` (real weights in-process), `server` (a real Triton server), or,
for a check that needs real time, subprocesses or local sockets but none of those, `slow`.
A `unit` test may not also be `model`, `server` or `slow`, and may not really wait, open a
socket, start a process or open a gRPC channel: `_unit_layer_stays_pure` makes each of those
raise an AssertionError (and fails the test even where code under test swallows it).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy.testing  # noqa: F401 - its first import runs lscpu: here, not inside a unit test
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from corpus import AUDIO_DIR  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parent
LAYERS = ("unit", "model", "server", "slow")
NOT_WITH_UNIT = ("model", "server", "slow")


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: refuse only what would run
def pytest_collection_modifyitems(config, items):
    refused = []
    for item in items:
        if TESTS_DIR not in Path(item.path).resolve().parents:
            continue
        marks = {mark.name for mark in item.iter_markers()}
        if not marks & set(LAYERS):
            refused.append(f"{item.nodeid}: declares no layer; mark it unit, model or server "
                           "(or slow, for real time, subprocesses or local sockets without "
                           "a model or a server)")
        elif "unit" in marks and marks & set(NOT_WITH_UNIT):
            both = ", ".join(sorted(marks & set(NOT_WITH_UNIT)))
            refused.append(f"{item.nodeid}: marked both unit and {both}; a test has one layer")
    if refused:
        raise pytest.UsageError("tests without a layer, or with two:\n  " + "\n  ".join(refused))
    if not AUDIO_DIR.is_dir():
        skip = pytest.mark.skip(reason=f"recordings not found in {AUDIO_DIR}")
        for item in items:
            if "server" in item.keywords or "model" in item.keywords:
                item.add_marker(skip)


# --- the unit layer stays pure ---------------------------------------------------------------

# Who to tell about a forbidden operation: set while a unit test runs.
_GUARD_STATE = {"refuse": None}
_CALL_FAILED = pytest.StashKey[bool]()
# Operations in C that the patches below cannot see (a gevent socket, os.posix_spawn...):
# audit events, checked by a hook that only acts while a unit test runs.
_AUDITED = {
    "socket.connect": "connect a socket", "socket.bind": "bind a socket",
    "subprocess.Popen": "start a subprocess", "os.posix_spawn": "start a subprocess",
    "os.exec": "exec a program", "os.spawn": "start a subprocess", "os.system":
    "run a shell command", "os.fork": "fork", "os.forkpty": "fork",
}


def _audit(event, args):
    refuse = _GUARD_STATE["refuse"]
    if refuse is not None and event in _AUDITED:
        refuse(_AUDITED[event], detail=repr(args[1]) if event.startswith("socket.") else "")


sys.addaudithook(_audit)
_GRPC = []  # grpc and grpc.aio once imported, for their channel constructors


def _grpc_modules():
    if not _GRPC and importlib.util.find_spec("grpc") is not None:
        import grpc
        import grpc.aio

        _GRPC.extend([grpc, grpc.aio])
    return _GRPC


@pytest.fixture(autouse=True)
def _unit_layer_stays_pure(request):
    """In a `unit` test: no real waiting (time.sleep, asyncio.sleep with a positive time;
    asyncio.sleep(0) is a plain yield and allowed), no sockets (connect, bind, a gRPC
    channel), no subprocesses."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    refused = []

    def refuse(what: str, detail: str = "") -> None:
        message = (f"the unit layer may not {what}{' ' + detail if detail else ''}: use a "
                   "stand-in (fake clock, fake transport...), or move the test to another "
                   "layer (slow, model, server); see tests/conftest.py")
        refused.append(message)
        raise AssertionError(message)

    real_sleep, real_async_sleep = time.sleep, asyncio.sleep

    def sleep(seconds):
        if seconds > 0:
            refuse(f"sleep ({seconds} s with time.sleep)")
        return real_sleep(seconds)

    async def async_sleep(delay, result=None):
        if delay > 0:
            refuse(f"sleep ({delay} s with asyncio.sleep)")
        return await real_async_sleep(delay, result)

    def forbidden(what):
        def refused_call(*args, **kwargs):
            refuse(what)
        return refused_call

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "sleep", sleep)
        patch.setattr(asyncio, "sleep", async_sleep)
        patch.setattr(asyncio.tasks, "sleep", async_sleep)
        patch.setattr(socket.socket, "connect", forbidden("connect a socket"))
        patch.setattr(socket.socket, "connect_ex", forbidden("connect a socket"))
        patch.setattr(socket.socket, "bind", forbidden("bind a socket"))
        patch.setattr(subprocess, "Popen", forbidden("start a subprocess"))
        for module in _grpc_modules():
            for name in ("insecure_channel", "secure_channel"):
                patch.setattr(module, name, forbidden(f"open a gRPC channel ({name})"))
        _GUARD_STATE["refuse"] = refuse
        try:
            yield
        finally:
            _GUARD_STATE["refuse"] = None
    # Fail it here too where the test passed anyway: the code under test swallowed the error.
    if refused and not request.node.stash.get(_CALL_FAILED, False):
        pytest.fail("\n".join(dict.fromkeys(refused)), pytrace=False)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # A refused call can leave a half-made object (a tritonclient whose channel was refused)
    # whose __del__ fails; collected while pytest parses source for the report, it trips
    # CPython 3.11's "AST constructor recursion depth mismatch". Collect it first.
    if call.excinfo is not None and item.get_closest_marker("unit") is not None:
        gc.collect()
    outcome = yield
    if call.when == "call":
        item.stash[_CALL_FAILED] = outcome.get_result().failed


# --- a real server ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def triton_server():
    http_url = os.environ.get("WHISPER_TEST_HTTP_URL")
    grpc_url = os.environ.get("WHISPER_TEST_GRPC_URL")
    if http_url and grpc_url:
        yield SimpleNamespace(http_url=http_url, grpc_url=grpc_url, managed=None,
                              metrics_url=os.environ.get("WHISPER_TEST_METRICS_URL"))
        return
    from whisper_ops.managed_server import ManagedServer

    server = ManagedServer().start()
    try:
        yield SimpleNamespace(http_url=server.http_url, grpc_url=server.grpc_url,
                              metrics_url=server.metrics_url, managed=server)
    finally:
        stubs = server.stub_pids()
        code = server.stop()
        leftover = [pid for pid in stubs if Path(f"/proc/{pid}").exists()]
        assert code == 0, f"server exited with {code}:\n{server.log_tail()}"
        assert not leftover, f"stub processes left behind: {leftover}"
