"""Re-checks wait for CDC: a difference found while CDC still had changes to apply is not a
difference yet. A re-check reads the rows, then waits until CDC has applied everything the
source had committed by then, and only then reads the documents."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

import MySQLdb

from migrator.model.events import Position
from migrator.source.position import master_position
from migrator.state.store import StateStore

log = logging.getLogger(__name__)
_DENIED = (1227, 1045, 1142)  # specific access denied, access denied, command denied


class CdcWait:
    """Waits, at most `bound` seconds per call, for CDC to apply past the source's position."""

    def __init__(self, state: StateStore, bound: float) -> None:
        self.state = state
        self.bound = bound
        self.positions_denied = False

    def applies(self) -> bool:
        """Is a CDC process applying MySQL's changes (so that waiting can settle anything)?"""
        return self.state.cdc_alive() and self.state.mongo_is_truth() is None

    def after_read(self, conn: Any, read_at: datetime) -> bool | None:
        """Call right after reading rows on `conn` at `read_at`. True once CDC has applied every
        change committed before the read, False when `bound` passed first, None when no CDC
        applies MySQL's changes (nothing to wait for)."""
        if self.bound <= 0 or not self.applies():
            return None
        deadline = time.monotonic() + self.bound
        target = None if self.state.cdc_from_debezium() else self._position(conn)
        if target is None:
            return self._wait(deadline, lambda: self._drained_since(read_at))
        return self._wait(deadline, lambda: self.state.cdc_applied_through(target))

    def _position(self, conn: Any) -> Position | None:
        """The source's binlog position now (every change the read saw lies before it); None
        when this user may not read it (verify needs only SELECT: SHOW MASTER STATUS wants
        REPLICATION CLIENT / BINLOG MONITOR), and CDC's own word is used instead."""
        if self.positions_denied:
            return None
        try:
            return master_position(conn)
        except MySQLdb.OperationalError as exc:
            if not exc.args or exc.args[0] not in _DENIED:
                raise
            self.positions_denied = True
            log.info(
                "verify: this user cannot read the binlog position (%s); re-checks wait for "
                "CDC to report itself caught up instead",
                exc.args[1] if len(exc.args) > 1 else exc,
            )
            return None

    def _wait(self, deadline: float, done: Any) -> bool:
        while not done():
            if time.monotonic() >= deadline or not self.state.cdc_alive():
                return bool(done())
            time.sleep(0.05)
        return True

    def _drained_since(self, read_at: datetime) -> bool:
        """CDC said, after the read, that it had applied everything (lag 0): the binlog
        runner compares its position with the source's; Debezium's consumer found its topics
        empty in a poll after the read (Debezium's own delay is not seen)."""
        st = self.state.cdc_status() or {}
        at = st.get("updated_at")
        return st.get("lag_seconds") == 0 and isinstance(at, datetime) and at > read_at
