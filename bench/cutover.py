"""Write pause of the write switch, rollback time and the outage after a killed switch, printed
(not a timed test).

The shop application writes steadily through the dual-write SDK (`--threads` threads, each
with its own DualWriter as separate application processes would have, default settings,
`--rate` writes/s in all), CDC follows and `verify --follow` re-verifies what
CDC touched, as DESIGN.md's runbook has it. The bench walks to read_mongo, then repeats the
write switch (read_mongo -> write_mongo: fence, catch-up, re-verify of what changed since the
last clean pass, flip) and the rollback to read_mongo (waits for reverse lag 0, fenced flip
back). It prints, with the MongoDB server used:

- the write rate the application reached, and its write latency p50/p99 outside switches;
- the write pause (freeze set -> cleared, as the switch measures it) p50/p99/max, and the
  longest wait any application write saw during a switch;
- the rollback time (command start -> done) p50/p99;
- the outage after a switch is killed with SIGKILL during catch-up: how long application
  writes waited with nobody running a command (bounded by the freeze timeout, 10 s default).

Usage: .venv/bin/python bench/cutover.py [--rounds 10] [--rate 200] [--threads 4]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from migrator.backfill import backfill
from migrator.cdc.runner import run_cdc
from migrator.config import load_mapping
from migrator.cutover.machine import Machine
from migrator.cutover.playbook import default_playbook
from migrator.cutover.sdk import DualWriter
from migrator.sandbox import start_stack, url_with_database
from migrator.shop import AppLoad, create_shop, shop_mapping
from migrator.source.connection import connect
from migrator.urls import parse_mysql_url
from migrator.verify.engine import follow, verify

REPO = Path(__file__).resolve().parent.parent


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s)) - 1))] if s else 0.0


class Timed:
    """The SDK as the application sees it: every write's start and duration recorded."""

    def __init__(self, sdk: DualWriter, log: list[tuple[float, float]]) -> None:
        self.sdk, self.log = sdk, log

    def _timed(self, fn: Any, *a: Any) -> Any:
        t0 = time.monotonic()
        out = fn(*a)  # a frozen write raises; the application retries it (AppLoad)
        self.log.append((t0, time.monotonic() - t0))
        return out

    def insert(self, *a: Any) -> Any:
        return self._timed(self.sdk.insert, *a)

    def update(self, *a: Any) -> Any:
        return self._timed(self.sdk.update, *a)

    def delete(self, *a: Any) -> Any:
        return self._timed(self.sdk.delete, *a)

    def get(self, *a: Any) -> Any:
        return self.sdk.get(*a)


def longest_stall(logs: list[list[tuple[float, float]]], since: float) -> float:
    """The longest time any application thread went without completing a write, from the
    last write it completed before `since` on (a frozen write retried counts as one wait)."""
    worst = 0.0
    for log in logs:
        ends = sorted(s + d for s, d in list(log))
        before = [e for e in ends if e < since]
        after = [e for e in ends if e >= since]
        points = before[-1:] + after
        worst = max([worst] + [b - a for a, b in itertools.pairwise(points)])
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--rate", type=float, default=200.0, help="application writes per second")
    ap.add_argument("--threads", type=int, default=4, help="application writers (one SDK each)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds of writes first")
    ap.add_argument("--no-kill", action="store_true", help="skip the killed-switch outage")
    args = ap.parse_args()
    stack = start_stack()
    stop_app, stop_cdc, stop_verify = threading.Event(), threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-cutover-"))
    try:
        admin = connect(parse_mysql_url(stack.mysql_url), database=False)
        create_shop(admin, "shop", customers=50, products=10, orders=2000)
        path = tmp / "mapping.yaml"
        path.write_text(shop_mapping(url_with_database(stack.mysql_url, "shop"), stack.mongo_url))
        mapping = load_mapping(path)
        backfill(mapping, workers=2)
        pb = default_playbook()
        machine = Machine(mapping, pb, actor="bench")
        sdks = [DualWriter(mapping) for _ in range(args.threads)]  # default settings
        logs: list[list[tuple[float, float]]] = [[] for _ in range(args.threads)]
        apps = [
            AppLoad(Timed(sdks[i], logs[i]), first_order=3_000_000 + i * 1_000_000, seed=i)
            for i in range(args.threads)
        ]
        per_thread = args.rate / args.threads

        def run_app(app: AppLoad) -> None:
            t_next = time.monotonic()
            while not stop_app.is_set():
                before = app.writes
                app.step()
                t_next += (app.writes - before) / per_thread
                time.sleep(max(0.0, t_next - time.monotonic()))

        cdc = threading.Thread(target=lambda: run_cdc(mapping, mode="follow", stop=stop_cdc))
        cdc.start()
        threads.append(cdc)
        for a in apps:
            t = threading.Thread(target=run_app, args=(a,))
            t.start()
            threads.append(t)
        verify(mapping, recheck=10)
        for _ in range(4):  # -> backfill, sync, dual_write, read_mongo
            machine.step(None, reason="bench", force=True)
        vf = threading.Thread(
            target=lambda: follow(
                mapping, settle_seconds=1.0, stop=stop_verify, on_pass=lambda r: None
            )
        )
        vf.start()
        time.sleep(args.warmup)
        w0, t_w0 = sum(a.writes for a in apps), time.monotonic()
        steady = [d for log in logs for s, d in list(log) if s >= t_w0 - args.warmup / 2]
        pauses, waits, rollbacks, back_pauses = [], [], [], []
        for _ in range(args.rounds):
            time.sleep(2)
            t0 = time.monotonic()
            res = machine.step("write_mongo", reason="bench", force=True)
            pauses.append(res.write_pause_ms or 0.0)
            time.sleep(2)
            waits.append(longest_stall(logs, t0))
            t1 = time.monotonic()
            rb = machine.rollback("read_mongo", reason="bench")
            rollbacks.append((time.monotonic() - t1) * 1000)
            back_pauses.append(rb.write_pause_ms or 0.0)
        writes = sum(a.writes for a in apps) - w0
        rate = writes / (time.monotonic() - t_w0)
        outage = None if args.no_kill else killed_switch_outage(path, logs)
        stop_app.set()
        print(
            f"MongoDB server: {stack.mongo_kind}; {args.threads} application writers (one SDK "
            f"each, default settings); {rate:.0f} writes/s reached during the switches "
            f"(asked {args.rate:g}); CDC and verify --follow running"
        )
        print(
            "application write latency outside switches: p50 "
            f"{statistics.median(steady) * 1000:.0f} ms, p99 {pct(steady, 99) * 1000:.0f} ms"
        )
        print(
            f"write pause over {len(pauses)} switches (freeze set -> cleared): p50 "
            f"{statistics.median(pauses):.0f} ms, p99 {pct(pauses, 99):.0f} ms, max "
            f"{max(pauses):.0f} ms; longest application wait {max(waits) * 1000:.0f} ms"
        )
        print(
            f"rollback write_mongo -> read_mongo (reverse lag drained, fenced flip back): p50 "
            f"{statistics.median(rollbacks):.0f} ms, p99 {pct(rollbacks, 99):.0f} ms; its "
            f"write pause p50 {statistics.median(back_pauses):.0f} ms, "
            f"p99 {pct(back_pauses, 99):.0f} ms"
        )
        if outage is not None:
            print(
                f"switch killed (SIGKILL) during catch-up: application writes waited "
                f"{outage:.1f} s with no operator action (freeze timeout "
                f"{pb.defaults.freeze_timeout_seconds:g} s)"
            )
        for sdk in sdks:
            sdk.close()
        machine.close()
    finally:
        stop_app.set()
        stop_verify.set()
        stop_cdc.set()
        for t in threads:
            t.join(timeout=30)
        stack.stop()


def killed_switch_outage(path: Path, logs: list[list[tuple[float, float]]]) -> float:
    """Start `migrator cutover --to write_mongo` held at catch-up, kill it with SIGKILL once
    writes are frozen, and return how long application writes then waited."""
    env = {**os.environ, "MIGRATOR_FAULT_PAUSE": "catch_up:120"}
    cmd = [sys.executable, "-m", "migrator.cli.main", "cutover", "-m", str(path),
           "--to", "write_mongo", "--force", "--reason", "bench: killed switch", "--yes",
           "--json"]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    from pymongo import MongoClient

    m = load_mapping(path)
    client: Any = MongoClient(m.target.url)
    ctl = client[m.state.database].control
    try:
        deadline = time.monotonic() + 120
        while ((ctl.find_one({"_id": "control"}) or {}).get("switch") or {}).get(
            "stage"
        ) != "catch_up":
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("bench: the switch never reached catch-up")
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        # wait until every thread has completed a write that started after the kill
        killed = time.monotonic()
        while True:
            ok = all(any(s >= killed for s, _ in list(log)[-50:]) for log in logs)
            if ok or time.monotonic() - killed > 60:
                break
            time.sleep(0.05)
        return longest_stall(logs, started)
    finally:
        client.close()


if __name__ == "__main__":
    main()
