"""The binlog source: python-mysql-replication -> Transactions of normalised ChangeEvents.

Rules learned the hard way (STACK.md): a position is only worth saving at a commit (XidEvent);
MariaDB positions by GTID (its file/pos dump ignores the file name); the library's own
reconnect re-delivers from its first position, so reconnects are done here, from the last
commit seen; `blocking=True` with server heartbeats so an idle stream still wakes us up.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pymysql
import pymysqlreplication.binlogstream as _binlogstream
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from ..errors import CheckFailed, ConnectError, MigratorError
from ..source.schema import Schema
from ..urls import MySQLURL
from .events import DDL, ChangeEvent, Position, Transaction
from .normalize import RowNormaliser

# Let connection errors reach us instead of the library's reconnect-from-the-start.
_binlogstream.MYSQL_EXPECTED_ERROR_CODES = []

_NOT_DDL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|XA |SAVEPOINT|SET |FLUSH )", re.I)
_PURGED = 1236
log = logging.getLogger("migrator.cdc.binlog")


class Heartbeat:
    """The stream is idle at `position` (nothing pending)."""

    def __init__(self, position: Position) -> None:
        self.position = position


def merge_gtid(current: str | None, gtid: str) -> str:
    """MariaDB GTID position: one domain-server-seq per domain, the last one seen wins."""
    domains: dict[str, str] = {}
    for part in (current or "").split(","):
        part = part.strip()
        if part:
            domains[part.split("-", 1)[0]] = part
    domains[gtid.split("-", 1)[0]] = gtid
    return ",".join(domains[d] for d in sorted(domains, key=int))


class BinlogSource:
    """Yields Transaction, DDL and Heartbeat items from a start position, reconnecting itself."""

    def __init__(
        self,
        url: MySQLURL,
        schema: Schema,
        tables: set[str],
        start: Position,
        *,
        server_id: int = 0,
        flavor: str = "mariadb",
        heartbeat: float = 0.1,  # an idle stream still flushes its last batch within ~0.1 s
        max_events: int = 10_000,  # a bigger transaction is yielded in pieces of this size
    ) -> None:
        self.max_events = max(1, max_events)
        self.url = url
        self.schema = schema
        self.tables = tables
        self.position = start  # the last commit delivered
        self.flavor = flavor
        self.server_id = server_id or 100_000 + int(time.time()) % 100_000
        self.heartbeat = heartbeat
        self.normalisers = {t: RowNormaliser(schema.tables[t]) for t in tables}
        self._stream: BinLogStreamReader | None = None
        self.reconnects = 0

    def set_schema(self, schema: Schema) -> None:
        self.schema = schema
        self.normalisers = {t: RowNormaliser(schema.tables[t]) for t in self.tables}

    # -- connection --------------------------------------------------------------------------
    def _open(self) -> BinLogStreamReader:
        settings = {
            "host": self.url.host,
            "port": self.url.port,
            "user": self.url.user,
            "password": self.url.password,
            "charset": "utf8mb4",
            # the URL's ssl-mode (PyMySQL: an SSLContext, required once given)
            **self.url.tls.pymysql_kwargs(),
        }
        kwargs: dict[str, Any] = dict(
            connection_settings=settings,
            server_id=self.server_id,
            blocking=True,
            slave_heartbeat=self.heartbeat,
            only_schemas=[self.schema.database],
            # Parse each table map once (it comes with every transaction and was 40% of the
            # decode time); the cache is dropped at every DDL below.
            freeze_schema=True,
            only_events=[
                WriteRowsEvent,
                UpdateRowsEvent,
                DeleteRowsEvent,
                XidEvent,
                QueryEvent,
                RotateEvent,
                HeartbeatLogEvent,
                MariadbGtidEvent,
                GtidEvent,
            ],
        )
        p = self.position
        if self.flavor == "mariadb" and p.gtid:
            kwargs.update(is_mariadb=True, auto_position=p.gtid)
        elif p.file:
            # MySQL, or MariaDB without GTID: a classic file/pos dump
            kwargs.update(is_mariadb=False, log_file=p.file, log_pos=p.pos, resume_stream=True)
        else:
            raise MigratorError(
                "no binlog position to start CDC from",
                hint="run `migrator backfill` first: it records the position",
            )
        return BinLogStreamReader(**kwargs)

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):  # closing a dead socket
                self._stream.close()
            self._stream = None

    # -- reading -----------------------------------------------------------------------------
    def items(self) -> Iterator[Transaction | DDL | Heartbeat]:
        """Everything after `self.position`, forever (the caller stops iterating)."""
        delay = 0.5
        while True:
            try:
                yield from self._read()
                return
            except pymysql.err.OperationalError as exc:
                code = exc.args[0] if exc.args else 0
                self.close()
                if code == _PURGED:
                    raise CheckFailed(
                        f"the source no longer has the binlog position CDC needs "
                        f"({self.position}): {exc.args[1] if len(exc.args) > 1 else exc}",
                        hint="the binlogs were purged: run `migrator backfill --restart` and "
                        "keep binlogs longer (binlog_expire_logs_seconds)",
                    ) from None
                if code in (1045, 1044):
                    raise ConnectError(
                        f"MySQL at {self.url.address} refused the binlog "
                        f"connection ({self.url.setting}): access denied"
                    ) from None
                # a dropped connection or a restarting server: reopen from the last commit
                log.warning(
                    "binlog connection lost; reconnecting from the last commit",
                    extra={"error": str(exc), "position": self.position.to_dict()},
                )
                self.reconnects += 1
                time.sleep(delay)
                delay = min(delay * 2, 10)
            except (ConnectionError, OSError, pymysql.err.InterfaceError):
                self.close()
                self.reconnects += 1
                time.sleep(delay)
                delay = min(delay * 2, 10)

    def _read(self) -> Iterator[Transaction | DDL | Heartbeat]:
        self._stream = stream = self._open()
        events: list[ChangeEvent] = []
        gtid: str | None = None
        commit_time: datetime | None = None
        for ev in stream:
            if isinstance(ev, RotateEvent):
                # table ids are unique only while a server runs: a new binlog file may follow
                # a restart that reused them for other table definitions
                stream.table_map.clear()
                continue
            if isinstance(ev, HeartbeatLogEvent):
                if not events:
                    yield Heartbeat(self._here(stream, self.position.gtid))
                continue
            if isinstance(ev, MariadbGtidEvent | GtidEvent):
                gtid, events = ev.gtid, []
                continue
            if isinstance(ev, QueryEvent):
                query = (
                    ev.query if isinstance(ev.query, str) else ev.query.decode("utf-8", "replace")
                )
                if _NOT_DDL.match(query):
                    if query.strip().upper() == "COMMIT" and events:  # non-transactional tables
                        yield self._commit(stream, events, gtid, ev)
                        events = []
                    continue
                stream.table_map.clear()  # table definitions may have changed
                schema = ev.schema.decode() if isinstance(ev.schema, bytes) else ev.schema
                before = self.position
                # DDL is its own transaction: what follows it starts after it
                self.position = self._here(
                    stream, merge_gtid(self.position.gtid, gtid) if gtid else self.position.gtid
                )
                yield DDL(
                    statement=query,
                    schema=schema or None,
                    position=before,
                    tables=_tables_in(query),
                )
                continue
            if isinstance(ev, XidEvent):
                yield self._commit(stream, events, gtid, ev)
                events = []
                continue
            table = ev.table
            if table not in self.tables:
                continue
            norm = self.normalisers[table]
            ts = datetime.fromtimestamp(ev.timestamp, UTC).replace(tzinfo=None)
            commit_time = ts
            for row in ev.rows:
                if isinstance(ev, WriteRowsEvent):
                    ce = ChangeEvent(
                        table, "insert", None, norm(row["values"], row["none_sources"]), ts
                    )
                elif isinstance(ev, DeleteRowsEvent):
                    ce = ChangeEvent(
                        table, "delete", norm(row["values"], row["none_sources"]), None, ts
                    )
                else:
                    ce = ChangeEvent(
                        table,
                        "update",
                        norm(row["before_values"], row["before_none_sources"]),
                        norm(row["after_values"], row["after_none_sources"]),
                        ts,
                    )
                if len(events) >= self.max_events:
                    # memory stays bounded: apply this much now; the checkpoint stays at the
                    # last commit, so a crash replays the whole transaction (idempotently)
                    yield Transaction(events=events, position=self.position, complete=False)
                    events = []
                events.append(ce)
        del commit_time

    def _here(self, stream: BinLogStreamReader, gtid: str | None) -> Position:
        return Position(file=stream.log_file, pos=stream.log_pos, gtid=gtid)

    def _commit(
        self, stream: BinLogStreamReader, events: list[ChangeEvent], gtid: str | None, ev: Any
    ) -> Transaction:
        new_gtid = merge_gtid(self.position.gtid, gtid) if gtid else self.position.gtid
        self.position = self._here(stream, new_gtid)
        when = datetime.fromtimestamp(ev.timestamp, UTC).replace(tzinfo=None)
        return Transaction(events=events, position=self.position, commit_time=when, gtid=gtid)


_IDENT = r"(?:`(?:[^`]|``)+`|[\w$]+)"
_NAME = rf"(?:{_IDENT}\s*\.\s*)?{_IDENT}"
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*|#[^\n]*", re.S)


def _bare(name: str) -> str:
    """`db`.`t` or db.t -> t"""
    last = re.findall(_IDENT, name)[-1]
    return last[1:-1].replace("``", "`") if last.startswith("`") else last


def _names(text: str) -> list[str]:
    return [_bare(m) for m in re.findall(_NAME, text)]


def _tables_in(query: str) -> list[str]:
    """Every table a DDL statement names (DROP TABLE a, b; RENAME TABLE a TO b, c TO d; ALTER
    TABLE a RENAME TO b; CREATE TABLE a LIKE b; index statements name their table)."""
    q = " ".join(_COMMENTS.sub(" ", query).split())
    flags = re.I
    m = re.match(
        r"DROP\s+(?:TEMPORARY\s+)?TABLES?\s+(?:IF\s+EXISTS\s+)?(.*?)"
        r"(?:\s+(?:RESTRICT|CASCADE))?\s*;?$",
        q,
        flags,
    )
    if m:
        return _names(m.group(1))
    m = re.match(r"RENAME\s+TABLES?\s+(.*)$", q, flags)
    if m:
        out: list[str] = []
        for pair in m.group(1).split(","):
            out += _names(re.sub(r"\s+TO\s+", " ", pair, flags=re.I))
        return out
    m = re.match(
        rf"ALTER\s+(?:ONLINE\s+|OFFLINE\s+|IGNORE\s+)*TABLE\s+(?:IF\s+EXISTS\s+)?({_NAME})(.*)$",
        q,
        flags,
    )
    if m:
        out = [_bare(m.group(1))]
        r = re.search(rf"\bRENAME\s+(?:TO\s+|AS\s+)?({_NAME})", m.group(2), flags)
        if r and not re.match(r"(?:COLUMN|INDEX|KEY)\b", r.group(1), flags):
            out.append(_bare(r.group(1)))
        return out
    m = re.match(
        rf"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
        rf"({_NAME})(.*)$",
        q,
        flags,
    )
    if m:
        out = [_bare(m.group(1))]
        like = re.match(rf"\s*\(?\s*LIKE\s+({_NAME})", m.group(2), flags)
        if like:
            out.append(_bare(like.group(1)))
        return out
    m = re.match(rf"TRUNCATE\s+(?:TABLE\s+)?({_NAME})", q, flags)
    if m:
        return [_bare(m.group(1))]
    m = re.match(
        rf"(?:CREATE|DROP)\s+(?:OR\s+REPLACE\s+)?(?:ONLINE\s+|UNIQUE\s+|FULLTEXT\s+|SPATIAL\s+)*"
        rf"INDEX\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?{_IDENT}\s+ON\s+({_NAME})",
        q,
        flags,
    )
    if m:
        return [_bare(m.group(1))]
    return []
