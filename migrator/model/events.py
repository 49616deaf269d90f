"""The normalised change event both sources produce, and the transaction that carries them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Op = Literal["insert", "update", "delete"]
Row = dict[str, Any]  # column -> the value a SELECT would return (see typerules)


@dataclass
class ChangeEvent:
    table: str
    op: Op
    before: Row | None
    after: Row | None
    commit_time: datetime | None = None
    # where the source logged it, when the event says so (Debezium's source file/pos), and
    # the server whose binlog that is (its server_id: coordinates belong to one server)
    origin: Position | None = None
    origin_server: int | None = None
    # the columns an update wrote, when only those may change (the SDK writing MongoDB first:
    # the rest of its image was read from the document and may be older than another
    # writer's change); None: the whole image stands (a binlog or Debezium event)
    only: frozenset[str] | None = None


@dataclass
class Position:
    """Where a source is: binlog file/pos and GTID (MariaDB domain-server-seq list)."""

    file: str | None = None
    pos: int | None = None
    gtid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "pos": self.pos, "gtid": self.gtid}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Position:
        d = d or {}
        return cls(file=d.get("file"), pos=d.get("pos"), gtid=d.get("gtid") or None)

    def __str__(self) -> str:
        fp = f"{self.file}:{self.pos}" if self.file else "-"
        return f"{fp} (GTID {self.gtid})" if self.gtid else fp


@dataclass
class Transaction:
    """Events committed together; `position` is where the stream stands after the commit."""

    events: list[ChangeEvent]
    position: Position
    commit_time: datetime | None = None
    gtid: str | None = None
    # False for a piece of a transaction too big to hold whole: `position` is then the last
    # commit before it (a safe place to resume: the piece is replayed)
    complete: bool = True


@dataclass
class DDL:
    """A schema change seen in the stream (applied or refused per --on-ddl)."""

    statement: str
    schema: str | None
    position: Position  # the position *before* the statement
    tables: list[str] = field(default_factory=list)
    after: Position | None = None  # the position after it (binlog source)


def binlog_index(file: str | None) -> int:
    """The number of a binlog file name (mysql-bin.000042 -> 42); -1 if it has none."""
    try:
        return int((file or "").rsplit(".", 1)[-1])
    except ValueError:
        return -1


def reached(pos: Position, target: Position) -> bool:
    """Has `pos` got to `target` (file/pos order of one server's binlog)?"""
    if pos.file is None or target.file is None:
        return False
    a, b = binlog_index(pos.file), binlog_index(target.file)
    return (a, pos.pos or 0) >= (b, target.pos or 0)
