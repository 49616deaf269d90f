"""Reads from the source that the applier needs: N:1 parents, children after a key change,
and whether a row passes a collection's SQL `filter` (which only the server can evaluate)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import MySQLdb

from ..mapping import CollectionPlan, EmbedPlan, Row
from ..source.connection import connect, quote_ident
from ..source.reader import ChunkReader
from ..urls import MySQLURL

T = TypeVar("T")


class SourceLookup:
    def __init__(self, url: MySQLURL) -> None:
        self.url = url
        self.conn: Any = None

    def run(self, fn: Callable[[Any], T]) -> T:
        """fn(connection), reconnecting when the server dropped us (a restart, a timeout)."""
        for attempt in range(3):
            if self.conn is None:
                self.conn = connect(self.url, raw=True)
            try:
                return fn(self.conn)
            except MySQLdb.OperationalError as exc:
                self.conn = None
                if exc.args[0] not in (2006, 2013) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def embedded(self, plan: CollectionPlan, e: EmbedPlan, root_row: Row) -> Any:
        """The embed's current value for a root row: a list (1:N) or a sub-document or None."""
        rows = self.run(lambda c: ChunkReader(c, plan).read_embed(e, [root_row]))
        if e.many:
            return [e.view.build(r) for r in rows]
        return e.view.build(rows[0]) if rows else None

    def passes_filter(self, plan: CollectionPlan, root_row: Row) -> bool:
        key = plan.root.params(root_row, plan.pk)
        conds = " AND ".join(f"{quote_ident(c)} = %s" for c in plan.pk)
        sql = f"SELECT 1 FROM {quote_ident(plan.table.name)} WHERE {conds} AND ({plan.spec.filter})"

        def q(c: Any) -> bool:
            cur = c.cursor()
            cur.execute(sql, key)
            return cur.fetchone() is not None

        return self.run(q)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
