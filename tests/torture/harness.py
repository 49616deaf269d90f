"""The convergence harness: a seeded schema, a seeded write load, seeded faults, real servers,
and at the end an independent oracle. One seed is one run; a failing seed prints the command
that replays it.

    .venv/bin/python -m tests.torture.harness --seed 7 [--seconds 20] [--source debezium]
    make torture SEED=7 MINUTES=30     # seeds from SEED on, until MINUTES have passed

Faults (chosen by the seed, at seeded moments while the application writes): kill -9 of the
backfill, of CDC and of verify; a MariaDB restart; a binlog rotation; the MongoDB server killed
and restarted; CDC started before, during or after the backfill; a DDL that adds a column.
Every process is supervised as a service manager would: one that dies is started again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from migrator.devtools.sandbox import (
    Stack,
    restart_mongo,
    restart_mysql,
    start_stack,
    url_with_database,
)
from tests.integration.bridge_streaming import wait_until_streaming

from . import oracle
from .model import Model, generate
from .workload import Workload

REPO = Path(__file__).resolve().parents[2]
FAULTS = [
    "kill_backfill",
    "kill_cdc",
    "restart_mysql",
    "rotate_binlog",
    "restart_mongo",
    "kill_verify",
    "ddl",
]


@dataclass
class Result:
    seed: int
    source: str
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    cdc_start: str = ""
    writes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    replay: str = ""

    def summary(self) -> str:
        head = (
            f"seed {self.seed} ({self.source}): {'clean' if self.ok else 'FAILED'} in "
            f"{self.seconds:.0f} s; CDC started {self.cdc_start}; faults {self.faults or 'none'}; "
            f"writes {self.writes}"
        )
        if self.ok:
            return head
        return head + "\n  " + "\n  ".join(self.problems) + f"\n  replay: {self.replay}"


class Service:
    """A migrator command run as a process, restarted when it dies (until stopped)."""

    def __init__(self, name: str, args: list[str], logdir: Path, restart: bool = True) -> None:
        self.name, self.args, self.logdir, self.restart = name, args, logdir, restart
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exits: list[int] = []

    def start(self) -> None:
        self.starts += 1
        log = open(self.logdir / f"{self.name}.{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "migrator.cli.main", *self.args],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def supervise(self) -> None:
        code = self.poll()
        if code is not None and self.proc is not None:
            self.exits.append(code)
            self.proc = None
            if self.restart and code != 0:
                self.start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.exits.append(-9)
            self.proc = None

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def last_log(self, lines: int = 15) -> str:
        path = self.logdir / f"{self.name}.{self.starts}.log"
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def migrator(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "migrator.cli.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def run_seed(
    seed: int,
    *,
    source: str = "binlog",
    seconds: float = 12.0,
    stack: Stack | None = None,
    say: Any = print,
    keep: bool = False,
    nested: bool | None = None,
) -> Result:
    """One seeded run; a given stack is shared (for Debezium: one started with Kafka and a
    Debezium-compatible MariaDB; a stack without Kafka is not used for it)."""
    res = Result(seed, source)
    res.replay = (
        f".venv/bin/python -m tests.torture.harness --seed {seed} --seconds {seconds:g}"
        + (" --source debezium" if source == "debezium" else "")
        + ("" if nested is None else (" --nested" if nested else " --flat"))
    )
    rnd = random.Random(seed * 7919 + 1)
    model = generate(seed, nested)
    faults = [f for f in FAULTS if rnd.random() < 0.45]
    if source == "debezium":
        # the connector owns its own position: restarts and DDL are out of its scope here
        faults = [f for f in faults if f not in ("restart_mysql", "ddl")]
    own = stack is None or (source == "debezium" and not stack.kafka_bootstrap)
    if own:
        stack = start_stack(
            with_kafka=source == "debezium",
            debezium_compatible=source == "debezium",
            mongo_sync_on_commit=True,
        )
    assert stack is not None
    # servers given from outside (URLs in the environment) are not ours to restart
    names = {p.name for p in stack.procs}
    if not names & {"mariadb", "mysql"}:
        faults = [f for f in faults if f != "restart_mysql"]
    if not names & {"secantusdb", "mongod"}:
        faults = [f for f in faults if f != "restart_mongo"]
    res.faults = list(faults)
    t0 = time.monotonic()
    db = f"tort_{seed}_{os.getpid() % 10000}"
    logdir = Path(tempfile.mkdtemp(prefix=f"torture-{seed}-"))
    mongo: MongoClient[Any] = MongoClient(stack.mongo_url, tz_aware=False)
    mapping = logdir / "mapping.yaml"
    services: list[Service] = []
    bridge = None
    try:
        admin = oracle.connect(url_with_database(stack.mysql_url, ""))
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
            cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
        admin.close()
        url = url_with_database(stack.mysql_url, db)
        load = Workload(url, model, seed)
        load.create()
        load.load(per_root=int(rnd.uniform(20, 60)))
        mapping.write_text(model.mapping_yaml(url, stack.mongo_url, db, f"_state_{db}"))
        plan = migrator("plan", "-m", str(mapping), "--json")
        if plan.returncode != 0:
            res.problems.append(f"plan refused the generated mapping:\n{plan.stdout[-1500:]}")
            return res
        if source == "debezium":
            bridge = _start_bridge(stack, db, logdir)
            cdc_args = [
                "cdc",
                "-m",
                str(mapping),
                "--follow",
                "--source",
                "debezium",
                "--kafka-bootstrap",
                str(stack.kafka_bootstrap),
                "--topic-prefix",
                "dbz",
                "--group",
                f"torture-{seed}",
            ]
        else:
            cdc_args = ["cdc", "-m", str(mapping), "--follow", "--on-ddl", "extend"]
        backfill = Service(
            "backfill",
            [
                "backfill",
                "-m",
                str(mapping),
                "--json",
                "--max-rows-per-sec",
                str(rnd.choice([300, 800, 3000])),
            ],
            logdir,
        )
        cdc = Service("cdc", cdc_args, logdir)
        verify = Service("verify", ["verify", "-m", str(mapping), "--json"], logdir, restart=False)
        services += [backfill, cdc, verify]
        stop = threading.Event()
        writer = threading.Thread(target=load.run, args=(stop,), daemon=True)
        writer.start()
        res.cdc_start = rnd.choice(["before the backfill", "during the backfill", "after it"])
        if res.cdc_start == "before the backfill":
            backfill.start()
            time.sleep(0.3)
            cdc.start()
        else:
            backfill.start()
        timeline = sorted((rnd.uniform(0.5, seconds), f) for f in faults)
        cdc_at = rnd.uniform(0.5, 2.0) if res.cdc_start == "during the backfill" else None
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            now = time.monotonic() - start
            if cdc_at is not None and now >= cdc_at and cdc.starts == 0:
                cdc.start()
            if res.cdc_start == "after it" and cdc.starts == 0 and 0 in backfill.exits:
                cdc.start()
            while timeline and timeline[0][0] <= now:
                _, fault = timeline.pop(0)
                _inject(fault, stack, load, backfill, cdc, verify, say)
            for s in (backfill, cdc):
                s.supervise()
            if backfill.exits and backfill.exits[-1] == 0:
                backfill.restart = False
            time.sleep(0.05)
        stop.set()
        writer.join(timeout=60)
        res.writes = dict(load.counts)
        # settle: the copy completes, CDC catches up, everything is checked
        verify.kill()
        for _ in range(5):
            backfill.supervise()
            if backfill.poll() is None and backfill.proc is not None:
                backfill.proc.wait(timeout=600)
                backfill.supervise()
            if backfill.exits and backfill.exits[-1] == 0:
                break
            p = migrator("backfill", "-m", str(mapping), "--json")
            if p.returncode == 0:
                break
        else:
            res.problems.append(f"backfill never completed:\n{backfill.last_log()}")
        if cdc.starts == 0:
            cdc.start()
            time.sleep(1)
        code = cdc.stop()
        for _ in range(3):
            if code != 2 or "read its schema" not in cdc.last_log(40):
                break
            # the documented stop of a CDC that read a table changed by a DDL it had not met
            # yet (docs/guide/cdc.md), on its own or while finishing its batch at the stop:
            # its supervisor starts it again, with the new schema
            cdc.start()
            time.sleep(1)
            code = cdc.stop()
        if code not in (0, None, -9, -15):  # -15: stopped while it was still starting
            res.problems.append(f"cdc --follow exited {code}:\n{cdc.last_log()}")
        group = cdc.args[cdc.args.index("--group") + 1] if "--group" in cdc.args else ""
        _catch_up(res, mapping, source, stack, model, url, mongo, db, bridge, group)
    except Exception as exc:  # report the seed, whatever broke
        res.problems.append(f"harness error: {type(exc).__name__}: {exc}")
    finally:
        for s in services:
            s.kill()
        if bridge is not None:
            bridge.kill()
            bridge.wait()
        res.ok = not res.problems
        kept = keep and not res.ok
        if kept:
            say(f"kept for inspection: {stack.urls()} database {db}, mapping {mapping}")
        else:
            with contextlib.suppress(Exception):
                mongo.drop_database(db)
                mongo.drop_database(f"_state_{db}")
                admin = oracle.connect(url_with_database(stack.mysql_url, ""))
                with admin.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
                admin.close()
        mongo.close()
        if own and not kept:
            stack.stop()
        res.seconds = time.monotonic() - t0
        if res.ok:
            import shutil

            shutil.rmtree(logdir, ignore_errors=True)
        else:
            res.problems.append(f"logs in {logdir}")
    return res


def _inject(
    fault: str,
    stack: Stack,
    load: Workload,
    backfill: Service,
    cdc: Service,
    verify: Service,
    say: Any,
) -> None:
    if fault == "kill_backfill":
        backfill.kill()
        backfill.start()
    elif fault == "kill_cdc":
        if cdc.proc is not None:
            cdc.kill()
            if stack.kafka_bootstrap and "--group" in cdc.args:
                _leave_dead_group(stack.kafka_bootstrap, cdc.args)
            cdc.start()
    elif fault == "restart_mysql":
        restart_mysql(stack)
    elif fault == "rotate_binlog":
        with contextlib.suppress(Exception):
            conn = oracle.connect(url_with_database(stack.mysql_url, ""))
            with conn.cursor() as cur:
                cur.execute("FLUSH BINARY LOGS")
            conn.close()
    elif fault == "restart_mongo":
        restart_mongo(stack, kill=True)
    elif fault == "kill_verify":
        verify.start()
        time.sleep(random.uniform(0.2, 1.5))
        verify.kill()
    elif fault == "ddl":
        with contextlib.suppress(Exception):
            load.add_column()


def _leave_dead_group(bootstrap: str, args: list[str]) -> None:
    """Test setup only, for a Tansu quirk (README, testing): a consumer killed with kill -9
    (or one that leaves in the middle of a rebalance) stays its group's leader forever
    (session timeouts are not enforced), so the group never assigns partitions again; a real
    Kafka evicts it after session.timeout.ms. The committed offsets move to a new group, which
    the next CDC joins: it resumes from them, as it would after the eviction."""
    from kafka import KafkaAdminClient

    i = args.index("--group") + 1
    old = args[i]
    base, _, n = old.partition("~")
    new = f"{base}~{int(n or 0) + 1}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(old).get(old, {})
        if offsets:
            admin.alter_group_offsets(new, offsets)
    finally:
        admin.close()
    args[i] = new


def _catch_up(
    res: Result,
    mapping: Path,
    source: str,
    stack: Stack,
    model: Model,
    url: str,
    mongo: MongoClient[Any],
    db: str,
    bridge: Any,
    group: str,
) -> None:
    deadline = time.monotonic() + (180 if source == "debezium" else 120)
    problems: list[str] = []
    while time.monotonic() < deadline:
        if source == "debezium":
            p = migrator(
                "cdc",
                "-m",
                str(mapping),
                "--until-caught-up",
                "--json",
                "--source",
                "debezium",
                "--kafka-bootstrap",
                str(stack.kafka_bootstrap),
                "--topic-prefix",
                "dbz",
                "--group",
                group,
            )
        else:
            p = migrator(
                "cdc", "-m", str(mapping), "--until-caught-up", "--json", "--on-ddl", "extend"
            )
        if source == "debezium" and "no partitions assigned" in p.stdout:
            # the Tansu quirk again: a member that left mid-rebalance (a CDC stopped while it
            # was still joining) can leave a dead leader too
            args = ["--group", group]
            _leave_dead_group(str(stack.kafka_bootstrap), args)
            group = args[1]
            continue
        if p.returncode != 0:
            problems = [f"cdc --until-caught-up exited {p.returncode}:\n{p.stderr[-2000:]}"]
            if source != "debezium":
                break
            time.sleep(2)
            continue
        conn = oracle.connect(url)
        try:
            problems = oracle.compare(model, conn, mongo[db])
        finally:
            conn.close()
        if not problems or source != "debezium":
            break
        time.sleep(3)  # Debezium may still be behind the source: wait for it
    res.problems += problems
    v = migrator("verify", "-m", str(mapping), "--json", "--restart")
    try:
        data = json.loads(v.stdout)
    except ValueError:
        data = {}
    if v.returncode != 0 or not data.get("ok"):
        res.problems.append(
            f"verify exited {v.returncode}: {json.dumps(data.get('differences', [])[:5])[:1500]}"
            f"{v.stderr[-500:]}"
        )
    st = mongo[f"_state_{db}"]
    dead = list(st.dead_letters.find({}, {"_id": 0, "at": 0}).limit(3))
    if dead:
        res.problems.append(f"{st.dead_letters.count_documents({})} dead letters: {dead}")
    waiting = st.pending.count_documents({})
    if waiting:
        res.problems.append(f"{waiting} changes still wait for a parent")


def _start_bridge(stack: Stack, db: str, logdir: Path) -> subprocess.Popen[bytes]:
    from migrator.model.urls import parse_mysql_url

    u = parse_mysql_url(stack.mysql_url)
    cfg = logdir / "bridge.json"
    cfg.write_text(
        json.dumps(
            {
                "host": u.host,
                "port": u.port,
                "user": u.user,
                "password": u.password,
                "database": db,
                "bootstrap": stack.kafka_bootstrap,
                "prefix": "dbz",
                "workdir": str(logdir),
            }
        )
    )
    bridge = REPO / "tests" / "integration" / "debezium_bridge.py"
    with open(logdir / "bridge.log", "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(bridge), str(cfg)], cwd=logdir, stdout=fh, stderr=subprocess.STDOUT
        )
    # the load starts once the snapshot is over (its binlog position is not atomic with it)
    wait_until_streaming(logdir / "bridge.log", proc)
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20.0, help="write load per seed")
    ap.add_argument("--minutes", type=float, default=0.0, help="run seeds from --seed on")
    ap.add_argument("--source", choices=["binlog", "debezium", "both"], default="binlog")
    ap.add_argument("--keep", action="store_true", help="leave a failed run's servers up")
    shape = ap.add_mutually_exclusive_group()
    shape.add_argument(
        "--nested",
        dest="nested",
        action="store_true",
        default=None,
        help="nested mappings only (default: the seed decides, most nest)",
    )
    shape.add_argument(
        "--flat",
        dest="nested",
        action="store_false",
        help="one-level mappings only (the model seeds had before nesting)",
    )
    args = ap.parse_args()
    sources = ["binlog", "debezium"] if args.source == "both" else [args.source]
    end = time.monotonic() + args.minutes * 60
    seed, runs, failed = args.seed, 0, []
    while True:
        for source in sources:
            r = run_seed(
                seed, source=source, seconds=args.seconds, keep=args.keep, nested=args.nested
            )
            runs += 1
            print(r.summary(), flush=True)
            if not r.ok:
                failed.append(seed)
        seed += 1
        if time.monotonic() >= end:
            break
    print(f"{runs} runs, {len(failed)} failed" + (f": seeds {failed}" if failed else ""))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
