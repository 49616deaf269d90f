"""Backfill: plan chunks by primary key, copy them with N parallel workers, checkpoint each.

The binlog position is recorded before the first row is read, so CDC replaying from there
converges (full row images, idempotent writes). A chunk is marked done only after MongoDB
acknowledged its documents; a rerun after a crash redoes only unfinished chunks.

Workers are processes: the Transform and BSON encoding are CPU-bound Python, and threads
would share one core (bench/backfill.py measures both).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from pymongo.errors import CollectionInvalid

from migrator.backfill.worker import Chunk, ChunkResult, ChunkWorker, worker_main
from migrator.errors import CheckFailed, ConfigError, MigratorError
from migrator.model.schema import Schema
from migrator.model.settings import Mapping
from migrator.model.transform import CollectionPlan
from migrator.progress import NullProgress, Progress
from migrator.runtime import Migration, opened
from migrator.sink.mongo import ensure_indexes, with_retry
from migrator.source.position import current_position
from migrator.source.reader import ChunkReader, chunk_bounds
from migrator.source.throttle import LoadMonitor
from migrator.state.records import ChunkRecord
from migrator.state.store import StateStore, decode_key, now, process_owner
from migrator.ticker import Ticker

log = logging.getLogger("migrator.backfill")


@dataclass
class CollectionSummary:
    name: str
    table: str
    rows: int = 0
    documents: int = 0
    bytes: int = 0
    chunks_total: int = 0
    chunks_skipped: int = 0
    chunks_run: int = 0
    dead_letters: int = 0


@dataclass
class BackfillSummary:
    dry_run: bool
    workers: int
    chunk_size: int
    seconds: float = 0.0
    rows: int = 0
    documents: int = 0
    rows_per_sec: float = 0.0
    dead_letters: int = 0
    paused_seconds: float = 0.0
    throttled_seconds: float = 0.0
    position: dict[str, Any] | None = None
    collections: list[CollectionSummary] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["position"] and d["position"].get("at"):
            d["position"]["at"] = str(d["position"]["at"])
        return d


def backfill(
    migration: Migration | Mapping,
    *,
    workers: int | None = None,
    chunk_size: int | None = None,
    max_rows_per_sec: float = 0.0,
    restart: bool = False,
    dry_run: bool = False,
    collections: list[str] | None = None,
    progress: Progress | None = None,
) -> BackfillSummary:
    """Copy every mapped collection; resumable; returns a summary (see BackfillSummary)."""
    with opened(migration, claim_state=not dry_run) as mig:
        return _start(
            mig,
            workers=workers or mig.settings.backfill.workers,
            chunk_size=chunk_size or mig.settings.backfill.chunk_size,
            max_rows_per_sec=max_rows_per_sec,
            restart=restart,
            dry_run=dry_run,
            collections=collections,
            progress=progress or NullProgress(),
        )


def _start(
    mig: Migration,
    *,
    workers: int,
    chunk_size: int,
    max_rows_per_sec: float,
    restart: bool,
    dry_run: bool,
    collections: list[str] | None,
    progress: Progress,
) -> BackfillSummary:
    """Check the phase, take the copy fence, then copy (see _backfill)."""
    plans = [p for p in mig.transform.collections if not collections or p.name in collections]
    summary = BackfillSummary(dry_run=dry_run, workers=workers, chunk_size=chunk_size)
    log.info(
        "backfill started",
        extra={
            "collections": [p.name for p in plans],
            "workers": workers,
            "chunk_size": chunk_size,
            "max_rows_per_sec": max_rows_per_sec,
            "restart": restart,
            "dry_run": dry_run,
        },
    )
    t_start = time.monotonic()
    meta_conn = mig.connect_source()
    state: StateStore | None = None
    fence: CopyFence | None = None
    try:
        if not dry_run:
            state = mig.state
            phase = _phase(state)
            if restart and phase in _PAST_SYNC:
                raise ConfigError(
                    f"backfill --restart is refused: the migration is in phase {phase!r}, "
                    "past sync, and a restart empties the collections the application reads "
                    "(and, from write_mongo on, the only up-to-date copy of its writes)",
                    hint="roll back first (`migrator rollback -m FILE --to sync`), or repair "
                    "single documents with `migrator verify --repair`",
                )
            # CDC must not write while this copies (see StateStore.begin_copy): take the
            # fence and wait until a running CDC has paused before anything is reset or read
            fence = CopyFence(state, progress).start()
            if restart and not fence.created:
                raise ConfigError(
                    f"backfill --restart is refused: another backfill ({fence.copy_id}) is "
                    "copying this migration, and a restart would empty what it copies",
                    hint="run the restart once the other backfills have finished",
                )
        return _backfill(
            mig,
            plans,
            meta_conn,
            state,
            summary,
            t_start,
            workers=workers,
            chunk_size=chunk_size,
            max_rows_per_sec=max_rows_per_sec,
            restart=restart,
            dry_run=dry_run,
            collections=collections,
            progress=progress,
            fence=fence,
        )
    finally:
        if fence is not None:
            fence.stop()
        meta_conn.close()


_PAST_SYNC = ("dual_write", "read_mongo", "write_mongo", "done")


def _phase(state: StateStore) -> str:
    return state.phase()


class CopyFence:
    """Holds the copy lease for the run (renewed from a thread), CDC paused behind it."""

    def __init__(self, state: StateStore, progress: Progress) -> None:
        self.state = state
        self.progress = progress
        self.owner = process_owner()
        self.copy_id = self.owner
        self.created = True  # False: this process joined another backfill's copy
        self.lost = False
        self._ticker = Ticker(self._renew, 2.0, "copy-fence")

    def _renew(self) -> None:
        if self.lost:
            return
        if not self.state.renew_copy(self.owner):
            # our membership ran out (a stall longer than the lease): CDC may be applying
            # again, so this process must not copy on; the run stops at the next chunk
            self.lost = True
            return
        self.state.renew_chunks(self.owner)

    def check(self) -> None:
        """Between chunks: stop if the fence was lost."""
        if self.lost:
            raise CheckFailed(
                "this backfill lost its copy lease (it stalled longer than "
                f"{self.state.COPY_LEASE_SECONDS:.0f} s) and stopped: CDC may have resumed "
                "meanwhile",
                hint="run the backfill again; `verify` finds any document the stall left stale",
            )

    def start(self) -> CopyFence:
        self.copy_id, self.created = self.state.begin_copy(self.owner)
        self._ticker.start()
        if not self.created:
            log.info("backfill joins another's copy", extra={"copy": self.copy_id})
            self.progress.note(f"joining the copy of another backfill ({self.copy_id})")
        if self.state.cdc_alive():
            log.info("waiting for the running CDC to pause while this copies")
            self.progress.note("waiting for the running CDC to pause while this copies")
        self.state.wait_for_cdc_ack(self.copy_id, self.owner)
        return self

    def stop(self) -> None:
        self._ticker.stop()
        with contextlib.suppress(Exception):  # MongoDB away: the leases expire instead
            self.state.release_chunks(self.owner)
        self.state.end_copy(self.owner)


def _backfill(
    mig: Migration,
    plans: list[CollectionPlan],
    meta_conn: Any,
    state: StateStore | None,
    summary: BackfillSummary,
    t_start: float,
    *,
    workers: int,
    chunk_size: int,
    max_rows_per_sec: float,
    restart: bool,
    dry_run: bool,
    collections: list[str] | None,
    progress: Progress,
    fence: CopyFence | None = None,
) -> BackfillSummary:
    if state is not None and fence is not None and not fence.created:
        # the copy's creator resets, records the position and plans; a joiner reads nothing
        # before that is done (or it could copy rows a restart then throws away)
        _wait_for_plan(state, fence, plans)
    if state is not None:
        summary.position = _prepare_target(mig, state, plans, meta_conn, restart, collections)
    per_coll, todo = _plan_chunks(mig, plans, state, chunk_size, progress)
    if state is not None and fence is not None and fence.created:
        state.mark_copy_planned(fence.copy_id)

    monitor = LoadMonitor(
        meta_conn, mig.settings.throttle, mig.source_url.tls, reconnect=mig.connect_source
    )
    rate = max_rows_per_sec / workers if max_rows_per_sec else 0.0

    def record(res: ChunkResult) -> None:
        log.debug(
            "chunk written",
            extra={
                "chunk": res.chunk_id,
                "collection": res.collection,
                "rows": res.rows,
                "docs": res.docs,
                "dead_letters": res.dead,
                "bytes": res.bytes,
                "seconds": round(res.seconds, 3),
            },
        )
        cs = per_coll[res.collection]
        cs.rows += res.rows
        cs.documents += res.docs
        cs.bytes += res.bytes
        cs.dead_letters += res.dead
        cs.chunks_run += 1
        summary.throttled_seconds += res.throttled_seconds
        progress.advance(res.collection, res.rows)

    if todo:
        source: ChunkSource = (
            ClaimedChunks(state, fence, [p.name for p in plans])
            if state is not None and fence is not None
            else ListedChunks(todo)
        )
        if workers == 1:
            worker = ChunkWorker(mig, dry_run=dry_run, rows_per_sec=rate, page_size=chunk_size)
            try:
                summary.paused_seconds = _run_inline(worker, source, record, monitor, progress)
            finally:
                worker.close()
        else:
            # each process pages through chunks by the run's chunk size
            backfill_settings = mig.settings.backfill.model_copy(update={"chunk_size": chunk_size})
            settings = mig.settings.model_copy(update={"backfill": backfill_settings})
            summary.paused_seconds = _run_processes(
                settings, mig.schema, dry_run, rate, source, workers, record, monitor, progress
            )
    if state is not None:
        # after the copy (CDC waits for it), as DMS and mongorestore do: the server builds an
        # index over the documents for much less than it costs to keep it through every insert
        ensure_indexes(mig.target, plans)
    return _finish(summary, per_coll, plans, state, progress, t_start)


def _prepare_target(
    mig: Migration,
    state: StateStore,
    plans: list[CollectionPlan],
    meta_conn: Any,
    restart: bool,
    collections: list[str] | None,
) -> dict[str, Any]:
    """Reset what a restart forgets, record where CDC starts (once), check that a resume's
    done chunks are still in the target; returns CDC's start."""
    if restart:
        log.warning(
            "backfill restart: forgetting the checkpoints and emptying the collections",
            extra={"collections": [p.name for p in plans], "cdc_start_reset": not collections},
        )
        state.reset_backfill([p.name for p in plans] if collections else None)
        if not collections:
            # a full restart starts CDC over from the new position too (the old one may
            # be purged: that is often why one restarts)
            state.delete_meta_doc("cdc_checkpoint")
        # A partial restart keeps the recorded position and CDC's checkpoint: CDC resumes
        # from its checkpoint, which lies before every row this copy reads.
        for p in plans:
            mig.target[p.name].delete_many({})
    position = state.backfill_position()
    if position is None:
        # Before any row is read: CDC replays from here and converges (with several
        # processes, the first one recorded stands: it lies before all their reads)
        position = state.record_backfill_position(current_position(meta_conn))
        log.info("cdc start position recorded", extra={"position": _loggable(position)})
    if not restart:
        _check_target_holds_the_copy(mig.target, state, plans)
    _record_target_identity(mig.target, state, plans)
    return position


def _plan_chunks(
    mig: Migration,
    plans: list[CollectionPlan],
    state: StateStore | None,
    chunk_size: int,
    progress: Progress,
) -> tuple[dict[str, CollectionSummary], list[Chunk]]:
    """Each collection's chunks still to copy (planned once, then read back on a resume)."""
    raw = mig.connect_source(raw=True)
    todo: list[Chunk] = []
    per_coll: dict[str, CollectionSummary] = {}
    try:
        for p in plans:
            cs = per_coll[p.name] = CollectionSummary(name=p.name, table=p.table.name)
            st = state.collection_state(p.name) if state else None
            if not st or not st.get("planned"):
                bounds = chunk_bounds(list(ChunkReader(raw, p).boundaries(chunk_size)))
                pending = _save_plan(state, p, bounds, chunk_size)
                cs.chunks_total = len(bounds)
                log.info("chunks planned", extra={"collection": p.name, "chunks": len(bounds)})
            else:
                pending = state.pending_chunks(p.name) if state else []
                cs.chunks_total = int(st.get("chunks", 0))
            cs.chunks_skipped = cs.chunks_total - len(pending)
            todo += [
                Chunk(
                    id=c["_id"],
                    collection=p.name,
                    seq=c["seq"],
                    lo=decode_key(c["lo"]) if c["lo"] is not None else None,
                    hi=decode_key(c["hi"]) if c["hi"] is not None else None,
                )
                for c in pending
            ]
            done_rows = state.done_rows(p.name) if state and cs.chunks_skipped else 0
            est = max(p.table.rows_estimate, (cs.chunks_total - 1) * chunk_size, done_rows)
            progress.start(p.name, est, done_rows)
            if cs.chunks_skipped:
                log.info(
                    "backfill resuming",
                    extra={
                        "collection": p.name,
                        "chunks_done": cs.chunks_skipped,
                        "chunks_total": cs.chunks_total,
                    },
                )
                progress.note(
                    f"{p.name}: resuming, {cs.chunks_skipped} of {cs.chunks_total} "
                    "chunks already done"
                )
    finally:
        raw.close()
    return per_coll, todo


def _save_plan(
    state: StateStore | None, p: CollectionPlan, bounds: list[tuple[Any, Any]], chunk_size: int
) -> list[ChunkRecord]:
    """A new collection plan's chunks (saved, unless this is a dry run), all pending."""
    if state is None:
        return [
            ChunkRecord(_id=f"{p.name}/{i:09d}", seq=i, lo=lo, hi=hi)
            for i, (lo, hi) in enumerate(bounds)
        ]
    state.save_chunk_plan(p.name, bounds)
    state.update_collection(
        p.name,
        planned=True,
        chunks=len(bounds),
        chunk_size=chunk_size,
        status="running",
        started_at=now(),
        table=p.table.name,
    )
    return state.pending_chunks(p.name)


def _finish(
    summary: BackfillSummary,
    per_coll: dict[str, CollectionSummary],
    plans: list[CollectionPlan],
    state: StateStore | None,
    progress: Progress,
    t_start: float,
) -> BackfillSummary:
    for p in plans:
        cs = per_coll[p.name]
        if state:
            total, done = state.chunk_counts(p.name)
            if done == total:
                state.update_collection(p.name, status="complete", finished_at=now())
        progress.finish(p.name, cs.rows)
        summary.collections.append(cs)
    summary.seconds = time.monotonic() - t_start
    summary.rows = sum(c.rows for c in summary.collections)
    summary.documents = sum(c.documents for c in summary.collections)
    summary.dead_letters = sum(c.dead_letters for c in summary.collections)
    summary.rows_per_sec = summary.rows / summary.seconds if summary.seconds else 0.0
    log.info(
        "backfill finished",
        extra={
            "rows": summary.rows,
            "documents": summary.documents,
            "dead_letters": summary.dead_letters,
            "chunks": sum(c.chunks_run for c in summary.collections),
            "seconds": round(summary.seconds, 3),
            "rows_per_sec": round(summary.rows_per_sec),
            "paused_seconds": summary.paused_seconds,
            "dry_run": summary.dry_run,
        },
    )
    if summary.dead_letters:
        log.warning("rows went to the dead letters", extra={"dead_letters": summary.dead_letters})
    return summary


def _loggable(position: dict[str, Any]) -> dict[str, Any]:
    return {k: position.get(k) for k in ("file", "pos", "gtid")}


def _wait_while_busy(monitor: LoadMonitor, progress: Progress) -> float:
    paused = 0.0
    reason = monitor.reason_to_pause()
    if reason:
        log.info("backfill paused for the source's load", extra={"reason": reason})
        progress.note(f"paused: {reason}")
    while reason:
        time.sleep(monitor.spec.check_interval_seconds)
        paused += monitor.spec.check_interval_seconds
        reason = monitor.reason_to_pause()
    return paused


def _run_inline(
    worker: ChunkWorker,
    source: ChunkSource,
    record: Any,
    monitor: LoadMonitor,
    progress: Progress,
) -> float:
    paused = 0.0
    while (chunk := source.next(wait=True)) is not None:
        paused += _wait_while_busy(monitor, progress)
        try:
            record(worker.run(chunk))
        except MigratorError as exc:
            raise type(exc)(
                f"during chunk {chunk.describe()}: {exc.message}", hint=exc.hint
            ) from None
    return paused


def _run_processes(
    mapping: Mapping,
    schema: Schema,
    dry_run: bool,
    rate: float,
    source: ChunkSource,
    workers: int,
    record: Any,
    monitor: LoadMonitor,
    progress: Progress,
) -> float:
    ctx = mp.get_context("spawn")
    tasks = ctx.Queue()
    results = ctx.Queue()
    paused_flag = ctx.Event()
    outstanding = 0  # chunks handed to the workers and not finished

    # two chunks per worker: one written while the next is read (PipelinedWrites)
    def feed() -> None:
        nonlocal outstanding
        while outstanding < 2 * workers and (chunk := source.next(wait=False)) is not None:
            tasks.put(chunk)
            outstanding += 1

    feed()
    procs = [
        ctx.Process(
            target=worker_main,
            daemon=True,
            args=(mapping, schema, dry_run, rate, tasks, results, paused_flag, os.getpid()),
        )
        for _ in range(workers)
    ]
    for pr in procs:
        pr.start()
    paused = 0.0
    try:
        while outstanding or not source.finished():
            if outstanding < 2 * workers:
                feed()  # chunks other processes held may have come free
            if not outstanding:
                time.sleep(1.0)  # the rest is leased to other backfills: wait, reclaim
                continue
            _follow_load(monitor, progress, paused_flag)
            try:
                kind, payload, err = results.get(timeout=monitor.spec.check_interval_seconds)
            except queue.Empty:
                if paused_flag.is_set():
                    paused += monitor.spec.check_interval_seconds
                _stop_if_a_worker_died(procs)
                continue
            if kind == "error":
                where = f" during chunk {payload.describe()}" if payload else ""
                raise MigratorError(f"backfill worker failed{where}: {err}")
            record(payload)
            outstanding -= 1
            feed()
        for _ in procs:
            tasks.put(None)
    finally:
        for pr in procs:
            if pr.is_alive() and (outstanding or not source.finished()):
                pr.terminate()
        for pr in procs:
            pr.join(timeout=10)
    return paused


def _follow_load(monitor: LoadMonitor, progress: Progress, paused_flag: Any) -> None:
    """Pause the workers (between pages) while the source is too busy; resume after."""
    reason = monitor.reason_to_pause()
    if reason and not paused_flag.is_set():
        log.info("backfill paused for the source's load", extra={"reason": reason})
        progress.note(f"paused: {reason}")
        paused_flag.set()
    elif not reason and paused_flag.is_set():
        paused_flag.clear()


def _stop_if_a_worker_died(procs: list[Any]) -> None:
    if not any(pr.is_alive() for pr in procs):
        raise CheckFailed("every backfill worker exited before the work was done") from None
    dead = [pr.exitcode for pr in procs if pr.exitcode is not None]
    if dead:
        # its chunk would stay leased (renewed by this process) and every backfill of the
        # copy would wait for it: stop, and give the chunks back
        raise MigratorError(
            f"a backfill worker process died (exit code {dead[0]}): stopping; "
            "its chunk is claimed again by the next run or another machine"
        ) from None


class ChunkSource:
    """Where workers get chunks from."""

    def next(self, *, wait: bool) -> Chunk | None:
        """The next chunk to copy; None when there is none (with `wait`: none left at all)."""
        raise NotImplementedError

    def finished(self) -> bool:
        raise NotImplementedError


class ListedChunks(ChunkSource):
    """A dry run: the plan in memory, nobody to share it with."""

    def __init__(self, todo: list[Chunk]) -> None:
        self.todo = list(todo)

    def next(self, *, wait: bool) -> Chunk | None:
        chunk = self.todo.pop(0) if self.todo else None
        if chunk is not None:
            log.debug("chunk claimed", extra={"chunk": chunk.id, "collection": chunk.collection})
        return chunk

    def finished(self) -> bool:
        return not self.todo


class ClaimedChunks(ChunkSource):
    """Chunks claimed one at a time from the state store, leased to this process (the fence
    renews the leases), so backfills on several machines share the plan."""

    def __init__(self, state: StateStore, fence: CopyFence, collections: list[str]) -> None:
        self.state, self.fence, self.collections = state, fence, collections
        self.owner = fence.owner

    def next(self, *, wait: bool) -> Chunk | None:
        while True:
            self.fence.check()
            doc = with_retry(lambda: self.state.claim_chunk(self.collections, self.owner))
            if doc is not None:
                log.debug(
                    "chunk claimed", extra={"chunk": doc["_id"], "collection": doc["collection"]}
                )
                return Chunk(
                    id=doc["_id"],
                    collection=doc["collection"],
                    seq=doc["seq"],
                    lo=decode_key(doc["lo"]) if doc["lo"] is not None else None,
                    hi=decode_key(doc["hi"]) if doc["hi"] is not None else None,
                )
            if not wait or self.finished():
                return None
            time.sleep(1.0)  # held by other backfills: reclaimed if their lease expires

    def finished(self) -> bool:
        return with_retry(lambda: self.state.chunks_left(self.collections)) == 0


def _wait_for_plan(
    state: StateStore, fence: CopyFence, plans: list[CollectionPlan], timeout: float = 600.0
) -> None:
    """A process that joined a copy copies the plan its creator makes; it never plans."""
    deadline = time.monotonic() + timeout
    while True:
        copy = state.copy_in_progress() or {}
        if copy.get("planned"):
            missing = [
                p.name for p in plans if not (state.collection_state(p.name) or {}).get("planned")
            ]
            if not missing:
                return
            raise CheckFailed(
                f"this backfill joined a copy ({fence.copy_id}) that does not include "
                + ", ".join(missing),
                hint="run it with the same --collection options as the other backfills, "
                "or after they finish",
            )
        if str(copy.get("owner")) != fence.copy_id or fence.copy_id not in state.copy_members(copy):
            raise CheckFailed(
                f"the backfill that started this copy ({fence.copy_id}) stopped before it "
                "had planned the chunks",
                hint="run the backfill again: a new copy plans them",
            )
        if time.monotonic() >= deadline:
            raise CheckFailed(f"the copy {fence.copy_id} was not planned within {timeout:.0f} s")
        time.sleep(0.5)


def _collection_uuid(db: Any, name: str) -> Any:
    """The server's identity of a collection (a dropped and recreated one gets a new one);
    None when the collection is missing or the server does not say."""
    info = with_retry(lambda: list(db.list_collections(filter={"name": name})))
    if not info:
        return None
    return (info[0].get("info") or {}).get("uuid") or False


def _check_target_holds_the_copy(db: Any, state: StateStore, plans: list[CollectionPlan]) -> None:
    """A resume skips the done chunks: refuse it when their documents are not in the target
    any more (database or collection dropped, documents deleted behind the tool's back)."""
    # once MongoDB has been the truth (now or before a rollback), applications delete
    # documents directly: counts prove nothing about the copy then
    counted = _phase(state) not in ("write_mongo", "done") and state.switch_schema() is None
    for p in plans:
        written = state.done_docs(p.name)
        if not written:
            continue
        uuid = _collection_uuid(db, p.name)
        recorded = (state.collection_state(p.name) or {}).get("target_uuid")
        problem = None
        if uuid is None:
            problem = f"collection {db.name}.{p.name} is gone"
        elif recorded is not None and uuid is not False and uuid != recorded:
            problem = f"collection {db.name}.{p.name} was dropped and created again"
        elif counted:
            expected = written - state.deletes_noted(p.name)
            have = db[p.name].estimated_document_count()
            if have < expected:
                have = db[p.name].count_documents({})  # exact, only when it matters
            if have < expected:
                problem = (
                    f"collection {db.name}.{p.name} holds {have} documents, fewer documents "
                    f"than the {expected} the done chunks wrote (less the ones CDC deleted)"
                )
        if problem:
            raise ConfigError(
                f"backfill cannot resume: {problem} since the copy recorded its chunks as done",
                hint="run `migrator backfill --restart` to copy everything again "
                f"(or `--restart --collection {p.name}` for this collection alone)",
            )


def _record_target_identity(db: Any, state: StateStore, plans: list[CollectionPlan]) -> None:
    """Remember which collection the copy writes into (see _check_target_holds_the_copy)."""
    for p in plans:
        if (state.collection_state(p.name) or {}).get("target_uuid") is not None:
            continue
        if _collection_uuid(db, p.name) is None:
            with contextlib.suppress(CollectionInvalid):  # another process made it first
                with_retry(partial(db.create_collection, p.name))
        uuid = _collection_uuid(db, p.name)
        if uuid:
            state.update_collection(p.name, target_uuid=uuid)
