"""The demo: throwaway servers, the shop database, a plan, a backfill while the application
keeps writing, CDC catching up from the backfill's position, a summary."""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backfill import BackfillSummary, backfill
from .cdc.runner import CdcSummary, run_cdc
from .config import parse_mapping
from .plan import PlanReport, preflight
from .progress import NullProgress, Progress
from .sandbox import Stack, start_stack, url_with_database
from .shop import ShopWriter, create_shop, shop_mapping
from .sink.mongo import connect as mongo_connect
from .source.connection import connect as mysql_connect
from .urls import parse_mysql_url
from .verify.engine import VerifyResult, verify


@dataclass
class DemoResult:
    stack: Stack
    mapping_path: Path
    rows: dict[str, int]
    plan: PlanReport
    backfill: BackfillSummary
    documents: dict[str, int] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    cdc: CdcSummary | None = None
    live_transactions: int = 0
    verify: VerifyResult | None = None


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


def run_demo(
    *,
    orders: int = 500,
    workers: int = 2,
    progress: Progress | None = None,
    say: Any = print,
    keep: bool = False,
) -> DemoResult:
    t0 = time.monotonic()
    say("starting throwaway servers (MariaDB with a ROW binlog, a MongoDB wire server)…")
    stack = start_stack()
    try:
        say(
            f"  MySQL   {parse_mysql_url(stack.mysql_url).address}\n"
            f"  MongoDB {stack.mongo_url} ({stack.mongo_kind})"
        )
        conn = mysql_connect(parse_mysql_url(stack.mysql_url), database=False)
        rows = create_shop(
            conn,
            "shop",
            customers=max(orders // 5, 10),
            products=max(orders // 20, 5),
            orders=orders,
        )
        conn.close()
        say("created database shop: " + ", ".join(f"{k} {v:,}" for k, v in rows.items()))
        work = Path(tempfile.mkdtemp(prefix="migrator-demo-"))
        mapping_path = work / "shop.yaml"
        mapping_path.write_text(
            shop_mapping(
                url_with_database(stack.mysql_url, "shop"), stack.mongo_url, chunk_size=100
            )
        )
        mapping = parse_mapping(mapping_path.read_text(), str(mapping_path))
        say(f"mapping written to {mapping_path}")
        plan = preflight(mapping)
        # the application keeps writing while the copy runs: CDC brings those changes over
        writer_conn = mysql_connect(parse_mysql_url(stack.mysql_url))
        writer_conn.select_db("shop")
        writer = ShopWriter(writer_conn)
        stop = threading.Event()

        def write() -> None:
            while not stop.is_set():
                writer.step()
                time.sleep(0.02)

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        say("live writes started (new orders, item edits, renames, deletes)")
        summary = backfill(mapping, workers=workers, progress=progress or NullProgress())
        time.sleep(1.0)
        stop.set()
        thread.join()
        writer_conn.close()
        say(f"live writes stopped after {writer.transactions} transactions; CDC catches up…")
        cdc = run_cdc(mapping, mode="until-caught-up")
        say("verifying every row through the mapping…")
        checked = verify(mapping)
        client = mongo_connect(stack.mongo_url)
        db = client[mapping.target_database]
        result = DemoResult(
            stack=stack,
            mapping_path=mapping_path,
            rows=rows,
            plan=plan,
            backfill=summary,
            cdc=cdc,
            live_transactions=writer.transactions,
            verify=checked,
        )
        result.rows = _counts(stack.mysql_url)
        for c in mapping.collections:
            result.documents[c.name] = db[c.name].count_documents({})
        result.samples["orders"] = db.orders.find_one(
            {"items.1": {"$exists": True}, "customer": {"$ne": None}}
        )
        result.samples["customers"] = db.customers.find_one({})
        client.close()
        result.seconds = time.monotonic() - t0
        return result
    finally:
        if not keep:
            stack.stop()
