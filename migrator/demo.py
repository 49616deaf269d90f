"""The demo: throwaway servers, the shop database, a plan, a backfill, a summary."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backfill import BackfillSummary, backfill
from .config import parse_mapping
from .plan import PlanReport, preflight
from .progress import NullProgress, Progress
from .sandbox import Stack, start_stack, url_with_database
from .shop import create_shop, shop_mapping
from .sink.mongo import connect as mongo_connect
from .source.connection import connect as mysql_connect
from .urls import parse_mysql_url


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
        summary = backfill(mapping, workers=workers, progress=progress or NullProgress())
        client = mongo_connect(stack.mongo_url)
        db = client[mapping.target_database]
        result = DemoResult(
            stack=stack, mapping_path=mapping_path, rows=rows, plan=plan, backfill=summary
        )
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
