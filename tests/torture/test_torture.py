"""The short convergence profile `make test` runs: a few seeds, binlog and Debezium, each a
random schema, a random write load and random faults, checked by verify and by an independent
oracle. `make torture SEED=... MINUTES=...` runs the long profile."""

from __future__ import annotations

import pytest

from .harness import run_seed

# one-level mappings, as these seeds were when each found a bug (pinned by integration tests)
BINLOG_SEEDS = [4, 5, 8, 10]
DEBEZIUM_SEED = 11
# nested mappings: arrays in arrays, chains of parents, many-to-many merged and as values
NESTED_BINLOG_SEED = 1
NESTED_DEBEZIUM_SEED = 2


@pytest.mark.parametrize("seed", BINLOG_SEEDS)
def test_a_binlog_seed_converges(seed, torture_stack):
    r = run_seed(seed, source="binlog", seconds=5, stack=torture_stack, nested=False)
    assert r.ok, r.summary()


def test_a_debezium_seed_converges(debezium_stack):
    r = run_seed(DEBEZIUM_SEED, source="debezium", seconds=8, stack=debezium_stack, nested=False)
    assert r.ok, r.summary()


def test_a_nested_binlog_seed_converges(torture_stack):
    r = run_seed(NESTED_BINLOG_SEED, source="binlog", seconds=6, stack=torture_stack, nested=True)
    assert r.ok, r.summary()


def test_a_nested_debezium_seed_converges(debezium_stack):
    r = run_seed(
        NESTED_DEBEZIUM_SEED, source="debezium", seconds=8, stack=debezium_stack, nested=True
    )
    assert r.ok, r.summary()


def test_the_oracle_sees_what_it_must(torture_stack):
    """The oracle is only worth its verdicts if it can fail: a backfilled copy is equal to it,
    and one changed field, one lost array element and one extra document are each seen."""
    import random

    from pymongo import MongoClient

    from migrator.backfill.copy import backfill
    from migrator.devtools.sandbox import url_with_database
    from migrator.model.settings import parse_mapping

    from . import oracle
    from .model import generate
    from .workload import Workload

    model = generate(5)
    db = "tort_oracle_check"
    admin = oracle.connect(url_with_database(torture_stack.mysql_url, ""))
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        cur.execute(f"CREATE DATABASE `{db}`")
    url = url_with_database(torture_stack.mysql_url, db)
    load = Workload(url, model, 5)
    load.create()
    load.load(per_root=20)
    for _ in range(50):
        load.step()
    mongo: MongoClient = MongoClient(torture_stack.mongo_url, tz_aware=False)
    try:
        text = model.mapping_yaml(url, torture_stack.mongo_url, db, f"_state_{db}")
        backfill(parse_mapping(text, "torture.yaml"), workers=1)
        conn = oracle.connect(url)
        assert oracle.compare(model, conn, mongo[db]) == []
        rnd = random.Random(1)
        coll = mongo[db][model.colls[0].name]
        doc = coll.find_one({})
        field = rnd.choice([k for k in doc if k != "_id" and not isinstance(doc[k], list)])
        coll.update_one({"_id": doc["_id"]}, {"$set": {field: "tampered"}})
        arrays = [c for c in model.colls if any(e.many for e in c.embeds)]
        if arrays:
            e = next(e for e in arrays[0].embeds if e.many)
            mongo[db][arrays[0].name].update_one(
                {"_id": {"$ne": doc["_id"]}, f"{e.as_}.0": {"$exists": True}},
                {"$pop": {e.as_: 1}},
            )
        coll.insert_one({"_id": "ghost"})
        problems = oracle.compare(model, conn, mongo[db], limit=100)
        conn.close()
        assert any("differs" in p and "tampered" in p for p in problems), problems
        assert any("extra _id ('string', 'ghost')" in p for p in problems), problems
        assert len(problems) >= (3 if arrays else 2), problems
    finally:
        mongo.drop_database(db)
        mongo.drop_database(f"_state_{db}")
        mongo.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        admin.close()
