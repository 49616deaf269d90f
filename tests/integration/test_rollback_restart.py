"""After a rollback to MySQL-first, CDC restarts at the source's position read inside the
rollback (runner.after_rollback): a foreign key or a column changed while MongoDB was the
truth is met, documents do not go back in time, reverse sync writes nothing the rollback's
flip made older (a batch waiting in MySQL is stopped by a forced rollback), two cycles with
binlog rotation stay consistent."""

from __future__ import annotations

import json

from migrator.cutover.sdk import DualWriter
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect
from migrator.verify.engine import verify

from .conftest import migrator_cmd
from .helpers import cdc_caught_up, start_cdc, to_read_mongo, wait_until, walk_to


def _cdc_log(cdc) -> str:
    return cdc.log_tail()


def _reverse_synced(env, cdc, i, note):
    """A MongoDB change, once reverse sync has written it to MySQL (the CDC process alive)."""
    env.target.orders.update_one({"_id": i}, {"$set": {"note": note}})
    wait_until(
        lambda: (
            env.sql(f"SELECT note FROM orders WHERE id = {i}")[0][0] == note
            or cdc.poll() is not None
        ),
        lambda: f"reverse sync:\n{_cdc_log(cdc)}",
    )
    assert cdc.poll() is None, _cdc_log(cdc)


def _stop(cdc):
    cdc.stop()


def _clean(path):
    res = verify(load_mapping(path))
    assert res.ok, res.differences[:5]


def test_a_foreign_key_added_while_mongodb_was_the_truth_is_not_skipped(env, tmp_path):
    """While MongoDB is the truth a DBA makes order_items.product_id's foreign key ON DELETE
    CASCADE (it was RESTRICT). CDC's cascade rules come from foreign keys, so the switch's
    schema fingerprint covers them: without that, the running `cdc --follow` restarted at the
    rollback's point, never met the ALTER and kept the rules it read at start (none for
    products): a product deleted in MySQL after the rollback deleted its order_items rows in
    MySQL (the binlog does not carry that) while the orders documents kept those items, with
    no error, even after a restart (its checkpoint was past the delete)."""
    path, pb = to_read_mongo(env, tmp_path)
    prod = env.sql(
        "SELECT product_id FROM order_items GROUP BY product_id ORDER BY COUNT(*) DESC LIMIT 1"
    )[0][0]
    cdc = start_cdc(env, path)
    try:
        walk_to(path, "write_mongo", pb)  # the switch, in process (CDC running)
        # CDC has moved to reverse sync (it carried a MongoDB change) before the DBA's ALTER
        _reverse_synced(env, cdc, 3, "in MongoDB")
        env.sql(
            "ALTER TABLE order_items DROP FOREIGN KEY fk_items_product",
            "ALTER TABLE order_items ADD CONSTRAINT fk_items_product FOREIGN KEY "
            "(product_id) REFERENCES products(id) ON DELETE CASCADE",
        )
        _reverse_synced(env, cdc, 4, "in MongoDB after the ALTER")
        p = migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "back", "--json",
                         check=0)  # fmt: skip
        assert json.loads(p.stdout)["cdc_restart"]
        # MySQL is the truth again: an admin deletes a product; MySQL cascades to its items
        env.sql(f"DELETE FROM products WHERE id = {prod}")
        assert env.sql(f"SELECT COUNT(*) FROM order_items WHERE product_id = {prod}")[0][0] == 0
        wait_until(
            lambda: env.target.products.find_one({"_id": prod}) is None or cdc.poll() is not None,
            "CDC to apply the product's delete",
        )
        alive = cdc.poll() is None  # (a cascade's effects are applied with the delete)
        # whatever the first CDC did, an operator restarting it (past any DDL stop) must end
        # with MongoDB equal to MySQL: a CDC started now knows the foreign key
        cdc.stop()
        cdc = start_cdc(env, path, "--on-ddl", "ignore")
        cdc_caught_up(env)
        left = sorted(d["_id"] for d in env.target.orders.find({"items.product_id": prod}))
        assert left == [], (
            f"orders {left} in MongoDB keep items of product {prod} that MySQL deleted by ON "
            f"DELETE CASCADE (the first cdc was alive: {alive}, so nobody was told)"
        )
    finally:
        _stop(cdc)
    _clean(path)


def test_a_column_added_while_mongodb_was_the_truth_does_not_send_documents_back_in_time(
    env, tmp_path
):
    """A DDL while MongoDB was the truth makes CDC read the write_mongo stretch from its
    checkpoint to meet the DDL. It applied the stretch's rows too (reverse sync's copies of
    MongoDB's changes): a document changed in MongoDB before and after the ALTER went back to
    its older state, and stayed there while CDC was stopped at the ALTER (default --on-ddl
    stop) though MySQL, the truth again, had the newer one. Now the stretch's rows are
    skipped and only its DDL is met."""
    path, pb = to_read_mongo(env, tmp_path)
    cdc = start_cdc(env, path)
    try:
        walk_to(path, "write_mongo", pb)  # the switch, in process (CDC running)
        _reverse_synced(env, cdc, 3, "older, in MongoDB before the ALTER")
        env.sql("ALTER TABLE orders ADD COLUMN extra INT NULL")
        _reverse_synced(env, cdc, 3, "newest, in MongoDB")
        migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "back", check=0)
        wait_until(lambda: cdc.poll() is not None, "CDC to meet the ALTER", timeout=20)
        assert "DDL on a mapped table" in _cdc_log(cdc)
        assert env.sql("SELECT note FROM orders WHERE id = 3")[0][0] == "newest, in MongoDB"
        doc = env.target.orders.find_one({"_id": 3})
        assert doc["note"] == "newest, in MongoDB", (
            f"after the rollback the document went back to {doc['note']!r} and stays there "
            "while CDC is stopped at the ALTER"
        )
    finally:
        cdc.stop()


def test_two_rollback_cycles_with_binlog_rotation_stay_consistent(env, tmp_path):
    """Forward, rollback, MySQL-first writes, forward again, rollback again (binlog rotated
    around each point): every change lands, verify is clean."""
    path, pb = to_read_mongo(env, tmp_path)
    cdc = start_cdc(env, path)
    try:
        for cycle in (1, 2):
            walk_to(path, "write_mongo", pb)  # the switch, in process (CDC running)
            _reverse_synced(env, cdc, 3, f"mongo {cycle}")
            env.sql("FLUSH BINARY LOGS")
            _reverse_synced(env, cdc, 4, f"mongo {cycle}")
            migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "back", check=0)
            env.sql("FLUSH BINARY LOGS")
            env.sql(f"UPDATE orders SET note = 'mysql {cycle}' WHERE id = 5")
            wait_until(
                lambda c=cycle: env.target.orders.find_one({"_id": 5})["note"] == f"mysql {c}",
                "CDC after the rollback",
            )
            assert env.target.orders.find_one({"_id": 3})["note"] == f"mongo {cycle}"
            assert env.target.orders.find_one({"_id": 4})["note"] == f"mongo {cycle}"
            # catch up fully before the next switch
            cdc_caught_up(env)
            res = verify(load_mapping(path))
            assert res.ok, res.differences[:5]
    finally:
        cdc.stop()


def test_reverse_sync_applies_nothing_written_after_the_rollback_flipped(env, tmp_path):
    """Reverse sync checked the phase, then read the change stream and applied what it read.
    A rollback flipping in between (it waits for reverse lag 0, which holds at once when
    nothing waits) let it read the MongoDB copy an application writes after its MySQL write
    under MySQL-first routing, and write that older document over a newer MySQL row: MySQL,
    the truth again, lost the later write (and CDC then copied the loss to MongoDB). The
    fault point holds reverse sync right after its phase check, where the flip can land.
    """
    path, pb = to_read_mongo(env, tmp_path)
    # each reverse sync pass pauses 6 s after its phase check: the rollback (a CLI run) and
    # the application's writes land in the pause
    cdc = start_cdc(env, path, pause="reverse_read:6")
    try:
        walk_to(path, "write_mongo", pb)  # the switch, in process (CDC running)
        _reverse_synced(env, cdc, 3, "in MongoDB")  # it then checks the phase and sleeps
        migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "back", check=0)
        # MySQL-first: the application writes MySQL, then its copy to MongoDB (as the SDK
        # does), then MySQL again
        env.sql("UPDATE orders SET note = 'v2' WHERE id = 3")
        env.target.orders.update_one({"_id": 3}, {"$set": {"note": "v2"}})
        env.sql("UPDATE orders SET note = 'v3' WHERE id = 3")
        wait_until(
            lambda: env.target.orders.find_one({"_id": 3})["note"] == "v3" or cdc.poll(),
            "CDC to carry v3 after reverse sync woke up",
        )
        # binlog CDC runs once reverse sync has ended: what reverse sync wrote is in the
        # binlog, and CDC has read up to now
        cdc_caught_up(env)
        assert env.sql("SELECT note FROM orders WHERE id = 3")[0][0] == "v3"
        assert env.target.orders.find_one({"_id": 3})["note"] == "v3"
    finally:
        _stop(cdc)
    _clean(path)


def test_a_ddl_right_after_the_switch_leaves_reverse_sync_running(env, tmp_path):
    """CDC notices the switch at its next batch or idle check (about a second). A mapped
    table's ALTER logged right after the switch can reach it first: it is not handled as a
    DDL of a MySQL-first phase (with the default --on-ddl stop the process would exit, and it
    is the one carrying MongoDB's changes to MySQL): CDC goes to reverse sync, and the DDL is
    met after a rollback (the switch's schema fingerprint)."""
    path, pb = to_read_mongo(env, tmp_path)
    cdc = start_cdc(env, path)
    try:
        walk_to(path, "write_mongo", pb)  # the switch, in process (CDC running)
        env.sql("ALTER TABLE orders ADD COLUMN extra INT NULL DEFAULT 7")
        # CDC has gone to reverse sync, past the ALTER, and carries a change made after it
        _reverse_synced(env, cdc, 3, "in MongoDB after the ALTER")
        assert cdc.poll() is None, _cdc_log(cdc)
        migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "back", check=0)
        # MySQL-first again: CDC meets the ALTER now, and stops there (--on-ddl stop)
        wait_until(lambda: cdc.poll() is not None, "CDC to meet the ALTER", timeout=20)
        assert "DDL on a mapped table" in _cdc_log(cdc)
    finally:
        cdc.stop()
    assert env.target.orders.find_one({"_id": 3})["note"] == "in MongoDB after the ALTER"
    env.sql("UPDATE orders SET note = 'MySQL-first again' WHERE id = 4")
    cdc = start_cdc(env, path, "--on-ddl", "extend")
    try:
        wait_until(
            lambda: env.target.orders.find_one({"_id": 4})["note"] == "MySQL-first again",
            "CDC after the rollback",
        )
        # the DDL was met (extend): the new column's default is in every document
        assert env.target.orders.count_documents({"extra": {"$ne": 7}}) == 0
        assert env.target.orders.find_one({"_id": 3})["note"] == "in MongoDB after the ALTER"
    finally:
        _stop(cdc)
    _clean(path)


def test_a_forced_rollback_stops_a_reverse_batch_waiting_in_mysql(env, tmp_path):
    """Reverse sync read a batch (documents 5 and 6 as MongoDB had them) and waits in MySQL
    (a row lock on order 5: a long transaction, a slow disk). The operator rolls back with
    `--force --reason` (README: the rollback then goes "without those writes"). After the
    rollback an application writes order 6 through the SDK, MySQL first: acknowledged, in both
    stores. When the lock goes, the waiting batch does not commit its older copy of document
    6 over the newer row (nor does CDC copy that to MongoDB): the rollback flips holding a
    MySQL lock each reverse batch holds while it writes, and a forced rollback kills the
    connection of a batch that does not let go (it rolls back; a plain one waits for it)."""
    path, pb = to_read_mongo(env, tmp_path)
    cdc = start_cdc(env, path)
    blocker = connect(parse_mysql_url(load_mapping(path).source.url))
    blocker.autocommit(False)
    w = None
    try:
        walk_to(path, "write_mongo", pb)  # the switch, in process (CDC running)
        _reverse_synced(env, cdc, 3, "in MongoDB")
        cur = blocker.cursor()
        cur.execute("SELECT id FROM orders WHERE id = 5 FOR UPDATE")
        env.target.orders.update_one({"_id": 5}, {"$set": {"note": "m5"}})
        env.target.orders.update_one({"_id": 6}, {"$set": {"note": "before the rollback"}})
        # the batch [5, 6] is read; its transaction waits on order 5
        wait_until(lambda: _applier_waiting(env), "the reverse batch to wait on order 5")
        w = DualWriter(load_mapping(path), control_ttl=0.2, freeze_wait=30)
        p = migrator_cmd("rollback", "-m", str(path), "--to", "read_mongo", "--yes", "--force",
                         "--reason", "reverse sync stuck", "--json", check=0)  # fmt: skip
        assert json.loads(p.stdout)["to"] == "read_mongo"
        w.update("orders", {"id": 6}, {"note": "after the rollback"})  # acknowledged
        assert env.sql("SELECT note FROM orders WHERE id = 6")[0][0] == "after the rollback"
        assert env.target.orders.find_one({"_id": 6})["note"] == "after the rollback"
        blocker.rollback()  # a stuck batch would go on now
        # no reverse batch is left waiting, and CDC (restarted at the rollback's point) has
        # read the binlog up to now: whatever the batch would have committed is applied
        wait_until(lambda: not _applier_waiting(env), "no reverse batch in MySQL")
        cdc_caught_up(env)
        mysql_note = env.sql("SELECT note FROM orders WHERE id = 6")[0][0]
        mongo_note = env.target.orders.find_one({"_id": 6})["note"]
        assert (mysql_note, mongo_note) == ("after the rollback", "after the rollback"), (
            f"MySQL: {mysql_note!r}, MongoDB: {mongo_note!r}"
        )
    finally:
        blocker.close()
        if w is not None:
            w.close()
        cdc.stop()


def _applier_waiting(env):
    """Reverse sync's statements under way in MySQL (waiting on a lock)."""
    return env.sql(
        "SELECT id FROM information_schema.processlist WHERE command = 'Query' AND db = %s "
        "AND (info LIKE 'INSERT INTO %%' OR info LIKE 'UPDATE %%' OR info LIKE 'DELETE %%') "
        "AND id <> CONNECTION_ID()",
        args=(env.db,),
    )
