"""Apply MongoDB document changes to MySQL rows (reverse sync).

Each change is written as the document's *current* state (the change stream's full document),
so applying a change twice, or an older change after a newer one's document, converges:
MySQL's rows for that document end equal to what the document says. Per document:

- the root row is upserted (mapped columns only; columns the mapping leaves out keep MySQL's
  values), or deleted when the document is;
- every array's child rows, at any depth, are made exactly the elements: rows of that parent
  that are not in the array are deleted (with the rows nested under them), the others
  upserted;
- a sub-document or merged row (a copy) only gives the enclosing row its reference; the copied
  row is its own table's business. A copy that differs from that row (someone edited it) is
  not written back: the change says so, naming the field, and the rest of it is applied;
- an array of values is a copy too: nothing is written from it.

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
from migrator.model.transform import CollectionPlan, EmbedPlan, Transform
from migrator.model.typerules import KeyRange, default_converter, param_value
from migrator.reverse.inverse import Copy, DocumentInverse, RowImage, get_path
from migrator.source.connection import quote_ident as q
from migrator.source.reader import ChunkReader


@dataclass
class ReverseChange:
    collection: str
    op: str  # "upsert" | "delete"
    doc_id: Any
    document: dict[str, Any] | None = None
    changed: tuple[str, ...] | None = None  # an update's changed paths (update description)


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
    # (collection, _id, paths): copied fields a document changed, not written back
    edited_copies: list[tuple[str, Any, list[str]]] = field(default_factory=list)


class ReverseApplier:
    def __init__(self, transform: Transform, conn: Any) -> None:
        """`conn`: a raw connection (`connect(url, raw=True)`), autocommit off."""
        self.transform = transform
        self.conn = conn
        tz = transform.mapping.source.timezone
        homes = frozenset(p.table.name for p in transform.collections if not p.spec.filter)
        self.inverses = {p.name: DocumentInverse(p, tz, homes) for p in transform.collections}
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
                        self._upsert(cur, plan, ch.document, res, ch.changed)
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
    def _upsert(
        self,
        cur: Any,
        plan: CollectionPlan,
        doc: dict[str, Any],
        res: Any,
        changed: tuple[str, ...] | None = None,
    ) -> None:
        """The rows of `doc`; `changed`: the paths an update changed (edits of copies are
        reported, not written)."""
        rows = self.inverses[plan.name].rows(doc, self._row_key(plan, doc["_id"]))
        self._upsert_row(cur, rows.root, plan.pk)
        res.rows_written += 1
        # every row first (parents first), updated in place where it is: a row an element
        # moved to another place of the document keeps the columns the mapping leaves out
        wanted: dict[str, set[Any]] = {}
        unknown: set[int] = set()  # arrays with an element whose key the document lacks
        homes = self.inverses[plan.name].homes
        for i, arr in enumerate(rows.arrays):
            if not arr.node.simple and arr.node.view.table.name in homes:
                # a nested array of a table with a collection of its own: copies of rows
                # whose truth is that collection (it may hold newer values than this one)
                unknown.add(i)
                continue
            pk = arr.node.view.table.primary_key
            norm = self._normalizers(arr.node.view.table.name, pk)
            for j, r in enumerate(arr.rows):
                missing = {c for c in pk if r.values.get(c) is None}
                if missing and missing <= r.dangling:
                    # its key came from a copy of a row that does not exist (a dangling
                    # reference): the row cannot be named, so MySQL keeps it as it is
                    unknown.add(i)
                    continue
                if missing:
                    raise ConversionError(
                        f"{arr.path}[{j}] names no {arr.node.view.table.name} row: its key "
                        f"column(s) {', '.join(sorted(missing))} are not in the element"
                    )
                self._upsert_row(cur, r, pk)
                res.rows_written += 1
                key = self._norm(norm, tuple(r.values.get(c) for c in pk))
                wanted.setdefault(arr.node.slot, set()).add(key)
        # then what each array's scope holds and no element of the document names any more
        for i, arr in enumerate(rows.arrays):
            if i in unknown:
                continue  # which row the unnamed element is cannot be told: none is deleted
            child = arr.node.view.table
            pk = child.primary_key
            norm = self._normalizers(child.name, pk)
            for k in self._keys_where(cur, child.name, pk, arr.scope):
                if self._norm(norm, k) not in wanted.get(arr.node.slot, set()):
                    res.rows_deleted += self._delete_rows(
                        cur, arr.node, dict(zip(pk, k, strict=True))
                    )
        edited = [
            path
            for c in rows.copies
            if c.touched(changed)
            for path in self._differs(cur, plan, rows.root.values, c)
        ]
        if edited:
            res.edited_copies.append((plan.name, doc.get("_id"), sorted(set(edited))))

    def _differs(self, cur: Any, plan: CollectionPlan, root: dict[str, Any], c: Copy) -> list[str]:
        """The paths where a copy the change may have written differs from its truth, read in
        MySQL (its rows are the ones this transaction just wrote, where they are the
        document's own): a copied row's fields, or a top-level array of values."""
        e = c.node
        if e.values_path is not None:
            if c.depth != 1:
                return []  # deeper arrays of values are not compared
            reader = ChunkReader(self.conn, plan)
            found_rows = reader.read_by_keys([tuple(root[k] for k in plan.pk)], False)
            if not found_rows:
                return []
            truth = plan.embedded(e, found_rows[0], reader.read_embeds(found_rows, [e]))
            same = id_key(truth) == id_key(c.part if c.part is not None else [])
            return [] if same else [c.paths[0]]
        if not isinstance(c.part, dict) or any(v is None for v in c.key.values()):
            return []
        view = e.view
        cur.execute(
            f"SELECT {', '.join(q(x) for x in view.columns)} FROM {q(view.table.name)} "
            "WHERE " + " AND ".join(f"{q(x)} = %s" for x in c.key),
            tuple(c.key.values()),
        )
        found = cur.fetchone()
        if found is None:
            return []  # a dangling reference: nothing to compare with
        truth = view.build(found)
        base = f"{c.where}." if c.where else ""
        return [
            base + f.name
            for f in view.fields
            if id_key(get_path(truth, f.path)) != id_key(get_path(c.part, f.path))
        ]

    def _delete(self, cur: Any, plan: CollectionPlan, doc_id: Any, res: Any) -> None:
        inv = self.inverses[plan.name]
        where = self._row_key(plan, doc_id)
        if where is None:
            ident = [doc_id] if len(plan.pk) == 1 else [doc_id[c] for c in plan.pk]
            key = tuple(f(v) for f, v in zip(inv.id_inv, ident, strict=True))
            where = dict(zip(plan.pk, key, strict=True))
        res.rows_deleted += self._delete_tree(cur, plan.table.name, plan.embeds, where)

    def _row_key(self, plan: CollectionPlan, doc_id: Any) -> dict[str, Any] | None:
        """The key of the row a document's `_id` came from, when the `_id` keeps less than the
        key (a DATETIME(6) key's microseconds, a FLOAT key): the row's own, not the `_id`
        turned back (that names no row, and an upsert would add a second one). None: the
        `_id` names its row exactly, or no row has it yet."""
        try:
            key = plan.key(doc_id)
        except Exception:  # an `_id` of another shape: the inverse reports it
            return None
        if not any(isinstance(v, KeyRange) for v in key):
            return None
        found = ChunkReader(self.conn, plan).read_by_keys([key], False)
        if not found:
            return None
        t, idx = plan.table, plan.root.index
        return {c: param_value(t.column(c), found[0][idx[c]]) for c in plan.pk}

    def _delete_rows(self, cur: Any, node: EmbedPlan, where: dict[str, Any]) -> int:
        """Rows of an array's table (and every array nested under them)."""
        return self._delete_tree(cur, node.view.table.name, node.embeds, where)

    def _delete_tree(
        self, cur: Any, table: str, embeds: list[EmbedPlan], where: dict[str, Any]
    ) -> int:
        """Delete the rows of `table` matching `where` and, first, the rows of the arrays
        nested under them (their own rows; copies and arrays of values are other tables')."""
        arrays = [e for e in embeds if e.many and not e.merge and e.values_path is None]
        deleted = 0
        if arrays:
            cols = sorted({pc for e in arrays for pc in e.parent_columns})
            cur.execute(
                f"SELECT {', '.join(q(c) for c in cols)} FROM {q(table)} WHERE "
                + " AND ".join(f"{q(c)} = %s" for c in where),
                tuple(where.values()),
            )
            for found in cur.fetchall():
                row = dict(zip(cols, found, strict=True))
                for e in arrays:
                    pairs = zip(e.child_columns, e.parent_columns, strict=True)
                    scope = {cc: row[pc] for cc, pc in pairs}
                    if all(v is not None for v in scope.values()):
                        deleted += self._delete_rows(cur, e, scope)
        cur.execute(
            f"DELETE FROM {q(table)} WHERE " + " AND ".join(f"{q(c)} = %s" for c in where),
            tuple(where.values()),
        )
        return deleted + int(cur.rowcount)

    def _normalizers(self, table: str, cols: list[str]) -> list[Any]:
        t = self.transform.schema.tables[table]
        return [(default_converter(t.column(c)), t.column(c).collate) for c in cols]

    @staticmethod
    def _norm(convs: list[Any], key: tuple[Any, ...]) -> Any:
        """A key read from MySQL (raw) and one written from a document compare equal, and as
        the column's collation compares them ('db' is the row 'DB' names)."""
        return tuple(
            None if v is None else id_key(collate(conv(v)))
            for (conv, collate), v in zip(convs, key, strict=True)
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
