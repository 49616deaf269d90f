"""Application processes writing through the SDK while an operator walks every phase, switches
writes to MongoDB, rolls back from write_mongo and goes forward again to done (the cutover end
to end): every acknowledged write is in both stores, hot rows hold a value a serial order
allows, verify is clean and nothing is left frozen."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from typing import Any

from migrator.cdc.runner import run_cdc
from migrator.cutover.gates import cdc_lag_seconds
from migrator.model.settings import load_mapping
from migrator.state.store import StateStore
from migrator.verify.engine import verify

from .conftest import REPO, migrator_cmd
from .helpers import ready, start_cdc, step, wait_until

PROCESSES = 3


def test_application_processes_through_every_phase_a_rollback_and_forward_again(env, tmp_path):
    path = ready(env, orders=20)
    log, stop = tmp_path / "acks.jsonl", tmp_path / "stop"
    log.touch()
    cdc = start_cdc(env, path)
    # the application processes (not the CLI): each writes through its own DualWriter
    app = [sys.executable, "-m", "tests.integration.app_process", str(path), str(log)]
    apps = [
        subprocess.Popen(
            [*app, str(w), str(stop)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(PROCESSES)
    ]
    walked = []

    def acknowledged() -> int:
        return len(log.read_text().splitlines())

    def more_writes(n: int) -> None:
        """Wait until the applications have acknowledged `n` more writes (in this phase)."""
        start = acknowledged()
        wait_until(
            lambda: acknowledged() >= start + n or any(a.poll() is not None for a in apps),
            f"{n} more acknowledged writes",
        )
        assert not [a.args for a in apps if a.poll() is not None], "an application died"

    try:
        more_writes(20)
        plan = ["backfill", "sync", "dual_write", "read_mongo", "write_mongo", "rollback",
                "write_mongo", "done"]  # fmt: skip
        for target in plan:
            if target == "write_mongo":
                # as the cdc_lag gate has it: the switch is taken once CDC keeps up
                m = load_mapping(path)
                state = StateStore.open(env.mongo, m)
                wait_until(
                    lambda m=m, state=state: (
                        (lag := cdc_lag_seconds(m, state)) is not None and lag <= 1.0
                    ),
                    "CDC to catch up under the load",
                    timeout=90,
                    every=0.2,
                )
            if target == "rollback":
                r = migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "drill",
                                 "--actor", "test@ci", "--json", check=0)  # fmt: skip
            else:
                r = step(path, "--to", target, "--force", "--reason", "walk")
            assert r.returncode == 0, (target, r.stdout, r.stderr)
            walked.append(json.loads(r.stdout)["to"])
            more_writes(20)
    finally:
        stop.touch()
        errors = []
        for a in apps:
            a.wait(timeout=120)
            errors.append(a.stderr.read() if a.returncode else "")
        cdc.stop()
    assert not any(errors), errors
    assert walked[-1] == "done" and "read_mongo" in walked[5:]

    m = load_mapping(path)
    run_cdc(m, mode="until-caught-up")  # reverse sync drains what follow had not yet applied
    acks = [json.loads(line) for line in log.read_text().splitlines()]
    assert len({(a["op"]) for a in acks}) == 4 and len(acks) > 100, len(acks)

    # inserted orders: each belongs to one thread, so its end state is known exactly
    want: dict[int, dict[str, Any] | None] = {}
    for a in acks:
        if a["op"] == "insert":
            want[a["id"]] = {"status": "new", "qty": a["qty"]}
        elif a["op"] == "paid":
            want[a["id"]]["status"] = "paid"  # type: ignore[index]
        elif a["op"] == "delete":
            want[a["id"]] = None
    rows = {
        r[0]: (r[1], r[2])
        for r in env.sql(
            "SELECT o.id, o.status, i.qty FROM orders o LEFT JOIN order_items i "
            "ON i.order_id = o.id WHERE o.id >= 10000000"
        )
    }
    docs = {d["_id"]: d for d in env.target.orders.find({"_id": {"$gte": 10_000_000}})}
    for oid, w in want.items():
        if w is None:
            assert oid not in rows and oid not in docs, oid
            continue
        assert rows.get(oid) == (w["status"], w["qty"]), (oid, rows.get(oid), w)
        d = docs.get(oid)
        assert d is not None and d["status"] == w["status"], (oid, d, w)
        assert [i["qty"] for i in d["items"]] == [w["qty"]], (oid, d)
    assert env.sql("SELECT COUNT(*) FROM order_items WHERE order_id >= 10000000")[0][0] == sum(
        1 for w in want.values() if w is not None
    )

    # hot rows: the final note is one a serial order of the acknowledged writes allows (no
    # write that started after it was acknowledged), and both stores agree
    hot: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for a in acks:
        if a["op"] == "hot":
            hot[a["id"]].append(a)
    for hid, writes in hot.items():
        mysql_note = env.sql(f"SELECT note FROM orders WHERE id = {hid}")[0][0]
        assert env.target.orders.find_one({"_id": hid})["note"] == mysql_note, hid
        allowed = {w["note"] for w in writes if not any(o["t0"] > w["at"] for o in writes)}
        assert mysql_note in allowed, (hid, mysql_note, sorted(allowed)[:5])

    res = verify(m)
    assert res.ok, [(d.id, d.fields) for d in res.differences[:5]]
    control = env.state.control.find_one({"_id": "control"})
    assert control["phase"] == "done" and not control.get("freeze")
    assert not control.get("interrupted_switch")
    audit = [
        (a["kind"], a["outcome"], a["to_phase"])
        for a in env.state.audit.find({"kind": {"$in": ["cutover", "rollback"]}}).sort("at", 1)
    ]
    assert ("rollback", "done", "read_mongo") in audit, audit
