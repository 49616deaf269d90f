"""Decoding raw binlog transactions (binlog_read) into normalised ChangeEvents.

Row images are decoded by python-mysql-replication, as a stream reader would, from the
packets' bytes: each transaction carries its own table maps, so any process can decode any
transaction; a decoder keeps the table maps it has parsed until the stream's generation ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pymysql.protocol import MysqlPacket
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import TableMapEvent, WriteRowsEvent

from migrator.cdc.binlog_read import ROW_EVENTS, Heartbeat, RawTransaction, StreamFormat, Tick, Unit
from migrator.cdc.normalize import RowNormaliser
from migrator.model.events import DDL, ChangeEvent, Transaction
from migrator.model.schema import Schema

_ALLOWED = frozenset({TableMapEvent, *ROW_EVENTS})


class _Control:
    """What the library asks of its control connection while decoding row packets: the
    connection charset and the server kind (both known from the stream). With the binlog's
    own column names (binlog_row_metadata=FULL) it queries nothing."""

    charset = "utf8mb4"

    def __init__(self, dbms: str) -> None:
        self.dbms = dbms

    def _get_dbms(self) -> str:
        return self.dbms


class Decoder:
    """RawTransaction -> Transaction (in pieces of at most `max_events` row changes)."""

    def __init__(self, schema: Schema, tables: set[str], max_events: int = 10_000) -> None:
        self.tables = tables
        self.max_events = max(1, max_events)
        self.table_map: dict[int, Any] = {}
        self.generation: int | None = None
        self.set_schema(schema)

    def set_schema(self, schema: Schema) -> None:
        self.schema = schema
        self.normalisers = {t: RowNormaliser(schema.tables[t]) for t in self.tables}

    def decode(self, unit: Unit | Tick) -> Iterator[Transaction | DDL | Heartbeat | Tick]:
        if not isinstance(unit, RawTransaction):
            yield unit
            return
        fmt = unit.fmt
        if fmt.generation != self.generation:
            self.table_map, self.generation = {}, fmt.generation
        events: list[ChangeEvent] = []
        for ev in self._events(unit.packets, fmt):
            norm = self.normalisers[ev.table]
            ts = datetime.fromtimestamp(ev.timestamp, UTC).replace(tzinfo=None)
            table, write = ev.table, isinstance(ev, WriteRowsEvent)
            for row in ev.rows:
                if "values" not in row:
                    ce = ChangeEvent(
                        table,
                        "update",
                        norm(row["before_values"], row["before_none_sources"]),
                        norm(row["after_values"], row["after_none_sources"]),
                        ts,
                    )
                elif write:
                    ce = ChangeEvent(
                        table, "insert", None, norm(row["values"], row["none_sources"]), ts
                    )
                else:
                    ce = ChangeEvent(
                        table, "delete", norm(row["values"], row["none_sources"]), None, ts
                    )
                if len(events) >= self.max_events:
                    # memory stays bounded: apply this much now; the checkpoint stays at the
                    # last commit, so a crash replays the whole transaction (idempotently)
                    yield Transaction(events=events, position=unit.resume, complete=False)
                    events = []
                events.append(ce)
        if unit.complete:
            yield Transaction(
                events=events,
                position=unit.position,
                commit_time=unit.commit_time,
                gtid=unit.gtid,
            )
        elif events:
            yield Transaction(events=events, position=unit.resume, complete=False)

    def _members_named(self, table: Any) -> Any:
        """The decoder reads ENUM and SET member names from the table map as UTF-8: in another
        character set (latin1 'élan') a name arrives empty, and values would lose it. Such a
        name is taken from the schema, where the lists match."""
        known = (
            self.schema.tables.get(table.table) if table.schema == self.schema.database else None
        )
        if known is None:
            return table
        for col in table.columns:
            if not known.has_column(col.name):
                continue
            members = list(known.column(col.name).members)
            enum, sets = getattr(col, "enum_values", None), getattr(col, "set_values", None)
            if enum and len(enum) == len(members) + 1 and "" in enum[1:]:
                col.enum_values = [""] + [v or m for v, m in zip(enum[1:], members, strict=True)]
            if sets and len(sets) == len(members) and "" in sets:
                col.set_values = [v or m for v, m in zip(sets, members, strict=True)]
        return table

    def _events(self, packets: list[bytes], fmt: StreamFormat) -> Iterator[Any]:
        control = _Control(fmt.dbms)
        database = [self.schema.database]
        for data in packets:
            wrapper = BinLogPacketWrapper(
                MysqlPacket(data, "utf8"),
                self.table_map,
                control,
                fmt.mysql_version,
                fmt.use_checksum,
                _ALLOWED,
                None,
                None,
                database,
                None,
                True,  # freeze_schema: a table id's map is parsed once per generation
                False,
                False,
                fmt.optional_meta_data,
                False,
                False,
                fmt.post_header_lengths,
            )
            ev = wrapper.event
            if ev is None:
                continue
            if isinstance(ev, TableMapEvent):
                self.table_map[ev.table_id] = self._members_named(ev.get_table())
            elif ev.table in self.tables:
                yield ev
