"""A difference found while CDC still has the change to apply is not reported: a re-check
waits until CDC has applied past the rows it read (bounded, and said when the bound is hit);
a later clean check of exactly the keys a run left different settles that run for the gate;
a real difference still blocks."""

from __future__ import annotations

import json

from migrator.backfill.copy import backfill
from migrator.cutover.gates import verification_gate
from migrator.model.settings import load_mapping
from migrator.sink.mongo import connect as mongo_connect
from migrator.state.store import StateStore

from .conftest import migrator_cmd
from .helpers import make_shop, start_cdc, wait_until


def _gate(path) -> tuple[bool, str]:
    m = load_mapping(path)
    client = mongo_connect(m.target.url)
    try:
        return verification_gate(StateStore(client, m.state.database), 60)
    finally:
        client.close()


def _stop(cdc) -> None:
    cdc.stop()


def test_a_recheck_waits_until_a_lagging_cdc_has_applied_the_change(env):
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    cdc = start_cdc(env, path, pause="cdc_apply:4")  # every batch waits 4 s before it applies
    try:
        env.sql("UPDATE orders SET note = 'lagging' WHERE id = 3")
        p = migrator_cmd("verify", "-m", str(path), "--json", check=0)
        res = json.loads(p.stdout)
        assert res["collections"]["orders"]["rechecked"] >= 1
        assert env.target.orders.find_one({"_id": 3})["note"] == "lagging"
    finally:
        _stop(cdc)
    assert _gate(path)[0]


def test_the_bound_is_said_and_a_later_clean_check_settles_the_run(env):
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    cdc = start_cdc(env, path, pause="cdc_apply:7")  # longer than the verify below
    try:
        env.sql("UPDATE orders SET note = 'lagging' WHERE id = 3")
        p = migrator_cmd("verify", "-m", str(path), "--recheck-wait", "1", "--json", check=1)
        res = json.loads(p.stdout)
        assert res["collections"]["orders"]["behind"] == 1
        (diff,) = res["differences"]
        assert diff["_id"] == 3 and "CDC had not applied past" in diff["reason"]
        ok, measured = _gate(path)
        assert not ok and "1 differences still open (orders: 1)" in measured
        wait_until(lambda: env.target.orders.find_one({"_id": 3})["note"] == "lagging", "CDC", 60)
        # the key the full run left different is checked again, found equal: the run settles
        p = migrator_cmd("verify", "-m", str(path), "--changed", "--json", check=0)
        assert json.loads(p.stdout)["totals"]["checked"] >= 1
        ok, measured = _gate(path)
        assert ok and "its 1 differences re-checked equal" in measured, measured
    finally:
        _stop(cdc)


def test_a_real_difference_still_blocks_until_repaired(env):
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    env.target.orders.update_one({"_id": 5}, {"$set": {"status": "tampered"}})
    migrator_cmd("verify", "-m", str(path), check=1)
    # re-checked by every later --changed run, and still different: the gate stays shut
    p = migrator_cmd("verify", "-m", str(path), "--changed", "--json", check=1)
    assert [d["_id"] for d in json.loads(p.stdout)["differences"]] == [5]
    assert not _gate(path)[0]
    p = migrator_cmd("verify", "-m", str(path), "--changed", "--repair", "--json", check=0)
    assert json.loads(p.stdout)["totals"]["repaired"] == 1
    ok, measured = _gate(path)
    assert ok, measured


def test_more_differences_than_a_run_lists_need_a_new_full_run(env):
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    from migrator.verify.engine import verify

    original = {d["_id"]: d["status"] for d in env.target.orders.find()}
    env.target.orders.update_many({}, {"$set": {"status": "tampered"}})
    m = load_mapping(path)
    from migrator.verify.checker import Verifier

    v = Verifier(m, recheck=0, limit_differences=5)
    try:
        verify(m, verifier=v)
    finally:
        v.close()
    for k, status in original.items():  # equal again, but the run could not list them all
        env.target.orders.update_one({"_id": k}, {"$set": {"status": status}})
    ok, measured = _gate(path)
    assert not ok and "more differences in orders than a run lists" in measured
    migrator_cmd("verify", "-m", str(path), "--changed", check=0)
    assert not _gate(path)[0]
    migrator_cmd("verify", "-m", str(path), check=0)
    ok, measured = _gate(path)
    assert ok, measured


def test_a_collection_taken_out_of_the_mapping_leaves_no_open_differences(env):
    """A full, clean run over every collection of the mapping passes the gate, as before open
    differences were kept: differences of a collection the mapping no longer has can be
    neither re-checked (`verify --changed` walks the mapping's collections) nor cleared."""
    env.sql(
        "CREATE TABLE a (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE b (id INT PRIMARY KEY, v INT)",
        "INSERT INTO a VALUES (1, 1), (2, 2)",
        "INSERT INTO b VALUES (1, 1), (2, 2)",
    )
    both = env.mapping("  - {name: a, from: a}\n  - {name: b, from: b}\n", name="both.yaml")
    backfill(load_mapping(both), workers=1)
    env.target.b.update_one({"_id": 2}, {"$set": {"v": 99}})
    migrator_cmd("verify", "-m", str(both), check=1)
    # the team decides b is not migrated after all: the mapping keeps a only
    only_a = env.mapping("  - {name: a, from: a}\n", name="only_a.yaml")
    p = migrator_cmd("verify", "-m", str(only_a), "--json", check=0)
    assert json.loads(p.stdout)["complete"] is True
    migrator_cmd("verify", "-m", str(only_a), "--changed", check=0)
    ok, measured = _gate(only_a)
    assert ok, measured
