"""Reverse sync's loop: from the write switch on, tail the target database's change stream and
write every changed document back to MySQL (`applier.py`), in MongoDB's commit order.

Checkpoints (`<state>.meta`, _id "reverse_checkpoint"): the write switch records where the
stream starts (`start_at`, MongoDB's operation time inside the freeze); after every batch that
MySQL committed, the stream's resume token and `applied_through` (the cluster time up to which
every change is in MySQL) are saved. A crash replays at most the last batch, which converges
(each change is written as its document's current state). MySQL away: the batch is retried
with backoff from the last checkpoint, lag grows, and drains when MySQL is back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from bson.timestamp import Timestamp
from MySQLdb import MySQLError
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from migrator.errors import CheckFailed, MigratorError
from migrator.faults import fault_point
from migrator.model.settings import Mapping
from migrator.model.transform import Transform
from migrator.reverse.applier import ReverseApplier, ReverseChange
from migrator.source.connection import connect as mysql_connect
from migrator.state.store import StateStore, now

# ChangeStreamHistoryLost, and the error a resume token older than the oplog gives
_HISTORY_LOST = {286, 280}
log = logging.getLogger("migrator.reverse")
CHECKPOINT = "reverse_checkpoint"
BATCH = 500


@dataclass
class ReverseSummary:
    changes: int = 0
    batches: int = 0
    dead_letters: int = 0
    retries: int = 0
    stopped: str = ""


def operation_time(client: MongoClient[Any]) -> Timestamp:
    """MongoDB's current operation time (a replica set's cluster time)."""
    t = client.admin.command("hello").get("operationTime")
    if not isinstance(t, Timestamp):
        raise MigratorError(
            "the target MongoDB reports no operation time: reverse sync needs a replica set "
            "(change streams)"
        )
    return t


def record_start(
    client: MongoClient[Any], state: StateStore, mapping: Mapping | None = None
) -> Timestamp:
    """Called by the write switch inside the freeze: reverse sync starts here.

    With the mapping the start is saved as a resume token too, taken from a stream opened at
    the stream's end just before the start time (replaying the moment in between converges):
    resuming from a token is a seek, while a stream opened at an operation time makes the
    server look that time up in its oplog (SecantusDB decodes its whole oplog, up to 100,000
    entries, under its global lock: seconds of stalled writes inside the freeze)."""
    token = _token_now(client, mapping) if mapping is not None else None
    t = operation_time(client)
    state.save_meta_doc(
        CHECKPOINT,
        {
            "start_at": t,
            "token": token,
            "applied_through": t,
            "saved_at": now(),
            "started": now(),
        },
    )
    return t


def _token_now(client: MongoClient[Any], mapping: Mapping) -> Any:
    """A resume token for the end of the stream (None: keep the time alone)."""
    try:
        with client[mapping.target_database].watch(
            pipeline=_match(mapping), max_await_time_ms=10
        ) as stream:
            if stream.try_next() is not None:
                return None  # a token after a change would skip it
            return stream.resume_token
    except PyMongoError as exc:
        log.info("reverse sync start kept as a time: %s", str(exc)[:200])
        return None


def _match(mapping: Mapping) -> list[dict[str, Any]]:
    return [{"$match": {"ns.coll": {"$in": [c.name for c in mapping.collections]}}}]


def restart_after_repair(state: StateStore, since: Timestamp) -> bool:
    """A full, clean `verify --repair` after the switch made MySQL equal MongoDB as of its
    start: a reverse checkpoint the change stream lost restarts there (replaying from then on
    converges, documents being written whole). True if it did."""
    return state.update_meta_doc(
        CHECKPOINT,
        {"$set": {"start_at": since, "token": None, "lost_at": None, "saved_at": now()}},
        match={"lost_at": {"$ne": None}},
    )


def checkpoint(state: StateStore) -> dict[str, Any] | None:
    return state.meta_doc(CHECKPOINT)


def applied_through(state: StateStore) -> Timestamp | None:
    cp = checkpoint(state)
    return cp.get("applied_through") if cp else None


def lag_seconds(client: MongoClient[Any], state: StateStore, mapping: Mapping) -> float | None:
    """Seconds of MongoDB changes not yet in MySQL (0 when none waits); None before a
    switch."""
    done = applied_through(state)
    if done is None:
        return None
    if not unapplied(client, state, mapping):
        return 0.0
    return float(max(0, operation_time(client).time - done.time))


def _change(ev: dict[str, Any]) -> ReverseChange | None:
    op = ev.get("operationType")
    coll = (ev.get("ns") or {}).get("coll", "")
    key = (ev.get("documentKey") or {}).get("_id")
    if op in ("insert", "update", "replace"):
        # the document as it is now (None: deleted since; its delete event follows)
        doc = ev.get("fullDocument")
        desc = ev.get("updateDescription")
        # an insert or a replace may have written anything: None (every copy is compared)
        changed = (
            None
            if op != "update" or desc is None
            else (*(desc.get("updatedFields") or {}), *(desc.get("removedFields") or ()))
        )
        return ReverseChange(coll, "upsert", key, doc, changed) if doc is not None else None
    if op == "delete":
        return ReverseChange(coll, "delete", key)
    return None  # drop, rename, invalidate: nothing row-shaped


def run_reverse(
    mapping: Mapping,
    transform: Transform,
    client: MongoClient[Any],
    state: StateStore,
    *,
    stop: threading.Event,
    mode: Literal["follow", "until-caught-up"] = "follow",
    live: Any = None,
    max_seconds: float | None = None,
) -> ReverseSummary:
    """Apply MongoDB's changes to MySQL while MongoDB is the source of truth (follow), or
    until everything committed before the call is applied (until-caught-up); `max_seconds`
    returns after that long (a Kafka consumer polls in between)."""
    summary = ReverseSummary()
    delay = 0.5
    end = None if max_seconds is None else time.monotonic() + max_seconds
    while not stop.is_set() and (end is None or time.monotonic() < end):
        if state.mongo_is_truth() is None:
            summary.stopped = "MySQL is the source of truth again (rollback)"
            break
        try:
            if _session(mapping, transform, client, state, stop, mode, live, summary, end):
                break
            delay = 0.5
        except (MySQLError, PyMongoError, MigratorError) as exc:
            if isinstance(exc, OperationFailure) and exc.code in _HISTORY_LOST:
                state.update_meta_doc(CHECKPOINT, {"$set": {"lost_at": now()}})
                raise MigratorError(
                    "reverse sync: MongoDB's change stream no longer holds the changes after "
                    "the reverse checkpoint (reverse sync was down longer than the oplog "
                    "window), so MySQL has missed some of them",
                    hint="run a full `migrator verify --repair`: it rewrites MySQL's rows "
                    "from MongoDB and restarts reverse sync from its own start; keep the "
                    "oplog window longer than any reverse sync outage",
                ) from None
            # MySQL (or MongoDB) away: lag grows; retry from the last checkpoint (a run that
            # must end, until-caught-up, gives up after a few tries and says why)
            summary.retries += 1
            if mode != "follow" and summary.retries > 5:
                raise
            log.warning("reverse sync: %s; retrying in %.1f s", str(exc)[:200], delay)
            if live is not None:
                live.beat(waiting_for=f"reverse sync retrying: {str(exc)[:120]}")
            stop.wait(delay)
            delay = min(delay * 2, 10.0)
    return summary


def _session(
    mapping: Mapping,
    transform: Transform,
    client: MongoClient[Any],
    state: StateStore,
    stop: threading.Event,
    mode: str,
    live: Any,
    summary: ReverseSummary,
    end: float | None = None,
) -> bool:
    """One pass from the checkpoint; True when done (caught up in until-caught-up mode)."""
    cp = checkpoint(state)
    if cp is None:
        raise MigratorError("no reverse sync start in the state store (the write switch sets it)")
    kw: dict[str, Any] = {
        "full_document": "updateLookup",
        "pipeline": _match(mapping),
        "max_await_time_ms": 200,
    }
    if cp.get("token"):
        kw["resume_after"] = cp["token"]
    else:
        kw["start_at_operation_time"] = cp["start_at"]
    target = operation_time(client) if mode == "until-caught-up" else None
    conn = mysql_connect(mapping.source_url, raw=True)
    conn.autocommit(False)
    try:
        applier = ReverseApplier(transform, conn)
        with client[mapping.target_database].watch(**kw) as stream:
            while not stop.is_set() and (end is None or time.monotonic() < end):
                if state.mongo_is_truth() is None:
                    return True
                fault_point("reverse_read")
                before = operation_time(client)
                batch: list[ReverseChange] = []
                last: Timestamp | None = None
                while len(batch) < BATCH:
                    ev = stream.try_next()
                    if ev is None:
                        break
                    last = ev.get("clusterTime") or last
                    ch = _change(ev)
                    if ch is not None:
                        batch.append(ch)
                caught_up = len(batch) < BATCH
                if batch:
                    ended = _apply_fenced(conn, mapping, state, applier, batch, summary)
                    if ended is not None:
                        return ended
                through = before if caught_up else last
                fields: dict[str, Any] = {"token": stream.resume_token, "saved_at": now()}
                if through is not None:
                    fields["applied_through"] = through
                # only now: MySQL committed everything up to here
                state.update_meta_doc(CHECKPOINT, {"$set": fields})
                if live is not None:
                    live.beat(waiting_for=None, reverse=True)
                if caught_up and target is not None and before >= target:
                    summary.stopped = "caught up"
                    return True
                if caught_up:
                    stop.wait(0.1)
        return False
    finally:
        conn.close()


FENCE_WAIT = 10.0  # seconds a batch waits for a rollback's flip to pass


def _apply_fenced(
    conn: Any,
    mapping: Mapping,
    state: StateStore,
    applier: ReverseApplier,
    batch: list[ReverseChange],
    summary: ReverseSummary,
) -> bool | None:
    """Write one batch to MySQL holding the fence the rollback takes to flip, so that it
    commits wholly before the flip or not at all. None: written; False: the fence stayed
    taken (read the batch again from the checkpoint); True: a rollback flipped while it was
    read (it waited for reverse lag 0 first, so the batch holds MongoDB copies of writes made
    under MySQL-first routing after it, which could overwrite newer rows): dropped."""
    if not take_fence(conn, mapping, FENCE_WAIT):
        return False
    try:
        if state.mongo_is_truth() is None:
            return True
        res = applier.apply(batch)  # one MySQL transaction
        # recorded inside the fence: the rollback's flip sees them (it waits for unsettled
        # reverse dead letters)
        for ch, why in res.problems:
            state.dead_letter(
                source="reverse",
                collection=ch.collection,
                key=ch.doc_id,
                reason=f"cannot write the document back to MySQL: {why}",
                payload=ch.document,
                position=None,
            )
            summary.dead_letters += 1
        for coll, doc_id, paths in res.edited_copies:
            state.dead_letter(
                source="reverse",
                collection=coll,
                key=doc_id,
                reason=(
                    f"{', '.join(paths[:5])}: read-only copies (their truth is their own "
                    "table) written with values their table does not hold; not written back, "
                    "the rest of the document was: change the copied table's row instead"
                ),
                payload=None,
                position=None,
            )
            summary.dead_letters += 1
        summary.changes += res.applied
        summary.batches += 1
        return None
    finally:
        release_fence(conn, mapping)


def fence_name(mapping: Mapping) -> str:
    """The MySQL named lock between reverse sync's batches and a rollback's flip."""
    return f"migrator-reverse:{mapping.state.database}"[:64]


def take_fence(conn: Any, mapping: Mapping, seconds: float) -> bool:
    cur = conn.cursor()
    cur.execute("SELECT GET_LOCK(%s, %s)", (fence_name(mapping), seconds))
    row = cur.fetchone()
    return bool(row and row[0] is not None and int(row[0]) == 1)  # b"1" on a raw connection


def release_fence(conn: Any, mapping: Mapping) -> None:
    with contextlib.suppress(MySQLError):  # a connection gone has released it
        conn.cursor().execute("SELECT RELEASE_LOCK(%s)", (fence_name(mapping),))


def hold_fence(mapping: Mapping, *, wait: float, kill_after: float | None) -> Any:
    """The rollback's side: a connection holding the fence, so that no reverse sync batch
    commits across the flip. A batch holding it waits in MySQL (a row lock, a slow server):
    the rollback waits `wait` s for it, and with `kill_after` (a forced rollback, which does
    not wait for reverse sync) kills that connection after so long instead: its transaction
    rolls back, and reverse sync, reconnecting, finds the phase flipped."""
    conn = mysql_connect(mapping.source_url)
    try:
        if take_fence(conn, mapping, kill_after if kill_after is not None else wait):
            return conn
        if kill_after is not None:
            cur = conn.cursor()
            cur.execute("SELECT IS_USED_LOCK(%s)", (fence_name(mapping),))
            holder = (cur.fetchone() or [None])[0]
            if holder is not None:
                with contextlib.suppress(MySQLError):  # it may have ended meanwhile
                    cur.execute(f"KILL CONNECTION {int(holder)}")
            if take_fence(conn, mapping, max(1.0, wait - kill_after)):
                return conn
        raise CheckFailed(
            "reverse sync is in the middle of writing a batch to MySQL that does not finish "
            "(a row lock, a stalled server): the rollback does not flip under it",
            hint="find what holds MySQL's locks (SHOW PROCESSLIST), or `rollback --force` "
            "(it stops that batch)",
        )
    except BaseException:
        conn.close()
        raise


def unapplied(client: MongoClient[Any], state: StateStore, mapping: Mapping) -> bool:
    """Whether any change of a mapped collection waits after the checkpoint (a look at the
    stream itself: no reverse process needs to be running to know that nothing waits)."""
    cp = checkpoint(state)
    if cp is None:
        return False
    kw: dict[str, Any] = {
        "pipeline": _match(mapping),
        "max_await_time_ms": 100,
    }
    if cp.get("token"):
        kw["resume_after"] = cp["token"]
    else:
        kw["start_at_operation_time"] = cp["start_at"]
    with client[mapping.target_database].watch(**kw) as stream:
        return stream.try_next() is not None


def wait_for_reverse(
    client: MongoClient[Any],
    state: StateStore,
    mapping: Mapping,
    until: Timestamp,
    *,
    deadline: float,
) -> bool:
    """The rollback's catch-up: True once every MongoDB change up to `until` is in MySQL."""
    while time.monotonic() < deadline:
        done = applied_through(state)
        if done is not None and done >= until:
            return True
        if not unapplied(client, state, mapping):
            return True
        time.sleep(0.05)
    return False
