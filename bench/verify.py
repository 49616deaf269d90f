"""Verification throughput, printed (not a timed test).

On a throwaway MariaDB with N rows (default 200k) of an orders-like table (and 2 items per order
for the embed case) it prints, from one run:
  1. the raw single-connection pymysql keyset read (rows/s): the baseline;
  2. a server-side BIT_XOR(CRC32(...)) chunk scan of the same table (pt-table-checksum's method,
     which can only compare MySQL with MySQL);
  3. the verification pipeline's source side: keyset read + Transform + BSON encoding (what is
     compared with the target's raw BSON), without and with an embed (rows/s, ratio to raw),
     and with the embed in 2 worker processes (`verify --workers 2`);
  4. a full `verify` against the MongoDB server the stack gives (named), on --verify-rows rows
     (the target read in one sorted `_id` scan; bench/capacity.py sets it beside the server).

Usage: .venv/bin/python bench/verify.py [--rows 200000] [--verify-rows 2000]
"""

from __future__ import annotations

import argparse
import time

import bson
import pymysql

from migrator.backfill.copy import backfill
from migrator.devtools.sandbox import start_stack, url_with_database
from migrator.model.settings import parse_mapping
from migrator.model.transform import compile_transform
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect
from migrator.source.reader import ChunkReader, chunk_bounds
from migrator.source.schema import introspect
from migrator.verify.engine import verify

DDL = [
    """CREATE TABLE orders (
      id BIGINT PRIMARY KEY, order_no VARCHAR(20) NOT NULL, customer_id INT NOT NULL,
      status ENUM('new','paid','shipped','cancelled') NOT NULL, total DECIMAL(12,2) NOT NULL,
      note VARCHAR(200) NULL, vip TINYINT(1) NOT NULL, created_at DATETIME(3) NOT NULL)""",
    """CREATE TABLE order_items (order_id BIGINT NOT NULL, line_no SMALLINT NOT NULL,
      qty INT NOT NULL, price DECIMAL(10,2) NOT NULL, PRIMARY KEY (order_id, line_no))""",
]
FILL = [
    """INSERT INTO orders SELECT seq, CONCAT('SO-', seq), 1 + seq % 50000,
       ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'), (seq % 100000) / 100,
       IF(seq % 3 = 0, NULL, CONCAT('note ', seq)), seq % 7 = 0,
       TIMESTAMP('2024-01-01') + INTERVAL seq SECOND FROM seq_1_to_{n}""",
    "INSERT INTO order_items SELECT seq, 1, 1, 9.99 FROM seq_1_to_{n}",
    "INSERT INTO order_items SELECT seq, 2, 3, 1.50 FROM seq_1_to_{n}",
]
COLS = "id, order_no, customer_id, status, total, note, vip, created_at"


def mapping_text(url: str, mongo: str, embed: bool, filt: str | None = None) -> str:
    text = (
        f'version: 1\nsource: {{url: "{url}"}}\ntarget: {{url: "{mongo}", database: vb}}\n'
        "state: {database: _bench_verify}\ncollections:\n  - name: orders\n    from: orders\n"
    )
    if filt:
        text += f'    filter: "{filt}"\n'
    if embed:
        text += (
            "    embed:\n      - {as: items, from: order_items, on: {order_id: id}, "
            "order_by: [line_no]}\n"
        )
    return text


def raw_read(url: str) -> float:
    u = parse_mysql_url(url)
    conn = pymysql.connect(
        host=u.host, port=u.port, user=u.user, password=u.password, database=u.database
    )
    cur = conn.cursor()
    t0, rows, last = time.perf_counter(), 0, 0
    while True:
        cur.execute(f"SELECT {COLS} FROM orders WHERE id > %s ORDER BY id LIMIT 5000", (last,))
        batch = cur.fetchall()
        if not batch:
            break
        rows += len(batch)
        last = batch[-1][0]
    conn.close()
    return rows / (time.perf_counter() - t0)


def crc_scan(url: str, n: int) -> float:
    conn = connect(parse_mysql_url(url))
    cur = conn.cursor()
    t0 = time.perf_counter()
    for lo in range(0, n, 5000):
        cur.execute(
            f"SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', {COLS}))) FROM orders "
            "WHERE id > %s AND id <= %s",
            (lo, lo + 5000),
        )
        cur.fetchall()
    conn.close()
    return n / (time.perf_counter() - t0)


def source_side(url: str, mongo: str, embed: bool, part: int = 0, parts: int = 1) -> float:
    """Keyset read + Transform + BSON encoding of every expected document (of every
    `parts`-th chunk from `part`: one worker's share)."""
    m = parse_mapping(mapping_text(url, mongo, embed), "bench.yaml")
    meta = connect(parse_mysql_url(url))
    plan = compile_transform(m, introspect(meta, m.source_database)).collection("orders")
    raw = connect(parse_mysql_url(url), raw=True)
    reader = ChunkReader(raw, plan)
    t0, rows = time.perf_counter(), 0
    for lo, hi in chunk_bounds(list(reader.boundaries(5000)))[part::parts]:
        batch = reader.read_rows(lo, hi)
        for d in plan.documents(batch, reader.read_embeds(batch)):
            bson.encode(d)  # what verify compares with the target's raw BSON
        rows += len(batch)
    return rows / (time.perf_counter() - t0)


def _share(args: tuple[str, str, bool, int, int]) -> tuple[float, int]:
    t0 = time.perf_counter()
    rate = source_side(*args)
    return rate, round(rate * (time.perf_counter() - t0))


def source_side_processes(url: str, mongo: str, embed: bool, workers: int) -> float:
    """The same in `workers` processes, as `verify --workers N` runs its chunks."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers) as pool:
        t0 = time.perf_counter()
        shares = pool.map(_share, [(url, mongo, embed, i, workers) for i in range(workers)])
        return sum(n for _r, n in shares) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--verify-rows", type=int, default=20_000)
    args = ap.parse_args()
    stack = start_stack()
    try:
        admin = connect(parse_mysql_url(stack.mysql_url), database=False)
        cur = admin.cursor()
        cur.execute("DROP DATABASE IF EXISTS vb")
        cur.execute("CREATE DATABASE vb")
        cur.execute("USE vb")
        for s in DDL:
            cur.execute(s)
        for s in FILL:
            cur.execute(s.format(n=args.rows))
        admin.commit()
        url = url_with_database(stack.mysql_url, "vb")
        raw = raw_read(url)
        print(f"{args.rows:,} rows. raw pymysql keyset read: {raw:,.0f} rows/s")
        crc = crc_scan(url, args.rows)
        print(f"server-side BIT_XOR(CRC32) chunk scan: {crc:,.0f} rows/s (MySQL-to-MySQL only)")
        for embed in (False, True):
            rate = source_side(url, stack.mongo_url, embed)
            label = "with 1:N embed (2 items/order)" if embed else "no embed"
            print(
                f"verify source side ({label}): {rate:,.0f} rows/s "
                f"(ratio to raw read {rate / raw:.2f})"
            )
        rate = source_side_processes(url, stack.mongo_url, True, 2)
        print(
            f"verify source side (with 1:N embed, 2 worker processes as --workers 2): "
            f"{rate:,.0f} rows/s (ratio to raw read {rate / raw:.2f})"
        )
        n = min(args.verify_rows, args.rows)
        m = parse_mapping(mapping_text(url, stack.mongo_url, True, f"id <= {n}"), "bench.yaml")
        backfill(m, workers=2, chunk_size=500, restart=True)
        t0 = time.perf_counter()
        res = verify(m, chunk_size=500)
        secs = time.perf_counter() - t0
        print(
            f"full verify against {stack.mongo_kind} ({n:,} documents with items): "
            f"{n / secs:,.0f} rows/s, clean={res.ok}"
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
