"""The Transform on a synthetic schema: renames, exclusions, nesting, ids, embeds, errors."""

from datetime import datetime

import pytest
from bson.decimal128 import Decimal128

from migrator.errors import ConversionError, SchemaError
from migrator.model.schema import Column, Schema, Table
from migrator.model.settings import parse_mapping
from migrator.model.transform import compile_transform


def schema() -> Schema:
    orders = Table(
        "orders",
        [
            Column("id", "bigint", "bigint(20)"),
            Column("order_no", "varchar", "varchar(20)"),
            Column("customer_id", "int", "int(11)"),
            Column("total", "decimal", "decimal(12,2)"),
            Column("city", "varchar", "varchar(20)"),
            Column("legacy", "tinyint", "tinyint(4)"),
            Column("created_at", "datetime", "datetime"),
        ],
        primary_key=["id"],
    )
    items = Table(
        "order_items",
        [
            Column("order_id", "bigint", "bigint(20)"),
            Column("line_no", "smallint", "smallint(6)"),
            Column("qty", "int", "int(11)"),
        ],
        primary_key=["order_id", "line_no"],
    )
    customers = Table(
        "customers",
        [
            Column("id", "int", "int(11)"),
            Column("email", "varchar", "varchar(100)"),
            Column("vip", "tinyint", "tinyint(1)"),
        ],
        primary_key=["id"],
    )
    pairs = Table(
        "pairs",
        [
            Column("a", "int", "int(11)"),
            Column("b", "varchar", "varchar(5)"),
            Column("v", "int", "int(11)"),
        ],
        primary_key=["a", "b"],
    )
    nopk = Table("nopk", [Column("x", "int", "int(11)")], primary_key=[])
    return Schema("shop", {t.name: t for t in (orders, items, customers, pairs, nopk)})


HEAD = 'version: 1\nsource: {url: "mysql://u@h/shop"}\ntarget: {url: "mongodb://m"}\ncollections:\n'
ORDERS = (
    HEAD
    + """\
  - name: orders
    from: orders
    fields: {orderNo: order_no, address.city: city, placedAt: created_at}
    exclude: [legacy]
    embed:
      - {as: items, from: order_items, on: {order_id: id}, order_by: [line_no], exclude: [order_id]}
      - {as: customer, from: customers, on: {id: customer_id}, many: false}
"""
)


def compile_(text: str):
    return compile_transform(parse_mapping(text, "m.yaml"), schema())


def test_document_with_renames_nesting_and_embeds():
    plan = compile_(ORDERS).collection("orders")
    root = plan.root
    assert root.columns == ["id", "order_no", "customer_id", "total", "city", "created_at"]
    row = (b"7", "SO-7", b"3", b"10.50", "Paris", b"2024-01-02 03:04:05")
    items = plan.embeds[0].view
    assert items.columns == ["order_id", "line_no", "qty"]
    children = {
        "items": [(b"7", b"1", b"2"), (b"7", b"2", b"1"), (b"8", b"1", b"5")],
        "customer": [(b"3", "a@b.c", b"1")],
    }
    [doc] = plan.documents([row], children)
    assert doc == {
        "_id": 7,
        "orderNo": "SO-7",
        "address": {"city": "Paris"},
        "placedAt": datetime(2024, 1, 2, 3, 4, 5),
        "id": 7,
        "customer_id": 3,
        "total": Decimal128("10.50"),
        "items": [{"line_no": 1, "qty": 2}, {"line_no": 2, "qty": 1}],
        "customer": {"id": 3, "email": "a@b.c", "vip": True},
    }
    assert next(iter(doc)) == "_id"


def test_missing_children_and_null_parent():
    plan = compile_(ORDERS).collection("orders")
    [doc] = plan.documents([(b"9", "SO-9", None, b"0.00", None, b"2024-01-01 00:00:00")], {})
    assert doc["items"] == [] and doc["customer"] is None and doc["customer_id"] is None


def test_composite_primary_key_is_a_sub_document_and_nulls_can_be_omitted():
    plan = compile_(HEAD + "  - {name: pairs, from: pairs, nulls: omit}\n").collection("pairs")
    [doc] = plan.documents([(b"-1", "x", None)], {})
    assert doc == {"_id": {"a": -1, "b": "x"}, "a": -1, "b": "x"}


def test_all_columns_false_projects_only_listed_fields():
    t = HEAD + "  - {name: c, from: customers, all_columns: false, fields: {mail: email}}\n"
    plan = compile_(t).collection("c")
    assert plan.documents([(b"1", "a@b.c")], {}) == [{"_id": 1, "mail": "a@b.c"}]


def test_conversion_errors_go_to_the_handler_and_the_rest_is_kept():
    t = HEAD + "  - {name: c, from: customers, fields: {meta: {column: email, type: json}}}\n"
    plan = compile_(t).collection("c")
    bad: list = []
    docs = plan.documents(
        [(b"1", "{oops", b"0"), (b"2", '{"a": 1}', b"1")],
        {},
        on_error=lambda row, exc: bad.append((row[0], exc.message)),
    )
    assert [d["_id"] for d in docs] == [2]
    assert bad[0][0] == b"1" and "customers.email" in bad[0][1] and "not valid JSON" in bad[0][1]
    with pytest.raises(ConversionError):
        plan.documents([(b"1", "{oops", b"0")], {})


@pytest.mark.parametrize(
    ("collection", "expected"),
    [
        (
            "  - {name: x, from: nosuch}\n",
            "m.yaml:5 collections[0].from: table 'nosuch' does not exist",
        ),
        ("  - {name: x, from: nopk}\n", "table 'nopk' has no primary key"),
        (
            "  - {name: x, from: orders, exclude: [nope]}\n",
            "collections[0].exclude[0]: table 'orders' has no column 'nope'",
        ),
        (
            "  - {name: x, from: orders, fields: {a: nope}}\n",
            "collections[0].fields.a: table 'orders' has no column 'nope'",
        ),
        (
            "  - {name: x, from: orders, embed: [{as: i, from: order_items, on: {nope: id}}]}\n",
            "collections[0].embed[0].on.nope: table 'order_items' has no column 'nope'",
        ),
        (
            "  - {name: x, from: orders, embed: "
            "[{as: i, from: order_items, on: {order_id: nope}}]}\n",
            "enclosing table 'orders' has no column 'nope'",
        ),
        (
            "  - {name: x, from: orders, embed: [{as: i, from: order_items, on: {order_id: id}, "
            "exclude: [line_no]}]}\n",
            "the primary key column 'line_no' of 'order_items' must stay",
        ),
        (
            "  - {name: x, from: orders, embed: "
            "[{as: city, from: customers, on: {id: customer_id}, many: false}]}\n",
            "'city' is given twice in one document: by field 'city' and by embed 'city'",
        ),
    ],
)
def test_schema_errors_name_file_line_and_key(collection, expected):
    with pytest.raises(SchemaError) as e:
        compile_(HEAD + collection)
    assert expected in str(e.value)


def test_an_order_by_column_left_out_of_the_elements_is_refused():
    """CDC keeps an array in order with `$sort` on the elements' fields; a column the elements
    do not hold cannot order them, so the mapping names the file, the key and why."""
    text = HEAD + (
        "  - name: o\n    from: orders\n    embed:\n"
        "      - {as: items, from: order_items, on: {order_id: id}, many: true,\n"
        "         order_by: [qty], exclude: [qty]}\n"
    )
    with pytest.raises(SchemaError, match=r"m\.yaml.*order_by.*'qty' is excluded"):
        compile_(text)


def test_arrays_are_built_in_mongodb_order_of_the_converted_values():
    """`$push $sort` orders by the document's values: with `qty` mapped to a string, "10"
    comes before "9"; a NULL comes first; the key breaks ties."""
    text = HEAD + (
        "  - name: o\n    from: orders\n    embed:\n"
        "      - {as: items, from: order_items, on: {order_id: id}, many: true,\n"
        "         order_by: [qty], fields: {qty: {column: qty, type: string}}}\n"
    )
    plan = compile_(text).collection("o")
    e = plan.embeds[0]
    rows = [(1, 1, 9), (1, 2, 10), (1, 3, None), (1, 4, 9)]
    cols = e.view.columns
    named = [dict(zip(["order_id", "line_no", "qty"], r, strict=True)) for r in rows]
    picked = [tuple(n[c] for c in cols) for n in named]
    got = [(x["line_no"], x["qty"]) for x in e.elements(picked)]
    assert got == [(3, None), (2, "10"), (1, "9"), (4, "9")]
