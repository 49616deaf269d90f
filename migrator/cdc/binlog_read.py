"""Reading the binlog where its socket is: raw events split at transaction boundaries.

Decoding rows is the costly part of CDC (binlog_decode does it, in this process or in others:
binlog_parallel). Reading only frames packets, keeps the position, parses the few control
events (GTID, commit, query, rotate, format) with python-mysql-replication and keeps the
table-map and row packets of the mapped tables as bytes, grouped by transaction.

Rules learned the hard way (STACK.md): a position is only worth saving at a commit (XidEvent);
MariaDB positions by GTID (its file/pos dump ignores the file name); the library's own
reconnect re-delivers from its first position, so reconnects are done here, from the last
commit seen; `blocking=True` with server heartbeats so an idle stream still wakes us up.
"""

from __future__ import annotations

import contextlib
import logging
import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pymysql
import pymysqlreplication.binlogstream as _binlogstream
from pymysql.protocol import MysqlPacket
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.constants import BINLOG
from pymysqlreplication.event import (
    FormatDescriptionEvent,
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from migrator.errors import CheckFailed, ConnectError, MigratorError
from migrator.model.events import DDL, Position
from migrator.model.urls import MySQLURL

# Let connection errors reach us instead of the library's reconnect-from-the-start.
_binlogstream.MYSQL_EXPECTED_ERROR_CODES = []

_NOT_DDL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|XA |SAVEPOINT|SET |FLUSH )", re.I)
_PURGED = 1236
_M = "_BinLogStreamReader__"  # the reader's private attributes (the library is pinned)
_HEADER = struct.Struct("<xIBIIIH")  # OK byte, timestamp, type, server id, size, next pos, flags
_EVENT_CLASS: dict[int, type] = BinLogPacketWrapper._BinLogPacketWrapper__event_map
ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)
RAW_EVENTS = {t for t, c in _EVENT_CLASS.items() if c in (TableMapEvent, *ROW_EVENTS)}
_CONTROL = frozenset(
    {
        QueryEvent,
        RotateEvent,
        HeartbeatLogEvent,
        MariadbGtidEvent,
        GtidEvent,
        XidEvent,
        FormatDescriptionEvent,
    }
)
_CONTROL_TYPES = {t for t, c in _EVENT_CLASS.items() if c in _CONTROL}
# Events whose rows the binlog library cannot read: skipping them as unmapped would lose rows
# and move the checkpoint past them. Row events carry their table id uncompressed.
_UNREADABLE_ROWS = {
    39: ("a partial JSON update", "binlog_row_value_options", "''"),  # MySQL 8
    166: ("a compressed rows event", "log_bin_compress", "OFF"),  # MariaDB
    167: ("a compressed rows event", "log_bin_compress", "OFF"),
    168: ("a compressed rows event", "log_bin_compress", "OFF"),
    169: ("a compressed rows event", "log_bin_compress", "OFF"),
    170: ("a compressed rows event", "log_bin_compress", "OFF"),
    171: ("a compressed rows event", "log_bin_compress", "OFF"),
}
_UNREADABLE_ANY = {
    40: ("a compressed transaction", "binlog_transaction_compression", "OFF"),  # MySQL 8.0.20+
    165: ("a compressed query", "log_bin_compress", "OFF"),  # MariaDB: could be a mapped DDL
}
log = logging.getLogger("migrator.cdc.binlog")


class Heartbeat:
    """The stream is idle at `position` (nothing pending)."""

    def __init__(self, position: Position) -> None:
        self.position = position


@dataclass(frozen=True)
class StreamFormat:
    """What decoding a packet needs to know about the stream it came from. Table ids mean
    what their table maps said only within one `generation` (a rotate or DDL ends it)."""

    use_checksum: bool
    optional_meta_data: bool
    mysql_version: tuple[int, ...]
    post_header_lengths: Any
    dbms: str
    generation: int


@dataclass
class RawTransaction:
    """One transaction's table-map and row packets of the mapped tables, undecoded; or a piece
    of one too big to hold (`complete` False: `position` is then the last commit before it,
    and the piece carries the transaction's table maps so far)."""

    packets: list[bytes]
    position: Position
    resume: Position  # the last commit before it: where a replay of it starts
    fmt: StreamFormat
    gtid: str | None = None
    commit_time: datetime | None = None
    complete: bool = True


class Tick:
    """Nothing to hand on, but time passed (events of unmapped tables keep the stream busy
    without a unit): lets a batching reader hand on what it holds."""


TICK = Tick()
TICK_SECONDS = 0.01


class ReaderStopped(Exception):
    """The reader was told to stop while it waited to reconnect."""


Unit = RawTransaction | DDL | Heartbeat


def merge_gtid(current: str | None, gtid: str) -> str:
    """MariaDB GTID position: one domain-server-seq per domain, the last one seen wins."""
    domains: dict[str, str] = {}
    for part in (current or "").split(","):
        part = part.strip()
        if part:
            domains[part.split("-", 1)[0]] = part
    domains[gtid.split("-", 1)[0]] = gtid
    return ",".join(domains[d] for d in sorted(domains, key=int))


class RawStream(BinLogStreamReader):
    """The library's reader, handing out packets as bytes instead of parsed events."""

    def packet(self) -> bytes | None:
        """The next event packet (b"" for a packet that is not an event), None at the end."""
        if not getattr(self, _M + "connected_stream"):
            getattr(self, _M + "connect_to_stream")()
        if not getattr(self, _M + "connected_ctl"):
            getattr(self, _M + "connect_to_ctl")()
        pkt = self._stream_connection._read_packet()
        if pkt.is_eof_packet():
            self.close()
            return None
        if not pkt.is_ok_packet():
            return b""
        data: bytes = pkt.get_all_data()
        return data

    def fmt(self, generation: int) -> StreamFormat:
        return StreamFormat(
            use_checksum=getattr(self, _M + "use_checksum"),
            optional_meta_data=getattr(self, _M + "optional_meta_data"),
            mysql_version=getattr(self, "mysql_version", (0, 0, 0)),
            post_header_lengths=getattr(self, _M + "post_header_lengths"),
            dbms=self._ctl_connection._get_dbms(),
            generation=generation,
        )

    def control_event(self, data: bytes) -> Any:
        """A control packet parsed by the library (None for one it does not parse)."""
        wrapper = BinLogPacketWrapper(
            MysqlPacket(data, "utf8"),
            {},
            self._ctl_connection,
            getattr(self, "mysql_version", (0, 0, 0)),
            getattr(self, _M + "use_checksum"),
            _CONTROL,
            None,
            None,
            None,
            None,
            True,
            False,
            False,
            getattr(self, _M + "optional_meta_data"),
            False,
            False,
            getattr(self, _M + "post_header_lengths"),
        )
        ev = wrapper.event
        if isinstance(ev, FormatDescriptionEvent):
            setattr(self, "mysql_version", ev.mysql_version)  # noqa: B010 (untyped upstream)
            setattr(self, _M + "post_header_lengths", ev.post_header_len)
        return ev


def stream_settings(url: MySQLURL) -> dict[str, Any]:
    return {
        "host": url.host,
        "port": url.port,
        "user": url.user,
        "password": url.password,
        "charset": "utf8mb4",
        # the URL's ssl-mode (PyMySQL: an SSLContext, required once given)
        **url.tls.pymysql_kwargs(),
    }


@dataclass
class _Open:
    """The transaction being read: its packets, its table maps (each piece repeats them)."""

    gtid: str | None = None
    packets: list[bytes] = field(default_factory=list)
    maps: dict[int, bytes] = field(default_factory=dict)  # table id -> its map, once each
    size: int = 0
    rows: int = 0  # row packets in `packets`

    def add(self, data: bytes, table_id: int, is_map: bool) -> None:
        if is_map:
            if table_id in self.maps:
                return  # every statement repeats its table maps: the decoder has it already
            self.maps[table_id] = data
        else:
            self.rows += 1
        self.packets.append(data)
        self.size += len(data)

    def cut(self) -> list[bytes]:
        """The packets so far; the transaction goes on with its table maps only."""
        out = self.packets
        self.packets = list(self.maps.values())
        self.size = sum(len(p) for p in self.packets)
        self.rows = 0
        return out


class BinlogReader:
    """Yields RawTransaction, DDL and Heartbeat units from a start position, reconnecting
    itself; keeps only the mapped tables' packets (`database`.`tables`)."""

    def __init__(
        self,
        url: MySQLURL,
        database: str,
        tables: set[str],
        start: Position,
        *,
        server_id: int = 0,
        flavor: str = "mariadb",
        heartbeat: float = 0.1,  # an idle stream still flushes its last batch within ~0.1 s
        piece_bytes: int = 1 << 20,  # a bigger transaction is handed on in pieces
        stopped: Callable[[], bool] | None = None,  # asked while waiting to reconnect
    ) -> None:
        self.stopped = stopped
        self.url = url
        self.database = database
        self.tables = tables
        self.position = start  # the last commit delivered
        self.flavor = flavor
        self.server_id = server_id or 100_000 + int(time.time()) % 100_000
        self.heartbeat = heartbeat
        self.piece_bytes = piece_bytes
        self.reconnects = 0
        self.generation = 0
        self._stream: RawStream | None = None

    # -- connection --------------------------------------------------------------------------
    def open(self) -> RawStream:
        kwargs: dict[str, Any] = dict(
            connection_settings=stream_settings(self.url),
            server_id=self.server_id,
            blocking=True,
            slave_heartbeat=self.heartbeat,
            only_schemas=[self.database],
            freeze_schema=True,
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
        return RawStream(**kwargs)

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):  # closing a dead socket
                self._stream.close()
            self._stream = None

    # -- reading -----------------------------------------------------------------------------
    def _pause(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if self.stopped is not None and self.stopped():
                raise ReaderStopped()
            time.sleep(min(0.2, max(0.0, until - time.monotonic())))

    def units(self) -> Iterator[Unit | Tick]:
        """Everything after `self.position`, forever (the caller stops iterating); TICK now
        and then while only unmapped events arrive."""
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
                self._pause(delay)
                delay = min(delay * 2, 10)
            except (ConnectionError, OSError, pymysql.err.InterfaceError):
                self.close()
                self.reconnects += 1
                self._pause(delay)
                delay = min(delay * 2, 10)

    def _read(self) -> Iterator[Unit | Tick]:
        if self.stopped is not None and self.stopped():
            raise ReaderStopped()
        self._stream = stream = self.open()
        self.generation += 1  # a new connection: table ids are read afresh
        file, pos = stream.log_file, stream.log_pos
        txn = _Open()
        wanted: dict[int, bool] = {}  # table id -> one of the mapped tables
        fmt: StreamFormat | None = None
        ticked = time.monotonic()
        for data in iter(stream.packet, None):
            if not data:
                continue
            if time.monotonic() - ticked >= TICK_SECONDS:
                ticked = time.monotonic()
                yield TICK
            ts, etype, _server, _size, next_pos, _flags = _HEADER.unpack_from(data)
            if etype == BINLOG.ROTATE_EVENT:
                ev = stream.control_event(data)
                file, pos = ev.next_binlog, ev.position
                # table ids are unique only while a server runs: a new binlog file may follow
                # a restart that reused them for other table definitions
                self.generation += 1
                wanted.clear()
                fmt = None
                continue
            if next_pos:
                pos = next_pos
            if etype in RAW_EVENTS:
                table_id = int.from_bytes(data[20:26], "little")
                if etype == BINLOG.TABLE_MAP_EVENT:
                    wanted[table_id] = self._mapped(data)
                if wanted.get(table_id):
                    txn.add(data, table_id, etype == BINLOG.TABLE_MAP_EVENT)
                    if txn.size >= self.piece_bytes and txn.rows:
                        # memory stays bounded: hand this much on now; the checkpoint stays at
                        # the last commit, so a crash replays the whole transaction
                        fmt = fmt or stream.fmt(self.generation)
                        yield RawTransaction(
                            txn.cut(), self.position, self.position, fmt, complete=False
                        )
                continue
            self._refuse_unreadable(etype, data, wanted, txn, f"{file}:{pos}")
            if etype not in _CONTROL_TYPES:
                continue
            if etype == BINLOG.XID_EVENT:
                fmt = fmt or stream.fmt(self.generation)
                yield self._commit(txn, Position(file, pos), ts, fmt)
                txn = _Open()
                continue
            ev = stream.control_event(data)
            if isinstance(ev, FormatDescriptionEvent):
                fmt = None
            elif isinstance(ev, HeartbeatLogEvent):
                if not txn.packets:
                    yield Heartbeat(Position(file, pos, self.position.gtid))
            elif isinstance(ev, MariadbGtidEvent | GtidEvent):
                txn = _Open(gtid=ev.gtid)
            elif isinstance(ev, QueryEvent):
                query = (
                    ev.query if isinstance(ev.query, str) else ev.query.decode("utf-8", "replace")
                )
                if _NOT_DDL.match(query):
                    if query.strip().upper() == "COMMIT" and txn.packets:  # non-transactional
                        fmt = fmt or stream.fmt(self.generation)
                        yield self._commit(txn, Position(file, pos), ts, fmt)
                        txn = _Open()
                    continue
                # table definitions may have changed
                wanted.clear()
                fmt = None
                yield self._ddl(ev, query, txn, file, pos)

    def _refuse_unreadable(
        self, etype: int, data: bytes, wanted: dict[int, bool], txn: _Open, where: str
    ) -> None:
        """Stop before an event that may hold mapped rows this reader cannot decode: skipping
        it would lose them with the checkpoint past them."""
        unreadable = _UNREADABLE_ANY.get(etype)
        if etype in _UNREADABLE_ROWS and wanted.get(int.from_bytes(data[20:26], "little")):
            unreadable = _UNREADABLE_ROWS[etype]
        if unreadable:
            what, setting, value = unreadable
            raise CheckFailed(
                f"{what} at {where} (after {self.position}) may hold mapped rows, "
                f"and the binlog source cannot read it: the server writes them because "
                f"{setting} is on",
                hint=f"SET GLOBAL {setting} = {value} (and in the server's config); CDC "
                "stays before this event, so nothing is skipped: re-copy what it changed "
                "with `migrator backfill --restart`, then CDC again",
            )
        if etype == BINLOG.XA_PREPARE_EVENT and txn.rows:
            # its rows are applied at an `XA COMMIT` in another event group, or dropped at
            # an `XA ROLLBACK`: following that is not built, and skipping would lose them
            raise CheckFailed(
                f"an XA transaction changed mapped tables after {self.position} "
                f"(XA PREPARE at {where}): the binlog source does not follow XA "
                "transactions",
                hint="write the mapped tables without XA; CDC stays before this "
                "transaction, so nothing is lost",
            )

    def _ddl(self, ev: QueryEvent, query: str, txn: _Open, file: str, pos: int) -> DDL:
        """A DDL statement: its own transaction (what follows starts after it), and table ids
        read afresh after it."""
        self.generation += 1
        schema = ev.schema.decode() if isinstance(ev.schema, bytes) else ev.schema
        before = self.position
        gtid = merge_gtid(before.gtid, txn.gtid) if txn.gtid else before.gtid
        self.position = Position(file, pos, gtid)
        return DDL(
            statement=query,
            schema=schema or None,
            position=before,
            tables=tables_in(query),
            after=self.position,
        )

    def _mapped(self, data: bytes) -> bool:
        """Is this table map one of the mapped tables? (schema and name are at fixed places:
        after the 6-byte table id and 2 flag bytes, each a length byte, the name and a 0)"""
        at = 28
        n = data[at]
        schema = data[at + 1 : at + 1 + n]
        at += n + 2
        m = data[at]
        table = data[at + 1 : at + 1 + m]
        return schema.decode() == self.database and table.decode() in self.tables

    def _commit(self, txn: _Open, where: Position, ts: int, fmt: StreamFormat) -> RawTransaction:
        before = self.position
        gtid = merge_gtid(before.gtid, txn.gtid) if txn.gtid else before.gtid
        self.position = Position(where.file, where.pos, gtid)
        when = datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)
        return RawTransaction(
            txn.packets, self.position, before, fmt, gtid=txn.gtid, commit_time=when
        )


_IDENT = r"(?:`(?:[^`]|``)+`|[\w$]+)"
_NAME = rf"(?:{_IDENT}\s*\.\s*)?{_IDENT}"
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*|#[^\n]*", re.S)


def _bare(name: str) -> str:
    """`db`.`t` or db.t -> t"""
    last = re.findall(_IDENT, name)[-1]
    return last[1:-1].replace("``", "`") if last.startswith("`") else last


def _names(text: str) -> list[str]:
    return [_bare(m) for m in re.findall(_NAME, text)]


def tables_in(query: str) -> list[str]:
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
