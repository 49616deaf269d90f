"""CDC from the binlog against the real servers: every change ends equal to a fresh backfill."""

from __future__ import annotations

import json

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.errors import CheckFailed, MigratorError
from migrator.model.settings import load_mapping
from migrator.source.position import current_position

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import migrator_cmd
from .helpers import CliProcess, make_shop, wait_until


def test_shop_changes_of_every_kind_converge(env):
    path = make_shop(env, orders=30)
    backfill(load_mapping(path), workers=1)
    env.sql(
        # new order with items, in one transaction
        "START TRANSACTION",
        "INSERT INTO orders (id, order_no, customer_id, status, total, created_at) "
        "VALUES (1001, 'SO-1001', 3, 'new', 10.00, '2024-05-01 10:00:00')",
        "INSERT INTO order_items VALUES (1001, 1, 2, 1, 5.00), (1001, 2, 3, 1, 5.00)",
        "COMMIT",
        # root update, item update, item insert, item delete
        "UPDATE orders SET status = 'shipped', note = 'changed' WHERE id = 2",
        "UPDATE order_items SET qty = qty + 10 WHERE order_id = 1001 AND line_no = 2",
        "INSERT INTO order_items VALUES (2, 9, 1, 1, 1.00)",
        "DELETE FROM order_items WHERE order_id = 1001 AND line_no = 1",
        # an item moves to another order (and changes line), an order line is renumbered
        "UPDATE order_items SET order_id = 1001, line_no = 7 WHERE order_id = 2 AND line_no = 9",
        # N:1 parent update fans out to every order of that customer
        "UPDATE customers SET email = 'new@example.com', name = 'Renamed' WHERE id = 3",
        # delete an order: its items go by ON DELETE CASCADE (not in the binlog)
        "DELETE FROM orders WHERE id = 5",
        # delete a customer: orders.customer_id SET NULL (not in the binlog)
        "DELETE FROM customers WHERE id = 4",
        # primary-key change of an order without items
        "INSERT INTO orders (id, order_no, customer_id, created_at) VALUES (2000, 'X', 1, NOW())",
        "UPDATE orders SET id = 2001 WHERE id = 2000",
        # products: insert, update SET column, delete
        "INSERT INTO products VALUES (500, 'SKU-500', 'New', 1.00, 'eco,new')",
        "UPDATE products SET tags = '' WHERE id = 1",
        "DELETE FROM products WHERE id = 500",
    )
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.stopped == "caught up" and summary.dead_letters == 0
    assert summary.events >= 15
    assert_same_as_fresh_backfill(env, path)
    doc = env.target.orders.find_one({"_id": 1001})
    assert [i["line_no"] for i in doc["items"]] == [2, 7]
    assert env.target.orders.count_documents({"customer.id": 4}) == 0
    assert env.target.orders.find_one({"_id": 5}) is None
    # the checkpoint is stored, and a second run has nothing to do
    again = run_cdc(load_mapping(path), mode="until-caught-up")
    assert again.events == 0 and again.stopped == "caught up"


def test_replaying_from_the_backfill_position_converges(env):
    """Changes made while the backfill ran are replayed over documents that already have
    them: idempotent writes end in the same documents (no duplicate element)."""
    path = make_shop(env, orders=20)
    # the position is taken before these changes...
    before = current_position(env.admin)
    env.sql(
        "INSERT INTO order_items VALUES (3, 50, 1, 1, 1.00)",
        "UPDATE orders SET total = 99.99 WHERE id = 3",
    )
    backfill(load_mapping(path), workers=1)
    env.state.meta.update_one({"_id": "backfill_position"}, {"$set": {"position": before}})
    # ...so CDC replays them on top of a copy that already holds them
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.events >= 2
    doc = env.target.orders.find_one({"_id": 3})
    assert [i["line_no"] for i in doc["items"]].count(50) == 1
    assert_same_as_fresh_backfill(env, path)


def test_cdc_cli_until_caught_up_json(env):
    path = make_shop(env, orders=10)
    migrator_cmd("backfill", "-m", str(path), "--json", check=0)
    env.sql("UPDATE orders SET status = 'cancelled' WHERE id = 1")
    p = migrator_cmd("cdc", "-m", str(path), "--until-caught-up", "--json", check=0)
    s = json.loads(p.stdout)
    assert s["stopped"] == "caught up" and s["applied"] == {"orders update": 1}
    assert s["lag_seconds"] == 0
    assert env.target.orders.find_one({"_id": 1})["status"] == "cancelled"
    status = env.state.meta.find_one({"_id": "cdc_status"})
    assert status["lag_seconds"] == 0


def test_every_type_changed_by_cdc_equals_a_fresh_backfill(env):
    from .test_types_roundtrip import COLS, DDL, ROWS

    env.sql("SET SESSION sql_mode = ''", "SET time_zone = '+00:00'", DDL)
    path = env.mapping("  - {name: alltypes, from: alltypes}\n")
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION sql_mode = ''",
        "SET time_zone = '+00:00'",
        f"INSERT INTO alltypes ({COLS}) VALUES " + ", ".join(ROWS),
        "UPDATE alltypes SET g = ST_GeomFromText('POINT(1 2)') WHERE id = 1",
        "INSERT INTO alltypes (id, s, bit9, fl, y, bn) VALUES (10, 'c,a', b'1', 0.1, 0, x'01')",
        "UPDATE alltypes SET s = 'b', bit9 = b'11', fl = 2.5, j = '{\"k\": [1, 2]}', "
        "vb = x'FF00', bl = '', t3 = '-00:00:01.5' WHERE id = 10",
        "UPDATE alltypes SET id = 20 WHERE id = 10",
        "UPDATE alltypes SET dt = '0000-00-00 00:00:00', ts = '0000-00-00 00:00:00' WHERE id = 2",
        "DELETE FROM alltypes WHERE id = -5",
    )
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0 and summary.events >= 9
    assert_same_as_fresh_backfill(env, path)
    doc = env.target.alltypes.find_one({"_id": 20})
    assert doc["s"] == ["b"] and doc["bit9"] == 3 and doc["fl"] == 2.5 and doc["vb"] == b"\xff\x00"
    assert env.target.alltypes.find_one({"_id": 10}) is None


def test_multi_statement_transaction_applies_whole(env):
    path = make_shop(env, orders=5)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "START TRANSACTION",
        "INSERT INTO orders (id, order_no, customer_id, created_at) VALUES (77, 'T', 2, NOW())",
        # 200 items, inserted in an order their line numbers do not follow
        *[
            "INSERT INTO order_items VALUES "
            + ", ".join(f"(77, {i}, 1, {i % 7 + 1}, 1.00)" for i in range(start, 201, 4))
            for start in (4, 2, 3, 1)
        ],
        "UPDATE order_items SET qty = 0 WHERE order_id = 77 AND line_no > 150",
        "DELETE FROM order_items WHERE order_id = 77 AND line_no <= 50",
        "COMMIT",
    )
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.transactions >= 1 and summary.dead_letters == 0
    doc = env.target.orders.find_one({"_id": 77})
    assert [i["line_no"] for i in doc["items"]] == list(range(51, 201))
    assert_same_as_fresh_backfill(env, path)


def test_child_before_its_parent_waits_then_lands(env):
    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "INSERT INTO order_items VALUES (900, 1, 1, 2, 3.00)",
        "SET SESSION foreign_key_checks = 1",
    )
    first = run_cdc(load_mapping(path), mode="until-caught-up")
    assert first.pending == 1 and env.state.pending.count_documents({}) == 1
    assert env.target.orders.find_one({"_id": 900}) is None
    env.sql(
        "INSERT INTO orders (id, order_no, customer_id, created_at) VALUES (900, 'P', 1, NOW())"
    )
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.state.pending.count_documents({}) == 0
    assert [i["line_no"] for i in env.target.orders.find_one({"_id": 900})["items"]] == [1]
    assert_same_as_fresh_backfill(env, path)


def test_an_event_that_cannot_be_applied_goes_to_dead_letters(env):
    env.sql("CREATE TABLE big (id INT PRIMARY KEY, d DECIMAL(40,0))")
    path = env.mapping("  - {name: big, from: big}\n")
    backfill(load_mapping(path), workers=1)
    env.sql("INSERT INTO big VALUES (1, 1), (2, 1234567890123456789012345678901234567890), (3, 3)")
    p = migrator_cmd("cdc", "-m", str(path), "--until-caught-up", "--json", check=1)
    s = json.loads(p.stdout)
    assert s["dead_letters"] == 1 and s["stopped"] == "caught up"
    assert sorted(d["_id"] for d in env.target.big.find()) == [1, 3]
    dl = env.state.dead_letters.find_one({"source": "cdc"})
    assert "34 significant digits" in dl["reason"] and dl["payload"]["table"] == "big"
    assert dl["position"]["gtid"]


def test_ddl_stop_then_extend(env):
    path = make_shop(env, orders=4)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "UPDATE orders SET status = 'cancelled' WHERE id = 1",
        "ALTER TABLE orders ADD COLUMN channel VARCHAR(10) NULL",
        "UPDATE orders SET channel = 'web' WHERE id = 2",
    )
    p = migrator_cmd("cdc", "-m", str(path), "--until-caught-up", check=1)
    assert "DDL on a mapped table" in p.stderr and "ADD COLUMN channel" in p.stderr
    # what came before the DDL was applied; the checkpoint waits in front of the statement
    assert env.target.orders.find_one({"_id": 1})["status"] == "cancelled"
    assert "channel" not in env.target.orders.find_one({"_id": 2})
    migrator_cmd("cdc", "-m", str(path), "--until-caught-up", "--on-ddl", "extend", check=0)
    assert env.target.orders.find_one({"_id": 2})["channel"] == "web"
    env.sql("UPDATE orders SET channel = 'app' WHERE id = 3")
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.target.orders.find_one({"_id": 3})["channel"] == "app"


def test_ddl_ignore_and_extend_refusing_a_not_null_column(env):
    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.sql("ALTER TABLE products ADD COLUMN stock INT NOT NULL DEFAULT 0")
    p = migrator_cmd("cdc", "-m", str(path), "--until-caught-up", "--on-ddl", "extend", check=1)
    assert "added NOT NULL" in p.stderr or "DDL on a mapped table" in p.stderr
    p = migrator_cmd(
        "cdc", "-m", str(path), "--until-caught-up", "--on-ddl", "ignore", "--json", check=0
    )
    assert json.loads(p.stdout)["ddl"][0]["action"] == "ignore"
    # an unmapped table's DDL never stops CDC
    env.sql("CREATE TABLE audit_log (id INT PRIMARY KEY)")
    migrator_cmd("cdc", "-m", str(path), "--until-caught-up", check=0)


def test_position_ahead_of_the_source_is_refused(env):
    path = make_shop(env, orders=2)
    backfill(load_mapping(path), workers=1)
    pos = env.state.meta.find_one({"_id": "backfill_position"})["position"]
    dom, srv, seq = pos["gtid"].split(",")[0].split("-")
    env.state.meta.update_one(
        {"_id": "backfill_position"},
        {"$set": {"position.gtid": f"{dom}-{srv}-{int(seq) + 100000}"}},
    )
    p = migrator_cmd("cdc", "-m", str(path), "--until-caught-up", check=1)
    assert "moved backwards" in p.stderr and "backfill --restart" in p.stderr


def test_hot_row_updates_are_coalesced_and_end_right(env):
    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.sql(*[f"UPDATE orders SET note = 'v{i}', total = {i}.50 WHERE id = 2" for i in range(1000)])
    import migrator.cdc.applier as applier_mod

    seen = []
    original = applier_mod.Applier.apply

    def spy(self, txns):
        res = original(self, txns)
        seen.append(res.coalesced)
        return res

    applier_mod.Applier.apply = spy
    try:
        summary = run_cdc(load_mapping(path), mode="until-caught-up", batch_seconds=5)
    finally:
        applier_mod.Applier.apply = original
    assert summary.events == 1000 and sum(seen) >= 900
    doc = env.target.orders.find_one({"_id": 2})
    assert doc["note"] == "v999" and str(doc["total"]) == "999.50"
    assert_same_as_fresh_backfill(env, path)


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


def test_a_transaction_of_many_rows_is_applied_in_bounded_pieces(env):
    """A DELETE of a whole big table is one transaction: CDC applies it in pieces of at most
    `max_events_in_memory` events, checkpointing only at the commit."""
    env.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40))",
        "INSERT INTO t SELECT seq, CONCAT('value ', seq) FROM seq_1_to_4000",
    )
    path = env.mapping("  - {name: t, from: t}\n")
    backfill(load_mapping(path), workers=1)
    env.sql(
        "START TRANSACTION",
        "UPDATE t SET v = 'changed' WHERE id <= 2000",
        "DELETE FROM t WHERE id > 1000",
        "COMMIT",
    )
    seen: list[int] = []
    summary = run_cdc(
        load_mapping(path),
        mode="until-caught-up",
        max_events_in_memory=200,
        on_batch=lambda stats: seen.append(stats.held_events),
    )
    assert summary.events == 5000 and summary.dead_letters == 0
    assert len(seen) >= 25 and max(seen) <= 200  # 5,000 events in pieces of at most 200
    assert env.target.t.count_documents({}) == 1000
    assert env.target.t.count_documents({"v": "changed"}) == 1000
    assert_same_as_fresh_backfill(env, path)


def test_a_ddl_replayed_after_a_restart_still_fills_the_added_column(env):
    """CDC started after an ADD COLUMN reads a schema that already has the column; replaying
    the DDL with --on-ddl extend still fills the column's default into existing documents
    (the columns added are read from the statement, not from comparing schemas)."""
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


def test_a_compressed_binlog_event_on_a_mapped_table_stops_cdc_before_it(env):
    """MariaDB's log_bin_compress writes rows events over log_bin_compress_min_len bytes as
    *_ROWS_COMPRESSED events, which the binlog library cannot decode: CDC stops before such an
    event on a mapped table, naming the setting, and stays there on a rerun, with either
    decoder (it does not skip it as if unmapped, moving the checkpoint past a lost row). The
    plan blocks on the setting beforehand (test_plan_and_init)."""
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


def test_a_two_phase_xa_transaction_on_a_mapped_table_stops_cdc_before_it(env):
    """MariaDB (10.5+) and MySQL (5.7+) binlog an XA transaction at XA PREPARE, as its own
    event group (GTID, table maps, rows, `XA END`, XA_PREPARE_LOG_EVENT), and the XA COMMIT
    later as another group holding only the `XA COMMIT` query. The binlog source does not
    follow XA: CDC stops before such a transaction on a mapped table, saying so, with either
    decoder, and stays there on a rerun (it does not drop the prepared rows at the next GTID
    event and move its checkpoint past a committed row)."""
    env.sql("CREATE TABLE xa_a (id INT PRIMARY KEY, v VARCHAR(20))")
    path = env.mapping("  - {name: xa_a, from: xa_a}\n")
    backfill(load_mapping(path), workers=1)
    cur = env.admin.cursor()
    cur.execute(f"USE `{env.db}`")
    cur.execute("XA START 'rv1'")
    cur.execute("INSERT INTO xa_a VALUES (1, 'prepared')")
    cur.execute("XA END 'rv1'")
    cur.execute("XA PREPARE 'rv1'")
    cur.execute("XA COMMIT 'rv1'")
    env.sql("INSERT INTO xa_a VALUES (2, 'plain')")
    for decoders in (2, 0, 2):
        with pytest.raises(CheckFailed, match="XA transaction changed mapped tables"):
            run_cdc(load_mapping(path), mode="until-caught-up", decoders=decoders)
    assert env.target.xa_a.count_documents({}) == 0  # stopped before it, not past it


def test_a_column_added_during_the_backfill_reaches_every_document_and_element(env):
    """An ADD COLUMN while the backfill copies, then CDC from the copy's position with
    --on-ddl extend. A chunk read after the statement is never written with the schema the
    copy started with (the backfill stops, naming the table, and the next run copies the
    rest with the column); CDC's default for existing rows fills only what lacks the column:
    the copy wrote documents ahead of the statement, whose rows may hold other values (an
    element inserted after it is only pushed by CDC, so an overwritten value stayed wrong)."""
    env.sql(
        "CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE c (id INT PRIMARY KEY, p_id INT NOT NULL, v INT,"
        " FOREIGN KEY (p_id) REFERENCES p (id))",
        "INSERT INTO p VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')",
        "INSERT INTO c VALUES (10, 1, 1), (20, 2, 2), (30, 3, 3), (40, 4, 4)",
    )
    path = env.mapping(
        "  - name: p\n    from: p\n    embed:\n"
        "      - {as: items, from: c, on: {p_id: id}, many: true}\n"
        "  - {name: c, from: c}\n"
    )
    first = CliProcess(
        "backfill", "-m", str(path), "--workers", "1", "--chunk-size", "1",
        pause="chunk-copied:4",
    )  # fmt: skip
    with first:
        wait_until(lambda: env.target.p.count_documents({}) >= 1, first.log_tail)
        env.sql(
            "ALTER TABLE c ADD COLUMN note VARCHAR(20) NULL",
            "INSERT INTO c VALUES (41, 4, 5, 'after')",
            "INSERT INTO p VALUES (5, 'e')",
            "INSERT INTO c VALUES (50, 5, 6, 'new')",
        )
        assert first.wait(120) == 2, first.log_tail()
        said = first.log_tail()
    assert "source table `c` changed during the backfill (columns added: note)" in said, said
    migrator_cmd("backfill", "-m", str(path), "--workers", "1", check=0)
    items = {i["id"]: i for i in env.target.p.find_one({"_id": 4})["items"]}
    assert items[41]["note"] == "after"
    migrator_cmd("cdc", "-m", str(path), "--until-caught-up", "--on-ddl", "extend", check=0)
    items = {i["id"]: i for i in env.target.p.find_one({"_id": 4})["items"]}
    assert items[41]["note"] == "after" and items[40]["note"] is None
    assert env.target.c.find_one({"_id": 41})["note"] == "after"
    assert env.target.p.find_one({"_id": 5})["items"][0]["note"] == "new"
    assert_same_as_fresh_backfill(env, path)
    p = migrator_cmd("verify", "-m", str(path), "--json", check=0)
    assert json.loads(p.stdout)["ok"] is True


def test_a_column_added_while_cdc_rebuilds_a_document_reaches_its_elements(env, monkeypatch):
    """CDC started with the schema before an ADD COLUMN rebuilds a document (a root of a
    filtered collection changed) after MySQL ran the statement and inserted a child with a
    value for the column, but before CDC met the statement in the binlog. The rebuild reads
    the child with the old column list; the statement's default must not land in that element
    (the child's insert, replayed after it, is only pushed, a no-op on a present element): CDC
    stops before writing it, and the next run reads the new schema and replays the batch."""
    env.sql(
        "CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR(20), active INT)",
        "CREATE TABLE c (id INT PRIMARY KEY, p_id INT NOT NULL, v INT,"
        " FOREIGN KEY (p_id) REFERENCES p (id))",
        "INSERT INTO p VALUES (1, 'a', 1), (2, 'b', 1)",
        "INSERT INTO c VALUES (10, 1, 1), (20, 2, 2)",
    )
    path = env.mapping(
        "  - name: p\n    from: p\n    filter: 'active = 1'\n    embed:\n"
        "      - {as: items, from: c, on: {p_id: id}, many: true}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql("UPDATE p SET name = 'z' WHERE id = 1")  # CDC rebuilds document 1
    import migrator.cdc.rebuilds as rebuilds_mod

    original = rebuilds_mod._rebuild_with
    ran: list[bool] = []

    def ddl_first(conn, **kw):
        if not ran:  # MySQL moves on while CDC is still before the statement
            ran.append(True)
            env.sql(
                "ALTER TABLE c ADD COLUMN note VARCHAR(20) NULL",
                "INSERT INTO c VALUES (11, 1, 7, 'after')",
            )
        return original(conn, **kw)

    monkeypatch.setattr(rebuilds_mod, "_rebuild_with", ddl_first)
    # stopped before writing what it read with the old columns
    with pytest.raises(MigratorError, match=r"source table `c` changed .*columns added: note"):
        run_cdc(load_mapping(path), mode="until-caught-up", on_ddl="extend")
    monkeypatch.undo()
    assert ran and "items" in env.target.p.find_one({"_id": 1})
    assert [i["id"] for i in env.target.p.find_one({"_id": 1})["items"]] == [10]
    run_cdc(load_mapping(path), mode="until-caught-up", on_ddl="extend")
    items = {i["id"]: i for i in env.target.p.find_one({"_id": 1})["items"]}
    assert items[11].get("note") == "after", items
    assert items[10]["note"] is None
    assert_same_as_fresh_backfill(env, path)
