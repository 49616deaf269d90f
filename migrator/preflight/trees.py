"""What a collection's embed tree costs, for `plan`: the tree drawn, each node's largest array,
how many documents one row change touches, the document size, the indexes CDC finds nested
rows by, and the read-only copies of the write switch.

Counts come from the source: largest arrays over the whole table (one GROUP BY per node, as
the one-level estimate always did); documents per row change over a sample of root rows
(a join down the tree per node, bounded by SAMPLE so a plan stays quick on a large table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from migrator.model.transform import CollectionPlan, EmbedPlan
from migrator.source.connection import query, quote_ident

SAMPLE = 10_000  # root rows the fan-out is measured over
BIG_ARRAY = 2_000  # elements: past this, every change of one rewrites a big array


@dataclass
class NodeStats:
    path: str  # "items.product"
    table: str
    kind: str  # array | sub-document | merged | values
    largest_array: int | None = None  # many: the most rows under one enclosing row
    docs_per_change_avg: float | None = None  # documents one row change touches
    docs_per_change_max: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def kind(e: EmbedPlan) -> str:
    if e.merge:
        return "merged"
    if e.values_path is not None:
        return "values"
    return "array" if e.many else "sub-document"


def draw(p: CollectionPlan) -> list[str]:
    """The tree, one line per node: `items[] <- order_items (order_id = id, by line_no)`."""
    lines = [f"{p.name} <- {p.table.name}"]

    def walk(embeds: list[EmbedPlan], indent: str) -> None:
        for i, e in enumerate(embeds):
            last = i == len(embeds) - 1
            on = ", ".join(
                f"{c} = {pc}" for c, pc in zip(e.child_columns, e.parent_columns, strict=True)
            )
            k = kind(e)
            name = {
                "array": f"{e.name}[]",
                "values": f"{e.name}[] values {'.'.join(e.values_path or ())}",
                "merged": "(merged)",
            }.get(k, e.name)
            order = [c for c in e.spec.order_by]
            extra = f", by {', '.join(order)}" if order else ""
            lines.append(
                f"{indent}{'└─' if last else '├─'} {name} <- {e.view.table.name} ({on}{extra})"
            )
            walk(e.embeds, indent + ("   " if last else "│  "))

    walk(p.embeds, "")
    return lines


def copies(p: CollectionPlan) -> list[str]:
    """The read-only copies after the write switch (their truth is their own table)."""
    out = []
    for e in p.nodes():
        if e.simple:
            continue
        k = kind(e)
        if k in ("sub-document", "merged", "values"):
            out.append(f"{p.name}.{'.'.join(e.path) or '(root)'} ({k} of {e.view.table.name})")
    return out


def node_stats(conn: Any, p: CollectionPlan) -> list[NodeStats]:
    out = []
    for chain in p.chains():
        e = chain[-1]
        s = NodeStats(".".join(x.name for x in chain), e.view.table.name, kind(e))
        if e.many:
            cols = ", ".join(map(quote_ident, e.child_columns))
            rows = query(
                conn,
                f"SELECT MAX(n) FROM (SELECT COUNT(*) n FROM {quote_ident(e.view.table.name)} "
                f"GROUP BY {cols}) t",
            )
            s.largest_array = int(rows[0][0] or 0) if rows else 0
        s.docs_per_change_avg, s.docs_per_change_max = _fanout(conn, p, chain)
        out.append(s)
    return out


def _fanout(conn: Any, p: CollectionPlan, chain: tuple[EmbedPlan, ...]) -> tuple[float, int]:
    """Documents holding one row of the node (the roots that reach the same enclosing row),
    on average and at most, over the first SAMPLE root rows."""
    e = chain[-1]
    pk = ", ".join(f"t0.{quote_ident(c)}" for c in p.pk)
    order = ", ".join(map(quote_ident, p.pk))
    sql = f"FROM (SELECT * FROM {quote_ident(p.table.name)} ORDER BY {order} LIMIT {SAMPLE}) t0"
    for i, x in enumerate(chain[:-1], start=1):
        on = " AND ".join(
            f"t{i}.{quote_ident(c)} = t{i - 1}.{quote_ident(pc)}"
            for c, pc in zip(x.child_columns, x.parent_columns, strict=True)
        )
        sql += f" JOIN {quote_ident(x.view.table.name)} t{i} ON {on}"
    last = f"t{len(chain) - 1}"
    link = ", ".join(f"{last}.{quote_ident(c)}" for c in e.parent_columns)
    nonnull = " AND ".join(f"{last}.{quote_ident(c)} IS NOT NULL" for c in e.parent_columns)
    rows = query(
        conn,
        f"SELECT AVG(n), MAX(n) FROM (SELECT COUNT(DISTINCT {pk}) n {sql} WHERE {nonnull} "
        f"GROUP BY {link}) x",
    )
    if not rows or rows[0][1] is None:
        return 0.0, 0
    return round(float(rows[0][0]), 2), int(rows[0][1])


def document_size(p: CollectionPlan, stats: list[NodeStats]) -> int:
    """The largest document, estimated: every array at its largest, rows at their average."""
    largest = {s.path: s.largest_array or 0 for s in stats}

    def size(embeds: list[EmbedPlan], prefix: str) -> int:
        total = 0
        for e in embeds:
            path = f"{prefix}.{e.name}" if prefix else e.name
            one = max(e.view.table.avg_row_length, 64) + size(e.embeds, path)
            total += one * largest.get(path, 0) if e.many else one
        return total

    return max(p.table.avg_row_length, 64) + size(p.embeds, "")
