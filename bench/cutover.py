"""Write pause of the write switch and rollback time, printed (not a timed test).

With the application writing steadily through the dual-write SDK and CDC following, it walks to
read_mongo, then repeats the write switch (read_mongo -> write_mongo: freeze, CDC catches up,
recent changes re-verified, flip, unfreeze) and a rollback to read_mongo, and prints p50/p99 of
the pause (freeze set -> cleared) and of the rollback, with the MongoDB server it used.

Usage: .venv/bin/python bench/cutover.py [--rounds 10] [--rate 10]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from migrator.backfill import backfill
from migrator.cdc.runner import run_cdc
from migrator.config import parse_mapping
from migrator.cutover.machine import Machine
from migrator.cutover.playbook import Defaults, default_playbook
from migrator.cutover.sdk import DualWriter
from migrator.sandbox import start_stack, url_with_database
from migrator.shop import AppLoad, create_shop, shop_mapping
from migrator.source.connection import connect
from migrator.urls import parse_mysql_url
from migrator.verify.engine import verify


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s)) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--rate", type=float, default=10.0, help="application transactions per second")
    args = ap.parse_args()
    stack = start_stack()
    stop_app, stop_cdc = threading.Event(), threading.Event()
    try:
        admin = connect(parse_mysql_url(stack.mysql_url), database=False)
        create_shop(admin, "shop", customers=20, products=5, orders=100)
        mapping = parse_mapping(
            shop_mapping(url_with_database(stack.mysql_url, "shop"), stack.mongo_url), "bench.yaml"
        )
        backfill(mapping, workers=1)
        pb = default_playbook()
        pb.defaults = Defaults(reverify_window_minutes=1)
        machine = Machine(mapping, pb, actor="bench")
        sdk = DualWriter(mapping, control_ttl=0.1)
        app = AppLoad(sdk, customers=20)

        def run_app() -> None:
            while not stop_app.is_set():
                app.step()
                time.sleep(1 / args.rate)

        cdc = threading.Thread(target=lambda: run_cdc(mapping, mode="follow", stop=stop_cdc))
        cdc.start()
        writer = threading.Thread(target=run_app)
        writer.start()
        time.sleep(2)
        verify(mapping, recheck=10)
        for _ in range(4):  # -> backfill, sync, dual_write, read_mongo
            machine.step(None, reason="bench", force=True)
        pauses, rollbacks = [], []
        for _ in range(args.rounds):
            verify(mapping, since=None, changed=True, recheck=5)
            res = machine.step("write_mongo", reason="bench", force=True)
            pauses.append(res.write_pause_ms or 0.0)
            t0 = time.perf_counter()
            machine.rollback("read_mongo", reason="bench")
            rollbacks.append((time.perf_counter() - t0) * 1000)
        stop_app.set()
        writer.join()
        print(
            f"MongoDB server: {stack.mongo_kind}; application {args.rate:g} txn/s through the "
            f"SDK ({app.writes} writes, {app.retries} retried during freezes)"
        )
        print(
            f"write pause over {len(pauses)} switches: p50 {statistics.median(pauses):.0f} ms, "
            f"p99 {pct(pauses, 99):.0f} ms, max {max(pauses):.0f} ms"
        )
        print(
            f"rollback write_mongo -> read_mongo: p50 {statistics.median(rollbacks):.0f} ms, "
            f"p99 {pct(rollbacks, 99):.0f} ms"
        )
        stop_cdc.set()
        cdc.join()
        sdk.close()
        machine.close()
    finally:
        stop_app.set()
        stop_cdc.set()
        stack.stop()


if __name__ == "__main__":
    main()
