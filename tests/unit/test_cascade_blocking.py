"""`plan` blocks a foreign-key cascade the binlog does not carry only when it changes something
a document holds and CDC cannot find those documents: a cascade into columns no document keeps
blocks nothing, one into a nested copy CDC cannot locate still blocks."""

from __future__ import annotations

from migrator.cdc.cascade import Cascades
from migrator.model.schema import Column, ForeignKey, Schema, Table
from migrator.model.settings import parse_mapping
from migrator.model.transform import compile_transform

HEAD = 'version: 1\nsource: {url: "mysql://u@h/db"}\ntarget: {url: "mongodb://m"}\ncollections:\n'


def cols(names: str) -> list[Column]:
    return [
        Column(n, "varchar", "varchar(20)") if n in ("name", "title") else Column(n, "int", "int")
        for n in names.split()
    ]


def fk(table: str, col: str, ref: str, on_update: str = "CASCADE", on_delete: str = "RESTRICT"):
    return ForeignKey(f"fk_{table}_{col}", table, (col,), ref, ("id",), on_delete, on_update)


def problems(collections: str, tables: list[Table]) -> list[str]:
    schema = Schema("db", {t.name: t for t in tables})
    return Cascades(compile_transform(parse_mapping(HEAD + collections), schema)).problems()


def test_a_cascade_into_a_column_no_document_keeps_blocks_nothing():
    customer = Table("customer", cols("id name"), ["id"])
    payment = Table("payment", cols("id customer_id amount"), ["id"])
    payment.foreign_keys.append(fk("payment", "customer_id", "customer"))
    kept = (
        "  - {name: payments, from: payment, all_columns: false,"
        " fields: {id: id, amount: amount}}\n"
    )
    assert problems(kept, [customer, payment]) == []


def test_a_cascade_into_a_value_array_that_does_not_hold_its_column_blocks_nothing():
    posts = Table("posts", cols("id title"), ["id"])
    tags = Table("tags", cols("id name group_id"), ["id"])
    groups = Table("groups", cols("id name"), ["id"])
    links = Table("post_tags", cols("post_id tag_id"), ["post_id", "tag_id"])
    tags.foreign_keys.append(fk("tags", "group_id", "groups", on_update="SET NULL"))
    mapping = (
        "  - name: posts\n    from: posts\n    embed:\n"
        "      - as: names\n        from: post_tags\n        on: {post_id: id}\n"
        "        values: tag.name\n"
        "        embed: [{as: tag, from: tags, on: {id: tag_id}, many: false}]\n"
    )
    assert problems(mapping, [posts, tags, groups, links]) == []


def test_a_cascade_into_a_nested_copy_cdc_cannot_locate_still_blocks():
    orders = Table("orders", cols("id"), ["id"])
    items = Table("items", cols("order_id line product_id"), ["order_id", "line"])
    products = Table("products", cols("id name"), ["id"])
    items.foreign_keys.append(fk("items", "product_id", "products"))
    mapping = (
        "  - name: orders\n    from: orders\n    embed:\n"
        "      - as: items\n        from: items\n        on: {order_id: id}\n"
        "        exclude: [product_id]\n"
        "        embed:\n"
        "          - {as: product, from: products, on: {id: product_id}, many: false,"
        " all_columns: false, fields: {name: name}}\n"
    )
    found = problems(mapping, [orders, items, products])
    assert len(found) == 1 and "items.product_id" in found[0], found
