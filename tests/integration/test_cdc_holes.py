"""CDC holes found on real schemas, each a test that failed before its fix: big unsigned keys,
merged root updates, children before their parents, and transactions too big to hold."""

from __future__ import annotations

import json

import pytest
from bson.decimal128 import Decimal128

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.errors import CheckFailed
from migrator.model.settings import load_mapping

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import migrator_cmd
from .test_backfill import make_shop

BIG = 18446744073709551615  # 2^64 - 1
ABOVE = 9223372036854775808  # 2^63


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


def test_merged_root_updates_equal_applying_them_one_by_one(env):
    """Two changes of one order in one batch: the N:1 customer must survive the merge, and a
    changed foreign key must bring the *new* customer."""
    path = make_shop(env, orders=10)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "INSERT INTO orders (id, order_no, customer_id, created_at) VALUES (5000, 'N', 3, NOW())",
        "UPDATE orders SET note = 'after insert' WHERE id = 5000",
        "UPDATE orders SET customer_id = 7 WHERE id = 1",
        "UPDATE orders SET note = 'after fk change' WHERE id = 1",
        "UPDATE orders SET customer_id = NULL WHERE id = 2",
        "UPDATE orders SET note = 'after null' WHERE id = 2",
        "UPDATE orders SET customer_id = 8, note = 'back' WHERE id = 2",
        "UPDATE orders SET status = 'paid' WHERE id = 2",
    )
    run_cdc(load_mapping(path), mode="until-caught-up", batch_seconds=30)
    assert env.target.orders.find_one({"_id": 5000})["customer"]["id"] == 3
    assert env.target.orders.find_one({"_id": 1})["customer"]["id"] == 7
    assert env.target.orders.find_one({"_id": 2})["customer"]["id"] == 8
    assert_same_as_fresh_backfill(env, path)


def test_a_child_before_its_parent_in_one_batch_lands_in_the_same_run(env):
    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "START TRANSACTION",
        "INSERT INTO order_items VALUES (900, 1, 1, 2, 3.00), (900, 2, 1, 1, 1.00)",
        "UPDATE order_items SET qty = 5 WHERE order_id = 900 AND line_no = 2",
        "INSERT INTO orders (id, order_no, customer_id, created_at) VALUES (900, 'P', 1, NOW())",
        "COMMIT",
        "SET SESSION foreign_key_checks = 1",
    )
    summary = run_cdc(load_mapping(path), mode="until-caught-up", batch_seconds=30)
    assert summary.dead_letters == 0
    assert env.state.pending.count_documents({}) == 0
    doc = env.target.orders.find_one({"_id": 900})
    assert [(i["line_no"], i["qty"]) for i in doc["items"]] == [(1, 2), (2, 5)]
    assert_same_as_fresh_backfill(env, path)


def test_a_waiting_child_whose_parent_is_deleted_is_dropped_not_dead_lettered(env):
    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "INSERT INTO order_items VALUES (901, 1, 1, 2, 3.00)",
        "SET SESSION foreign_key_checks = 1",
    )
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.state.pending.count_documents({}) == 1
    # the parent comes and goes: the child no longer waits for anything
    env.sql(
        "INSERT INTO orders (id, order_no, customer_id, created_at) VALUES (901, 'P', 1, NOW())",
        "DELETE FROM orders WHERE id = 901",
    )
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.state.pending.count_documents({}) == 0
    assert env.state.dead_letters.count_documents({}) == 0
    assert_same_as_fresh_backfill(env, path)


def test_an_orphan_child_becomes_a_dead_letter_after_the_pending_timeout(env):
    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "INSERT INTO order_items VALUES (902, 1, 1, 2, 3.00)",
        "SET SESSION foreign_key_checks = 1",
    )
    p = migrator_cmd(
        "cdc", "-m", str(path), "--until-caught-up", "--pending-timeout", "0", "--json", check=1
    )
    out = json.loads(p.stdout)
    assert out["dead_letters"] == 1 and out["pending"] == 0
    dl = env.state.dead_letters.find_one({})
    assert "did not arrive within 0 s" in dl["reason"] and dl["collection"] == "orders"
    assert env.state.pending.count_documents({}) == 0


def test_a_parent_written_by_another_consumer_releases_waiting_children(env):
    """Pending children live in the state store, not in one process: a parent applied by a
    later run (or another consumer of the group) is found by the periodic sweep too."""
    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "INSERT INTO order_items VALUES (903, 1, 1, 2, 3.00)",
        "SET SESSION foreign_key_checks = 1",
    )
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.state.pending.count_documents({}) == 1
    # another writer (a second consumer) creates the parent document directly
    env.sql(
        "INSERT INTO orders (id, order_no, customer_id, created_at) VALUES (903, 'Q', 1, NOW())"
    )
    env.target.orders.insert_one({"_id": 903, "items": []})
    from migrator.cdc.applier import Applier
    from migrator.cdc.lookup import SourceLookup
    from migrator.model.transform import compile_transform
    from migrator.model.urls import parse_mysql_url
    from migrator.sink.mongo import connect as mongo_connect
    from migrator.source.connection import connect as mysql_connect
    from migrator.source.schema import introspect
    from migrator.state.store import StateStore

    m = load_mapping(path)
    conn = mysql_connect(parse_mysql_url(m.source.url))
    transform = compile_transform(m, introspect(conn, m.source_database))
    conn.close()
    client = mongo_connect(m.target.url)
    applier = Applier(
        transform,
        client[m.target_database],
        StateStore(client, m.state.database),
        SourceLookup(parse_mysql_url(m.source.url)),
    )
    assert applier.sweep_pending() == 1
    assert [i["line_no"] for i in env.target.orders.find_one({"_id": 903})["items"]] == [1]
    assert env.state.pending.count_documents({}) == 0


def test_a_transaction_of_many_rows_is_applied_in_bounded_pieces(env):
    """A DELETE of a whole big table is one transaction: CDC applies it in pieces of at most
    `max_events_in_memory` events, checkpointing only at the commit."""
    env.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40))",
        "INSERT INTO t SELECT seq, CONCAT('value ', seq) FROM seq_1_to_20000",
    )
    path = env.mapping("  - {name: t, from: t}\n")
    backfill(load_mapping(path), workers=1)
    env.sql(
        "START TRANSACTION",
        "UPDATE t SET v = 'changed' WHERE id <= 10000",
        "DELETE FROM t WHERE id > 5000",
        "COMMIT",
    )
    seen: list[int] = []
    summary = run_cdc(
        load_mapping(path),
        mode="until-caught-up",
        max_events_in_memory=1000,
        on_batch=lambda stats: seen.append(stats.held_events),
    )
    assert summary.events == 25000 and summary.dead_letters == 0
    assert seen and max(seen) <= 1000
    assert env.target.t.count_documents({}) == 5000
    assert env.target.t.count_documents({"v": "changed"}) == 5000
    assert_same_as_fresh_backfill(env, path)


def test_a_compressed_binlog_event_on_a_mapped_table_stops_cdc_before_it(env):
    """MariaDB's log_bin_compress writes rows events over log_bin_compress_min_len bytes as
    *_ROWS_COMPRESSED events, which the binlog library has no class for: the reader skipped
    them as if they were unmapped, so the row never reached MongoDB and the checkpoint moved
    past it. CDC must stop before such an event, name the setting, and stay there on a rerun;
    the plan blocks on the setting beforehand (test_plan_and_init)."""
    env.sql("CREATE TABLE big (id INT PRIMARY KEY, v TEXT)")
    path = env.mapping("  - {name: big, from: big}\n")
    backfill(load_mapping(path), workers=1)
    old = env.sql("SELECT @@GLOBAL.log_bin_compress")[0][0]
    env.sql("SET GLOBAL log_bin_compress = ON")
    try:
        env.sql("INSERT INTO big VALUES (1, REPEAT('x', 5000))")
    finally:
        env.sql(f"SET GLOBAL log_bin_compress = {int(old)}")
    for decoders in (0, 2):
        with pytest.raises(CheckFailed, match="log_bin_compress"):
            run_cdc(load_mapping(path), mode="until-caught-up", decoders=decoders)
    assert env.mongo[env.db].big.count_documents({}) == 0
