"""The demo: a whole migration on throwaway servers while the application keeps writing.

plan -> backfill -> sync (CDC) -> verify -> dual_write -> read_mongo -> write_mongo (write pause
measured) -> rollback to read_mongo -> forward again -> final verification -> done.
The application is a load generator writing through the dual-write SDK the whole time.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.backfill.copy import BackfillSummary, backfill
from migrator.cdc.runner import CdcSummary, run_cdc
from migrator.cutover.gates import cdc_lag_seconds
from migrator.cutover.machine import Machine
from migrator.cutover.playbook import default_playbook
from migrator.cutover.sdk import DualWriter
from migrator.devtools.sandbox import Stack, start_stack, url_with_database
from migrator.devtools.shop import AppLoad, CatalogLoad, create_shop, shop_mapping
from migrator.model.settings import Mapping, parse_mapping
from migrator.model.urls import parse_mysql_url
from migrator.preflight.plan import PlanReport, preflight
from migrator.progress import NullProgress, Progress
from migrator.sink.mongo import connect as mongo_connect
from migrator.source.connection import connect as mysql_connect
from migrator.verify.engine import verify
from migrator.verify.results import VerifyResult


@dataclass
class DemoResult:
    stack: Stack
    mapping_path: Path
    rows: dict[str, int]
    plan: PlanReport
    backfill: BackfillSummary
    documents: dict[str, int] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)
    catalog: dict[str, int] = field(default_factory=dict)  # the back office's MySQL edits
    seconds: float = 0.0
    cdc: CdcSummary | None = None
    app_writes: int = 0
    app_retries: int = 0
    verify: VerifyResult | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    write_pause_ms: float | None = None
    rollback_seconds: float | None = None


def _counts(mysql_url: str) -> dict[str, int]:
    conn = mysql_connect(parse_mysql_url(mysql_url), database=False)
    try:
        cur = conn.cursor()
        out = {}
        for t in ("orders", "customers", "products", "order_items"):
            cur.execute(f"SELECT COUNT(*) FROM shop.{t}")
            out[t] = int(cur.fetchone()[0])
        return out
    finally:
        conn.close()


def _wait_caught_up(mapping: Mapping, machine: Machine, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (cdc_lag_seconds(mapping, machine.state) or 99) < 1.0:
            return
        time.sleep(0.2)


def run_demo(
    *,
    orders: int = 300,
    workers: int = 2,
    progress: Progress | None = None,
    say: Any = print,
    keep: bool = False,
) -> DemoResult:
    t0 = time.monotonic()
    say("starting throwaway servers (MariaDB with a ROW binlog, a MongoDB wire server)…")
    demo = _Demo(start_stack(), say)
    try:
        demo.setup(orders)
        result = demo.walk(workers, progress or NullProgress())
        result.seconds = time.monotonic() - t0
        return result
    finally:
        demo.stop_all()
        if not keep:
            demo.stack.stop()


class _Demo:
    """One demo run: the shop, the mapping, the phase machine, and the loops that write while
    it walks (the application through the SDK, the back office in MySQL, CDC)."""

    def __init__(self, stack: Stack, say: Any) -> None:
        self.stack, self.say = stack, say
        self.steps: list[dict[str, Any]] = []
        self.loops: list[tuple[threading.Event, threading.Thread]] = []

    def setup(self, orders: int) -> None:
        stack, say = self.stack, self.say
        say(
            f"  MySQL   {parse_mysql_url(stack.mysql_url).address}\n"
            f"  MongoDB {stack.mongo_url} ({stack.mongo_kind})"
        )
        conn = mysql_connect(parse_mysql_url(stack.mysql_url), database=False)
        self.customers = max(orders // 5, 10)
        self.rows = create_shop(
            conn, "shop", customers=self.customers, products=max(orders // 20, 5), orders=orders
        )
        conn.close()
        say("created database shop: " + ", ".join(f"{k} {v:,}" for k, v in self.rows.items()))
        self.mapping_path = Path(tempfile.mkdtemp(prefix="migrator-demo-")) / "shop.yaml"
        self.mapping_path.write_text(
            shop_mapping(
                url_with_database(stack.mysql_url, "shop"),
                stack.mongo_url,
                chunk_size=100,
                catalog=True,
            )
        )
        self.mapping = parse_mapping(self.mapping_path.read_text(), str(self.mapping_path))
        say(f"mapping written to {self.mapping_path}")
        say(f"watch it live from another terminal: migrator status -m {self.mapping_path} --watch")
        self.plan = preflight(self.mapping)
        self.machine = Machine(self.mapping, default_playbook(), actor="demo")

    def forward(self, note: str = "") -> dict[str, Any]:
        res = self.machine.step(None, reason=f"demo{': ' + note if note else ''}")
        st = self.machine.status()
        entry = {**res.to_dict(), "lag": st["cdc"]["lag_seconds"]}
        self.steps.append(entry)
        self.say(
            f"cutover {res.from_phase} -> {res.to_phase} ({res.seconds:.2f} s"
            + (f", write pause {res.write_pause_ms:.0f} ms" if res.write_pause_ms else "")
            + "); gates: "
            + ", ".join(f"{g.name} {g.measured}" for g in res.gates)
        )
        return entry

    def loop(self, step: Any, pause: float) -> threading.Event:
        """Run `step` every `pause` seconds in a thread until the returned event is set."""
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                step()
                time.sleep(pause)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.loops.append((stop, thread))
        return stop

    def stop_loop(self, stop: threading.Event) -> None:
        stop.set()
        for s, t in self.loops:
            if s is stop:
                t.join(timeout=60)

    def stop_all(self) -> None:
        for s, t in self.loops:
            s.set()
            t.join(timeout=30)

    def caught_up(self) -> None:
        _wait_caught_up(self.mapping, self.machine)

    def walk(self, workers: int, progress: Progress) -> DemoResult:
        mapping, say = self.mapping, self.say
        # the application: writes through the SDK all along, routed by the phase
        sdk = DualWriter(mapping, control_ttl=0.2, freeze_wait=5.0)
        app = AppLoad(sdk, customers=self.customers)
        app_loop = self.loop(app.step, 0.15)
        say("the application is writing through the dual-write SDK")
        # the back office edits the catalog in MySQL until the write switch: shared rows
        # renamed, nested rows moved to other parents, many-to-many links added and removed
        catalog = CatalogLoad(
            mysql_connect(parse_mysql_url(url_with_database(self.stack.mysql_url, "shop"))),
            self.rows["products"],
        )
        catalog_loop = self.loop(catalog.step, 0.05)
        self.forward("start the copy")
        summary = backfill(mapping, workers=workers, progress=progress)
        cdc_result: dict[str, CdcSummary] = {}
        stop_cdc = threading.Event()

        def run_cdc_thread() -> None:
            cdc_result["s"] = run_cdc(mapping, mode="follow", stop=stop_cdc)

        cdc_thread = threading.Thread(target=run_cdc_thread, daemon=True)
        cdc_thread.start()
        self.loops.append((stop_cdc, cdc_thread))
        self.forward("copy done, CDC running")
        self.caught_up()
        say("verifying every row while the application writes…")
        verify(mapping, recheck=10, recheck_delay=0.5)
        self.forward("verified")  # -> dual_write
        self.forward()  # -> read_mongo
        self.caught_up()
        self.stop_loop(catalog_loop)  # MySQL stops being written directly: MongoDB is next
        catalog.conn.close()
        say("catalog edits in MySQL: " + ", ".join(f"{k} {v}" for k, v in catalog.counts.items()))
        self.caught_up()
        verify(mapping, since=None, recheck=10, recheck_delay=0.5)
        switch = self.forward("the write switch")  # -> write_mongo
        t_rb = time.monotonic()
        rb = self.machine.rollback("read_mongo", reason="demo: rollback drill")
        rollback_seconds = time.monotonic() - t_rb
        say(f"rollback write_mongo -> read_mongo in {rb.seconds:.2f} s")
        self.caught_up()
        switch2 = self.forward("forward again")  # -> write_mongo
        self.stop_loop(app_loop)
        self.caught_up()
        say("application stopped; final verification of every row…")
        final = verify(mapping, recheck=10, recheck_delay=0.5)
        self.forward("done")  # -> done
        self.stop_loop(stop_cdc)
        result = DemoResult(
            stack=self.stack,
            mapping_path=self.mapping_path,
            rows=_counts(self.stack.mysql_url),
            plan=self.plan,
            backfill=summary,
            cdc=cdc_result.get("s"),
            app_writes=app.writes,
            app_retries=app.retries,
            verify=final,
            steps=self.steps,
            write_pause_ms=max(switch["write_pause_ms"] or 0, switch2["write_pause_ms"] or 0),
            rollback_seconds=rollback_seconds,
        )
        result.catalog = dict(catalog.counts)
        self.collect(result)
        sdk.close()
        self.machine.close()
        return result

    def collect(self, result: DemoResult) -> None:
        """Document counts, sample documents and the final status, for the summary."""
        client = mongo_connect(self.stack.mongo_url)
        db = client[self.mapping.target_database]
        for c in self.mapping.collections:
            result.documents[c.name] = db[c.name].count_documents({})
        result.samples["orders"] = db.orders.find_one(
            {"items.1": {"$exists": True}, "customer": {"$ne": None}}
        )
        result.samples["products"] = db.products.find_one({"categories.1": {"$exists": True}})
        result.samples["status"] = {
            k: v
            for k, v in self.machine.status().items()
            if k in ("phase", "reads_from", "writes_to", "freeze", "dead_letters", "reverse_sync")
        }
        client.close()
