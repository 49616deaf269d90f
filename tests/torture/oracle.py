"""The independent oracle: what MongoDB must hold, built the slow, obvious way.

It reads the source with PyMySQL (the driver's own type conversion, not migrator's raw
bytes), applies DESIGN.md's type rules and the mapping model as written here, and shares no
code with migrator/model/transform.py or migrator/model/typerules.py. Documents are compared
in a canonical, typed form: a bool is not an int, a Decimal128 keeps its scale, `_id` field
order counts.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pymysql
from bson.decimal128 import Decimal128

from .model import SET_VALUES, Coll, Embed, Model, Projection, Table

INT64_MAX = 2**63 - 1


def connect(url: str) -> Any:
    from urllib.parse import unquote, urlsplit

    u = urlsplit(url)
    return pymysql.connect(
        host=u.hostname,
        port=u.port or 3306,
        user=unquote(u.username or ""),
        password=unquote(u.password or ""),
        database=u.path.lstrip("/"),
        charset="utf8mb4",
        init_command="SET time_zone = '+00:00'",
        autocommit=True,
    )


# ------------------------------------------------------------------------------ type rules
def _big_int(n: int) -> Any:
    return n if n <= INT64_MAX else Decimal128(str(n))


def _json_value(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v <= INT64_MAX:
        return Decimal128(str(v))
    return v


def _time(td: timedelta) -> str:
    neg = td < timedelta(0)
    us = abs(td) // timedelta(microseconds=1)
    secs, us = divmod(us, 1_000_000)
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    return f"{'-' if neg else ''}{h:02d}:{m:02d}:{s:02d}.{us // 1000:03d}"


def convert(kind: str, v: Any, override: str | None = None) -> Any:
    """A PyMySQL value of a column of this kind, as the document must hold it."""
    if v is None:
        return None
    if override == "string":
        return str(v)  # int -> "5"; Decimal -> its text with the column's scale
    if kind in ("int", "tinyint", "year"):
        return int(v)
    if kind == "bigint_u":
        return _big_int(int(v))
    if kind == "bool":
        return int(v) != 0
    if kind in ("bit1", "bit8"):
        n = int.from_bytes(v, "big") if isinstance(v, bytes) else int(v)
        return n != 0 if kind == "bit1" else n
    if kind in ("decimal", "decimal_big"):
        return Decimal128(str(v))
    if kind in ("double", "float"):
        return float(v)
    if kind in ("datetime", "datetime6", "timestamp"):
        if isinstance(v, str):  # a zero date PyMySQL could not parse
            return None
        return v.replace(microsecond=v.microsecond // 1000 * 1000)
    if kind == "date":
        return datetime(v.year, v.month, v.day) if isinstance(v, date) else None
    if kind == "time":
        return _time(v)
    if kind == "set":
        items = v if isinstance(v, set) else set(filter(None, str(v).split(",")))
        return [x for x in SET_VALUES if x in items]
    if kind == "json":
        return _json_value(json.loads(v, parse_int=int))
    if kind in ("blob", "varbinary"):
        return bytes(v)
    return str(v)


# ------------------------------------------------------------------------------ documents
def _put(doc: dict[str, Any], name: str, value: Any) -> None:
    parts = name.split(".")
    for p in parts[:-1]:
        doc = doc.setdefault(p, {})
    doc[parts[-1]] = value


def _fields(t: Table, proj: Projection, row: dict[str, Any], omit_nulls: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    cols = proj.only if proj.only is not None else [c.name for c in t.cols]
    for name in cols:
        if name in proj.exclude:
            continue
        if row[name] is None and omit_nulls:
            continue  # SQL NULL is omitted; a JSON null is a value
        value = convert(t.col(name).kind, row[name], proj.types.get(name))
        _put(doc, proj.rename.get(name, name), value)
    return doc


def _doc_id(t: Table, row: dict[str, Any]) -> Any:
    if len(t.pk) == 1:
        return convert(t.col(t.pk[0]).kind, row[t.pk[0]])
    return {k: convert(t.col(k).kind, row[k]) for k in t.pk}


def _rows(conn: Any, t: Table) -> list[dict[str, Any]]:
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT * FROM `{t.name}`")
        return list(cur.fetchall())


def _sort_key(value: Any) -> Any:
    # MongoDB's $sort order of the *document* values, which CDC's $push $sort keeps: null
    # first, then numbers by value (whatever their BSON type), then text by its UTF-8 bytes
    # (not by a MySQL collation), then dates
    if value is None:
        return (0,)
    if isinstance(value, Decimal128):
        return (1, value.to_decimal())
    if isinstance(value, bool):
        return (4, value)
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value.encode())
    if isinstance(value, datetime):
        return (5, value)
    raise AssertionError(f"oracle: no sort order written for {value!r}")


def expected(conn: Any, model: Model) -> dict[str, dict[Any, Any]]:
    """{collection: {canonical _id: canonical document}}"""
    rows = {name: _rows(conn, t) for name, t in model.tables.items()}
    out: dict[str, dict[Any, Any]] = {}
    for c in model.colls:
        out[c.name] = {}
        t = model.tables[c.table]
        omit = c.nulls == "omit"
        for row in rows[c.table]:
            doc = {"_id": _doc_id(t, row)}
            doc.update(_fields(t, c.proj, row, omit))
            _fill(model, doc, row, c.embeds, rows, omit)
            out[c.name][canon(doc["_id"])] = canon(doc)
    return out


def _fill(
    model: Model,
    doc: dict[str, Any],
    row: dict[str, Any],
    embeds: list[Embed],
    rows: dict[str, list[dict[str, Any]]],
    omit: bool,
) -> None:
    """A document's or element's embeds, to any depth: arrays, sub-documents, arrays of
    values, and rows merged in (each field null, or left out with nulls: omit, when the row
    is missing; a name already there keeps its value)."""
    for e in embeds:
        t = model.tables[e.table]
        match = [
            r
            for r in rows[e.table]
            if all(row[pc] is not None and r[cc] == row[pc] for cc, pc in e.on.items())
        ]
        if e.merge:
            one = match[0] if match else dict.fromkeys(c.name for c in t.cols)
            for k, v in _element(model, e, one, rows, omit).items():
                doc.setdefault(k, v)
        elif not e.many:
            doc[e.as_ or ""] = _element(model, e, match[0], rows, omit) if match else None
        else:
            order = list(e.order_by) + [k for k in t.pk if k not in e.order_by]
            match.sort(
                key=lambda r, t=t, e=e: tuple(
                    _sort_key(convert(t.col(k).kind, r[k], e.proj.types.get(k))) for k in order
                )
            )
            elements = [_element(model, e, r, rows, omit) for r in match]
            if e.values is not None:
                doc[e.as_ or ""] = [_at(el, e.values) for el in elements]
            else:
                doc[e.as_ or ""] = elements


def _element(
    model: Model, e: Embed, row: dict[str, Any], rows: dict[str, list[Any]], omit: bool
) -> dict[str, Any]:
    # only merged rows follow the collection's `nulls: omit`; elements keep their nulls
    d = _fields(model.tables[e.table], e.proj, row, omit and e.merge)
    _fill(model, d, row, e.embeds, rows, omit)
    return d


def _at(doc: Any, path: str) -> Any:
    for part in path.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def canon(v: Any) -> Any:
    """A typed, hashable form: equal only when MongoDB would hold the same value."""
    if v is None:
        return ("null",)
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int):
        return ("int", int(v))
    if isinstance(v, float):
        return ("double", v)
    if isinstance(v, Decimal128):
        return ("decimal", str(v))
    if isinstance(v, Decimal):
        return ("decimal", str(Decimal128(str(v))))
    if isinstance(v, str):
        return ("string", v)
    if isinstance(v, bytes):
        return ("binary", bytes(v))
    if isinstance(v, datetime):
        return ("date", v)
    if isinstance(v, dict):
        return ("object", tuple((k, canon(x)) for k, x in v.items()))
    if isinstance(v, list):
        return ("array", tuple(canon(x) for x in v))
    return ("other", repr(v))


def _unordered(c: Any) -> Any:
    """Field order of documents does not matter (except inside _id)."""
    if c[0] == "object":
        return ("object", tuple(sorted((k, _unordered(x)) for k, x in c[1])))
    if c[0] == "array":
        return ("array", tuple(_unordered(x) for x in c[1]))
    return c


def _diff(want: Any, have: Any) -> str:
    """The first fields that differ, briefly."""
    if want[0] == have[0] == "object":
        w, h = dict(want[1]), dict(have[1])
        parts = [
            f"{k}: want {str(w.get(k, '(missing)'))[:150]} have {str(h.get(k, '(missing)'))[:150]}"
            for k in sorted(set(w) | set(h))
            if w.get(k) != h.get(k)
        ]
        return "; ".join(parts[:4])
    return f"{str(want)[:200]} / {str(have)[:200]}"


def compare(model: Model, conn: Any, db: Any, limit: int = 10) -> list[str]:
    """What MongoDB holds that the oracle says it must not (and vice versa)."""
    want = expected(conn, model)
    problems: list[str] = []
    for c in model.colls:
        have = {canon(d["_id"]): _unordered(canon(d)) for d in db[c.name].find()}
        exp = {k: _unordered(v) for k, v in want[c.name].items()}
        for k in exp.keys() - have.keys():
            problems.append(f"{c.name}: missing _id {k}")
        for k in have.keys() - exp.keys():
            problems.append(f"{c.name}: extra _id {k}")
        for k in exp.keys() & have.keys():
            if exp[k] != have[k]:
                problems.append(f"{c.name}: _id {k} differs:\n    want {_diff(exp[k], have[k])}")
        if len(problems) >= limit:
            break
    return problems[:limit]


__all__ = ["Coll", "compare", "connect", "expected"]
