"""Reverse sync after the write switch: every writer's MongoDB changes reach MySQL through the
change stream (not only the SDK's), in order, across kill -9 and a MySQL outage; a rollback
waits for them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime

import pytest
from bson.decimal128 import Decimal128

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.cutover.machine import Machine
from migrator.cutover.playbook import default_playbook
from migrator.devtools.sandbox import restart_mysql
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.reverse.runner import record_start
from migrator.source.connection import connect
from migrator.state.store import StateStore
from migrator.verify.engine import verify

from .conftest import REPO, migrator_cmd
from .test_backfill import make_shop


def switch(path) -> None:
    run_cdc(load_mapping(path), mode="until-caught-up")
    m = Machine(load_mapping(path), default_playbook(), actor="test@ci")
    try:
        for target in ("backfill", "sync", "dual_write", "read_mongo", "write_mongo"):
            m.step(target, force=True, reason="test")
    finally:
        m.close()


def wait_until(cond, what, timeout=90.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_changes_by_a_writer_that_is_not_the_sdk_reach_mysql(env):
    path = make_shop(env, orders=12)
    backfill(load_mapping(path), workers=1)
    switch(path)
    # the switch saved its start as a resume token (a seek, not an oplog search per open)
    assert env.state.meta.find_one({"_id": "reverse_checkpoint"})["token"] is not None
    db = env.target
    # plain pymongo, as another service or an admin script would write
    db.orders.update_one(
        {"_id": 1},
        {"$push": {"items": {"line_no": 99, "product_id": 2, "qty": 3,
                             "unit_price": Decimal128("2.50")}}},
    )  # fmt: skip
    first = db.orders.find_one({"_id": 2})["items"][0]["line_no"]
    db.orders.update_one({"_id": 2}, {"$pull": {"items": {"line_no": first}}})
    c5 = db.customers.find_one({"_id": 5})
    db.orders.update_one(
        {"_id": 3},
        {"$set": {"customer_id": 5,
                  "customer": {"id": 5, "email": c5["email"], "name": c5["name"]}}},
    )  # fmt: skip
    new = db.orders.find_one({"_id": 6})
    new.update(_id=700, id=700, orderNo="SO-700")
    for it in new["items"]:
        it["qty"] += 1
    db.orders.insert_one(new)
    db.orders.delete_one({"_id": 7})
    db.customers.update_one({"_id": 5}, {"$set": {"email": "five@example.org"}})
    db.orders.update_many({"customer_id": 5}, {"$set": {"customer.email": "five@example.org"}})
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.reverse_changes >= 7 and summary.dead_letters == 0
    assert env.sql("SELECT qty FROM order_items WHERE order_id = 1 AND line_no = 99")[0][0] == 3
    assert (
        env.sql(f"SELECT COUNT(*) FROM order_items WHERE order_id = 2 AND line_no = {first}")[0][0]
        == 0
    )
    assert env.sql("SELECT customer_id FROM orders WHERE id = 3")[0][0] == 5
    assert env.sql("SELECT COUNT(*) FROM orders WHERE id = 7")[0][0] == 0
    assert env.sql("SELECT COUNT(*) FROM order_items WHERE order_id = 7")[0][0] == 0
    assert env.sql("SELECT order_no FROM orders WHERE id = 700")[0][0] == "SO-700"
    # MySQL's rows now build exactly MongoDB's documents
    res = verify(load_mapping(path))
    assert res.ok, [(d.collection, d.id, d.kind, d.fields) for d in res.differences[:5]]


def test_the_recorded_start_token_resumes_exactly_after_the_start(env):
    """The switch's start is a resume token: a stream resumed from it sees every mapped
    change made after the start and none made before it."""
    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.target.orders.update_one({"_id": 1}, {"$set": {"note": "before the start"}})
    record_start(env.mongo, StateStore(env.mongo, env.state_db), load_mapping(path))
    cp = env.state.meta.find_one({"_id": "reverse_checkpoint"})
    assert cp["token"] is not None and cp["start_at"] is not None
    env.target.orders.update_one({"_id": 2}, {"$set": {"note": "after the start"}})
    env.target.orders.update_one({"_id": 3}, {"$set": {"note": "after the start"}})
    with env.target.watch(resume_after=cp["token"], max_await_time_ms=200) as stream:
        seen = [ev["documentKey"]["_id"] for ev in iter(stream.try_next, None)]
    assert seen == [2, 3]


def test_reverse_sync_survives_kill_9_and_a_mysql_outage_and_gates_the_rollback(own_env):
    env = own_env
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    switch(path)
    cdc_cmd = [sys.executable, "-m", "migrator.cli.main", "cdc", "-m", str(path), "--follow"]

    def start():
        return subprocess.Popen(
            cdc_cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    cdc = start()
    try:
        for i in range(150):  # a stream of changes; CDC killed in the middle of it
            env.target.orders.update_one({"_id": 1 + i % 20}, {"$set": {"note": f"n{i}"}})
            if i == 60:
                cdc.kill()
                cdc.wait()
                cdc = start()
        wait_until(
            lambda: env.sql("SELECT note FROM orders WHERE id = 10")[0][0] == "n149",
            "reverse sync after kill -9",
        )
        res = verify(load_mapping(path))
        assert res.ok, [(d.id, d.fields) for d in res.differences[:5]]
        # MySQL away: MongoDB writes go on, reverse lag grows, a rollback is refused
        mysql = next(p for p in env.stack.procs if p.name in ("mariadb", "mysql"))
        mysql.stop()
        env.target.orders.update_one({"_id": 4}, {"$set": {"note": "while MySQL was away"}})
        time.sleep(2)
        p = migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "try", check=1)
        assert "reverse sync has not written MongoDB's changes to MySQL" in p.stderr
        st = json.loads(migrator_cmd("status", "-m", str(path), "--json", check=0).stdout)
        assert st["phase"] == "write_mongo" and st["reverse_sync"]["lag_seconds"] > 0
        human = migrator_cmd("status", "-m", str(path), check=0).stdout
        assert "reverse sync lag" in human and "a rollback waits for 0" in human
        restart_mysql(env.stack)
        env.admin = connect(parse_mysql_url(env.stack.mysql_url), database=False)
        wait_until(
            lambda: env.sql("SELECT note FROM orders WHERE id = 4")[0][0] == "while MySQL was away",
            "reverse sync to drain",
        )
        p = migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "drained", check=0)
        st = json.loads(migrator_cmd("status", "-m", str(path), "--json", check=0).stdout)
        assert st["phase"] == "read_mongo"
        # MySQL is the source of truth again: no reverse lag to show (CDC writes MongoDB)
        assert st["reverse_sync"]["running"] is False and st["reverse_sync"]["lag_seconds"] is None
    finally:
        cdc.terminate()
        cdc.wait(timeout=60)
    audit = [(a["kind"], a["outcome"]) for a in env.state.audit.find({}).sort("at", 1)]
    assert audit[-2:] == [("rollback", "refused"), ("rollback", "done")]


def test_generated_and_unmapped_not_null_columns_are_said_before_and_handled_after(env):
    """A generated column is MySQL's to compute: reverse sync leaves it out of its writes
    (writing it is an error). A NOT NULL column without a default that the documents do not
    hold: an existing row is still updated (an INSERT ... ON DUPLICATE KEY UPDATE failed on
    its INSERT part for every such row), but a document created after the switch cannot
    become a row: `plan` warns before the switch (check "reverse"), and reverse sync
    dead-letters it with the reason."""
    env.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, a INT NOT NULL, "
        "doubled INT AS (a * 2) STORED, secret VARCHAR(20) NOT NULL)",
        "INSERT INTO t (id, a, secret) VALUES (1, 1, 's1'), (2, 2, 's2')",
    )
    path = env.mapping("  - {name: t, from: t, exclude: [secret]}\n")
    plan = json.loads(migrator_cmd("plan", "-m", str(path), "--json", check=0).stdout)
    notes = [c["message"] for c in plan["checks"] if c["name"] == "reverse"]
    assert any("t.doubled is a generated column" in n for n in notes), notes
    assert any("t.secret is NOT NULL without a default" in n for n in notes), notes
    backfill(load_mapping(path), workers=1)
    assert env.target.t.find_one({"_id": 1})["doubled"] == 2
    switch(path)
    env.target.t.update_one({"_id": 1}, {"$set": {"a": 5, "doubled": 10}})
    env.target.t.insert_one({"_id": 3, "a": 3, "doubled": 6})  # no `secret`: cannot be a row
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.sql("SELECT a, doubled, secret FROM t WHERE id = 1")[0] == (5, 10, "s1")
    assert env.sql("SELECT COUNT(*) FROM t WHERE id = 3")[0][0] == 0
    assert summary.dead_letters == 1
    dead = env.state.dead_letters.find_one({})
    assert "secret" in dead["reason"], dead["reason"]


@pytest.mark.parametrize("how", [[], ["--shared"]], ids=["one process", "shared"])
def test_a_full_verify_repair_rewrites_mysql_and_restarts_a_lost_reverse_checkpoint(env, how):
    """Reverse sync down longer than the oplog window loses its place in the change stream
    (it then stops, naming the way out). A full `verify --repair` after the switch rewrites
    MySQL's rows from MongoDB and restarts reverse sync from its own start; so does a shared
    one (`--shared`, from its plan's start; it did not until a review found it)."""
    path = make_shop(env, orders=12)
    backfill(load_mapping(path), workers=1)
    switch(path)
    # as the runner records it when the stream says the history is gone
    env.state.meta.update_one(
        {"_id": "reverse_checkpoint"}, {"$set": {"lost_at": datetime.utcnow()}}
    )
    env.target.orders.update_one({"_id": 2}, {"$set": {"note": "missed by reverse sync"}})
    env.target.orders.delete_one({"_id": 3})
    p = migrator_cmd("verify", "-m", str(path), "--repair", *how, "--json", check=0)
    assert json.loads(p.stdout)["totals"]["repaired"] == 2
    assert env.sql("SELECT note FROM orders WHERE id = 2")[0][0] == "missed by reverse sync"
    assert env.sql("SELECT COUNT(*) FROM orders WHERE id = 3")[0][0] == 0
    cp = env.state.meta.find_one({"_id": "reverse_checkpoint"})
    assert cp["lost_at"] is None and cp["token"] is None
    env.target.orders.update_one({"_id": 4}, {"$set": {"note": "after the repair"}})
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.sql("SELECT note FROM orders WHERE id = 4")[0][0] == "after the repair"
    assert verify(load_mapping(path)).ok
