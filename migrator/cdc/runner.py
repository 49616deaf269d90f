"""`migrator cdc`: tail the source from the checkpoint (or the backfill's position), apply in
batches, checkpoint after MongoDB acknowledged each batch, and say how far behind we are."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..config import Mapping
from ..errors import CheckFailed, MigratorError
from ..mapping import compile_transform
from ..sink.mongo import connect as mongo_connect
from ..source.connection import _s, query
from ..source.connection import connect as mysql_connect
from ..source.position import is_mariadb
from ..source.schema import introspect
from ..state import StateStore, now
from ..urls import parse_mysql_url
from .applier import Applier, BatchResult
from .binlog import DDL, BinlogSource, Heartbeat
from .events import Position, Transaction
from .lookup import SourceLookup
from .roles import table_roles

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LiveStats:
    """What the live view and the metrics show; updated after every batch."""

    events: int = 0
    events_per_sec: float = 0.0
    lag_seconds: float = 0.0
    queue_depth: int = 0
    dead_letters: int = 0
    pending: int = 0
    position: str = ""
    applied: dict[tuple[str, str], int] = field(default_factory=dict)
    checkpoint_at: datetime | None = None


def _binlog_index(file: str | None) -> int:
    try:
        return int((file or "").rsplit(".", 1)[-1])
    except ValueError:
        return -1


def reached(pos: Position, target: Position) -> bool:
    """Has `pos` got to `target` (file/pos order)?"""
    if pos.file is None or target.file is None:
        return False
    a, b = _binlog_index(pos.file), _binlog_index(target.file)
    return (a, pos.pos or 0) >= (b, target.pos or 0)


def master_position(conn: Any) -> Position:
    rows = query(conn, "SHOW MASTER STATUS")
    if not rows:
        raise CheckFailed("the source has no binary log (log_bin is OFF)")
    gtid = query(conn, "SELECT @@GLOBAL.gtid_binlog_pos") if is_mariadb(conn) else []
    return Position(
        file=_s(rows[0][0]),
        pos=int(rows[0][1]),
        gtid=_s(gtid[0][0]) if gtid and gtid[0][0] else None,
    )


def check_start(conn: Any, start: Position, maria: bool) -> None:
    """Refuse a start position that was purged or lies ahead of the source (moved backwards)."""
    logs = {_s(r[0]): int(r[1]) for r in query(conn, "SHOW BINARY LOGS")}
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


def run_cdc(
    mapping: Mapping,
    *,
    mode: Literal["follow", "until-caught-up"] = "follow",
    on_ddl: OnDDL = "stop",
    batch_events: int = 2000,
    batch_seconds: float = 0.1,
    stop: threading.Event | None = None,
    on_batch: Callable[[LiveStats], None] | None = None,
    dry_run: bool = False,
) -> CdcSummary:
    """Tail the source and apply; `dry_run` decodes, transforms and builds every operation
    but writes nothing and saves no checkpoint (it measures the pipeline)."""
    stop = stop or threading.Event()
    src = parse_mysql_url(mapping.source.url)
    meta = mysql_connect(src)
    maria = is_mariadb(meta)
    schema = introspect(meta, mapping.source_database)
    transform = compile_transform(mapping, schema)
    client = mongo_connect(mapping.target.url)
    state = StateStore(client, mapping.state.database)
    saved = state.cdc_checkpoint() or state.backfill_position()
    if not saved:
        raise MigratorError(
            "no position to start CDC from: neither a CDC checkpoint nor a "
            "backfill position in the state store",
            hint="run `migrator backfill` (or `migrator sync`) first",
        )
    start = Position.from_dict(saved)
    check_start(meta, start, maria)
    lookup = SourceLookup(src)
    applier = Applier(transform, client[mapping.target_database], state, lookup, dry_run=dry_run)
    tables = set(table_roles(transform))
    source = BinlogSource(src, schema, tables, start, flavor="mariadb" if maria else "mysql")
    summary = CdcSummary(mode=mode, start=start.to_dict())
    stats = LiveStats(
        position=str(start), pending=applier.pending_count, dead_letters=state.dead_letter_count()
    )
    target = master_position(meta) if mode == "until-caught-up" else None
    log.info(
        "cdc starting",
        extra={
            "position": start.to_dict(),
            "mode": mode,
            "target": target.to_dict() if target else None,
        },
    )
    t0 = time.monotonic()
    batch: list[Transaction] = []
    batch_started = 0.0
    last_master_check = 0.0
    last_idle_publish = 0.0
    position = start

    def flush() -> None:
        nonlocal batch, position
        if not batch:
            return
        res: BatchResult = applier.apply(batch)
        log.debug(
            "batch applied",
            extra={
                "transactions": len(batch),
                "events": res.events,
                "dead_letters": res.dead_letters,
                "seconds": round(res.seconds, 4),
            },
        )
        position = batch[-1].position
        last_commit = batch[-1].commit_time
        if not dry_run:
            state.save_cdc_checkpoint(position.to_dict(), commit_time=last_commit)
        summary.batches += 1
        summary.transactions += len(batch)
        summary.events += res.events
        summary.dead_letters += res.dead_letters
        summary.pending += res.pending
        for (t, op), n in res.applied.items():
            k = f"{t} {op}"
            summary.applied[k] = summary.applied.get(k, 0) + n
            stats.applied[(t, op)] = stats.applied.get((t, op), 0) + n
        stats.events = summary.events
        stats.dead_letters += res.dead_letters
        stats.pending = applier.pending_count
        stats.position = str(position)
        stats.checkpoint_at = now()
        stats.lag_seconds = (now() - last_commit).total_seconds() if last_commit else 0.0
        batch = []
        publish()

    def publish(idle: bool = False) -> None:
        nonlocal last_master_check
        elapsed = time.monotonic() - t0
        stats.events_per_sec = summary.events / elapsed if elapsed else 0.0
        if idle or time.monotonic() - last_master_check > 1.0:
            last_master_check = time.monotonic()
            if idle or reached(position, lookup.run(master_position)):
                stats.lag_seconds = 0.0
        summary.lag_seconds = stats.lag_seconds
        if not dry_run:
            state.save_cdc_status(
                lag_seconds=stats.lag_seconds,
                position=position.to_dict(),
                events=summary.events,
                dead_letters=stats.dead_letters,
                pending=stats.pending,
                mode=mode,
            )
        if on_batch:
            on_batch(stats)

    try:
        if target is not None and reached(start, target):
            summary.stopped = "caught up"
            if not dry_run and not state.cdc_checkpoint():
                # nothing to apply: the start is a valid checkpoint (and says CDC has run)
                state.save_cdc_checkpoint(start.to_dict(), commit_time=None)
        else:
            for item in source.items():
                if isinstance(item, Transaction):
                    if not batch:
                        batch_started = time.monotonic()
                    batch.append(item)
                    stats.queue_depth = sum(len(t.events) for t in batch)
                    full = stats.queue_depth >= batch_events or (
                        time.monotonic() - batch_started >= batch_seconds
                    )
                    if full:
                        flush()
                    done = target is not None and reached(item.position, target)
                    if done:
                        flush()
                        summary.stopped = "caught up"
                        break
                elif isinstance(item, Heartbeat):
                    flush()
                    if position != item.position and item.position.file:
                        # idle at a later position (other schemas' events): remember it
                        position = Position(item.position.file, item.position.pos, position.gtid)
                    stats.queue_depth = 0
                    if time.monotonic() - last_idle_publish > 1.0:
                        last_idle_publish = time.monotonic()
                        publish(idle=True)
                    if target is not None and reached(item.position, target):
                        summary.stopped = "caught up"
                        break
                elif isinstance(item, DDL):
                    flush()
                    _ddl(item, on_ddl, mapping, tables, source, applier, state, summary)
                    # past the statement now: a restart must not meet it again
                    position = source.position
                    if not dry_run:
                        state.save_cdc_checkpoint(position.to_dict())
                if stop.is_set():
                    flush()
                    summary.stopped = "stopped by signal"
                    break
        summary.reconnects = source.reconnects
    finally:
        source.close()
        lookup.close()
        meta.close()
    summary.end = position.to_dict()
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
            position=position.to_dict(),
            events=summary.events,
            dead_letters=stats.dead_letters,
            pending=applier.pending_count,
            mode=mode,
        )
    client.close()
    return summary


def _ddl(
    item: DDL,
    on_ddl: OnDDL,
    mapping: Mapping,
    tables: set[str],
    source: BinlogSource,
    applier: Applier,
    state: StateStore,
    summary: CdcSummary,
) -> None:
    """Apply the --on-ddl policy to a schema change (raises CheckFailed to stop)."""
    db = mapping.source_database
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
            conn = mysql_connect(parse_mysql_url(mapping.source.url))
            try:
                new_schema = introspect(conn, db)
            finally:
                conn.close()
            source.set_schema(new_schema)
            applier.set_transform(compile_transform(mapping, new_schema))
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


def adds_only_nullable_columns(statement: str) -> str | None:
    """None when the statement only adds nullable columns; else what it does beyond that.

    Judged on the statement itself: the schema read now may already be newer than the event.
    """
    m = re.match(r"\s*ALTER\s+(?:ONLINE\s+|IGNORE\s+)*TABLE\s+\S+\s+(.*)$", statement, re.I | re.S)
    if not m:
        return "it is not an ALTER TABLE … ADD COLUMN"
    depth, clause, clauses = 0, "", []
    for ch in m.group(1):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            clauses.append(clause)
            clause = ""
        else:
            clause += ch
    clauses.append(clause)
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
