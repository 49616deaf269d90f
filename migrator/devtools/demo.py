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
    stack = start_stack()
    stop_app, stop_cdc = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    try:
        say(
            f"  MySQL   {parse_mysql_url(stack.mysql_url).address}\n"
            f"  MongoDB {stack.mongo_url} ({stack.mongo_kind})"
        )
        conn = mysql_connect(parse_mysql_url(stack.mysql_url), database=False)
        customers = max(orders // 5, 10)
        rows = create_shop(
            conn, "shop", customers=customers, products=max(orders // 20, 5), orders=orders
        )
        conn.close()
        say("created database shop: " + ", ".join(f"{k} {v:,}" for k, v in rows.items()))
        work = Path(tempfile.mkdtemp(prefix="migrator-demo-"))
        mapping_path = work / "shop.yaml"
        mapping_path.write_text(
            shop_mapping(
                url_with_database(stack.mysql_url, "shop"),
                stack.mongo_url,
                chunk_size=100,
                catalog=True,
            )
        )
        mapping = parse_mapping(mapping_path.read_text(), str(mapping_path))
        say(f"mapping written to {mapping_path}")
        plan = preflight(mapping)
        machine = Machine(mapping, default_playbook(), actor="demo")
        steps: list[dict[str, Any]] = []

        def forward(note: str = "") -> dict[str, Any]:
            res = machine.step(None, reason=f"demo{': ' + note if note else ''}")
            st = machine.status()
            entry = {**res.to_dict(), "lag": st["cdc"]["lag_seconds"]}
            steps.append(entry)
            say(
                f"cutover {res.from_phase} -> {res.to_phase} ({res.seconds:.2f} s"
                + (f", write pause {res.write_pause_ms:.0f} ms" if res.write_pause_ms else "")
                + "); gates: "
                + ", ".join(f"{g.name} {g.measured}" for g in res.gates)
            )
            return entry

        # the application: writes through the SDK all along, routed by the phase
        sdk = DualWriter(mapping, control_ttl=0.2, freeze_wait=5.0)
        app = AppLoad(sdk, customers=customers)

        def run_app() -> None:
            while not stop_app.is_set():
                app.step()
                time.sleep(0.15)

        threads.append(threading.Thread(target=run_app, daemon=True))
        threads[-1].start()
        say("the application is writing through the dual-write SDK")
        # the back office edits the catalog in MySQL until the write switch: shared rows
        # renamed, nested rows moved to other parents, many-to-many links added and removed
        catalog = CatalogLoad(
            mysql_connect(parse_mysql_url(url_with_database(stack.mysql_url, "shop"))),
            rows["products"],
        )
        stop_catalog = threading.Event()

        def run_catalog() -> None:
            while not stop_catalog.is_set():
                catalog.step()
                time.sleep(0.05)

        catalog_thread = threading.Thread(target=run_catalog, daemon=True)
        catalog_thread.start()
        forward("start the copy")
        summary = backfill(mapping, workers=workers, progress=progress or NullProgress())
        cdc_result: dict[str, CdcSummary] = {}

        def run_cdc_thread() -> None:
            cdc_result["s"] = run_cdc(mapping, mode="follow", stop=stop_cdc)

        threads.append(threading.Thread(target=run_cdc_thread, daemon=True))
        threads[-1].start()
        forward("copy done, CDC running")
        _wait_caught_up(mapping, machine)
        say("verifying every row while the application writes…")
        verify(mapping, recheck=10, recheck_delay=0.5)
        forward("verified")  # -> dual_write
        forward()  # -> read_mongo
        _wait_caught_up(mapping, machine)
        stop_catalog.set()  # MySQL stops being written directly: MongoDB is next
        catalog_thread.join(timeout=30)
        catalog.conn.close()
        say("catalog edits in MySQL: " + ", ".join(f"{k} {v}" for k, v in catalog.counts.items()))
        _wait_caught_up(mapping, machine)
        verify(mapping, since=None, recheck=10, recheck_delay=0.5)
        switch = forward("the write switch")  # -> write_mongo
        t_rb = time.monotonic()
        rb = machine.rollback("read_mongo", reason="demo: rollback drill")
        rollback_seconds = time.monotonic() - t_rb
        say(f"rollback write_mongo -> read_mongo in {rb.seconds:.2f} s")
        _wait_caught_up(mapping, machine)
        switch2 = forward("forward again")  # -> write_mongo
        stop_app.set()
        threads[0].join(timeout=30)
        _wait_caught_up(mapping, machine)
        say("application stopped; final verification of every row…")
        final = verify(mapping, recheck=10, recheck_delay=0.5)
        forward("done")  # -> done
        stop_cdc.set()
        threads[1].join(timeout=60)
        client = mongo_connect(stack.mongo_url)
        db = client[mapping.target_database]
        result = DemoResult(
            stack=stack,
            mapping_path=mapping_path,
            rows=_counts(stack.mysql_url),
            plan=plan,
            backfill=summary,
            cdc=cdc_result.get("s"),
            app_writes=app.writes,
            app_retries=app.retries,
            verify=final,
            steps=steps,
            write_pause_ms=max(switch["write_pause_ms"] or 0, switch2["write_pause_ms"] or 0),
            rollback_seconds=rollback_seconds,
        )
        for c in mapping.collections:
            result.documents[c.name] = db[c.name].count_documents({})
        result.samples["orders"] = db.orders.find_one(
            {"items.1": {"$exists": True}, "customer": {"$ne": None}}
        )
        result.samples["products"] = db.products.find_one({"categories.1": {"$exists": True}})
        result.catalog = dict(catalog.counts)
        result.samples["status"] = {
            k: v
            for k, v in machine.status().items()
            if k in ("phase", "reads_from", "writes_to", "freeze", "dead_letters", "reverse_sync")
        }
        client.close()
        sdk.close()
        machine.close()
        result.seconds = time.monotonic() - t0
        return result
    finally:
        stop_app.set()
        stop_cdc.set()
        for t in threads:
            t.join(timeout=30)
        if not keep:
            stack.stop()
