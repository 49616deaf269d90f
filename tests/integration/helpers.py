"""What the integration tests share: the CLI as a background process (`cli_process`,
`start_cdc`), waiting on an observable state (`wait_until`, `cdc_caught_up`,
`reverse_caught_up`), the cutover phase walk (`ready`, `step`, `walk_to`, `to_read_mongo`,
`switch`), CDC in a thread (`cdc_in_thread`), an Applier fed by hand (`applier_for`), the
processes below a pid (`children`, `descendants`, `alive`) and the shop database most tests
start from (`make_shop`, `tamper`)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from migrator.backfill.copy import backfill
from migrator.cdc.applier import Applier
from migrator.cdc.lookup import SourceLookup
from migrator.cdc.runner import CdcSummary, run_cdc
from migrator.cutover.machine import Machine
from migrator.cutover.playbook import default_playbook, load_playbook
from migrator.devtools.shop import create_shop, shop_mapping
from migrator.model.events import Position, reached
from migrator.model.phases import PHASES
from migrator.model.settings import load_mapping
from migrator.model.transform import compile_transform
from migrator.model.urls import parse_mysql_url
from migrator.reverse.runner import operation_time
from migrator.sink.mongo import connect as mongo_connect
from migrator.source.connection import connect
from migrator.source.position import master_position
from migrator.source.schema import introspect
from migrator.state.store import StateStore
from migrator.verify.engine import verify

from .conftest import REPO, migrator_cmd
from .shop_oracle import expected_orders

T = TypeVar("T")

FREEZE = 4.0  # the write-switch tests' freeze timeout (the playbook's default is 10 s)


# -- waiting -------------------------------------------------------------------------------------


def wait_until(
    cond: Callable[[], T], what: str | Callable[[], str], timeout: float = 60.0, every: float = 0.05
) -> T:
    """Poll `cond` until it is truthy and return its value; fail naming `what` (a callable
    gives details read at the time, such as a process's log) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {detail}")
        time.sleep(every)


def cdc_caught_up(env: Any, timeout: float = 60.0, *, status: bool = False) -> None:
    """Wait until CDC's checkpoint (or, with `status`, the status it publishes, counts
    included) has reached the source's binlog position of now: every change made before this
    call has been applied (or skipped) by a running binlog CDC."""
    target = master_position(env.admin)
    doc = "cdc_status" if status else "cdc_checkpoint"

    def there() -> bool:
        position = (env.state.meta.find_one({"_id": doc}) or {}).get("position")
        return bool(position) and reached(Position.from_dict(position), target)

    wait_until(there, f"CDC's {doc} to reach {target}", timeout)


def purge_binlogs(env: Any) -> None:
    """Rotate the binlog and purge every older one (MariaDB keeps a binlog until its crash
    recovery checkpoint moved on: purge until it goes)."""
    env.sql("FLUSH BINARY LOGS")
    current = env.sql("SHOW MASTER STATUS")[0][0]

    def purged() -> bool:
        env.sql(f"PURGE BINARY LOGS TO '{current}'")
        return [r[0] for r in env.sql("SHOW BINARY LOGS")] == [current]

    wait_until(purged, f"the binlogs before {current} to be purged", timeout=30, every=0.2)


# -- the CLI in the background -------------------------------------------------------------------


class CliProcess(subprocess.Popen):  # type: ignore[type-arg]
    """`migrator ARGS` started as a user starts it, in the background. Its output goes to a
    log file (a pipe nobody reads could fill and stall it) unless `pipe` (for a caller that
    reads its stdout, e.g. `--json`, with `communicate`). `pause` is a fault point
    (MIGRATOR_FAULT_PAUSE=stage:seconds). As a context manager it is stopped on exit."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, pause: str = "", pipe: bool = False
    ) -> None:
        self.log: IO[str] | None = None if pipe else tempfile.TemporaryFile("w+")  # noqa: SIM115
        full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
        if pause:
            full_env["MIGRATOR_FAULT_PAUSE"] = pause
        out: Any = subprocess.PIPE if pipe else self.log
        super().__init__(
            [sys.executable, "-m", "migrator.cli.main", *args],
            cwd=REPO,
            env=full_env,
            stdout=out,
            stderr=subprocess.PIPE if pipe else subprocess.STDOUT,
            text=True,
        )

    def log_tail(self, chars: int = 3000) -> str:
        if self.log is None:
            return "(output piped to the test)"
        self.log.seek(0)
        return self.log.read()[-chars:]

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM if it still runs, then its exit code."""
        if self.poll() is None:
            self.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise AssertionError(f"{self.args[3:5]} did not stop on SIGTERM") from None

    def kill9(self) -> None:
        self.kill()
        self.wait()

    def __exit__(self, *exc: Any) -> None:
        if self.poll() is None:
            self.kill()
        if self.stdout or self.stderr:
            self.communicate()
        self.wait()
        if self.log is not None:
            self.log.close()


def cli_process(
    *args: str, env: dict[str, str] | None = None, pause: str = "", pipe: bool = False
) -> CliProcess:
    return CliProcess(*args, env=env, pause=pause, pipe=pipe)


def start_cdc(env: Any, path: Path, *args: str, pause: str = "") -> CliProcess:
    """`migrator cdc --follow` as its own process, returned once it runs (its status names
    its pid); `pause` is a fault point."""
    cdc = cli_process("cdc", "-m", str(path), "--follow", *args, pause=pause)

    def running() -> bool:
        assert cdc.poll() is None, f"cdc exited {cdc.returncode}:\n{cdc.log_tail()}"
        return (env.state.meta.find_one({"_id": "cdc_status"}) or {}).get("pid") == cdc.pid

    wait_until(running, "CDC to run")
    return cdc


def children(pid: int) -> list[int]:
    """The direct children of process `pid`."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, theirs, ...)."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p}
        todo += list(kids - out)
        out |= kids
    return out


def alive(pid: int) -> bool:
    """Running, and not a zombie (a killed process nobody reaped yet is dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# -- CDC in a thread ----------------------------------------------------------------------------


class CdcThread:
    """`run_cdc` in a thread of the test process: its summary, or the error it raised."""

    def __init__(self, path: Path, kw: dict[str, Any]) -> None:
        self.stop = threading.Event()
        self.summary: CdcSummary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(path, kw), daemon=True)

    def _run(self, path: Path, kw: dict[str, Any]) -> None:
        try:
            self.summary = run_cdc(load_mapping(path), stop=self.stop, **kw)
        except BaseException as exc:  # raised in the test by cdc_in_thread
            self.error = exc


@contextlib.contextmanager
def cdc_in_thread(path: Path, *, join: float = 60, **kw: Any) -> Iterator[CdcThread]:
    """`run_cdc(mode="follow")` (or `kw`'s mode) in a thread while the block runs; then it
    is stopped and joined, and an error it raised is raised here."""
    kw.setdefault("mode", "follow")
    cdc = CdcThread(path, kw)
    cdc.thread.start()
    failed = False
    try:
        yield cdc
    except BaseException:
        failed = True
        raise
    finally:
        cdc.stop.set()
        cdc.thread.join(join)
        if not failed:
            assert not cdc.thread.is_alive(), f"CDC did not stop within {join:g} s"
            if cdc.error is not None:
                raise cdc.error


# -- the shop database ----------------------------------------------------------------------------


def make_shop(env: Any, orders: int = 120, chunk_size: int = 10) -> Path:
    """The demo shop (30 customers, 10 products, `orders` orders with items) in the test's
    database, and its mapping."""
    conn = connect(parse_mysql_url(env.stack.mysql_url), database=False)
    create_shop(conn, env.db, customers=30, products=10, orders=orders)
    conn.close()
    text = shop_mapping(
        env.url, env.stack.mongo_url, target_db=env.db, state_db=env.state_db, chunk_size=chunk_size
    )
    path = env.tmp / "shop.yaml"
    path.write_text(text)
    return path


def assert_orders_exact(env: Any) -> None:
    """The orders documents equal the independent oracle's (shop_oracle.py)."""
    expected = expected_orders(env.admin, env.db)
    got = {d["_id"]: d for d in env.target.orders.find()}
    assert sorted(got) == sorted(expected)
    for k, want in expected.items():
        assert got[k] == want, f"order {k}"


def tamper(env: Any, seed: int, orders: int, *, count: int = 15, customer: bool = True) -> None:
    """Seeded random tampering of random orders (deleted, a field changed, an item dropped),
    an extra document, and optionally a deleted customer."""
    t, rnd = env.target, random.Random(seed)
    for i in rnd.sample(range(1, orders + 1), count):
        r = rnd.random()
        if r < 0.3:
            t.orders.delete_one({"_id": i})
        elif r < 0.6:
            t.orders.update_one({"_id": i}, {"$set": {"status": f"t{i}"}})
        else:
            t.orders.update_one({"_id": i}, {"$pop": {"items": 1}})
    t.orders.insert_one({"_id": 7777, "orderNo": "ghost"})
    if customer:
        t.customers.delete_one({"_id": rnd.randint(1, 30)})


# -- the cutover phases ---------------------------------------------------------------------------


def ready(env: Any, orders: int = 20) -> Path:
    """A shop copied, CDC caught up and a clean verification: every gate of the walk open."""
    path = make_shop(env, orders=orders)
    backfill(load_mapping(path), workers=1)
    assert run_cdc(load_mapping(path), mode="until-caught-up").dead_letters == 0
    assert verify(load_mapping(path)).ok
    return path


def step(path: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    """`migrator cutover ARGS --yes --json` as the operator test@ci."""
    return migrator_cmd(
        "cutover", "-m", str(path), *args, "--yes", "--actor", "test@ci", "--json", check=check
    )


def walk_to(path: Path, phase: str, playbook: Path | None = None) -> None:
    """Forced steps forward, in process through the phase machine, from the migration's
    phase to `phase` (with `playbook`'s settings, e.g. its freeze timeout): the setup of
    tests whose point comes after it (the walk itself, by the CLI and its gates, is
    test_cutover's)."""
    book = load_playbook(playbook) if playbook else default_playbook()
    m = Machine(load_mapping(path), book, actor="test@ci")
    try:
        here = m.control.get()["phase"]
        for target in PHASES[PHASES.index(here) + 1 : PHASES.index(phase) + 1]:
            m.step(target, force=True, reason="test setup")
        assert m.control.get()["phase"] == phase
    finally:
        m.close()


def switch(path: Path) -> None:
    """CDC caught up, then forced steps to write_mongo: MongoDB is the source of truth."""
    run_cdc(load_mapping(path), mode="until-caught-up")
    walk_to(path, "write_mongo")


def to_read_mongo(env: Any, tmp_path: Path, orders: int = 20) -> tuple[Path, Path]:
    """`ready`, walked to read_mongo, and a playbook whose freeze timeout is FREEZE s."""
    path = ready(env, orders=orders)
    walk_to(path, "read_mongo")
    pb = tmp_path / "playbook.yaml"
    pb.write_text(f"version: 1\ndefaults: {{freeze_timeout_seconds: {FREEZE}}}\n")
    return path, pb


@contextlib.contextmanager
def applier_for(m: Any, **kw: Any) -> Iterator[Applier]:
    """An Applier on the mapping's real servers, as `cdc` builds it (events fed by hand)."""
    conn = connect(parse_mysql_url(m.source.url))
    transform = compile_transform(m, introspect(conn, m.source_database))
    conn.close()
    client = mongo_connect(m.target.url)
    try:
        yield Applier(
            transform,
            client[m.target_database],
            StateStore(client, m.state.database),
            SourceLookup(parse_mysql_url(m.source.url)),
            **kw,
        )
    finally:
        client.close()


def reverse_caught_up(env: Any, timeout: float = 60.0) -> None:
    """Wait until a running reverse sync has applied every MongoDB change made before this
    call (its checkpoint's `applied_through` has reached MongoDB's operation time of now)."""
    target = operation_time(env.mongo)

    def there() -> bool:
        cp = env.state.meta.find_one({"_id": "reverse_checkpoint"}) or {}
        return cp.get("applied_through") is not None and cp["applied_through"] >= target

    wait_until(there, "reverse sync to apply MongoDB's changes of now", timeout)


def state_metric(path: Path, name: str) -> float:
    """The sum of a state gauge's series (as an alert sums them) from one fresh read of the
    migration's state, as a `--metrics-port` endpoint serves it."""
    from prometheus_client import CollectorRegistry, generate_latest

    from migrator.monitor.exporter import StateCollector

    reg = CollectorRegistry()
    collector = StateCollector(load_mapping(path), default_playbook(), every=0.2)
    try:
        wait_until(lambda: collector.poller.current().status is not None, "a status read")
        reg.register(collector)
        lines = generate_latest(reg).decode().splitlines()
    finally:
        collector.close()
    values = [float(ln.split()[-1]) for ln in lines if ln.startswith(name + "{")]
    assert values, f"no {name}"
    return sum(values)
