"""verify on the keys real schemas have (composite, BIGINT UNSIGNED above 2^63), rows it cannot
convert reported as differences, and a verify_clean gate that accepts only a full clean run."""

from __future__ import annotations

import json

from bson.decimal128 import Decimal128

from migrator.backfill.copy import backfill
from migrator.cutover.gates import evaluate
from migrator.cutover.playbook import default_playbook
from migrator.model.settings import load_mapping
from migrator.state.store import StateStore
from migrator.verify.engine import verify

from .conftest import migrator_cmd

BIG = 18446744073709551615


def test_composite_and_big_unsigned_keys_verify_tamper_and_repair(env):
    env.sql(
        "CREATE TABLE acct (id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE film_actor (actor_id INT NOT NULL, film_id INT NOT NULL, "
        "role VARCHAR(10), PRIMARY KEY (actor_id, film_id))",
        f"INSERT INTO acct VALUES ({BIG}, 'max'), ({BIG - 1}, 'm1'), (1, 'one')",
        "INSERT INTO film_actor SELECT seq DIV 10, seq MOD 10, 'r' FROM seq_10_to_309",
    )
    path = env.mapping("  - {name: acct, from: acct}\n  - {name: film_actor, from: film_actor}\n")
    backfill(load_mapping(path), workers=1)
    data = json.loads(migrator_cmd("verify", "-m", str(path), "--json", check=0).stdout)
    assert data["ok"] and data["totals"]["checked"] == 3 + 300
    fa, acct = env.target.film_actor, env.target.acct
    fa.update_one({"_id": {"actor_id": 5, "film_id": 3}}, {"$set": {"role": "x"}})
    fa.delete_one({"_id": {"actor_id": 7, "film_id": 1}})
    fa.insert_one({"_id": {"actor_id": 999, "film_id": 1}, "role": "ghost"})
    acct.update_one({"_id": Decimal128(str(BIG))}, {"$set": {"name": "tampered"}})
    acct.insert_one({"_id": Decimal128(str(BIG - 2)), "name": "ghost"})
    p = migrator_cmd("verify", "-m", str(path), "--json", check=1)
    diffs = {
        (d["collection"], json.dumps(d["_id"], sort_keys=True)): d["kind"]
        for d in json.loads(p.stdout)["differences"]
    }
    assert diffs == {
        ("film_actor", '{"actor_id": 5, "film_id": 3}'): "different",
        ("film_actor", '{"actor_id": 7, "film_id": 1}'): "missing",
        ("film_actor", '{"actor_id": 999, "film_id": 1}'): "extra",
        ("acct", json.dumps(str(BIG))): "different",
        ("acct", json.dumps(str(BIG - 2))): "extra",
    }
    migrator_cmd("verify", "-m", str(path), "--repair", "--json", check=0)
    assert json.loads(migrator_cmd("verify", "-m", str(path), "--json", check=0).stdout)["ok"]


def test_rows_that_do_not_convert_are_differences_not_skipped(env):
    env.sql(
        "CREATE TABLE big (id INT PRIMARY KEY, d DECIMAL(40,0))",
        "INSERT INTO big VALUES (1, 1), (2, 1234567890123456789012345678901234567890), (3, 3)",
    )
    path = env.mapping("  - {name: big, from: big}\n")
    backfill(load_mapping(path), workers=1)  # row 2 goes to the dead-letter collection
    p = migrator_cmd("verify", "-m", str(path), "--json", check=1)
    data = json.loads(p.stdout)
    assert data["ok"] is False and data["totals"]["unconvertible"] == 1
    (d,) = data["differences"]
    assert d["_id"] == 2 and d["kind"] == "unconvertible" and "34 significant digits" in d["reason"]


def _gate(path) -> tuple[bool, str]:
    m = load_mapping(path)
    from migrator.sink.mongo import connect

    client = connect(m.target.url)
    try:
        (g,) = [
            g
            for g in evaluate(
                "read_mongo", m, StateStore(client, m.state.database), default_playbook()
            )
            if g.name == "verify_clean"
        ]
    finally:
        client.close()
    return g.ok, g.measured


def test_the_verify_gate_accepts_only_a_full_clean_run_or_changed_on_top_of_one(env):
    env.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v INT)",
        "INSERT INTO t SELECT seq, seq FROM seq_1_to_300",
    )
    path = env.mapping("  - {name: t, from: t}\n")
    backfill(load_mapping(path), workers=1)
    verify(load_mapping(path), changed=True)  # checks nothing: CDC touched nothing
    ok, measured = _gate(path)
    assert not ok and "no full verification" in measured
    verify(load_mapping(path), sample_pct=10, seed=1)
    ok, measured = _gate(path)
    assert not ok, measured
    verify(load_mapping(path))
    assert _gate(path)[0]
    verify(load_mapping(path), changed=True)  # clean, on top of the clean full run
    ok, measured = _gate(path)
    assert ok and "changed" in measured
    env.target.t.update_one({"_id": 5}, {"$set": {"v": -1}})
    verify(load_mapping(path), recheck=0)
    assert not _gate(path)[0]
