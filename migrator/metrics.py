"""Prometheus metrics (`--metrics-port` on every long-running command): one catalog of every
name the tool exports, with its labels, and the metrics a command counts as it works.

Two kinds, both labelled with the migration (`source database->target database`):
- a process's own work (events applied, rows copied, documents verified), counted here as the
  command runs and exported only by the process doing it;
- the migration's state as the state store and the servers tell it (phase, gates, backfill
  chunks, the last verification, dead letters, reverse sync, the last write pause), read on
  scrape by `migrator.monitor.exporter`, exported alike by every process. Alert rules and the
  dashboard take `max by (migration)` of those.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: str  # counter | gauge (a counter's samples end in _total)
    labels: tuple[str, ...]
    help: str


def _m(name: str, kind: str, labels: str, help: str) -> MetricDef:
    return MetricDef(name, kind, ("migration", *labels.split()), help)


# What each process counts (exported by the command doing the work)
PROCESS = [
    _m("migrator_command_info", "gauge", "command version", "1 for the command serving these"),
    _m(
        "migrator_cdc_events_applied_total",
        "counter",
        "table op",
        "Change events applied, by source table and operation",
    ),
    _m(
        "migrator_cdc_lag_seconds",
        "gauge",
        "",
        "0 when every event up to the source's position is applied, else now minus the "
        "commit time of the oldest event not yet applied",
    ),
    _m("migrator_cdc_queue_depth", "gauge", "", "Events read but not yet applied"),
    _m(
        "migrator_cdc_pending_children",
        "gauge",
        "",
        "Embedded changes waiting for their parent document",
    ),
    _m(
        "migrator_cdc_last_batch_timestamp_seconds",
        "gauge",
        "",
        "When this CDC last applied a batch or found the source idle (its loop is turning)",
    ),
    _m(
        "migrator_reverse_sync_changes_total",
        "counter",
        "",
        "Documents written back to MySQL after the write switch",
    ),
    _m(
        "migrator_backfill_rows_total",
        "counter",
        "collection",
        "Source rows this backfill copied, by collection",
    ),
    _m(
        "migrator_verify_documents_checked_total",
        "counter",
        "collection",
        "Documents this verification compared with their source rows, by collection",
    ),
    _m("migrator_verify_running", "gauge", "", "1 while this process runs a verification"),
]

# What the state store and the servers say (exported by every process, read on scrape)
STATE = [
    _m("migrator_info", "gauge", "source target state_db", "1; the migration's identity"),
    _m("migrator_phase", "gauge", "phase", "1 for the current phase, 0 for the others"),
    _m("migrator_phase_version", "gauge", "", "Phase changes so far (the control's version)"),
    _m("migrator_writes_frozen", "gauge", "", "1 while the write switch holds application writes"),
    _m("migrator_switch_running", "gauge", "", "1 while a write switch or rollback runs"),
    _m(
        "migrator_switch_interrupted",
        "gauge",
        "",
        "1 when the last write switch's process died before it finished (phase unchanged)",
    ),
    _m(
        "migrator_gate_ok",
        "gauge",
        "gate to_phase",
        "1 when a gate of the next phase passes, 0 when it fails",
    ),
    _m("migrator_backfill_chunks_total", "gauge", "collection", "Chunks the copy planned"),
    _m("migrator_backfill_chunks_done", "gauge", "collection", "Chunks the copy wrote"),
    _m("migrator_backfill_rows_done", "gauge", "collection", "Rows the done chunks copied"),
    _m("migrator_backfill_complete", "gauge", "collection", "1 when the collection's copy ended"),
    _m("migrator_cdc_alive", "gauge", "", "1 while a CDC process beats its heartbeat"),
    _m(
        "migrator_cdc_checkpoint_age_seconds",
        "gauge",
        "",
        "Seconds since CDC last saved its checkpoint",
    ),
    _m(
        "migrator_verify_last_run_timestamp_seconds",
        "gauge",
        "mode",
        "When the last verification of each mode finished",
    ),
    _m("migrator_verify_last_run_ok", "gauge", "", "1 when the last verification was clean"),
    _m(
        "migrator_verify_differences",
        "gauge",
        "collection",
        "Differences a verification found and no later check found equal, by collection "
        "(what the verify_clean gate refuses on)",
    ),
    _m(
        "migrator_verify_covered_timestamp_seconds",
        "gauge",
        "",
        "When every collection was last covered by a full or --changed verification "
        "(absent until each was; the verify_clean gate's age)",
    ),
    _m(
        "migrator_verify_in_progress_checked",
        "gauge",
        "",
        "Documents the verification in progress has checked (0 when none runs)",
    ),
    _m("migrator_dead_letters", "gauge", "", "Events in the dead-letter collection"),
    _m("migrator_reverse_sync_running", "gauge", "", "1 from the write switch on"),
    _m(
        "migrator_reverse_sync_lag_seconds",
        "gauge",
        "",
        "How far MySQL is behind MongoDB's changes after the write switch",
    ),
    _m(
        "migrator_sdk_failures",
        "gauge",
        "",
        "SDK writes to the second store that failed since the last clean full verification",
    ),
    _m(
        "migrator_write_pause_seconds",
        "gauge",
        "",
        "How long the last write switch or rollback held application writes",
    ),
    _m("migrator_server_up", "gauge", "server", "1 when the server (mysql, mongodb) answered"),
]

CATALOG: dict[str, MetricDef] = {m.name: m for m in [*PROCESS, *STATE]}


def _metric(reg: CollectorRegistry, name: str, migration: str) -> Any:
    d = CATALOG[name]
    cls = Counter if d.kind == "counter" else Gauge
    base = name.removesuffix("_total") if d.kind == "counter" else name
    m = cls(base, d.help, list(d.labels), registry=reg)
    return _Bound(m, migration)


class _Bound:
    """A metric with its `migration` label filled in."""

    def __init__(self, metric: Any, migration: str) -> None:
        self.metric, self.migration = metric, migration

    def labels(self, *values: str) -> Any:
        return self.metric.labels(self.migration, *values)


class ProcessMetrics:
    """One process's registry: its own counters, and (once `add_state`) the migration's."""

    def __init__(self, migration: str, command: str) -> None:
        from migrator import __version__

        self.migration = migration
        self.registry = CollectorRegistry()
        self._m = {d.name: _metric(self.registry, d.name, migration) for d in PROCESS}
        self.get("migrator_command_info").labels(command, __version__).set(1)

    def get(self, name: str) -> Any:
        return self._m[name]

    def add_state(self, collector: Any) -> None:
        self.registry.register(collector)

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)


class CdcMetrics:
    """What `cdc` counts, updated after every batch from its LiveStats."""

    def __init__(self, metrics: ProcessMetrics) -> None:
        self.m = metrics
        self._seen: dict[tuple[str, str], int] = {}
        self._reverse = 0
        metrics.get("migrator_reverse_sync_changes_total").labels().inc(0)  # 0 until the switch

    def update(self, stats: Any) -> None:
        applied = self.m.get("migrator_cdc_events_applied_total")
        for key, n in stats.applied.items():
            delta = n - self._seen.get(key, 0)
            if delta:
                applied.labels(*key).inc(delta)
                self._seen[key] = n
        self.m.get("migrator_cdc_lag_seconds").labels().set(stats.lag_seconds)
        self.m.get("migrator_cdc_queue_depth").labels().set(stats.queue_depth)
        self.m.get("migrator_cdc_pending_children").labels().set(stats.pending)
        self.m.get("migrator_cdc_last_batch_timestamp_seconds").labels().set(time.time())
        reverse = stats.reverse_changes
        if reverse > self._reverse:
            self.m.get("migrator_reverse_sync_changes_total").labels().inc(reverse - self._reverse)
            self._reverse = reverse


class CountingProgress:
    """A Progress that also counts into a process counter (rows copied, documents checked),
    and hands every call on to the progress shown to the user."""

    def __init__(self, inner: Any, counter: Any, running: Any | None = None) -> None:
        self.inner, self.counter, self.running = inner, counter, running

    def start(self, collection: str, total_rows: int, done_rows: int = 0) -> None:
        if self.running is not None:
            self.running.labels().set(1)
        self.counter.labels(collection).inc(0)
        self.inner.start(collection, total_rows, done_rows)

    def advance(self, collection: str, rows: int) -> None:
        self.counter.labels(collection).inc(rows)
        self.inner.advance(collection, rows)

    def finish(self, collection: str, rows: int) -> None:
        self.inner.finish(collection, rows)

    def note(self, message: str) -> None:
        self.inner.note(message)

    def done(self) -> None:
        if self.running is not None:
            self.running.labels().set(0)
