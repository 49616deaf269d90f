"""The state store's records, typed: what each state document holds, so that a reader that
asks for a field no writer puts there is a type error, not a silent None.

`total=False`: a record written by an older version, or not yet complete, may lack a field;
readers use `.get`. The documents themselves stay plain BSON (these are annotations only).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict


class PositionRecord(TypedDict, total=False):
    """A source position: binlog file/offset and GTID set, or Debezium's Kafka offsets."""

    file: str | None
    pos: int | None
    gtid: str | None
    offsets: dict[str, Any]


class CdcCheckpoint(TypedDict, total=False):
    """`meta/cdc_checkpoint`: where CDC resumes; written after MongoDB acknowledged the
    writes it covers."""

    _id: str
    position: PositionRecord
    saved_at: datetime
    source: str  # binlog | debezium
    server_id: int | None
    commit_time: datetime | None
    events: int


class CdcStatus(TypedDict, total=False):
    """`meta/cdc_status`: a running CDC's last report (status, metrics, the hand-over)."""

    _id: str
    updated_at: datetime
    heartbeat: datetime
    source: str
    position: PositionRecord
    lag_seconds: float | None
    events: int
    events_per_sec: float
    alive_at: datetime
    waiting_for: Any
    alive: bool
    mode: str
    pid: int
    host: str
    applied_through: Any


class RollbackPoint(TypedDict, total=False):
    """`meta/cdc_rollback_point`: where the last rollback to MySQL-first left the source."""

    _id: str
    position: PositionRecord
    server_id: int | None
    saved_at: datetime


class CollectionState(TypedDict, total=False):
    """`backfill/<collection>`: one collection's copy."""

    _id: str
    status: str  # running | complete
    planned: bool  # its chunk plan is saved (a resume reads it)
    table: str
    chunks: int
    chunk_size: int
    started_at: datetime
    finished_at: datetime
    target_uuid: Any  # the target collection's UUID when the copy began (a resume checks it)


class ChunkRecord(TypedDict, total=False):
    """`chunks/<id>`: one key range of a collection's copy, claimed under a lease."""

    _id: str
    collection: str
    seq: int
    lo: Any
    hi: Any
    done: bool
    owner: str | None
    lease_until: datetime | None
    rows: int
    docs: int
    seconds: float


class VerifyRun(TypedDict, total=False):
    """`verify_runs`: one verification's summary (the gate reads the last covering one)."""

    _id: Any
    mode: str  # full | changed | since | sample
    covers: bool
    started: datetime
    finished: datetime
    ok: bool
    checked: int
    differences: int
    collections: dict[str, Any]
    repaired: int
    behind: int


class DeadLetter(TypedDict, total=False):
    """`dead_letters`: a change or row that could not be applied, with the reason."""

    _id: Any
    source: str  # cdc | backfill | reverse | verify
    collection: str
    key: Any
    reason: str
    payload: Any
    position: Any
    at: datetime
    settled: bool
