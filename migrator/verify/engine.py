"""Row-by-row verification through the mapping, with re-checks, repair and stored summaries.

For each collection the root table is walked by primary key in chunks; each chunk's source rows
(and their embedded rows) become the expected documents through the same Transform that wrote
them; the target documents with the same `_id`s are fetched and compared by canonical hash,
drilling down to field differences only where hashes differ. Target documents with no source
row are found by streaming the target's `_id`s and asking the source which exist. A difference
is re-checked a few times before it is reported, so rows changing under a live load (and CDC
catching up) are not reported as false differences.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import timedelta
from typing import Any

from migrator.errors import MigratorError
from migrator.model.settings import Mapping
from migrator.model.transform import CollectionPlan
from migrator.progress import Progress
from migrator.runtime import Migration, opened
from migrator.state.store import decode_key, encode_key, now
from migrator.verify.checker import (
    RECHECK_WAIT,
    Verifier,
)
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

log = logging.getLogger(__name__)


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '2h', '1d' -> timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise MigratorError(
            f"--since {text!r}: expected a duration like 90s, 15m, 2h or 1d"
        ) from None


def verify(
    mapping: Migration | Mapping,
    *,
    collections: list[str] | None = None,
    sample_pct: float = 100,
    changed: bool = False,
    since: timedelta | None = None,
    repair: bool = False,
    chunk_size: int | None = None,
    max_rows_per_sec: float = 0.0,
    recheck: int = 3,
    recheck_delay: float = 0.5,
    recheck_wait: float = RECHECK_WAIT,
    seed: int | None = None,
    workers: int = 1,
    restart: bool = False,
    shared: bool = False,
    progress: Progress | None = None,
    verifier: Verifier | None = None,
) -> VerifyResult:
    """Verify; a full run checkpoints after every group of chunks in the state store and an
    interrupted run is resumed by the next one with the same options (`restart` starts over).
    `verifier`: one made beforehand (the write switch prepares it before its freeze); the
    caller closes it. `shared`: a full run whose chunks processes on several machines claim
    from the state store (verify/shared.py)."""
    if shared and (changed or since or sample_pct < 100):
        raise MigratorError(
            "--shared verifies every chunk: it cannot be combined with --sample, --since or "
            "--changed"
        )
    v = verifier or Verifier(
        mapping,
        recheck=recheck,
        recheck_delay=recheck_delay,
        recheck_wait=recheck_wait,
        max_rows_per_sec=max_rows_per_sec,
        progress=progress,
    )
    mode = "changed" if (changed or since) else ("sample" if sample_pct < 100 else "full")
    run = _Run(
        v,
        mode,
        sample_pct=sample_pct,
        since=since,
        repair=repair,
        chunk_size=chunk_size or v.mapping.backfill.chunk_size,
        seed=seed,
        workers=workers,
    )
    try:
        plans = run.plans(collections)
        log.info(
            "verify started",
            extra={
                "mode": mode,
                "collections": [p.name for p in plans],
                "sample_pct": sample_pct,
                "repair": repair,
                "workers": workers,
                "shared": shared,
            },
        )
        if shared:
            start = run.op_start if v.toward_mysql else None
            complete = run.result.complete
            result = _shared(v, plans, complete, chunk_size, workers, repair, restart, start)
        else:
            run.resume(plans, restart=restart)
            tracked = {p.name: run.collection(p) for p in plans}
            result = run.finish(plans, tracked)
        totals = result.to_dict()["totals"]
        log.info(
            "verify finished",
            extra={"ok": result.ok, "mode": mode, **totals, "seconds": round(result.seconds, 3)},
        )
        return result
    finally:
        if verifier is None:
            v.close()


class _Run:
    """One verification run (not shared): its collections, its resumable progress (a full
    run's), and what it records at the end."""

    def __init__(
        self,
        v: Verifier,
        mode: str,
        *,
        sample_pct: float,
        since: timedelta | None,
        repair: bool,
        chunk_size: int,
        seed: int | None,
        workers: int,
    ) -> None:
        self.v, self.mode, self.sample_pct, self.since = v, mode, sample_pct, since
        self.repair, self.chunk_size, self.workers = repair, chunk_size, workers
        self.rnd = random.Random(seed)
        self.result = VerifyResult(mode=mode, started=now())
        # --since: the window ends now, the run's start (not each collection's)
        self.cutoff = self.result.started - since if since is not None else None
        self.t0 = time.monotonic()
        self.progress_doc: dict[str, Any] = {}
        self.resumed = False
        # repair goes toward the source of truth of the phase: MySQL -> MongoDB until the
        # write switch, MongoDB -> MySQL (through the reverse mapping) after it
        v.toward_mysql = repair and v.state.mongo_is_truth() is not None
        self.op_start: Any = None
        if v.toward_mysql:
            from migrator.reverse.runner import operation_time

            self.op_start = operation_time(v.client)

    def plans(self, collections: list[str] | None) -> list[CollectionPlan]:
        v = self.v
        unknown = set(collections or []) - {p.name for p in v.transform.collections}
        if unknown:
            raise MigratorError(
                f"--collections: no collection named {', '.join(sorted(unknown))} "
                f"in {v.mapping.path}"
            )
        all_names = {c.name for c in v.mapping.collections}
        self.result.complete = not collections or all_names <= set(collections)
        return [p for p in v.transform.collections if not collections or p.name in collections]

    def resume(self, plans: list[CollectionPlan], *, restart: bool) -> None:
        """A full run goes on from an interrupted one's checkpoint (same options)."""
        params = {
            "mode": self.mode,
            "collections": [p.name for p in plans],
            "sample": self.sample_pct,
        }
        saved = self.v.state.meta_doc("verify_progress") if self.mode == "full" else None
        self.resumed = bool(
            not restart
            and saved is not None
            and saved.get("status") == "running"
            and saved.get("params") == params
        )
        if self.resumed and saved is not None:
            log.info("verify resuming the interrupted run", extra={"started": saved["started"]})
            self.progress_doc = saved
            self.result.started = saved["started"]
            self.v.progress.note("resuming the interrupted verification from its last checkpoint")
            return
        self.progress_doc = {
            "_id": "verify_progress",
            "status": "running",
            "params": params,
            "started": self.result.started,
            "collections": {},
        }

    def checkpoint(
        self,
        name: str,
        after: Any,
        res: CollectionResult,
        found: list[Difference],
        done: bool = False,
    ) -> None:
        self.progress_doc["collections"][name] = {
            "after": encode_key(after),
            "done": done,
            "checked": res.checked,
            "chunks": res.chunks,
            "rechecked": res.rechecked,
            "diffs": [diff_doc(d) for d in found[: self.v.limit]],
        }
        self.progress_doc["updated_at"] = now()  # the live view tells running from interrupted
        self.v.state.save_meta_doc("verify_progress", dict(self.progress_doc))

    def collection(self, p: CollectionPlan) -> tuple[list[Difference], list[Any]]:
        """Verify one collection (repairing if asked); returns its differences and the open
        keys it re-checked."""
        v, res = self.v, CollectionResult(name=p.name)
        reopened: list[Any] = []
        if self.mode == "changed":
            cutoff = self.cutoff
            if self.since is None:  # --changed: since the last run that covered it
                last = v.state.last_covering_run(p.name)
                cutoff = last["started"] if last else None
            reopened = v.state.open_difference_keys(p.name)
            diffs = v.changed(p, res, cutoff, also=reopened)
        else:
            diffs = self._walk(p, res)
        if self.repair and diffs:
            before = len(diffs)
            diffs = v.repair(p, diffs, res)
            self.result.repaired += before - len(diffs)
            log.warning(
                "repaired",
                extra={
                    "collection": p.name,
                    "toward": "mysql" if v.toward_mysql else "mongodb",
                    "repaired": before - len(diffs),
                    "still_different": len(diffs),
                },
            )
        for d in diffs:
            setattr(res, d.kind, getattr(res, d.kind) + 1)
            res.behind += d.cdc_behind
        log.info(
            "collection verified",
            extra={"collection": p.name, "clean": res.clean, **_counts(res)},
        )
        room = max(0, v.limit - len(self.result.differences))
        self.result.differences += diffs[:room]
        self.result.collections.append(res)
        return diffs, reopened

    def _walk(self, p: CollectionPlan, res: CollectionResult) -> list[Difference]:
        """A full (or sampled) walk of the collection, from its checkpoint when resuming."""
        prior = self.progress_doc["collections"].get(p.name) if self.resumed else None
        found = [diff_from_doc(d) for d in (prior or {}).get("diffs", [])]
        if prior:
            res.checked, res.chunks = prior["checked"], prior["chunks"]
            res.rechecked = prior["rechecked"]
        if prior and prior.get("done"):
            return found
        full = self.mode == "full"
        diffs = self.v.full(
            p,
            res,
            sample_pct=self.sample_pct,
            chunk_size=self.chunk_size,
            rnd=self.rnd,
            workers=self.workers,
            after=decode_key(prior["after"]) if prior else None,
            found=found,
            checkpoint=self.checkpoint if full else None,
        )
        if full:
            self.checkpoint(p.name, [], res, diffs, done=True)
        return diffs

    def finish(
        self, plans: list[CollectionPlan], tracked: dict[str, tuple[list[Difference], list[Any]]]
    ) -> VerifyResult:
        v, result = self.v, self.result
        result.seconds = time.monotonic() - self.t0
        track_open_differences(v.state, result, tracked, v.limit)
        if self.mode == "full":
            v.state.delete_meta_doc("verify_progress")
            repaired_from = self.op_start if v.toward_mysql and not self.resumed else None
            settle_full_run(v.state, result, [p.name for p in plans], repaired_from)
        covers = self.mode == "full" or (self.mode == "changed" and self.since is None)
        record_run(v.state, result, covers=covers)
        return result


def _counts(res: CollectionResult) -> dict[str, int]:
    kinds = ("checked", "missing", "extra", "different", "unconvertible", "rechecked", "behind")
    return {k: getattr(res, k) for k in kinds}


def _shared(
    v: Verifier,
    plans: list[CollectionPlan],
    complete: bool,
    chunk_size: int | None,
    workers: int,
    repair: bool,
    restart: bool,
    op_start: Any,
) -> VerifyResult:
    """This process's part of a shared full verification, and then the whole run's result."""
    from migrator.verify.shared import SharedRun, run_params

    run = SharedRun(v, run_params(plans, repair=repair), op_start=op_start)
    if not run.join(plans, chunk_size=chunk_size or v.mapping.backfill.chunk_size, restart=restart):
        log.info("verify joins a shared run", extra={"run": str(run.run)})
        v.progress.note(f"joining the shared verification {run.run}")
    for p in plans:
        v.progress.start(p.name, p.table.rows_estimate)
    run.work(workers=workers, repair=repair)
    result = run.finish([p.name for p in plans], complete)
    for res in result.collections:
        v.progress.finish(res.name, res.checked)
        log.info(
            "collection verified",
            extra={"collection": res.name, "clean": res.clean, **_counts(res)},
        )
    return result


def follow(
    mapping: Migration | Mapping,
    *,
    settle_seconds: float,
    stop: threading.Event,
    on_pass: Any,
    recheck: int = 3,
    recheck_delay: float = 0.5,
    recheck_wait: float = RECHECK_WAIT,
) -> VerifyResult | None:
    """Keep re-verifying the documents CDC touched, each after a settle delay (Ghostferry's
    inline verifier); a difference is reported only if it stays after its re-checks."""
    since_clean = now()  # the window starts at the last pass that ended clean
    result = None
    with opened(mapping) as migration:  # opened once, not at every pass
        while not stop.wait(settle_seconds):
            started = now()
            window = started - since_clean + timedelta(seconds=settle_seconds)
            result = verify(
                migration,
                since=window,
                recheck=recheck,
                recheck_delay=recheck_delay,
                recheck_wait=recheck_wait,
            )
            if not result.differences:
                since_clean = started  # else keep re-checking what is still different
            on_pass(result)
    return result
