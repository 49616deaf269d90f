"""`migrator cdc`: tail the source from the checkpoint (or the backfill's position), apply in
batches, checkpoint after MongoDB acknowledged each batch, and say how far behind we are."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Literal

from pymongo.errors import PyMongoError

from migrator.cdc.applier import Applier, BatchResult
from migrator.cdc.binlog import DDL, BinlogSource, Heartbeat
from migrator.cdc.binlog_parallel import ParallelBinlogSource, default_decoders
from migrator.cdc.binlog_read import Tick
from migrator.cdc.lookup import SourceLookup
from migrator.cdc.roles import table_roles
from migrator.errors import CheckFailed, MigratorError
from migrator.faults import fault_point
from migrator.model.events import Position, Transaction, reached
from migrator.model.schema import Schema, split_top_level
from migrator.model.settings import Mapping
from migrator.reverse.runner import run_reverse
from migrator.runtime import Migration, opened
from migrator.source.connection import as_text, query
from migrator.source.connection import connect as mysql_connect
from migrator.source.defaults import column_defaults as read_defaults
from migrator.source.position import is_mariadb, master_position
from migrator.source.schema import introspect
from migrator.state.store import StateStore, now
from migrator.ticker import Ticker

OnDDL = Literal["stop", "ignore", "extend"]
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


def rollback_point(state: StateStore) -> Position | None:
    point = state.cdc_rollback_point()
    return Position.from_dict(point) if point else None


def after_rollback(
    state: StateStore,
    start: Position,
    *,
    same_schema: Callable[[], bool],
    dry_run: bool = False,
) -> tuple[Position, Position | None]:
    """Where CDC starts, and until where it applies no row changes: `start`, or the position
    of a rollback to MySQL-first made since it was saved. What MySQL logged in between is
    reverse sync's copy of MongoDB's changes (state.py); replaying it would only make the
    documents travel back in time until CDC caught up. When a mapped table's columns or
    foreign keys changed meanwhile, the DDL is in that stretch and is met (and handled per
    --on-ddl) only by reading it: CDC then reads from `start` and skips the stretch's rows."""
    p = rollback_point(state)
    if p is None or not reached(p, start) or reached(start, p):
        return start, None
    if not same_schema():
        log.warning(
            "a mapped table changed while MongoDB was the source of truth: CDC reads the "
            "binlog from its checkpoint to meet the DDL, applying no row change before the "
            "rollback's position (reverse sync's copies of MongoDB's changes)",
            extra={"position": start.to_dict(), "rollback_position": p.to_dict()},
        )
        return start, p
    log.info(
        "cdc starts where the rollback left MySQL, not at its checkpoint from before the "
        "write switch",
        extra={"position": p.to_dict(), "checkpoint": start.to_dict()},
    )
    if not dry_run:
        state.save_cdc_checkpoint(p.to_dict(), commit_time=None, after_rollback=True)
    return p, None


def _same_schema(src: Any, state: StateStore, held: Schema, tables: set[str]) -> bool:
    """Do the tables CDC decodes have the columns, keys and foreign keys they had at the
    write switch (a CDC started since has read the new ones, but a DDL in the skipped stretch
    would still go unhandled) and that this process holds?"""
    conn = mysql_connect(src)
    try:
        current = introspect(conn, held.database).fingerprint(tables)
    finally:
        conn.close()
    return current == held.fingerprint(tables) and current == (state.switch_schema() or current)


def check_start(conn: Any, start: Position, maria: bool) -> None:
    """Refuse a start position that was purged or lies ahead of the source (moved backwards)."""
    logs = {as_text(r[0]): int(r[1]) for r in query(conn, "SHOW BINARY LOGS")}
    current = master_position(conn)
    if maria and start.gtid:
        server = {p.split("-")[0]: p for p in (current.gtid or "").split(",") if p}
        for part in start.gtid.split(","):
            dom, _srv, seq = part.split("-")
            have = server.get(dom)
            if have is not None and int(have.split("-")[2]) < int(seq):
                raise CheckFailed(
                    f"the CDC position {start} is ahead of the source ({current}): the source "
                    "moved backwards (restored from a backup, or its binlog was reset)",
                    hint="re-copy: `migrator backfill --restart`, then CDC again",
                )
        return
    if start.file:
        if start.file not in logs:
            raise CheckFailed(
                f"the source no longer has binlog {start.file} (CDC position {start}): it was "
                "purged",
                hint="run `migrator backfill --restart` and keep binlogs longer",
            )
        if reached(start, current) and (start.file, start.pos) != (current.file, current.pos):
            raise CheckFailed(
                f"the CDC position {start} is ahead of the source ({current}): "
                "the source moved backwards",
                hint="re-copy: `migrator backfill --restart`, then CDC again",
            )


class _CopyStarted(Exception):
    """A backfill took the copy fence: stop applying, drop what is held, wait, resume."""


class _TruthMoved(Exception):
    """The write switch made MongoDB the source of truth: apply nothing more from MySQL."""


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


def run_cdc(
    migration: Migration | Mapping,
    *,
    mode: Literal["follow", "until-caught-up"] = "follow",
    on_ddl: OnDDL = "stop",
    batch_events: int = 2000,
    batch_seconds: float = 0.1,
    stop: threading.Event | None = None,
    on_batch: Callable[[LiveStats], None] | None = None,
    dry_run: bool = False,
    max_events_in_memory: int = 10_000,
    pending_timeout: float = 600.0,
    decoders: int | None = None,
) -> CdcSummary:
    """Tail the source and apply; `dry_run` decodes, transforms and builds every operation
    but writes nothing and saves no checkpoint (it measures the pipeline). Rows are decoded by
    `decoders` worker processes (None: one per core beyond this one, up to 4; 0: here).

    Memory is bounded by `max_events_in_memory` whatever a transaction's size: a bigger one
    is applied in pieces, and the checkpoint still moves only at commits."""
    with opened(migration, claim_state=not dry_run) as mig:
        return _run_cdc(
            mig,
            mode=mode,
            on_ddl=on_ddl,
            batch_events=batch_events,
            batch_seconds=batch_seconds,
            stop=stop or threading.Event(),
            on_batch=on_batch,
            dry_run=dry_run,
            max_events_in_memory=max_events_in_memory,
            pending_timeout=pending_timeout,
            decoders=decoders,
        )


def _run_cdc(
    mig: Migration,
    *,
    mode: Literal["follow", "until-caught-up"],
    on_ddl: OnDDL,
    batch_events: int,
    batch_seconds: float,
    stop: threading.Event,
    on_batch: Callable[[LiveStats], None] | None,
    dry_run: bool,
    max_events_in_memory: int,
    pending_timeout: float,
    decoders: int | None,
) -> CdcSummary:
    mapping, src, client, state = mig.settings, mig.source_url, mig.client, mig.state
    meta = mig.connect_source()
    maria = mig.mariadb
    transform = mig.transform
    lookup = SourceLookup(src)
    applier = Applier(
        transform,
        mig.target,
        state,
        lookup,
        dry_run=dry_run,
        pending_bound_seconds=pending_timeout,
    )
    tables = set(table_roles(transform))
    live = None if dry_run else Liveness(state, mode=mode, source="binlog").start()
    target = master_position(meta) if mode == "until-caught-up" else None
    summary = CdcSummary(mode=mode, start={})
    stats = LiveStats(pending=applier.pending_count, dead_letters=state.dead_letter_count())
    t0 = time.monotonic()
    batch_events = max(1, min(batch_events, max_events_in_memory))
    n_decoders = default_decoders() if decoders is None else decoders
    try:
        while True:
            if not dry_run:
                truth = state.mongo_is_truth()
                if truth is not None:
                    # after the write switch this process carries MongoDB's changes to MySQL
                    log.warning(truth_stop_reason(truth) + "; reverse sync runs instead")
                    rev = run_reverse(
                        mapping, mig.transform, client, state, stop=stop, mode=mode, live=live
                    )
                    summary.reverse_changes += rev.changes
                    summary.dead_letters += rev.dead_letters
                    if mode != "follow":
                        summary.stopped = truth_stop_reason(truth) + "; reverse sync caught up"
                        break
                    if stop.is_set():
                        summary.stopped = "stopped by signal"
                        break
                    continue  # rolled back: CDC resumes where the rollback left MySQL
                wait_while_copying(state, live, stop, mode)
            if stop.is_set():
                summary.stopped = summary.stopped or "stopped by signal"
                break
            saved = state.cdc_checkpoint() or state.backfill_position()
            if not saved:
                raise MigratorError(
                    "no position to start CDC from: neither a CDC checkpoint nor a "
                    "backfill position in the state store",
                    hint="run `migrator backfill` (or `migrator sync`) first",
                )
            start, echoes_until = after_rollback(
                state,
                Position.from_dict(saved),
                same_schema=partial(_same_schema, src, state, applier.transform.schema, tables),
                dry_run=dry_run,
            )
            if not summary.start:
                summary.start = start.to_dict()
            # through the lookup's connection: it reconnects if the source restarted meanwhile
            lookup.run(partial(check_start, start=start, maria=maria))
            source: BinlogSource | ParallelBinlogSource
            if n_decoders:
                source = ParallelBinlogSource(
                    src,
                    applier.transform.schema,
                    tables,
                    start,
                    decoders=n_decoders,
                    flavor="mariadb" if maria else "mysql",
                    max_events=max_events_in_memory,
                )
            else:
                source = BinlogSource(
                    src,
                    applier.transform.schema,
                    tables,
                    start,
                    flavor="mariadb" if maria else "mysql",
                    max_events=max_events_in_memory,
                )
            log.info(
                "cdc starting",
                extra={
                    "position": start.to_dict(),
                    "mode": mode,
                    "target": target.to_dict() if target else None,
                },
            )
            session = _Session(
                mig,
                applier,
                state,
                source,
                lookup,
                summary,
                stats,
                stop,
                on_batch=on_batch,
                on_ddl=on_ddl,
                tables=tables,
                dry_run=dry_run,
                batch_events=batch_events,
                batch_seconds=batch_seconds,
                max_events=max_events_in_memory,
                target=target,
                start=start,
                echoes_until=echoes_until,
                t0=t0,
            )
            try:
                session.run()
            except _CopyStarted:
                log.warning("a backfill started copying; CDC drops its batch and waits")
                continue
            except _TruthMoved:
                continue  # the loop's top waits (follow) or stops
            finally:
                summary.reconnects += source.reconnects
                source.close()
            break
        if not dry_run and state.mongo_is_truth() is None:  # sweeps read MySQL as the truth
            applier.sweep_pending()
            applier.sweep_dangling()
        summary.dead_letters += applier.expired
        stats.pending = summary.pending = applier.pending_count
    finally:
        if live is not None:
            live.stop()
        lookup.close()
        meta.close()
    log.info(
        "cdc stopped",
        extra={
            "reason": summary.stopped,
            "events": summary.events,
            "position": summary.end,
            "reconnects": summary.reconnects,
        },
    )
    summary.seconds = time.monotonic() - t0
    summary.events_per_sec = summary.events / summary.seconds if summary.seconds else 0.0
    if summary.stopped == "caught up":
        summary.lag_seconds = 0.0
    if summary.stopped == "caught up" and not dry_run:
        state.save_cdc_status(
            lag_seconds=0.0,
            position=summary.end,
            events=summary.events,
            dead_letters=state.dead_letter_count(),
            pending=applier.pending_count,
            mode=mode,
        )
    return summary


class _Session:
    """One pass over the stream from a start position (a copy fence ends it early)."""

    def __init__(
        self,
        migration: Migration,
        applier: Applier,
        state: StateStore,
        source: BinlogSource | ParallelBinlogSource,
        lookup: SourceLookup,
        summary: CdcSummary,
        stats: LiveStats,
        stop: threading.Event,
        *,
        on_batch: Callable[[LiveStats], None] | None,
        on_ddl: OnDDL,
        tables: set[str],
        dry_run: bool,
        batch_events: int,
        batch_seconds: float,
        max_events: int,
        target: Position | None,
        start: Position,
        t0: float,
        echoes_until: Position | None = None,
    ) -> None:
        self.migration, self.mapping = migration, migration.settings
        self.applier, self.state, self.source = applier, state, source
        self.lookup, self.summary, self.stats, self.stop = lookup, summary, stats, stop
        self.on_batch, self.on_ddl, self.tables, self.dry_run = on_batch, on_ddl, tables, dry_run
        self.batch_events, self.batch_seconds, self.max_events = (
            batch_events,
            batch_seconds,
            max_events,
        )
        self.target, self.t0 = target, t0
        self.position = start
        self.echoes_until = echoes_until
        # the last checkpoint written; None when the start is only the backfill's position, so
        # that an idle source still gets one (the lag gate and `status` read the checkpoint)
        saved = None if dry_run else state.cdc_checkpoint()
        self.saved: Position | None = start if dry_run or saved == start.to_dict() else None
        self.batch: list[Transaction] = []
        self.held = 0
        self.batch_started = 0.0
        self.last_master_check = 0.0
        self.last_idle_publish = 0.0
        self.last_status = 0.0
        self.last_sweep = time.monotonic()
        self.last_dangling_sweep = 0.0

    def run(self) -> None:
        summary, target = self.summary, self.target
        if target is not None and reached(self.position, target):
            summary.stopped = "caught up"
            if not self.dry_run and not self.state.cdc_checkpoint():
                # nothing to apply: the start is a valid checkpoint (and says CDC has run)
                self.state.save_cdc_checkpoint(self.position.to_dict(), commit_time=None)
            summary.end = self.position.to_dict()
            return
        for item in self.source.items():
            if isinstance(item, Transaction):
                if self.echo(item):
                    # kept as an empty transaction: the checkpoint moves past it as usual
                    item = dataclasses.replace(item, events=[])
                    summary.skipped += 1
                if self.batch and self.held + len(item.events) > self.max_events:
                    self.flush()  # memory stays bounded: never hold more than max_events
                if not self.batch:
                    self.batch_started = time.monotonic()
                self.batch.append(item)
                self.held += len(item.events)
                self.stats.queue_depth = self.held
                full = (
                    not item.complete
                    or self.held >= self.batch_events
                    or time.monotonic() - self.batch_started >= self.batch_seconds
                )
                if full:
                    self.flush()
                if target is not None and item.complete and reached(item.position, target):
                    self.flush()
                    summary.stopped = "caught up"
                    break
            elif isinstance(item, Tick):
                # only unmapped events for a while: the batch held must not wait for them
                if self.batch and time.monotonic() - self.batch_started >= self.batch_seconds:
                    self.flush()
            elif isinstance(item, Heartbeat):
                self.flush()
                if self.position != item.position and item.position.file:
                    # idle at a later position (other schemas' events): remember it
                    self.position = Position(
                        item.position.file, item.position.pos, self.position.gtid
                    )
                self.stats.queue_depth = 0
                self.idle()
                if target is not None and reached(item.position, target):
                    summary.stopped = "caught up"
                    break
            elif isinstance(item, DDL):
                self.flush()
                if not self.dry_run and self.state.mongo_is_truth() is not None:
                    # logged after the write switch (CDC had caught up before the flip): not
                    # this phase's to handle; met after a rollback (the switch's fingerprint)
                    raise _TruthMoved()
                _ddl(
                    item,
                    self.on_ddl,
                    self.migration,
                    self.tables,
                    self.source,
                    self.applier,
                    self.state,
                    summary,
                )
                # past the statement now: a restart must not meet it again
                self.position = self.source.position
                if not self.dry_run:
                    self.state.save_cdc_checkpoint(self.position.to_dict())
            if self.stop.is_set():
                self.flush()
                summary.stopped = "stopped by signal"
                break
        summary.end = self.position.to_dict()
        if self.summary.batches:
            self.publish(force=True)  # the status ends where the session did

    def echo(self, item: Transaction) -> bool:
        """A whole transaction logged before the rollback's position, read only to meet a DDL
        (a piece of a big one is applied: its end is unknown, and replaying is what CDC did
        before the rollback position existed: documents converge as CDC catches up)."""
        return (
            self.echoes_until is not None
            and item.complete
            and reached(self.echoes_until, item.position)
        )

    def idle(self) -> None:
        """Nothing to apply: keep the checkpoint at the source's position (so that lag is
        measurable on a quiet source), sweep waiting children, publish the status."""
        t = time.monotonic()
        if t - self.last_idle_publish < 1.0:
            return
        self.last_idle_publish = t
        if not self.dry_run and self.state.copy_in_progress() is not None:
            raise _CopyStarted()  # acknowledged by the wait that follows
        if not self.dry_run and self.state.mongo_is_truth() is not None:
            raise _TruthMoved()
        if not self.dry_run and self.position != self.saved:
            self.state.save_cdc_checkpoint(self.position.to_dict(), commit_time=None)
            self.saved = self.position
        self.sweep()
        if not self.dry_run and t - self.last_dangling_sweep > 10.0:
            # caught up: documents newer than the events a cascade followed are settled now
            self.last_dangling_sweep = t
            self.applier.sweep_dangling()
        self.publish(idle=True)

    def sweep(self) -> None:
        if self.dry_run or time.monotonic() - self.last_sweep < 5.0:
            return
        self.last_sweep = time.monotonic()
        before = self.applier.expired
        self.applier.sweep_pending()
        self.stats.dead_letters += self.applier.expired - before

    def flush(self) -> None:
        if not self.batch:
            return
        if not self.dry_run and self.state.copy_in_progress() is not None:
            self.batch, self.held = [], 0
            raise _CopyStarted()
        if not self.dry_run and self.state.mongo_is_truth() is not None:
            # checked before every batch: each of its events committed before this read, so if
            # the switch flips after it, they are changes from before the flip
            self.batch, self.held = [], 0
            raise _TruthMoved()
        batch, held = self.batch, self.held
        fault_point("cdc_apply")  # tests: a CDC that lags behind the source
        res: BatchResult = self.applier.apply(batch)
        log.debug(
            "batch applied",
            extra={
                "transactions": len(batch),
                "events": res.events,
                "dead_letters": res.dead_letters,
                "seconds": round(res.seconds, 4),
            },
        )
        complete = [t for t in batch if t.complete]
        if complete:
            self.position = complete[-1].position
        last_commit = next((t.commit_time for t in reversed(batch) if t.commit_time), None)
        if not self.dry_run:
            # only now: MongoDB acknowledged every write of the batch
            self.state.save_cdc_checkpoint(self.position.to_dict(), commit_time=last_commit)
            self.saved = self.position
        s, st = self.summary, self.stats
        s.batches += 1
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
        st.position = str(self.position)
        st.checkpoint_at = now()
        st.lag_seconds = (now() - last_commit).total_seconds() if last_commit else 0.0
        self.batch, self.held = [], 0
        self.sweep()
        self.publish()

    def publish(self, idle: bool = False, force: bool = False) -> None:
        st, s = self.stats, self.summary
        elapsed = time.monotonic() - self.t0
        st.events_per_sec = s.events / elapsed if elapsed else 0.0
        if idle or time.monotonic() - self.last_master_check > 1.0:
            self.last_master_check = time.monotonic()
            if idle or reached(self.position, self.lookup.run(master_position)):
                st.lag_seconds = 0.0
        s.lag_seconds = st.lag_seconds
        # the status is for people and `status`: once a second is enough while batches flow
        # (the switch's lag gate reads the checkpoint), and a write less per batch on the server
        due = idle or force or time.monotonic() - self.last_status >= 1.0
        if not self.dry_run and due:
            self.last_status = time.monotonic()
            self.state.save_cdc_status(
                lag_seconds=st.lag_seconds,
                position=self.position.to_dict(),
                events=s.events,
                dead_letters=st.dead_letters,
                pending=st.pending,
                mode=s.mode,
            )
        if self.on_batch:
            self.on_batch(st)


def _ddl(
    item: DDL,
    on_ddl: OnDDL,
    mig: Migration,
    tables: set[str],
    source: BinlogSource | ParallelBinlogSource,
    applier: Applier,
    state: StateStore,
    summary: CdcSummary,
) -> None:
    """Apply the --on-ddl policy to a schema change (raises CheckFailed to stop)."""
    db = mig.source_database
    relevant = (item.schema in (None, db) or f"{db}." in item.statement) and (
        not item.tables or any(t in tables for t in item.tables)
    )
    record = {
        "statement": item.statement[:500],
        "position": item.position.to_dict(),
        "action": "ignored (unmapped)" if not relevant else on_ddl,
    }
    summary.ddl.append(record)
    log.warning("ddl seen", extra=record)
    if not relevant or on_ddl == "ignore":
        return
    if on_ddl == "extend":
        problem = adds_only_nullable_columns(item.statement)
        if problem is None:
            conn = mig.connect_source()
            try:
                new_schema = introspect(conn, db)
                # the columns the statement adds, by its text: the schema read at start may
                # already have them (a restart replaying the DDL)
                added = {
                    t: [
                        c
                        for c in added_columns(item.statement)
                        if new_schema.tables[t].has_column(c)
                    ]
                    for t in item.tables[:1]
                    if t in new_schema.tables
                }
                defaults, problem = column_defaults(conn, db, added)
            finally:
                conn.close()
            if problem is None:
                source.set_schema(new_schema)
                applier.set_transform(mig.use_schema(new_schema))
                # existing rows got the new column's default without a binlog event: so do
                # the documents holding them
                applier.fill_added_columns(defaults)
                record["action"] = "extended"
                return
        record["action"] = f"stopped: {problem}"
    # stop: the checkpoint stays before the statement, so a rerun meets it again
    state.save_cdc_checkpoint(item.position.to_dict(), stopped_at_ddl=item.statement[:500])
    raise CheckFailed(
        f"DDL on a mapped table at {item.position}: {item.statement.strip()[:300]}",
        hint="update the mapping if needed, then rerun with --on-ddl ignore (skip it) or "
        "--on-ddl extend (accept added nullable columns)",
    )


def column_defaults(
    conn: Any, db: str, added: dict[str, list[str]]
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """{table: {column: default as a SELECT would return it}} for added columns, or why a
    default cannot be known here (one MySQL computes per row)."""
    out: dict[str, dict[str, Any]] = {}
    maria = is_mariadb(conn)
    for table, cols in added.items():
        defaults = read_defaults(conn, db, table, maria=maria)
        for col in cols:
            d = defaults.get(col)
            if d is not None and d.computed:
                return out, f"{table}.{col} has a default MySQL computes per row ({d.computed})"
            out.setdefault(table, {})[col] = d.value if d is not None else None
    return out, None


def added_columns(statement: str) -> list[str]:
    """The column names an ALTER TABLE … ADD [COLUMN] statement adds."""
    names = re.findall(
        r"\bADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(`(?:[^`]|``)+`|\w+)",
        statement,
        re.I,
    )
    out = []
    for n in names:
        if n.upper() in ("INDEX", "KEY", "UNIQUE", "PRIMARY", "CONSTRAINT", "FOREIGN"):
            continue
        out.append(n[1:-1].replace("``", "`") if n.startswith("`") else n)
    return out


def adds_only_nullable_columns(statement: str) -> str | None:
    """None when the statement only adds nullable columns; else what it does beyond that.

    Judged on the statement itself: the schema read now may already be newer than the event.
    """
    m = re.match(r"\s*ALTER\s+(?:ONLINE\s+|IGNORE\s+)*TABLE\s+\S+\s+(.*)$", statement, re.I | re.S)
    if not m:
        return "it is not an ALTER TABLE … ADD COLUMN"
    clauses = split_top_level(m.group(1))
    for c in (x.strip() for x in clauses):
        if not re.match(
            r"ADD\s+(COLUMN\s+)?(IF\s+NOT\s+EXISTS\s+)?`?\w+`?\s+\w+", c, re.I
        ) or re.match(
            r"ADD\s+(INDEX|KEY|UNIQUE|PRIMARY|CONSTRAINT|FOREIGN|FULLTEXT|SPATIAL)\b", c, re.I
        ):
            return f"{c[:60]!r} is not an added column"
        if re.search(r"\bNOT\s+NULL\b|\bPRIMARY\s+KEY\b|\bAUTO_INCREMENT\b", c, re.I):
            return f"{c[:60]!r} is added NOT NULL (or as a key)"
    return None
