"""The durable state store, kept in the target MongoDB (`state.database`, default `_migrator`).

Any machine can resume from it. Collections:
- `backfill`: one document per collection: status, the binlog position recorded before reading,
  chunk counts, timings;
- `chunks`: the chunk plan, one document per chunk, marked done after MongoDB acknowledged it;
- `dead_letters`: rows or events that could not be applied, with the reason and the position;
- `pending`: CDC changes of embedded children waiting for their parent document;
- `meta`: the migration's identity, the backfill position, the CDC checkpoint and the CDC
  status (lag, counters, liveness), the copy fence.

A state database belongs to one migration (source server and database -> target database),
recorded at the first run: a mapping for another migration is refused instead of silently
taking over its checkpoints and phase.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from pymongo import ASCENDING, MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from migrator.errors import CheckFailed, ConfigError
from migrator.model.events import Position, reached
from migrator.sink.mongo import with_retry
from migrator.state.records import (
    CdcCheckpoint,
    CdcStatus,
    ChunkRecord,
    CollectionState,
    DeadLetter,
    PositionRecord,
    RollbackPoint,
    VerifyRun,
)

if TYPE_CHECKING:
    from migrator.model.settings import Mapping


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class StateStore:
    def __init__(self, client: MongoClient[Any], database: str) -> None:
        self.client = client
        self.db: Database[Any] = client[database]
        self.backfill = self.db["backfill"]
        self.chunks = self.db["chunks"]
        self.dead_letters = self.db["dead_letters"]
        self.meta = self.db["meta"]
        self.pending = self.db["pending"]
        self.touched = self.db["touched"]
        self.verify_runs = self.db["verify_runs"]
        self.verify_chunks = self.db["verify_chunks"]  # verify --shared's plan
        self.open_diffs = self.db["open_differences"]  # differences no later check cleared
        self.control = self.db["control"]  # the phase document applications read
        self.audit_log = self.db["audit"]  # who moved what, when and why
        self.writers = self.db["writers"]  # live SDK instances (the write fence)
        self.sdk_failures = self.db["sdk_failures"]  # secondary writes the SDK could not do
        self.sweeps = self.db["sweeps"]  # cascade rules CDC settles once caught up

    @classmethod
    def open(cls, client: MongoClient[Any], mapping: Mapping) -> StateStore:
        """The mapping's state store, after checking that it belongs to this migration."""
        state = cls(client, mapping.state.database)
        state.claim(mapping)
        state.ensure_indexes()
        return state

    # -- whose state this is ---------------------------------------------------------------
    @staticmethod
    def identity_of(mapping: Mapping) -> dict[str, str]:
        from migrator.model.urls import parse_mysql_url

        src = parse_mysql_url(mapping.source.url)
        return {
            "source": f"{src.address}/{mapping.source_database}",
            "target": mapping.target_database,
        }

    def holds_records(self) -> bool:
        """Does this database hold any migration's records (whatever wrote them)? An identity
        alone is not one: a process claiming the database at the same time wrote it."""
        names = with_retry(self.db.list_collection_names)
        return any(
            self.db[n].find_one({"_id": {"$ne": "identity"}} if n == "meta" else {}, {"_id": 1})
            is not None
            for n in names
        )

    def identity_problem(self, mapping: Mapping) -> str | None:
        """Why this state database is not the mapping's (None when it is, or is new)."""
        doc = self.meta.find_one({"_id": "identity"})
        mine = self.identity_of(mapping)
        if doc is None and self.holds_records():
            # another process may have claimed it meanwhile (its records are then behind it;
            # a server can show them a moment before the identity they follow)
            for _ in range(10):
                doc = self.meta.find_one({"_id": "identity"})
                if doc is not None:
                    break
                time.sleep(0.1)
        if doc is None:
            if not self.holds_records():
                return None
            # an older version's state, or its identity removed: it may be another migration's
            return (
                f"state database {self.db.name!r} has no identity but holds a migration's "
                f"records: it is not known to be {mine['source']} -> {mine['target']} "
                f"({mapping.path})"
            )
        if (doc.get("source"), doc.get("target")) == (mine["source"], mine["target"]):
            return None
        since = doc.get("created")
        return (
            f"state database {self.db.name!r} belongs to another migration: "
            f"{doc.get('source')} -> {doc.get('target')}"
            + (f" (since {since:%Y-%m-%d %H:%M} UTC)" if isinstance(since, datetime) else "")
            + f"; {mapping.path} is {mine['source']} -> {mine['target']}"
        )

    def claim(self, mapping: Mapping) -> None:
        problem = self.identity_problem(mapping)
        if problem is None and self.meta.find_one({"_id": "identity"}) is None:
            try:
                self.meta.insert_one(
                    {"_id": "identity", **self.identity_of(mapping), "created": now()}
                )
            except DuplicateKeyError:  # another process claimed it first: check theirs
                problem = self.identity_problem(mapping)
        if problem:
            raise ConfigError(problem, hint=self.identity_hint(mapping))

    def identity_hint(self, mapping: Mapping) -> str:
        own = (
            "give each migration a state database of its own in the mapping, e.g. "
            f"`state: {{database: _migrator_{mapping.target_database}}}`"
        )
        if self.meta.find_one({"_id": "identity"}) is not None:
            return own
        return (
            f"if these records are this migration's, say so: `migrator state claim -m "
            f"{mapping.path} --reason TEXT` (audited); otherwise {own}"
        )

    def adopt(self, mapping: Mapping, *, actor: str, reason: str) -> bool:
        """The user says an identity-less state database is this mapping's: record the
        identity and audit it. False when it already was; refused when another's."""
        doc = self.meta.find_one({"_id": "identity"})
        if doc is not None:
            problem = self.identity_problem(mapping)
            if problem:
                raise ConfigError(problem, hint=self.identity_hint(mapping))
            return False
        mine = self.identity_of(mapping)
        claimed = {"actor": actor, "reason": reason, "at": now()}
        try:
            self.meta.insert_one({"_id": "identity", **mine, "created": now(), "claimed": claimed})
        except DuplicateKeyError:  # claimed meanwhile: by this migration, or refused
            return self.adopt(mapping, actor=actor, reason=reason)
        self.audit(
            kind="claim_state",
            outcome="done",
            actor=actor,
            reason=reason,
            detail=f"state database {self.db.name!r} recorded as {mine['source']} -> "
            f"{mine['target']} ({mapping.path}); it held records but no identity",
        )
        return True

    def audit(self, **entry: Any) -> None:
        """Append to the audit log (who did what, when and why)."""
        doc = {"at": now(), **entry}
        with_retry(lambda: self.audit_log.insert_one(doc))

    # -- singleton documents of `meta`, by name ------------------------------------------------
    def meta_doc(
        self, name: str, projection: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        return self.meta.find_one({"_id": name}, projection)

    def save_meta_doc(self, name: str, doc: dict[str, Any]) -> None:
        """Replace the whole document `name` (upsert)."""
        full = {**doc, "_id": name}
        with_retry(lambda: self.meta.replace_one({"_id": name}, full, upsert=True))

    def update_meta_doc(
        self, name: str, update: dict[str, Any], match: dict[str, Any] | None = None
    ) -> bool:
        """Update `name` where it also matches `match` (a compare-and-set); True if it did."""
        res = with_retry(lambda: self.meta.update_one({"_id": name, **(match or {})}, update))
        return res.matched_count == 1

    def insert_meta_doc(self, name: str, doc: dict[str, Any]) -> None:
        """Create `name`; DuplicateKeyError when it exists (another process made it)."""
        self.meta.insert_one({**doc, "_id": name})

    def replace_meta_doc(self, name: str, match: dict[str, Any], doc: dict[str, Any]) -> bool:
        """Replace `name` where it matches `match` (a compare-and-set); True if it did."""
        res = with_retry(
            lambda: self.meta.replace_one({"_id": name, **match}, {**doc, "_id": name})
        )
        return res.matched_count == 1

    def delete_meta_doc(self, name: str) -> None:
        with_retry(lambda: self.meta.delete_one({"_id": name}))

    def phase(self) -> str:
        doc = self.control.find_one({"_id": "control"}, {"phase": 1})
        return str(doc["phase"]) if doc else "planned"

    def ensure_indexes(self) -> None:
        with_retry(
            lambda: self.chunks.create_index([("collection", ASCENDING), ("seq", ASCENDING)])
        )
        with_retry(
            lambda: self.pending.create_index([("collection", ASCENDING), ("parent_id", ASCENDING)])
        )
        with_retry(lambda: self.touched.create_index([("c", ASCENDING), ("at", ASCENDING)]))

    # -- the copy fence: CDC never writes while a backfill copies ---------------------------
    # A chunk read before a change and written after CDC applied it would overwrite the newer
    # document. So a copy takes this lease, CDC acknowledges it (and stops applying, dropping
    # what it held), the copy runs, and CDC then resumes from its last checkpoint, which lies
    # before every row the copy read: replaying from there converges.
    COPY_LEASE_SECONDS = 30.0

    # Several backfill processes (machines) may copy one plan together: the first creates the
    # copy (its id is the owner CDC acknowledges), the others join it as members. The copy
    # lives while any member renews it; the last member out removes it.
    def begin_copy(self, owner: str) -> tuple[str, bool]:
        """Take the copy lease, or join the live copy of other backfills: (copy id, created)."""
        for _ in range(5):
            t = now()
            until = t + timedelta(seconds=self.COPY_LEASE_SECONDS)
            cur = self.meta.find_one({"_id": "copy"})
            if cur is not None and _live_members(cur, t):
                res = self.meta.update_one(
                    {
                        "_id": "copy",
                        "since": cur.get("since"),
                        "members": {"$elemMatch": {"expires": {"$gte": t}}},
                    },
                    {
                        "$push": {"members": {"owner": owner, "expires": until}},
                        "$max": {"expires": until},
                        "$inc": {"version": 1},
                    },
                )
                if res.matched_count == 1:
                    return str(cur["owner"]), False
                continue
            lease = {
                "owner": owner,
                "since": t,
                "expires": until,
                "members": [{"owner": owner, "expires": until}],
                "version": 0,
                "planned": False,  # a dead copy's plan is not this one's: its creator says
            }
            if cur is None:
                try:
                    self.meta.insert_one({"_id": "copy", **lease})
                    return owner, True
                except DuplicateKeyError:
                    continue
            res = self.meta.update_one(
                {"_id": "copy", "since": cur.get("since"), "version": cur.get("version")},
                {"$set": lease},
            )
            if res.matched_count == 1:
                return owner, True
        raise CheckFailed("the copy lease kept changing under this backfill; run it again")

    def renew_copy(self, owner: str) -> bool:
        """Extend `owner`'s membership; False when it had already expired (CDC may have
        resumed since: the copy must stop, not carry on as if it still held the fence)."""
        t = now()
        until = t + timedelta(seconds=self.COPY_LEASE_SECONDS)
        res = self.meta.update_one(
            {
                "_id": "copy",
                "members": {"$elemMatch": {"owner": owner, "expires": {"$gte": t}}},
            },
            {"$set": {"members.$[m].expires": until}, "$max": {"expires": until}},
            array_filters=[{"m.owner": owner}],
        )
        return res.matched_count == 1

    @staticmethod
    def copy_members(copy: dict[str, Any]) -> list[str]:
        """The live members of a copy document."""
        return _live_members(copy, now())

    def mark_copy_planned(self, copy_id: str) -> None:
        """The copy's creator has reset, recorded the position and planned: others may copy."""
        with_retry(
            lambda: self.meta.update_one(
                {"_id": "copy", "owner": copy_id}, {"$set": {"planned": True}}
            )
        )

    def end_copy(self, owner: str) -> None:
        def leave() -> None:
            self.meta.update_one(
                {"_id": "copy"}, {"$pull": {"members": {"owner": owner}}, "$inc": {"version": 1}}
            )
            doc = self.meta.find_one({"_id": "copy"})
            if doc is not None and not _live_members(doc, now()):
                # no one else copies: CDC may resume (unless a member joined meanwhile)
                self.meta.delete_one({"_id": "copy", "version": doc.get("version")})

        with_retry(leave)

    def mongo_is_truth(self) -> str | None:
        """The phase, when the write switch has made MongoDB the source of truth (CDC must
        then apply nothing from MySQL); None before it."""
        doc = self.control.find_one({"_id": "control"}, {"phase": 1, "source_of_truth": 1})
        if doc is not None and doc.get("source_of_truth") == "mongo":
            return str(doc.get("phase"))
        return None

    def copy_in_progress(self) -> dict[str, Any] | None:
        doc = self.meta.find_one({"_id": "copy"})
        if doc is None or not _live_members(doc, now()):
            return None
        return doc

    def wait_for_cdc_ack(
        self, copy_id: str, owner: str | None = None, timeout: float = 600.0
    ) -> bool:
        """After begin_copy: wait until a live CDC has acknowledged the copy `copy_id` (True),
        or no CDC is alive (False), renewing `owner`'s membership meanwhile. CDC writes its
        liveness every second."""
        owner = owner or copy_id
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.cdc_status() or {}
            # paused now, for this copy: an acknowledgement left from before CDC resumed
            # (the same copy id, after a member's lease ran out) is not a pause
            if st.get("acked_copy") == copy_id and st.get("waiting_for") == "backfill":
                return True
            if not self.cdc_alive():
                return False
            self.renew_copy(owner)
            time.sleep(0.2)
        raise CheckFailed(
            f"CDC did not pause for the backfill within {timeout:.0f} s",
            hint="stop `migrator cdc`, run the backfill, then start CDC again",
        )

    def cdc_alive(self, within: float = 5.0) -> bool:
        st = self.cdc_status() or {}
        at = st.get("alive_at")
        return isinstance(at, datetime) and now() - at < timedelta(seconds=within)

    def cdc_heartbeat(self, **fields: Any) -> None:
        """Liveness of a running CDC (and what it waits for), without touching its counters."""
        with_retry(
            lambda: self.meta.update_one(
                {"_id": "cdc_status"},
                {"$set": {"alive_at": now(), "host": socket.gethostname(), **fields}},
                upsert=True,
            )
        )

    # -- backfill position and status --------------------------------------------------------
    def backfill_position(self) -> dict[str, Any] | None:
        doc = self.meta.find_one({"_id": "backfill_position"})
        return doc["position"] if doc else None

    def record_backfill_position(self, position: dict[str, Any]) -> dict[str, Any]:
        """Record where CDC starts, unless another backfill of the copy already did: the
        earliest position is the one every process's rows lie after. Returns the recorded one."""

        def first() -> None:
            # DuplicateKeyError: another process's upsert inserted it first; theirs stands
            with contextlib.suppress(DuplicateKeyError):
                self.meta.update_one(
                    {"_id": "backfill_position"},
                    {"$setOnInsert": {"position": position, "recorded_at": now()}},
                    upsert=True,
                )

        with_retry(first)
        return self.backfill_position() or position

    def collection_state(self, name: str) -> CollectionState | None:
        return cast("CollectionState | None", self.backfill.find_one({"_id": name}))

    def update_collection(self, name: str, **fields: Any) -> None:
        with_retry(lambda: self.backfill.update_one({"_id": name}, {"$set": fields}, upsert=True))

    # -- chunks ------------------------------------------------------------------------------
    def save_chunk_plan(self, collection: str, bounds: list[tuple[Any, Any]]) -> None:
        docs = [
            {
                "_id": f"{collection}/{i:09d}",
                "collection": collection,
                "seq": i,
                "lo": encode_key(lo) if lo is not None else None,
                "hi": encode_key(hi) if hi is not None else None,
                "done": False,
            }
            for i, (lo, hi) in enumerate(bounds)
        ]
        # A plan cut short by a crash is thrown away and made again: the caller marks the
        # collection `planned` only after every chunk document is in.
        with_retry(lambda: self.chunks.delete_many({"collection": collection}))
        for i in range(0, len(docs), 500):
            batch = docs[i : i + 500]
            with_retry(partial(self.chunks.insert_many, batch, ordered=False))

    def pending_chunks(self, collection: str) -> list[ChunkRecord]:
        found = self.chunks.find({"collection": collection, "done": False}).sort("seq", 1)
        return [cast("ChunkRecord", c) for c in found]

    def chunk_counts(self, collection: str) -> tuple[int, int]:
        total = self.chunks.count_documents({"collection": collection})
        done = self.chunks.count_documents({"collection": collection, "done": True})
        return total, done

    # Chunks are claimed with a lease, so backfill processes on several machines share one
    # plan: a chunk is copied by one of them, and a dead one's chunks are claimed again when
    # their lease expires (at once when the owner is a dead process of this host).
    CHUNK_LEASE_SECONDS = 30.0

    def claim_chunk(self, collections: list[str], owner: str) -> ChunkRecord | None:
        """The next chunk nobody holds, now leased to `owner`; None when none is free."""
        return cast(
            "ChunkRecord | None",
            self.claim_leased(
                self.chunks,
                {"collection": {"$in": collections}},
                owner,
                sort=[("collection", ASCENDING), ("seq", ASCENDING)],
            ),
        )

    def renew_chunks(self, owner: str) -> None:
        """Extend the leases of the chunks `owner` is copying."""
        self.renew_leased(self.chunks, owner)

    def release_chunks(self, owner: str) -> None:
        """Give back the chunks `owner` holds and will not finish: others claim them at once."""
        self.release_leased(self.chunks, owner)

    # The lease machinery itself, shared by the backfill's chunks and `verify --shared`'s.
    def claim_leased(
        self,
        coll: Collection[Any],
        query: dict[str, Any],
        owner: str,
        *,
        sort: list[tuple[str, int]],
    ) -> dict[str, Any] | None:
        """The first not-done task of `query` that nobody holds (no lease, an expired lease,
        or a dead local process's), now leased to `owner`."""
        t = now()
        free: dict[str, Any] = {"$or": [{"lease": {"$exists": False}}, {"lease": {"$lt": t}}]}
        held = coll.find({**query, "done": False, "lease": {"$gte": t}}, {"worker": 1})
        dead = sorted({str(d.get("worker")) for d in held if dead_local(str(d.get("worker")))})
        if dead:
            free["$or"].append({"worker": {"$in": dead}})
        return coll.find_one_and_update(
            {**query, "done": False, **free},
            {
                "$set": {"lease": t + timedelta(seconds=self.CHUNK_LEASE_SECONDS), "worker": owner},
                "$inc": {"claims": 1},
            },
            sort=sort,
            return_document=ReturnDocument.AFTER,
        )

    def renew_leased(self, coll: Collection[Any], owner: str) -> None:
        until = now() + timedelta(seconds=self.CHUNK_LEASE_SECONDS)
        coll.update_many({"worker": owner, "done": False}, {"$set": {"lease": until}})

    def release_leased(self, coll: Collection[Any], owner: str) -> None:
        coll.update_many({"worker": owner, "done": False}, {"$unset": {"lease": ""}})

    def chunks_left(self, collections: list[str]) -> int:
        return self.chunks.count_documents({"collection": {"$in": collections}, "done": False})

    def mark_chunk_done(self, chunk_id: str, rows: int, seconds: float, docs: int) -> None:
        fields = {"done": True, "rows": rows, "docs": docs, "seconds": seconds, "done_at": now()}
        with_retry(lambda: self.chunks.update_one({"_id": chunk_id}, {"$set": fields}))

    def recent_rows(self, collection: str, seconds: float) -> int:
        """Rows the chunks done in the last `seconds` copied (the copy's current rate)."""
        q = {
            "collection": collection,
            "done": True,
            "done_at": {"$gte": now() - timedelta(seconds=seconds)},
        }
        return sum(int(c.get("rows", 0)) for c in self.chunks.find(q, {"rows": 1}))

    def done_rows(self, collection: str) -> int:
        done = self.chunks.find({"collection": collection, "done": True}, {"rows": 1})
        return sum(int(c.get("rows", 0)) for c in done)

    def done_docs(self, collection: str) -> int:
        """Documents the done chunks wrote (chunks done by an older version: their rows)."""
        done = self.chunks.find({"collection": collection, "done": True}, {"rows": 1, "docs": 1})
        return sum(int(c.get("docs", c.get("rows", 0))) for c in done)

    # Deletes of whole documents, counted per collection before they are sent (a replay counts
    # again): a resume tells "fewer documents than the copy wrote" from deletes the tool made.
    def note_deletes(self, collection: str, n: int) -> None:
        if n:
            with_retry(
                lambda: self.meta.update_one(
                    {"_id": "target_deletes"}, {"$inc": {f"c.{collection}": n}}, upsert=True
                )
            )

    def deletes_noted(self, collection: str) -> int:
        doc = self.meta.find_one({"_id": "target_deletes"}) or {}
        return int(doc.get("c", {}).get(collection, 0))

    def reset_backfill(self, collections: list[str] | None = None) -> None:
        """Forget checkpoints: of some collections, or of everything including the position."""
        if collections:
            self.chunks.delete_many({"collection": {"$in": collections}})
            self.backfill.delete_many({"_id": {"$in": collections}})
            unset = {f"c.{c}": "" for c in collections}
            self.meta.update_one({"_id": "target_deletes"}, {"$unset": unset})
            return
        self.chunks.delete_many({})
        self.backfill.delete_many({})
        self.meta.delete_many({"_id": {"$in": ["backfill_position", "target_deletes"]}})

    # -- CDC checkpoint and lag ---------------------------------------------------------------
    def cdc_checkpoint(self) -> PositionRecord | None:
        doc = self.cdc_checkpoint_record()
        return doc["position"] if doc else None

    def cdc_checkpoint_record(self) -> CdcCheckpoint | None:
        return cast("CdcCheckpoint | None", self.meta.find_one({"_id": "cdc_checkpoint"}))

    def save_cdc_checkpoint(self, position: dict[str, Any], **info: Any) -> None:
        doc = {"_id": "cdc_checkpoint", "position": position, "saved_at": now(), **info}
        with_retry(lambda: self.meta.replace_one({"_id": "cdc_checkpoint"}, doc, upsert=True))

    def cdc_from_debezium(self) -> bool:
        """Does CDC read Debezium's topics (its checkpoints are Kafka offsets, not binlog
        positions)? Told by its checkpoint or its status."""
        cp = self.meta_doc("cdc_checkpoint", {"source": 1}) or {}
        status = self.meta_doc("cdc_status", {"source": 1}) or {}
        return "debezium" in (cp.get("source"), status.get("source"))

    def cdc_applied_through(self, target: Position) -> bool | None:
        """Has binlog CDC's checkpoint reached `target`? None for the Debezium source (Kafka
        offsets are not binlog positions) or before CDC ran."""
        cp = self.meta_doc("cdc_checkpoint")
        if cp is None or cp.get("source") == "debezium":
            return None
        pos = Position.from_dict(cp["position"])
        return reached(pos, target) or bool(pos.gtid and pos.gtid == target.gtid)

    def save_cdc_rollback_point(self, position: dict[str, Any], **info: Any) -> None:
        """Where a rollback to MySQL-first left the source: CDC restarts there (see
        `cdc_rollback_point`)."""
        doc = {"_id": "cdc_rollback_point", "position": position, "saved_at": now(), **info}
        with_retry(lambda: self.meta.replace_one({"_id": "cdc_rollback_point"}, doc, upsert=True))

    def save_switch_schema(self, fingerprint: str) -> None:
        """The mapped tables' shape when the write switch made MongoDB the truth."""
        with_retry(
            lambda: self.meta.replace_one(
                {"_id": "switch_schema"},
                {"_id": "switch_schema", "fingerprint": fingerprint, "saved_at": now()},
                upsert=True,
            )
        )

    def switch_schema(self) -> str | None:
        doc = self.meta.find_one({"_id": "switch_schema"})
        return doc["fingerprint"] if doc else None

    def cdc_rollback_point(self) -> PositionRecord | None:
        """The source's position read by the last rollback to MySQL-first, inside its freeze
        and after reverse sync had caught up: every MySQL change before it is reverse sync
        writing MongoDB's own changes back (or was applied before the switch), so CDC resumes
        there instead of replaying the whole time MongoDB was the truth (as Vitess's
        ReverseTraffic restarts the forward stream at the current position)."""
        doc = self.cdc_rollback()
        return doc["position"] if doc else None

    def cdc_rollback(self) -> RollbackPoint | None:
        """The last rollback's whole record: `position`, and `server_id`, the source whose
        binlog that position is in."""
        return cast("RollbackPoint | None", self.meta.find_one({"_id": "cdc_rollback_point"}))

    def save_cdc_status(self, **status: Any) -> None:
        doc = {"updated_at": now(), **status}  # liveness is the Liveness thread's
        with_retry(
            lambda: self.meta.find_one_and_update(
                {"_id": "cdc_status"},
                {"$set": doc},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        )

    def cdc_status(self) -> CdcStatus | None:
        return cast("CdcStatus | None", self.meta.find_one({"_id": "cdc_status"}))

    # -- documents CDC touched ({c: collection, k: doc _id, at}), verification runs ----------
    def touch(self, keys: list[tuple[str, Any, Any]]) -> None:
        """Record documents CDC changed, (collection, _id, commit time), for verify --changed.

        An append-only log (one insert per document and batch; readers de-duplicate): cheaper
        than an upsert per key, and pruned once a clean full verification covers it."""
        # `at` is when the change was applied here: the binlog's commit time has 1 s resolution
        applied = now()
        docs = [{"c": c, "k": k, "at": applied, "commit_time": at} for c, k, at in keys]
        for i in range(0, len(docs), 5000):
            part = docs[i : i + 5000]
            with_retry(partial(self.touched.insert_many, part, ordered=False))

    def touched_ids(self, collection: str, since: datetime | None) -> Iterator[Any]:
        """Distinct documents CDC touched (since a time), in the order first touched."""
        from migrator.model.keys import id_key

        q: dict[str, Any] = {"c": collection}
        if since is not None:
            q["at"] = {"$gte": since}
        seen: set[Any] = set()
        for d in self.touched.find(q, {"k": 1}).sort("_id", 1).batch_size(5000):
            k = id_key(d["k"])
            if k not in seen:
                seen.add(k)
                yield d["k"]

    def prune_touched(self, before: datetime, collections: list[str]) -> None:
        """A clean full verification of these collections checked everything of theirs
        touched before it started (other collections' marks stay for `verify --changed`)."""
        q = {"at": {"$lt": before}, "c": {"$in": collections}}
        with_retry(lambda: self.touched.delete_many(q))

    def record_verify_run(self, summary: dict[str, Any]) -> None:
        with_retry(lambda: self.verify_runs.insert_one({**summary, "finished": now()}))

    # -- open differences: what verification found and no later check of the key cleared --
    # A full run replaces its collections' set; a later run that checks an open key and finds
    # it equal clears it (a false difference: CDC had not yet applied a change); what a run
    # could not list (more than its limit) makes the collection "overflowed" until a full run.
    def replace_open_differences(
        self,
        collections: list[str],
        diffs: list[dict[str, Any]],
        overflowed: list[str],
        *,
        everything: bool = False,
    ) -> None:
        """A full run's differences replace its collections' (`everything`: a run over the
        whole mapping replaces all, so a collection taken out of the mapping leaves none)."""
        q: dict[str, Any] = {} if everything else {"c": {"$in": collections}}
        with_retry(lambda: self.open_diffs.delete_many(q))
        self.add_open_differences(diffs)
        doc = self.meta.find_one({"_id": "open_overflow"}) or {}
        keep = [] if everything else [c for c in doc.get("collections", []) if c not in collections]
        self._set_overflow(keep + overflowed)

    def add_open_differences(
        self, diffs: list[dict[str, Any]], overflowed: list[str] | None = None
    ) -> None:
        """Differences as {c, k, kind} (k a stored _id); an open one found again stays once."""
        for c in {d["c"] for d in diffs}:
            self.clear_open_differences(c, [d["k"] for d in diffs if d["c"] == c])
        if diffs:
            docs = [{**d, "at": now()} for d in diffs]
            with_retry(lambda: self.open_diffs.insert_many(docs, ordered=False))
        if overflowed:
            doc = self.meta.find_one({"_id": "open_overflow"}) or {}
            self._set_overflow(sorted({*doc.get("collections", []), *overflowed}))

    def _set_overflow(self, collections: list[str]) -> None:
        with_retry(
            lambda: self.meta.replace_one(
                {"_id": "open_overflow"},
                {"_id": "open_overflow", "collections": collections, "at": now()},
                upsert=True,
            )
        )

    def clear_open_differences(self, collection: str, keys: list[Any]) -> None:
        if keys:
            q = {"c": collection, "k": {"$in": keys}}
            with_retry(lambda: self.open_diffs.delete_many(q))

    def open_difference_keys(self, collection: str) -> list[Any]:
        return [d["k"] for d in self.open_diffs.find({"c": collection}, {"k": 1})]

    def open_differences(
        self, collections: list[str] | None = None
    ) -> tuple[dict[str, int], list[str]]:
        """({collection: open differences}, collections with more than could be listed), of
        these collections (default: all)."""
        q: dict[str, Any] = {} if collections is None else {"c": {"$in": collections}}
        counts: dict[str, int] = {}
        for d in self.open_diffs.find(q, {"c": 1}):
            counts[d["c"]] = counts.get(d["c"], 0) + 1
        doc = self.meta.find_one({"_id": "open_overflow"}) or {}
        over = [c for c in doc.get("collections", []) if collections is None or c in collections]
        return counts, over

    def verify_in_progress(self) -> dict[str, Any] | None:
        """The full verification running or interrupted (its checkpoint), if any."""
        doc = self.meta_doc("verify_progress")
        return doc if doc and doc.get("status") == "running" else None

    def last_write_pause(self) -> dict[str, Any] | None:
        """The audit entry of the last phase change that held application writes."""
        return self.audit_log.find_one(
            {"write_pause_ms": {"$ne": None}}, {"_id": 0}, sort=[("at", -1)]
        )

    def last_verify_run(self) -> VerifyRun | None:
        return cast("VerifyRun | None", self.verify_runs.find_one({}, sort=[("finished", -1)]))

    def last_covering_run(self, collection: str) -> VerifyRun | None:
        """The last run that checked every document of `collection` touched up to its start:
        a full run or a `--changed` run over it (not a sample, not a `--since` window)."""
        return cast(
            "VerifyRun | None",
            self.verify_runs.find_one(
                {
                    f"collections.{collection}": {"$exists": True},
                    "$or": [
                        {"covers": True},
                        {"covers": {"$exists": False}, "mode": {"$in": ["full", "changed"]}},
                    ],
                },
                sort=[("finished", -1)],
            ),
        )

    def unsettled_sdk_failures(self) -> int:
        """SDK writes to the second store that failed (recorded for `verify --repair`) since
        the last clean full verification, which found both stores equal after them."""
        clean = self.verify_runs.find_one(
            {"mode": "full", "ok": True, "complete": True}, {"started": 1}, sort=[("finished", -1)]
        )
        q: dict[str, Any] = {"repaired": {"$ne": True}}
        if clean is not None:
            q["at"] = {"$gt": clean["started"]}
        return self.sdk_failures.count_documents(q)

    # -- dead letters ------------------------------------------------------------------------
    def dead_letter(
        self,
        *,
        source: str,
        collection: str,
        key: Any,
        reason: str,
        payload: Any = None,
        position: Any = None,
    ) -> None:
        doc = {
            "source": source,
            "collection": collection,
            "key": storable(key),
            "reason": reason,
            "payload": storable(payload),
            "position": storable(position),
            "at": now(),
        }
        with_retry(lambda: self.dead_letters.insert_one(doc))

    def dead_letter_count(self) -> int:
        return self.dead_letters.count_documents({})

    def newest_dead_letter(self) -> DeadLetter | None:
        doc = self.dead_letters.find_one({}, {"payload": 0}, sort=[("at", -1)])
        return cast("DeadLetter | None", doc)

    def reverse_dead_letters(self, since: datetime) -> list[DeadLetter]:
        """MongoDB changes reverse sync could not write to MySQL since `since` and that no
        clean full verification has settled since (MySQL lacks them)."""
        q = {"source": "reverse", "at": {"$gte": since}, "settled": {"$ne": True}}
        found = self.dead_letters.find(q, {"payload": 0}).sort("at", 1).limit(5)
        return [cast("DeadLetter", d) for d in found]

    def settle_reverse_dead_letters(self, before: datetime) -> None:
        """A clean full verification that started at `before` found MySQL equal to MongoDB:
        the reverse dead letters logged before it need nothing more."""
        with_retry(
            lambda: self.dead_letters.update_many(
                {"source": "reverse", "at": {"$lt": before}, "settled": {"$ne": True}},
                {"$set": {"settled": True, "settled_at": now()}},
            )
        )


def storable(v: Any) -> Any:
    """Row and event values as BSON can store them, for dead letters: what BSON has no type
    for (Decimal, date, time, integers beyond int64, sets) becomes its text."""
    from datetime import date, timedelta
    from decimal import Decimal

    if isinstance(v, dict):
        return {str(k): storable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [storable(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, datetime):
        return v
    if isinstance(v, int):
        return v if -(2**63) <= v < 2**63 else str(v)
    if isinstance(v, Decimal | date | timedelta):
        return str(v)
    return v


def encode_key(key: Any) -> list[Any]:
    """A primary key (query parameters) as BSON can store it: integers beyond int64 (BIGINT
    UNSIGNED) become Decimal128, which no other key value is, so `decode_key` undoes it."""
    from bson.decimal128 import Decimal128

    return [
        Decimal128(str(v)) if isinstance(v, int) and not -(2**63) <= v < 2**63 else v for v in key
    ]


def decode_key(stored: Any) -> tuple[Any, ...]:
    from bson.decimal128 import Decimal128

    return tuple(int(v.to_decimal()) if isinstance(v, Decimal128) else v for v in stored)


def _live_members(copy: dict[str, Any], t: datetime) -> list[str]:
    """Members of a copy whose lease holds and that are not known-dead local processes."""
    members = copy.get("members")
    if members is None:  # a lease written before members existed
        members = [{"owner": copy.get("owner", ""), "expires": copy.get("expires", t)}]
    return [
        str(m["owner"])
        for m in members
        if m.get("expires", t) >= t and not dead_local(str(m.get("owner", "")))
    ]


def process_owner() -> str:
    """host:pid:nonce: a copy lease left by a dead local process can be taken over, and two
    copies by one process (sync, tests) never share an acknowledgement."""
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def dead_local(owner: str) -> bool:
    """True only when `owner` (host:pid:nonce) is a process of this host that is gone."""
    host, _, rest = owner.partition(":")
    pid = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
