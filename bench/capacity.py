"""How close the tool comes to the MongoDB server's own rate for the same work, printed (not a
timed test). On a freshly started stack (MariaDB + the MongoDB server named), with an
orders/items/customers mapping (3 items embedded as an array, the customer as a sub-document):

  backfill  the whole `migrator backfill` command over ORDERS orders (4 rows each plus the
            customer) -> documents/s, beside `insert_many` of the same documents (read back
            from the target, encoded once) into an empty collection and the same secondary
            index (`customer.id`, which CDC finds documents by) built after it;
  verify    the whole `migrator verify` command over those documents -> documents/s, beside a
            sorted `_id` range read of the same documents;
  cdc       TXNS transactions (insert an order + 3 items, update the previous order's status,
            update one item of an earlier order: 6 row events each) written while CDC is
            stopped, then the whole `migrator cdc --until-caught-up` -> events/s, beside the
            same document changes as pymongo `bulk_write` (insert, `$set`, `$inc` with
            `arrayFilters`) in batches of 1,000.

`--ops` runs each stage in this process instead (backfill and verify with one worker) with
pymongo's command monitoring on, and prints the MongoDB round trips and operations per source
event, per chunk and per verified document, by database (target, state) and command.

Usage: .venv/bin/python bench/capacity.py [--orders 300000] [--txns 3000] [--stages all]
                                          [--ops]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import InsertOne, UpdateOne, monitoring

from migrator.devtools.sandbox import start_stack, url_with_database
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect

DB, STATE = "capacity", "_migrator_capacity"
DDL = [
    "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(60) NOT NULL, "
    "email VARCHAR(80) NOT NULL, city VARCHAR(40) NOT NULL)",
    "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT NOT NULL, "
    "status VARCHAR(16) NOT NULL, total DECIMAL(10,2) NOT NULL, created DATETIME NOT NULL, "
    "KEY (customer_id))",
    "CREATE TABLE order_items (id INT PRIMARY KEY, order_id INT NOT NULL, line_no INT NOT NULL, "
    "sku VARCHAR(20) NOT NULL, qty INT NOT NULL, price DECIMAL(10,2) NOT NULL, KEY (order_id))",
]
FILL = [
    "INSERT INTO customers SELECT seq, CONCAT('customer ', seq), CONCAT('c', seq, "
    "'@example.com'), ELT(1 + seq % 5, 'Lyon', 'Oslo', 'Lima', 'Pune', 'Kobe') "
    "FROM seq_1_to_{customers}",
    "INSERT INTO orders SELECT seq, 1 + seq % {customers}, 'new', seq % 1000 + 0.5, "
    "TIMESTAMP('2024-01-01') + INTERVAL seq MINUTE FROM seq_1_to_{orders}",
    "INSERT INTO order_items SELECT seq, 1 + (seq - 1) DIV 3, 1 + (seq - 1) % 3, "
    "CONCAT('SKU-', seq % 500), 1 + seq % 4, seq % 100 + 0.99 FROM seq_1_to_{items}",
]
MAPPING = """version: 1
source: {{url: "{url}"}}
target: {{url: "{mongo}", database: {db}}}
state: {{database: {state}}}
collections:
  - name: orders
    from: orders
    embed:
      - {{as: items, from: order_items, on: {{order_id: id}}, many: true, order_by: [line_no],
         exclude: [order_id]}}
      - {{as: customer, from: customers, on: {{id: customer_id}}, many: false}}
"""


class Ops(monitoring.CommandListener):
    """Round trips (commands) and operations (documents written or returned) by database
    (target | state) and command name."""

    def __init__(self) -> None:
        self.trips: Counter[str] = Counter()
        self.ops: Counter[str] = Counter()
        self.pending: dict[int, str] = {}

    def key(self, db: str, name: str) -> str:
        return f"{'state' if db == STATE else 'target' if db == DB else db}.{name}"

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("hello", "isMaster", "ping", "endSessions", "saslStart"):
            return
        k = self.key(event.database_name, event.command_name)
        self.trips[k] += 1
        cmd = event.command
        n = len(cmd.get("documents", cmd.get("updates", cmd.get("deletes", []))) or [])
        if n:
            self.ops[k] += n
        self.pending[event.request_id] = k

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        k = self.pending.pop(event.request_id, None)
        cursor = event.reply.get("cursor") if k else None
        if k and isinstance(cursor, dict):
            self.ops[k] += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.pending.pop(event.request_id, None)

    def reset(self) -> None:
        self.trips.clear()
        self.ops.clear()

    def table(self, per: float, unit: str) -> str:
        rows = [f"    {'database.command':<28}{'round trips/' + unit:>22}{'ops/' + unit:>16}"]
        for k in sorted(self.trips, key=lambda k: -self.trips[k]):
            rows.append(f"    {k:<28}{self.trips[k] / per:>22.3f}{self.ops[k] / per:>16.3f}")
        total_t, total_o = sum(self.trips.values()), sum(self.ops.values())
        rows.append(f"    {'all':<28}{total_t / per:>22.3f}{total_o / per:>16.3f}")
        return "\n".join(rows)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ops = Ops() if args.ops else None
        if self.ops:
            monitoring.register(self.ops)  # before any client: every client of this process
        self.stack = start_stack()
        self.url = url_with_database(self.stack.mysql_url, DB)
        from migrator.sink.mongo import connect as mongo_connect

        self.mongo = mongo_connect(self.stack.mongo_url)
        self.dir = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
        self.mapping = self.dir / "capacity.yaml"
        self.mapping.write_text(
            MAPPING.format(url=self.url, mongo=self.stack.mongo_url, db=DB, state=STATE)
        )
        self.results: list[tuple[str, float, float, str]] = []

    def sql(self, *statements: str) -> None:
        conn = connect(parse_mysql_url(self.url))
        cur = conn.cursor()
        for s in statements:
            cur.execute(s)
        conn.commit()
        conn.close()

    def load(self) -> None:
        conn = connect(parse_mysql_url(self.stack.mysql_url), database=False)
        conn.cursor().execute(f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
        conn.close()
        n = self.args.orders
        sizes = {"orders": n, "items": 3 * n, "customers": max(1, n // 10)}
        t0 = time.perf_counter()
        self.sql(*DDL, *(f.format(**sizes) for f in FILL))
        rows = n * 4 + sizes["customers"]
        print(f"loaded {rows:,} rows into MariaDB in {time.perf_counter() - t0:.1f} s")

    def command(self, *args: str) -> float:
        """The whole command as a user runs it (or, with --ops, in this process)."""
        t0 = time.perf_counter()
        if self.ops is None:
            p = subprocess.run(
                [sys.executable, "-m", "migrator.cli.main", *args, "-m", str(self.mapping)],
                capture_output=True,
                text=True,
                env={**os.environ, "COLUMNS": "120"},
            )
            if p.returncode != 0:
                raise SystemExit(f"{args} exited {p.returncode}:\n{p.stderr[-3000:]}")
        else:
            self._in_process(args)
        return time.perf_counter() - t0

    def _in_process(self, args: tuple[str, ...]) -> None:
        from migrator.backfill.copy import backfill
        from migrator.cdc.runner import run_cdc
        from migrator.model.settings import load_mapping
        from migrator.verify.engine import verify

        m = load_mapping(self.mapping)
        if args[0] == "backfill":
            backfill(m, workers=1)
        elif args[0] == "verify":
            assert verify(m, workers=1).ok
        else:
            run_cdc(m, mode="until-caught-up")

    def report(self, stage: str, tool: float, ref: float, unit: str) -> None:
        self.results.append((stage, tool, ref, unit))
        print(
            f"  {stage}: the tool {tool:,.0f} {unit}, the server alone {ref:,.0f} {unit}, "
            f"ratio {tool / ref:.2f}"
        )

    # -- the stages ------------------------------------------------------------------------
    def backfill(self) -> None:
        n = self.args.orders
        if self.ops:
            self.ops.reset()
        secs = self.command("backfill")
        docs = self.mongo[DB].orders.count_documents({})
        assert docs == n, (docs, n)
        if self.ops:
            chunks = self.mongo[STATE].chunks.count_documents({})
            print(f"backfill, per chunk ({chunks} chunks of {n / chunks:,.0f} documents):")
            print(self.ops.table(chunks, "chunk"))
        raw = list(
            self.mongo[DB].get_collection("orders", codec_options=_raw()).find().sort("_id", 1)
        )
        ref = self.mongo[DB].ref_orders
        ref.drop()
        t0 = time.perf_counter()
        for i in range(0, len(raw), 1000):
            ref.insert_many(raw[i : i + 1000], ordered=False)
        secs_docs = time.perf_counter() - t0
        # the same work: the documents and the indexes CDC needs (built the cheapest way)
        for idx in self.mongo[DB].orders.index_information().values():
            if idx["key"] != [("_id", 1)]:
                ref.create_index(idx["key"])
        secs_ref = time.perf_counter() - t0
        ref.drop()
        print(
            f"  (the server's insert_many alone, without the index: {len(raw) / secs_docs:,.0f}"
            f" docs/s; the index built after it: {secs_ref - secs_docs:.1f} s)"
        )
        self.report("backfill", docs / secs, len(raw) / secs_ref, "docs/s")

    def verify(self) -> None:
        n = self.args.orders
        if self.ops:
            self.ops.reset()
        secs = self.command("verify")
        if self.ops:
            print("verify, per verified document:")
            print(self.ops.table(n, "doc"))
        t0 = time.perf_counter()
        read = sum(1 for _ in self.mongo[DB].orders.find().sort("_id", 1).batch_size(1000))
        secs_ref = time.perf_counter() - t0
        self.report("verify", n / secs, read / secs_ref, "docs/s")

    def cdc(self) -> None:
        self.command("cdc", "--until-caught-up")  # the checkpoint stands at the source's end
        txns, first = self.args.txns, self.args.orders + 1
        t0 = time.perf_counter()
        self._workload(first, txns)
        print(
            f"wrote {txns:,} transactions ({6 * txns:,} row events) in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        if self.ops:
            self.ops.reset()
        secs = self.command("cdc", "--until-caught-up")
        if self.ops:
            print("cdc, per source row event:")
            print(self.ops.table(6 * txns, "event"))
        self.report("cdc", 6 * txns / secs, 6 * txns / self._cdc_reference(first, txns), "events/s")

    def _workload(self, first: int, txns: int) -> None:
        conn = connect(parse_mysql_url(self.url))
        cur = conn.cursor()
        item = 3 * (first - 1)
        for i in range(txns):
            o = first + i
            cur.execute("INSERT INTO orders VALUES (%s, %s, 'new', 9.5, NOW())", (o, 1 + o % 7))
            for line in (1, 2, 3):
                item += 1
                cur.execute(
                    "INSERT INTO order_items VALUES (%s, %s, %s, 'SKU-1', 1, 1.99)",
                    (item, o, line),
                )
            cur.execute("UPDATE orders SET status = 'paid' WHERE id = %s", (o - 1,))
            cur.execute("UPDATE order_items SET qty = qty + 1 WHERE id = %s", (3 * (o - 50),))
            conn.commit()
        conn.close()

    def _cdc_reference(self, first: int, txns: int) -> float:
        """The same document changes by bulk_write on a copy of the documents they touch."""
        ref = self.mongo[DB].ref_cdc
        ref.drop()
        before = self.mongo[DB].orders.find({"_id": {"$gte": first - 60, "$lt": first}})
        ref.insert_many(list(before))
        template = self.mongo[DB].orders.find_one({"_id": first})
        ops: list[Any] = []
        item = 3 * (first - 1)
        for i in range(txns):
            o = first + i
            doc = {**template, "_id": o}
            doc["items"] = [{**it, "id": item + k + 1} for k, it in enumerate(template["items"])]
            item += 3
            ops.append(InsertOne(doc))
            ops.append(UpdateOne({"_id": o - 1}, {"$set": {"status": "paid"}}))
            ops.append(
                UpdateOne(
                    {"_id": o - 50},
                    {"$inc": {"items.$[i].qty": 1}},
                    array_filters=[{"i.id": 3 * (o - 50)}],
                )
            )
        t0 = time.perf_counter()
        for i in range(0, len(ops), 1000):
            ref.bulk_write(ops[i : i + 1000], ordered=True)
        secs = time.perf_counter() - t0
        ref.drop()
        return secs

    def run(self) -> None:
        stages = (
            self.args.stages.split(",")
            if self.args.stages != "all"
            else ["backfill", "verify", "cdc"]
        )
        where = self.stack.mysql_url.split("@")[1]
        print(f"MongoDB server: {self.stack.mongo_kind} (fresh), MariaDB at {where}")
        self.load()
        for s in ("backfill", "verify", "cdc"):
            if s in stages or (s == "backfill" and stages):
                getattr(self, s)()
        print("\n| stage | the tool | the server alone, same work | ratio |")
        print("|---|---|---|---|")
        for stage, tool, ref, unit in self.results:
            print(f"| {stage} | {tool:,.0f} {unit} | {ref:,.0f} {unit} | {tool / ref:.2f} |")

    def close(self) -> None:
        self.mongo.close()
        self.stack.stop()


def _raw() -> Any:
    from bson.codec_options import CodecOptions

    return CodecOptions(document_class=RawBSONDocument)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=300_000)
    ap.add_argument("--txns", type=int, default=3_000)
    ap.add_argument("--stages", default="all", help="backfill,verify,cdc (backfill always runs)")
    ap.add_argument("--ops", action="store_true", help="count MongoDB operations, in process")
    bench = Bench(ap.parse_args())
    try:
        bench.run()
    finally:
        bench.close()


if __name__ == "__main__":
    main()
