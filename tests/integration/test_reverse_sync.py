"""Reverse sync after the write switch: every writer's MongoDB changes reach MySQL through the
change stream (not only the SDK's), in order, exactly (a seeded random workload checked by an
independent oracle), across kill -9, a MySQL outage, a read lock and a killed connection in
the middle of a batch; a document it cannot write is a dead letter and the rest goes on; a
rollback waits for them; `verify --repair` rewrites MySQL from MongoDB, never deleting a row
that never became a document."""

from __future__ import annotations

import json
import random
from datetime import datetime
from decimal import Decimal

import pytest
from bson.decimal128 import Decimal128

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.devtools.sandbox import restart_mysql
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.reverse.runner import record_start
from migrator.source.connection import connect
from migrator.state.store import StateStore
from migrator.verify.engine import verify

from .conftest import migrator_cmd
from .helpers import (
    cli_process,
    make_shop,
    reverse_caught_up,
    start_cdc,
    switch,
    to_read_mongo,
    wait_until,
    walk_to,
)
from .shop_oracle import expected_orders


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
    cdc = start_cdc(env, path)
    try:
        for i in range(60):  # a stream of changes; CDC killed in the middle of it
            env.target.orders.update_one({"_id": 1 + i % 20}, {"$set": {"note": f"n{i}"}})
            if i == 25:
                cdc.kill9()
                cdc = cli_process("cdc", "-m", str(path), "--follow")
        wait_until(
            lambda: env.sql("SELECT note FROM orders WHERE id = 20")[0][0] == "n59",
            "reverse sync after kill -9",
        )
        res = verify(load_mapping(path))
        assert res.ok, [(d.id, d.fields) for d in res.differences[:5]]
        # MySQL away: MongoDB writes go on, reverse lag grows, a rollback is refused
        mysql = next(p for p in env.stack.procs if p.name in ("mariadb", "mysql"))
        mysql.stop()
        env.target.orders.update_one({"_id": 4}, {"$set": {"note": "while MySQL was away"}})
        # reverse sync has read the change and cannot write it: it says so while it retries
        wait_until(
            lambda: (
                "reverse sync retrying"
                in str((env.state.meta.find_one({"_id": "cdc_status"}) or {}).get("waiting_for"))
            ),
            "reverse sync to meet the outage",
        )
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
        cdc.stop()
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
    one (`--shared`, from its plan's start)."""
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


@pytest.mark.parametrize(
    "bad",
    [
        "insert_without_id",  # insert_one without _id: MongoDB gives it an ObjectId
        "string_id",  # _id "abc" for a BIGINT key
        "items_a_number",  # the embedded array set to a scalar
        "total_nan",  # Decimal128('NaN') in a DECIMAL column
    ],
)
def test_one_unconvertible_document_is_a_dead_letter_and_reverse_sync_goes_on(env, bad):
    path = make_shop(env, orders=6)
    backfill(load_mapping(path), workers=1)
    switch(path)
    db = env.target
    if bad == "insert_without_id":
        new = db.orders.find_one({"_id": 1})
        del new["_id"]
        new.update(id=900, orderNo="SO-900")
        db.orders.insert_one(new)
    elif bad == "string_id":
        new = db.orders.find_one({"_id": 1})
        new.update(_id="abc", id=901, orderNo="SO-901")
        db.orders.insert_one(new)
    elif bad == "items_a_number":
        db.orders.update_one({"_id": 2}, {"$set": {"items": 5}})
    elif bad == "total_nan":
        db.orders.update_one({"_id": 2}, {"$set": {"total": Decimal128("NaN")}})
    # a good change by another writer, after the bad one
    db.orders.update_one({"_id": 3}, {"$set": {"note": "after the bad document"}})
    summary = run_cdc(load_mapping(path), mode="until-caught-up")  # it does not stop
    assert env.sql("SELECT note FROM orders WHERE id = 3")[0][0] == "after the bad document"
    assert summary.dead_letters == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # a DOUBLE in the document for an INT column (MySQL would round 2.9 to 3)
        ({"items.0.qty": 2.9}, "order_items.qty: cannot write 2.9 back: expected an integer"),
        # a sub-document in a TEXT column
        ({"note": {"a": 1}}, "orders.note: cannot write {'a': 1} back: expected text"),
    ],
    ids=["float_in_int", "object_in_text"],
)
def test_a_value_of_another_type_is_dead_lettered_with_the_reason(env, change, reason):
    """A plain pymongo writer sets a field to a value of another type. The document cannot come
    from any row: reverse sync dead-letters it, naming the column and the value, and leaves
    MySQL's row as it was (it does not store something else silently: after a rollback MySQL
    would serve it, and the document keep the other value)."""
    path = make_shop(env, orders=4)
    backfill(load_mapping(path), workers=1)
    switch(path)
    line = env.target.orders.find_one({"_id": 2})["items"][0]["line_no"]

    def row():
        return env.sql(
            "SELECT o.note, i.qty FROM orders o JOIN order_items i ON i.order_id = o.id "
            f"WHERE o.id = 2 AND i.line_no = {line}"
        )

    before = row()
    env.target.orders.update_one({"_id": 2}, {"$set": change})
    summary = run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
    assert summary.dead_letters == 1
    (dead,) = env.state.dead_letters.find({})
    assert dead["reason"].startswith("cannot write the document back to MySQL: " + reason), dead
    assert row() == before


def _random_ops(db, rnd: random.Random, n: int, next_id: list[int]) -> None:
    ids = [d["_id"] for d in db.orders.find({}, {"_id": 1})]
    for _ in range(n):
        op = rnd.random()
        oid = rnd.choice(ids) if ids else None
        doc = db.orders.find_one({"_id": oid}) if oid is not None else None
        if doc is None:
            continue
        items = list(doc.get("items") or [])
        used = {it["line_no"] for it in items}
        if op < 0.15:  # add an element
            ln = rnd.choice([x for x in range(1, 40) if x not in used])
            db.orders.update_one(
                {"_id": oid},
                {"$push": {"items": {"line_no": ln, "product_id": rnd.randint(1, 10),
                                     "qty": rnd.randint(1, 9),
                                     "unit_price": Decimal128(f"{rnd.randint(1, 999)}.50")}}},
            )  # fmt: skip
        elif op < 0.28 and items:  # remove an element
            db.orders.update_one(
                {"_id": oid}, {"$pull": {"items": {"line_no": rnd.choice(items)["line_no"]}}}
            )
        elif op < 0.36 and items:  # reorder the array (order_by line_no: re-sort later)
            rnd.shuffle(items)
            db.orders.update_one({"_id": oid}, {"$set": {"items": items}})
        elif op < 0.46 and items:  # change a child's key
            it = rnd.choice(items)
            ln = rnd.choice([x for x in range(1, 40) if x not in used])
            db.orders.update_one(
                {"_id": oid, "items.line_no": it["line_no"]},
                {"$set": {"items.$.line_no": ln}},
            )
        elif op < 0.54 and items:  # change a child's value
            it = rnd.choice(items)
            db.orders.update_one(
                {"_id": oid, "items.line_no": it["line_no"]},
                {"$set": {"items.$.qty": rnd.randint(1, 50)}},
            )
        elif op < 0.60:  # $unset a nullable field
            db.orders.update_one({"_id": oid}, {"$unset": {"note": ""}})
        elif op < 0.66:  # $unset the whole array
            db.orders.update_one({"_id": oid}, {"$unset": {"items": ""}})
        elif op < 0.74:  # change the embedded parent
            c = rnd.randint(1, 30)
            cust = db.customers.find_one({"_id": c})
            db.orders.update_one(
                {"_id": oid},
                {"$set": {"customer_id": c,
                          "customer": {"id": c, "email": cust["email"], "name": cust["name"]}}},
            )  # fmt: skip
        elif op < 0.80:  # no customer at all
            db.orders.update_one({"_id": oid}, {"$set": {"customer_id": None, "customer": None}})
        elif op < 0.88:  # replace the whole document
            doc["status"] = rnd.choice(["new", "paid", "shipped", "cancelled"])
            doc["note"] = f"replaced {rnd.random():.6f}"
            doc["items"] = [
                {"line_no": ln, "product_id": rnd.randint(1, 10), "qty": rnd.randint(1, 9),
                 "unit_price": Decimal128("1.00")}
                for ln in sorted(rnd.sample(range(1, 40), rnd.randint(0, 4)))
            ]  # fmt: skip
            db.orders.replace_one({"_id": oid}, doc)
        elif op < 0.93:  # delete the document
            db.orders.delete_one({"_id": oid})
            ids.remove(oid)
        else:  # a new document
            nid = next_id[0]
            next_id[0] += 1
            doc.update(_id=nid, id=nid, orderNo=f"SO-{nid}")
            db.orders.insert_one(doc)
            ids.append(nid)


def _canon(doc):
    out = dict(doc)
    out["items"] = sorted(out.get("items") or [], key=lambda i: i["line_no"])
    out.setdefault("note", None)
    for k in list(out):
        if hasattr(out[k], "to_decimal"):
            out[k] = out[k].to_decimal()
    out["items"] = [
        {k: (v.to_decimal() if hasattr(v, "to_decimal") else v) for k, v in i.items()}
        for i in out["items"]
    ]
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_pymongo_workload_reverse_syncs_to_exact_rows(env, seed):
    path = make_shop(env, orders=25)
    backfill(load_mapping(path), workers=1)
    switch(path)
    rnd = random.Random(seed)
    next_id = [1000]
    for _round in range(3):
        _random_ops(env.target, rnd, 80, next_id)
        summary = run_cdc(load_mapping(path), mode="until-caught-up")
        assert summary.dead_letters == 0
    want = {d["_id"]: _canon(d) for d in env.target.orders.find()}
    got = {k: _canon(v) for k, v in expected_orders(env.admin, env.db).items()}
    assert sorted(got) == sorted(want)
    bad = [k for k in want if got[k] != want[k]]
    assert not bad, [(k, got[k], want[k]) for k in bad[:3]]
    orphans = env.sql(
        "SELECT COUNT(*) FROM order_items i LEFT JOIN orders o ON o.id = i.order_id "
        "WHERE o.id IS NULL"
    )
    assert orphans == [(0,)]


def test_a_change_reverse_sync_dead_lettered_holds_the_rollback_until_a_clean_repair(env):
    """README: a rollback from write_mongo waits until reverse lag is 0, "so MySQL serves every
    acknowledged MongoDB write". A change reverse sync dead-lettered is not lag, and MySQL
    would serve without it: the rollback is refused (rc 1, audited) until a clean full
    `verify --repair` settles the dead letters; `--force` would roll back without them."""
    path = make_shop(env, orders=4)
    backfill(load_mapping(path), workers=1)
    switch(path)
    # a writer without the SDK: a new order with a total no DECIMAL column holds
    doc = env.target.orders.find_one({"_id": 2})
    doc.update({"_id": 501, "id": 501, "orderNo": "SO-501", "total": Decimal128("NaN")})
    env.target.orders.insert_one(doc)
    assert run_cdc(load_mapping(path), mode="until-caught-up").dead_letters == 1
    args = ["rollback", "-m", str(path), "--to", "read_mongo", "--yes", "--reason", "drill"]
    p = migrator_cmd(*args, check=1)
    assert "could not write 1 MongoDB change" in p.stdout + p.stderr
    assert env.state.control.find_one({"_id": "control"})["phase"] == "write_mongo"
    assert not env.state.control.find_one({"_id": "control"}).get("freeze")
    # the owner fixes the document; a full repair (toward MySQL in this phase) comes out clean
    env.target.orders.update_one({"_id": 501}, {"$set": {"total": Decimal128("12.50")}})
    run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
    migrator_cmd("verify", "-m", str(path), "--repair", check=0)
    assert migrator_cmd("verify", "-m", str(path), check=0).returncode == 0
    migrator_cmd(*args, check=0)
    assert env.state.control.find_one({"_id": "control"})["phase"] == "read_mongo"
    assert env.sql("SELECT total FROM orders WHERE id = 501") == [(Decimal("12.50"),)]


def test_verify_repair_after_the_switch_keeps_a_row_that_never_became_a_document(env):
    """A row whose DECIMAL has more digits than Decimal128 holds never became a document (a
    dead letter: MongoDB has nothing for it because the tool could not convert it, not
    because anybody deleted it). After the switch `verify --repair` rewrites MySQL from
    MongoDB, but keeps that row (the only copy of its data): it does not delete it for having
    no document."""
    env.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, amount DECIMAL(40,0), note VARCHAR(20))",
        "INSERT INTO t VALUES (1, 5, 'fine'), (2, 1234567890123456789012345678901234567, 'big')",
    )
    path = env.mapping("  - {name: t, from: t}\n")
    backfill(load_mapping(path), workers=1)
    assert env.target.t.find_one({"_id": 2}) is None  # dead-lettered by the backfill
    switch(path)
    res = verify(load_mapping(path), repair=True, recheck=1, recheck_delay=0.1)
    left = env.sql("SELECT id, note FROM t ORDER BY id")
    assert left == [(1, "fine"), (2, "big")], (left, res.ok, [d.kind for d in res.differences])


def _applier_writing(env):
    """The reverse applier's statements under way in MySQL (waiting on a lock)."""
    return env.sql(
        "SELECT id FROM information_schema.processlist WHERE command = 'Query' AND db = %s "
        "AND (info LIKE 'INSERT INTO %%' OR info LIKE 'UPDATE %%' OR info LIKE 'DELETE %%') "
        "AND id <> CONNECTION_ID()",
        args=(env.db,),
    )


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
        walk_to(path, "write_mongo", pb)  # the switch, in process (CDC running)
        cur = blocker.cursor()
        cur.execute(f"SELECT id FROM orders WHERE id = {d} FOR UPDATE")
        _array_changes(env, a, b, c, d, 1)
        # the batch is read and applied up to d, where it waits
        wait_until(lambda: _applier_writing(env), "the reverse applier to wait on the lock")
        assert not _converged(env, [d])
        cdc.kill9()
        blocker.rollback()
        cdc = start_cdc(env, path)
        wait_until(lambda: _converged(env, [a, b, c, d]), "reverse sync after kill -9")
        reverse_caught_up(env)  # and nothing after it changes them again
        assert _converged(env, [a, b, c, d])
    finally:
        blocker.close()
        cdc.stop()
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
        walk_to(path, "write_mongo", pb)  # the switch, in process (CDC running)
        cur = blocker.cursor()
        cur.execute("FLUSH TABLES WITH READ LOCK")
        _array_changes(env, a, b, c, d, 1)
        wait_until(lambda: _applier_writing(env), "the reverse applier to wait on the lock")
        assert not _converged(env, [a])
        cur.execute("UNLOCK TABLES")
        wait_until(lambda: _converged(env, [a, b, c, d]), "reverse sync after the read lock")
        # now a row lock, and the applier's own connection killed while it waits on it
        cur.execute(f"SELECT id FROM orders WHERE id = {d} FOR UPDATE")
        _array_changes(env, a, b, c, d, 2)
        rows = wait_until(
            lambda: _applier_writing(env),
            lambda: (
                "the reverse applier to wait on the row lock: "
                + repr(
                    env.sql("SELECT id, command, state, info FROM information_schema.processlist")
                )
            ),
        )
        for (cid,) in rows:
            env.sql(f"KILL CONNECTION {int(cid)}")
        blocker.rollback()
        wait_until(lambda: _converged(env, [a, b, c, d]), "reverse sync after KILL")
        assert cdc.poll() is None, cdc.log_tail()
    finally:
        blocker.close()
        cdc.stop()
    _caught_up_and_clean(path)
