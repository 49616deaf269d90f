"""What the convergence harness (tests/torture) found, each pinned as a deterministic test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pymongo import MongoClient

from migrator.backfill.copy import backfill
from migrator.cdc.applier import Applier
from migrator.cdc.lookup import SourceLookup
from migrator.cdc.runner import run_cdc
from migrator.cdc.upkeep import request_sweeps
from migrator.devtools.sandbox import restart_mysql, start_stack
from migrator.errors import ConnectError
from migrator.model.events import ChangeEvent, Position, Transaction
from migrator.model.settings import load_mapping
from migrator.model.transform import compile_transform
from migrator.model.urls import parse_mysql_url
from migrator.sink.mongo import connect as mongo_connect
from migrator.source.connection import connect
from migrator.source.schema import introspect
from migrator.state.store import StateStore

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import Env, migrator_cmd
from .test_cdc_cascades import DEEP, DEEP_MAPPING

BIG = 2**64 - 1


@contextmanager
def applier_for(m: Any, **kw: Any) -> Iterator[Applier]:
    """An Applier on the mapping's real servers, as `cdc` builds it (events fed by hand)."""
    conn = connect(parse_mysql_url(m.source.url))
    transform = compile_transform(m, introspect(conn, m.source_database))
    conn.close()
    client = mongo_connect(m.target.url)
    try:
        yield Applier(
            transform,
            client[m.target_database],
            StateStore(client, m.state.database),
            SourceLookup(parse_mysql_url(m.source.url)),
            **kw,
        )
    finally:
        client.close()


def test_chunk_bounds_and_verify_checkpoints_hold_keys_above_2_63(env):
    """Seed 1: BSON has no unsigned 64-bit integer; a chunk plan or a verify checkpoint with
    such a key crashed the run (OverflowError)."""
    env.sql(
        "CREATE TABLE u (id BIGINT UNSIGNED PRIMARY KEY, v INT)",
        f"INSERT INTO u SELECT {BIG} - seq, seq FROM seq_1_to_120",
    )
    path = env.mapping("  - {name: u, from: u}\n", backfill="{chunk_size: 10}")
    assert backfill(load_mapping(path), workers=2).rows == 120
    data = json.loads(migrator_cmd("verify", "-m", str(path), "--json", check=0).stdout)
    assert data["ok"] and data["totals"]["checked"] == 120


def test_table_ids_reused_after_a_server_restart_decode_the_right_table(own_env):
    """Seed 4: table ids are unique only while the server runs; a stream that crosses a
    restart met a cached definition of another table under a reused id and decoded garbage
    (or crashed). CDC replays here from before the restart."""
    env = own_env
    env.sql(
        "CREATE TABLE a (id INT PRIMARY KEY, s VARCHAR(20))",
        "CREATE TABLE b (id INT PRIMARY KEY, t DATETIME(3), d DECIMAL(10,2), j JSON)",
        "INSERT INTO a VALUES (1, 'one')",
        "INSERT INTO b VALUES (1, '2024-01-01 10:00:00.123', 1.50, '{\"k\": 1}')",
    )
    path = env.mapping("  - {name: a, from: a}\n  - {name: b, from: b}\n")
    backfill(load_mapping(path), workers=1)
    env.sql("INSERT INTO a VALUES (2, 'two')", "INSERT INTO b VALUES (2, NOW(3), 2.25, '[]')")
    restart_mysql(env.stack)
    env.admin = connect(parse_mysql_url(env.stack.mysql_url), database=False)
    # opened in the other order after the restart: each can get the id the other had
    env.sql(
        "INSERT INTO b VALUES (3, '2025-05-05 05:05:05.500', 3.75, '{\"x\": [1]}')",
        "INSERT INTO a VALUES (3, 'three')",
        "UPDATE b SET d = 9.99 WHERE id = 1",
        "UPDATE a SET s = 'uno' WHERE id = 1",
    )
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0
    assert_same_as_fresh_backfill(env, path)


def test_a_server_away_fails_the_batch_instead_of_dead_lettering_its_events(own_env):
    """Seed 5: an event whose apply reads the source (a primary-key change re-reads the
    aggregate) went to the dead-letter collection when MariaDB was restarting: lost."""
    env = own_env
    env.sql(
        "CREATE TABLE p (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE c (pid INT, n INT, PRIMARY KEY (pid, n))",
        "INSERT INTO p VALUES (1, 1)",
    )
    path = env.mapping(
        "  - name: p\n    from: p\n    embed:\n      - {as: cs, from: c, on: {pid: id}}\n"
    )
    m = load_mapping(path)
    backfill(m, workers=1)
    conn = connect(parse_mysql_url(m.source.url))
    transform = compile_transform(m, introspect(conn, m.source_database))
    conn.close()
    client = mongo_connect(m.target.url)
    state = StateStore(client, m.state.database)
    proc = next(p for p in env.stack.procs if p.name in ("mariadb", "mysql"))
    proc.stop()
    try:
        lookup = SourceLookup(parse_mysql_url(m.source.url), patience=1.0)
        applier = Applier(transform, client[m.target_database], state, lookup)
        ev = ChangeEvent("p", "update", {"id": 1, "v": 1}, {"id": 2, "v": 1})
        with pytest.raises(ConnectError):
            applier.apply([Transaction([ev], Position("mysql-bin.000001", 4))])
        assert state.dead_letters.count_documents({}) == 0
    finally:
        restart_mysql(env.stack)
        client.close()


def test_a_delete_chain_through_documents_newer_than_the_event_leaves_nothing_behind(env):
    """Seed 4: customer -> orders -> item, replayed over orders documents copied after the
    delete (a newer snapshot): the item documents the chain reaches through those orders must
    still go (the dangling-reference sweep)."""
    env.sql(*DEEP)
    # no other collection holds the orders rows the chain goes through
    path = env.mapping(DEEP_MAPPING.split("  - name: customer_orders")[0])
    backfill(load_mapping(path), workers=1)
    env.sql("DELETE FROM customer WHERE id = 1")  # orders 10, 11 and their items go
    # the orders collection is copied again after the delete; CDC still starts before it
    migrator_cmd("backfill", "-m", str(path), "--collection", "orders", "--restart", check=0)
    assert env.target.orders.count_documents({"_id": {"$in": [10, 11]}}) == 0
    assert env.target.items.count_documents({"_id.order_id": {"$in": [10, 11]}}) == 3
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0
    assert env.target.items.count_documents({"_id.order_id": {"$in": [10, 11]}}) == 0
    assert_same_as_fresh_backfill(env, path)


def test_a_ddl_replayed_after_a_restart_still_fills_the_added_column(env):
    """Seed 10: CDC restarted after an ADD COLUMN reads a schema that already has the column,
    so comparing schemas found nothing added and existing documents never got it."""
    env.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT)", "INSERT INTO t VALUES (1, 1), (2, 2)")
    path = env.mapping("  - {name: t, from: t}\n")
    backfill(load_mapping(path), workers=1)
    env.sql(
        "ALTER TABLE t ADD COLUMN note VARCHAR(10) NULL DEFAULT 'n/a'",
        "UPDATE t SET note = 'set' WHERE id = 2",
    )
    migrator_cmd("cdc", "-m", str(path), "--until-caught-up", "--on-ddl", "extend", check=0)
    assert env.target.t.find_one({"_id": 1})["note"] == "n/a"
    assert env.target.t.find_one({"_id": 2})["note"] == "set"
    assert_same_as_fresh_backfill(env, path)


def test_a_waiting_child_whose_row_is_gone_stops_waiting_without_a_dead_letter(env):
    """Seeds 4 and 5: children waiting for parents a cascade deleted (or whose rows are gone)
    waited forever; a child whose own row still exists without a parent is an orphan."""
    from .test_backfill import make_shop

    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "INSERT INTO order_items VALUES (950, 1, 1, 2, 3.00), (951, 1, 1, 2, 3.00)",
        "SET SESSION foreign_key_checks = 1",
        "DELETE FROM order_items WHERE order_id = 950",
    )
    p = migrator_cmd(
        "cdc", "-m", str(path), "--until-caught-up", "--pending-timeout", "3600", "--json", check=0
    )
    assert json.loads(p.stdout)["pending"] == 1  # 951 is an orphan: it waits (up to the bound)
    waiting = env.state.pending.find_one({})
    assert waiting["parent_id"] == 951
    assert env.state.dead_letters.count_documents({}) == 0


def test_a_waiting_child_that_since_left_its_parent_stops_waiting(env):
    """Seed 27: children waited for a parent that was gone, while their own rows still
    existed with the reference set to NULL (ON UPDATE SET NULL): they belong to no document,
    so they must neither wait for the bound nor become dead letters."""
    env.sql(
        "CREATE TABLE parent (id INT PRIMARY KEY, note VARCHAR(10))",
        "CREATE TABLE item (id INT PRIMARY KEY, parent_id INT NULL, qty INT, "
        "FOREIGN KEY (parent_id) REFERENCES parent(id) ON DELETE CASCADE ON UPDATE SET NULL)",
        "INSERT INTO parent VALUES (1, 'a')",
    )
    path = env.mapping(
        "  - name: parents\n    from: parent\n    embed:\n"
        "      - {as: items, from: item, on: {parent_id: id}}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "INSERT INTO item VALUES (10, 7, 1), (11, 7, 2), (12, 8, 3)",  # before parents 7, 8
        "SET SESSION foreign_key_checks = 1",
        "INSERT INTO parent VALUES (8, 'b')",
        "UPDATE parent SET id = 9 WHERE id = 8",  # item 12: parent_id NULL by the cascade
        "UPDATE item SET parent_id = NULL WHERE id = 10",
        "UPDATE item SET parent_id = 1 WHERE id = 11",
    )
    p = migrator_cmd(
        "cdc", "-m", str(path), "--until-caught-up", "--pending-timeout", "3600", "--json", check=0
    )
    assert json.loads(p.stdout)["pending"] == 0
    assert env.state.pending.count_documents({}) == 0
    assert env.state.dead_letters.count_documents({}) == 0
    assert_same_as_fresh_backfill(env, path)


@pytest.mark.parametrize("server", ["mongodb", "mysql"])
def test_a_server_lost_mid_run_is_one_line_naming_it_exit_2(tmp_path, server):
    """A driver error in the middle of a run: one line naming the server and the setting,
    exit 2, no traceback, no password (the issue: a traceback and exit 1)."""
    import signal
    import subprocess
    import sys
    import time

    from .conftest import REPO

    stack = start_stack(mongo_sync_on_commit=True)
    try:
        admin = connect(parse_mysql_url(stack.mysql_url), database=False)
        env = Env(stack, admin, MongoClient(stack.mongo_url), tmp_path)
        env.sql(
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
            "INSERT INTO t SELECT seq, 'x' FROM seq_1_to_10000",
        )
        path = env.mapping("  - {name: t, from: t}\n", backfill="{chunk_size: 200}")
        # a short server selection: the test waits for the driver to give up
        text = path.read_text().replace(
            "directConnection=true", "directConnection=true&serverSelectionTimeoutMS=1500"
        )
        path.write_text(text)
        backfill(load_mapping(path), workers=1)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "migrator.cli.main",
                "verify",
                "-m",
                str(path),
                "--max-rows-per-sec",
                "2000",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        t0 = time.monotonic()
        # the server goes while verify is in the middle of the table
        while not (env.state.meta.find_one({"_id": "verify_progress"}) or {}).get("collections"):
            assert proc.poll() is None and time.monotonic() - t0 < 60, proc.communicate()
            time.sleep(0.05)
        victim = next(
            p
            for p in stack.procs
            if p.name in (("secantusdb", "mongod") if server == "mongodb" else ("mariadb", "mysql"))
        )
        import os

        os.kill(victim.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        print(f"failed {time.monotonic() - t0:.1f} s after it started")
    finally:
        stack.stop()
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, err
    setting = "target.url" if server == "mongodb" else "source.url"
    assert ("MongoDB at" if server == "mongodb" else "MySQL at") in lines[0]
    assert setting in lines[0], lines[0]
    password = parse_mysql_url(stack.mysql_url).password
    assert password not in err and password not in out


def test_records_of_several_tables_out_of_order_still_build_the_source_documents(env):
    """Debezium seed 11: a topic per table gives no order across tables. The items of a
    re-created order arrived before the order's delete and re-insert, and the array lost
    them; re-keyed children arrived after the cascade that moved them. Applied in a bad
    order, as a consumer of per-table topics can see them, the documents still end as the
    source's. Seed 12: a primary-key change arrives as a delete and a create, and the rows ON
    UPDATE CASCADE moved must still be found."""
    env.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(10))",
        "CREATE TABLE item (order_id INT NOT NULL, line INT NOT NULL, sku VARCHAR(10), "
        "PRIMARY KEY (order_id, line), FOREIGN KEY (order_id) REFERENCES orders(id) "
        "ON DELETE CASCADE ON UPDATE CASCADE)",
        "INSERT INTO orders VALUES (1, 'old'), (2, 'two')",
        "INSERT INTO item VALUES (1, 1, 'a'), (2, 1, 'b')",
    )
    path = env.mapping(
        "  - name: orders\n    from: orders\n    embed:\n"
        "      - {as: items, from: item, on: {order_id: id}}\n"
        "  - {name: items, from: item}\n"
    )
    m = load_mapping(path)
    backfill(m, workers=1)
    # what happened at the source, in commit order
    env.sql(
        "DELETE FROM orders WHERE id = 1",  # item (1,1) goes by cascade
        "INSERT INTO orders VALUES (1, 'new')",
        "INSERT INTO item VALUES (1, 2, 'c')",
        "UPDATE orders SET id = 20 WHERE id = 2",  # item (2,1) becomes (20,1) by cascade
    )
    o = {"id": 1, "note": "old"}
    events = [  # as two topics can interleave: the item topic first, then orders
        ChangeEvent("item", "insert", None, {"order_id": 1, "line": 2, "sku": "c"}),
        ChangeEvent("orders", "delete", o, None),
        ChangeEvent("orders", "insert", None, {"id": 1, "note": "new"}),
        # Debezium sends a primary-key change as a delete of the old key and a create
        ChangeEvent("orders", "delete", {"id": 2, "note": "two"}, None),
        ChangeEvent("orders", "insert", None, {"id": 20, "note": "two"}),
    ]
    with applier_for(m, unordered=True) as applier:
        for ev in events:  # one record per poll: the worst case
            applier.apply([Transaction([ev], Position("t[0]", 1))])
        applier.sweep_dangling()
    assert [i["line"] for i in env.target.orders.find_one({"_id": 1})["items"]] == [2]
    assert env.target.items.find_one({"_id": {"order_id": 20, "line": 1}})
    assert_same_as_fresh_backfill(env, path)


def test_a_sweep_ahead_of_the_stream_does_not_lose_rows_a_key_change_moves(env):
    """Binlog seed 6: a sweep of dangling references reads the source *now*, so it can run
    before CDC reaches the key change that made them dangle: it removed the child documents
    of the old key, then the key change's cascade found no document to follow and the rows,
    now under the new key, never reached their collection."""
    env.sql(
        "CREATE TABLE parent (id VARCHAR(20) PRIMARY KEY, note VARCHAR(10))",
        "CREATE TABLE child (parent_id VARCHAR(20) NOT NULL, line INT NOT NULL, sku CHAR(2), "
        "PRIMARY KEY (parent_id, line), FOREIGN KEY (parent_id) REFERENCES parent(id) "
        "ON DELETE CASCADE ON UPDATE CASCADE)",
        "INSERT INTO parent VALUES ('k1', 'x'), ('k2', 'y')",
        "INSERT INTO child VALUES ('k1', 1, 'a'), ('k1', 2, 'b'), ('k2', 1, 'c')",
    )
    path = env.mapping(
        "  - name: parents\n    from: parent\n    embed:\n"
        "      - {as: lines, from: child, on: {parent_id: id}}\n"
        "  - {name: children, from: child}\n"
    )
    m = load_mapping(path)
    backfill(m, workers=1)
    env.sql("UPDATE parent SET id = 'k9' WHERE id = 'k1'")  # child rows move by cascade
    with applier_for(m) as applier:
        # an earlier cascade through a text key asked for a sweep of this rule; it runs
        # between batches, before CDC has read the key change
        request_sweeps(applier, list(applier.cascades.rules["parent"]))
        applier.sweep_dangling()
    summary = run_cdc(m, mode="until-caught-up")
    assert summary.dead_letters == 0
    assert env.target.children.count_documents({"_id.parent_id": "k9"}) == 2
    assert_same_as_fresh_backfill(env, path)


def test_an_array_ordered_by_a_column_mapped_to_another_type_sorts_as_the_documents(env):
    """Seed 212: `order_by: [n]` on an INT column mapped `type: string`. Backfill sorted the
    elements by the integer (SQL ORDER BY), CDC's `$push $sort` by the string the document
    holds, so an array changed by CDC no longer equalled a fresh copy. One rule now: arrays
    are in MongoDB's order of the document values ("10" < "100" < "9")."""
    env.sql(
        "CREATE TABLE p (id INT PRIMARY KEY)",
        "CREATE TABLE c (id INT PRIMARY KEY, p_id INT NOT NULL, n INT, "
        "FOREIGN KEY (p_id) REFERENCES p(id))",
        "INSERT INTO p VALUES (1), (2)",
        "INSERT INTO c VALUES (1, 1, 9), (2, 1, 100), (3, 1, 10), (4, 1, NULL), (5, 2, 7)",
    )
    path = env.mapping(
        "  - name: p\n    from: p\n    embed:\n"
        "      - {as: cs, from: c, on: {p_id: id}, many: true, order_by: [n],\n"
        "         fields: {n: {column: n, type: string}}}\n"
    )
    backfill(load_mapping(path), workers=1)

    def order(pid: int) -> list[Any]:
        return [e["n"] for e in env.target.p.find_one({"_id": pid})["cs"]]

    assert order(1) == [None, "10", "100", "9"]
    env.sql(
        "INSERT INTO c VALUES (6, 1, 11), (7, 2, 70)",
        "UPDATE c SET n = 1000 WHERE id = 1",
        "UPDATE c SET p_id = 1 WHERE id = 5",
    )
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert order(1) == [None, "10", "100", "1000", "11", "7"]
    assert order(2) == ["70"]
    assert_same_as_fresh_backfill(env, path)
    data = json.loads(migrator_cmd("verify", "-m", str(path), "--json", check=0).stdout)
    assert data["ok"], data
