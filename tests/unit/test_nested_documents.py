"""Documents nested to any depth: embeds in embeds, many-to-many through join tables, merged
rows, arrays of values, missing rows, and the mapping errors of the tree."""

from __future__ import annotations

from typing import Any

import pytest

from migrator.errors import ConfigError, SchemaError
from migrator.model.schema import Column, Schema, Table
from migrator.model.settings import parse_mapping
from migrator.model.transform import CollectionPlan, compile_transform

HEAD = 'version: 1\nsource: {url: "mysql://u@h/db"}\ntarget: {url: "mongodb://m"}\ncollections:\n'


def table(name: str, cols: str, pk: str) -> Table:
    columns = []
    for c in cols.split():
        kind = "varchar" if c.startswith("s_") or c in ("name", "sku", "title") else "int"
        columns.append(Column(c, kind, "varchar(40)" if kind == "varchar" else "int(11)"))
    return Table(name, columns, primary_key=pk.split())


SCHEMA = Schema(
    "db",
    {
        t.name: t
        for t in (
            table("orders", "id customer_id", "id"),
            table("order_items", "order_id line_no product_id qty", "order_id line_no"),
            table("products", "id sku name brand_id", "id"),
            table("brands", "id name", "id"),
            table("posts", "id title", "id"),
            table("post_tags", "post_id tag_id", "post_id tag_id"),
            table("tags", "id name", "id"),
            table("customers", "id name address_id", "id"),
            table("addresses", "id city_id", "id"),
            table("cities", "id name country_id", "id"),
            table("countries", "id name", "id"),
        )
    },
)

DATA: dict[str, list[dict[str, Any]]] = {
    "orders": [{"id": 1, "customer_id": 7}, {"id": 2, "customer_id": None}],
    "order_items": [
        {"order_id": 1, "line_no": 2, "product_id": 10, "qty": 1},
        {"order_id": 1, "line_no": 1, "product_id": 11, "qty": 5},
        {"order_id": 2, "line_no": 1, "product_id": 99, "qty": 2},  # a dangling product
    ],
    "products": [
        {"id": 10, "sku": "A", "name": "anvil", "brand_id": 3},
        {"id": 11, "sku": "B", "name": "bell", "brand_id": None},
    ],
    "brands": [{"id": 3, "name": "acme"}],
    "posts": [{"id": 1, "title": "hello"}, {"id": 2, "title": "empty"}],
    "post_tags": [{"post_id": 1, "tag_id": 6}, {"post_id": 1, "tag_id": 5}],
    "tags": [{"id": 5, "name": "db"}, {"id": 6, "name": "mongodb"}],
    "customers": [{"id": 7, "name": "ann", "address_id": 70}],
    "addresses": [{"id": 70, "city_id": 700}],
    "cities": [{"id": 700, "name": "Oslo", "country_id": 7000}],
    "countries": [{"id": 7000, "name": "Norway"}],
}


def compile_one(body: str) -> CollectionPlan:
    return compile_transform(parse_mapping(HEAD + body, "m.yaml"), SCHEMA).collections[0]


def documents(plan: CollectionPlan, data: dict[str, list[dict[str, Any]]] = DATA) -> list[Any]:
    """The plan's documents for every root row, its nodes read as the chunk reader reads
    them: each level's rows matched by the rows of the level above."""

    def tup(view: Any, r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(r[c] for c in view.columns)

    roots = [tup(plan.root, r) for r in data[plan.table.name]]
    children: dict[str, list[tuple[Any, ...]]] = {}

    def read(node: Any, outer: Any, rows: list[tuple[Any, ...]]) -> None:
        keys = {outer.values(r, node.parent_columns) for r in rows}
        found = [
            tup(node.view, r)
            for r in data[node.view.table.name]
            if tuple(r[c] for c in node.child_columns) in keys
        ]
        children[node.slot] = found
        for sub in node.embeds:
            read(sub, node.view, found)

    for e in plan.embeds:
        read(e, plan.root, roots)
    return plan.documents(roots, children)


ORDERS = """\
  - name: orders
    from: orders
    embed:
      - as: items
        from: order_items
        on: {order_id: id}
        many: true
        order_by: [line_no]
        exclude: [order_id]
        embed:
          - as: product
            from: products
            on: {id: product_id}
            many: false
            all_columns: false
            fields: {sku: sku, name: name}
            embed:
              - {as: brand, from: brands, on: {id: brand_id}, many: false}
"""


def test_an_item_carries_its_product_and_the_product_its_brand() -> None:
    docs = documents(compile_one(ORDERS))
    assert docs[0] == {
        "_id": 1,
        "id": 1,
        "customer_id": 7,
        "items": [
            {
                "line_no": 1,
                "product_id": 11,
                "qty": 5,
                "product": {"sku": "B", "name": "bell", "brand": None},
            },
            {
                "line_no": 2,
                "product_id": 10,
                "qty": 1,
                "product": {"sku": "A", "name": "anvil", "brand": {"id": 3, "name": "acme"}},
            },
        ],
    }
    # a dangling reference gives null, not a missing field
    assert docs[1]["items"] == [{"line_no": 1, "product_id": 99, "qty": 2, "product": None}]


def test_a_chain_of_parents_nests_sub_documents() -> None:
    plan = compile_one(
        """\
  - name: customers
    from: customers
    embed:
      - as: address
        from: addresses
        on: {id: address_id}
        many: false
        embed:
          - as: city
            from: cities
            on: {id: city_id}
            many: false
            embed: [{as: country, from: countries, on: {id: country_id}, many: false}]
"""
    )
    (doc,) = documents(plan)
    assert doc["address"]["city"]["country"] == {"id": 7000, "name": "Norway"}
    assert doc["address"]["city"]["name"] == "Oslo"


POSTS = """\
  - name: posts
    from: posts
    embed:
      - as: tags
        from: post_tags
        on: {post_id: id}
        many: true
        exclude: [post_id]
        embed:
          - {from: tags, on: {id: tag_id}, many: false, merge: true}
      - as: tag_names
        from: post_tags
        on: {post_id: id}
        many: true
        values: tag.name
        embed:
          - {as: tag, from: tags, on: {id: tag_id}, many: false}
"""


def test_many_to_many_merges_the_far_row_and_values_make_an_array_of_one_field() -> None:
    docs = documents(compile_one(POSTS))
    # join rows in the join table's key order (post_id, tag_id)
    assert docs[0]["tags"] == [
        {"tag_id": 5, "id": 5, "name": "db"},
        {"tag_id": 6, "id": 6, "name": "mongodb"},
    ]
    assert docs[0]["tag_names"] == ["db", "mongodb"]
    assert docs[1]["tags"] == [] and docs[1]["tag_names"] == []


def test_a_missing_merged_row_gives_null_fields_or_none_with_nulls_omit() -> None:
    body = """\
  - name: orders
    from: orders
    NULLS
    embed:
      - from: customers
        on: {id: customer_id}
        many: false
        merge: true
        exclude: [id, address_id]
"""
    keep = documents(compile_one(body.replace("NULLS", "nulls: keep")))
    assert keep[0] == {"_id": 1, "id": 1, "customer_id": 7, "name": "ann"}
    assert keep[1] == {"_id": 2, "id": 2, "customer_id": None, "name": None}
    omit = documents(compile_one(body.replace("NULLS", "nulls: omit")))
    assert omit[1] == {"_id": 2, "id": 2}


def test_an_on_column_merged_over_its_equal_is_not_a_collision() -> None:
    plan = compile_one(
        """\
  - name: posts
    from: posts
    embed:
      - as: tags
        from: post_tags
        on: {post_id: id}
        many: true
        embed:
          - from: tags
            on: {id: tag_id}
            many: false
            merge: true
            fields: {tag_id: id}
            exclude: [id]
"""
    )
    assert documents(plan)[0]["tags"][0] == {"post_id": 1, "tag_id": 5, "name": "db"}


@pytest.mark.parametrize(
    ("body", "line", "key", "says"),
    [
        (
            "  - name: posts\n    from: posts\n    embed:\n"
            "      - as: tags\n        from: post_tags\n        on: {post_id: id}\n"
            "        embed:\n          - {from: tags, on: {id: tag_id}, many: false, merge: true}\n"
            "          - {from: posts, on: {id: post_id}, many: false, merge: true}\n",
            13,
            "collections[0].embed[0].embed[1].from",
            "loops back",
        ),
        (
            "  - name: posts\n    from: posts\n    embed:\n"
            "      - {from: tags, on: {id: id}, many: false, merge: true, fields: {title: name}}\n",
            8,
            "collections[0].embed[0].merge",
            "'title'",
        ),
        (
            "  - name: posts\n    from: posts\n    embed:\n"
            "      - as: names\n        from: post_tags\n        on: {post_id: id}\n"
            "        values: tag.title\n"
            "        embed: [{as: tag, from: tags, on: {id: tag_id}, many: false}]\n",
            11,
            "collections[0].embed[0].values",
            "no field 'tag.title'",
        ),
    ],
)
def test_a_tree_the_documents_cannot_have_is_one_line_naming_file_line_and_key(
    body: str, line: int, key: str, says: str
) -> None:
    with pytest.raises(SchemaError) as err:
        compile_one(body)
    msg = err.value.message
    assert msg.startswith(f"m.yaml:{line} {key}:"), msg
    assert says in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("embed", "key", "says"),
    [
        ("{as: t, from: tags, on: {id: id}, many: false, merge: true}", "merge", "no `as`"),
        ("{from: tags, on: {id: id}, many: true, merge: true}", "merge", "many: false"),
        ("{as: t, from: tags, on: {id: id}, many: false, values: name}", "values", "many: true"),
    ],
)
def test_merge_and_values_in_the_wrong_place_are_refused(embed: str, key: str, says: str) -> None:
    body = f"  - name: posts\n    from: posts\n    embed:\n      - {embed}\n"
    with pytest.raises(ConfigError) as err:
        compile_one(body)
    assert f"m.yaml:8 collections[0].embed[0].{key}:" in err.value.message
    assert says in err.value.message
