"""A backfill worker: reads a chunk's pages (root rows and every level of their trees),
transforms them into documents and writes them, the next page read while the last is written;
records the chunk done only after its writes were acknowledged. One per worker process (or the
coordinator's own, with one worker)."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import bson
import MySQLdb
from bson.raw_bson import RawBSONDocument

from migrator import logs
from migrator.errors import MigratorError
from migrator.faults import fault_point
from migrator.handoff import put_unless
from migrator.model.schema import Schema
from migrator.model.settings import Mapping
from migrator.model.transform import CollectionPlan, Transform
from migrator.runtime import Migration
from migrator.sink.mongo import DocumentWriter
from migrator.source.reader import ChunkReader
from migrator.source.throttle import RateLimiter
from migrator.state.store import StateStore

BSON_MAX = 16 * 1024 * 1024

log = logging.getLogger("migrator.backfill")


@dataclass
class Chunk:
    id: str
    collection: str
    seq: int
    lo: tuple[Any, ...] | None
    hi: tuple[Any, ...] | None

    def describe(self) -> str:
        return f"{self.id} (key {self.lo} -> {self.hi})"


@dataclass
class ChunkResult:
    chunk_id: str
    collection: str
    rows: int
    docs: int
    dead: int
    bytes: int
    seconds: float
    throttled_seconds: float = 0.0


class ChunkWorker:
    """Reads, transforms and writes chunks; one per worker process, with its own connections."""

    def __init__(
        self,
        migration: Migration,
        *,
        dry_run: bool,
        rows_per_sec: float = 0.0,
        page_size: int | None = None,
    ) -> None:
        self.migration = migration
        # a chunk normally fits one page; a chunk that grew during the copy takes several
        self.page_size = 2 * (page_size or migration.settings.backfill.chunk_size)
        self.transform: Transform = migration.transform
        self.dry_run = dry_run
        self.limiter = RateLimiter(rows_per_sec)
        self._connect_source()
        self.state: StateStore | None = None if dry_run else migration.state
        self.target = None if dry_run else migration.target

    def _pages(self, chunk: Chunk) -> Iterator[tuple[list[Any], dict[str, Any]]]:
        """Root rows and embedded rows of a chunk, a bounded page at a time; reconnects when
        the source dropped us (and reads the page again)."""
        lo = chunk.lo
        while True:
            for attempt in range(4):
                reader = self.readers[chunk.collection]
                try:
                    rows = reader.read_rows(lo, chunk.hi, limit=self.page_size)
                    children = reader.read_embeds(rows) if rows else {}
                    # read after the page: a DDL before it cannot go unseen. Its documents
                    # would lack (or misplace) columns for rows CDC may only push later,
                    # never rewrite; chunks done so far are kept
                    reader.refuse_changed(
                        "during the backfill",
                        "run `migrator backfill` again: it keeps the chunks done and copies "
                        "the rest with the new columns (CDC follows an added nullable column "
                        "with --on-ddl extend)",
                    )
                    break
                except MySQLdb.OperationalError as exc:
                    if exc.args[0] not in (2006, 2013) or attempt == 3:
                        raise MigratorError(f"reading chunk {chunk.describe()}: {exc}") from None
                    log.warning(
                        "source connection lost; reconnecting to read the page again",
                        extra={"chunk": chunk.id, "cause": str(exc), "attempt": attempt + 1},
                    )
                    time.sleep(0.5 * 2**attempt)
                    self._connect_source()
            if rows:
                yield rows, children
            if len(rows) < self.page_size:
                return
            plan = self.readers[chunk.collection].plan
            lo = reader.key_params(tuple(rows[-1][plan.root.index[c]] for c in plan.pk))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    def _connect_source(self) -> None:
        self.conn = self.migration.connect_source(raw=True)
        self.readers = {p.name: ChunkReader(self.conn, p) for p in self.transform.collections}

    def run(self, chunk: Chunk) -> ChunkResult:
        """Copy one chunk: read, transform, write each page, then mark it done."""
        t0 = time.monotonic()
        res = ChunkResult(chunk.id, chunk.collection, 0, 0, 0, 0, 0.0)
        for page in self.prepare(chunk, res):
            self.write(chunk, page)
        return self.finish(chunk, res, t0)

    def prepare(self, chunk: Chunk, res: ChunkResult) -> Iterator[Page]:
        """The chunk's pages read and transformed, ready to write (counted in `res`)."""
        plan: CollectionPlan = self.readers[chunk.collection].plan
        for rows, children in self._pages(chunk):
            yield self._transform(plan, rows, children, res)
            res.rows += len(rows)

    def finish(self, chunk: Chunk, res: ChunkResult, t0: float) -> ChunkResult:
        """After every write of the chunk was acknowledged: record it done."""
        if not self.dry_run:
            assert self.state is not None
            fault_point("chunk-copied")
            self.state.mark_chunk_done(chunk.id, res.rows, time.monotonic() - t0, res.docs)
        res.throttled_seconds = self.limiter.account(res.rows)
        res.seconds = time.monotonic() - t0
        return res

    def _transform(
        self, plan: CollectionPlan, rows: list[Any], children: dict[str, Any], res: ChunkResult
    ) -> Page:
        page = Page(plan.name)

        def on_error(row: Any, exc: MigratorError) -> None:
            try:
                key = plan.doc_id(row)
            except Exception:  # the key itself does not convert: keep it as read
                key = list(plan.root.params(row, plan.pk))
            page.dead.append(
                (key, exc.message, dict(zip(plan.root.columns, map(_preview, row), strict=True)))
            )

        for d in plan.documents(rows, children, on_error=on_error):
            # encoded once: measured, size-checked, and sent as these bytes (the driver does
            # not encode a RawBSONDocument again)
            raw = bson.encode(d)
            if len(raw) > BSON_MAX:
                reason = f"document is {len(raw)} bytes, over MongoDB's 16 MiB limit"
                page.dead.append((d["_id"], reason, None))
                continue
            res.bytes += len(raw)
            page.docs.append(RawBSONDocument(raw))
        res.docs += len(page.docs)
        res.dead += len(page.dead)
        return page

    def write(self, chunk: Chunk, page: Page) -> None:
        if self.dry_run:
            return
        assert self.target is not None and self.state is not None
        if page.docs:
            DocumentWriter(self.target[page.collection]).insert_or_replace(page.docs)
        for key, reason, payload in page.dead:
            self.state.dead_letter(
                source="backfill",
                collection=page.collection,
                key=key,
                reason=reason,
                payload=payload,
                position=chunk.id,
            )


@dataclass
class Page:
    """A page of a chunk, transformed: the documents to write and the rows that could not be."""

    collection: str
    docs: list[RawBSONDocument] = field(default_factory=list)
    dead: list[tuple[Any, str, Any]] = field(default_factory=list)


class PipelinedWrites:
    """A worker process's writes on their own thread, one chunk behind its reads: the next
    chunk is read and transformed while the last one is written, so the server is not idle
    while the worker computes (the driver waits for the server without the GIL). At most one
    page waits to be written (memory stays bounded); a chunk is marked done and reported only
    after its writes were acknowledged, so a crash loses nothing that was recorded."""

    def __init__(
        self,
        worker: ChunkWorker,
        report: Callable[[str, Any, str | None], None],
        alive: Callable[[], bool] = lambda: True,
    ):
        # alive: whether the coordinator still runs; once it is gone its copy fence is too,
        # and CDC may be applying newer changes to the rows read ahead: they are not written
        self.worker, self.report, self.alive = worker, report, alive
        # a page to write, or a chunk whose pages are all queued (its result, its start)
        self.queue: queue.Queue[tuple[Chunk, Page | tuple[ChunkResult, float]] | None] = (
            queue.Queue(maxsize=1)
        )
        self.failed = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="chunk-writes", daemon=True)
        self.thread.start()

    def submit(self, chunk: Chunk) -> bool:
        """Read and transform `chunk` here, page by page, queueing the writes; False once a
        write failed."""
        t0 = time.monotonic()
        res = ChunkResult(chunk.id, chunk.collection, 0, 0, 0, 0, 0.0)
        for page in self.worker.prepare(chunk, res):
            if not self._put((chunk, page)):
                return False
        return self._put((chunk, (res, t0)))

    def _put(self, item: tuple[Chunk, Page | tuple[ChunkResult, float]]) -> bool:
        return put_unless(self.queue, item, self.failed)

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            chunk, work = item
            if not self.alive():
                self.failed.set()
                return
            try:
                if isinstance(work, Page):
                    self.worker.write(chunk, work)
                else:
                    self.report("done", self.worker.finish(chunk, *work), None)
            except Exception as exc:
                self.failed.set()
                self.report("error", chunk, _failure(exc))
                return

    def close(self) -> None:
        """Wait for the writes queued (none are, when the coordinator says stop)."""
        if not self.failed.is_set():
            self.queue.put(None)
        self.thread.join()


def _failure(exc: Exception) -> str:
    return str(exc) if isinstance(exc, MigratorError) else traceback.format_exc(limit=3)


def _preview(v: Any, limit: int = 1024) -> Any:
    """Dead letters keep the row for a human, cut so the letter itself stays small."""
    if isinstance(v, bytes) and len(v) > limit:
        return v[:limit] + b"..."
    if isinstance(v, str) and len(v) > limit:
        return v[:limit] + "..."
    return v


def worker_main(
    mapping: Mapping,
    schema: Schema,
    dry_run: bool,
    rate: float,
    tasks: Any,
    results: Any,
    paused: Any,
    parent: int,
) -> None:
    logs.inherit()
    try:
        # this process's own clients; the schema is the parent's (read once)
        migration = Migration(mapping, claim_state=False, schema=schema)
        worker = ChunkWorker(migration, dry_run=dry_run, rows_per_sec=rate)
    except Exception as exc:
        results.put(("error", None, str(exc)))
        return
    with migration:
        try:
            _work(worker, tasks, results, paused, parent)
        finally:
            worker.close()


def _work(worker: ChunkWorker, tasks: Any, results: Any, paused: Any, parent: int) -> None:
    """A worker process's loop: chunks from `tasks`, results to `results`, until told to stop
    or orphaned."""
    writes = PipelinedWrites(
        worker, lambda *r: results.put(r), alive=lambda: os.getppid() == parent
    )
    try:
        while True:
            try:
                chunk = tasks.get(timeout=1)
            except queue.Empty:
                if os.getppid() != parent:  # orphaned by a kill -9 of the coordinator
                    return
                continue
            if chunk is None or os.getppid() != parent:
                return
            while paused.is_set():
                if os.getppid() != parent:
                    return
                time.sleep(0.2)
            try:
                if not writes.submit(chunk):
                    return
            except Exception as exc:
                results.put(("error", chunk, _failure(exc)))
                return
    finally:
        writes.close()
