"""Bring models back when one of their Python stub processes dies.

Triton 2.51 no longer restarts a dead Python-backend stub, and still reports the model ready:
every request routed to the dead instance fails with "Stub process ... is not healthy". The
launcher runs this watchdog next to the server: it counts each model's live stub processes
(cheap, /proc only) and, when a READY model has lost one, reloads the model through the
repository API. Triton loads the new instances before it retires the old ones, so the healthy
instances keep serving meanwhile. A model an operator unloaded is left alone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

log = logging.getLogger("whisper.watchdog")


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
    counts: Counter = Counter()
    try:
        children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    except OSError:
        return {}
    for pid in children:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if args and args[0].endswith(b"triton_python_backend_stub") and state not in ("Z", "X"):
            counts[Path(args[1].decode()).parent.parent.name] += 1
    return dict(counts)


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
                 interval: float = 5.0):
        super().__init__(name="stub-watchdog", daemon=True)
        self.server_pid = server_pid
        self.api = api
        self.interval = interval
        self.expected: Dict[str, int] = {}
        self.reloads = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the watchdog must outlive any one failure
                log.warning("watchdog check failed: %s", exc)

    def check(self) -> None:
        pid = self.server_pid()
        if pid is None:
            return
        ready = self.api.ready_models()
        for model in ready:
            if model not in self.expected:
                self.expected[model] = self.api.instance_count(model)
        for model in models_to_reload(self.expected, live_stubs(pid), ready):
            log.error("model %s has %d of %d stub processes alive: reloading it", model,
                      live_stubs(pid).get(model, 0), self.expected[model])
            started = time.monotonic()
            self.api.reload(model)
            self.reloads += 1
            log.error("model %s reloaded in %.1f s", model, time.monotonic() - started)
