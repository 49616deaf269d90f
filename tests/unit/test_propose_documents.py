"""`init --documents` proposes trees that hold every row: a child is nested under a parent
only when every row of it has one (a child with a NULLable reference to a large parent stays a
collection, the choice a comment); an identifying child always nests."""

from __future__ import annotations

from migrator.model.schema import Column, ForeignKey, Schema, Table
from migrator.preflight.propose import analyse, yaml_lines


def table(name: str, cols: str, pk: str, rows: int, nullable: str = "") -> Table:
    t = Table(
        name,
        [Column(c, "int", "int", nullable=c in nullable.split()) for c in cols.split()],
        pk.split(),
    )
    t.rows_estimate = rows
    return t


def fk(table: str, col: str, ref: str, ref_col: str = "id") -> ForeignKey:
    return ForeignKey(f"fk_{table}_{col}", table, (col,), ref, (ref_col,), "RESTRICT", "RESTRICT")


def test_a_child_that_may_have_no_parent_stays_a_collection():
    posts = table("posts", "id title", "id", 50_000)
    comments = table("comments", "id post_id body", "id", 10, nullable="post_id")
    comments.foreign_keys.append(fk("comments", "post_id", "posts"))
    notes = table("notes", "id post_id", "id", 10)  # NOT NULL: every note has its post
    notes.foreign_keys.append(fk("notes", "post_id", "posts"))
    schema = Schema("db", {t.name: t for t in (posts, comments, notes)})
    prop = analyse(schema, ["posts", "comments", "notes"])
    assert "comments" in prop.roots and "comments" not in prop.nested
    assert prop.nested["notes"].ref_table == "posts"
    text = "\n".join(yaml_lines(schema, prop))
    assert "post_id can be NULL" in text


def test_an_identifying_child_nests_under_its_parent_whatever_its_size():
    orders = table("orders", "id", "id", 5)
    items = table("items", "order_id line", "order_id line", 20)
    items.foreign_keys.append(fk("items", "order_id", "orders"))
    schema = Schema("db", {t.name: t for t in (orders, items)})
    prop = analyse(schema, ["orders", "items"])
    assert prop.roots == ["orders"] and prop.nested["items"].ref_table == "orders"
