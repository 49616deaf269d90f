"""Arrays with `order_by`: one order, MongoDB's order of the values the documents hold, in
the backfill, in what CDC's `$push ... $sort` leaves and in verify's comparison, whatever the
column (a microsecond DATETIME, a column mapped to another type, a SET become an array)."""

from __future__ import annotations

import json
from typing import Any

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.model.bsonorder import sort_documents
from migrator.model.settings import load_mapping

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import migrator_cmd


def _ids(env: Any, coll: str, pid: int, arr: str) -> list[Any]:
    return [e["id"] for e in env.target[coll].find_one({"_id": pid})[arr]]


def test_an_array_ordered_by_a_microsecond_datetime_keeps_the_backfill_order(env):
    """`order_by: [at]` on a DATETIME(6): BSON keeps milliseconds, so two elements of the same
    millisecond are in the order of the values the documents hold (then their key), in the
    backfill as after CDC's `$push $sort` of a new element (SQL's ORDER BY of the full
    microseconds would put them the other way round)."""
    env.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(20))",
        "CREATE TABLE item (id INT PRIMARY KEY, order_id INT NOT NULL, at DATETIME(6), "
        "FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE CASCADE)",
        "INSERT INTO orders VALUES (1, NULL)",
        "INSERT INTO item VALUES (1, 1, '2024-01-01 00:00:00.000400'), "
        "(2, 1, '2024-01-01 00:00:00.000100')",
    )
    path = env.mapping(
        "  - name: orders\n    from: orders\n    embed:\n"
        "      - {as: items, from: item, on: {order_id: id}, many: true, order_by: [at]}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql("INSERT INTO item VALUES (3, 1, '2024-01-02 00:00:00')")
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0
    assert [i["id"] for i in env.target.orders.find_one({"_id": 1})["items"]] == [1, 2, 3]
    assert_same_as_fresh_backfill(env, path)


def test_an_array_ordered_by_a_column_mapped_to_another_type_sorts_as_the_documents(env):
    """`order_by: [n]` on an INT column mapped `type: string`: the elements are in MongoDB's
    order of the strings the documents hold ("10" < "100" < "9"), not SQL's order of the
    integers, in the backfill as after CDC."""
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


def test_an_array_ordered_by_a_set_column_is_the_same_after_cdc_as_after_backfill(env):
    """A SET column becomes an array of strings: elements ordered by it compare the whole
    value as `$push $sort` does (null < any array; arrays element by element), in the
    backfill, after CDC and in verify."""
    env.sql(
        "CREATE TABLE p (id INT PRIMARY KEY)",
        "CREATE TABLE c (id INT PRIMARY KEY, p_id INT NOT NULL, tags SET('a','b','z'), "
        "FOREIGN KEY (p_id) REFERENCES p(id))",
        "INSERT INTO p VALUES (1)",
        # id 1: NULL, id 2: empty set, id 3: ['a','z'], id 4: ['a']
        "INSERT INTO c VALUES (1, 1, NULL), (2, 1, ''), (3, 1, 'a,z'), (4, 1, 'a')",
    )
    path = env.mapping(
        "  - name: p\n    from: p\n    embed:\n"
        "      - {as: cs, from: c, on: {p_id: id}, many: true, order_by: [tags]}\n"
    )
    backfill(load_mapping(path), workers=1)
    backfilled = _ids(env, "p", 1, "cs")
    # one CDC change to an unrelated element: CDC pushes it with $sort over the whole array
    env.sql("INSERT INTO c VALUES (5, 1, 'b')")
    run_cdc(load_mapping(path), mode="until-caught-up")
    after_cdc = _ids(env, "p", 1, "cs")
    assert [i for i in after_cdc if i != 5] == backfilled, (backfilled, after_cdc)
    assert_same_as_fresh_backfill(env, path)
    data = json.loads(migrator_cmd("verify", "-m", str(path), "--json", check=0).stdout)
    assert data["ok"], data


def test_sort_documents_matches_the_servers_push_sort_for_array_fields(env):
    """bsonorder.sort_documents against the server's own `$push {$each: [], $sort}` on the
    same elements (what CDC leaves in the array)."""
    docs = [
        {"id": 1, "t": None},
        {"id": 2, "t": []},
        {"id": 3, "t": ["a", "z"]},
        {"id": 4, "t": ["a"]},
        {"id": 5, "t": ["b"]},
    ]
    env.target.probe.insert_one({"_id": 1, "arr": docs})
    env.target.probe.update_one(
        {"_id": 1}, {"$push": {"arr": {"$each": [], "$sort": {"t": 1, "id": 1}}}}
    )
    server = [d["id"] for d in env.target.probe.find_one({"_id": 1})["arr"]]
    mine = [dict(d) for d in docs]
    sort_documents(mine, [("t",), ("id",)])
    assert [d["id"] for d in mine] == server
