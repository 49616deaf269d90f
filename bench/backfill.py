"""Backfill throughput, printed (not a timed test).

Creates N rows (default 200k) of an orders-like table on a throwaway MariaDB (or the servers in
MIGRATOR_TEST_MYSQL_URL / MIGRATOR_TEST_MONGO_URL) and prints, from one run:
  1. a raw single-connection pymysql keyset read (rows/s): the baseline;
  2. `backfill --dry-run` with 1 and 2 workers (rows/s, ratio to the raw read);
  3. a real backfill into the MongoDB server in use (rows/s, and which server it is) of
     --write-rows rows (default: all of them);
  4. the sink alone, side by side: the same documents upserted, and inserted (the backfill's
     way: insert_many, a replace only for an _id already there).

Usage: .venv/bin/python bench/backfill.py [--rows 200000] [--write-rows N]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import pymysql
from pymongo import MongoClient

from migrator.backfill.copy import backfill
from migrator.devtools.sandbox import start_stack, url_with_database
from migrator.model.settings import parse_mapping
from migrator.model.urls import parse_mysql_url
from migrator.sink.mongo import DocumentWriter
from migrator.source.connection import connect

DDL = """CREATE TABLE orders (
  id BIGINT PRIMARY KEY, order_no VARCHAR(20) NOT NULL, customer_id INT NOT NULL,
  status ENUM('new','paid','shipped','cancelled') NOT NULL, total DECIMAL(12,2) NOT NULL,
  note VARCHAR(200) NULL, vip TINYINT(1) NOT NULL, created_at DATETIME(3) NOT NULL,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB"""

FILL = """INSERT INTO orders (id, order_no, customer_id, status, total, note, vip, created_at)
SELECT seq, CONCAT('SO-', LPAD(seq, 9, '0')), 1 + seq % 50000,
       ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'), (seq % 100000) / 100,
       IF(seq % 3 = 0, NULL, CONCAT('note for order ', seq)), seq % 7 = 0,
       TIMESTAMP('2024-01-01') + INTERVAL seq SECOND + INTERVAL (seq % 1000) * 1000 MICROSECOND
FROM seq_1_to_{n}"""


def raw_pymysql_read(url: str, chunk: int = 5000) -> tuple[int, float]:
    u = parse_mysql_url(url)
    conn = pymysql.connect(
        host=u.host,
        port=u.port,
        user=u.user,
        password=u.password,
        database=u.database,
        charset="utf8mb4",
    )
    cur = conn.cursor()
    t0, rows, last = time.perf_counter(), 0, None
    while True:
        if last is None:
            cur.execute(f"SELECT * FROM orders ORDER BY id LIMIT {chunk}")
        else:
            cur.execute(f"SELECT * FROM orders WHERE id > %s ORDER BY id LIMIT {chunk}", (last,))
        batch = cur.fetchall()
        if not batch:
            break
        rows += len(batch)
        last = batch[-1][0]
    conn.close()
    return rows, time.perf_counter() - t0


def mapping_text(mysql_url: str, mongo_url: str, state_db: str, filt: str | None = None) -> str:
    f = f'    filter: "{filt}"\n' if filt else ""
    return (
        f'version: 1\nsource: {{url: "{mysql_url}"}}\n'
        f'target: {{url: "{mongo_url}", database: bench}}\nstate: {{database: {state_db}}}\n'
        f"collections:\n  - name: orders\n    from: orders\n{f}"
    )


def sink_side_by_side(mongo_url: str, kind: str, n: int = 10_000) -> dict[str, object]:
    """The backfill's documents written again into empty collections, both ways the sink can:
    upserts (ReplaceOne, the writer before) and insert-first (insert_many, a replace only for
    an `_id` already there). Same documents, same server, one after the other."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
    try:
        docs = list(client.bench.orders.find().limit(n))
        out: dict[str, object] = {}
        for name in ("upsert", "insert_or_replace"):
            coll = client.bench[f"sink_{name}"]
            coll.drop()
            writer = DocumentWriter(coll)
            t0 = time.perf_counter()
            for i in range(0, len(docs), 5000):
                getattr(writer, name)(docs[i : i + 5000])
            rate = len(docs) / (time.perf_counter() - t0)
            out[f"sink_{name}_docs_per_sec"] = round(rate)
            print(f"sink only, {name} of {len(docs):,} new documents into {kind}: {rate:,.0f}/s")
            coll.drop()
        return out
    finally:
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument(
        "--write-rows",
        type=int,
        default=0,
        help="rows for the real write (default: all)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    stack = start_stack()
    try:
        admin = connect(parse_mysql_url(stack.mysql_url), database=False)
        cur = admin.cursor()
        cur.execute("DROP DATABASE IF EXISTS bench")
        cur.execute("CREATE DATABASE bench")
        cur.execute("USE bench")
        cur.execute(DDL)
        t0 = time.perf_counter()
        cur.execute(FILL.format(n=args.rows))
        admin.commit()
        print(f"created {args.rows:,} rows in {time.perf_counter() - t0:.1f} s")
        url = url_with_database(stack.mysql_url, "bench")

        results: dict[str, object] = {"rows": args.rows, "mongo": stack.mongo_kind}
        n, secs = raw_pymysql_read(url)
        raw = n / secs
        results["raw_pymysql_rows_per_sec"] = round(raw)
        print(f"raw pymysql keyset read (1 connection): {raw:,.0f} rows/s")

        for workers in (1, 2):
            m = parse_mapping(mapping_text(url, stack.mongo_url, "_bench_dry"), "bench.yaml")
            s = backfill(m, workers=workers, chunk_size=5000, dry_run=True)
            results[f"dry_run_{workers}w_rows_per_sec"] = round(s.rows_per_sec)
            results[f"dry_run_{workers}w_ratio"] = round(s.rows_per_sec / raw, 2)
            print(
                f"backfill --dry-run, {workers} worker(s): {s.rows_per_sec:,.0f} rows/s "
                f"(ratio to raw read {s.rows_per_sec / raw:.2f})"
            )

        limit = min(args.write_rows or args.rows, args.rows)
        filt = None if limit == args.rows else f"id <= {limit}"
        m = parse_mapping(mapping_text(url, stack.mongo_url, "_bench_real", filt), "bench.yaml")
        s = backfill(m, workers=2, chunk_size=min(5000, max(limit // 10, 100)), restart=True)
        results["write_rows"] = s.rows
        results["write_rows_per_sec"] = round(s.rows_per_sec)
        print(
            f"real backfill into {stack.mongo_kind} ({s.rows:,} rows, 2 workers): "
            f"{s.rows_per_sec:,.0f} rows/s"
        )
        results.update(sink_side_by_side(stack.mongo_url, stack.mongo_kind))
        if args.json:
            print(json.dumps(results))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
