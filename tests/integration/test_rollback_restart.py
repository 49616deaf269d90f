"""After a rollback to MySQL-first, CDC restarts at the source's position read inside the
rollback (runner.after_rollback): cases a review of that change found, each failing before its
fix, and the two-cycle scenario it checked."""

from __future__ import annotations

import json
import time

from migrator.model.settings import load_mapping
from migrator.verify.engine import verify

from .conftest import migrator_cmd
from .test_cutover import step
from .test_write_fence import start_cdc, to_read_mongo, wait_until


def _cdc_log(cdc) -> str:
    cdc.log.seek(0)
    return cdc.log.read()[-3000:]


def _reverse_synced(env, cdc, i, note):
    env.target.orders.update_one({"_id": i}, {"$set": {"note": note}})
    try:
        wait_until(
            lambda: env.sql(f"SELECT note FROM orders WHERE id = {i}")[0][0] == note,
            "reverse sync",
        )
    except AssertionError:
        raise AssertionError(_cdc_log(cdc)) from None


def _stop(cdc):
    cdc.terminate()
    cdc.wait(timeout=60)


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
    no error, even after a restart (its checkpoint was past the delete). Review finding."""
    path, pb = to_read_mongo(env, tmp_path)
    prod = env.sql(
        "SELECT product_id FROM order_items GROUP BY product_id ORDER BY COUNT(*) DESC LIMIT 1"
    )[0][0]
    cdc = start_cdc(env, path)
    try:
        step(path, "--to", "write_mongo", "--force", "--reason", "t", "--playbook", str(pb))
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
        time.sleep(2)  # a cascade's effects are applied with the delete
        alive = cdc.poll() is None
        # whatever the first CDC did, an operator restarting it (past any DDL stop) must end
        # with MongoDB equal to MySQL: a CDC started now knows the foreign key
        cdc.terminate()
        cdc.wait(timeout=60)
        cdc = start_cdc(env, path, "--on-ddl", "ignore")
        time.sleep(3)
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
    skipped and only its DDL is met. Review finding."""
    path, pb = to_read_mongo(env, tmp_path)
    cdc = start_cdc(env, path)
    try:
        step(path, "--to", "write_mongo", "--force", "--reason", "t", "--playbook", str(pb))
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
        if cdc.poll() is None:
            cdc.terminate()
            cdc.wait(timeout=60)


def test_two_rollback_cycles_with_binlog_rotation_stay_consistent(env, tmp_path):
    """Forward, rollback, MySQL-first writes, forward again, rollback again (binlog rotated
    around each point): every change lands, verify is clean (a scenario that held)."""
    path, pb = to_read_mongo(env, tmp_path)
    cdc = start_cdc(env, path)
    try:
        for cycle in (1, 2):
            step(path, "--to", "write_mongo", "--force", "--reason", "t", "--playbook", str(pb))
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
            time.sleep(1.5)
            res = verify(load_mapping(path))
            assert res.ok, res.differences[:5]
    finally:
        cdc.terminate()
        cdc.wait(timeout=60)


def test_reverse_sync_applies_nothing_written_after_the_rollback_flipped(env, tmp_path):
    """Reverse sync checked the phase, then read the change stream and applied what it read.
    A rollback flipping in between (it waits for reverse lag 0, which holds at once when
    nothing waits) let it read the MongoDB copy an application writes after its MySQL write
    under MySQL-first routing, and write that older document over a newer MySQL row: MySQL,
    the truth again, lost the later write (and CDC then copied the loss to MongoDB). The
    fault point holds reverse sync right after its phase check, where the flip can land.
    Review finding."""
    path, pb = to_read_mongo(env, tmp_path)
    cdc = start_cdc(env, path, pause="reverse_read:8")
    try:
        step(path, "--to", "write_mongo", "--force", "--reason", "t", "--playbook", str(pb))
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
        time.sleep(2)  # anything reverse sync would still write lands by now
        assert env.sql("SELECT note FROM orders WHERE id = 3")[0][0] == "v3"
        assert env.target.orders.find_one({"_id": 3})["note"] == "v3"
    finally:
        _stop(cdc)
    _clean(path)


def test_a_ddl_right_after_the_switch_leaves_reverse_sync_running(env, tmp_path):
    """CDC notices the switch at its next batch or idle check (about a second). A mapped
    table's ALTER logged right after the switch reached it first and was handled as a DDL of
    a MySQL-first phase: with the default --on-ddl stop the process exited, and it is the one
    carrying MongoDB's changes to MySQL (reverse sync stopped; rollback refused until someone
    noticed). Now it goes to reverse sync, and the DDL is met after a rollback (the switch's
    schema fingerprint). Review finding."""
    path, pb = to_read_mongo(env, tmp_path)
    cdc = start_cdc(env, path)
    try:
        step(path, "--to", "write_mongo", "--force", "--reason", "t", "--playbook", str(pb))
        env.sql("ALTER TABLE orders ADD COLUMN extra INT NULL DEFAULT 7")
        time.sleep(1.5)
        assert cdc.poll() is None, _cdc_log(cdc)
        _reverse_synced(env, cdc, 3, "in MongoDB after the ALTER")
        migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "back", check=0)
        # MySQL-first again: CDC meets the ALTER now, and stops there (--on-ddl stop)
        wait_until(lambda: cdc.poll() is not None, "CDC to meet the ALTER", timeout=20)
        assert "DDL on a mapped table" in _cdc_log(cdc)
    finally:
        if cdc.poll() is None:
            cdc.terminate()
        cdc.wait(timeout=60)
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
