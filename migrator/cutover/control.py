"""The control document (`<state db>.control`, _id "control") that applications read, changed
only by compare-and-set on its version, and the lease that keeps two operators apart.

Fields (the protocol any language can follow, see the README):
  phase        one of PHASES
  version      incremented by every change; writers compare-and-set on it
  freeze       true while writes must pause (the write switch); apps hold writes, bounded
  freeze_id, freeze_at, freeze_timeout
               which freeze; writers acknowledge it by id and treat it as over after
               freeze_timeout seconds of their own clock (cutover/fence.py)
  switch       {id, stage, holder, started_at} while a fenced switch runs
  interrupted_switch
               what the last recovery found of a switch whose process died
  reads_from   "mysql" | "mongo";  writes_to: ["mysql"], ["mysql","mongo"], ["mongo","mysql"]...
  source_of_truth, updated_at, updated_by, reason
  lease        {holder, expires, since} while an operation is under way; the holder renews it
               (cutover/machine.py), so it dies with the process within `lease_seconds`
"""

from __future__ import annotations

import os
import re
import socket
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection

from migrator.errors import CheckFailed
from migrator.model.phases import ROUTING
from migrator.sink.mongo import with_retry
from migrator.state.store import dead_local, now, process_owner

CONTROL_ID = "control"


def default_actor() -> str:
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"
    return f"{user}@{socket.gethostname()}"


class LeaseHeld(CheckFailed):
    """Someone else holds the control lease."""


def routing_fields(phase: str) -> dict[str, Any]:
    truth, reads, writes = ROUTING[phase]
    return {"source_of_truth": truth, "reads_from": reads, "writes_to": writes.split(",")}


class Control:
    def __init__(self, collection: Collection[Any]) -> None:
        self.coll = collection

    def get(self) -> dict[str, Any]:
        doc = self.coll.find_one({"_id": CONTROL_ID})
        if doc is None:
            doc = {
                "_id": CONTROL_ID,
                "phase": "planned",
                "version": 0,
                "freeze": False,
                "updated_at": now(),
                "updated_by": "migrator",
                "reason": "initial",
                "lease": None,
                **routing_fields("planned"),
            }
            try:
                with_retry(lambda: self.coll.insert_one(doc))
            except Exception:  # another process created it first: read theirs
                found = self.coll.find_one({"_id": CONTROL_ID})
                if found is not None:
                    return found
                raise
        return doc

    def compare_and_set(
        self, version: int, changes: dict[str, Any], holder: str | None = None
    ) -> dict[str, Any]:
        """Apply `changes` if the document is still at `version` (and, given a holder, the
        lease is still theirs); else say who changed it."""
        flt: dict[str, Any] = {"_id": CONTROL_ID, "version": version}
        if holder is not None:
            flt["lease.holder"] = holder
        doc = self.coll.find_one_and_update(
            flt,
            {"$set": changes, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            cur = self.get()
            if holder is not None and (cur.get("lease") or {}).get("holder") != holder:
                raise LeaseHeld(
                    "the cutover lease was lost (it expired or was taken over): nothing changed",
                    hint="look at `migrator status` and try again",
                )
            raise CheckFailed(
                f"the control document changed under us (version {version} -> {cur['version']}, "
                f"phase {cur['phase']!r} by {cur.get('updated_by')} at {cur.get('updated_at')})",
                hint="look at `migrator status` and try again",
            )
        return doc

    def acquire(self, holder: str, seconds: float = 15) -> dict[str, Any]:
        """Take the lease (or fail naming whoever holds it). A lease whose holder is a dead
        process on this host is taken over at once."""
        t = now()
        self.get()
        free: list[dict[str, Any]] = [
            {"lease": None},
            {"lease.expires": {"$lt": t}},
            {"lease.holder": holder},
        ]
        cur = self.coll.find_one({"_id": CONTROL_ID}, {"lease": 1}) or {}
        other = (cur.get("lease") or {}).get("holder")
        if other and holder_is_dead(other):
            free.append({"lease.holder": other})
        doc = self.coll.find_one_and_update(
            {"_id": CONTROL_ID, "$or": free},
            {
                "$set": {
                    "lease": {
                        "holder": holder,
                        "expires": t + timedelta(seconds=seconds),
                        "since": t,
                    }
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            cur = self.get()
            lease = cur.get("lease") or {}
            raise LeaseHeld(
                f"another operation holds the cutover lease: {lease.get('holder')} since "
                f"{_fmt(lease.get('since'))}, until {_fmt(lease.get('expires'))}",
                hint="wait for it to finish, or for the lease to expire",
            )
        return doc

    def renew(self, holder: str, seconds: float) -> bool:
        res = self.coll.update_one(
            {"_id": CONTROL_ID, "lease.holder": holder},
            {"$set": {"lease.expires": now() + timedelta(seconds=seconds)}},
        )
        return res.matched_count == 1

    def release(self, holder: str) -> None:
        with_retry(
            lambda: self.coll.update_one(
                {"_id": CONTROL_ID, "lease.holder": holder}, {"$set": {"lease": None}}
            )
        )


def lease_holder(actor: str) -> str:
    """A holder name unique to this process: the actor, then (host:pid:nonce)."""
    return f"{actor} ({process_owner()})"


def holder_is_dead(holder: str) -> bool:
    """True only when the holder is a process of this host that no longer exists."""
    m = re.search(r"\(([^()]+)\)$", holder)
    return m is not None and dead_local(m.group(1))


def _fmt(v: Any) -> str:
    return v.isoformat(timespec="seconds") + "Z" if isinstance(v, datetime) else str(v)
