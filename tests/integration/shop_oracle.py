"""An independent oracle for the shop mapping: documents built the slow, obvious way
(one query per row, the driver's own type conversion), to compare the backfill against."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128


def _v(x: Any) -> Any:
    if isinstance(x, Decimal):
        return Decimal128(str(x))
    if isinstance(x, datetime):
        return x.replace(microsecond=x.microsecond // 1000 * 1000)
    if isinstance(x, set):
        return sorted(x)
    return x


def expected_orders(conn: Any, db: str) -> dict[int, dict[str, Any]]:
    cur = conn.cursor()
    cur.execute(
        f"SELECT id, order_no, customer_id, status, total, note, created_at FROM `{db}`.orders"
    )
    out = {}
    for oid, no, cust, status, total, note, created in cur.fetchall():
        doc = {
            "_id": oid,
            "orderNo": no,
            "total": _v(total),
            "placedAt": _v(created),
            "id": oid,
            "customer_id": cust,
            "status": status,
            "note": note,
        }
        c2 = conn.cursor()
        c2.execute(
            f"SELECT line_no, product_id, qty, unit_price FROM `{db}`.order_items "
            "WHERE order_id = %s ORDER BY line_no",
            (oid,),
        )
        doc["items"] = [
            {"line_no": a, "product_id": b, "qty": c, "unit_price": _v(d)}
            for a, b, c, d in c2.fetchall()
        ]
        doc["customer"] = None
        if cust is not None:
            c2.execute(f"SELECT id, email, name FROM `{db}`.customers WHERE id = %s", (cust,))
            r = c2.fetchone()
            doc["customer"] = {"id": r[0], "email": r[1], "name": r[2]} if r else None
        out[oid] = doc
    return out


def normalise(doc: dict[str, Any]) -> dict[str, Any]:
    """Compare as plain values (Int64 == int) but keep key order out of it."""
    return {k: v for k, v in doc.items()}
