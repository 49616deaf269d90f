"""CDC under failure: kill -9 at several points, a MariaDB restart mid-stream, purged binlogs,
and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.devtools.sandbox import restart_mysql
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import REPO, Env, migrator_cmd
from .test_backfill import make_shop


def churn(env: Env, n: int, seed: int, start_id: int = 5000) -> None:
    """n transactions of mixed changes to orders, their items and customers."""
    rnd = random.Random(seed)
    for i in range(n):
        oid = start_id + i
        k = rnd.randrange(1, 21)
        stmts = [
            f"INSERT INTO orders (id, order_no, customer_id, created_at) "
            f"VALUES ({oid}, 'C{oid}', {rnd.randrange(1, 31)}, NOW())",
            f"INSERT INTO order_items VALUES ({oid}, 1, 1, 1, 1.00), ({oid}, 2, 2, 2, 2.00)",
            f"UPDATE order_items SET qty = qty + 1 WHERE order_id = {k}",
            f"UPDATE orders SET status = '{rnd.choice(['paid', 'shipped', 'cancelled'])}', "
            f"note = 'n{i}' WHERE id = {k}",
            f"DELETE FROM order_items WHERE order_id = {oid} AND line_no = 1",
        ]
        if i % 4 == 0:
            stmts.append(f"UPDATE customers SET name = 'C{i}' WHERE id = {rnd.randrange(1, 31)}")
        if i % 5 == 4:
            stmts.append(f"DELETE FROM orders WHERE id = {oid - 2}")
        if i % 6 == 5:
            stmts.append(
                f"UPDATE order_items SET order_id = {oid}, line_no = 9 "
                f"WHERE order_id = {oid - 1} AND line_no = 2"
            )
        env.sql("START TRANSACTION", *stmts, "COMMIT")


def cdc_process(path: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "migrator.cli.main", "cdc", "-m", str(path), "--follow", "--json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_kill_9_at_several_points_then_restart_converges(env):
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    for round_ in range(3):
        proc = cdc_process(path)
        churn(env, 8, seed=round_, start_id=5000 + round_ * 100)
        # let it apply some, then kill it wherever it is
        time.sleep(0.5 + round_ * 0.7)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    p = migrator_cmd("cdc", "-m", str(path), "--until-caught-up", "--json", check=0)
    assert json.loads(p.stdout)["dead_letters"] == 0
    assert_same_as_fresh_backfill(env, path)
    for doc in env.target.orders.find({}, {"items": 1}):
        lines = [i["line_no"] for i in doc["items"]]
        assert len(lines) == len(set(lines)), f"duplicate element in order {doc['_id']}"


def test_sigterm_finishes_the_batch_checkpoints_and_exits_0(env):
    path = make_shop(env, orders=10)
    backfill(load_mapping(path), workers=1)
    proc = cdc_process(path)
    churn(env, 3, seed=9)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if env.target.orders.find_one({"_id": 5002}) is not None:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, errs = proc.communicate(timeout=60)
    assert proc.returncode == 0, errs
    summary = json.loads(out)
    assert summary["stopped"] == "stopped by signal" and summary["events"] > 0
    assert env.state.meta.find_one({"_id": "cdc_checkpoint"})["position"]["gtid"]
    assert_same_as_fresh_backfill(env, path)


def test_mariadb_restart_mid_stream_loses_and_duplicates_nothing(own_env):
    env = own_env
    path = make_shop(env, orders=10)
    backfill(load_mapping(path), workers=1)
    stop = threading.Event()
    result: dict[str, Any] = {}

    def follow() -> None:
        result["summary"] = run_cdc(load_mapping(path), mode="follow", stop=stop)

    t = threading.Thread(target=follow)
    t.start()
    churn(env, 5, seed=1, start_id=7000)
    time.sleep(1.0)
    restart_mysql(env.stack)
    env.admin = connect(parse_mysql_url(env.stack.mysql_url), database=False)
    churn(env, 5, seed=2, start_id=7100)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and env.target.orders.find_one({"_id": 7104}) is None:
        time.sleep(0.2)
    stop.set()
    t.join(timeout=60)
    assert result["summary"].reconnects >= 1
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert_same_as_fresh_backfill(env, path)


def test_purged_binlog_stops_with_a_clear_message(own_env):
    env = own_env
    path = make_shop(env, orders=5)
    backfill(load_mapping(path), workers=1)
    env.sql("UPDATE orders SET note = 'x' WHERE id = 1", "FLUSH BINARY LOGS")
    current = env.sql("SHOW MASTER STATUS")[0][0]
    # MariaDB keeps a binlog until its crash-recovery checkpoint moved on: purge until it goes
    deadline = time.monotonic() + 30
    while len(env.sql("SHOW BINARY LOGS")) > 1 and time.monotonic() < deadline:
        env.sql(f"PURGE BINARY LOGS TO '{current}'")
        time.sleep(0.2)
    assert [r[0] for r in env.sql("SHOW BINARY LOGS")] == [current]
    p = migrator_cmd("cdc", "-m", str(path), "--until-caught-up", check=1)
    assert "purged" in p.stderr and "backfill --restart" in p.stderr


def test_metrics_endpoint_and_json_logs(env):
    import urllib.request

    from migrator.devtools.sandbox import free_port

    path = make_shop(env, orders=5)
    backfill(load_mapping(path), workers=1)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "migrator.cli.main",
            "--log-format",
            "json",
            "cdc",
            "-m",
            str(path),
            "--follow",
            "--json",
            "--metrics-port",
            str(port),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        env.sql("UPDATE orders SET note = 'metrics' WHERE id = 1")
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            except OSError:
                text = ""
            if 'migrator_cdc_events_applied_total{op="update",table="orders"} 1.0' in text:
                break
            time.sleep(0.3)
        assert 'migrator_cdc_events_applied_total{op="update",table="orders"} 1.0' in text
        assert "migrator_cdc_lag_seconds" in text and "migrator_cdc_checkpoint_age_seconds" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, errs = proc.communicate(timeout=60)
    assert proc.returncode == 0
    lines = [json.loads(x) for x in errs.decode().splitlines() if x.startswith("{")]
    assert any(x["msg"] == "cdc starting" and x["level"] == "info" for x in lines)
    assert any(x["msg"] == "cdc stopped" for x in lines)
    password = env.url.split("://migrator:", 1)[1].split("@", 1)[0]
    assert password not in errs.decode()
