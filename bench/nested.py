"""Nested documents: backfill, CDC and one shared row's change, each beside the MongoDB
server's own rate for the same writes, measured in the same run (not a timed test).

The mapping is depth 3 with a many-to-many: orders -> items[] -> product -> brand, and
orders -> tags[] (order_tags, the tag merged in). On a throwaway MariaDB and the stack's
MongoDB server (named in the output) it prints:
  1. backfill, whole command: documents/s and source rows/s, beside `insert_many` of the same
     documents into a scratch collection;
  2. CDC, whole command (`cdc --until-caught-up` after a burst: new orders with items and tags,
     item quantities changed, tag links added and removed): events/s, beside a `bulk_write` of
     one whole-document replace per event;
  3. one shared row (a product in --fanout orders' items) renamed: documents/s CDC updates,
     beside the server's own `update_many` with `arrayFilters` of the same documents.

Usage: .venv/bin/python bench/nested.py [--orders 20000] [--burst 2000] [--fanout 1000]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from pymongo import ReplaceOne

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.devtools.sandbox import start_stack, url_with_database
from migrator.model.settings import parse_mapping
from migrator.model.urls import parse_mysql_url
from migrator.sink.mongo import connect as mongo_connect
from migrator.source.connection import connect

DDL = [
    "CREATE TABLE brands (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL)",
    "CREATE TABLE products (id INT PRIMARY KEY, sku VARCHAR(20) NOT NULL,"
    " name VARCHAR(60) NOT NULL, brand_id INT NULL, KEY (brand_id))",
    "CREATE TABLE tags (id INT PRIMARY KEY, name VARCHAR(30) NOT NULL)",
    "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(40) NOT NULL,"
    " status VARCHAR(10) NOT NULL)",
    "CREATE TABLE order_items (order_id INT NOT NULL, line_no INT NOT NULL,"
    " product_id INT NOT NULL, qty INT NOT NULL, PRIMARY KEY (order_id, line_no),"
    " KEY (product_id))",
    "CREATE TABLE order_tags (order_id INT NOT NULL, tag_id INT NOT NULL,"
    " PRIMARY KEY (order_id, tag_id), KEY (tag_id))",
]

MAPPING = """\
version: 1
source: {{url: "{url}"}}
target: {{url: "{mongo}", database: bench}}
state: {{database: _bench_state}}
collections:
  - name: orders
    from: orders
    embed:
      - as: items
        from: order_items
        on: {{order_id: id}}
        many: true
        order_by: [line_no]
        exclude: [order_id]
        embed:
          - as: product
            from: products
            on: {{id: product_id}}
            many: false
            all_columns: false
            fields: {{sku: sku, name: name}}
            embed:
              - {{as: brand, from: brands, on: {{id: brand_id}}, many: false}}
      - as: tags
        from: order_tags
        on: {{order_id: id}}
        many: true
        exclude: [order_id]
        embed:
          - {{from: tags, on: {{id: tag_id}}, many: false, merge: true}}
"""

SHARED = 1  # the product every one of the first --fanout orders holds


def fill(cur: Any, orders: int, fanout: int, rnd: random.Random) -> int:
    cur.executemany("INSERT INTO brands VALUES (%s, %s)", [(i, f"brand {i}") for i in range(1, 51)])
    cur.executemany(
        "INSERT INTO products VALUES (%s, %s, %s, %s)",
        [(i, f"SKU-{i}", f"product {i}", rnd.randrange(1, 51)) for i in range(1, 2001)],
    )
    cur.executemany("INSERT INTO tags VALUES (%s, %s)", [(i, f"tag{i}") for i in range(1, 31)])
    rows = 0
    for lo in range(1, orders + 1, 2000):
        ids = range(lo, min(lo + 2000, orders + 1))
        cur.executemany(
            "INSERT INTO orders VALUES (%s, %s, 'new')", [(o, f"customer {o}") for o in ids]
        )
        items = [
            (o, line, SHARED if (line == 1 and o <= fanout) else rnd.randrange(2, 2001), 1)
            for o in ids
            for line in range(1, 4)
        ]
        cur.executemany("INSERT INTO order_items VALUES (%s, %s, %s, %s)", items)
        tags = {(o, rnd.randrange(1, 31)) for o in ids for _ in range(2)}
        cur.executemany("INSERT INTO order_tags VALUES (%s, %s)", sorted(tags))
        rows += len(ids) + len(items) + len(tags)
    return rows + 2000 + 50 + 30


def burst(cur: Any, first: int, n: int, rnd: random.Random) -> int:
    """n transactions: a new order with 3 items and 2 tags, an earlier order's item quantity
    changed, a tag link removed. Returns the row events written."""
    events = 0
    for o in range(first, first + n):
        cur.execute("INSERT INTO orders VALUES (%s, %s, 'new')", (o, f"customer {o}"))
        cur.executemany(
            "INSERT INTO order_items VALUES (%s, %s, %s, 1)",
            [(o, line, rnd.randrange(2, 2001)) for line in range(1, 4)],
        )
        cur.executemany(
            "INSERT IGNORE INTO order_tags VALUES (%s, %s)",
            [(o, t) for t in rnd.sample(range(1, 31), 2)],
        )
        cur.execute(
            "UPDATE order_items SET qty = qty + 1 WHERE order_id = %s AND line_no = 2",
            (rnd.randrange(first // 2, o),),
        )
        cur.execute(
            "DELETE FROM order_tags WHERE order_id = %s ORDER BY tag_id LIMIT 1",
            (rnd.randrange(first // 2, o),),
        )
        cur.connection.commit()
        events += 1 + 3 + 2 + 1 + 1
    return events


def server_insert_rate(db: Any, docs: list[dict[str, Any]]) -> float:
    scratch = db["_scratch_insert"]
    scratch.drop()
    t0 = time.perf_counter()
    for i in range(0, len(docs), 1000):
        scratch.insert_many(docs[i : i + 1000], ordered=False)
    secs = time.perf_counter() - t0
    scratch.drop()
    return len(docs) / secs


def server_replace_rate(db: Any, docs: list[dict[str, Any]], n: int) -> float:
    scratch = db["_scratch_replace"]
    scratch.drop()
    scratch.insert_many(docs)
    ops = [ReplaceOne({"_id": docs[i % len(docs)]["_id"]}, docs[i % len(docs)]) for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, len(ops), 1000):
        scratch.bulk_write(ops[i : i + 1000], ordered=False)
    secs = time.perf_counter() - t0
    scratch.drop()
    return n / secs


def server_fanout_rate(db: Any, docs: list[dict[str, Any]]) -> float:
    scratch = db["_scratch_fanout"]
    scratch.drop()
    scratch.insert_many(docs)
    scratch.create_index("items.product_id")
    t0 = time.perf_counter()
    res = scratch.update_many(
        {"items.product_id": SHARED},
        {"$set": {"items.$[i].product.name": "renamed by the server"}},
        array_filters=[{"i.product_id": SHARED}],
    )
    secs = time.perf_counter() - t0
    scratch.drop()
    return res.modified_count / secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--burst", type=int, default=2_000)
    ap.add_argument("--fanout", type=int, default=1_000)
    args = ap.parse_args()
    rnd = random.Random(7)
    stack = start_stack()
    try:
        admin = connect(parse_mysql_url(stack.mysql_url), database=False)
        cur = admin.cursor()
        cur.execute("DROP DATABASE IF EXISTS bench")
        cur.execute("CREATE DATABASE bench")
        cur.execute("USE bench")
        for stmt in DDL:
            cur.execute(stmt)
        rows = fill(cur, args.orders, args.fanout, rnd)
        admin.commit()
        url = url_with_database(stack.mysql_url, "bench")
        mapping = parse_mapping(MAPPING.format(url=url, mongo=stack.mongo_url), "nested.yaml")
        client = mongo_connect(stack.mongo_url)
        db = client.bench
        print(f"MongoDB server: {stack.mongo_kind}; {args.orders:,} orders, {rows:,} rows")

        t0 = time.perf_counter()
        backfill(mapping, workers=2)
        secs = time.perf_counter() - t0
        docs = list(db.orders.find())
        ref = server_insert_rate(db, docs)
        rate = len(docs) / secs
        print(
            f"backfill (whole command): {rate:,.0f} docs/s ({rows / secs:,.0f} source rows/s, "
            f"every level); server insert_many of the same documents: {ref:,.0f} docs/s; "
            f"ratio {rate / ref:.2f}"
        )

        events = burst(cur, args.orders + 1, args.burst, rnd)
        t0 = time.perf_counter()
        summary = run_cdc(mapping, mode="until-caught-up")
        secs = time.perf_counter() - t0
        rate = summary.events / secs
        ref = server_replace_rate(db, docs[:5000], summary.events)
        print(
            f"CDC (whole command, {events:,} row events in {args.burst:,} transactions): "
            f"{rate:,.0f} events/s; server bulk_write of one replace per event: {ref:,.0f} "
            f"events/s; ratio {rate / ref:.2f}"
        )

        holders = [d for d in docs if any(i["product_id"] == SHARED for i in d["items"])]
        cur.execute("UPDATE products SET name = 'renamed' WHERE id = %s", (SHARED,))
        admin.commit()
        t0 = time.perf_counter()
        run_cdc(mapping, mode="until-caught-up")
        secs = time.perf_counter() - t0
        changed = db.orders.count_documents({"items.product.name": "renamed"})
        rate = changed / secs
        ref = server_fanout_rate(db, holders)
        print(
            f"one shared row in {changed:,} documents (whole command): {rate:,.0f} docs/s; "
            f"server update_many with arrayFilters: {ref:,.0f} docs/s; ratio {rate / ref:.2f}"
        )
        client.close()
        admin.close()
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
