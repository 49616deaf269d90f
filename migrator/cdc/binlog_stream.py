"""The binlog as a change stream (see loop.py): from the checkpoint (or the backfill's
position, or where a rollback to MySQL-first left the source), through python-mysql-replication
(rows decoded in worker processes, in binlog order), with the checkpoint at the last applied
commit. A pause closes the reader; it opens again at the checkpoint."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from migrator.cdc.applier import Applier
from migrator.cdc.binlog import DDL, BinlogSource, Heartbeat
from migrator.cdc.binlog_parallel import ParallelBinlogSource
from migrator.cdc.binlog_read import Tick
from migrator.cdc.ddl import OnDDL, handle_ddl
from migrator.cdc.lookup import SourceLookup
from migrator.cdc.loop import CdcSummary, Idle, Unit
from migrator.errors import CheckFailed, MigratorError
from migrator.model.events import Position, Transaction, reached
from migrator.model.schema import Schema
from migrator.runtime import Migration
from migrator.source.connection import as_text, query
from migrator.source.connection import connect as mysql_connect
from migrator.source.position import master_position
from migrator.source.schema import introspect
from migrator.state.store import StateStore

log = logging.getLogger("migrator.cdc")


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


def same_schema(src: Any, state: StateStore, held: Schema, tables: set[str]) -> bool:
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


class BinlogStream:
    """The source's binlog from the last applied commit (see the module's docstring)."""

    source = "binlog"
    batches_at_boundaries = False

    def __init__(
        self,
        mig: Migration,
        applier: Applier,
        lookup: SourceLookup,
        summary: CdcSummary,
        *,
        until_caught_up: bool,
        on_ddl: OnDDL,
        decoders: int,
        max_events: int,
        dry_run: bool,
    ) -> None:
        self.mig, self.applier, self.lookup, self.summary = mig, applier, lookup, summary
        self.state, self.on_ddl, self.dry_run = mig.state, on_ddl, dry_run
        self.decoders, self.max_events = decoders, max_events
        self.tables = set(applier.tables)
        self.maria = mig.mariadb
        # --until-caught-up: everything up to the source's position at start
        self.target = lookup.run(master_position) if until_caught_up else None
        self.reader: BinlogSource | ParallelBinlogSource | None = None
        self.position = Position()  # after the last acknowledged commit
        self.read = Position()  # after the last commit read (acknowledged or not)
        self.saved: Position | None = None  # the last checkpoint written
        self.echoes_until: Position | None = None

    # -- opening at the checkpoint ---------------------------------------------------------
    def _open(self) -> None:
        saved = self.state.cdc_checkpoint() or self.state.backfill_position()
        if not saved:
            raise MigratorError(
                "no position to start CDC from: neither a CDC checkpoint nor a "
                "backfill position in the state store",
                hint="run `migrator backfill` (or `migrator sync`) first",
            )
        schema = self.applier.transform.schema
        start, self.echoes_until = after_rollback(
            self.state,
            Position.from_dict(saved),
            same_schema=partial(same_schema, self.mig.source_url, self.state, schema, self.tables),
            dry_run=self.dry_run,
        )
        if not self.summary.start:
            self.summary.start = start.to_dict()
        # through the lookup's connection: it reconnects if the source restarted meanwhile
        self.lookup.run(partial(check_start, start=start, maria=self.maria))
        flavor = "mariadb" if self.maria else "mysql"
        src = self.mig.source_url
        if self.decoders:
            self.reader = ParallelBinlogSource(
                src,
                schema,
                self.tables,
                start,
                decoders=self.decoders,
                flavor=flavor,
                max_events=self.max_events,
            )
        else:
            self.reader = BinlogSource(
                src, schema, self.tables, start, flavor=flavor, max_events=self.max_events
            )
        self.position = self.read = start
        # the last checkpoint written; None when the start is only the backfill's position, so
        # that an idle source still gets one (the lag gate and `status` read the checkpoint)
        current = None if self.dry_run else self.state.cdc_checkpoint()
        self.saved = start if self.dry_run or current == start.to_dict() else None
        log.info(
            "cdc starting",
            extra={
                "position": start.to_dict(),
                "target": self.target.to_dict() if self.target else None,
            },
        )

    def _close_reader(self) -> None:
        if self.reader is not None:
            self.summary.reconnects += self.reader.reconnects
            self.reader.close()
            self.reader = None

    # -- the stream --------------------------------------------------------------------------
    def units(self) -> Iterator[Unit]:
        self._close_reader()  # a second call starts again at the checkpoint
        self._open()
        assert self.reader is not None
        for item in self.reader.items():
            if isinstance(item, Transaction):
                if self._echo(item):
                    # kept as an empty transaction: the checkpoint moves past it as usual
                    item = dataclasses.replace(item, events=[])
                    self.summary.skipped += 1
                if item.complete:
                    self.read = item.position
                yield item
            elif isinstance(item, Heartbeat):
                if item.position.file:
                    # nothing pending up to here (other schemas' events move it on)
                    self.read = Position(item.position.file, item.position.pos, self.read.gtid)
                yield Idle(item.position if item.position.file else None)
            elif isinstance(item, Tick | DDL):
                yield item

    def _echo(self, item: Transaction) -> bool:
        """A whole transaction logged before the rollback's position, read only to meet a DDL
        (a piece of a big one is applied: its end is unknown, and replaying is what CDC did
        before the rollback position existed: documents converge as CDC catches up)."""
        return (
            self.echoes_until is not None
            and item.complete
            and reached(self.echoes_until, item.position)
        )

    def acknowledge(self, batch: list[Transaction]) -> None:
        complete = [t for t in batch if t.complete]
        if complete:
            self.position = complete[-1].position
        last_commit = next((t.commit_time for t in reversed(batch) if t.commit_time), None)
        self.state.save_cdc_checkpoint(self.position.to_dict(), commit_time=last_commit)
        self.saved = self.position

    def quiet(self, idle: Idle) -> None:
        # the loop holds nothing now: everything read is applied, up to where the stream
        # stands (heartbeats move it past other schemas' events)
        self.position = self.read
        if self.position != self.saved:
            self.state.save_cdc_checkpoint(self.position.to_dict(), commit_time=None)
            self.saved = self.position

    def suspend(self, wait: Callable[[], bool]) -> None:
        self._close_reader()
        while wait():
            pass

    def caught_up(self) -> str | None:
        if self.target is None or not reached(self.read, self.target):
            return None
        return "caught up"

    def lag_is_zero(self) -> bool:
        return reached(self.position, self.lookup.run(master_position))

    def apply_ddl(self, ddl: DDL) -> None:
        assert self.reader is not None
        handle_ddl(
            ddl,
            self.on_ddl,
            self.mig,
            self.tables,
            self.reader,
            self.applier,
            self.state,
            self.summary,
        )
        # past the statement now: a restart must not meet it again
        self.position = self.read = self.reader.position
        if not self.dry_run:
            self.state.save_cdc_checkpoint(self.position.to_dict())
            self.saved = self.position

    def status(self) -> dict[str, Any]:
        return {"position": self.position.to_dict()}

    def end(self) -> dict[str, Any]:
        return self.position.to_dict()

    def close(self) -> None:
        self._close_reader()
