"""`verify --shared`: one full verification shared by processes on several machines.

The first process plans the run in the state store (`verify_chunks`: every collection's
chunks, then one task per collection that looks for extra documents); every process, the
first included, claims tasks with a lease (the backfill's machinery, `StateStore.claim_leased`),
checks them and stores each task's result in its document. A process that dies leaves its
tasks leased: they are claimed again when the lease expires (at once when it was a process of
the same host). A process with nothing left to claim waits for the tasks others hold, so each
process ends with the whole run's result; the run is recorded once, by whichever process
closes it. A run whose processes all died is taken up by the next `verify --shared` with the
same options (`--restart` plans a new one).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError

from migrator.errors import MigratorError
from migrator.model.transform import CollectionPlan
from migrator.sink.mongo import with_retry
from migrator.source.reader import ChunkReader, chunk_bounds
from migrator.state.store import decode_key, encode_key, now, process_owner, storable
from migrator.ticker import Ticker
from migrator.verify.checker import Verifier
from migrator.verify.results import (
    CollectionResult,
    Difference,
    VerifyResult,
    diff_doc,
    diff_from_doc,
    record_run,
    settle_full_run,
    track_open_differences,
)

PLAN = "verify_shared"  # its document in <state>.meta
PLAN_LEASE_SECONDS = 30.0
KINDS = ("missing", "extra", "different", "unconvertible")


def run_params(plans: list[CollectionPlan], *, repair: bool) -> dict[str, Any]:
    """The options every process of one shared run must share (a repair writes: a run started
    read-only is never joined by one that repairs, nor the other way round)."""
    return {"collections": [p.name for p in plans], "repair": repair}


class _PlanLost(Exception):
    """Another process took this planner's plan over (it stalled past its lease)."""


class SharedRun:
    """This process's part in a shared verification."""

    def __init__(
        self, v: Verifier, params: dict[str, Any], *, poll: float = 1.0, op_start: Any = None
    ) -> None:
        self.v, self.params, self.poll = v, params, poll
        self.state = v.state
        self.owner = process_owner()
        self.run = ""
        self.started = now()
        self.tasks = 0  # the plan's task count: a result read from fewer is refused
        self.op_start = op_start  # repair after the switch: MongoDB's time at the plan
        self._ticker = Ticker(self._renew, self.state.CHUNK_LEASE_SECONDS / 3, "verify-leases")

    # -- the plan ----------------------------------------------------------------------------
    def join(self, plans: list[CollectionPlan], *, chunk_size: int, restart: bool) -> bool:
        """Join the running plan with these options, or make one; True if this one made it."""
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            cur = self.state.meta_doc(PLAN)
            t = now()
            if cur is not None and cur.get("status") == "running" and not restart:
                if cur.get("params") != self.params:
                    raise MigratorError(
                        "another shared verification with other options is running "
                        f"({_describe(cur.get('params'))}; this one: {_describe(self.params)})",
                        hint="start this one with the same options to help it, or pass "
                        "--restart to replace it",
                    )
                self.run, self.started = cur["run"], cur["started"]
                self.tasks, self.op_start = cur.get("tasks", 0), cur.get("op_start")
                if cur.get("planned") and self._left() == 0:
                    # finished, but its last process died before closing it: close it (its
                    # result is recorded) and verify afresh
                    self.finish(list(self.params.get("collections", [])), complete=False)
                    continue
                if cur.get("planned"):
                    return False
                if cur.get("planner_expires", t) >= t:
                    time.sleep(self.poll)  # its planner is at work
                    continue
                # the planner died while planning: plan it again, under the same run id
                if self._take(cur, {"run": cur["run"], "planned": False}):
                    try:
                        self._plan(plans, chunk_size, keep=None)
                    except _PlanLost:
                        continue  # taken over in turn: join whatever is there
                    return True
                continue
            restart = False  # a run replaced once; later turns join whatever is there
            fresh = {
                "_id": PLAN,
                "run": uuid.uuid4().hex[:12],
                "status": "running",
                "params": self.params,
                "started": t,
                "planned": False,
                "planner": self.owner,
                "planner_expires": t + _lease(),
                "op_start": self.op_start,
            }
            try:
                if cur is None:
                    self.state.insert_meta_doc(PLAN, fresh)
                elif not self.state.replace_meta_doc(
                    PLAN, {"run": cur.get("run"), "status": cur.get("status")}, fresh
                ):
                    continue
            except DuplicateKeyError:
                continue
            self.run, self.started = fresh["run"], t
            try:
                # the replaced run's tasks stay until the next plan: its processes may still
                # be reading their result
                self._plan(plans, chunk_size, keep=(cur or {}).get("run"))
            except _PlanLost:
                continue
            return True
        raise MigratorError("the shared verification's plan was not made within an hour")

    def _take(self, cur: dict[str, Any], match: dict[str, Any]) -> bool:
        return self.state.update_meta_doc(
            PLAN,
            {"$set": {"planner": self.owner, "planner_expires": now() + _lease()}},
            match={"planner_expires": cur.get("planner_expires"), **match},
        )

    def _plan(self, plans: list[CollectionPlan], chunk_size: int, keep: str | None) -> None:
        tasks = self.state.verify_chunks
        gone = {"run": {"$nin": [self.run, keep]}}  # older runs' tasks
        with_retry(lambda: tasks.delete_many(gone))
        with_retry(lambda: tasks.delete_many({"run": self.run}))  # a half plan taken over
        with_retry(lambda: tasks.create_index([("run", ASCENDING), ("seq", ASCENDING)]))
        # the planner is alive while it plans: a big table's boundaries take a while
        ticker = Ticker(self._keep_plan, PLAN_LEASE_SECONDS / 3, "verify-plan").start()
        try:
            seq = 0
            for plan in plans:
                reader = ChunkReader(self.v.conn, plan)
                batch: list[dict[str, Any]] = []
                for lo, hi in chunk_bounds(list(reader.boundaries(chunk_size))):
                    batch.append(self._task(plan.name, seq, lo, hi))
                    seq += 1
                    if len(batch) >= 500:
                        self._insert(batch)
                batch.append(self._task(plan.name, seq, None, None, extras=True))
                seq += 1
                self._insert(batch)
        finally:
            ticker.stop()
        if not self.state.update_meta_doc(
            PLAN,
            {"$set": {"planned": True, "tasks": seq}},
            match={"run": self.run, "planner": self.owner},
        ):
            raise _PlanLost
        self.tasks = seq

    def _task(
        self, name: str, seq: int, lo: Any, hi: Any, *, extras: bool = False
    ) -> dict[str, Any]:
        return {
            "_id": f"{self.run}/{seq:09d}",
            "run": self.run,
            "seq": seq,
            "collection": name,
            "extras": extras,  # the task that looks for extra documents
            "lo": encode_key(lo) if lo is not None else None,
            "hi": encode_key(hi) if hi is not None else None,
            "done": False,
        }

    def _insert(self, batch: list[dict[str, Any]]) -> None:
        docs = list(batch)
        batch.clear()
        if not self._renew_plan():
            raise _PlanLost
        try:
            with_retry(lambda: self.state.verify_chunks.insert_many(docs, ordered=False))
        except BulkWriteError as exc:  # the process that took the plan over inserted them
            raise _PlanLost from exc

    def _keep_plan(self) -> None:
        self._renew_plan()

    def _renew_plan(self) -> bool:
        return self.state.update_meta_doc(
            PLAN,
            {"$set": {"planner_expires": now() + _lease()}},
            match={"run": self.run, "planner": self.owner},
        )

    # -- the work ----------------------------------------------------------------------------
    def work(self, *, workers: int, repair: bool) -> None:
        """Claim and check tasks until none is left (waiting for those others hold)."""
        self._ticker.start()
        try:
            with self.v._pool(workers) as pool:
                while True:
                    held = [t for t in (self._claim() for _ in range(workers)) if t]
                    if not held:
                        if self._left() == 0:
                            return
                        time.sleep(self.poll)  # others hold them: reclaimed if they die
                        continue
                    self._check(held, pool, repair)
        finally:
            self._ticker.stop()
            with contextlib.suppress(Exception):  # MongoDB away: the leases expire instead
                self.state.release_leased(self.state.verify_chunks, self.owner)

    def _claim(self) -> dict[str, Any] | None:
        if (self.state.meta_doc(PLAN, {"run": 1}) or {}).get("run") != self.run:
            raise MigratorError(
                "the shared verification this process was part of was replaced (--restart) "
                "or removed: its result would be partial"
            )
        return with_retry(
            lambda: self.state.claim_leased(
                self.state.verify_chunks, {"run": self.run}, self.owner, sort=[("seq", 1)]
            )
        )

    def _left(self) -> int:
        return with_retry(
            lambda: self.state.verify_chunks.count_documents({"run": self.run, "done": False})
        )

    def _check(self, held: list[dict[str, Any]], pool: Any, repair: bool) -> None:
        chunks = [t for t in held if not t["extras"]]
        lo = [decode_key(t["lo"]) if t["lo"] is not None else None for t in chunks]
        hi = [decode_key(t["hi"]) if t["hi"] is not None else None for t in chunks]
        names = [t["collection"] for t in chunks]
        outcomes = list(self.v.map_chunks(pool, names, lo, hi))
        for t in held:
            plan = self.v.transform.collection(t["collection"])
            res = CollectionResult(plan.name)
            if t["extras"]:
                diffs = self.v.extras(plan, res, sample_pct=100, rnd=random.Random())
            else:
                n, diffs, rechecked = outcomes.pop(0)
                res.checked, res.chunks, res.rechecked = n, 1, rechecked
                self.v.progress.advance(plan.name, n)
            if repair and diffs:
                if not self._may_repair(t, diffs):
                    continue  # taken over while this one stalled: its new holder repairs it
                diffs = self.v.repair(plan, diffs, res)
            self._done(t, res, diffs)

    def _may_repair(self, task: dict[str, Any], diffs: list[Difference]) -> bool:
        """Whether this process still holds the task (its lease then renewed), the ids it is
        about to repair noted on the task first: if it stalls mid-repair and the task is
        taken over, the new holder finds them equal, and the run still counts them."""
        res = self.state.verify_chunks.update_one(
            {"_id": task["_id"], "worker": self.owner, "done": False},
            {
                "$set": {"lease": now() + _lease()},
                "$push": {"repairs": {"by": self.owner, "ids": [storable(d.id) for d in diffs]}},
            },
        )
        return res.matched_count == 1

    def _done(self, task: dict[str, Any], res: CollectionResult, diffs: list[Difference]) -> None:
        fields = {
            "done": True,
            "checked": res.checked,
            "chunks": res.chunks,
            "rechecked": res.rechecked,
            "repaired": res.repaired,
            "diffs": [diff_doc(d) for d in diffs[: self.v.limit]],
            **{kind: sum(d.kind == kind for d in diffs) for kind in KINDS},
            "behind": sum(d.cdc_behind for d in diffs),
            "by": self.owner,
            "done_at": now(),
        }
        # only the holder records it: a process that lost its lease (a stall) and finished
        # anyway leaves the result to the one that took the task over
        with_retry(
            lambda: self.state.verify_chunks.update_one(
                {"_id": task["_id"], "worker": self.owner, "done": False}, {"$set": fields}
            )
        )

    def _renew(self) -> None:
        self.state.renew_leased(self.state.verify_chunks, self.owner)

    # -- the result --------------------------------------------------------------------------
    def finish(self, names: list[str], complete: bool) -> VerifyResult:
        """The whole run's result from every task's; the process that closes the run records
        it (and, clean, forgets the documents touched before it started)."""
        out = VerifyResult(mode="full", started=self.started, complete=complete)
        by_name = {n: CollectionResult(n) for n in names}
        tasks = list(self.state.verify_chunks.find({"run": self.run}).sort("seq", 1))
        if len(tasks) < self.tasks or not all(t.get("done") for t in tasks):
            raise MigratorError(
                f"the shared verification {self.run} was replaced before this process read its "
                "result (its tasks are gone): the result is not known",
                hint="run `verify --shared` again",
            )
        for t in tasks:
            res = by_name[t["collection"]]
            stalled = _repaired_by_others(t)  # repaired by a process that then lost the task
            res.repaired += stalled
            out.repaired += stalled
            res.checked += t.get("checked", 0)
            res.chunks += t.get("chunks", 0)
            res.rechecked += t.get("rechecked", 0)
            res.repaired += t.get("repaired", 0)
            out.repaired += t.get("repaired", 0)
            for kind in KINDS:  # counted in full: only the listed differences are capped
                setattr(res, kind, getattr(res, kind) + t.get(kind, 0))
            res.behind += t.get("behind", 0)
            for d in t.get("diffs", []):
                if len(out.differences) < self.v.limit:
                    out.differences.append(diff_from_doc(d))
        out.collections = list(by_name.values())
        out.seconds = (now() - self.started).total_seconds()
        closed = self.state.update_meta_doc(
            PLAN,
            {"$set": {"status": "done", "finished": now(), "ok": out.ok}},
            match={"run": self.run, "status": "running"},
        )
        if closed:  # recorded once, by the process that closes the run
            repaired_from = self.op_start if self.params.get("repair") else None
            settle_full_run(self.state, out, names, repaired_from)
            listed: dict[str, tuple[list[Difference], list[Any]]] = {
                n: ([d for d in out.differences if d.collection == n], []) for n in names
            }
            track_open_differences(self.state, out, listed, self.v.limit)
            record_run(self.state, out, covers=True)
        return out


def _repaired_by_others(task: dict[str, Any]) -> int:
    """Documents a process repaired before it lost the task, that its final holder then found
    equal (so neither reported nor counted by it)."""

    def key(v: Any) -> str:
        return json.dumps(v, default=str, sort_keys=True)

    holder = task.get("by")
    still = {key(d["id"]) for d in task.get("diffs", [])}
    own = {key(i) for r in task.get("repairs", []) if r["by"] == holder for i in r["ids"]}
    others = {key(i) for r in task.get("repairs", []) if r["by"] != holder for i in r["ids"]}
    return len(others - own - still)


def _lease() -> timedelta:
    return timedelta(seconds=PLAN_LEASE_SECONDS)


def _describe(params: Any) -> str:
    if not isinstance(params, dict):
        return "unknown options"
    return ", ".join(f"{k}={v}" for k, v in params.items())
