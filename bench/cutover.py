"""Write pause of the write switch, rollback time and the outage after a killed switch, printed
(not a timed test).

The shop application writes steadily through the dual-write SDK (`--writers` processes, each
with its own DualWriter, default settings, `--rate` writes/s in all), `migrator cdc --follow`
and `migrator verify --follow` run as their own processes, as DESIGN.md's runbook has it.
The bench walks to read_mongo, then repeats the
write switch (read_mongo -> write_mongo: fence, catch-up, re-verify of what changed since the
last clean pass, flip) and the rollback to read_mongo (waits for reverse lag 0, fenced flip
back). It prints, with the MongoDB server used:

- the write rate the application reached, and its write latency p50/p99 outside switches;
- the write pause (freeze set -> cleared, as the switch measures it) p50/p99/max, and the
  longest wait any application write saw during a switch;
- the rollback time (command start -> done) p50/p99;
- the outage after a switch is killed with SIGKILL during catch-up: how long application
  writes waited with nobody running a command (bounded by the freeze timeout, 10 s default).

Usage: .venv/bin/python bench/cutover.py [--rounds 10] [--rate 200] [--writers 4]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from migrator.backfill.copy import backfill
from migrator.cutover.gates import cdc_lag_seconds
from migrator.cutover.machine import Machine
from migrator.cutover.playbook import default_playbook
from migrator.cutover.sdk import DualWriter
from migrator.devtools.sandbox import start_stack, url_with_database
from migrator.devtools.shop import AppLoad, create_shop, shop_mapping
from migrator.errors import CheckFailed
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect
from migrator.verify.engine import verify

REPO = Path(__file__).resolve().parent.parent


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s)) - 1))] if s else 0.0


class Timed:
    """The SDK as the application sees it: every successful write's start and duration."""

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


def writer_process(path: str, idx: int, rate: float, out: Any, stop: Any) -> None:
    """One application process: its own SDK (default settings), `rate` writes/s, its write
    log sent back in batches (CLOCK_MONOTONIC is the same clock in every process)."""
    sdk = DualWriter(load_mapping(path))
    log: list[tuple[float, float]] = []
    app = AppLoad(Timed(sdk, log), first_order=3_000_000 + idx * 1_000_000, seed=idx)
    t_next = sent = time.monotonic()
    while not stop.is_set():
        before = app.writes
        app.step()
        t_next += (app.writes - before) / rate
        time.sleep(max(0.0, t_next - time.monotonic()))
        if time.monotonic() - sent > 0.2:
            out.put((idx, log[:]))
            log.clear()
            sent = time.monotonic()
    out.put((idx, log[:]))
    sdk.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    ap.add_argument("--writers", type=int, default=4, help="application processes (one SDK each)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds of writes first")
    ap.add_argument("--no-kill", action="store_true", help="skip the killed-switch outage")
    args = ap.parse_args()
    stack = start_stack()
    ctx = mp.get_context("spawn")
    stop_app = ctx.Event()
    queue = ctx.Queue()
    procs: list[Any] = []
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
        cli = [sys.executable, "-m", "migrator.cli.main"]

        def start(*a: str) -> None:
            procs.append(
                subprocess.Popen(
                    [*cli, *a], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )

        start("cdc", "-m", str(path), "--follow")
        logs: list[list[tuple[float, float]]] = [[] for _ in range(args.writers)]
        writers = [
            ctx.Process(
                target=writer_process,
                args=(str(path), i, args.rate / args.writers, queue, stop_app),
            )
            for i in range(args.writers)
        ]
        for w in writers:
            w.start()

        def collect() -> None:
            while True:
                item = queue.get()
                if item is None:
                    return
                logs[item[0]].extend(item[1])

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        verify(mapping, recheck=10)
        for _ in range(4):  # -> backfill, sync, dual_write, read_mongo
            machine.step(None, reason="bench", force=True)
        start("verify", "-m", str(path), "--follow", "--settle", "1")
        mongo_pid = next(p.pid for p in stack.procs if p.name not in ("mariadb", "mysql"))
        time.sleep(args.warmup / 2)
        cpu0, wall0 = cpu_seconds(mongo_pid), time.monotonic()
        time.sleep(args.warmup / 2)
        server_cpu = (cpu_seconds(mongo_pid) - cpu0) / (time.monotonic() - wall0)
        t_w0 = time.monotonic()
        half = t_w0 - args.warmup / 2
        steady_rate = sum(1 for log in logs for s, _ in list(log) if s >= half) / (t_w0 - half)
        w0 = sum(len(log) for log in logs)
        steady = [d for log in logs for s, d in list(log) if s >= t_w0 - args.warmup / 2]
        pauses, waits, rollbacks, back_pauses = [], [], [], []
        gated_pauses: list[float] = []  # switches taken with the lag gate held
        stages: dict[str, list[float]] = {}
        surveys: list[float] = []
        state = machine.state
        gate_waits: list[float] = []
        forced = 0
        refused: list[str] = []
        for _ in range(args.rounds):
            time.sleep(2)
            # as the standard playbook's cdc_lag gate for the write switch has it (< 1 s);
            # the other gates (verification, dead letters) hold from the setup above
            g0 = time.monotonic()
            gated = True
            while (lag := cdc_lag_seconds(mapping, state)) is None or lag >= 1.0:
                if time.monotonic() - g0 > 120:
                    forced += 1  # CDC cannot keep up at this rate: switch anyway, counted
                    gated = False
                    break
                time.sleep(0.1)
            gate_waits.append(time.monotonic() - g0)
            t0 = time.monotonic()
            try:
                res = machine.step("write_mongo", reason="bench", force=True)
            except CheckFailed as exc:  # the switch gave up and stayed: writes went on
                refused.append(str(exc))
                continue
            pauses.append(res.write_pause_ms or 0.0)
            if gated:
                gated_pauses.append(res.write_pause_ms or 0.0)
            for k, ms in (res.pause_stages or {}).items():
                stages.setdefault(k, []).append(ms)
            time.sleep(2)
            waits.append(longest_stall(logs, t0))
            t1 = time.monotonic()
            rb = machine.rollback("read_mongo", reason="bench")
            rollbacks.append((time.monotonic() - t1) * 1000)
            surveys.append((rb.fence or {}).get("survey", 0.0) * 1000)
            back_pauses.append(rb.write_pause_ms or 0.0)
        rate = (sum(len(log) for log in logs) - w0) / (time.monotonic() - t_w0)
        outage = None if args.no_kill else killed_switch_outage(path, logs)
        stop_app.set()
        for w in writers:
            w.join(timeout=60)
        queue.put(None)
        collector.join(timeout=10)
        print(
            f"MongoDB server: {stack.mongo_kind}; {args.writers} application processes (one SDK "
            f"each, default settings); {rate:.0f} writes/s reached over the switches "
            f"(asked {args.rate:g}); `cdc --follow` and `verify --follow` running"
        )
        print(
            f"application outside switches: {steady_rate:.0f} writes/s, write latency p50 "
            f"{statistics.median(steady) * 1000:.0f} ms, p99 {pct(steady, 99) * 1000:.0f} ms; "
            f"the MongoDB server process used {server_cpu * 100:.0f}% of a core meanwhile"
        )
        print(
            f"write pause over {len(pauses)} switches (freeze set -> cleared): p50 "
            f"{statistics.median(pauses):.0f} ms, p99 {pct(pauses, 99):.0f} ms, max "
            f"{max(pauses):.0f} ms; longest application wait {max(waits) * 1000:.0f} ms "
            f"(each switch taken once CDC lag < 1 s, the playbook's gate: waited p50 "
            f"{statistics.median(gate_waits):.1f} s; {forced} taken after 120 s without it)"
        )
        if forced and gated_pauses:
            print(
                f"  the {len(gated_pauses)} switches taken with the gate held: pause p50 "
                f"{statistics.median(gated_pauses):.0f} ms, p99 {pct(gated_pauses, 99):.0f} ms"
            )
        if refused:
            print(f"  {len(refused)} switch(es) gave up and stayed in read_mongo: {refused[0]}")
        print(
            "  where the pause goes (p50 / max ms): "
            + ", ".join(f"{k} {statistics.median(v):.0f} / {max(v):.0f}" for k, v in stages.items())
        )
        print(
            f"rollback write_mongo -> read_mongo (reverse lag drained, fenced flip back): p50 "
            f"{statistics.median(rollbacks):.0f} ms, p99 {pct(rollbacks, 99):.0f} ms; its "
            f"write pause p50 {statistics.median(back_pauses):.0f} ms, "
            f"p99 {pct(back_pauses, 99):.0f} ms; telling live writers from dead ones before "
            f"the freeze p50 {statistics.median(surveys):.0f} ms"
        )
        if outage is not None:
            print(
                f"switch killed (SIGKILL) during catch-up: application writes waited "
                f"{outage:.1f} s with no operator action (freeze timeout "
                f"{pb.defaults.freeze_timeout_seconds:g} s)"
            )
        machine.close()
    finally:
        stop_app.set()
        for pr in procs:
            pr.terminate()
            pr.wait(timeout=60)
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
