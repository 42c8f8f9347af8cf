"""Bring models back when one of their Python stub processes dies.

Triton 2.51 no longer restarts a dead Python-backend stub, and still reports the model ready:
every request routed to the dead instance fails with "Stub process ... is not healthy". The
launcher runs this watchdog next to the server: it counts each model's live stub processes
(cheap, /proc only) and, when a READY model has lost one, reloads the model through the
repository API. Triton loads the new instances before it retires the old ones, so the healthy
instances keep serving meanwhile. A model an operator unloaded is left alone.

Triton 2.51 never finishes retiring a model version that lost a stub: its healthy instances
stay alive, idle, holding their memory until the server stops (seen: 4 fronts + 1 engine
became 7 + 1 for good after one kill). So the watchdog retires them itself: once a replaced
stub has used no CPU for `idle_s` (its requests are done; new ones go to the new instances),
or `grace_s` after the reload at the latest, it is terminated. Killing it is harmless to
Triton: the new version serves, and the old one is only waiting to be unloaded.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

from whisper_ops import shm_sweep

log = logging.getLogger("whisper.watchdog")
# How often the shared-memory regions of killed stubs (its own retirements among them) are
# swept away (see shm_sweep).
SWEEP_INTERVAL_S = 60.0


def models_to_reload(expected: Dict[str, int], live: Dict[str, int], ready: Iterable[str]) -> List[str]:
    """Ready models with fewer live stub processes than instances in their config."""
    return sorted(m for m in ready if m in expected and live.get(m, 0) < expected[m])


def instance_count(config: dict) -> int:
    """Instances Triton runs for a (resolved) model config: count per GPU, or count on CPU."""
    total = 0
    for group in config.get("instance_group", []):
        count = int(group.get("count", 1))
        gpus = group.get("gpus", [])
        total += count * len(gpus) if group.get("kind") == "KIND_GPU" and gpus else count
    return total


def live_stubs(server_pid: int) -> Dict[str, int]:
    """{model name: live stub processes} among tritonserver's children."""
    return dict(Counter(stub_models(server_pid).values()))


def stub_models(server_pid: int) -> Dict[int, str]:
    """{pid: model name} of tritonserver's live stub processes."""
    stubs = {}
    try:
        children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    except OSError:
        return {}
    for pid in children:
        model = _stub_model(int(pid))
        if model is not None:
            stubs[int(pid)] = model
    return stubs


def _stub_model(pid: int) -> Optional[str]:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    if len(args) > 1 and args[0].endswith(b"triton_python_backend_stub") and state not in ("Z", "X"):
        return Path(args[1].decode()).parent.parent.name
    return None


def cpu_ticks(pid: int) -> Optional[int]:
    """User plus system CPU time of a process, in clock ticks (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


class Retirements:
    """Stubs of replaced instances, each terminated once idle (or at the latest after a grace
    period). Pure bookkeeping: the clock, CPU reading and kill are passed in."""

    def __init__(self, idle_s: float = 15.0, grace_s: float = 45.0):
        self.idle_s = idle_s
        self.grace_s = grace_s
        # pid -> [model, retired since, last CPU ticks, CPU unchanged since]
        self._stubs: Dict[int, list] = {}

    def add(self, pids: Dict[int, str], now: float) -> None:
        for pid, model in pids.items():
            self._stubs.setdefault(pid, [model, now, None, now])

    def __len__(self) -> int:
        return len(self._stubs)

    def due(self, now: float, ticks: Callable[[int], Optional[int]]) -> Dict[int, str]:
        """The stubs to terminate now; gone ones are forgotten."""
        due = {}
        for pid, entry in list(self._stubs.items()):
            model, since, last, quiet_since = entry
            current = ticks(pid)
            if current is None:
                del self._stubs[pid]
                continue
            if current != last:
                entry[2], entry[3] = current, now
                quiet_since = now
            if now - quiet_since >= self.idle_s or now - since >= self.grace_s:
                due[pid] = model
                del self._stubs[pid]
        return due


class RepositoryApi:
    def __init__(self, http_url: str, admin_key: str = ""):
        self.base = f"http://{http_url}/v2/repository"
        self.headers = {"admin-key": admin_key} if admin_key else {}

    def _post(self, path: str, timeout: float) -> bytes:
        request = urllib.request.Request(self.base + path, data=b"{}", method="POST",
                                         headers=self.headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def instance_count(self, model: str) -> int:
        url = self.base.replace("/v2/repository", f"/v2/models/{model}/config")
        with urllib.request.urlopen(url, timeout=10) as response:
            return instance_count(json.loads(response.read()))

    def ready_models(self) -> List[str]:
        return [m["name"] for m in json.loads(self._post("/index", 10))
                if m.get("state") == "READY"]

    def reload(self, model: str) -> None:
        """Load new instances of a loaded model, then retire the old ones.

        Triton ignores a load of an unchanged model, so the current config goes back as an
        override with one marker parameter changed.
        """
        url = self.base.replace("/v2/repository", f"/v2/models/{model}/config")
        with urllib.request.urlopen(url, timeout=10) as response:
            config = json.loads(response.read())
        config.setdefault("parameters", {})["watchdog_reload"] = {"string_value": str(time.time())}
        body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
        request = urllib.request.Request(f"{self.base}/models/{model}/load", data=body,
                                         method="POST", headers=self.headers)
        with urllib.request.urlopen(request, timeout=600):
            pass


class StubWatchdog(threading.Thread):
    def __init__(self, server_pid: Callable[[], Optional[int]], api: RepositoryApi,
                 interval: float = 5.0, retirements: Optional[Retirements] = None):
        super().__init__(name="stub-watchdog", daemon=True)
        self.server_pid = server_pid
        self.api = api
        self.interval = interval
        self.expected: Dict[str, int] = {}
        self.reloads = 0
        self.retired = 0
        self.retirements = retirements or Retirements()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        last_sweep = time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                self.check()
                if time.monotonic() - last_sweep >= SWEEP_INTERVAL_S:
                    last_sweep = time.monotonic()
                    shm_sweep.sweep()  # regions of stubs that were killed
            except Exception as exc:  # noqa: BLE001 - the watchdog must outlive any one failure
                log.warning("watchdog check failed: %s", exc)

    def check(self) -> None:
        pid = self.server_pid()
        if pid is None:
            return
        self.retire_idle()
        ready = self.api.ready_models()
        for model in ready:
            if model not in self.expected:
                self.expected[model] = self.api.instance_count(model)
        for model in models_to_reload(self.expected, live_stubs(pid), ready):
            log.error("model %s has %d of %d stub processes alive: reloading it", model,
                      live_stubs(pid).get(model, 0), self.expected[model])
            replaced = {p: m for p, m in stub_models(pid).items() if m == model}
            started = time.monotonic()
            self.api.reload(model)
            self.reloads += 1
            self.retirements.add(replaced, time.monotonic())
            log.error("model %s reloaded in %.1f s; its %d replaced stub(s) are retired once "
                      "idle", model, time.monotonic() - started, len(replaced))

    def retire_idle(self) -> None:
        for pid, model in self.retirements.due(time.monotonic(), cpu_ticks).items():
            if _stub_model(pid) != model:
                continue  # gone, or the pid now belongs to something else
            log.warning("terminating stub %d of a replaced %s instance", pid, model)
            _terminate(pid)
            self.retired += 1


def _terminate(pid: int) -> None:
    """SIGTERM, then SIGKILL if the stub is still there a few seconds later."""
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(30):
            time.sleep(0.1)
            if _stub_model(pid) is None:
                return
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
