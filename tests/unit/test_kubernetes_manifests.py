"""deploy/kubernetes: every manifest is valid Kubernetes (strict, against the schemas of
kubernetes-validate), the mapping in the ConfigMap is a valid mapping, and every container's
arguments are accepted by the CLI they run. deploy/kubernetes/monitoring (the Prometheus
Operator's PodMonitor and PrometheusRule, which kubernetes-validate has no schema for) is
checked for its shape and for scraping the CDC pods under their migration's name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from migrator.cli.main import cli
from migrator.model.settings import Mapping, parse_mapping

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path):
    for doc in _docs(path):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return list(spec.get("template", {}).get("spec", {}).get("containers", []))


def _configmap_mapping(tmp_path: Path) -> Mapping:
    (cm,) = _docs(DEPLOY / "configmap.yaml")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("source-password", "target-password", "kafka-password"):
        (secrets / name).write_text("from-the-secret\n")
    text = cm["data"]["mapping.yaml"].replace("/etc/migrator/secrets", str(secrets))
    return parse_mapping(text, "configmap.yaml")


def test_the_configmap_mapping_is_valid_with_its_secret_files(tmp_path: Path):
    mapping = _configmap_mapping(tmp_path)
    assert mapping.source_url.tls.effective_mode == "VERIFY_IDENTITY"
    assert mapping.debezium.security.kafka_python()["security_protocol"] == "SASL_SSL"
    # each password is a file of the Secret the pods mount
    (secret,) = _docs(DEPLOY / "secret.yaml")
    assert {"source-password", "target-password", "kafka-password", "ca.pem"} <= set(
        secret["stringData"]
    )


WORKLOADS = ("Job", "Deployment", "CronJob")
# the manifests that run the tool (the others: the ConfigMap, the Secret, RBAC...)
RUNNING = [p for p in MANIFESTS if any(d["kind"] in WORKLOADS for d in _docs(p))]


def test_the_tool_runs_as_a_backfill_job_a_cdc_deployment_and_verify_jobs():
    """The manifests that run the tool are these four, so the check of their arguments below
    covers each of them (and none is left out for want of a container)."""
    kinds = {(p.name, d["kind"]) for p in RUNNING for d in _docs(p) if d["kind"] in WORKLOADS}
    assert kinds == {
        ("backfill-job.yaml", "Job"),
        ("cdc-deployment.yaml", "Deployment"),
        ("verify-cronjob.yaml", "CronJob"),
        ("verify-job.yaml", "Job"),
    }


@pytest.mark.parametrize("path", RUNNING, ids=lambda p: p.name)
def test_container_arguments_are_accepted_by_the_cli(path: Path, tmp_path: Path):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("version: 1\n")
    workloads = [d for d in _docs(path) if d["kind"] in WORKLOADS]
    assert workloads
    for doc in workloads:
        containers = _containers(doc)
        assert containers, doc["metadata"]["name"]
        for c in containers:
            args = [
                mapping.as_posix() if a == "/etc/migrator/mapping.yaml" else a for a in c["args"]
            ]
            command = cli.commands[args[0]]
            ctx = command.make_context(args[0], list(args[1:]))  # raises on a bad option
            assert ctx.params["mapping_path"] == mapping.as_posix()
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert {"/etc/migrator/mapping.yaml", "/etc/migrator/secrets"} <= mounts


MONITORING = DEPLOY / "monitoring"
MONITORING_MANIFESTS = sorted(
    p for p in MONITORING.glob("*.yaml") if p.name != "kustomization.yaml"
)


def test_the_monitoring_kustomization_lists_every_manifest():
    """The Prometheus Operator's resources are applied apart (`kubectl apply -k
    deploy/kubernetes/monitoring`), so a cluster without its CRDs can apply the rest."""
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "migrator"
    assert sorted(kustomization["resources"]) == [p.name for p in MONITORING_MANIFESTS]
    assert {d["kind"] for p in MONITORING_MANIFESTS for d in _docs(p)} == {
        "PodMonitor",
        "PrometheusRule",
    }


@pytest.mark.parametrize("path", MONITORING_MANIFESTS, ids=lambda p: p.name)
def test_monitoring_manifests_are_prometheus_operator_resources(path: Path):
    """No schema to validate them against: their shape here, the rules in test_alert_rules.py."""
    for doc in _docs(path):
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["kind"] in {"PodMonitor", "PrometheusRule"}
        assert doc["metadata"]["namespace"] == "migrator"


def _meta_label(annotation: str) -> str:
    """The label Prometheus's Kubernetes discovery gives a pod annotation."""
    return "__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", annotation)


def test_the_podmonitor_scrapes_the_cdc_pods_under_their_migrations_name(tmp_path: Path):
    (monitor,) = _docs(MONITORING / "podmonitor.yaml")
    (cdc,) = _docs(DEPLOY / "cdc-deployment.yaml")
    pod = cdc["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (container,) = pod["spec"]["containers"]
    port = next(p for p in container["ports"] if p["name"] == endpoint["port"])
    args = container["args"]
    assert str(port["containerPort"]) == args[args.index("--metrics-port") + 1]
    # the series keep the `migration` the tool gives them; `up` gets it from the annotation
    assert endpoint["honorLabels"] is True
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["job"]["replacement"].startswith("migrator-")  # up{job=~"migrator.*"}
    (source,) = relabel["migration"]["sourceLabels"]
    annotations = pod["metadata"]["annotations"]
    (key,) = [k for k in annotations if _meta_label(k) == source]
    assert annotations[key] == _configmap_mapping(tmp_path).migration_name
