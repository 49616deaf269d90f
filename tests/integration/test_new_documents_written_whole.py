"""A document a CDC batch creates is written once, whole, with the batch's later changes to it
(its own updates, elements pushed, changed, moved in the order and pulled) made in memory
first; it must end exactly as the statements one by one would leave it, and when another
writer created it meanwhile, the statements are sent instead."""

from __future__ import annotations

import random
from typing import Any

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.applier import Applier
from migrator.cdc.runner import run_cdc
from migrator.model.events import ChangeEvent, Position, Transaction
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect

from .cdc_helpers import assert_same_as_fresh_backfill
from .helpers import applier_for

SCHEMA = [
    "CREATE TABLE o (id INT PRIMARY KEY, status VARCHAR(10) NOT NULL, note VARCHAR(20) NULL)",
    # no foreign key: an item may name an order that does not exist (yet), or move anywhere
    "CREATE TABLE it (id INT PRIMARY KEY, o_id INT NULL, pos INT NOT NULL, qty INT NOT NULL,"
    " KEY (o_id))",
]
COLLECTIONS = """\
  - name: o
    from: o
    embed:
      - {as: items, from: it, on: {o_id: id}, many: true, order_by: [pos], exclude: [o_id]}
"""


def _setup(env: Any) -> Any:
    env.sql(*SCHEMA)
    env.sql(
        *[f"INSERT INTO o VALUES ({i}, 'new', NULL)" for i in range(1, 6)],
        *[f"INSERT INTO it VALUES ({i}, {1 + i % 5}, {i % 3}, 1)" for i in range(1, 11)],
    )
    path = env.mapping(COLLECTIONS)
    backfill(load_mapping(path), workers=1)
    return path


class Workload:
    """Seeded random changes that favour orders created in the same batch."""

    def __init__(self, env: Any, seed: int) -> None:
        self.env, self.rnd = env, random.Random(seed)
        self.orders = set(range(1, 6))
        self.items: dict[int, int | None] = {i: 1 + i % 5 for i in range(1, 11)}
        self.next_order, self.next_item = 100, 100

    def statement(self) -> str:
        r, rnd = self.rnd.random(), self.rnd
        some_order = rnd.choice([*sorted(self.orders), self.next_order]) if self.orders else 1
        if r < 0.15 or not self.orders:
            self.next_order += 1
            self.orders.add(self.next_order)
            return f"INSERT INTO o VALUES ({self.next_order}, 'new', NULL)"
        if r < 0.25:
            return f"UPDATE o SET status = 's{rnd.randint(0, 9)}' WHERE id = {some_order}"
        if r < 0.3:
            note = "NULL" if rnd.random() < 0.5 else f"'n{rnd.randint(0, 9)}'"
            return f"UPDATE o SET note = {note} WHERE id = {some_order}"
        if r < 0.35 and len(self.orders) > 2:
            gone = rnd.choice(sorted(self.orders))
            self.orders.discard(gone)
            return f"DELETE FROM o WHERE id = {gone}"
        if r < 0.6 or not self.items:
            self.next_item += 1
            self.items[self.next_item] = some_order
            return f"INSERT INTO it VALUES ({self.next_item}, {some_order}, {rnd.randint(0, 4)}, 1)"
        item = rnd.choice(sorted(self.items))
        if r < 0.72:
            return f"UPDATE it SET qty = qty + 1 WHERE id = {item}"
        if r < 0.84:
            return f"UPDATE it SET pos = {rnd.randint(0, 4)} WHERE id = {item}"  # moves it
        if r < 0.92:
            self.items[item] = some_order
            return f"UPDATE it SET o_id = {some_order} WHERE id = {item}"
        del self.items[item]
        return f"DELETE FROM it WHERE id = {item}"

    def run(self, statements: int) -> None:
        conn = connect(parse_mysql_url(self.env.url))
        cur = conn.cursor()
        for _ in range(statements):
            cur.execute(self.statement())
            if self.rnd.random() < 0.3:
                conn.commit()
        conn.commit()
        conn.close()


@pytest.mark.parametrize(("seed", "batch"), [(s, 100_000) for s in range(6)] + [(6, 5), (7, 5)])
def test_a_batch_of_new_documents_ends_as_statements_one_by_one_would(env, seed, batch):
    """Batch size 100,000: the whole workload in one batch (documents created and changed in
    it); 5: mostly statements on documents earlier batches wrote."""
    path = _setup(env)
    Workload(env, seed).run(400)
    folded: list[int] = []
    original = Applier.apply

    def spy(self: Applier, txns: list[Transaction]) -> Any:
        res = original(self, txns)
        folded.append(res.folded)
        return res

    Applier.apply = spy  # type: ignore[method-assign]
    try:
        s = run_cdc(
            load_mapping(path), mode="until-caught-up", batch_events=batch, batch_seconds=30
        )
    finally:
        Applier.apply = original  # type: ignore[method-assign]
    assert s.dead_letters == 0
    assert sum(folded) > 0, "no change was made to a new document in memory"
    assert_same_as_fresh_backfill(env, path)


def test_a_document_another_writer_created_meanwhile_gets_the_statements(env):
    """The prefetch saw no document 50; another writer (the SDK, a repair) writes one with an
    older item before the batch's writes: the batch's insert of the whole document fails on its
    key, and the statements keep that writer's element and add the new one, losing nothing."""
    path = _setup(env)
    m = load_mapping(path)
    pos = Position("mysql-bin.000001", 4)
    events = [
        ChangeEvent("o", "insert", None, {"id": 50, "status": "new", "note": None}),
        ChangeEvent("it", "insert", None, {"id": 500, "o_id": 50, "pos": 2, "qty": 1}),
        ChangeEvent("it", "insert", None, {"id": 501, "o_id": 50, "pos": 1, "qty": 1}),
        ChangeEvent(
            "o",
            "update",
            {"id": 50, "status": "new", "note": None},
            {"id": 50, "status": "paid", "note": None},
        ),
    ]
    txns = [Transaction(events, pos)]
    with applier_for(m) as applier:
        b = applier.new_batch()
        b.prefetch(txns)
        env.target.o.insert_one(
            {
                "_id": 50,
                "id": 50,
                "status": "new",
                "note": None,
                "items": [{"id": 499, "pos": 0, "qty": 7}, {"id": 500, "pos": 2, "qty": 9}],
            }
        )
        for ev in events:
            b.event(ev, pos)
        b.execute()
        assert b.result.folded == 3
        assert applier.state.dead_letters.count_documents({}) == 0
    doc = env.target.o.find_one({"_id": 50})
    assert doc["status"] == "paid"
    # 500 was there: an inserted row's element is not rewritten (the stream brings its changes)
    assert doc["items"] == [
        {"id": 499, "pos": 0, "qty": 7},
        {"id": 501, "pos": 1, "qty": 1},
        {"id": 500, "pos": 2, "qty": 9},
    ]
