"""The container, compose, Prometheus, Grafana and Kubernetes files, read and checked as data:
the Dockerfile's instructions, .dockerignore, the Compose Specification's JSON schema (from a
PyPI wheel), the Prometheus and Grafana files, and the Kubernetes manifests against Kubernetes'
own OpenAPI schemas (the kubernetes-validate package, offline). No Docker, no subprocess, no
socket: unit. hadolint, the entrypoint and the health check run in
tests/test_deployment_process.py.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
import zipfile
from pathlib import Path

import jsonschema
import kubernetes_validate
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

def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


# --- Dockerfile -----------------------------------------------------------------------------

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
    assert ("EXPOSE", "8000 8001 8002 8080") in instructions
    runs = " ".join(args for name, args in instructions if name == "RUN")
    # the models' packages and the gateway's (the entrypoint starts it beside Triton)
    assert 'pip install --no-cache-dir "./[server,models,gateway]"' in runs
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
    assert {p.split(":")[0].strip('"') for p in triton["ports"]} == {"8000", "8001", "8002", "8080"}
    assert "${GATEWAY_API_KEYS" in triton["environment"]["GATEWAY_API_KEYS"]
    # the old service's operational limits: 8 GB, 4 CPUs, logs rotated
    limits = triton["deploy"]["resources"]["limits"]
    assert limits["memory"] == "8g" and float(limits["cpus"]) == 4
    logging = triton["logging"]
    assert logging["driver"] == "json-file"
    assert logging["options"]["max-size"] and int(logging["options"]["max-file"]) >= 2
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
    assert "triton:8080" in targets  # the gateway


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

# The oldest Kubernetes release the manifests are checked against (HPA autoscaling/v2 and PDB
# policy/v1 are GA there), and the newest that kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def _manifests() -> dict:
    kinds: dict = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            kinds.setdefault(document["kind"], []).append(document)
    return kinds


def test_kubernetes_manifests_follow_kubernetes_own_schemas():
    """Strict: an unknown or misspelt field is an error, as `kubectl apply --validate=strict`."""
    documents = [d for docs in _manifests().values() for d in docs]
    assert len(documents) >= 8
    for version in KUBERNETES_VERSIONS:
        for document in documents:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{document['kind']} {document['metadata']['name']} is not valid for "
                            f"Kubernetes {version}: {error.message} at {list(error.path)}")
    with pytest.raises(kubernetes_validate.ValidationError):  # the check does check
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Service", "metadata": {
            "name": "x"}, "spec": {"portz": []}}, KUBERNETES_VERSIONS[0], strict=True)


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
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002, "openai": 8080}
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
    secrets = {s["metadata"]["name"]: s for s in kinds["Secret"]}
    (key_env,) = [e for e in container["env"] if e["name"] == "TRITON_ADMIN_KEY"]
    secret = secrets[key_env["valueFrom"]["secretKeyRef"]["name"]]
    assert secret["stringData"][key_env["valueFrom"]["secretKeyRef"]["key"]] == "change-me"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/dev/shm" in mounts and mounts["/models"]["readOnly"] is True
    # the gateway's API keys: a file from a Secret, mounted read-only
    (keys_env,) = [e for e in container["env"] if e["name"] == "GATEWAY_API_KEYS_FILE"]
    keys_dir, _, keys_file = keys_env["value"].rpartition("/")
    assert mounts[keys_dir]["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mounts[keys_dir]["name"]]
    assert keys_file in secrets[volume["secret"]["secretName"]]["stringData"]


def test_kubernetes_service_pdb_and_hpa_target_the_deployment():
    kinds = _manifests()
    (deployment,) = kinds["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (service,) = kinds["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {
        ("http", 8000), ("grpc", 8001), ("metrics", 8002), ("openai", 8080)}
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
