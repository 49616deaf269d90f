"""`migrator state dump` prints a live migration's whole state, read-only."""

from __future__ import annotations

import json

import yaml

from migrator.backfill.copy import backfill
from migrator.cutover.sdk import DualWriter
from migrator.model.settings import load_mapping

from .conftest import migrator_cmd
from .helpers import make_shop, start_cdc, wait_until, walk_to


def test_a_live_migration_s_whole_state_is_dumped_and_nothing_is_written(env):
    path = make_shop(env, orders=30, chunk_size=10)
    backfill(load_mapping(path), workers=1)
    walk_to(path, "sync")
    cdc = start_cdc(env, path)
    writer = DualWriter(load_mapping(path))
    try:
        writer.update("orders", {"id": 1}, {"note": "through the SDK"})
        wait_until(
            lambda: env.target.orders.find_one({"_id": 1})["note"] == "through the SDK", "CDC"
        )
        migrator_cmd("verify", "-m", str(path), check=0)
        before = {c: list(env.state[c].find()) for c in env.state.list_collection_names()}
        d = json.loads(migrator_cmd("state", "dump", "-m", str(path), "--json", check=0).stdout)
        after = {c: list(env.state[c].find()) for c in env.state.list_collection_names()}
        assert {c: len(v) for c, v in after.items()} == {c: len(v) for c, v in before.items()}
        assert d["database"] == env.state_db and d["identity"]["target"] == env.db
        assert d["control"]["phase"] == "sync" and d["control"]["writes_to"] == ["mysql"]
        orders = d["backfill"]["collections"]["orders"]
        assert orders["status"] == "complete" and orders["chunks_done"] == orders["chunks_total"]
        assert orders["rows_done"] == 30 and d["backfill"]["position"]["file"]
        assert d["cdc"]["alive"] is True and d["cdc"]["checkpoint"]["position"]["file"]
        assert d["cdc"]["status"]["events"] >= 1
        (run,) = d["verification"]["runs"]
        assert run["ok"] is True and run["mode"] == "full"
        assert d["verification"]["open_differences"] == {}
        assert [w["_id"] for w in d["writers"]] == [writer.registration.id]
        assert d["dead_letters"]["count"] == 0
        assert [(a["kind"], a["to_phase"]) for a in d["audit"]][:2] == [
            ("cutover", "sync"),
            ("cutover", "backfill"),
        ]
        text = migrator_cmd("state", "dump", "-m", str(path), check=0).stdout
        assert yaml.safe_load(text)["control"]["phase"] == "sync"
    finally:
        writer.close()
        cdc.stop()
