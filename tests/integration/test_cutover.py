"""The phase machine against real servers: the walk forward and back, gates refusing, the
lease, dry runs, forced steps, the write switch and its crash recovery."""

from __future__ import annotations

import json
from datetime import timedelta

from migrator.cdc.runner import run_cdc
from migrator.cutover.control import Control
from migrator.cutover.gates import cdc_lag_seconds
from migrator.model.phases import PHASES
from migrator.model.settings import load_mapping
from migrator.state.store import StateStore, now
from migrator.verify.engine import verify

from .conftest import migrator_cmd
from .helpers import ready, step, wait_until, walk_to


def test_walk_forward_to_done_and_back(env):
    path = ready(env)
    seen = []
    for _ in range(6):
        seen.append(json.loads(step(path, "--next").stdout)["to"])
    assert seen == ["backfill", "sync", "dual_write", "read_mongo", "write_mongo", "done"]
    st = json.loads(migrator_cmd("status", "-m", str(path), "--json", check=0).stdout)
    assert st["phase"] == "done" and st["reads_from"] == "mongo" and st["freeze"] is False
    assert st["source_of_truth"] == "mongo" and st["next_phase"] is None
    rb = json.loads(
        migrator_cmd(
            "rollback", "-m", str(path), "--yes", "--json", "--reason", "drill", check=0
        ).stdout
    )
    assert (rb["from"], rb["to"]) == ("done", "write_mongo")
    migrator_cmd("rollback", "-m", str(path), "--to", "sync", "--yes", check=0)
    st = json.loads(migrator_cmd("status", "-m", str(path), "--json", check=0).stdout)
    assert st["phase"] == "sync" and st["writes_to"] == ["mysql"]
    kinds = [(a["kind"], a["outcome"], a["to_phase"]) for a in reversed(st["audit"])]
    assert kinds[-2:] == [("rollback", "done", "write_mongo"), ("rollback", "done", "sync")]
    switch = env.state.audit.find_one({"to_phase": "write_mongo", "kind": "cutover"})
    assert switch["write_pause_ms"] is not None and switch["actor"] == "test@ci"


def test_gates_refuse_and_are_audited(env):
    path = ready(env)
    walk_to(path, "sync")
    # lag: a change CDC has not applied, older than the threshold (2 s)
    env.sql("UPDATE orders SET note = 'lagging' WHERE id = 1")
    m = load_mapping(path)
    state = StateStore(env.mongo, m.state.database)
    wait_until(lambda: (cdc_lag_seconds(m, state) or 0) > 2.5, "the lag to pass 2 s")
    # dirty verification, and a dead letter
    env.target.orders.update_one({"_id": 2}, {"$set": {"status": "tampered"}})
    assert not verify(load_mapping(path), recheck=0).ok
    env.state.dead_letters.insert_one({"reason": "test", "at": now()})
    p = step(path, "--next", check=1)
    for text in ("cdc_lag is", "verify_clean is 2 differences", "dlq_empty is 1 dead letters"):
        assert text in p.stderr, p.stderr
    refused = env.state.audit.find_one({"outcome": "refused", "to_phase": "dual_write"})
    assert refused and {g["name"] for g in refused["gates"] if not g["ok"]} == {
        "cdc_lag",
        "verify_clean",
        "dlq_empty",
    }
    assert Control(env.state.control).get()["phase"] == "sync"
    # --force needs --reason, and is audited as forced
    p = step(path, "--next", "--force", check=2)
    assert "--force needs --reason" in p.stderr
    res = json.loads(step(path, "--next", "--force", "--reason", "CHG-1").stdout)
    assert res["forced"] is True
    assert env.state.audit.find_one({"outcome": "done", "to_phase": "dual_write"})["forced"]


def test_stale_verification_dry_run_jump_and_tty(env, tmp_path):
    path = ready(env)
    pb = tmp_path / "pb.yaml"
    pb.write_text(
        "version: 1\nsteps:\n  backfill: {gates: [verify_clean], verify_max_age_minutes: 0.0001}\n"
    )
    p = step(path, "--next", "--playbook", str(pb), check=1)
    assert "verify_clean is clean" in p.stderr and "min ago" in p.stderr
    before = Control(env.state.control).get()["version"]
    audits = env.state.audit.count_documents({})
    p = migrator_cmd("cutover", "-m", str(path), "--next", "--dry-run", check=0)
    assert "would go ahead; nothing changed" in p.stdout
    assert Control(env.state.control).get()["version"] == before
    assert env.state.audit.count_documents({}) == audits
    p = step(path, "--to", "dual_write", check=1)
    assert "a jump from 'planned' to 'dual_write' is refused" in p.stderr
    p = migrator_cmd("cutover", "-m", str(path), "--next", check=2)  # no TTY, no --yes
    assert "without --yes on a non-interactive terminal" in p.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nsteps:\n  sync: {gates: [vibes]}\n")
    p = step(path, "--next", "--playbook", str(bad), check=2)
    assert f"{bad}:3 steps.sync.gates[0]" in p.stderr


def test_a_held_lease_stops_a_second_operator(env):
    path = ready(env)
    control = Control(env.state.control)
    control.get()
    control.acquire("alice@laptop", seconds=60)
    p = step(path, "--next", check=1)
    assert "alice@laptop" in p.stderr and "holds the cutover lease" in p.stderr
    assert env.state.audit.find_one({"outcome": "refused"})["detail"].startswith("another")
    control.release("alice@laptop")
    step(path, "--next")


def test_hooks_run_and_a_failing_before_hook_stops_the_step(env, tmp_path):
    path = ready(env)
    marker = tmp_path / "after.txt"
    pb = tmp_path / "pb.yaml"
    pb.write_text(
        "version: 1\nsteps:\n"
        f"  backfill: {{hooks: {{after: [{{run: 'echo done > {marker}'}}]}}}}\n"
        "  sync: {hooks: {before: [{run: 'exit 3', name: flag-flip}]}}\n"
    )
    step(path, "--next", "--playbook", str(pb))
    assert marker.read_text().strip() == "done"
    p = step(path, "--next", "--playbook", str(pb), check=1)
    assert "before-hook 'flag-flip' failed (exit 3)" in p.stderr
    assert Control(env.state.control).get()["phase"] == "backfill"


def test_a_crashed_write_switch_is_recovered_to_read_mongo_unfrozen(env):
    path = ready(env)
    control = Control(env.state.control)
    doc = control.get()
    control.compare_and_set(
        doc["version"],
        {
            "phase": "read_mongo",
            "freeze": True,
            "lease": {
                "holder": "crashed@host",
                "since": now(),
                "expires": now() - timedelta(seconds=1),
            },
        },
    )
    st = json.loads(migrator_cmd("status", "-m", str(path), "--json", check=0).stdout)
    assert st["phase"] == "read_mongo" and st["freeze"] is False
    assert env.state.audit.find_one({"kind": "recovery"}) is not None


def test_rollback_works_from_every_phase(env):
    """`migrator rollback` from each phase goes one phase back (the steps forward, set-up, go
    in process)."""
    path = ready(env, orders=5)
    for target in PHASES[1:]:
        walk_to(path, target)
        rb = json.loads(
            migrator_cmd("rollback", "-m", str(path), "--yes", "--json", check=0).stdout
        )
        assert (rb["from"], rb["to"]) == (target, PHASES[PHASES.index(target) - 1])
        assert Control(env.state.control).get()["phase"] == rb["to"]
    walk_to(path, "done")
    rb = json.loads(
        migrator_cmd(
            "rollback", "-m", str(path), "--to", "planned", "--yes", "--json", check=0
        ).stdout
    )
    assert rb["to"] == "planned"
    p = migrator_cmd("rollback", "-m", str(path), "--yes", check=1)
    assert "nothing to roll back to" in p.stderr


def test_a_failing_write_switch_unfreezes_and_stays_in_read_mongo(env):
    path = ready(env)
    walk_to(path, "read_mongo")
    # a change CDC applied recently, then drift in MongoDB: the switch's re-verification fails
    env.sql("UPDATE orders SET note = 'recent' WHERE id = 6")
    run_cdc(load_mapping(path), mode="until-caught-up")
    env.target.orders.update_one({"_id": 6}, {"$set": {"note": "drifted"}})
    p = step(path, "--to", "write_mongo", "--force", "--reason", "try", check=1)
    assert "re-verification of recent changes found 1 differences" in p.stderr
    doc = Control(env.state.control).get()
    assert doc["phase"] == "read_mongo" and doc["freeze"] is False and doc["lease"] is None
