"""Review: kills, MySQL outages and races around the write switch, reverse sync and rollback.

Each test is a scenario that tries to lose or duplicate an acknowledged write, leave a MySQL
row or MongoDB document wrong, keep writes frozen, or leave the phase/audit inconsistent."""

from __future__ import annotations

import json
import time

from migrator.cdc.runner import run_cdc
from migrator.cutover.sdk import DualWriter
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect
from migrator.verify.engine import verify

from .conftest import migrator_cmd
from .test_cutover import step
from .test_write_fence import start_cdc, to_read_mongo, wait_until


def _cdc_log(cdc) -> str:
    cdc.log.seek(0)
    return cdc.log.read()[-3000:]


def _blocker(path):
    m = load_mapping(path)
    c = connect(parse_mysql_url(m.source.url))
    c.autocommit(False)
    return c


def _items(env, oid):
    return sorted(
        (int(r[0]), int(r[1]))
        for r in env.sql(f"SELECT line_no, qty FROM order_items WHERE order_id = {oid}")
    )


def _doc_items(env, oid):
    doc = env.target.orders.find_one({"_id": oid})
    return None if doc is None else sorted((int(i["line_no"]), int(i["qty"])) for i in doc["items"])


def _orders_with_items(env, n):
    rows = env.sql(
        "SELECT order_id FROM order_items GROUP BY order_id HAVING COUNT(*) >= 2 ORDER BY 1"
    )
    ids = [int(r[0]) for r in rows]
    assert len(ids) >= n, ids
    return ids[:n]


def _array_changes(env, a, b, c, d, tag):
    """Pushes, pulls, an element key change and an element update, by a plain MongoDB
    writer (MongoDB is the truth)."""
    doc_a = env.target.orders.find_one({"_id": a})
    new_line = max(int(i["line_no"]) for i in doc_a["items"]) + 1
    item = dict(doc_a["items"][0], line_no=new_line, qty=70 + tag)
    env.target.orders.update_one({"_id": a}, {"$push": {"items": item}})
    doc_b = env.target.orders.find_one({"_id": b})
    env.target.orders.update_one(
        {"_id": b}, {"$pull": {"items": {"line_no": doc_b["items"][0]["line_no"]}}}
    )
    last = len(env.target.orders.find_one({"_id": c})["items"]) - 1  # stays in line_no order
    env.target.orders.update_one({"_id": c}, {"$set": {f"items.{last}.line_no": 90 + tag}})
    env.target.orders.update_one({"_id": d}, {"$set": {"items.0.qty": 50 + tag}})


def _converged(env, ids):
    return all(_items(env, o) == _doc_items(env, o) for o in ids)


# -- 1. the reverse applier killed / MySQL away in the middle of a batch with child rows --------


def _caught_up_and_clean(path):
    m = load_mapping(path)
    run_cdc(m, mode="until-caught-up")
    res = verify(m)
    assert res.ok, res.differences[:5]


def test_reverse_applier_killed_mid_batch_with_child_rows_replays_exactly(env, tmp_path):
    """The reverse applier (`cdc --follow` in write_mongo) is blocked on a MySQL row lock in
    the middle of a batch that has already pushed, pulled and re-keyed array elements in its
    open transaction, and is killed with SIGKILL; restarted, MySQL's child rows equal the
    arrays exactly (nothing lost, nothing duplicated)."""
    path, pb = to_read_mongo(env, tmp_path)
    a, b, c, d = _orders_with_items(env, 4)
    cdc = start_cdc(env, path)
    blocker = _blocker(path)
    try:
        step(path, "--to", "write_mongo", "--force", "--reason", "t", "--playbook", str(pb))
        cur = blocker.cursor()
        cur.execute(f"SELECT id FROM orders WHERE id = {d} FOR UPDATE")
        _array_changes(env, a, b, c, d, 1)
        time.sleep(2)  # the batch is read and applied up to d, where it waits
        assert not _converged(env, [d])
        cdc.kill()
        cdc.wait()
        blocker.rollback()
        cdc = start_cdc(env, path)
        wait_until(lambda: _converged(env, [a, b, c, d]), "reverse sync after kill -9")
        time.sleep(1)
        assert _converged(env, [a, b, c, d])
    finally:
        blocker.close()
        cdc.terminate()
        cdc.wait(timeout=60)
    _caught_up_and_clean(path)


def test_reverse_applier_connection_killed_and_global_read_lock_mid_batch(env, tmp_path):
    """MySQL away in the middle of a batch: first FLUSH TABLES WITH READ LOCK held while the
    changes arrive, then the applier's connection KILLed while it waits on a row lock: MySQL's
    child rows end equal to the arrays."""
    path, pb = to_read_mongo(env, tmp_path)
    a, b, c, d = _orders_with_items(env, 4)
    cdc = start_cdc(env, path)
    blocker = _blocker(path)
    try:
        step(path, "--to", "write_mongo", "--force", "--reason", "t", "--playbook", str(pb))
        cur = blocker.cursor()
        cur.execute("FLUSH TABLES WITH READ LOCK")
        _array_changes(env, a, b, c, d, 1)
        time.sleep(2)
        assert not _converged(env, [a])
        cur.execute("UNLOCK TABLES")
        wait_until(lambda: _converged(env, [a, b, c, d]), "reverse sync after the read lock")
        # now a row lock, and the applier's own connection killed while it waits on it
        cur.execute(f"SELECT id FROM orders WHERE id = {d} FOR UPDATE")
        _array_changes(env, a, b, c, d, 2)
        time.sleep(2)
        rows = env.sql(
            "SELECT id FROM information_schema.processlist WHERE command = 'Query' AND "
            "info LIKE 'INSERT INTO `orders`%' AND id <> CONNECTION_ID()"
        )
        assert rows, env.sql("SELECT id, command, state, info FROM information_schema.processlist")
        for (cid,) in rows:
            env.sql(f"KILL CONNECTION {int(cid)}")
        blocker.rollback()
        wait_until(lambda: _converged(env, [a, b, c, d]), "reverse sync after KILL")
        assert cdc.poll() is None, _cdc_log(cdc)
    finally:
        blocker.close()
        cdc.terminate()
        cdc.wait(timeout=60)
    _caught_up_and_clean(path)


def test_a_forced_rollback_stops_a_reverse_batch_waiting_in_mysql(env, tmp_path):
    """Reverse sync read a batch (documents 5 and 6 as MongoDB had them) and waits in MySQL
    (a row lock on order 5: a long transaction, a slow disk). The operator rolls back with
    `--force --reason` (README: the rollback then goes "without those writes"). After the
    rollback an application writes order 6 through the SDK, MySQL first: acknowledged, in both
    stores. The lock goes; the waiting batch commits its older copy of document 6 over the
    newer MySQL row, and CDC (restarted at the rollback's position, before that commit) then
    copied it to MongoDB: the acknowledged write was gone from both stores. Now the rollback
    flips holding a MySQL lock each reverse batch holds while it writes: a forced rollback
    kills the connection of a batch that does not let go (it rolls back), a plain one waits
    for it. Review finding."""
    path, pb = to_read_mongo(env, tmp_path)
    cdc = start_cdc(env, path)
    blocker = _blocker(path)
    w = None
    try:
        step(path, "--to", "write_mongo", "--force", "--reason", "t", "--playbook", str(pb))
        env.target.orders.update_one({"_id": 3}, {"$set": {"note": "in MongoDB"}})
        wait_until(
            lambda: env.sql("SELECT note FROM orders WHERE id = 3")[0][0] == "in MongoDB",
            "reverse sync",
        )
        cur = blocker.cursor()
        cur.execute("SELECT id FROM orders WHERE id = 5 FOR UPDATE")
        env.target.orders.update_one({"_id": 5}, {"$set": {"note": "m5"}})
        env.target.orders.update_one({"_id": 6}, {"$set": {"note": "before the rollback"}})
        time.sleep(1.5)  # the batch [5, 6] is read; its transaction waits on order 5
        w = DualWriter(load_mapping(path), control_ttl=0.2, freeze_wait=30)
        p = migrator_cmd("rollback", "-m", str(path), "--to", "read_mongo", "--yes", "--force",
                         "--reason", "reverse sync stuck", "--json", check=0)  # fmt: skip
        assert json.loads(p.stdout)["to"] == "read_mongo"
        w.update("orders", {"id": 6}, {"note": "after the rollback"})  # acknowledged
        assert env.sql("SELECT note FROM orders WHERE id = 6")[0][0] == "after the rollback"
        assert env.target.orders.find_one({"_id": 6})["note"] == "after the rollback"
        blocker.rollback()  # the stuck batch goes on
        time.sleep(6)  # it commits; CDC restarts at the rollback's point and catches up
        mysql_note = env.sql("SELECT note FROM orders WHERE id = 6")[0][0]
        mongo_note = env.target.orders.find_one({"_id": 6})["note"]
        assert (mysql_note, mongo_note) == ("after the rollback", "after the rollback"), (
            f"MySQL: {mysql_note!r}, MongoDB: {mongo_note!r}"
        )
    finally:
        blocker.close()
        if w is not None:
            w.close()
        cdc.terminate()
        cdc.wait(timeout=60)
