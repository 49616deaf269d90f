"""CDC batches that create documents and change them (newdocs.py) end as a fresh backfill of the
same MySQL state, with no dead letter:
- under a unique index of the user's on the target (a code, an item id): a new document holds a
  value an older document gives up only later in the batch, so the statements keep their order;
- on composite keys, `nulls: omit`, dotted fields, an N:1 sub-document, a 1:1 table as an array,
  Decimal/datetime order, key changes with ON UPDATE CASCADE, deletes and re-inserts;
- after a crash mid-batch and with a replay of everything over the result."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.cdc.writer import OpWriter
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect

from .cdc_helpers import assert_same_as_fresh_backfill

ITEMS = """\
  - name: o
    from: o
    embed:
      - {as: items, from: it, on: {o_id: id}, many: true, order_by: [pos], exclude: [o_id]}
"""


def _cdc(path: Any, batch: int = 100_000) -> Any:
    return run_cdc(load_mapping(path), mode="until-caught-up", batch_events=batch, batch_seconds=30)


def test_a_unique_code_handed_from_an_old_order_to_a_new_one_in_one_batch(env):
    """The target has a unique index on an order's code (as the source has). In one batch an
    order is inserted, an existing order gives up its code, and the new order takes it. One by
    one, the statements never hold the code twice; the new order written whole at its insert's
    place holds the code while the old order still has it."""
    env.sql(
        "CREATE TABLE o (id INT PRIMARY KEY, code VARCHAR(10) NOT NULL UNIQUE,"
        " status VARCHAR(10) NOT NULL)",
        "CREATE TABLE it (id INT PRIMARY KEY, o_id INT NULL, pos INT NOT NULL, KEY (o_id))",
        "INSERT INTO o VALUES (1, 'x', 'new')",
    )
    path = env.mapping(ITEMS)
    backfill(load_mapping(path), workers=1)
    env.target.o.create_index("code", unique=True)
    env.sql(
        "INSERT INTO o VALUES (2, 'tmp', 'new')",
        "UPDATE o SET code = 'z' WHERE id = 1",
        "UPDATE o SET code = 'x' WHERE id = 2",
    )
    s = _cdc(path)
    assert_same_as_fresh_backfill(env, path)
    assert s.dead_letters == 0


def test_an_item_moved_into_a_new_order_under_a_unique_item_index(env):
    """The target has a unique index on the items' ids (an item is in one order at most). An
    item moves from an existing order to one the batch creates: written whole at its insert's
    place, the new order holds the item while the old one still does."""
    env.sql(
        "CREATE TABLE o (id INT PRIMARY KEY, status VARCHAR(10) NOT NULL)",
        "CREATE TABLE it (id INT PRIMARY KEY, o_id INT NULL, pos INT NOT NULL, KEY (o_id))",
        "INSERT INTO o VALUES (1, 'new')",
        "INSERT INTO it VALUES (10, 1, 0)",
    )
    path = env.mapping(ITEMS)
    backfill(load_mapping(path), workers=1)
    env.target.o.create_index("items.id", unique=True, sparse=True)
    env.sql(
        "INSERT INTO o VALUES (2, 'new')",
        "UPDATE it SET o_id = 2 WHERE id = 10",
    )
    s = _cdc(path)
    assert_same_as_fresh_backfill(env, path)
    assert s.dead_letters == 0


# -- seeded random workloads on a richer mapping -----------------------------------------------
RICH_SCHEMA = [
    "CREATE TABLE c (id INT PRIMARY KEY, name VARCHAR(10) NOT NULL, tier VARCHAR(10) NULL)",
    "CREATE TABLE o (r VARCHAR(4) NOT NULL, id INT NOT NULL, cust INT NULL,"
    " status VARCHAR(10) NOT NULL, note VARCHAR(10) NULL, PRIMARY KEY (r, id))",
    "CREATE TABLE it (id INT PRIMARY KEY, o_r VARCHAR(4) NULL, o_id INT NULL,"
    " price DECIMAL(8,2) NOT NULL, due DATETIME(3) NOT NULL, qty INT NOT NULL,"
    " FOREIGN KEY (o_r, o_id) REFERENCES o (r, id) ON DELETE CASCADE ON UPDATE CASCADE)",
    "CREATE TABLE sh (o_r VARCHAR(4) NOT NULL, o_id INT NOT NULL, carrier VARCHAR(10) NULL,"
    " PRIMARY KEY (o_r, o_id),"
    " FOREIGN KEY (o_r, o_id) REFERENCES o (r, id) ON DELETE CASCADE ON UPDATE CASCADE)",
]
RICH = """\
  - name: o
    from: o
    nulls: omit
    fields: {meta.status: status, meta.note: note}
    embed:
      - {as: customer, from: c, on: {id: cust}, many: false}
      - {as: items, from: it, on: {o_r: r, o_id: id}, many: true, order_by: [price, due],
         exclude: [o_r, o_id]}
      - {as: ship, from: sh, on: {o_r: r, o_id: id}, many: true}
"""


class RichWorkload:
    """Seeded changes of customers, orders (composite keys, re-inserted keys, key changes),
    items (Decimal and datetime order, moves between orders) and a 1:1 table as an array."""

    def __init__(self, env: Any, seed: int) -> None:
        self.env, self.rnd = env, random.Random(seed)
        self.cust = {1, 2, 3}
        self.orders: set[tuple[str, int]] = {("a", 1), ("b", 1), ("a", 2)}
        self.gone: list[tuple[str, int]] = []
        self.items: set[int] = set(range(1, 7))
        self.ships: set[tuple[str, int]] = {("a", 1)}
        self.n = 100

    def setup(self) -> list[str]:
        return [
            "INSERT INTO c VALUES (1, 'ann', NULL), (2, 'bob', 'gold'), (3, 'cy', NULL)",
            "INSERT INTO o VALUES ('a', 1, 1, 'new', NULL), ('b', 1, 2, 'new', 'x'),"
            " ('a', 2, NULL, 'new', NULL)",
            *[
                f"INSERT INTO it VALUES ({i}, 'a', {1 + i % 2}, {i % 3}.50,"
                f" '2024-01-0{1 + i % 2} 00:00:00.{i:03d}', 1)"
                for i in range(1, 7)
            ],
            "INSERT INTO sh VALUES ('a', 1, 'ups')",
        ]

    def order(self, fresh_ok: bool = True) -> tuple[str, int]:
        if self.orders and (not fresh_ok or self.rnd.random() < 0.8):
            return self.rnd.choice(sorted(self.orders))
        return (self.rnd.choice("ab"), self.rnd.randint(1, 40))

    def statement(self) -> str | None:
        rnd = self.rnd
        r = rnd.random()
        self.n += 1
        n = self.n
        if r < 0.12:
            key = self.gone.pop() if self.gone and rnd.random() < 0.5 else (rnd.choice("ab"), n)
            if key in self.orders:
                return None
            self.orders.add(key)
            cust = rnd.choice([*sorted(self.cust), "NULL"])
            return f"INSERT INTO o VALUES ('{key[0]}', {key[1]}, {cust}, 'new', NULL)"
        if r < 0.2 and self.orders:
            r_, i_ = self.order(False)
            what = rnd.choice(["status", "note", "cust"])
            if what == "status":
                v = f"'s{rnd.randint(0, 9)}'"
            elif what == "note":
                v = rnd.choice(["NULL", f"'n{rnd.randint(0, 9)}'"])
            else:
                v = str(rnd.choice([*sorted(self.cust), 99])) if rnd.random() < 0.8 else "NULL"
            return f"UPDATE o SET {what} = {v} WHERE r = '{r_}' AND id = {i_}"
        if r < 0.24 and len(self.orders) > 2:
            key = rnd.choice(sorted(self.orders))
            self.orders.discard(key)
            self.gone.append(key)
            return f"DELETE FROM o WHERE r = '{key[0]}' AND id = {key[1]}"
        if r < 0.26 and self.orders:
            key = rnd.choice(sorted(self.orders))
            new = (key[0], n + 1000)
            self.orders.discard(key)
            self.orders.add(new)
            return f"UPDATE o SET id = {new[1]} WHERE r = '{key[0]}' AND id = {key[1]}"
        if r < 0.32:
            cid = rnd.choice([*sorted(self.cust), n])
            if cid in self.cust:
                col = rnd.choice(["name", "tier"])
                v = f"'{col[0]}{rnd.randint(0, 9)}'" if rnd.random() < 0.7 else "NULL"
                if col == "name" and v == "NULL":
                    v = "'z'"
                return f"UPDATE c SET {col} = {v} WHERE id = {cid}"
            self.cust.add(cid)
            return f"INSERT INTO c VALUES ({cid}, 'c{cid}', NULL)"
        if r < 0.36:
            key = self.order()
            if key in self.ships:
                if rnd.random() < 0.5:
                    self.ships.discard(key)
                    return f"DELETE FROM sh WHERE o_r = '{key[0]}' AND o_id = {key[1]}"
                v = rnd.choice(["NULL", "'dhl'", "'fedex'"])
                return f"UPDATE sh SET carrier = {v} WHERE o_r = '{key[0]}' AND o_id = {key[1]}"
            self.ships.add(key)
            return f"INSERT INTO sh VALUES ('{key[0]}', {key[1]}, 'ups')"
        if r < 0.62 or not self.items:
            key = self.order()
            self.items.add(n)
            price = f"{rnd.randint(0, 3)}.{rnd.choice(['00', '50'])}"
            due = f"2024-01-0{rnd.randint(1, 3)} 00:00:00.{rnd.randint(0, 2)}00"
            return f"INSERT INTO it VALUES ({n}, '{key[0]}', {key[1]}, {price}, '{due}', 1)"
        item = rnd.choice(sorted(self.items))
        if r < 0.72:
            return f"UPDATE it SET qty = qty + 1 WHERE id = {item}"
        if r < 0.8:
            return f"UPDATE it SET price = {rnd.randint(0, 3)}.50 WHERE id = {item}"
        if r < 0.84:
            return (
                f"UPDATE it SET due = '2024-01-0{rnd.randint(1, 3)} 00:00:00.{rnd.randint(0, 2)}00'"
                f" WHERE id = {item}"
            )
        if r < 0.92:
            key = self.order()
            return f"UPDATE it SET o_r = '{key[0]}', o_id = {key[1]} WHERE id = {item}"
        if r < 0.95:
            new = n + 5000
            self.items.discard(item)
            self.items.add(new)
            return f"UPDATE it SET id = {new} WHERE id = {item}"
        self.items.discard(item)
        return f"DELETE FROM it WHERE id = {item}"

    def run(self, statements: int) -> None:
        conn = connect(parse_mysql_url(self.env.url))
        cur = conn.cursor()
        for _ in range(statements):
            s = self.statement()
            if s is None:
                continue
            # a reference to no order: MySQL refuses it (the foreign key), nothing changes
            with contextlib.suppress(Exception):
                cur.execute(s)
            if self.rnd.random() < 0.3:
                conn.commit()
        conn.commit()
        conn.close()


def _rich(env: Any, seed: int) -> tuple[Any, RichWorkload]:
    env.sql(*RICH_SCHEMA)
    w = RichWorkload(env, seed)
    env.sql(*w.setup())
    path = env.mapping(RICH)
    backfill(load_mapping(path), workers=1)
    return path, w


@pytest.mark.parametrize(("seed", "batch"), [(0, 100_000), (1, 100_000), (100, 7), (101, 7)])
def test_rich_batches_of_new_documents_end_as_a_fresh_backfill(env, seed, batch):
    path, w = _rich(env, seed)
    w.run(300)
    s = _cdc(path, batch)
    dl = [(d["reason"], d.get("payload")) for d in env.state.dead_letters.find()]
    assert_same_as_fresh_backfill(env, path)
    assert s.dead_letters == 0, dl


class Crash(Exception):
    """The process dies here (nothing after it runs, the checkpoint stays where it was)."""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rich_crash_mid_batch_then_replay_ends_as_a_fresh_backfill(env, seed):
    """A batch's writes stop after a part of them (the process dies); the next run replays
    from the checkpoint over what was written, and ends as a fresh backfill."""
    path, w = _rich(env, seed)
    w.run(300)
    rnd = random.Random(seed)
    batch = rnd.choice([5, 20, 100_000])
    at_call, keep = rnd.randint(1, 3), rnd.randint(0, 40)
    original = OpWriter._write
    calls = {"n": 0, "crashed": False}

    def _write(self: Any, coll: str, tagged: list[Any]) -> None:
        calls["n"] += 1
        if not calls["crashed"] and calls["n"] == at_call:
            calls["crashed"] = True
            original(self, coll, tagged[:keep])
            raise Crash
        original(self, coll, tagged)

    OpWriter._write = _write  # type: ignore[method-assign]
    try:
        with pytest.raises(Crash):
            _cdc(path, batch)
    finally:
        OpWriter._write = original  # type: ignore[method-assign]
    s = _cdc(path, batch)
    dl = [(d["reason"], d.get("payload")) for d in env.state.dead_letters.find()]
    assert_same_as_fresh_backfill(env, path)
    assert s.dead_letters == 0, dl


@pytest.mark.parametrize("seed", [0, 1])
def test_rich_replay_of_everything_over_the_result_ends_as_a_fresh_backfill(env, seed):
    """CDC runs, then runs again from the backfill's position over its own result."""
    path, w = _rich(env, seed)
    w.run(300)
    _cdc(path, 100_000)
    env.state.meta.delete_one({"_id": "cdc_checkpoint"})
    s = _cdc(path, [5, 100_000][seed % 2])
    assert s.events > 0
    dl = [(d["reason"], d.get("payload")) for d in env.state.dead_letters.find()]
    assert_same_as_fresh_backfill(env, path)
    assert s.dead_letters == 0, dl


class UniqueWorkload:
    """Seeded changes of orders whose `code` is unique (in MySQL and in the target), items
    whose ids are unique across orders (an index on `items.id`), with codes handed from order
    to order and items moved between them, new orders often among them."""

    def __init__(self, env: Any, seed: int) -> None:
        self.env, self.rnd = env, random.Random(seed)
        self.codes = {i: f"c{i}" for i in range(1, 6)}  # order id -> code
        self.items = {i: 1 + i % 5 for i in range(1, 11)}
        self.next = 100

    def statements(self) -> list[str]:
        rnd = self.rnd
        self.next += 1
        n = self.next
        r = rnd.random()
        if r < 0.25:
            self.codes[n] = f"t{n}"
            return [f"INSERT INTO o VALUES ({n}, 't{n}', 'new')"]
        if r < 0.45 and len(self.codes) > 1:
            # an order gives its code up and another (often a new one) takes it
            a, b = rnd.sample(sorted(self.codes), 2)
            if rnd.random() < 0.6:
                b = max(self.codes)
            code = self.codes[a]
            self.codes[a], self.codes[b] = f"f{n}", code
            return [
                f"UPDATE o SET code = 'f{n}' WHERE id = {a}",
                f"UPDATE o SET code = '{code}' WHERE id = {b}",
            ]
        if r < 0.55:
            o = rnd.choice(sorted(self.codes))
            return [f"UPDATE o SET status = 's{rnd.randint(0, 9)}' WHERE id = {o}"]
        if r < 0.7:
            o = rnd.choice([max(self.codes), *sorted(self.codes)])
            self.items[n] = o
            return [f"INSERT INTO it VALUES ({n}, {o}, {rnd.randint(0, 4)})"]
        if r < 0.9 and self.items:
            i = rnd.choice(sorted(self.items))
            o = max(self.codes) if rnd.random() < 0.6 else rnd.choice(sorted(self.codes))
            self.items[i] = o
            return [f"UPDATE it SET o_id = {o} WHERE id = {i}"]
        if self.items:
            i = rnd.choice(sorted(self.items))
            return [f"UPDATE it SET pos = {rnd.randint(0, 4)} WHERE id = {i}"]
        return []

    def run(self, rounds: int) -> None:
        conn = connect(parse_mysql_url(self.env.url))
        cur = conn.cursor()
        for _ in range(rounds):
            for s in self.statements():
                cur.execute(s)
            if self.rnd.random() < 0.3:
                conn.commit()
        conn.commit()
        conn.close()


@pytest.mark.parametrize(("seed", "batch"), [(0, 100_000), (1, 100_000), (2, 20), (3, 20)])
def test_unique_values_handed_between_orders_end_as_a_fresh_backfill(env, seed, batch):
    """Seeded: the target keeps the source's unique values unique (a unique index on `code`,
    one on `items.id`); whatever the batch boundaries, CDC ends as a fresh backfill, and no
    change is a dead letter (applied one by one, no statement ever holds a value twice)."""
    env.sql(
        "CREATE TABLE o (id INT PRIMARY KEY, code VARCHAR(10) NOT NULL UNIQUE,"
        " status VARCHAR(10) NOT NULL)",
        "CREATE TABLE it (id INT PRIMARY KEY, o_id INT NULL, pos INT NOT NULL, KEY (o_id))",
        *[f"INSERT INTO o VALUES ({i}, 'c{i}', 'new')" for i in range(1, 6)],
        *[f"INSERT INTO it VALUES ({i}, {1 + i % 5}, {i % 3})" for i in range(1, 11)],
    )
    path = env.mapping(ITEMS)
    backfill(load_mapping(path), workers=1)
    env.target.o.create_index("code", unique=True)
    env.target.o.create_index("items.id", unique=True, sparse=True)
    UniqueWorkload(env, seed).run(300)
    s = _cdc(path, batch)
    dl = [(d["reason"], d.get("payload")) for d in env.state.dead_letters.find()]
    assert_same_as_fresh_backfill(env, path)
    assert s.dead_letters == 0, dl
