"""Review findings for commit 374a950 (`verify --shared`, `--changed` coverage, reverse sync's
start token, Debezium --dry-run). Each test FAILS on the code as reviewed; its docstring names
the scenario and the rule it breaks.

Several tests drive `SharedRun` (migrator/verify/shared.py) in-process, step by step, so that a
"process" pauses at an exact moment (as a GC pause, a descheduled pod or a VM stall would make a
real one pause): every step they call is the one `_shared` / `SharedRun.work` calls.

The third finding (a clean shared `--repair` after the switch did not restart a lost reverse
sync) is checked by test_reverse_sync.py's repair test, run both ways.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from migrator.backfill.copy import backfill
from migrator.model.settings import load_mapping
from migrator.verify.checker import Verifier
from migrator.verify.engine import verify
from migrator.verify.shared import SharedRun, run_params

from .conftest import migrator_cmd
from .test_backfill import make_shop
from .test_verify import tamper


def _process(path) -> tuple[Verifier, list, SharedRun]:
    """What `_shared` builds for one `verify --shared` process (recheck 0: no waiting)."""
    v = Verifier(load_mapping(path), recheck=0)
    plans = list(v.transform.collections)
    run = SharedRun(v, run_params(plans, repair=False), poll=0.05)
    return v, plans, run


def _shape(res) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    data = res.to_dict() if not isinstance(res, dict) else res
    diffs = sorted((d["collection"], str(d["_id"]), d["kind"]) for d in data["differences"])
    return diffs, {n: c["checked"] for n, c in data["collections"].items()}


def test_a_process_that_finished_its_tasks_reports_a_clean_empty_run_when_a_new_run_is_planned_before_it_reads_the_results(  # noqa: E501
    env,
):
    """Scenario: process A of a shared run has checked every task (`work` returned: nothing
    left) and pauses for a moment before `finish` reads the tasks' results. Meanwhile a new
    `verify --shared` (same options, no --restart: e.g. the next scheduled Job's pod) starts:
    it sees the plan `running`, planned, with no task left, closes it (join ->
    finish(complete=False)) and plans a new run, whose `_plan` deletes EVERY document of
    `verify_chunks` (`delete_many({})`), the old run's results included. A then reads its run's
    tasks: none. A prints and exits with a clean result that checked nothing.

    Rule broken: verification must never miss a difference that exists (the data has 14
    differences; A reports ok with 0 checked), and every full verification's counts must
    equal one process's. Cause: shared.py `SharedRun._plan` deletes all runs' tasks
    (`tasks.delete_many({})`) and `join` replaces a finished-but-unclosed run while one of its
    processes still has to read it; `finish` does not notice its run's tasks are gone."""
    path = make_shop(env, orders=40)
    backfill(load_mapping(path), workers=1)
    tamper(env, 11, 40)
    want = _shape(verify(load_mapping(path), recheck=0, restart=True))
    assert want[0], "the tampering made differences"

    v, plans, a = _process(path)
    try:
        assert a.join(plans, chunk_size=10, restart=False)
        a.work(workers=1, repair=False)  # A checked every task; it pauses before finish()
        # a new `verify --shared` with the same options arrives
        c = verify(load_mapping(path), recheck=0, shared=True)
        assert _shape(c) == want  # the new run itself is right
        res = a.finish([p.name for p in plans], complete=True)
    finally:
        v.close()
    assert _shape(res) == want, (
        f"process A's printed result: ok={res.ok}, "
        f"checked={sum(c.checked for c in res.collections)}, differences={len(res.differences)}"
    )
    assert not res.ok


def test_a_stalled_process_s_repair_is_not_counted_and_the_difference_it_repaired_is_reported_nowhere(  # noqa: E501
    env,
):
    """Scenario: `verify --shared --repair`. Process A claims the first task (orders 1-10; order 3's
    document was deleted from MongoDB), then stalls past its 30 s lease (here:
    its lease is made to expire). Process B claims the task again, as designed. A wakes up,
    checks the task, finds order 3 missing and REPAIRS it (re-copies the document); its
    `_done` then records nothing, because only the lease holder records a result. B checks
    the task after that: order 3 is there, nothing to report, nothing repaired. The run's
    result, printed by every process and recorded in verify_runs: ok, 0 missing, 0 repaired.

    Rule broken: every full verification's counts must equal one process's (one process's
    `verify --repair` reports repaired=1 for the same data), and a difference that existed
    is reported nowhere (not as a difference, not as a repair): the record says the copy was
    always right. Cause: shared.py `SharedRun._check` repairs (a write) before `_done`
    checks that this process still holds the task; the comment on `_done` ("a process that
    lost its lease ... leaves the result to the one that took the task over") holds for a
    check but not for a repair, whose effect the taker-over can no longer see."""
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    env.target.orders.delete_one({"_id": 3})

    va, plans, a = _process(path)
    vb, _plans, b = _process(path)
    try:
        assert a.join(plans, chunk_size=10, restart=False)
        ta = a._claim()
        assert ta is not None and ta["collection"] == "orders" and ta["seq"] == 0
        # A stalls longer than its lease
        env.state.verify_chunks.update_one(
            {"_id": ta["_id"]}, {"$set": {"lease": datetime.utcnow() - timedelta(seconds=1)}}
        )
        assert not b.join(plans, chunk_size=10, restart=False)  # B joins the running plan
        tb = b._claim()
        assert tb is not None and tb["_id"] == ta["_id"]  # B takes the expired task over
        with va._pool(1) as pool:  # A wakes up and finishes what it was doing
            a._check([ta], pool, repair=True)
        with vb._pool(1) as pool:
            b._check([tb], pool, repair=True)
        b.work(workers=1, repair=True)
        res = b.finish([p.name for p in plans], complete=True)
    finally:
        va.close()
        vb.close()
    assert env.target.orders.find_one({"_id": 3}) is not None  # it was repaired (by A)
    orders_res = {c.name: c for c in res.collections}["orders"]
    # one process's `verify --repair` of the same data: 1 repaired
    assert res.repaired == 1 and orders_res.repaired == 1, (
        f"shared run: ok={res.ok}, repaired={res.repaired}, orders missing={orders_res.missing}"
    )


def test_a_repair_process_joins_a_running_shared_run_started_without_repair(env):
    """Scenario: a `verify --shared` (check only) run is planned and running; a
    `verify --shared --repair` is started (another machine, another operator). It is not
    refused: the plan's options are only the collections, so it joins and repairs the tasks
    it claims, while the check-only process reports the differences of the tasks it claims.
    The single recorded result is a mix of the two (some differences repaired, others only
    reported) that neither option set would give, and a run the operator started read-only
    writes to the target.

    Rule broken: same-options processes join a running plan; other options are refused unless
    --restart (the design; --repair changes both the data and the result). Cause: engine.py
    `_shared` builds `SharedRun(v, {"collections": [...]})`: `repair` (and recheck) are not
    part of the params that `SharedRun.join` compares."""
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    env.target.orders.delete_one({"_id": 15})
    v, plans, a = _process(path)
    try:
        assert a.join(plans, chunk_size=10, restart=False)  # a check-only run, still going
        p = migrator_cmd("verify", "-m", str(path), "--shared", "--repair", "--json")
    finally:
        v.close()
    assert p.returncode == 2 and "other options" in p.stderr, (
        f"exit {p.returncode}: the --repair process joined the check-only run and "
        f"repaired {json.loads(p.stdout)['totals']['repaired'] if p.stdout else '?'} "
        "document(s) in it"
    )


def test_a_planner_slower_than_its_lease_crashes_when_another_process_re_planned_the_run(
    env, monkeypatch
):
    """Scenario: the first `verify --shared` plans the run; reading a big table's chunk
    boundaries takes longer than the planner's 30 s lease (`_plan` lists every boundary of a
    table before its first `_insert`, the only place the lease is renewed). A second process
    joining meanwhile sees the planner's lease expired, takes the plan over under the same run
    id (`_take` + `_plan`: `delete_many({})`, every task inserted again) and starts working.
    The first planner, alive all along, then inserts its tasks: the same `_id`s, a
    DuplicateKeyError (BulkWriteError, not retried): that process dies with a traceback
    instead of joining the run it started (here the lease is 1 s and the boundaries are held
    up 2 s, the same race at a smaller scale).

    Rule broken: a process must not crash (lose its part of the run, exit with an error) for
    being slow; the design has the slow planner's work taken over, not the planner killed.
    Cause: shared.py `SharedRun._plan` never checks that it still holds the plan (`planner`)
    before inserting, and `_insert` ignores that its lease renewal matched nothing; its
    inserts are not idempotent against a plan made by the process that took it over.

    Fixed: the planner renews its lease from a thread while it reads, so an alive planner is
    not taken over; after a real stall (here: another process holding the plan for a second
    while the first reads) the first notices before inserting, waits, and plans again or
    joins, without crashing."""
    import threading

    from migrator.source import reader as reader_mod
    from migrator.verify import shared as shared_mod

    path = make_shop(env, orders=40)
    backfill(load_mapping(path), workers=1)
    monkeypatch.setattr(shared_mod, "PLAN_LEASE_SECONDS", 1.0)
    orig = reader_mod.ChunkReader.boundaries
    stalled = threading.Event()

    def boundaries(self, *a, **k):
        out = list(orig(self, *a, **k))
        if threading.current_thread().name == "slow-planner" and not stalled.is_set():
            # (fixed) the planner's lease is renewed while it reads: it is taken over only
            # after a real stall, which is what this stands for: another process holds the
            # plan now, for the next second
            stalled.set()
            env.state.meta.update_one(
                {"_id": "verify_shared"},
                {"$set": {"planner": "elsewhere:1:x",
                          "planner_expires": datetime.utcnow() + timedelta(seconds=1)}},
            )  # fmt: skip
        return iter(out)

    monkeypatch.setattr(reader_mod.ChunkReader, "boundaries", boundaries)
    errors: list[BaseException] = []
    results = []
    va, plans, a = _process(path)

    def first() -> None:
        try:
            a.join(plans, chunk_size=10, restart=False)
            a.work(workers=1, repair=False)
            results.append(a.finish([p.name for p in plans], complete=True))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=first, name="slow-planner")
    try:
        t.start()
        t.join(120)
    finally:
        va.close()
    assert stalled.is_set()
    assert not errors, f"the first (slow) planner crashed: {repr(errors[0])[:300]}"
    # it lost the plan, waited for the other's lease to lapse, planned again and verified
    assert results and results[0].ok and sum(c.checked for c in results[0].collections) == 80
