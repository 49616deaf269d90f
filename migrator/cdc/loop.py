"""One change loop over two change streams (the binlog, Debezium's topics).

A stream says what changed, in order, and keeps its place: units of changes (transactions),
schema changes, and "nothing waits now" (idle). The loop does everything else, the same way for
both: batches (bounded in memory), the copy fence (no write while a backfill copies), the hand
over to reverse sync once MongoDB is the source of truth, checkpoints saved only after MongoDB
acknowledged a batch, upkeep sweeps, liveness, status and `--until-caught-up`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pymongo.errors import PyMongoError

from migrator.cdc.applier import Applier, BatchResult
from migrator.cdc.binlog import DDL
from migrator.cdc.binlog_read import Tick
from migrator.faults import fault_point
from migrator.model.events import Position, Transaction
from migrator.reverse.runner import run_reverse
from migrator.runtime import Migration
from migrator.sink.mongo import ensure_indexes
from migrator.state.store import StateStore, now
from migrator.ticker import Ticker

log = logging.getLogger("migrator.cdc")


@dataclass
class CdcSummary:
    mode: str
    start: dict[str, Any]
    end: dict[str, Any] = field(default_factory=dict)
    transactions: int = 0
    events: int = 0
    applied: dict[str, int] = field(default_factory=dict)  # "table op" -> count
    dead_letters: int = 0
    pending: int = 0
    batches: int = 0
    reconnects: int = 0
    lag_seconds: float = 0.0
    seconds: float = 0.0
    events_per_sec: float = 0.0
    stopped: str = ""
    ddl: list[dict[str, Any]] = field(default_factory=list)
    reverse_changes: int = 0  # documents written back to MySQL after the write switch
    skipped: int = 0  # changes logged before the last rollback to MySQL-first (not applied)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LiveStats:
    """What the live view and the metrics show; updated after every batch."""

    events: int = 0
    events_per_sec: float = 0.0
    lag_seconds: float = 0.0
    queue_depth: int = 0
    held_events: int = 0  # events held in memory for the last batch applied
    dead_letters: int = 0
    pending: int = 0
    position: str = ""
    applied: dict[tuple[str, str], int] = field(default_factory=dict)
    checkpoint_at: datetime | None = None
    reverse_changes: int = 0  # documents reverse sync wrote to MySQL (after the write switch)


@dataclass(frozen=True)
class Idle:
    """Nothing waits in the stream now. `at`: where the binlog stands (other schemas' events
    move it), when the stream knows."""

    at: Position | None = None


@dataclass(frozen=True)
class Boundary:
    """The end of what a stream read at once (a Kafka poll): a batch ends here, and only
    here, for a stream whose acknowledgement covers everything it read."""


Unit = Transaction | DDL | Idle | Boundary | Tick


class ChangeStream(Protocol):
    """A source of changes in order, keeping its place across pauses."""

    source: str  # "binlog" | "debezium": in the status and the checkpoints
    batches_at_boundaries: bool  # True: the loop ends batches only at Boundary units

    def units(self) -> Iterator[Unit]:
        """Changes from the place after the last acknowledged one (opened again after a
        `suspend`). Idle at least every second or so while the source is quiet."""

    def acknowledge(self, batch: list[Transaction]) -> None:
        """MongoDB acknowledged every write of `batch`: move the checkpoint past it."""

    def quiet(self, idle: Idle) -> None:
        """Nothing waits: keep the checkpoint where the source stands (lag is measurable)."""

    def suspend(self, wait: Callable[[], bool]) -> None:
        """Hold the place while `wait()` (which waits a little each call) returns True; then
        go on from the last acknowledged change (what was read since is read again)."""

    def caught_up(self) -> str | None:
        """With --until-caught-up: why to stop now ("caught up"), or None to go on."""

    def lag_is_zero(self) -> bool:
        """Has the stream applied everything the source holds right now?"""

    def apply_ddl(self, ddl: DDL) -> None:
        """A schema change on the source (the binlog's): handled per --on-ddl."""

    def status(self) -> dict[str, Any]:
        """The stream's own fields of CDC's status (its position, or its source)."""

    def end(self) -> dict[str, Any]:
        """Where it stopped, for the summary."""

    def close(self) -> None: ...


def truth_stop_reason(phase: str) -> str:
    return (
        f"MongoDB is the source of truth (phase {phase}): CDC applies nothing from MySQL "
        "until a rollback"
    )


class Liveness:
    """Writes CDC's liveness every second from its own thread, so a long batch or a wait
    still shows a live CDC (the copy fence and `status` read it)."""

    def __init__(self, state: StateStore, **fields: Any) -> None:
        self.state = state
        self.fields: dict[str, Any] = {"pid": os.getpid(), **fields}
        self._ticker = Ticker(self.beat, 1.0, "cdc-liveness")

    def start(self) -> Liveness:
        self.beat()
        self._ticker.start()
        return self

    def beat(self, **fields: Any) -> None:
        self.fields.update(fields)
        try:
            self.state.cdc_heartbeat(**self.fields)
        except PyMongoError:  # the main loop meets the same server and reports it
            log.debug("liveness write failed", exc_info=True)

    def stop(self) -> None:
        self._ticker.stop()
        self.beat(alive_at=None, waiting_for=None)


def wait_while_copying(
    state: StateStore,
    live: Liveness | None,
    stop: threading.Event,
    mode: str,
    max_wait: float | None = None,
) -> bool:
    """If a backfill copies, acknowledge its fence and wait for it to end (or `max_wait`
    seconds). True if it waited."""
    copy = state.copy_in_progress()
    if copy is None:
        return False
    if max_wait is None:
        log.warning(
            "a backfill is copying; CDC pauses until it ends", extra={"owner": copy["owner"]}
        )
    until = None if max_wait is None else time.monotonic() + max_wait
    while copy is not None and not stop.is_set():
        if until is not None and time.monotonic() >= until:
            break
        if live is not None:
            live.beat(waiting_for="backfill", acked_copy=copy["owner"])
        if stop.wait(0.3):
            break
        copy = state.copy_in_progress()
    if live is not None:
        live.beat(waiting_for=None)
    return True


class _Interrupted(Exception):
    """A backfill started copying, or the write switch flipped: the batch held is dropped
    (nothing of it was written) and the stream goes back to its last acknowledged place."""


@dataclass
class LoopSettings:
    mode: str  # "follow" | "until-caught-up"
    dry_run: bool
    batch_events: int
    batch_seconds: float
    max_events: int
    on_batch: Callable[[LiveStats], None] | None = None


class ChangeLoop:
    """Applies a stream's changes through the applier until stopped (or caught up)."""

    def __init__(
        self,
        mig: Migration,
        stream: ChangeStream,
        applier: Applier,
        settings: LoopSettings,
        *,
        stop: threading.Event,
        summary: CdcSummary,
        live_fields: dict[str, Any],
    ) -> None:
        self.mig, self.stream, self.applier, self.s = mig, stream, applier, settings
        self.state, self.stop, self.summary = mig.state, stop, summary
        self.stats = LiveStats(pending=applier.pending_count)
        self.live = (
            None if settings.dry_run else Liveness(self.state, mode=settings.mode, **live_fields)
        )
        self.batch: list[Transaction] = []
        self.held = 0
        self.batch_started = 0.0
        self.t0 = time.monotonic()
        self.last_status = self.last_sweep = self.last_dangling = self.last_lag_check = 0.0
        self.last_idle = 0.0
        self.last_commit: datetime | None = None

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> CdcSummary:
        if self.live is not None:
            self.live.start()
        self.stats.dead_letters = self.state.dead_letter_count()
        try:
            while not self.stop.is_set():
                if self._hand_over():
                    break
                if not self.s.dry_run and self.state.copy_in_progress() is not None:
                    self._suspend(self._copy_wait)
                    continue
                if not self.s.dry_run:
                    # a backfill builds them after its copy: one that stopped early did not
                    ensure_indexes(self.mig.target, self.applier.transform.collections)
                try:
                    self._session()
                except _Interrupted:
                    self.batch, self.held = [], 0
                    continue
                break
            else:
                self.summary.stopped = self.summary.stopped or "stopped by signal"
            self._finish()
        finally:
            if self.live is not None:
                self.live.stop()
            self.stream.close()
        return self.summary

    def _session(self) -> None:
        """Units of the stream until stopped or caught up (raises _Interrupted)."""
        if self._caught_up():
            return
        for unit in self.stream.units():
            if isinstance(unit, Transaction):
                self._take(unit)
            elif isinstance(unit, Boundary):
                self.flush(force=True)
            elif isinstance(unit, Tick):
                # only unmapped events for a while: the batch held must not wait for them
                if self.batch and time.monotonic() - self.batch_started >= self.s.batch_seconds:
                    self.flush()
            elif isinstance(unit, Idle):
                self.flush(force=self.stream.batches_at_boundaries)
                self.idle(unit)
            elif isinstance(unit, DDL):
                self.flush()
                if not self.s.dry_run and self.state.mongo_is_truth() is not None:
                    # logged after the write switch (CDC had caught up before the flip): not
                    # this phase's to handle; met after a rollback (the switch's fingerprint)
                    raise _Interrupted()
                self.stream.apply_ddl(unit)
            if self.stream.batches_at_boundaries and not isinstance(unit, Boundary | Idle):
                continue  # what it read is acknowledged whole: stop only between reads
            if self._caught_up():
                return
            if self.stop.is_set():
                self.flush(force=True)
                self.summary.stopped = "stopped by signal"
                return

    def _take(self, txn: Transaction) -> None:
        if self.batch and self.held + len(txn.events) > self.s.max_events:
            self.flush(force=True)  # memory stays bounded: never hold more than max_events
        if not self.batch:
            self.batch_started = time.monotonic()
        self.batch.append(txn)
        self.held += len(txn.events)
        self.stats.queue_depth = self.held
        if self.stream.batches_at_boundaries:
            return
        if (
            not txn.complete
            or self.held >= self.s.batch_events
            or time.monotonic() - self.batch_started >= self.s.batch_seconds
        ):
            self.flush()

    def _caught_up(self) -> bool:
        if self.s.mode != "until-caught-up":
            return False
        reason = self.stream.caught_up()
        if reason is None:
            return False
        self.flush(force=True)
        if not self.s.dry_run:
            self.stream.quiet(Idle())  # the place it stops at is a checkpoint (says CDC ran)
        self.summary.stopped = reason
        return True

    # -- a batch ---------------------------------------------------------------------------
    def flush(self, *, force: bool = False) -> None:
        """Apply the batch held, then move the checkpoint past it. A stream that batches at
        boundaries is flushed only when `force`d (its acknowledgement covers all it read)."""
        if self.stream.batches_at_boundaries and not force:
            return
        if not self.batch and not (force and self.stream.batches_at_boundaries):
            return
        if not self.s.dry_run and self.state.copy_in_progress() is not None:
            raise _Interrupted()  # the copy fence: nothing of this batch is written
        if not self.s.dry_run and self.state.mongo_is_truth() is not None:
            # checked before every batch: each of its events committed before this read, so
            # if the switch flips after it, they are changes from before the flip
            raise _Interrupted()
        batch, held = self.batch, self.held
        self.batch, self.held = [], 0
        fault_point("cdc_apply")  # tests: a CDC that lags behind the source
        res: BatchResult = self.applier.apply(batch) if batch else BatchResult()
        log.debug(
            "batch applied",
            extra={
                "transactions": len(batch),
                "events": res.events,
                "dead_letters": res.dead_letters,
                "seconds": round(res.seconds, 4),
            },
        )
        if not self.s.dry_run:
            self.stream.acknowledge(batch)  # only now: MongoDB acknowledged every write
            self.stats.checkpoint_at = now()
        self._count(batch, res, held)
        self.sweep()
        self.publish()

    def _count(self, batch: list[Transaction], res: BatchResult, held: int) -> None:
        s, st = self.summary, self.stats
        if batch:
            s.batches += 1
        complete = [t for t in batch if t.complete]
        s.transactions += len(complete)
        s.events += res.events
        s.dead_letters += res.dead_letters
        for (t, op), n in res.applied.items():
            k = f"{t} {op}"
            s.applied[k] = s.applied.get(k, 0) + n
            st.applied[(t, op)] = st.applied.get((t, op), 0) + n
        st.events = s.events
        st.held_events = held
        st.dead_letters += res.dead_letters
        st.pending = self.applier.pending_count
        st.queue_depth = 0
        last = next((t.commit_time for t in reversed(batch) if t.commit_time), None)
        if last is not None:
            self.last_commit = last
            st.lag_seconds = (now() - last).total_seconds()

    # -- quiet times, upkeep, status -------------------------------------------------------
    def idle(self, unit: Idle) -> None:
        """Nothing waits: keep the checkpoint at the source's place, sweep, say lag 0 (at
        most once a second: a quiet stream says so ten times a second)."""
        if time.monotonic() - self.last_idle < 1.0:
            return
        self.last_idle = time.monotonic()
        if not self.s.dry_run and self.state.copy_in_progress() is not None:
            raise _Interrupted()  # acknowledged by the wait that follows
        if not self.s.dry_run and self.state.mongo_is_truth() is not None:
            raise _Interrupted()
        if not self.s.dry_run:
            self.stream.quiet(unit)
        self.stats.queue_depth = 0
        self.stats.lag_seconds = 0.0
        self.sweep()
        every = 5.0 if self.applier.unordered else 10.0
        if not self.s.dry_run and time.monotonic() - self.last_dangling > every:
            # caught up: documents newer than the events a cascade followed are settled now
            self.last_dangling = time.monotonic()
            before = self.applier.expired
            self.applier.sweep_dangling()
            self.summary.dead_letters += self.applier.expired - before
        self.publish(idle=True)

    def sweep(self) -> None:
        if self.s.dry_run or time.monotonic() - self.last_sweep < 5.0:
            return
        self.last_sweep = time.monotonic()
        before = self.applier.expired
        self.applier.sweep_pending()
        self.summary.dead_letters += self.applier.expired - before
        self.stats.dead_letters += self.applier.expired - before

    def publish(self, idle: bool = False, force: bool = False) -> None:
        st, s = self.stats, self.summary
        elapsed = time.monotonic() - self.t0
        st.events_per_sec = s.events / elapsed if elapsed else 0.0
        if idle or time.monotonic() - self.last_lag_check > 1.0:
            self.last_lag_check = time.monotonic()
            if idle or self.stream.lag_is_zero():
                st.lag_seconds = 0.0
        s.lag_seconds = st.lag_seconds
        # the status is for people and `status`: once a second is enough while batches flow
        # (the switch's lag gate reads the checkpoint), and a write less per batch on the server
        due = force or time.monotonic() - self.last_status >= 1.0
        if not self.s.dry_run and due:
            self.last_status = time.monotonic()
            self.state.save_cdc_status(
                lag_seconds=st.lag_seconds,
                events=s.events,
                events_per_sec=round(st.events_per_sec, 1),
                dead_letters=st.dead_letters,
                pending=st.pending,
                mode=s.mode,
                **self.stream.status(),
            )
        if self.s.on_batch:
            self.s.on_batch(st)

    # -- pauses: the copy fence and the write switch ---------------------------------------
    def _suspend(self, wait: Callable[[], bool]) -> None:
        """The stream holds its place while `wait()` waits, until it is done or CDC stops."""
        self.stream.suspend(lambda: not self.stop.is_set() and wait())

    def _copy_wait(self) -> bool:
        return wait_while_copying(self.state, self.live, self.stop, self.s.mode, max_wait=1.0)

    def _hand_over(self) -> bool:
        """After the write switch this process carries MongoDB's changes to MySQL (reverse
        sync) until a rollback; True when the run ends here (--until-caught-up, or stopped)."""
        truth = None if self.s.dry_run else self.state.mongo_is_truth()
        if truth is None:
            return False
        log.warning(truth_stop_reason(truth) + "; reverse sync runs instead")
        follow = self.s.mode == "follow"

        def reverse_a_while() -> bool:
            """Reverse sync a few seconds at a time (a stream keeps its place between);
            True while MongoDB is still the source of truth."""
            rev = run_reverse(
                self.mig.settings,
                self.mig.transform,
                self.mig.client,
                self.state,
                stop=self.stop,
                mode="follow" if follow else "until-caught-up",
                live=self.live,
                max_seconds=5.0,
            )
            self.summary.reverse_changes += rev.changes
            self.summary.dead_letters += rev.dead_letters
            self.stats.reverse_changes = self.summary.reverse_changes
            if self.s.on_batch:  # the metrics see the loop turn while it reverse-syncs
                self.s.on_batch(self.stats)
            return follow and self.state.mongo_is_truth() is not None

        if not follow:
            reverse_a_while()
            self.summary.stopped = truth_stop_reason(truth) + "; reverse sync caught up"
            return True
        self._suspend(reverse_a_while)
        if self.stop.is_set():
            self.summary.stopped = "stopped by signal"
            return True
        return False  # rolled back: CDC goes on where the rollback left MySQL

    def _finish(self) -> None:
        s = self.summary
        s.end = self.stream.end()
        if s.batches:
            self.publish(force=True)  # the status ends where the run did
        if not self.s.dry_run and self.state.mongo_is_truth() is None:
            # sweeps read MySQL as the truth
            before = self.applier.expired
            self.applier.sweep_pending()
            self.applier.sweep_dangling()
            s.dead_letters += self.applier.expired - before
        s.pending = self.stats.pending = self.applier.pending_count
        log.info(
            "cdc stopped",
            extra={
                "reason": s.stopped,
                "events": s.events,
                "position": s.end,
                "reconnects": s.reconnects,
            },
        )
        s.seconds = time.monotonic() - self.t0
        s.events_per_sec = s.events / s.seconds if s.seconds else 0.0
        if s.stopped == "caught up":
            s.lag_seconds = 0.0
            if not self.s.dry_run:
                self.stats.lag_seconds = 0.0
                self.publish(idle=True, force=True)
