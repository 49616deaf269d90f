"""Every metric of the catalog (migrator.metrics) is exported, with exactly its labels, by
the long-running commands as a user runs them with `--metrics-port`: backfill, verify and
cdc, through a walk to the write switch (reverse sync, the write pause)."""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from migrator.backfill.copy import backfill
from migrator.devtools.sandbox import free_port
from migrator.metrics import CATALOG
from migrator.model.settings import load_mapping

from .helpers import cli_process, make_shop, start_cdc, wait_until, walk_to

Seen = dict[str, set[str]]  # sample name -> the label names it carries


def scrape(port: int) -> Seen:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return {}
    seen: Seen = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            if s.name.startswith("migrator_") and not s.name.endswith("_created"):
                seen.setdefault(s.name, set()).update(s.labels)
    return seen


def scrape_until(port: int, *names: str) -> Seen:
    def ready() -> Seen | None:
        seen = scrape(port)
        return seen if all(n in seen for n in names) else None

    return wait_until(ready, f"{names} on :{port}", every=0.3)


def test_every_catalog_metric_is_exported_with_its_labels(env):
    path = make_shop(env, orders=80)  # 120 rows at 10 rows/s: the state is read every 5 s
    seen: Seen = {}
    m = ("-m", str(path))
    port = free_port()
    slow = ("--max-rows-per-sec", "10", "--metrics-port", str(port))
    with cli_process("backfill", *m, "--workers", "1", *slow) as proc:
        seen |= scrape_until(port, "migrator_backfill_rows_total", "migrator_backfill_chunks_done")
        proc.stop()  # killed mid-copy (a backfill resumes from its chunks)
    backfill(load_mapping(path), workers=1)  # resumes, to the end
    port = free_port()
    with start_cdc(env, path, "--metrics-port", str(port)):
        env.sql("UPDATE orders SET note = 'metrics' WHERE id = 1")
        seen |= scrape_until(port, "migrator_cdc_events_applied_total")
        vport = free_port()
        slow = ("--max-rows-per-sec", "60", "--metrics-port", str(vport))
        with cli_process("verify", *m, *slow) as proc:
            found = scrape_until(vport, "migrator_verify_documents_checked_total")
            assert proc.wait(120) == 0, proc.log_tail()
        walk_to(path, "write_mongo")
        found |= scrape_until(
            port,
            "migrator_reverse_sync_lag_seconds",
            "migrator_write_pause_seconds",
            "migrator_verify_differences",
        )
        seen |= found
        # reverse sync runs in CDC's loop now: the loop still shows it turns
        first = value(port, "migrator_cdc_last_batch_timestamp_seconds")
        wait_until(
            lambda: value(port, "migrator_cdc_last_batch_timestamp_seconds") > first,
            "CDC's loop to turn while it reverse-syncs",
        )
        assert value(port, "migrator_reverse_sync_running") == 1
    _check(seen)


def value(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            if s.name == name:
                return float(s.value)
    raise AssertionError(f"{name} is not on :{port}")


def _check(seen: Seen) -> None:
    problems: list[Any] = []
    for name, d in CATALOG.items():
        if name not in seen:
            problems.append(f"{name}: not exported")
        elif seen[name] != set(d.labels):
            problems.append(f"{name}: labels {sorted(seen[name])}, catalog {sorted(d.labels)}")
    extra = set(seen) - set(CATALOG)
    assert not problems and not extra, (problems, sorted(extra))
