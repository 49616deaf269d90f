"""Every metric the Grafana dashboard and the alert rules query is one the tool exports (the
catalog, which tests/integration/test_metrics_exported.py holds to what the commands really
serve), and every label they select, group or print by is one that metric carries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from migrator.metrics import CATALOG

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "migrator-dashboard.json"
RULES = DEPLOY / "prometheus" / "migrator-rules.yaml"
# what Prometheus adds to every series it scrapes; `migration` on `up` comes from the scrape
# configuration (the runbook's "process down")
TARGET_LABELS = {"job", "instance"}
LABELS = {name: set(d.labels) for name, d in CATALOG.items()} | {
    "up": TARGET_LABELS | {"migration"}
}

SELECTOR = re.compile(r"\b(migrator_[a-z0-9_]+|up)\b\s*(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
# a legend's {{label}}, an annotation's {{ $labels.label }}
LEGEND = re.compile(r"\{\{\s*(?:\$labels\.)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def problems(expr: str, legend: str = "") -> Iterator[str]:
    names = set()
    for m in SELECTOR.finditer(expr):
        name = m.group(1)
        if name not in LABELS:
            if name.startswith("migrator_"):
                yield f"{name}: not a metric the tool exports"
            continue
        names.add(name)
        for label in MATCHER.findall(m.group(2) or ""):
            if label not in LABELS[name] | TARGET_LABELS:
                yield f"{name}{{{label}}}: no such label"
    present = set().union(*(LABELS[n] for n in names)) | TARGET_LABELS if names else set()
    used = [x.strip() for c in CLAUSE.findall(expr) for x in c.split(",") if x.strip()]
    used += LEGEND.findall(legend)
    for label in used:
        if label not in present:
            yield f"label {label!r} is on none of {sorted(names)} in {expr!r}"


def dashboard_queries() -> Iterator[tuple[str, str, str]]:
    dash = json.loads(DASHBOARD.read_text())

    def panels(ps: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash["panels"]):
        for t in p.get("targets", []):
            yield p.get("title", "?"), t["expr"], t.get("legendFormat", "")
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q or ""
        m = re.match(r"label_values\((\w+),\s*(\w+)\)", q)
        if m:
            yield f"variable {v['name']}", f"{m.group(1)}", f"{{{{{m.group(2)}}}}}"


def test_the_dashboard_queries_only_exported_metrics_and_labels():
    found = [
        f"{title}: {p}" for title, e, legend in dashboard_queries() for p in problems(e, legend)
    ]
    assert not found, "\n".join(found)


def test_the_dashboard_shows_what_on_call_needs():
    used = {m.group(1) for _, e, _ in dashboard_queries() for m in SELECTOR.finditer(e)}
    needed = {
        "migrator_phase",  # phase
        "migrator_cdc_lag_seconds",  # lag
        "migrator_cdc_events_applied_total",  # rates
        "migrator_backfill_chunks_done",  # backfill progress
        "migrator_backfill_rows_total",
        "migrator_verify_differences",  # verify results
        "migrator_verify_last_run_ok",
        "migrator_dead_letters",
        "migrator_reverse_sync_lag_seconds",
        "migrator_write_pause_seconds",
        "migrator_gate_ok",
    }
    assert needed <= used, sorted(needed - used)


def test_the_alert_rules_query_only_exported_metrics_and_labels():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    found = []
    for g in groups:
        for r in g["rules"]:
            text = " ".join(str(v) for v in r.get("annotations", {}).values())
            found += [f"{r.get('alert')}: {p}" for p in problems(str(r["expr"]), text)]
    assert not found, "\n".join(found)


def test_the_monitoring_guide_lists_every_metric():
    guide = (DEPLOY.parent / "docs" / "guide" / "monitoring.md").read_text()
    missing = [name for name in CATALOG if f"`{name}`" not in guide]
    assert not missing, missing
