"""`migrator state dump`: a migration's whole state in one document, as Ghostferry's state dump
does: whose state it is, the phase, the copy and its chunks, CDC's checkpoint and status,
reverse sync, verification (runs, the one in progress, open differences), live writers, dead
letters and the audit. Read-only: it reads every state collection and writes nothing."""

from __future__ import annotations

from typing import Any

from migrator.state.store import StateStore, now

META = (
    "identity",
    "copy",
    "backfill_position",
    "cdc_checkpoint",
    "cdc_status",
    "cdc_rollback_point",
    "switch_schema",
    "reverse_checkpoint",
    "verify_progress",
    "verify_shared",
    "open_overflow",
    "target_deletes",
)


def dump(state: StateStore, *, newest: int = 10) -> dict[str, Any]:
    """Everything the state database holds about its migration; lists cut to the `newest`."""
    found = state.meta.find({"_id": {"$in": list(META)}})
    meta = {d["_id"]: {k: v for k, v in d.items() if k != "_id"} for d in found}
    control = state.control.find_one({"_id": "control"})
    return {
        "database": state.db.name,
        "read_at": now(),
        "identity": meta.get("identity"),
        "control": _without_id(control) if control else None,
        "copy": meta.get("copy"),
        "backfill": _backfill(state, meta),
        "cdc": {
            "checkpoint": meta.get("cdc_checkpoint"),
            "status": meta.get("cdc_status"),
            "alive": state.cdc_alive(),
            "rollback_point": meta.get("cdc_rollback_point"),
            "switch_schema": meta.get("switch_schema"),
            "pending_children": state.pending.count_documents({}),
            "touched": state.touched.estimated_document_count(),
            "sweeps": [_without_id(d) for d in state.sweeps.find().limit(newest)],
        },
        "reverse_sync": meta.get("reverse_checkpoint"),
        "verification": _verification(state, meta, newest),
        "writers": [_without_id(d) for d in state.writers.find()],
        "dead_letters": {
            "count": state.dead_letter_count(),
            "newest": _newest(state.dead_letters, "at", newest),
        },
        "sdk_failures": {
            "count": state.sdk_failures.count_documents({}),
            "newest": _newest(state.sdk_failures, "at", newest),
        },
        "audit": _newest(state.audit_log, "at", newest),
    }


def _backfill(state: StateStore, meta: dict[str, Any]) -> dict[str, Any]:
    collections = {}
    for doc in state.backfill.find():
        total, done = state.chunk_counts(doc["_id"])
        collections[doc["_id"]] = {
            **_without_id(doc),
            "chunks_done": done,
            "chunks_total": total,
            "rows_done": state.done_rows(doc["_id"]),
        }
    return {
        "position": (meta.get("backfill_position") or {}).get("position"),
        "collections": collections,
        "deletes_noted": (meta.get("target_deletes") or {}).get("c", {}),
    }


def _verification(state: StateStore, meta: dict[str, Any], newest: int) -> dict[str, Any]:
    counts, overflowed = state.open_differences()
    runs = []
    for r in state.verify_runs.find({}, {"differences": 0}).sort("finished", -1).limit(newest):
        runs.append(_without_id(r))
    return {
        "runs": runs,
        "in_progress": meta.get("verify_progress"),
        "shared": meta.get("verify_shared"),
        "open_differences": counts,
        "overflowed": overflowed,
    }


def _newest(coll: Any, field: str, n: int) -> list[dict[str, Any]]:
    return [_without_id(d) for d in coll.find().sort(field, -1).limit(n)]


def _without_id(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_id" or not _is_object_id(v)}


def _is_object_id(v: Any) -> bool:
    return type(v).__name__ == "ObjectId"
