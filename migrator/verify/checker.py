"""Comparing source rows with target documents through the mapping: by keys, by chunk,
extra documents, touched keys, and repair; re-checks wait for CDC (cdc_wait)."""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import DeleteOne

from migrator import logs
from migrator.errors import CheckFailed, MigratorError
from migrator.handoff import MadeAhead
from migrator.model.keys import id_key
from migrator.model.settings import Mapping
from migrator.model.transform import CollectionPlan
from migrator.progress import NullProgress, Progress
from migrator.runtime import Migration
from migrator.sink.mongo import find_by_ids, integer_id, number_id, with_retry
from migrator.sink.stream import IdStream
from migrator.source.connection import connect as mysql_connect
from migrator.source.reader import ChunkReader, chunk_bounds
from migrator.source.rebuild import key_params, rebuild_ops
from migrator.source.throttle import RateLimiter
from migrator.state.store import now, storable
from migrator.verify.canonical import doc_hash, field_diffs
from migrator.verify.cdc_wait import CdcWait
from migrator.verify.prepared import PreparedChunk, digest
from migrator.verify.results import CollectionResult, Difference

log = logging.getLogger("migrator.verify")

# How long a re-check waits for CDC to apply past the rows it read (a lagging CDC, not a
# difference); past it the difference is reported, saying so.
RECHECK_WAIT = 30.0

# How much of the next chunks an in-order walk reads and converts ahead while it waits for the
# target's scan (a server that sorts the collection before its first answer takes seconds):
# about the bytes of memory held, however many chunks that is (some 800,000 documents).
PREPARE_AHEAD = 128 * 1024 * 1024


_RAW: CodecOptions[Any] = CodecOptions(document_class=RawBSONDocument)


_PLAIN: CodecOptions[Any] = CodecOptions(tz_aware=False)


def id_to_key(plan: CollectionPlan, doc_id: Any) -> tuple[Any, ...]:
    """A document _id back to source primary-key parameters."""
    return key_params(plan, doc_id)


class Verifier:
    def __init__(
        self,
        migration: Migration | Mapping,
        *,
        recheck: int = 3,
        recheck_delay: float = 0.5,
        recheck_wait: float = RECHECK_WAIT,
        max_rows_per_sec: float = 0.0,
        limit_differences: int = 1000,
        progress: Progress | None = None,
    ) -> None:
        # a migration given is the caller's to close; one opened from settings is this one's
        self._owns = not isinstance(migration, Migration)
        self.migration = migration if isinstance(migration, Migration) else Migration(migration)
        self.mapping = self.migration.settings
        self.transform = self.migration.transform
        self._src = self.migration.source_url
        self._local = threading.local()
        self._conns: list[Any] = []
        self.client = self.migration.client
        self.db = self.migration.target
        self.state = self.migration.state
        self.recheck = recheck
        self.recheck_delay = recheck_delay
        self.cdc = CdcWait(self.state, recheck_wait)
        self.limiter = RateLimiter(max_rows_per_sec)
        self.limit = limit_differences
        self.toward_mysql = False  # verify --repair after the write switch
        self.progress = progress or NullProgress()

    @property
    def conn(self) -> Any:
        """One raw MySQL connection per thread (--workers verifies chunks in parallel)."""
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = mysql_connect(self._src, raw=True)
            self._conns.append(c)
        return c

    def close(self) -> None:
        for c in self._conns:
            c.close()
        if self._owns:
            self.migration.close()

    # -- comparing a set of keys -------------------------------------------------------------
    def _converted(
        self, plan: CollectionPlan, rows: Sequence[Any], children: Any = None
    ) -> tuple[list[dict[str, Any]], dict[Any, tuple[Any, str]]]:
        """The documents the source rows should be, and the rows that do not convert (what
        cannot be checked is reported, never skipped): id key -> (_id, why)."""
        if children is None:
            children = ChunkReader(self.conn, plan).read_embeds(rows) if rows else {}
        bad: dict[Any, tuple[Any, str]] = {}

        def unconvertible(row: Any, exc: MigratorError) -> None:
            try:
                doc_id = plan.doc_id(row)
            except MigratorError:
                doc_id = list(plan.root.params(row, plan.pk))
            bad[id_key(doc_id)] = (doc_id, exc.message)

        return plan.documents(rows, children, on_error=unconvertible), bad

    def _expected(
        self, plan: CollectionPlan, rows: Sequence[Any], children: Any = None
    ) -> _Expected:
        docs, bad = self._converted(plan, rows, children)
        return _Expected({id_key(d["_id"]): bson.encode(d) for d in docs}, bad)

    def _target(
        self, plan: CollectionPlan, ids: list[Any], stream: IdStream | None
    ) -> dict[Any, RawBSONDocument]:
        """The target's documents for `ids` (id key -> raw document): from `stream` when the
        walk reads the collection in order (the range's documents no id names are kept there
        as candidate extras), else by a query."""
        if stream is not None and ids and all(integer_id(i) for i in ids):
            wanted = set(ids)
            found = []
            for doc_id, d in stream.take(min(ids), max(ids)):
                if number_id(doc_id) in wanted:
                    found.append((doc_id, d))
                else:  # in the range, named by no row: a candidate extra
                    stream.passed.append(doc_id)
        else:
            coll = self.db[plan.name].with_options(codec_options=_RAW)
            found = [(d["_id"], d) for d in find_by_ids(coll, ids)]
        return {id_key(doc_id): d for doc_id, d in found}

    def _compare(
        self,
        plan: CollectionPlan,
        expected: _Expected,
        ids: Iterable[Any],
        stream: IdStream | None = None,
    ) -> dict[Any, Difference]:
        """Differences between expected documents and the target, for `ids` (expected or not)."""
        ids = list(ids)
        # Raw BSON: most documents are byte-identical to what the Transform builds (same field
        # order, same types), and comparing bytes costs nothing; only the others are decoded
        # and compared canonically (key order and int widths then do not matter).
        actual = self._target(plan, ids, stream)
        diffs: dict[Any, Difference] = {}
        for i in ids:
            k = id_key(i)
            if k in expected.bad:
                diffs[k] = Difference(plan.name, i, "unconvertible", reason=expected.bad[k][1])
                continue
            e, a = expected.docs.get(k), actual.get(k)
            if e is None and a is None:
                continue
            if a is None:
                diffs[k] = Difference(plan.name, i, "missing")
            elif e is None:
                diffs[k] = Difference(plan.name, i, "extra")
            elif e != a.raw:
                want, doc = bson.decode(e, _PLAIN), bson.decode(a.raw, _PLAIN)
                if doc_hash(want) != doc_hash(doc):
                    diffs[k] = Difference(plan.name, i, "different", field_diffs(want, doc))
        return diffs

    def _rows_named(self, plan: CollectionPlan, ids: Sequence[Any]) -> list[Any]:
        """The source rows of these `_id`s (an `_id` no key can give, an extra document's
        infinity or odd shape, names none)."""
        keys = [id_to_key(plan, i) for i in ids if plan.names_a_row(i)]
        return ChunkReader(self.conn, plan).read_by_keys(keys)

    def check_keys(
        self,
        plan: CollectionPlan,
        ids: list[Any],
        res: CollectionResult,
        *,
        first: dict[Any, Difference] | None = None,
    ) -> list[Difference]:
        """Compare these ids now; re-check differences while they may still be settling: each
        re-check reads the rows, waits until CDC has applied past them, then reads the
        documents. A difference still there when CDC could not catch up within the bound is
        reported with that reason."""
        diffs = first
        if diffs is None:
            rows = self._rows_named(plan, ids)
            diffs = self._compare(plan, self._expected(plan, rows), ids)
        caught_up: bool | None = None
        found = len(diffs)
        for _ in range(self.recheck):
            if not diffs:
                break
            time.sleep(self.recheck_delay)
            again = [d.id for d in diffs.values()]
            read_at = now()
            rows = self._rows_named(plan, again)
            caught_up = self.cdc.after_read(self.conn, read_at)
            now_diffs = self._compare(plan, self._expected(plan, rows), again)
            res.rechecked += len(diffs) - len(now_diffs)
            diffs = now_diffs
            if caught_up is False:
                break  # the bound is spent: waiting again would only repeat it
        if caught_up is False and diffs:
            why = (
                f"CDC had not applied past the source's position within {self.cdc.bound:g} s "
                "of the re-check (it may be a change CDC has yet to apply)"
            )
            log.warning("verify: %s; %d difference(s) reported", why, len(diffs))
            for d in diffs.values():
                d.reason, d.cdc_behind = d.reason or why, True
        if found and self.recheck:
            log.debug(
                "re-checked",
                extra={
                    "collection": plan.name,
                    "differences": found,
                    "still_different": len(diffs),
                    "cdc_behind": caught_up is False,
                },
            )
        return list(diffs.values())

    # -- walking a collection ----------------------------------------------------------------
    def full(
        self,
        plan: CollectionPlan,
        res: CollectionResult,
        *,
        sample_pct: float,
        chunk_size: int,
        rnd: random.Random,
        workers: int = 1,
        after: tuple[Any, ...] | None = None,
        found: list[Difference] | None = None,
        checkpoint: Any = None,
    ) -> list[Difference]:
        """Walk the collection's chunks (from `after`, when resuming), `workers` at a time,
        checkpointing after each group of chunks; then look for extra documents."""
        bounds = chunk_bounds(list(ChunkReader(self.conn, plan).boundaries(chunk_size, after)))
        if after is not None:
            bounds[0] = (after, bounds[0][1])
        self.progress.start(
            plan.name, max(plan.table.rows_estimate, len(bounds) * chunk_size), res.checked
        )
        found = list(found or [])
        chosen = [b for b in bounds if sample_pct >= 100 or rnd.random() * 100 < sample_pct]

        def tally(n: int, diffs: list[Difference], rechecked: int) -> None:
            res.checked += n
            res.chunks += 1
            res.rechecked += rechecked
            found.extend(diffs)
            self.progress.advance(plan.name, n)

        if workers <= 1 and sample_pct >= 100:

            def save(hi: Any) -> None:
                if checkpoint is not None and hi is not None:
                    checkpoint(plan.name, hi, res, found)

            # from the start, the walk's sorted scan sees every document once: those no source
            # row named are the only candidates for extras (no second scan of the collection)
            extras = self._walk_in_order(plan, res, chosen, tally, save, whole=after is None)
        else:
            extras = None
            with self._pool(workers) as pool:
                for i in range(0, len(chosen), max(1, workers)):
                    group = chosen[i : i + max(1, workers)]
                    los, his = [b[0] for b in group], [b[1] for b in group]
                    for n, diffs, rechecked in self.map_chunks(
                        pool, [plan.name] * len(group), los, his
                    ):
                        tally(n, diffs, rechecked)
                    if checkpoint is not None and group[-1][1] is not None:
                        checkpoint(plan.name, group[-1][1], res, found)
        if extras is None:
            extras = self.extras(plan, res, sample_pct=sample_pct, rnd=rnd)
        found += extras
        self.progress.finish(plan.name, res.checked)
        return found

    def _walk_in_order(
        self,
        plan: CollectionPlan,
        res: CollectionResult,
        chunks: list[tuple[Any, Any]],
        tally: Callable[[int, list[Difference], int], None],
        checkpoint: Callable[[Any], None],
        *,
        whole: bool,
    ) -> list[Difference] | None:
        """Every chunk upwards, one at a time: the target read by one sorted scan (IdStream),
        and the next chunks read from the source and converted on another thread (its own
        connection; up to PREPARE_AHEAD of them) while this one is compared, so neither
        server waits for the other's turn and the tool's work fills the wait for the scan's
        first answer. `whole`:
        the scan covers the collection, and the extra documents it found are returned
        (None: they are still to be looked for)."""
        coll = self.db[plan.name].with_options(codec_options=_RAW)
        stream = IdStream(coll, whole=whole)
        extras: list[Difference] = []
        ahead = MadeAhead(
            partial(self.prepare_chunk, plan), chunks, size=_prepared_size, budget=PREPARE_AHEAD
        )
        try:
            for (lo, hi), prepared in zip(chunks, ahead, strict=True):
                tally(*self.check_chunk(plan, lo, hi, prepared=prepared, stream=stream))
                checkpoint(hi)
                if whole and len(stream.passed) >= 1000:  # memory stays bounded
                    extras += self._extras_among(plan, stream.passed, res)
                    stream.passed = []
            if not whole or not stream.started:  # keys that are not numbers: not read here
                return None
            rest = itertools.chain(stream.passed, stream.rest())
            while batch := list(itertools.islice(rest, 1000)):
                extras += self._extras_among(plan, batch, res)
            return extras
        finally:
            ahead.close()
            stream.close()

    def prepare_chunk(self, plan: CollectionPlan, bounds: tuple[Any, Any]) -> PreparedChunk:
        """A chunk's source rows (root and embedded) read, and the digests of the documents
        they become."""
        reader = ChunkReader(self.conn, plan)
        rows = reader.read_rows(*bounds)
        docs, bad = self._converted(plan, rows, reader.read_embeds(rows) if rows else {})
        self.limiter.account(len(rows))
        return PreparedChunk.of(len(rows), docs, bad)

    def check_chunk(
        self,
        plan: CollectionPlan,
        lo: Any,
        hi: Any,
        *,
        prepared: PreparedChunk | None = None,
        stream: IdStream | None = None,
    ) -> tuple[int, list[Difference], int]:
        """One chunk: (rows read, differences that stayed after rechecks, rechecked).
        `prepared`: the chunk read and converted already (`prepare_chunk`). `stream`: the
        chunks come in key order, one at a time, and the documents are read by one sorted
        scan of the collection instead of a query per chunk.

        Documents are compared by the digest of their bytes first: most are byte-identical
        to what the rows become. The others are read again from both sides and compared in
        full (field order and int widths do not matter there)."""
        prepared = prepared or self.prepare_chunk(plan, (lo, hi))
        named = prepared.doc_ids()
        ids = list(named.values()) + [doc_id for doc_id, _reason in prepared.bad.values()]
        actual = self._target(plan, ids, stream)
        first: dict[Any, Difference] = {}
        unlike = []
        for k, (doc_id, reason) in prepared.bad.items():
            first[k] = Difference(plan.name, doc_id, "unconvertible", reason=reason)
        for k, want in prepared.sums.items():
            a = actual.get(k)
            if a is None:
                first[k] = Difference(plan.name, named[k], "missing")
            elif digest(a.raw) != want:
                unlike.append(named[k])
        if unlike:
            first.update(self._compare(plan, self._reread(plan, lo, hi, unlike), unlike))
        sub = CollectionResult(plan.name)
        diffs = self.check_keys(plan, ids, sub, first=first) if first else []
        return prepared.rows, diffs, sub.rechecked

    def _reread(self, plan: CollectionPlan, lo: Any, hi: Any, ids: list[Any]) -> _Expected:
        """The documents these `_id`s of the chunk should be, from its rows read again by the
        chunk's range: an `_id` does not always name its row exactly (a DATETIME(6) key's
        microseconds, a FLOAT key, a key in another time zone)."""
        wanted = {id_key(i) for i in ids}
        rows = []
        for row in ChunkReader(self.conn, plan).read_rows(lo, hi):
            try:
                if id_key(plan.doc_id(row)) in wanted:
                    rows.append(row)
            except MigratorError:
                continue  # a row that does not convert: not among these
        return self._expected(plan, rows)

    def map_chunks(
        self, pool: Any, names: list[str], los: list[Any], his: list[Any]
    ) -> Iterable[tuple[int, list[Difference], int]]:
        """`check_chunk` of each (collection, lo, hi), in the pool `_pool` made, in order."""
        if isinstance(pool, ProcessPoolExecutor):
            return pool.map(_check_chunk, names, los, his)
        return pool.map(
            lambda n, lo, hi: self.check_chunk(self.transform.collection(n), lo, hi),
            names,
            los,
            his,
        )

    def _pool(self, workers: int) -> Any:
        """Several workers are processes (the Transform and BSON encoding are CPU-bound: threads
        share one core), each with its own connections and a share of the rate limit."""
        if workers <= 1:
            return ThreadPoolExecutor(max_workers=1)
        rate = self.limiter.rate / workers if self.limiter.rate else 0.0
        return ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp.get_context("spawn"),
            initializer=_start_worker,
            initargs=(
                self.mapping,
                self.recheck,
                self.recheck_delay,
                self.cdc.bound,
                rate,
                self.limit,
            ),
        )

    def extras(
        self, plan: CollectionPlan, res: CollectionResult, *, sample_pct: float, rnd: random.Random
    ) -> list[Difference]:
        """Target documents whose source row does not exist (or is filtered out), by a scan
        of the collection's `_id`s."""
        found: list[Difference] = []
        batch: list[Any] = []
        for d in self.db[plan.name].find({}, {"_id": 1}).batch_size(1000):
            batch.append(d["_id"])
            if len(batch) >= 1000:
                if sample_pct >= 100 or rnd.random() * 100 < sample_pct:
                    found += self._extras_among(plan, batch, res)
                batch = []
        if batch and (sample_pct >= 100 or rnd.random() * 100 < sample_pct):
            found += self._extras_among(plan, batch, res)
        return found

    def _extras_among(
        self, plan: CollectionPlan, ids: list[Any], res: CollectionResult
    ) -> list[Difference]:
        """Which of these documents have no source row (checked again, as every difference)."""
        ids = [bson.decode(i.raw, _PLAIN) if isinstance(i, RawBSONDocument) else i for i in ids]
        rows = self._rows_named(plan, ids)
        present = {id_key(plan.doc_id(r)) for r in rows}
        suspects = [i for i in ids if id_key(i) not in present]
        if not suspects:
            return []
        return [d for d in self.check_keys(plan, suspects, res) if d.kind == "extra"]

    def changed(
        self,
        plan: CollectionPlan,
        res: CollectionResult,
        since: datetime | None,
        also: Sequence[Any] = (),
    ) -> list[Difference]:
        """Only the documents CDC touched (since a time), and `also` these (the differences
        earlier runs left open), a page of 1,000 at a time."""
        self.progress.start(plan.name, 0)
        found: list[Difference] = []
        page: list[Any] = []

        def check() -> None:
            res.checked += len(page)
            res.chunks += 1
            found.extend(self.check_keys(plan, page, res))
            self.progress.advance(plan.name, len(page))
            page.clear()

        seen: set[Any] = set()
        for doc_id in itertools.chain(also, self.state.touched_ids(plan.name, since)):
            k = id_key(doc_id)
            if k in seen:
                continue
            seen.add(k)
            page.append(doc_id)
            if len(page) >= 1000:
                check()
        if page:
            check()
        self.progress.finish(plan.name, res.checked)
        return found

    # -- repair ------------------------------------------------------------------------------
    def repair(
        self, plan: CollectionPlan, diffs: list[Difference], res: CollectionResult
    ) -> list[Difference]:
        """Rebuild differing documents from the source (deleting extras), check them again.
        After the write switch the source is MongoDB: the rows are written from the documents
        instead (reverse_repair)."""
        if (self.state.mongo_is_truth() is not None) != self.toward_mysql:
            # a write switch or rollback since this run began: its differences were found
            # against the other store, and repairing them now would overwrite the truth
            raise CheckFailed(
                f"the source of truth moved while `verify --repair` ran (it repaired toward "
                f"{'MySQL' if self.toward_mysql else 'MongoDB'}): nothing more is repaired",
                hint="run `migrator verify --repair` again: it repairs toward the phase's "
                "source of truth",
            )
        todo = [d for d in diffs if d.kind != "unconvertible"]  # nothing to write for those
        if self.toward_mysql:
            todo = diffs  # a row MySQL holds that does not convert is rewritten from MongoDB
        if not todo:
            return diffs
        ids = [d.id for d in todo]
        if self.toward_mysql:
            # a document MongoDB lacks because the tool could not build or write it (the row
            # does not convert, or it is a dead letter) was never deleted by anyone: its row
            # is the only copy and stays
            stored = [storable(i) for i in ids]
            lettered = {
                id_key(d["key"])
                for d in self.state.dead_letters.find(
                    {"collection": plan.name, "key": {"$in": stored}}, {"key": 1}
                )
            }
            keep = {id_key(d.id) for d in todo if d.kind == "unconvertible"} | lettered
            self.reverse_repair(plan, ids, keep_rows=keep)
        else:
            named = [i for i in ids if plan.names_a_row(i)]
            ops = rebuild_ops(self.conn, plan, [id_to_key(plan, i) for i in named])
            ops += [DeleteOne({"_id": i}) for i in ids if not plan.names_a_row(i)]
            coll = self.db[plan.name]
            if ops:
                self.state.note_deletes(plan.name, sum(isinstance(op, DeleteOne) for op in ops))
                with_retry(lambda: coll.bulk_write(ops, ordered=True))
        left = self.check_keys(plan, ids, res)
        res.repaired += len(todo) - len(left)
        return left + [d for d in diffs if d.kind == "unconvertible" and d not in todo]

    def reverse_repair(self, plan: CollectionPlan, ids: list[Any], keep_rows: set[Any]) -> None:
        """Write MySQL's rows from MongoDB's documents (deleting the rows of documents that are
        gone, except `keep_rows`), as reverse sync does. A document that changes meanwhile is
        written again, so a repair never leaves MySQL behind a change reverse sync applied."""
        from migrator.reverse.applier import ReverseApplier, ReverseChange

        conn = mysql_connect(self._src, raw=True)
        conn.autocommit(False)
        try:
            applier = ReverseApplier(self.transform, conn)
            coll = self.db[plan.name]
            pending = list(ids)
            for _ in range(5):
                docs = {id_key(i): with_retry(partial(coll.find_one, {"_id": i})) for i in pending}
                changes = [
                    ReverseChange(plan.name, "delete" if d is None else "upsert", i, d)
                    for i, d in zip(pending, docs.values(), strict=True)
                    if d is not None or id_key(i) not in keep_rows
                ]
                out = applier.apply(changes)
                for ch, why in out.problems:
                    log.warning("verify --repair: %s %r not written to MySQL: %s",
                                plan.name, ch.doc_id, why)  # fmt: skip
                now_docs = [with_retry(partial(coll.find_one, {"_id": i})) for i in pending]
                pending = [
                    i for i, d in zip(pending, now_docs, strict=True) if d != docs[id_key(i)]
                ]
                if not pending:
                    break
        finally:
            conn.close()


@dataclass
class _Expected:
    """What a set of source rows should be in the target."""

    docs: dict[Any, bytes]  # id key -> the document the row becomes, encoded
    bad: dict[Any, tuple[Any, str]]  # id key -> (_id, why the row does not convert)


def _prepared_size(p: PreparedChunk) -> int:
    return p.size()


_WORKER: Verifier | None = None  # a worker process's own (see Verifier._pool)


def _start_worker(
    mapping: Mapping,
    recheck: int,
    recheck_delay: float,
    recheck_wait: float,
    rate: float,
    limit: int,
) -> None:
    global _WORKER
    logs.inherit()
    _WORKER = Verifier(
        mapping,
        recheck=recheck,
        recheck_delay=recheck_delay,
        recheck_wait=recheck_wait,
        max_rows_per_sec=rate,
        limit_differences=limit,
    )


def _check_chunk(name: str, lo: Any, hi: Any) -> tuple[int, list[Difference], int]:
    assert _WORKER is not None
    return _WORKER.check_chunk(_WORKER.transform.collection(name), lo, hi)
