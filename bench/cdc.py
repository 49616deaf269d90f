"""CDC throughput and lag, printed (not a timed test).

On a throwaway MariaDB (orders + order_items, items embedded in orders) it prints, from one run:
  1. the raw binlog decode rate of python-mysql-replication over a burst of row changes;
  2. `cdc --dry-run --until-caught-up` over the same burst: applied rows/s (decode, normalise,
     Transform, operations built; no sink) and its ratio to the raw decode rate, with rows
     decoded in the CDC process (--decoders 0) and by the default decoder processes;
  3. under a steady write load of 1k, 2k and 5k rows/s while CDC follows (dry run, so the sink
     is not the bottleneck): the achieved write rate, applied rows/s, and p50/p99 lag
     (commit -> applied, from a timestamp each transaction writes);
  4. a real apply into the MongoDB server the stack gives (named), on a small burst;
  5. one transaction of many single-row statements (an ORM flushing row by row): how long a
     catch-up takes to apply it, in the CDC process and with decoder processes (the reader's
     pieces repeat each table's map once, so this grows with the statements, not faster;
     test_cdc_parallel_decode.py checks the bytes handed on).

Usage: .venv/bin/python bench/cdc.py [--burst 40000] [--seconds 10] [--rates 1000,2000,5000]
                                     [--statements 20000]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

import migrator.cdc.runner as runner
from migrator.backfill.copy import backfill
from migrator.cdc.applier import Applier
from migrator.cdc.binlog_parallel import default_decoders
from migrator.devtools.sandbox import start_stack, url_with_database
from migrator.devtools.shop import create_shop, shop_mapping
from migrator.model.settings import parse_mapping
from migrator.model.urls import parse_mysql_url
from migrator.sink.mongo import connect as mongo_connect
from migrator.source.connection import connect
from migrator.source.position import current_position
from migrator.state.store import StateStore

ROWS_PER_TXN = 10  # 1 order + 4 items inserted, 4 items updated, 1 order deleted


class Writer:
    """Transactions of ROWS_PER_TXN row changes; each stamps its commit time in orders.note."""

    def __init__(self, url: str, first_id: int, items: int = 4) -> None:
        self.conn = connect(parse_mysql_url(url))
        self.next_id = first_id
        self.items = items
        self.rows = 0

    def txn(self) -> None:
        o = self.next_id
        self.next_id += 1
        cur = self.conn.cursor()
        cur.execute("START TRANSACTION")
        rows = 0
        for sql, args in (
            (
                "INSERT INTO orders (id, order_no, customer_id, status, total, note, created_at) "
                "VALUES (%s, %s, 1, 'new', 10.00, %s, NOW())",
                (o, f"B{o}", f"{time.time():.6f}"),
            ),
            (
                "INSERT INTO order_items VALUES "
                + ",".join(f"(%s,{i},{1 + i % 10},1,1.00)" for i in range(1, self.items + 1)),
                (o,) * self.items,
            ),
            ("UPDATE order_items SET qty = qty + 1 WHERE order_id = %s", (o - 1,)),
            ("DELETE FROM orders WHERE id = %s", (o - 3,)),
        ):
            cur.execute(sql, args)
            rows += max(cur.rowcount, 0)  # rows the binlog will carry (cascades are not)
        cur.execute("COMMIT")
        self.rows += rows


def raw_decode(url: str, position: dict[str, Any], expected_rows: int) -> float:
    u = parse_mysql_url(url)
    stream = BinLogStreamReader(
        connection_settings={"host": u.host, "port": u.port, "user": u.user, "passwd": u.password},
        server_id=99_001,
        blocking=True,
        is_mariadb=True,
        auto_position=position["gtid"],
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        only_schemas=[u.database],
    )
    t0, rows = time.perf_counter(), 0
    for ev in stream:
        rows += len(ev.rows)
        if rows >= expected_rows:
            break
    stream.close()
    return rows / (time.perf_counter() - t0)


def steady(rate: int, seconds: float, url: str, admin: Any, mapping: Any, state: Any) -> None:
    """Write `rate` rows/s for `seconds` while CDC follows (dry run); print lag p50/p99."""
    lags: list[float] = []

    class Measured(Applier):
        def apply(self, txns: Any) -> Any:
            res = super().apply(txns)
            done = time.time()
            for t in txns:
                for e in t.events:
                    if e.table == "orders" and e.op == "insert" and e.after:
                        lags.append(done - float(e.after["note"]))
            return res

    runner.Applier = Measured  # type: ignore[misc]
    state.meta.delete_many({})
    state.record_backfill_position(current_position(admin))
    stop = threading.Event()
    result: dict[str, Any] = {}

    def follow() -> None:
        result["s"] = runner.run_cdc(mapping, mode="follow", stop=stop, dry_run=True)

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(1.5)
    # bigger transactions at higher rates: one Python writer cannot commit 500 per second
    w = Writer(url, 100_000 * rate, items=4 if rate <= 1000 else 20)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        w.txn()
        ahead = w.rows / rate - (time.perf_counter() - t0)
        if ahead > 0:
            time.sleep(ahead)
    achieved = w.rows / (time.perf_counter() - t0)
    time.sleep(1.5)
    stop.set()
    t.join()
    runner.Applier = Applier  # type: ignore[misc]
    lags.sort()
    p50 = statistics.median(lags) if lags else float("nan")
    p99 = lags[max(int(len(lags) * 0.99) - 1, 0)] if lags else float("nan")
    print(
        f"steady load {rate:,} rows/s: achieved {achieved:,.0f} rows/s, CDC applied "
        f"{result['s'].events:,} rows, lag p50 {p50 * 1000:.0f} ms p99 {p99 * 1000:.0f} ms"
    )


def many_statements(admin: Any, url: str, stack: Any, n: int) -> None:
    cur = admin.cursor()
    cur.execute("CREATE DATABASE bench_many")
    cur.execute("CREATE TABLE bench_many.t (id INT PRIMARY KEY, v INT)")
    cur.execute(
        "CREATE PROCEDURE bench_many.fill(n INT) BEGIN DECLARE i INT DEFAULT 0; "
        "START TRANSACTION; WHILE i < n DO INSERT INTO bench_many.t VALUES (i, i); "
        "SET i = i + 1; END WHILE; COMMIT; END"
    )
    murl = url_with_database(stack.mysql_url, "bench_many")
    mapping = parse_mapping(
        f'version: 1\nsource: {{url: "{murl}"}}\n'
        f'target: {{url: "{stack.mongo_url}", database: bench_many}}\n'
        "state: {database: _bench_many}\ncollections:\n  - {name: t, from: t}\n",
        "many.yaml",
    )
    state = StateStore(mongo_connect(stack.mongo_url), "_bench_many")
    backfill(mapping, workers=1)  # records where CDC starts: before the transaction
    cur.execute(f"CALL bench_many.fill({n})")
    admin.commit()
    for decoders in (0, default_decoders()):
        # each run applies the whole transaction from the backfill's position
        state.meta.delete_many({"_id": {"$in": ["cdc_checkpoint", "cdc_status"]}})
        s = runner.run_cdc(mapping, mode="until-caught-up", decoders=decoders)
        print(
            f"one transaction of {n:,} statements, {decoders} decoder process(es): applied "
            f"{s.events:,} events in {s.seconds:.1f} s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--burst", type=int, default=40_000, help="row changes in the burst")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each steady load")
    ap.add_argument("--rates", default="1000,2000,5000")
    ap.add_argument("--real-txns", type=int, default=1000, help="transactions for the real apply")
    ap.add_argument(
        "--statements", type=int, default=20_000, help="statements of the one big transaction"
    )
    args = ap.parse_args()

    stack = start_stack()
    try:
        admin = connect(parse_mysql_url(stack.mysql_url), database=False)
        create_shop(admin, "bench", customers=50, products=20, orders=10)
        url = url_with_database(stack.mysql_url, "bench")
        mapping = parse_mapping(
            shop_mapping(url, stack.mongo_url, target_db="bench", state_db="_bench_cdc"),
            "bench.yaml",
        )
        state = StateStore(mongo_connect(stack.mongo_url), "_bench_cdc")
        print(f"MariaDB {admin.get_server_info()}, MongoDB server: {stack.mongo_kind}")

        # 1 + 2: a burst, decoded raw and by CDC (dry run)
        pos = current_position(admin)
        w = Writer(url, 1000)
        for _ in range(args.burst // ROWS_PER_TXN):
            w.txn()
        raw = raw_decode(url, pos, w.rows)
        print(f"raw python-mysql-replication decode: {raw:,.0f} rows/s ({w.rows:,} row changes)")
        for decoders in (0, default_decoders()):
            state.reset_backfill()
            state.record_backfill_position(pos)
            s = runner.run_cdc(mapping, mode="until-caught-up", dry_run=True, decoders=decoders)
            how = (
                "rows decoded in the CDC process"
                if not decoders
                else f"{decoders} decoder process(es) beside it"
            )
            print(
                f"cdc --dry-run catch-up, {how}: {s.events:,} events in {s.seconds:.1f} s = "
                f"{s.events_per_sec:,.0f} rows/s (ratio to raw decode "
                f"{s.events_per_sec / raw:.2f})"
            )

        # 3: steady load while following, lag measured per transaction
        for rate in [int(r) for r in args.rates.split(",")]:
            steady(rate, args.seconds, url, admin, mapping, state)

        # 4: a real sink
        state.meta.delete_many({})
        backfill(mapping, workers=1, restart=True)
        w = Writer(url, 900_000)
        for _ in range(args.real_txns):
            w.txn()
        s = runner.run_cdc(mapping, mode="until-caught-up")
        print(
            f"real apply into {stack.mongo_kind}: {s.events} events in {s.seconds:.1f} s = "
            f"{s.events_per_sec:,.0f} events/s"
        )

        # 5: one transaction of many statements (a procedure looping, one INSERT each)
        many_statements(admin, url, stack, args.statements)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
