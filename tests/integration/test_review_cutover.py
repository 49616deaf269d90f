"""Review of the cutover guarantees (issue 10): attempts to break reverse sync, the SDK across
the switch and rollback, and the phase machine. Each test states the promise it checks."""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal

import pytest
from bson.decimal128 import Decimal128

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.errors import CheckFailed
from migrator.model.settings import load_mapping
from migrator.verify.engine import verify

from .conftest import migrator_cmd
from .shop_oracle import expected_orders
from .test_backfill import make_shop
from .test_reverse_sync import switch


def _reverse(path):
    return run_cdc(load_mapping(path), mode="until-caught-up")


def _orphans(env):
    return env.sql(
        "SELECT COUNT(*) FROM order_items i LEFT JOIN orders o ON o.id = i.order_id "
        "WHERE o.id IS NULL"
    )[0][0]


# --- one bad document must be a dead letter, not a stop of reverse sync ----------------------
# README, "reverse sync": "rows MySQL refuses are dead letters with the reason"; a document the
# inverse cannot convert is a dead letter (ConversionError). Below, documents any plain pymongo
# writer can produce; after each, a good change made later must still reach MySQL.


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
    try:
        summary = _reverse(path)
    except Exception as exc:
        pytest.fail(f"reverse sync stopped on one bad document: {type(exc).__name__}: {exc}")
    assert env.sql("SELECT note FROM orders WHERE id = 3")[0][0] == "after the bad document"
    assert summary.dead_letters == 1


# --- a seeded random workload by a plain pymongo writer: MySQL ends with exactly the rows ------
# a backfill of the documents would need (the independent oracle: shop_oracle builds documents
# from MySQL's rows the slow way; they must equal MongoDB's).


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
        summary = _reverse(path)
        assert summary.dead_letters == 0
    want = {d["_id"]: _canon(d) for d in env.target.orders.find()}
    got = {k: _canon(v) for k, v in expected_orders(env.admin, env.db).items()}
    assert sorted(got) == sorted(want)
    bad = [k for k in want if got[k] != want[k]]
    assert not bad, [(k, got[k], want[k]) for k in bad[:3]]
    assert _orphans(env) == 0
    # (`verify` is not the oracle here: it reports the documents' own shape as differences --
    # an array out of `order_by` order, `note` absent instead of null, `items` absent instead
    # of [] -- though MySQL's rows are exactly right)


# --- the SDK after the switch ------------------------------------------------------------------


def test_sdk_insert_after_the_switch_gets_mysql_column_defaults(env):
    """An application inserting a row that leaves out columns with a DEFAULT (as MySQL allows:
    orders.status DEFAULT 'new', total DEFAULT 0) through the SDK. Before the switch the
    document gets MySQL's defaults; after it the SDK builds the row itself (`_predict` from
    None), so the document must still hold them, and reverse sync must be able to make it a
    MySQL row (an acknowledged write that never reaches MySQL is lost at a rollback)."""
    from migrator.cutover.sdk import DualWriter

    path = make_shop(env, orders=4)
    backfill(load_mapping(path), workers=1)
    switch(path)
    w = DualWriter(load_mapping(path))
    try:
        w.insert(
            "orders",
            {
                "id": 500,
                "order_no": "SO-500",
                "customer_id": 3,
                "created_at": "2024-05-01 10:00:00",
            },
        )  # acknowledged
    finally:
        w.close()
    doc = env.target.orders.find_one({"_id": 500})
    summary = _reverse(path)
    rows = env.sql("SELECT status, total FROM orders WHERE id = 500")
    dead = [d.get("reason") for d in env.state.dead_letters.find({})]
    assert rows == [("new", Decimal("0.00"))], (rows, dead, summary.dead_letters)
    assert doc["status"] == "new" and doc["total"] == Decimal128("0.00"), doc


def test_two_sdk_writers_updating_different_columns_of_one_row_after_the_switch(env):
    """Two application processes (two DualWriter instances) update different columns of the
    same hot row after the switch: one sets `status`, the other `note`. In MySQL-first phases
    MySQL's UPDATE changes only its column; after the switch the SDK reads the document, builds
    the whole row and `$set`s every root field, so one writer can put back the other's old
    value: an acknowledged write lost in MongoDB, the source of truth. The oracle: once the
    note writer's write n<k> is acknowledged, nobody else writes `note`, so the document must
    never show an older n<j>."""
    from migrator.cutover.sdk import DualWriter

    path = make_shop(env, orders=4)
    backfill(load_mapping(path), workers=1)
    switch(path)
    m = load_mapping(path)
    a, b = DualWriter(m), DualWriter(m)
    acked = [-1]
    done = threading.Event()
    errors: list[BaseException] = []
    regressions: list[tuple[int, int]] = []
    lost: list[int] = []
    statuses = ["new", "paid", "shipped", "cancelled"]

    def status_writer():
        try:
            i = 0
            while not done.is_set():
                a.update("orders", {"id": 1}, {"status": statuses[i % 4]})
                i += 1
        except BaseException as exc:
            errors.append(exc)

    def note_writer():
        try:
            for k in range(100):
                b.update("orders", {"id": 1}, {"note": f"n{k}"})
                acked[0] = k
                time.sleep(0.05)  # the other writer goes on meanwhile
                if env.target.orders.find_one({"_id": 1}).get("note") != f"n{k}":
                    lost.append(k)  # gone, and no one will write it again
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def monitor():
        while not done.is_set():
            floor = acked[0]
            note = env.target.orders.find_one({"_id": 1}).get("note") or ""
            j = int(note[1:]) if note[:1] == "n" and note[1:].isdigit() else -1
            if j < floor:
                regressions.append((floor, j))

    ts = [threading.Thread(target=f) for f in (status_writer, note_writer, monitor)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    a.close()
    b.close()
    assert not errors, errors[:1]
    final = env.target.orders.find_one({"_id": 1})["note"]
    assert not lost and not regressions and final == "n99", (
        f"final note {final!r}; acknowledged notes overwritten by the other writer: {lost[:10]} "
        f"({len(lost)} of 100); regressions seen: {len(regressions)}"
    )


def test_a_change_reverse_sync_dead_lettered_holds_the_rollback_until_a_clean_repair(env):
    """README: a rollback from write_mongo waits until reverse lag is 0, "so MySQL serves every
    acknowledged MongoDB write". A change reverse sync dead-lettered is not lag: the rollback
    went through and MySQL served without it. Now it is refused (rc 1, audited) until a clean
    full `verify --repair` settles the dead letters; `--force` would roll back without them."""
    path = make_shop(env, orders=4)
    backfill(load_mapping(path), workers=1)
    switch(path)
    # a writer without the SDK: a new order with a total no DECIMAL column holds
    doc = env.target.orders.find_one({"_id": 2})
    doc.update({"_id": 501, "id": 501, "orderNo": "SO-501", "total": Decimal128("NaN")})
    env.target.orders.insert_one(doc)
    assert _reverse(path).dead_letters == 1
    args = ["rollback", "-m", str(path), "--to", "read_mongo", "--yes", "--reason", "review"]
    p = migrator_cmd(*args, check=1)
    assert "could not write 1 MongoDB change" in p.stdout + p.stderr
    assert env.state.control.find_one({"_id": "control"})["phase"] == "write_mongo"
    assert not env.state.control.find_one({"_id": "control"}).get("freeze")
    # the owner fixes the document; a full repair (toward MySQL in this phase) comes out clean
    env.target.orders.update_one({"_id": 501}, {"$set": {"total": Decimal128("12.50")}})
    _reverse(path)
    migrator_cmd("verify", "-m", str(path), "--repair", check=0)
    assert migrator_cmd("verify", "-m", str(path), check=0).returncode == 0
    migrator_cmd(*args, check=0)
    assert env.state.control.find_one({"_id": "control"})["phase"] == "read_mongo"
    assert env.sql("SELECT total FROM orders WHERE id = 501") == [(Decimal("12.50"),)]


@pytest.mark.parametrize(
    ("change", "column", "sql_would_store"),
    [
        ({"items.0.qty": 2.9}, "qty", 3),  # MySQL rounds 2.9 to 3; a DOUBLE in the document
        ({"note": {"a": 1}}, "note", None),  # a sub-document in a TEXT column
    ],
    ids=["float_in_int", "object_in_text"],
)
def test_a_value_of_another_type_is_written_back_exactly_or_dead_lettered(
    env, change, column, sql_would_store
):
    """A plain pymongo writer sets a field to a value of another type. The document cannot come
    from any row; reverse sync must either write what the document says (as MySQL itself would
    store that value) or dead-letter it with the reason -- not store something else silently
    (after a rollback MySQL serves it, and the document keeps the other value)."""
    path = make_shop(env, orders=4)
    backfill(load_mapping(path), workers=1)
    switch(path)
    env.target.orders.update_one({"_id": 2}, {"$set": change})
    summary = _reverse(path)
    if column == "qty":
        line = env.target.orders.find_one({"_id": 2})["items"][0]["line_no"]
        got = env.sql(f"SELECT qty FROM order_items WHERE order_id = 2 AND line_no = {line}")[0][0]
    else:
        got = env.sql("SELECT note FROM orders WHERE id = 2")[0][0]
    assert summary.dead_letters == 1 or got == sql_would_store, (
        f"MySQL has {got!r} for {change}; no dead letter"
    )


def test_a_verify_repair_running_across_the_write_switch_keeps_its_old_direction(env, monkeypatch):
    """`verify --repair` repairs toward the phase's source of truth, but decides the direction
    once, when it starts. A full repair started in read_mongo (hours on a big database) that
    is still running at the write switch goes on copying MySQL -> MongoDB: it rebuilds a
    document from MySQL's row, which lacks a MongoDB-first write made after the switch (reverse
    sync has not written it yet), over the authoritative document. Simulated by making the
    switch and the SDK write happen when the repair reaches its first difference."""
    from migrator.cutover.machine import Machine
    from migrator.cutover.playbook import default_playbook
    from migrator.cutover.sdk import DualWriter
    from migrator.verify import engine

    path = make_shop(env, orders=8)
    backfill(load_mapping(path), workers=1)
    run_cdc(load_mapping(path), mode="until-caught-up")
    m = Machine(load_mapping(path), default_playbook(), actor="test@ci")
    try:
        for target in ("backfill", "sync", "dual_write", "read_mongo"):
            m.step(target, force=True, reason="test")
    finally:
        m.close()
    env.target.orders.update_one({"_id": 5}, {"$set": {"status": "cancelled"}})  # a difference
    original = engine.Verifier.repair
    fired = []

    def slow_repair(self, plan, diffs, res):
        if not fired:
            fired.append(1)
            mm = Machine(load_mapping(path), default_playbook(), actor="switch@ci")
            try:
                mm.step("write_mongo", force=True, reason="the switch, while verify runs")
            finally:
                mm.close()
            w = DualWriter(load_mapping(path))
            try:
                w.update("orders", {"id": 5}, {"note": "written after the switch"})  # acked
            finally:
                w.close()
        return original(self, plan, diffs, res)

    monkeypatch.setattr(engine.Verifier, "repair", slow_repair)
    with pytest.raises(CheckFailed, match="source of truth moved"):
        verify(load_mapping(path), repair=True, recheck=0)
    assert fired
    assert env.state.control.find_one({"_id": "control"})["phase"] == "write_mongo"
    doc = env.target.orders.find_one({"_id": 5})
    assert doc.get("note") == "written after the switch", doc.get("note")


def test_an_sdk_write_of_a_column_no_document_holds_is_refused_after_the_switch(env):
    """orders.legacy_flag is excluded from the mapping. Before the switch the SDK writes it to
    MySQL; after it reverse sync writes MySQL from the documents, which do not hold it: the
    write was acknowledged and never reached MySQL (an insert's value became the default).
    Now it is refused with the reason, and nothing is written."""
    from migrator.cutover.sdk import DualWriter
    from migrator.errors import MigratorError

    path = make_shop(env, orders=4)
    backfill(load_mapping(path), workers=1)
    switch(path)
    w = DualWriter(load_mapping(path))
    try:
        with pytest.raises(MigratorError, match="legacy_flag, which no document holds"):
            w.update("orders", {"id": 1}, {"legacy_flag": 1, "note": "with the flag"})
        row = {"id": 600, "order_no": "SO-600", "customer_id": 3, "legacy_flag": 1,
               "created_at": "2024-05-01 10:00:00"}  # fmt: skip
        with pytest.raises(MigratorError, match="legacy_flag, which no document holds"):
            w.insert("orders", row)
        w.update("orders", {"id": 1}, {"note": "without it"})  # a held column: fine
    finally:
        w.close()
    assert env.target.orders.find_one({"_id": 600}) is None
    assert env.target.orders.find_one({"_id": 1})["note"] == "without it"
    _reverse(path)
    assert env.sql("SELECT legacy_flag, note FROM orders WHERE id = 1") == [(0, "without it")]
