"""Throttling: a row-rate limit per worker and a load monitor that pauses the backfill
while the source is busy (Threads_running) or its replicas lag (gh-ost's --max-load/--max-lag)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from migrator.errors import MigratorError
from migrator.model.secrets import SOURCE_PASSWORD_FILE_ENV
from migrator.model.settings import ThrottleSpec, with_password_file
from migrator.model.tls import TLSOptions
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import as_text, connect, query

log = logging.getLogger("migrator.backfill")


class RateLimiter:
    """Keeps a worker's average at or under `rows_per_sec` (0 = unlimited)."""

    def __init__(self, rows_per_sec: float) -> None:
        self.rate = rows_per_sec
        self.start = time.monotonic()
        self.rows = 0

    def account(self, rows: int) -> float:
        """Record `rows` done; sleep as needed; return the seconds slept."""
        if self.rate <= 0:
            return 0.0
        self.rows += rows
        ahead = self.rows / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)
            return ahead
        return 0.0


def replication_lag(conn: Any) -> float | None:
    """Seconds_Behind_Master of a replica, None when the server is not a replica."""
    for stmt in ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS"):
        try:
            cur = conn.cursor()
            cur.execute(stmt)
        except Exception:
            continue
        row = cur.fetchone()
        if not row:
            return None
        names = [d[0] for d in cur.description]
        rec = dict(zip(names, row, strict=True))
        lag = rec.get("Seconds_Behind_Master", rec.get("Seconds_Behind_Source"))
        return float(as_text(lag)) if lag is not None else float("inf")  # NULL: replication broken
    return None


class LoadMonitor:
    """Answers `reason_to_pause()` at most once per check interval."""

    def __init__(
        self,
        source_conn: Any,
        spec: ThrottleSpec,
        tls: TLSOptions | None = None,
        reconnect: Callable[[], Any] | None = None,
    ) -> None:
        """`tls`: the source's TLS options, for replicas whose URLs set none (same CA);
        `reconnect`: a new source connection, after a check failed (a restart drops it)."""
        self.spec = spec
        self.conns = [("source", source_conn)]
        self.openers: list[Callable[[], Any] | None] = [reconnect]
        for i, url in enumerate(spec.replicas):
            u = parse_mysql_url(url, f"throttle.replicas[{i}]").with_tls(tls)
            if not u.password:  # replicas share the source's credentials, file included
                u = with_password_file(u, SOURCE_PASSWORD_FILE_ENV)
            self.conns.append((u.address, connect(u, database=False)))
            self.openers.append(partial(connect, u, database=False))
        self._last = 0.0
        self._reason: str | None = None

    def reason_to_pause(self) -> str | None:
        if time.monotonic() - self._last < self.spec.check_interval_seconds:
            return self._reason
        self._last = time.monotonic()
        self._reason = self._check()
        return self._reason

    def _check(self) -> str | None:
        try:
            name, conn = self.conns[0]
            rows = query(conn, "SHOW GLOBAL STATUS LIKE 'Threads_running'")
            running = int(as_text(rows[0][1])) if rows else 0
            if running > self.spec.max_threads_running:
                return (
                    f"source Threads_running={running} > "
                    f"max_threads_running={self.spec.max_threads_running}"
                )
            for name, conn in self.conns:
                lag = replication_lag(conn)
                if lag is not None and lag > self.spec.max_replication_lag_seconds:
                    return (
                        f"{name} replication lag {lag:.0f}s > "
                        f"max_replication_lag_seconds={self.spec.max_replication_lag_seconds}"
                    )
        except MigratorError:
            raise
        except Exception as exc:
            # a failed check must not stop the copy (it paused it for good when a restart had
            # dropped the connection): the copy's own reads fail and retry if the server is
            # really away; the connections are opened again for the next check
            log.warning("source load check failed; the copy goes on", extra={"cause": str(exc)})
            self._reopen()
        return None

    def _reopen(self) -> None:
        for i, opener in enumerate(self.openers):
            if opener is not None:
                with contextlib.suppress(Exception):
                    self.conns[i] = (self.conns[i][0], opener())
