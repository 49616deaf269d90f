"""Prometheus metrics for CDC (`--metrics-port`): events applied by table and op, lag, dead
letters, pending children, checkpoint age."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class CdcMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.applied = Counter(
            "migrator_cdc_events_applied_total",
            "Change events applied, by source table and operation",
            ["table", "op"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "migrator_cdc_lag_seconds",
            "0 when every event up to the source's position is applied, else now "
            "minus the commit time of the oldest event not yet applied",
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "migrator_dead_letters", "Events in the dead-letter collection", registry=self.registry
        )
        self.pending = Gauge(
            "migrator_cdc_pending_children",
            "Embedded changes waiting for their parent document",
            registry=self.registry,
        )
        self.queue = Gauge(
            "migrator_cdc_queue_depth", "Events read but not yet applied", registry=self.registry
        )
        self._checkpoint = time.time()
        self.checkpoint_age = Gauge(
            "migrator_cdc_checkpoint_age_seconds",
            "Seconds since the last checkpoint was written",
            registry=self.registry,
        )
        self.checkpoint_age.set_function(lambda: time.time() - self._checkpoint)
        self._seen: dict[tuple[str, str], int] = {}

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)

    def update(self, stats: Any) -> None:
        for key, n in stats.applied.items():
            delta = n - self._seen.get(key, 0)
            if delta:
                self.applied.labels(*key).inc(delta)
                self._seen[key] = n
        self.lag.set(stats.lag_seconds)
        self.dead_letters.set(stats.dead_letters)
        self.pending.set(stats.pending)
        self.queue.set(stats.queue_depth)
        if stats.checkpoint_at is not None:
            self._checkpoint = time.time()
