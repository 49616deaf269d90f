"""`verify --shared`: N verify processes (N machines) share one plan through the state store.
Each task is checked once (a killed process's task once more, by whoever takes it over), every
process ends with the whole run's result, equal to one process's, and the run is recorded once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from migrator.backfill.copy import backfill
from migrator.model.settings import load_mapping
from migrator.verify.engine import verify

from .conftest import REPO, migrator_cmd
from .test_backfill import make_shop
from .test_verify import tamper


def oracle(path) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    res = verify(load_mapping(path), recheck=0, restart=True)
    return _shape(res.to_dict())


def _shape(data: dict) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    diffs = sorted((d["collection"], str(d["_id"]), d["kind"]) for d in data["differences"])
    return diffs, {n: c["checked"] for n, c in data["collections"].items()}


def start(path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "migrator.cli.main", "verify", "-m", str(path), "--shared",
         "--json", "--max-rows-per-sec", "60", *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_two_processes_share_one_plan_and_each_prints_the_whole_result(env):
    path = make_shop(env, orders=240)
    backfill(load_mapping(path), workers=1)
    tamper(env, 11, 240)
    want = oracle(path)
    runs_before = env.state.verify_runs.count_documents({})
    a, b = start(path), start(path)
    outs = [p.communicate(timeout=300) for p in (a, b)]
    assert [a.returncode, b.returncode] == [1, 1], outs
    got = [_shape(json.loads(o)) for o, _e in outs]
    assert got[0] == want and got[1] == want
    tasks = list(env.state.verify_chunks.find({}))
    assert tasks and all(t["done"] and t["claims"] == 1 for t in tasks)  # each once
    assert len({t["by"] for t in tasks}) == 2  # both took part
    assert env.state.verify_runs.count_documents({}) == runs_before + 1  # recorded once


def test_a_killed_process_s_task_is_taken_over_and_nothing_is_checked_twice_otherwise(env):
    path = make_shop(env, orders=240)
    backfill(load_mapping(path), workers=1)
    tamper(env, 12, 240)
    want = oracle(path)
    a, b = start(path), start(path)
    tasks = env.state.verify_chunks
    mine = f":{a.pid}:"
    orphans: list[dict] = []
    deadline = time.monotonic() + 120
    while not orphans:  # A has finished a task and holds the next one: frozen, then killed
        assert time.monotonic() < deadline and a.poll() is None, "A never held a task"
        if tasks.count_documents({"by": {"$regex": mine}}) >= 1:
            os.kill(a.pid, signal.SIGSTOP)  # what it holds now is what it dies holding
            time.sleep(0.5)  # (a write it had sent lands meanwhile)
            orphans = list(tasks.find({"worker": {"$regex": mine}, "done": False}))
            if not orphans:
                os.kill(a.pid, signal.SIGCONT)
        time.sleep(0.02)
    a.kill()
    a.wait()
    out, err = b.communicate(timeout=300)
    assert b.returncode == 1, err
    assert _shape(json.loads(out)) == want
    docs = {t["_id"]: t for t in tasks.find({})}
    assert all(t["done"] for t in docs.values())
    for o in orphans:  # taken over by the survivor
        assert docs[o["_id"]]["claims"] == 2 and docs[o["_id"]]["by"] != o["worker"]
    taken = {o["_id"] for o in orphans}
    assert all(t["claims"] == 1 for k, t in docs.items() if k not in taken)


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
