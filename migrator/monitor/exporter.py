"""The migration's state as Prometheus gauges (the STATE part of the metrics catalog), read
from the state store by a poller thread every few seconds; a scrape answers from the last
read, so a server down never makes it time out (it shows as `migrator_server_up 0`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from migrator.cutover.playbook import Playbook
from migrator.metrics import CATALOG, STATE
from migrator.model.phases import PHASES
from migrator.model.settings import Mapping
from migrator.monitor.snapshot import Poller, Snapshot, StatusReader


class StateCollector(Collector):
    """A scrape answers at once from the last read (a server down never times it out)."""

    def __init__(self, settings: Mapping, playbook: Playbook, every: float = 5.0) -> None:
        self.poller = Poller(StatusReader(settings, playbook), every).start()
        self.settings = settings
        self.migration = settings.migration_name

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.poller.current()
        fams = {d.name: GaugeMetricFamily(d.name, d.help, labels=list(d.labels)) for d in STATE}

        def put(name: str, value: float | None, *labels: str) -> None:
            assert len(labels) + 1 == len(CATALOG[name].labels), name
            if value is not None:
                fams[name].add_metric([self.migration, *labels], float(value))

        for server in ("mysql", "mongodb"):
            put("migrator_server_up", 0 if snap.down(server) else 1, server)
        s = self.settings
        put(
            "migrator_info",
            1,
            s.source_url.address + "/" + s.source_database,
            s.target_database,
            s.state.database,
        )
        if snap.status is not None and not snap.down("mongodb"):
            _phase(put, snap.status)
            _progress(put, snap.status)
            _checks(put, snap)
        yield from fams.values()

    def close(self) -> None:
        self.poller.close()


Put = Any  # put(name, value, *labels)


def _phase(put: Put, st: dict[str, Any]) -> None:
    for p in PHASES:
        put("migrator_phase", 1 if st["phase"] == p else 0, p)
    put("migrator_phase_version", st["version"])
    put("migrator_writes_frozen", 1 if st.get("freeze") else 0)
    sw = st.get("switch") or {}
    put("migrator_switch_running", 1 if sw.get("running") else 0)
    put("migrator_switch_interrupted", 1 if sw.get("interrupted") else 0)
    pause = st.get("last_write_pause") or {}
    if pause.get("ms") is not None:
        put("migrator_write_pause_seconds", pause["ms"] / 1000)


def _progress(put: Put, st: dict[str, Any]) -> None:
    for name, b in st.get("backfill", {}).items():
        put("migrator_backfill_chunks_total", b.get("chunks_total", 0), name)
        put("migrator_backfill_chunks_done", b.get("chunks_done", 0), name)
        put("migrator_backfill_rows_done", b.get("rows_done", 0), name)
        put("migrator_backfill_complete", 1 if b.get("status") == "complete" else 0, name)
    cdc = st["cdc"]
    put("migrator_cdc_alive", 1 if cdc.get("alive") else 0)
    put("migrator_cdc_checkpoint_age_seconds", cdc.get("checkpoint_age_seconds"))
    put("migrator_dead_letters", st.get("dead_letters", 0))
    rs = st.get("reverse_sync") or {}
    put("migrator_reverse_sync_running", 1 if rs.get("running") else 0)
    if rs.get("running"):
        put("migrator_reverse_sync_lag_seconds", rs.get("lag_seconds"))
    put("migrator_sdk_failures", st.get("sdk_failures", 0))


def _checks(put: Put, snap: Snapshot) -> None:
    st = snap.status or {}
    if not snap.down("mysql"):  # gates measured without MySQL say nothing
        for g in st.get("gates", []):
            put("migrator_gate_ok", 1 if g["ok"] else 0, g["name"], st["next_phase"])
    v = st.get("verification")
    if v is not None:
        finished = v.get("finished")
        if finished is not None:
            put("migrator_verify_last_run_timestamp_seconds", _epoch(finished), v["mode"])
        put("migrator_verify_last_run_ok", 1 if v.get("ok") else 0)
        for name, n in (v.get("open_differences") or {}).items():
            put("migrator_verify_differences", n, name)
        if v.get("covered_at") is not None:
            put("migrator_verify_covered_timestamp_seconds", _epoch(v["covered_at"]))
    run = st.get("verify_in_progress")
    put("migrator_verify_in_progress_checked", run["checked"] if run else 0)


def _epoch(t: Any) -> float:
    from datetime import UTC

    return float(t.replace(tzinfo=UTC).timestamp())
