"""Seeded random writes against the generated schema: inserts, updates (payload, primary keys,
foreign keys), deletes, multi-table and large transactions, hot rows, cascades, children
written before their parents (foreign-key checks off) and a DDL that adds a column.

Statements MySQL refuses (a RESTRICT, a duplicate key) roll back and count as refused: the
source decides what happened, the oracle reads what it holds.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pymysql

from .model import U64, Model, Table
from .oracle import connect

WORDS = ["alpha", "Beta", "gamma", "Delta", "eps", "zeta", "Eta", "theta", "iota", "kappa"]


def value(rnd: random.Random, kind: str) -> Any:
    """A random value of a column kind (edge cases included)."""
    r = rnd.random()
    if kind == "int":
        return rnd.choice([0, -1, 1, 2**31 - 1, -(2**31)]) if r < 0.2 else rnd.randint(-1000, 1000)
    if kind == "bigint_u":
        return rnd.choice([0, 2**63 - 1, 2**63, U64]) if r < 0.3 else rnd.randint(2**63, U64)
    if kind == "tinyint":
        return rnd.randint(-128, 127)
    if kind in ("bool", "bit1"):
        return rnd.randint(0, 1)
    if kind == "bit8":
        return rnd.randint(0, 255)
    if kind in ("varchar", "text"):
        if r < 0.1:
            return ""
        return f"{rnd.choice(WORDS)} {rnd.randint(0, 99)}" + ("ü'\"ß" if r > 0.9 else "")
    if kind == "char":
        return rnd.choice(WORDS)[:6]
    if kind == "decimal":
        return Decimal(rnd.randint(-(10**11), 10**11)) / 1000
    if kind == "decimal_big":
        return Decimal(rnd.randint(-(10**29), 10**29)) / 10**10
    if kind == "double":
        return rnd.choice([0.0, -0.5, 1e300, 1.5e-300]) if r < 0.2 else rnd.uniform(-1e6, 1e6)
    if kind == "float":
        return rnd.choice([0.0, 1.5, -2.25, 100.125])
    if kind in ("datetime", "datetime6", "timestamp"):
        base = datetime(2000 if kind != "timestamp" else 2001, 1, 1)
        return base + timedelta(seconds=rnd.randint(0, 10**9), microseconds=rnd.randint(0, 999999))
    if kind == "date":
        return (datetime(1990, 1, 1) + timedelta(days=rnd.randint(0, 20000))).date()
    if kind == "time":
        return timedelta(seconds=rnd.randint(-3000000, 3000000), milliseconds=rnd.randint(0, 999))
    if kind == "year":
        return rnd.randint(1901, 2155)
    if kind == "enum":
        return rnd.choice(["red", "green", "blue"])
    if kind == "set":
        return ",".join(x for x in ["x", "y", "z"] if rnd.random() < 0.5)
    if kind == "json":
        return rnd.choice(
            [
                '{"a": 1, "b": [1, 2, {"c": null}], "s": "text"}',
                "[]",
                '{"big": 18446744073709551615, "f": 1.5}',
                '"just a string"',
                "null",
                '{"nested": {"deep": {"x": true}}}',
            ]
        )
    if kind in ("blob", "varbinary"):
        return bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 12)))
    raise ValueError(kind)


class Workload:
    def __init__(self, url: str, model: Model, seed: int) -> None:
        self.url = url
        self.model = model
        self.rnd = random.Random(seed)
        self.conn = connect(url)
        self.conn.autocommit(False)
        self.next_key = 10_000
        self.counts = {"committed": 0, "refused": 0, "ddl": 0}

    # -- initial data ---------------------------------------------------------------------
    def create(self) -> None:
        cur = self.conn.cursor()
        for t in self.model.create_order():
            cur.execute(t.ddl)
        self.conn.commit()

    def load(self, per_root: int = 40) -> None:
        for t in self.model.create_order():
            if t.role in ("far", "lookup"):
                for _ in range(8):
                    self._txn(lambda cur, t=t: self._insert(cur, t))
        for _ in range(per_root):
            self._txn(self._new_aggregate)

    # -- helpers ----------------------------------------------------------------------------
    def _key(self, t: Table) -> list[Any]:
        self.next_key += self.rnd.randint(1, 3)
        k = self.next_key
        if t.key_kind == "composite":
            return [self.rnd.randint(-50, 50), k]
        if t.key_kind == "varchar":
            return [f"k{k}"]
        if t.key_kind == "bigint_u":
            return [U64 - k]
        return [k if self.rnd.random() < 0.8 else -k]

    def _some(self, cur: Any, t: Table, cols: list[str], n: int = 1) -> list[tuple[Any, ...]]:
        names = ", ".join(f"`{c}`" for c in cols)
        cur.execute(f"SELECT {names} FROM `{t.name}` ORDER BY RAND() LIMIT {int(n)}")
        return list(cur.fetchall())

    def _insert(self, cur: Any, t: Table, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
        row: dict[str, Any] = dict(fixed or {})
        missing = [c for c in t.pk if c not in row]
        if missing:
            # a fresh key: a composite's parent part comes fixed, its own part is new
            row.update(zip(missing, self._key(t)[-len(missing) :], strict=False))
        for fk in t.fks:
            if any(c in row for c in fk.cols):
                continue
            ref = self.model.tables[fk.ref]
            got = self._some(cur, ref, fk.ref_cols)
            if got and self.rnd.random() < 0.85:
                row.update(dict(zip(fk.cols, got[0], strict=True)))
        for c in t.payload:
            if c.name not in row:
                row[c.name] = (
                    None if c.nullable and self.rnd.random() < 0.15 else value(self.rnd, c.kind)
                )
        cols = list(row)
        cur.execute(
            f"INSERT INTO `{t.name}` ({', '.join(f'`{c}`' for c in cols)}) "
            f"VALUES ({', '.join(['%s'] * len(cols))})",
            [row[c] for c in cols],
        )
        return row

    def _children(self, t: Table) -> list[Table]:
        return [c for c in self.model.tables.values() if c.parent == t.name]

    def _txn(self, fn: Any) -> None:
        cur = self.conn.cursor()
        try:
            fn(cur)
            self.conn.commit()
            self.counts["committed"] += 1
        except (pymysql.err.IntegrityError, pymysql.err.OperationalError, pymysql.err.DataError):
            self.conn.rollback()
            self.counts["refused"] += 1
        except pymysql.err.InterfaceError:
            self._reconnect()
        finally:
            cur.close()

    def _reconnect(self) -> None:
        for _ in range(100):
            try:
                self.conn = connect(self.url)
                self.conn.autocommit(False)
                return
            except pymysql.err.OperationalError:
                time.sleep(0.2)

    # -- operations -------------------------------------------------------------------------
    def _joins(self, root: Table | None = None) -> list[Table]:
        return [
            t
            for t in self.model.tables.values()
            if t.role == "join" and (root is None or t.fks[0].ref == root.name)
        ]

    def _link(self, cur: Any, j: Table, root_row: dict[str, Any] | None = None) -> None:
        """A many-to-many link: a join row between a root row and a lookup row."""
        rfk, lfk = j.fks
        if root_row is None:
            got = self._some(cur, self.model.tables[rfk.ref], rfk.ref_cols)
            if not got:
                return
            root_row = dict(zip(rfk.ref_cols, got[0], strict=True))
        far = self._some(cur, self.model.tables[lfk.ref], lfk.ref_cols)
        if not far:
            return
        row = {c: root_row[r] for c, r in zip(rfk.cols, rfk.ref_cols, strict=True)}
        row[lfk.cols[0]] = far[0][0]
        row["jp_int"] = None if self.rnd.random() < 0.2 else self.rnd.randint(-5, 5)
        cols = list(row)
        cur.execute(
            f"INSERT IGNORE INTO `{j.name}` ({', '.join(f'`{c}`' for c in cols)}) "
            f"VALUES ({', '.join(['%s'] * len(cols))})",
            [row[c] for c in cols],
        )

    def _new_aggregate(self, cur: Any) -> None:
        root = self.rnd.choice([t for t in self.model.tables.values() if t.role == "root"])
        row = self._insert(cur, root)
        for j in self._joins(root):
            for _ in range(self.rnd.randint(0, 3)):
                self._link(cur, j, row)
        for ch in self._children(root):
            fk = ch.fks[0]
            for _ in range(self.rnd.randint(0, 4)):
                fixed = {c: row[r] for c, r in zip(fk.cols, fk.ref_cols, strict=True)}
                crow = self._insert(cur, ch, fixed)
                for g in self._children(ch):
                    gfk = g.fks[0]
                    for _ in range(self.rnd.randint(0, 2)):
                        fixed = {c: crow[r] for c, r in zip(gfk.cols, gfk.ref_cols, strict=True)}
                        self._insert(cur, g, fixed)

    def _update_payload(self, cur: Any, t: Table, n: int = 1) -> None:
        if not t.payload:
            return
        for key in self._some(cur, t, t.pk, n):
            c = self.rnd.choice(t.payload)
            where = " AND ".join(f"`{k}` = %s" for k in t.pk)
            v = None if c.nullable and self.rnd.random() < 0.1 else value(self.rnd, c.kind)
            cur.execute(f"UPDATE `{t.name}` SET `{c.name}` = %s WHERE {where}", [v, *key])

    def _update_key(self, cur: Any, t: Table) -> None:
        got = self._some(cur, t, t.pk)
        if not got:
            return
        new = self._key(t)
        col = self.rnd.randrange(len(t.pk))
        if t.fks and t.role in ("child", "grandchild") and t.pk[col] in t.fks[0].cols:
            col = len(t.pk) - 1  # keep the parent reference: change the own part
        where = " AND ".join(f"`{k}` = %s" for k in t.pk)
        cur.execute(f"UPDATE `{t.name}` SET `{t.pk[col]}` = %s WHERE {where}", [new[-1], *got[0]])

    def _move(self, cur: Any, t: Table) -> None:
        """A child moves to another parent (its foreign key changes)."""
        fk = t.fks[0]
        if any(c in t.pk for c in fk.cols) and self.rnd.random() < 0.5:
            return
        got = self._some(cur, t, t.pk)
        ref = self._some(cur, self.model.tables[fk.ref], fk.ref_cols)
        if not got or not ref:
            return
        sets = ", ".join(f"`{c}` = %s" for c in fk.cols)
        where = " AND ".join(f"`{k}` = %s" for k in t.pk)
        cur.execute(f"UPDATE `{t.name}` SET {sets} WHERE {where}", [*ref[0], *got[0]])

    def _delete(self, cur: Any, t: Table) -> None:
        got = self._some(cur, t, t.pk)
        if got:
            where = " AND ".join(f"`{k}` = %s" for k in t.pk)
            cur.execute(f"DELETE FROM `{t.name}` WHERE {where}", got[0])

    def _orphan_first(self, cur: Any) -> None:
        """A child inserted before its parent, in one transaction (FK checks off)."""
        roots = [t for t in self.model.tables.values() if t.role == "root" and self._children(t)]
        if not roots:
            return
        root = self.rnd.choice(roots)
        ch = self.rnd.choice(self._children(root))
        key = dict(zip(root.pk, self._key(root), strict=True))
        cur.execute("SET SESSION foreign_key_checks = 0")
        try:
            fk = ch.fks[0]
            self._insert(cur, ch, {c: key[r] for c, r in zip(fk.cols, fk.ref_cols, strict=True)})
            self._insert(cur, root, key)
        finally:
            cur.execute("SET SESSION foreign_key_checks = 1")

    def _large(self, cur: Any) -> None:
        t = self.rnd.choice(list(self.model.tables.values()))
        self._update_payload(cur, t, n=300)

    def _hot(self, cur: Any) -> None:
        t = self.rnd.choice(list(self.model.tables.values()))
        got = self._some(cur, t, t.pk)
        if not got or not t.payload:
            return
        c = self.rnd.choice(t.payload)
        where = " AND ".join(f"`{k}` = %s" for k in t.pk)
        for _ in range(30):
            cur.execute(
                f"UPDATE `{t.name}` SET `{c.name}` = %s WHERE {where}",
                [value(self.rnd, c.kind), *got[0]],
            )

    def add_column(self) -> None:
        """The DDL of the run: a nullable column added to a random table (CDC: --on-ddl
        extend). Its values are written afterwards like any payload column."""
        from .model import Col

        t = self.rnd.choice(list(self.model.tables.values()))
        col = Col(f"added{self.counts['ddl']}", "varchar", True)
        conn = connect(self.url)  # its own: the write load uses self.conn from its thread
        try:
            with conn.cursor() as cur:
                cur.execute(f"ALTER TABLE `{t.name}` ADD COLUMN {col.ddl}")
        finally:
            conn.close()
        t.cols.append(col)  # the oracle reads it from here on
        self.counts["ddl"] += 1

    def step(self) -> None:
        tables = list(self.model.tables.values())
        t = self.rnd.choice(tables)
        joins = self._joins()
        ops = [
            (25, self._new_aggregate),
            (25, lambda cur: self._update_payload(cur, t, self.rnd.randint(1, 3))),
            (6, lambda cur: self._update_key(cur, t)),
            (8, lambda cur: self._move(cur, t) if t.role in ("child", "grandchild") else None),
            (10, lambda cur: self._delete(cur, t)),
            (3, self._orphan_first),
            (2, self._large),
            (3, self._hot),
            (8, lambda cur: self._link(cur, self.rnd.choice(joins)) if joins else None),
            (
                8,
                lambda cur: (
                    self._update_payload(cur, t),
                    self._delete(cur, self.rnd.choice(tables)),
                ),
            ),
        ]
        weights = [w for w, _ in ops]
        fn = self.rnd.choices([f for _, f in ops], weights)[0]
        self._txn(fn)

    def run(self, stop: threading.Event, rate: float = 40.0) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # a restarted server can leave the protocol in any state
                with contextlib.suppress(Exception):
                    self.conn.close()
                self._reconnect()
            time.sleep(1.0 / rate)
