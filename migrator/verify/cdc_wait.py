"""Re-checks wait for CDC: a difference found while CDC still had changes to apply is not a
difference yet. A re-check reads the rows, then waits until CDC has applied everything the
source had committed by then, and only then reads the documents."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from ..cdc.runner import applied_through, master_position
from ..state import StateStore


class CdcWait:
    """Waits, at most `bound` seconds per call, for CDC to apply past the source's position."""

    def __init__(self, state: StateStore, bound: float) -> None:
        self.state = state
        self.bound = bound

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
        if self._debezium():
            return self._wait(deadline, lambda: self._drained_since(read_at))
        target = master_position(conn)  # every change the read saw is before this position
        return self._wait(deadline, lambda: applied_through(self.state, target))

    def _wait(self, deadline: float, done: Any) -> bool:
        while not done():
            if time.monotonic() >= deadline or not self.state.cdc_alive():
                return bool(done())
            time.sleep(0.05)
        return True

    def _debezium(self) -> bool:
        status = self.state.cdc_status() or {}
        return status.get("source") == "debezium"

    def _drained_since(self, read_at: datetime) -> bool:
        """Debezium's offsets are not binlog positions: the consumer found its topics empty
        (lag 0) in a poll that started after the read (Debezium's own delay is not seen)."""
        st = self.state.cdc_status() or {}
        at = st.get("updated_at")
        return st.get("lag_seconds") == 0 and isinstance(at, datetime) and at > read_at
