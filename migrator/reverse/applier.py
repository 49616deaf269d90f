"""Apply MongoDB document changes to MySQL rows (reverse sync).

Each change is written as the document's *current* state (the change stream's full document),
so applying a change twice, or an older change after a newer one's document, converges:
MySQL's rows for that document end equal to what the document says. Per document:

- the root row is upserted (mapped columns only; columns the mapping leaves out keep MySQL's
  values), or deleted when the document is;
- every array's child rows are made exactly the elements: rows of this parent that are not in
  the array are deleted, the others upserted;
- a sub-document (N:1) only gives the root its reference; the parent row is the parent's own
  collection's business.

Foreign-key checks are off in this session: documents arrive one collection at a time, in the
order MongoDB committed them, not in the order the foreign keys need (MySQL replicas apply row
events the same way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from MySQLdb import DataError, IntegrityError, MySQLError, OperationalError, ProgrammingError

from migrator.errors import ConversionError
from migrator.model.keys import id_key
from migrator.model.transform import CollectionPlan, Transform
from migrator.model.typerules import default_converter
from migrator.reverse.inverse import DocumentInverse, RowImage
from migrator.source.connection import quote_ident as q


@dataclass
class ReverseChange:
    collection: str
    op: str  # "upsert" | "delete"
    doc_id: Any
    document: dict[str, Any] | None = None


# Server errors that refuse a value, not the connection: strict mode's incorrect value (1366),
# out of range (1264), truncated (1265), bad date (1292), NULL into NOT NULL (1048), too long
# (1406), no default (1364), invalid JSON (3140), a CHECK constraint (4025 MariaDB, 3819 MySQL)
REFUSED_VALUE = frozenset({1048, 1264, 1265, 1292, 1364, 1366, 1406, 3140, 3819, 4025})


@dataclass
class ReverseResult:
    applied: int = 0
    rows_written: int = 0
    rows_deleted: int = 0
    problems: list[tuple[ReverseChange, str]] = field(default_factory=list)


class ReverseApplier:
    def __init__(self, transform: Transform, conn: Any) -> None:
        """`conn`: a raw connection (`connect(url, raw=True)`), autocommit off."""
        self.transform = transform
        self.conn = conn
        tz = transform.mapping.source.timezone
        self.inverses = {p.name: DocumentInverse(p, tz) for p in transform.collections}
        cur = conn.cursor()
        cur.execute("SET SESSION foreign_key_checks = 0")

    def apply(self, changes: list[ReverseChange]) -> ReverseResult:
        """One MySQL transaction for the whole list; a change that cannot be written back is
        reported (the caller dead-letters it) and the rest goes on."""
        res = ReverseResult()
        cur = self.conn.cursor()
        try:
            for ch in changes:
                try:
                    plan = self.transform.collection(ch.collection)
                except Exception:
                    continue  # not a mapped collection
                try:
                    cur.execute("SAVEPOINT one")
                    if ch.op == "delete" or ch.document is None:
                        self._delete(cur, plan, ch.doc_id, res)
                    else:
                        self._upsert(cur, plan, ch.document, res)
                    cur.execute("RELEASE SAVEPOINT one")
                    res.applied += 1
                except ConversionError as exc:
                    cur.execute("ROLLBACK TO SAVEPOINT one")
                    res.problems.append((ch, exc.message))
                except (IntegrityError, DataError, ProgrammingError) as exc:
                    # the rows this document stands for are refused by MySQL (a NOT NULL
                    # column it leaves empty, a value out of range): a dead letter, not a retry
                    cur.execute("ROLLBACK TO SAVEPOINT one")
                    res.problems.append((ch, f"MySQL refused it: {exc.args[-1]}"))
                except OperationalError as exc:
                    if not exc.args or exc.args[0] not in REFUSED_VALUE:
                        raise  # the connection or the server: retried from the checkpoint
                    cur.execute("ROLLBACK TO SAVEPOINT one")
                    res.problems.append((ch, f"MySQL refused it: {exc.args[-1]}"))
                except MySQLError:
                    raise
                except Exception as exc:
                    # a document any writer may have shaped (an ObjectId or text `_id` for an
                    # integer key, a number where an array was): it names no rows; one such
                    # document must not stop every change after it
                    cur.execute("ROLLBACK TO SAVEPOINT one")
                    res.problems.append(
                        (ch, f"cannot turn it into rows: {type(exc).__name__}: {exc}"[:500])
                    )
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        return res

    # -- one document ------------------------------------------------------------------------
    def _upsert(self, cur: Any, plan: CollectionPlan, doc: dict[str, Any], res: Any) -> None:
        rows = self.inverses[plan.name].rows(doc)
        self._upsert_row(cur, rows.root, plan.pk)
        res.rows_written += 1
        for e in plan.embeds:
            if not e.many:
                continue
            child = e.view.table
            scope = rows.scopes[e.name]
            keep = rows.children[e.name]
            pk = child.primary_key
            norm = self._normalizers(child.name, pk)
            have = self._keys_where(cur, child.name, pk, scope)
            wanted = {self._norm(norm, tuple(r.values.get(c) for c in pk)) for r in keep}
            for k in have:
                if self._norm(norm, k) not in wanted:
                    self._delete_key(cur, child.name, pk, k)
                    res.rows_deleted += 1
            for r in keep:
                self._upsert_row(cur, r, pk)
                res.rows_written += 1

    def _delete(self, cur: Any, plan: CollectionPlan, doc_id: Any, res: Any) -> None:
        inv = self.inverses[plan.name]
        ident = [doc_id] if len(plan.pk) == 1 else [doc_id[c] for c in plan.pk]
        key = tuple(f(v) for f, v in zip(inv.id_inv, ident, strict=True))
        root_row = None
        if any(e.many for e in plan.embeds):
            cols = sorted({rc for e in plan.embeds if e.many for rc in e.parent_columns})
            cur.execute(
                f"SELECT {', '.join(q(c) for c in cols)} FROM {q(plan.table.name)} WHERE "
                + " AND ".join(f"{q(c)} = %s" for c in plan.pk),
                key,
            )
            found = cur.fetchone()
            root_row = dict(zip(cols, found, strict=True)) if found else None
        for e in plan.embeds:
            if e.many and root_row is not None:
                pairs = zip(e.child_columns, e.parent_columns, strict=True)
                scope = {cc: root_row[rc] for cc, rc in pairs}
                cur.execute(
                    f"DELETE FROM {q(e.view.table.name)} WHERE "
                    + " AND ".join(f"{q(c)} = %s" for c in scope),
                    tuple(scope.values()),
                )
                res.rows_deleted += cur.rowcount
        res.rows_deleted += self._delete_key(cur, plan.table.name, plan.pk, key)

    def _normalizers(self, table: str, cols: list[str]) -> list[Any]:
        t = self.transform.schema.tables[table]
        return [default_converter(t.column(c)) for c in cols]

    @staticmethod
    def _norm(convs: list[Any], key: tuple[Any, ...]) -> Any:
        """A key read from MySQL (raw) and one written from a document compare equal."""
        return tuple(
            None if v is None else id_key(conv(v)) for conv, v in zip(convs, key, strict=True)
        )

    # -- SQL ---------------------------------------------------------------------------------
    def _upsert_row(self, cur: Any, row: RowImage, pk: list[str]) -> None:
        t = self.transform.schema.tables[row.table]
        # a generated column is MySQL's to compute: writing it is an error
        cols = [c for c in row.values if not (t.has_column(c) and t.column(c).generated)]
        updates = [c for c in cols if c not in pk] or cols[:1]
        if any(
            not (c.nullable or c.has_default or c.generated) and c.name not in row.values
            for c in t.columns
        ):
            # a NOT NULL column the document does not hold: INSERT ... ON DUPLICATE KEY would
            # fail on the INSERT part even for an existing row, so update that row in place,
            # and insert (which then fails, as it must: a dead letter) only when it is absent
            cond = " AND ".join(f"{q(c)} = %s" for c in pk)
            key = tuple(row.values[c] for c in pk)
            cur.execute(
                f"UPDATE {q(row.table)} SET "
                + ", ".join(f"{q(c)} = %s" for c in updates)
                + f" WHERE {cond}",
                (*(row.values[c] for c in updates), *key),
            )
            if cur.rowcount:
                return
            cur.execute(f"SELECT 1 FROM {q(row.table)} WHERE {cond} FOR UPDATE", key)
            if cur.fetchone():
                return  # there, and already equal
            cur.execute(
                f"INSERT INTO {q(row.table)} ({', '.join(q(c) for c in cols)}) VALUES "
                f"({', '.join(['%s'] * len(cols))})",
                tuple(row.values[c] for c in cols),
            )
            return
        cur.execute(
            f"INSERT INTO {q(row.table)} ({', '.join(q(c) for c in cols)}) VALUES "
            f"({', '.join(['%s'] * len(cols))}) ON DUPLICATE KEY UPDATE "
            + ", ".join(f"{q(c)} = VALUES({q(c)})" for c in updates),
            tuple(row.values[c] for c in cols),
        )

    @staticmethod
    def _keys_where(
        cur: Any, table: str, pk: list[str], scope: dict[str, Any]
    ) -> set[tuple[Any, ...]]:
        if any(v is None for v in scope.values()):
            return set()  # NULL matches no row
        cur.execute(
            f"SELECT {', '.join(q(c) for c in pk)} FROM {q(table)} WHERE "
            + " AND ".join(f"{q(c)} = %s" for c in scope),
            tuple(scope.values()),
        )
        return {tuple(r) for r in cur.fetchall()}

    @staticmethod
    def _delete_key(cur: Any, table: str, pk: list[str], key: tuple[Any, ...]) -> int:
        cur.execute(
            f"DELETE FROM {q(table)} WHERE " + " AND ".join(f"{q(c)} = %s" for c in pk), key
        )
        return int(cur.rowcount)
