"""Rebuild whole documents from the source by primary key: the one repair every path shares.

CDC rebuilds the aggregates a foreign-key cascade changed (the binlog never carries those rows)
and aggregates that one batch changes element by element in bulk; verify --repair rebuilds what
differs. A document is read from the source *now* and written whole: a later binlog event
replayed over it applies that row's own later state, so the stream still converges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pymongo import DeleteOne, ReplaceOne

from migrator.errors import ConversionError, MigratorError
from migrator.model.keys import id_key
from migrator.model.transform import CollectionPlan, EmbedPlan
from migrator.model.typerules import param_value, source_param
from migrator.source.connection import quote_ident
from migrator.source.reader import ChunkReader

Key = tuple[Any, ...]
OnError = Callable[[Any, str], None]  # (document _id or key, reason)


def key_params(plan: CollectionPlan, doc_id: Any) -> Key:
    """A document `_id` back to the source primary key, as query parameters."""
    return plan.key(doc_id)


def source_value(v: Any) -> Any:
    """A BSON key value as the source would take it in a query (and as converters accept)."""
    return source_param(v)


def id_from_params(plan: CollectionPlan, key: Key) -> Any:
    """The `_id` a row with this primary key gets."""
    return plan.id_of_key(key)


def rebuild_docs(
    conn: Any, plan: CollectionPlan, keys: Iterable[Key], on_error: OnError | None = None
) -> list[tuple[Any, dict[str, Any] | None]]:
    """(_id, current document) for each key; None for a key with no row (or a row outside the
    collection's filter). Bounded queries of 500 keys."""
    out: list[tuple[Any, dict[str, Any] | None]] = []
    todo = list(keys)
    reader = ChunkReader(conn, plan)
    for i in range(0, len(todo), 500):
        part = todo[i : i + 500]
        rows = reader.read_by_keys(part)
        children = reader.read_embeds(rows) if rows else {}
        failed: set[Any] = set()

        def bad(row: Sequence[Any], exc: MigratorError, failed: set[Any] = failed) -> None:
            doc_id = plan.doc_id(row)
            failed.add(id_key(doc_id))
            if on_error is not None:
                on_error(doc_id, exc.message)

        docs = plan.documents(rows, children, on_error=bad)
        found = {id_key(d["_id"]) for d in docs} | failed
        out += [(d["_id"], d) for d in docs]
        for k in part:
            try:
                doc_id = id_from_params(plan, k)
            except ConversionError as exc:
                if on_error is not None:
                    on_error(list(k), exc.message)
                continue
            if id_key(doc_id) not in found:
                out.append((doc_id, None))
    if todo:
        # read after the rows: a document read with the columns of an older schema would
        # lack a column MySQL added meanwhile, and CDC would give it the column's default
        # when it meets the statement (an element's insert after it is only pushed)
        reader.refuse_changed(
            "since this process read its schema",
            "run the command again: it reads the new schema (CDC resumes from its checkpoint)",
        )
    return out


def rebuild_ops(
    conn: Any, plan: CollectionPlan, keys: Iterable[Key], on_error: OnError | None = None
) -> list[Any]:
    """Replace-upserts of the current documents for `keys`, deletes for keys with no row."""
    return [
        ReplaceOne({"_id": doc_id}, doc, upsert=True)
        if doc is not None
        else DeleteOne({"_id": doc_id})
        for doc_id, doc in rebuild_docs(conn, plan, keys, on_error)
    ]


def root_keys_sql(
    p: CollectionPlan, chain: Sequence[EmbedPlan], columns: Sequence[str], n: int
) -> str:
    """SELECT of the root keys whose tree holds an enclosing row (the node at the end of
    `chain`) with `columns` equal to one of `n` value tuples: the tree's tables joined from
    the root down."""
    names = [f"t{i}" for i in range(len(chain) + 1)]
    sql = f"SELECT DISTINCT {', '.join(f't0.{quote_ident(c)}' for c in p.pk)} "
    sql += f"FROM {quote_ident(p.table.name)} t0"
    for i, e in enumerate(chain, start=1):
        on = " AND ".join(
            f"t{i}.{quote_ident(cc)} = t{i - 1}.{quote_ident(pc)}"
            for cc, pc in zip(e.child_columns, e.parent_columns, strict=True)
        )
        sql += f" JOIN {quote_ident(e.view.table.name)} {names[i]} ON {on}"
    last = names[-1]
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    cols = ", ".join(f"{last}.{quote_ident(c)}" for c in columns)
    return f"{sql} WHERE ({cols}) IN ({', '.join([one] * n)})"


def root_keys(
    conn: Any,
    *,
    plan: CollectionPlan,
    chain: Sequence[EmbedPlan],
    rows: Iterable[dict[str, Any]],
) -> list[tuple[Any, ...]]:
    """Primary keys of the root rows whose tree holds an enclosing row (end of `chain`) with
    one of these column values, read from the source now."""
    rows = list(rows)
    if not rows:
        return []
    columns = sorted(rows[0])
    table = chain[-1].view.table if chain else plan.table
    out: list[tuple[Any, ...]] = []
    for i in range(0, len(rows), 500):
        part = rows[i : i + 500]
        args = [param_value(table.column(c), r[c]) for r in part for c in columns]
        cur = conn.cursor()
        try:
            cur.execute(root_keys_sql(plan, chain, columns, len(part)), args)
            found = cur.fetchall()
        finally:
            cur.close()
        out += [
            tuple(param_value(plan.table.column(c), v) for c, v in zip(plan.pk, r, strict=True))
            for r in found
        ]
    return out
