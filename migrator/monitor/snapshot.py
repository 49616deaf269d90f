"""The migration's status as the live view and the metrics read it, through servers that come
and go: the last good read stays, and each server that stopped answering is named with the
time it stopped."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from migrator.cutover.machine import Machine
from migrator.cutover.playbook import Playbook
from migrator.errors import ConnectError, MigratorError, describe_server, server_kind
from migrator.model.settings import Mapping

log = logging.getLogger("migrator.monitor")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Outage:
    server: str  # mysql | mongodb
    since: datetime
    error: str

    @property
    def name(self) -> str:
        return "reading the status" if self.server == "read" else describe_server(self.server)


@dataclass
class Snapshot:
    status: dict[str, Any] | None = None  # Machine.status(); None before the first good read
    read_at: datetime | None = None  # when `status` was read
    outages: dict[str, Outage] = field(default_factory=dict)

    def down(self, server: str) -> bool:
        return server in self.outages


def _culprit(exc: BaseException) -> str:
    """The server an error came from (mysql | mongodb), or "read" when it is none of theirs
    (a bug, a configuration error): not reported as a server down."""
    kind = server_kind(exc)
    if kind is None and isinstance(exc, ConnectError):
        kind = next((k for k in ("MongoDB", "MySQL") if k in exc.message), "").lower() or None
    return kind or "read"


class StatusReader:
    """Reads `Machine.status()` again and again, reconnecting after a server comes back."""

    def __init__(self, settings: Mapping, playbook: Playbook) -> None:
        self.settings, self.playbook = settings, playbook
        self.machine: Machine | None = None
        self.snapshot = Snapshot()
        self._lock = threading.Lock()  # scrapes come from the HTTP server's threads

    def read(self) -> Snapshot:
        with self._lock:
            try:
                if self.machine is None:
                    self.machine = Machine(self.settings, self.playbook)
                else:  # a switch whose process died since: cleared and shown as interrupted
                    self.machine.recover()
                status = self.machine.status()
            except Exception as exc:  # a server down, or its driver failing mid-read
                self._down(_culprit(exc), exc)
                self.close()
                return self.snapshot
            self._up("mongodb")
            if status["problems"].get("mysql"):
                self._down("mysql", status["problems"]["mysql"])
            else:
                self._up("mysql")
            self.snapshot.status, self.snapshot.read_at = status, utcnow()
            return self.snapshot

    def current(self) -> Snapshot:
        """A copy of the last snapshot, safe to draw while the next read runs."""
        with self._lock:
            s = self.snapshot
            return Snapshot(s.status, s.read_at, dict(s.outages))

    def _down(self, server: str, exc: BaseException | str) -> None:
        text = exc.message if isinstance(exc, MigratorError) else str(exc)
        text = (text.strip().splitlines() or [type(exc).__name__])[0][:300]
        old = self.snapshot.outages.get(server)
        if old is None:
            log.warning("server unreachable", extra={"server": server, "error": text})
        self.snapshot.outages[server] = Outage(server, old.since if old else utcnow(), text)

    def _up(self, server: str) -> None:
        if self.snapshot.outages.pop(server, None) is not None:
            log.info("server answers again", extra={"server": server})

    def close(self) -> None:
        if self.machine is not None:
            try:
                self.machine.close()
            finally:
                self.machine = None


class Poller:
    """Reads in a thread of its own every `interval` seconds, so a server that hangs slows
    the reads, never the screen, a scrape or Ctrl-C."""

    def __init__(self, reader: StatusReader, interval: float) -> None:
        self.reader, self.interval = reader, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="status-reader", daemon=True)

    def start(self) -> Poller:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.reader.read()
                self.stop.wait(self.interval)
        finally:
            self.reader.close()

    def current(self) -> Snapshot:
        return self.reader.current()

    def close(self) -> None:
        self.stop.set()
