"""BIGINT UNSIGNED keys above 2^63 (no BSON integer holds them: Decimal128 `_id`s) and
composite keys, through the backfill's chunk plan, CDC, verify's checkpoints, its tamper
report and its repair."""

from __future__ import annotations

import json

from bson.decimal128 import Decimal128

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.model.settings import load_mapping

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import migrator_cmd

BIG = 18446744073709551615  # 2^64 - 1
ABOVE = 9223372036854775808  # 2^63


def test_chunk_bounds_and_verify_checkpoints_hold_keys_above_2_63(env):
    """A chunk plan and verify's checkpoints hold keys above 2^63 (BSON has no unsigned 64-bit
    integer to store them as): every row is copied and checked."""
    env.sql(
        "CREATE TABLE u (id BIGINT UNSIGNED PRIMARY KEY, v INT)",
        f"INSERT INTO u SELECT {BIG} - seq, seq FROM seq_1_to_120",
    )
    path = env.mapping("  - {name: u, from: u}\n", backfill="{chunk_size: 10}")
    assert backfill(load_mapping(path), workers=2).rows == 120
    data = json.loads(migrator_cmd("verify", "-m", str(path), "--json", check=0).stdout)
    assert data["ok"] and data["totals"]["checked"] == 120


def test_big_unsigned_keys_above_2_63_go_through_cdc(env):
    env.sql(
        "CREATE TABLE acct (id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE entry (acct_id BIGINT UNSIGNED NOT NULL, n INT NOT NULL, amount INT, "
        "PRIMARY KEY (acct_id, n), "
        "FOREIGN KEY (acct_id) REFERENCES acct(id) ON DELETE CASCADE ON UPDATE CASCADE)",
        f"INSERT INTO acct VALUES ({BIG}, 'max'), ({ABOVE}, 'just above'), (1, 'small')",
        f"INSERT INTO entry VALUES ({BIG}, 1, 10), ({ABOVE}, 1, 5), (1, 1, 1)",
    )
    path = env.mapping(
        "  - name: accounts\n    from: acct\n    embed:\n"
        "      - {as: entries, from: entry, on: {acct_id: id}, many: true}\n"
        "  - {name: entries, from: entry}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql(
        f"UPDATE acct SET name = 'MAX' WHERE id = {BIG}",
        f"INSERT INTO entry VALUES ({BIG}, 2, 20), ({ABOVE}, 2, 7)",
        f"UPDATE entry SET amount = 11 WHERE acct_id = {BIG} AND n = 1",
        f"DELETE FROM entry WHERE acct_id = {ABOVE} AND n = 1",
        f"INSERT INTO acct VALUES ({BIG - 1}, 'new')",
        f"INSERT INTO entry VALUES ({BIG - 1}, 1, 3)",
        f"UPDATE acct SET id = {ABOVE + 1} WHERE id = 1",  # its entry follows (ON UPDATE)
    )
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0 and summary.stopped == "caught up"
    assert_same_as_fresh_backfill(env, path)
    doc = env.target.accounts.find_one({"_id": Decimal128(str(BIG))})
    assert doc["name"] == "MAX" and [e["amount"] for e in doc["entries"]] == [11, 20]
    assert env.target.entries.find_one({"_id": {"acct_id": Decimal128(str(ABOVE)), "n": 2}})


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
