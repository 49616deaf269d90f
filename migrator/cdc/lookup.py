"""Reads from the source that the applier needs (N:1 parents, children after a key change,
whole aggregates to rebuild), through one connection that survives a server restart."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import MySQLdb

from migrator.errors import ConnectError
from migrator.model.transform import CollectionPlan, EmbedPlan, Row
from migrator.model.urls import MySQLURL
from migrator.source.connection import connect
from migrator.source.reader import ChunkReader

T = TypeVar("T")
log = logging.getLogger("migrator.cdc")
# server gone, restarting, connection dropped: worth waiting for
_TRANSIENT = {2002, 2003, 2006, 2013, 1053}


class SourceLookup:
    def __init__(self, url: MySQLURL, *, patience: float = 60.0) -> None:
        self.url = url
        self.patience = patience  # seconds to wait for a server that went away
        self.conn: Any = None

    def run(self, fn: Callable[[Any], T]) -> T:
        """fn(connection), reconnecting when the server dropped us (a restart, a timeout):
        for up to `patience` seconds, then the error goes up (nothing is checkpointed)."""
        deadline = time.monotonic() + self.patience
        delay = 0.2
        while True:
            try:
                if self.conn is None:
                    self.conn = connect(self.url, raw=True)
                return fn(self.conn)
            except (MySQLdb.OperationalError, ConnectError) as exc:
                code = exc.args[0] if isinstance(exc, MySQLdb.OperationalError) else 2003
                self.close_quietly()
                if code not in _TRANSIENT or time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "source lookup failed; reconnecting",
                    extra={"cause": str(exc)[:300], "wait_seconds": delay},
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def close_quietly(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    def embedded(self, plan: CollectionPlan, e: EmbedPlan, root_row: Row) -> Any:
        """A top-level embed's current value for a root row (its whole subtree): an array, a
        sub-document or None."""
        children = self.run(lambda c: ChunkReader(c, plan).read_embeds([root_row], [e]))
        return plan.embedded(e, root_row, children)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
