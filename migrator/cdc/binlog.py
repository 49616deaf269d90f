"""The binlog source: Transactions of normalised ChangeEvents, DDL and heartbeats, in binlog
order. Read and split at transaction boundaries by binlog_read, rows decoded by binlog_decode:
here in this process (`decoders=0`), or by worker processes (binlog_parallel)."""

from __future__ import annotations

from collections.abc import Iterator

from migrator.cdc.binlog_decode import Decoder
from migrator.cdc.binlog_read import (
    BinlogReader,
    Heartbeat,
    RawStream,
    Tick,
    merge_gtid,
    tables_in,
)
from migrator.model.events import DDL, Position, Transaction
from migrator.model.schema import Schema
from migrator.model.urls import MySQLURL

__all__ = ["DDL", "BinlogSource", "Heartbeat", "merge_gtid", "tables_in"]


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
        self.reader = BinlogReader(
            url,
            schema.database,
            tables,
            start,
            server_id=server_id,
            flavor=flavor,
            heartbeat=heartbeat,
        )
        self.decoder = Decoder(schema, tables, max_events)

    @property
    def position(self) -> Position:
        """The last commit delivered (after a DDL: the position after it)."""
        return self.reader.position

    @property
    def reconnects(self) -> int:
        return self.reader.reconnects

    def set_schema(self, schema: Schema) -> None:
        self.decoder.set_schema(schema)

    def _open(self) -> RawStream:
        return self.reader.open()

    def close(self) -> None:
        self.reader.close()

    def items(self) -> Iterator[Transaction | DDL | Heartbeat | Tick]:
        """Everything after the start, forever (the caller stops iterating); a Tick now and
        then while only unmapped events arrive (a batch waiting to be applied must not wait
        for them)."""
        for unit in self.reader.units():
            yield from self.decoder.decode(unit)
