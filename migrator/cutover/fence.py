"""The write fence: writers register and acknowledge a freeze; the switch waits for them.

The arithmetic, with no clock compared across hosts (each side uses its own monotonic clock):

- A writer (an SDK instance) starts a write only with a control document it read at most
  `control_ttl` ago, and holds its lock for the whole write. It acknowledges a freeze under
  that lock, so an acknowledging writer has no write in flight and starts none under the old
  routing: it waits for the freeze to end and then reads the new order.
- Every writer beats (a counter in `<state>.writers`) every `beat_seconds` from a background
  thread, which also reads the control document and acknowledges a freeze for an idle writer.
- The switch sets the freeze, then waits until every registered writer has acknowledged it or
  has not beaten for `writer_timeout` seconds of the switch's own clock (a dead process).
- A writer treats a freeze as over once it has seen it for `freeze_timeout` seconds of its own
  clock; the switch flips only within `freeze_timeout - FLIP_MARGIN` of setting it. A writer
  sees the freeze after it was set, so no writer resumes under the old order after the flip,
  and writes never wait on a dead switch for longer than `freeze_timeout`.

Not covered: a writer cut off from MongoDB (it cannot beat) whose write was already in flight
for longer than `writer_timeout` (a MySQL lock wait, say) when the switch flipped.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import timedelta
from typing import Any

from pymongo.collection import Collection

from migrator.errors import CheckFailed
from migrator.sink.mongo import with_retry
from migrator.state.store import now, process_owner

FLIP_MARGIN = 1.0  # seconds the switch keeps between its flip and a writer's freeze expiry
WRITER_TIMEOUT = 3.0  # no beat for this long (switch's clock): the writer is gone
FORGET_AFTER = timedelta(hours=1)  # registrations of writers gone this long are removed


class Registration:
    """One writer's entry in `<state>.writers`."""

    def __init__(self, writers: Collection[Any], *, role: str = "sdk") -> None:
        self.writers = writers
        self.id = process_owner()
        self.role = role
        self.beats = 0
        self.acked: str | None = None
        self._lock = threading.Lock()

    def beat(self, acknowledge: str | None = None) -> None:
        """Beat; with `acknowledge`, also acknowledge that freeze. The beat thread and the
        writer (acknowledging) both beat: under one lock the count moves and a beat never
        writes back an acknowledgement older than the one already made."""
        with self._lock:
            if acknowledge is not None:
                self.acked = acknowledge
            self.beats += 1
            doc = {"role": self.role, "beats": self.beats, "at": now(), "acked_freeze": self.acked}
            # no retries: a writer that cannot beat must look gone to the switch
            self.writers.update_one({"_id": self.id}, {"$set": doc}, upsert=True)

    def leave(self) -> None:
        with contextlib.suppress(Exception):  # best effort: a writer left behind ages out
            self.writers.delete_one({"_id": self.id})


class Fence:
    """What the switch knows of the writers: each one's last beat count and when (by the
    switch's clock) it last changed."""

    def __init__(self, writers: Collection[Any], writer_timeout: float = WRITER_TIMEOUT) -> None:
        self.writers = writers
        self.timeout = writer_timeout
        self.last: dict[str, tuple[int, float]] = {}
        self.live: set[str] = set()
        self.gone: set[str] = set()

    def _look(self, freeze_id: str | None) -> tuple[list[str], int]:
        """(writers still to wait for, writers that acknowledged)"""
        t = time.monotonic()
        waiting: list[str] = []
        acked = 0
        self.gone = set()
        for w in self.writers.find({}, {"beats": 1, "acked_freeze": 1}):
            if freeze_id is not None and w.get("acked_freeze") == freeze_id:
                acked += 1
                continue
            wid, beats = w["_id"], w.get("beats", 0)
            seen = self.last.get(wid)
            if seen is None or seen[0] != beats:
                self.last[wid] = (beats, t)
                if seen is not None:
                    self.live.add(wid)  # seen to move once: alive (the survey's question)
                if seen is None or freeze_id is not None:
                    waiting.append(wid)
            elif t - seen[1] >= self.timeout:
                self.gone.add(wid)
            elif freeze_id is not None or wid not in self.live:
                waiting.append(wid)
        return waiting, acked

    def survey(self) -> None:
        """Before the freeze (it costs no pause): tell live writers from dead ones, which
        would otherwise each cost `writer_timeout` inside it, and forget the long dead."""
        with_retry(lambda: self.writers.delete_many({"at": {"$lt": now() - FORGET_AFTER}}))
        end = time.monotonic() + self.timeout + 0.5
        while time.monotonic() < end:
            waiting, _ = self._look(None)
            if not waiting:
                return
            time.sleep(0.05)

    def wait(self, freeze_id: str, *, deadline: float) -> dict[str, Any]:
        """Block until every live writer acknowledged `freeze_id`; CheckFailed at the
        (monotonic) deadline. Returns acknowledged, presumed gone, seconds."""
        t0 = time.monotonic()
        while True:
            waiting, acked = self._look(freeze_id)
            if not waiting:
                return {
                    "acknowledged": acked,
                    "gone": len(self.gone),
                    "seconds": round(time.monotonic() - t0, 3),
                }
            if time.monotonic() > deadline:
                raise CheckFailed(
                    f"{len(waiting)} writer(s) did not acknowledge the write freeze in time "
                    f"({', '.join(waiting[:3])}): staying in the current phase"
                )
            time.sleep(0.02)
