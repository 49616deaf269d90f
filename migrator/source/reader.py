"""Chunked reads by primary key (keyset pagination) and per-chunk reads of embedded rows."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from migrator.errors import MigratorError
from migrator.model.keys import dense
from migrator.model.transform import CollectionPlan, EmbedPlan, Row, TableView
from migrator.model.typerules import KeyRange
from migrator.source.connection import quote_ident

Key = tuple[Any, ...]


def _after(cols: Sequence[str], strict: bool = True) -> str:
    """(a, b) > (x, y) spelled out so every MySQL/MariaDB version uses the index range."""
    ors = []
    for i, c in enumerate(cols):
        eqs = [f"{quote_ident(p)} = %s" for p in cols[:i]]
        op = ">" if (strict or i < len(cols) - 1) else ">="
        ors.append("(" + " AND ".join([*eqs, f"{quote_ident(c)} {op} %s"]) + ")")
    return "(" + " OR ".join(ors) + ")"


def _upto(cols: Sequence[str]) -> str:
    """(a, b) <= (x, y)."""
    ors = []
    for i, c in enumerate(cols):
        eqs = [f"{quote_ident(p)} = %s" for p in cols[:i]]
        op = "<" if i < len(cols) - 1 else "<="
        ors.append("(" + " AND ".join([*eqs, f"{quote_ident(c)} {op} %s"]) + ")")
    return "(" + " OR ".join(ors) + ")"


def _bound_args(key: Key) -> list[Any]:
    args: list[Any] = []
    for i in range(len(key)):
        args.extend(key[: i + 1])
    return args


def range_clause(pk: Sequence[str], lo: Key | None, hi: Key | None) -> tuple[str, list[Any]]:
    """WHERE text for lo < pk <= hi (None = unbounded)."""
    parts, args = [], []
    if lo is not None:
        parts.append(_after(pk))
        args += _bound_args(lo)
    if hi is not None:
        parts.append(_upto(pk))
        args += _bound_args(hi)
    return (" AND ".join(parts) or "1=1"), args


def chunk_bounds(his: list[tuple[Any, ...]]) -> list[tuple[Any, Any]]:
    """Chunks (lo, hi] from the upper keys `boundaries` gives; the last one is open-ended."""
    bounds: list[tuple[Any, Any]] = []
    lo: tuple[Any, ...] | None = None
    for hi in his:
        bounds.append((lo, hi))
        lo = hi
    bounds.append((lo, None))  # the last chunk is open-ended: rows inserted past the end land here
    return bounds


class ChunkReader:
    """Reads one collection's chunks: root rows by key range, then each embed in one query."""

    def __init__(self, conn: Any, plan: CollectionPlan) -> None:
        self.conn = conn
        self.plan = plan
        self.pk = plan.pk
        self._select = (
            f"SELECT {', '.join(map(quote_ident, plan.root.columns))} "
            f"FROM {quote_ident(plan.table.name)}"
        )
        self._order = " ORDER BY " + ", ".join(map(quote_ident, self.pk))
        self._floats = [
            i
            for i, c in enumerate(self.pk)
            if plan.table.column(c).data_type == "float" and plan.key_searches
        ]

    def changed_table(self) -> tuple[str, list[str], list[str]] | None:
        """A table of this tree whose columns are no longer the ones the copy was compiled
        for (a DDL ran since): (table, columns then, columns now); None when all are."""
        tables = {self.plan.table.name: self.plan.table}
        tables.update((e.view.table.name, e.view.table) for e in self.plan.nodes())
        for name, table in tables.items():
            # the columns this user may read, as introspection saw them (SELECT * would fail
            # under column grants)
            shown = self._fetch(f"SHOW COLUMNS FROM {quote_ident(name)}", ())
            now = [r[0].decode() if isinstance(r[0], bytes) else str(r[0]) for r in shown]
            if now != table.column_names:
                return name, table.column_names, now
        return None

    def refuse_changed(self, when: str, hint: str) -> None:
        """Raise when a table of this tree changed since its schema was read: rows read now
        hold (or lack) columns the documents built from them would not show."""
        changed = self.changed_table()
        if changed is None:
            return
        table, then, now = changed
        added = [c for c in now if c not in then]
        dropped = [c for c in then if c not in now]
        parts = [f"columns added: {', '.join(added)}"] if added else []
        parts += [f"columns dropped: {', '.join(dropped)}"] if dropped else []
        what = "; ".join(parts) or "columns reordered"
        raise MigratorError(
            f"the source table `{table}` changed {when} ({what}): stopping before writing "
            "anything read since",
            hint=hint,
        )

    def _fetch(self, sql: str, args: Sequence[Any]) -> list[Row]:
        cur = self.conn.cursor()
        try:
            cur.execute(sql, tuple(args) or None)
            return list(cur.fetchall())
        finally:
            cur.close()

    def boundaries(self, chunk_size: int, start: Key | None = None) -> Iterator[Key]:
        """Upper keys (inclusive) of successive chunks of `chunk_size` rows (walks the PK index)."""
        cols = ", ".join(map(quote_ident, self.pk))
        table = quote_ident(self.plan.table.name)
        lo = start
        while True:
            where, args = range_clause(self.pk, lo, None)
            rows = self._fetch(
                f"SELECT {cols} FROM {table} WHERE {where}{self._order} "
                f"LIMIT 1 OFFSET {chunk_size - 1}",
                args,
            )
            if not rows:
                return
            key = self.key_params(rows[0])
            yield key
            lo = key

    def key_params(self, pk_row: Row) -> Key:
        t = self.plan.table
        from migrator.model.typerules import param_value

        return tuple(param_value(t.column(c), v) for c, v in zip(self.pk, pk_row, strict=True))

    def read_rows(self, lo: Key | None, hi: Key | None, limit: int | None = None) -> list[Row]:
        where, args = range_clause(self.pk, lo, hi)
        if self.plan.spec.filter:
            where = f"{where} AND ({self.plan.spec.filter})"
        tail = f" LIMIT {int(limit)}" if limit else ""
        return self._fetch(f"{self._select} WHERE {where}{self._order}{tail}", args)

    def pages(self, lo: Key | None, hi: Key | None, size: int) -> Iterator[list[Row]]:
        """The rows of lo < key <= hi, `size` at a time: memory stays bounded even for the
        open-ended last chunk of a table that grew while it was copied."""
        while True:
            rows = self.read_rows(lo, hi, limit=size)
            if rows:
                yield rows
            if len(rows) < size:
                return
            lo = self.key_params(tuple(rows[-1][self.plan.root.index[c]] for c in self.pk))

    def read_embeds(
        self, rows: Sequence[Row], embeds: Sequence[EmbedPlan] | None = None
    ) -> dict[str, list[Row]]:
        """Every node's rows for these root rows, by slot: one query per node of the tree,
        each level keyed by the rows of the level above (never a query per row)."""
        out: dict[str, list[Row]] = {}
        for e in self.plan.embeds if embeds is None else embeds:
            self._read_node(e, self.plan.root, rows, out)
        return out

    def _read_node(
        self, e: EmbedPlan, enclosing: TableView, rows: Sequence[Row], out: dict[str, list[Row]]
    ) -> None:
        found = self.read_embed(e, rows, enclosing) if rows else []
        out[e.slot] = found
        for sub in e.embeds:
            self._read_node(sub, e.view, found, out)

    def read_embed(
        self, e: EmbedPlan, rows: Sequence[Row], enclosing: TableView | None = None
    ) -> list[Row]:
        """The rows of one node under these enclosing rows (root rows by default)."""
        outer: TableView = self.plan.root if enclosing is None else enclosing
        ranged = self._dense_range(e, rows, outer)
        if ranged is not None:
            return ranged
        keys = {outer.params(r, e.parent_columns) for r in rows}
        keys = {k for k in keys if all(v is not None for v in k)}
        if not keys:
            return []
        view = e.view
        select = (
            f"SELECT {', '.join(map(quote_ident, view.columns))} "
            f"FROM {quote_ident(view.table.name)}"
        )
        args: list[Any] = []
        if len(e.child_columns) == 1:
            cond = f"{quote_ident(e.child_columns[0])} IN ({', '.join(['%s'] * len(keys))})"
            args = [k[0] for k in keys]
        else:
            one = "(" + ", ".join(["%s"] * len(e.child_columns)) + ")"
            cond = (
                f"({', '.join(map(quote_ident, e.child_columns))}) IN "
                f"({', '.join([one] * len(keys))})"
            )
            for k in keys:
                args.extend(k)
        # arrays are sorted after conversion (EmbedPlan.elements), as $sort orders them
        return self._fetch(f"{select} WHERE {cond}", args)

    def _dense_range(self, e: EmbedPlan, rows: Sequence[Row], outer: TableView) -> list[Row] | None:
        """Children joined by one integer column to dense integer keys (a chunk's ids): one
        range read, filtered here, instead of an IN list of thousands of values."""
        if len(e.child_columns) != 1:
            return None
        view = e.view
        rcol, ccol = e.parent_columns[0], e.child_columns[0]
        if not (outer.table.column(rcol).is_integer and view.table.column(ccol).is_integer):
            return None
        i = outer.index[rcol]
        keys = {int(r[i]) for r in rows if r[i] is not None}
        if not keys:
            return []
        lo, hi = min(keys), max(keys)
        if not dense(lo, hi, len(keys)):
            return None
        select = (
            f"SELECT {', '.join(map(quote_ident, view.columns))} "
            f"FROM {quote_ident(view.table.name)} WHERE {quote_ident(ccol)} BETWEEN %s AND %s"
        )
        j = view.index[ccol]
        return [r for r in self._fetch(select, (lo, hi)) if int(r[j]) in keys]

    def read_by_keys(self, keys: Sequence[Key], apply_filter: bool = True) -> list[Row]:
        """Root rows whose primary key is one of `keys` (and that pass the filter)."""
        if not keys:
            return []
        if self._floats:
            keys = [self._float_ranges(k) for k in keys]
        if any(isinstance(v, KeyRange) for k in keys for v in k):
            return self._read_by_ranges(keys, apply_filter)
        if len(self.pk) == 1:
            cond = f"{quote_ident(self.pk[0])} IN ({', '.join(['%s'] * len(keys))})"
            args: list[Any] = [k[0] for k in keys]
        else:
            one = "(" + ", ".join(["%s"] * len(self.pk)) + ")"
            cond = f"({', '.join(map(quote_ident, self.pk))}) IN ({', '.join([one] * len(keys))})"
            args = [v for k in keys for v in k]
        if self.plan.spec.filter and apply_filter:
            cond = f"{cond} AND ({self.plan.spec.filter})"
        return self._fetch(f"{self._select} WHERE {cond}{self._order}", args)

    def _float_ranges(self, key: Key) -> Key:
        """A FLOAT key part given exactly (the text MySQL printed, an event's value) as the
        range its `_id` stands for: MySQL compares a FLOAT column as a double, and never
        matches the single-precision value with the value it prints."""
        out = list(key)
        for i in self._floats:
            v = out[i]
            if v is not None and not isinstance(v, KeyRange):
                # a value that is not a number is searched as given
                with contextlib.suppress(MigratorError, ValueError, TypeError):
                    out[i] = self.plan.key_searches[i](self.plan.id_converters[i](v))
        return tuple(out)

    def _read_by_ranges(self, keys: Sequence[Key], apply_filter: bool) -> list[Row]:
        """`read_by_keys` where a key column's values are ranges (KeyRange): the rows in them
        whose own key is one of `keys` (a row that does not convert is kept: it is reported
        as such)."""
        terms, args = [], []
        for k in keys:
            parts = []
            for c, v in zip(self.pk, k, strict=True):
                if isinstance(v, KeyRange):
                    parts.append(f"{quote_ident(c)} BETWEEN %s AND %s")
                    args += [v.lo, v.hi]
                else:
                    parts.append(f"{quote_ident(c)} = %s")
                    args.append(v)
            terms.append("(" + " AND ".join(parts) + ")")
        cond = "(" + " OR ".join(terms) + ")"
        if self.plan.spec.filter and apply_filter:
            cond = f"{cond} AND ({self.plan.spec.filter})"
        cols = [self.plan.table.column(c) for c in self.pk]

        def compared(key: Key) -> Key:
            # text as its collation compares it: a key given as 'ACME' names the row 'acme'
            # in a _ci collation, as the query's `=` found it
            return tuple(
                v if isinstance(v, KeyRange) else col.collate(v)
                for col, v in zip(cols, key, strict=True)
            )

        wanted = set()
        for k in keys:  # each key in the form a row's own key takes (a key given exactly too)
            try:
                wanted.add(compared(self.plan.key(self.plan.id_of_key(k))))
            except (MigratorError, ValueError, TypeError):
                wanted.add(compared(tuple(k)))
        out = []
        for row in self._fetch(f"{self._select} WHERE {cond}{self._order}", args):
            try:
                if compared(self.plan.key(self.plan.doc_id(row))) not in wanted:
                    continue  # in the range, but another key's row
            except MigratorError:
                pass
            out.append(row)
        return out

    def sample(self, limit: int = 1) -> list[Row]:
        where = f" WHERE ({self.plan.spec.filter})" if self.plan.spec.filter else ""
        return self._fetch(f"{self._select}{where}{self._order} LIMIT {int(limit)}", [])
