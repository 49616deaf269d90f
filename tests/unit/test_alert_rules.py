"""deploy/prometheus and deploy/grafana: the alert rules load in Prometheus (`promtool check
rules`); promtool's unit tests make every alert fire and clear; every alert names its migration
and links a section of the runbook that exists; the PrometheusRule for Kubernetes holds the same
groups; the Grafana dashboard's queries parse and select the dashboard's migration."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "migrator-rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "migrator-rules.test.yaml"
PROMETHEUS_RULE = ROOT / "deploy" / "kubernetes" / "monitoring" / "prometheusrule.yaml"
RUNBOOK = ROOT / "docs" / "guide" / "runbook.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "migrator-dashboard.json"
RUNBOOK_URL = "https://github.com/example/migrator/blob/main/docs/guide/runbook.md#"
SEVERITIES = {"critical", "warning", "info"}


def _promtool(*args: str, cwd: Path = ROOT) -> None:
    tool = shutil.which("promtool")
    if tool is None:
        # no skip: a missing promtool must not pass `make test` unchecked
        pytest.fail(
            "promtool is missing: run `make setup` (it installs Debian's `prometheus` package, "
            "which has promtool)"
        )
    p = subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert p.returncode == 0, (
        f"promtool {' '.join(args)} exited {p.returncode}:\n{p.stdout}{p.stderr}"
    )


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def _rule_tests() -> list[dict[str, Any]]:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    return [c for t in tests["tests"] for c in t.get("alert_rule_test", [])]


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _runbook_anchors() -> set[str]:
    text = RUNBOOK.read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # `# comment` lines in code are no headings
    return {_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_the_rules_file_loads_in_prometheus():
    _promtool("check", "rules", str(RULES))


def test_every_alert_fires_and_clears_in_promtools_unit_tests():
    _promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)


def test_the_unit_tests_cover_every_alert_firing_and_not_firing():
    """A new alert without a test of its own fails here (promtool alone would not notice)."""
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    cases = _rule_tests()
    names = [a["alert"] for a in _alerts()]
    assert len(names) == len(set(names)), "one rule per alert name"
    fired = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert sorted(set(names) - fired) == [], "alerts no test makes fire"
    assert sorted(set(names) - quiet) == [], "alerts no test sees quiet (cleared or not fired)"
    assert sorted((fired | quiet) - set(names)) == [], "tests of alerts that do not exist"
    # a firing case checks what on-call reads: the summary naming the migration, the link
    for c in cases:
        for exp in c.get("exp_alerts") or []:
            assert exp["exp_labels"].get("migration"), c["alertname"]
            assert "summary" in exp["exp_annotations"], c["alertname"]
            assert exp["exp_annotations"]["runbook_url"].startswith(RUNBOOK_URL)


@pytest.mark.parametrize("alert", _alerts(), ids=lambda a: a["alert"])
def test_an_alert_names_its_migration_and_links_its_runbook_section(alert: dict[str, Any]):
    assert alert["labels"]["severity"] in SEVERITIES
    notes = alert["annotations"]
    assert "{{ $labels.migration }}" in notes["summary"]
    assert notes["description"].strip()
    # one stable anchor per alert: its name in lower case, a heading of the runbook
    assert notes["runbook_url"] == RUNBOOK_URL + alert["alert"].lower()
    assert alert["alert"].lower() in _runbook_anchors(), f"no `## {alert['alert']}` in the runbook"


def test_the_prometheusrule_holds_the_rules_files_groups():
    (doc,) = [d for d in yaml.safe_load_all(PROMETHEUS_RULE.read_text()) if d]
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["kind"] == "PrometheusRule"
    assert doc["metadata"]["namespace"] == "migrator"
    assert doc["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], (
        "deploy/kubernetes/monitoring/prometheusrule.yaml differs from the rules file: "
        "regenerate it as deploy/prometheus/README.md says"
    )


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels of a collapsed row
    return out


def _exprs(dash: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dash) for t in p.get("targets", []) if t.get("expr")]


def test_the_dashboard_selects_its_migration_in_every_query():
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["migration"]["query"]["query"] == "label_values(migrator_info, migration)"
    exprs = _exprs(dash)
    assert exprs
    for expr in exprs:
        selectors = re.findall(r"\b((?:migrator_\w+|up))\s*(\{[^}]*\})?", expr)
        assert selectors, expr
        for name, labels in selectors:
            assert 'migration=~"$migration"' in labels, f"{name} without the migration in {expr}"
    # every panel draws from the dashboard's data source
    for p in _panels(dash):
        if p.get("targets"):
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]


def test_the_dashboards_queries_parse(tmp_path: Path):
    """promtool parses each query as a recording rule, with Grafana's variables filled in."""
    exprs = _exprs(json.loads(DASHBOARD.read_text()))
    filled = [
        e.replace("$migration", ".+").replace("$__rate_interval", "5m").replace("$__range", "1h")
        for e in exprs
    ]
    assert not [e for e in filled if "$" in e], "a Grafana variable the test does not fill"
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(filled)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    _promtool("check", "rules", str(path))
