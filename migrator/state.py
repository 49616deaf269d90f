"""The durable state store, kept in the target MongoDB (`state.database`, default `_migrator`).

Any machine can resume from it. Collections:
- `backfill`: one document per collection: status, the binlog position recorded before reading,
  chunk counts, timings;
- `chunks`: the chunk plan, one document per chunk, marked done after MongoDB acknowledged it;
- `dead_letters`: rows or events that could not be applied, with the reason and the position;
- `pending`: CDC changes of embedded children waiting for their parent document;
- `meta`: the backfill position, the CDC checkpoint and the CDC status (lag, counters).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

from pymongo import ASCENDING, MongoClient
from pymongo.database import Database

from .sink.mongo import with_retry


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

    def ensure_indexes(self) -> None:
        with_retry(
            lambda: self.chunks.create_index([("collection", ASCENDING), ("seq", ASCENDING)])
        )

    # -- backfill position and status --------------------------------------------------------
    def backfill_position(self) -> dict[str, Any] | None:
        doc = self.meta.find_one({"_id": "backfill_position"})
        return doc["position"] if doc else None

    def record_backfill_position(self, position: dict[str, Any]) -> None:
        with_retry(
            lambda: self.meta.replace_one(
                {"_id": "backfill_position"},
                {"_id": "backfill_position", "position": position, "recorded_at": now()},
                upsert=True,
            )
        )

    def collection_state(self, name: str) -> dict[str, Any] | None:
        return self.backfill.find_one({"_id": name})

    def update_collection(self, name: str, **fields: Any) -> None:
        with_retry(lambda: self.backfill.update_one({"_id": name}, {"$set": fields}, upsert=True))

    # -- chunks ------------------------------------------------------------------------------
    def save_chunk_plan(self, collection: str, bounds: list[tuple[Any, Any]]) -> None:
        docs = [
            {
                "_id": f"{collection}/{i:09d}",
                "collection": collection,
                "seq": i,
                "lo": list(lo) if lo is not None else None,
                "hi": list(hi) if hi is not None else None,
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

    def pending_chunks(self, collection: str) -> list[dict[str, Any]]:
        return list(self.chunks.find({"collection": collection, "done": False}).sort("seq", 1))

    def chunk_counts(self, collection: str) -> tuple[int, int]:
        total = self.chunks.count_documents({"collection": collection})
        done = self.chunks.count_documents({"collection": collection, "done": True})
        return total, done

    def mark_chunk_done(self, chunk_id: str, rows: int, seconds: float) -> None:
        with_retry(
            lambda: self.chunks.update_one(
                {"_id": chunk_id},
                {"$set": {"done": True, "rows": rows, "seconds": seconds, "done_at": now()}},
            )
        )

    def done_rows(self, collection: str) -> int:
        done = self.chunks.find({"collection": collection, "done": True}, {"rows": 1})
        return sum(int(c.get("rows", 0)) for c in done)

    def reset_backfill(self, collections: list[str] | None = None) -> None:
        """Forget checkpoints: of some collections, or of everything including the position."""
        if collections:
            self.chunks.delete_many({"collection": {"$in": collections}})
            self.backfill.delete_many({"_id": {"$in": collections}})
            return
        self.chunks.delete_many({})
        self.backfill.delete_many({})
        self.meta.delete_one({"_id": "backfill_position"})

    # -- CDC checkpoint and lag ---------------------------------------------------------------
    def cdc_checkpoint(self) -> dict[str, Any] | None:
        doc = self.meta.find_one({"_id": "cdc_checkpoint"})
        return doc["position"] if doc else None

    def save_cdc_checkpoint(self, position: dict[str, Any], **info: Any) -> None:
        doc = {"_id": "cdc_checkpoint", "position": position, "saved_at": now(), **info}
        with_retry(lambda: self.meta.replace_one({"_id": "cdc_checkpoint"}, doc, upsert=True))

    def save_cdc_status(self, **status: Any) -> None:
        doc = {"_id": "cdc_status", "updated_at": now(), **status}
        with_retry(lambda: self.meta.replace_one({"_id": "cdc_status"}, doc, upsert=True))

    def cdc_status(self) -> dict[str, Any] | None:
        return self.meta.find_one({"_id": "cdc_status"})

    # -- keys CDC touched ({_id: {c: collection, k: doc _id}, at}), verification runs --------
    def touch(self, keys: list[tuple[str, Any, Any]]) -> None:
        """Record documents CDC changed, (collection, _id, commit time), for verify --changed."""
        from pymongo import UpdateOne

        # `at` is when the change was applied here: the binlog's commit time has 1 s resolution
        applied = now()
        ops = [
            UpdateOne(
                {"_id": {"c": c, "k": k}}, {"$set": {"at": applied, "commit_time": at}}, upsert=True
            )
            for c, k, at in keys
        ]
        if ops:
            with_retry(partial(self.touched.bulk_write, ops, ordered=False))

    def record_verify_run(self, summary: dict[str, Any]) -> None:
        with_retry(lambda: self.verify_runs.insert_one({**summary, "finished": now()}))

    def last_verify_run(self) -> dict[str, Any] | None:
        return self.verify_runs.find_one({}, sort=[("finished", -1)])

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
            "key": key,
            "reason": reason,
            "payload": payload,
            "position": position,
            "at": now(),
        }
        with_retry(lambda: self.dead_letters.insert_one(doc))

    def dead_letter_count(self) -> int:
        return self.dead_letters.count_documents({})
