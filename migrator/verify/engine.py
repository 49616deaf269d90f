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
from datetime import datetime, timedelta
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
    result = VerifyResult(mode=mode, started=now())
    all_names = {c.name for c in v.mapping.collections}
    result.complete = not collections or all_names <= set(collections)
    t0 = time.monotonic()
    rnd = random.Random(seed)
    cutoff: datetime | None = None
    if since is not None:
        cutoff = now() - since
    try:
        # repair goes toward the source of truth of the phase: MySQL -> MongoDB until the
        # write switch, MongoDB -> MySQL (through the reverse mapping) after it
        v.toward_mysql = repair and v.state.mongo_is_truth() is not None
        if v.toward_mysql:
            from migrator.reverse.runner import operation_time

            op_start = operation_time(v.client)
        plans = [p for p in v.transform.collections if not collections or p.name in collections]
        unknown = set(collections or []) - {p.name for p in v.transform.collections}
        if unknown:
            raise MigratorError(
                f"--collections: no collection named {', '.join(sorted(unknown))} "
                f"in {v.mapping.path}"
            )
        if shared:
            start = op_start if v.toward_mysql else None
            return _shared(v, plans, result.complete, chunk_size, workers, repair, restart, start)
        params = {"mode": mode, "collections": [p.name for p in plans], "sample": sample_pct}
        saved = v.state.meta_doc("verify_progress") if mode == "full" else None
        resume = (
            not restart
            and saved is not None
            and saved.get("status") == "running"
            and saved.get("params") == params
        )
        progress_doc: dict[str, Any] = (
            saved
            if resume and saved
            else {
                "_id": "verify_progress",
                "status": "running",
                "params": params,
                "started": result.started,
                "collections": {},
            }
        )
        if resume:
            result.started = progress_doc["started"]
            v.progress.note("resuming the interrupted verification from its last checkpoint")

        def checkpoint(
            name: str,
            after: Any,
            res: CollectionResult,
            found: list[Difference],
            done: bool = False,
        ) -> None:
            progress_doc["collections"][name] = {
                "after": encode_key(after),
                "done": done,
                "checked": res.checked,
                "chunks": res.chunks,
                "rechecked": res.rechecked,
                "diffs": [diff_doc(d) for d in found[: v.limit]],
            }
            v.state.save_meta_doc("verify_progress", dict(progress_doc))

        tracked: dict[str, tuple[list[Difference], list[Any]]] = {}
        for p in plans:
            res = CollectionResult(name=p.name)
            reopened: list[Any] = []
            if mode == "changed":
                if since is None:  # --changed: since the last run that covered this collection
                    last = v.state.last_covering_run(p.name)
                    cutoff = last["started"] if last else None
                reopened = v.state.open_difference_keys(p.name)
                diffs = v.changed(p, res, cutoff, also=reopened)
            else:
                prior = progress_doc["collections"].get(p.name) if resume else None
                found = [diff_from_doc(d) for d in (prior or {}).get("diffs", [])]
                if prior:
                    res.checked, res.chunks = prior["checked"], prior["chunks"]
                    res.rechecked = prior["rechecked"]
                if prior and prior.get("done"):
                    diffs = found
                else:
                    diffs = v.full(
                        p,
                        res,
                        sample_pct=sample_pct,
                        chunk_size=chunk_size or v.mapping.backfill.chunk_size,
                        rnd=rnd,
                        workers=workers,
                        after=decode_key(prior["after"]) if prior else None,
                        found=found,
                        checkpoint=checkpoint if mode == "full" else None,
                    )
                    if mode == "full":
                        checkpoint(p.name, [], res, diffs, done=True)
            if repair and diffs:
                before = len(diffs)
                diffs = v.repair(p, diffs, res)
                result.repaired += before - len(diffs)
            for d in diffs:
                setattr(res, d.kind, getattr(res, d.kind) + 1)
                res.behind += d.cdc_behind
            tracked[p.name] = (diffs, reopened)
            result.differences += diffs[: max(0, v.limit - len(result.differences))]
            result.collections.append(res)
        result.seconds = time.monotonic() - t0
        track_open_differences(v.state, result, tracked, v.limit)
        if mode == "full":
            v.state.delete_meta_doc("verify_progress")
            repaired_from = op_start if v.toward_mysql and not resume else None
            settle_full_run(v.state, result, [p.name for p in plans], repaired_from)
        record_run(v.state, result, covers=mode == "full" or (mode == "changed" and since is None))
    finally:
        if verifier is None:
            v.close()
    return result


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
        v.progress.note(f"joining the shared verification {run.run}")
    for p in plans:
        v.progress.start(p.name, p.table.rows_estimate)
    run.work(workers=workers, repair=repair)
    result = run.finish([p.name for p in plans], complete)
    for res in result.collections:
        v.progress.finish(res.name, res.checked)
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
