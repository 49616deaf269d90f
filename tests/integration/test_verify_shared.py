"""`verify --shared`: N verify processes (N machines) share one plan through the state store.
Each task is checked once (a killed process's task once more, by whoever takes it over), every
process ends with the whole run's result, equal to one process's, and the run is recorded once;
processes with other options are refused; a process that pauses (a GC pause, a descheduled
pod, a VM stall) at the wrong moment neither reports a wrong result nor crashes.

Some tests drive `SharedRun` (migrator/verify/shared.py) in-process, step by step, so that a
"process" pauses at an exact moment: every step they call is the one `_shared` /
`SharedRun.work` calls. A shared `--repair` after the switch restarting a lost reverse sync is
test_reverse_sync.py's repair test, run both ways.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import datetime, timedelta

from migrator.backfill.copy import backfill
from migrator.model.settings import load_mapping
from migrator.source import reader as reader_mod
from migrator.verify import shared as shared_mod
from migrator.verify.checker import Verifier
from migrator.verify.engine import verify
from migrator.verify.shared import SharedRun, run_params

from .conftest import migrator_cmd
from .helpers import cli_process, make_shop, tamper, wait_until


def oracle(path) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    res = verify(load_mapping(path), recheck=0, restart=True)
    return _shape(res.to_dict())


def _shape(res) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """A run's differences and counts, from its result or its JSON."""
    data = res if isinstance(res, dict) else res.to_dict()
    diffs = sorted((d["collection"], str(d["_id"]), d["kind"]) for d in data["differences"])
    return diffs, {n: c["checked"] for n, c in data["collections"].items()}


def start(path, *extra: str):
    return cli_process(
        "verify", "-m", str(path), "--shared", "--json", "--max-rows-per-sec", "60", *extra,
        pipe=True,
    )  # fmt: skip


def test_two_processes_share_one_plan_and_each_prints_the_whole_result(env):
    path = make_shop(env, orders=120)
    backfill(load_mapping(path), workers=1)
    tamper(env, 11, 120, count=6)
    want = oracle(path)
    runs_before = env.state.verify_runs.count_documents({})
    with start(path) as a, start(path) as b:
        outs = [p.communicate(timeout=300) for p in (a, b)]
    assert [a.returncode, b.returncode] == [1, 1], outs
    got = [_shape(json.loads(o)) for o, _e in outs]
    assert got[0] == want and got[1] == want
    tasks = list(env.state.verify_chunks.find({}))
    assert tasks and all(t["done"] and t["claims"] == 1 for t in tasks)  # each once
    assert len({t["by"] for t in tasks}) == 2  # both took part
    assert env.state.verify_runs.count_documents({}) == runs_before + 1  # recorded once


def test_a_killed_process_s_task_is_taken_over_and_nothing_is_checked_twice_otherwise(env):
    path = make_shop(env, orders=120)
    backfill(load_mapping(path), workers=1)
    tamper(env, 12, 120, count=6)
    want = oracle(path)
    with start(path) as a, start(path) as b:
        orphans = _kill_while_holding_a_task(env, a)
        out, err = b.communicate(timeout=300)
    assert b.returncode == 1, err
    assert _shape(json.loads(out)) == want
    docs = {t["_id"]: t for t in env.state.verify_chunks.find({})}
    assert docs and all(t["done"] for t in docs.values())
    for o in orphans:  # taken over by the survivor
        assert docs[o["_id"]]["claims"] == 2 and docs[o["_id"]]["by"] != o["worker"]
    taken = {o["_id"] for o in orphans}
    assert len(docs) > len(taken)
    assert all(t["claims"] == 1 for k, t in docs.items() if k not in taken)


def _kill_while_holding_a_task(env, a) -> list[dict]:
    """Kill process `a` once it has finished a task and holds the next one: the tasks it
    dies holding."""
    tasks = env.state.verify_chunks
    mine = f":{a.pid}:"

    def a_frozen_holding_a_task() -> list[dict]:
        """A has finished a task and holds the next one: frozen there (what it holds now is
        what it dies holding), or let go on to try again."""
        assert a.poll() is None, "A ended before it held a task"
        if tasks.count_documents({"by": {"$regex": mine}}) < 1:
            return []
        os.kill(a.pid, signal.SIGSTOP)
        time.sleep(0.5)  # (a write it had sent lands meanwhile)
        held = list(tasks.find({"worker": {"$regex": mine}, "done": False}))
        if not held:
            os.kill(a.pid, signal.SIGCONT)
        return held

    orphans = wait_until(a_frozen_holding_a_task, "A to hold a task", timeout=120, every=0.02)
    a.kill()
    a.communicate()
    return orphans


def test_a_running_plan_with_other_options_is_refused_and_restart_replaces_it(env):
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    assert migrator_cmd("verify", "-m", str(path), "--shared", "--json", check=0)
    env.state.meta.update_one(  # as a run of `--collections orders` still going would be
        {"_id": "verify_shared"},
        {"$set": {"status": "running", "params": {"collections": ["orders"]}}},
    )
    p = migrator_cmd("verify", "-m", str(path), "--shared", check=2)
    assert "another shared verification with other options is running" in p.stderr
    assert "collections=['orders']" in p.stderr
    p = migrator_cmd("verify", "-m", str(path), "--shared", "--restart", "--json", check=0)
    assert json.loads(p.stdout)["totals"]["checked"] == 20 + 30 + 10
    p = migrator_cmd("verify", "-m", str(path), "--shared", "--sample", "10", check=2)
    assert "--shared verifies every chunk" in p.stderr


def _process(path) -> tuple[Verifier, list, SharedRun]:
    """What `_shared` builds for one `verify --shared` process (recheck 0: no waiting)."""
    v = Verifier(load_mapping(path), recheck=0)
    plans = list(v.transform.collections)
    run = SharedRun(v, run_params(plans, repair=False), poll=0.05)
    return v, plans, run


def test_a_process_reads_its_own_run_s_results_when_a_new_run_is_planned_before_it_finishes(
    env,
):
    """Process A of a shared run has checked every task (`work` returned: nothing left) and
    pauses for a moment before `finish` reads the tasks' results. Meanwhile a new `verify
    --shared` (same options, no --restart: e.g. the next scheduled Job's pod) closes that run
    and plans a new one. A still reports its own run: the differences the data has and the
    counts one process would give (a new plan does not delete the old run's results from
    under it, which made A report a clean run that checked nothing)."""
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


def test_a_repair_by_a_process_that_lost_its_lease_is_counted_in_the_run(env):
    """`verify --shared --repair`: process A claims the first task (orders 1-10; order 3's
    document was deleted from MongoDB), then stalls past its 30 s lease (here: its lease is
    made to expire), and process B claims the task again, as designed. A wakes up and repairs
    order 3; B then finds nothing to repair. The run's result counts the repair (repaired=1,
    as one process's `verify --repair` of the same data): the difference that existed is not
    reported nowhere."""
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


def test_a_repair_process_is_refused_by_a_running_check_only_shared_run(env):
    """A `verify --shared` (check only) run is planned and running; a `verify --shared
    --repair` started meanwhile (another machine, another operator) is refused, exit 2: only
    same-options processes join a running plan (--repair changes the data and the result; a
    mix of the two option sets would be a result neither gives, and a run started read-only
    would write to the target)."""
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


def test_a_planner_that_lost_its_plan_while_reading_plans_again_without_crashing(env, monkeypatch):
    """The first `verify --shared` plans the run; reading a big table's chunk boundaries can
    take longer than the planner's lease. The planner renews its lease from a thread while it
    reads, so an alive planner is not taken over; after a real stall (here: another process
    holding the plan for a second while the first reads, with a 1 s lease) the first notices
    before inserting its tasks, waits for the other's lease to lapse, and plans again or
    joins: it does not crash on the other's tasks (a DuplicateKeyError) and verifies the
    whole run."""

    path = make_shop(env, orders=40)
    backfill(load_mapping(path), workers=1)
    monkeypatch.setattr(shared_mod, "PLAN_LEASE_SECONDS", 1.0)
    orig = reader_mod.ChunkReader.boundaries
    stalled = threading.Event()

    def boundaries(self, *a, **k):
        out = list(orig(self, *a, **k))
        if threading.current_thread().name == "slow-planner" and not stalled.is_set():
            # the planner's lease is renewed while it reads: it is taken over only after a
            # real stall, which is what this stands for: another process holds the plan
            # now, for the next second
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
