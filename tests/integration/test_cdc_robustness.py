"""CDC under failure: kill -9 at several points, a MariaDB restart mid-stream, purged binlogs,
and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import random
import signal
from typing import Any

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.applier import Applier
from migrator.cdc.lookup import SourceLookup
from migrator.cdc.runner import run_cdc
from migrator.devtools.sandbox import restart_mysql
from migrator.errors import ConnectError
from migrator.model.events import ChangeEvent, Position, Transaction
from migrator.model.settings import load_mapping
from migrator.model.transform import compile_transform
from migrator.model.urls import parse_mysql_url
from migrator.sink.mongo import connect as mongo_connect
from migrator.source.connection import connect
from migrator.source.schema import introspect
from migrator.state.store import StateStore

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import Env, migrator_cmd
from .helpers import (
    CliProcess,
    cdc_in_thread,
    cli_process,
    make_shop,
    purge_binlogs,
    wait_until,
)


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


def cdc_process(path: Any) -> CliProcess:
    return cli_process("cdc", "-m", str(path), "--follow", "--json", pipe=True)


def test_kill_9_at_several_points_then_restart_converges(env):
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    for round_ in range(3):
        start = 5000 + round_ * 100
        with cdc_process(path) as proc:
            churn(env, 8, seed=round_, start_id=start)
            # let it apply some (more each round: 1, 4, 7 of the round's orders), then kill
            # it wherever it is
            wait_until(
                lambda start=start, n=1 + 3 * round_: (
                    env.target.orders.count_documents({"_id": {"$gte": start, "$lt": start + 8}})
                    >= n
                ),
                "CDC to apply some of the round",
                every=0.02,
            )
            proc.kill9()
    p = migrator_cmd("cdc", "-m", str(path), "--until-caught-up", "--json", check=0)
    assert json.loads(p.stdout)["dead_letters"] == 0
    assert_same_as_fresh_backfill(env, path)
    for doc in env.target.orders.find({}, {"items": 1}):
        lines = [i["line_no"] for i in doc["items"]]
        assert len(lines) == len(set(lines)), f"duplicate element in order {doc['_id']}"


def test_sigterm_finishes_the_batch_checkpoints_and_exits_0(env):
    path = make_shop(env, orders=10)
    backfill(load_mapping(path), workers=1)
    with cdc_process(path) as proc:
        churn(env, 3, seed=9)
        wait_until(lambda: env.target.orders.find_one({"_id": 5002}) is not None, "CDC to apply")
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
    with cdc_in_thread(path) as cdc:
        churn(env, 5, seed=1, start_id=7000)
        # the source restarts while CDC is in the middle of the stream
        wait_until(lambda: env.target.orders.find_one({"_id": 7000}), "CDC to apply")
        restart_mysql(env.stack)
        env.admin = connect(parse_mysql_url(env.stack.mysql_url), database=False)
        churn(env, 5, seed=2, start_id=7100)
        wait_until(lambda: env.target.orders.find_one({"_id": 7104}), "CDC after the restart")
    assert cdc.summary is not None and cdc.summary.reconnects >= 1
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert_same_as_fresh_backfill(env, path)


def test_purged_binlog_stops_with_a_clear_message(own_env):
    env = own_env
    path = make_shop(env, orders=5)
    backfill(load_mapping(path), workers=1)
    env.sql("UPDATE orders SET note = 'x' WHERE id = 1")
    purge_binlogs(env)
    p = migrator_cmd("cdc", "-m", str(path), "--until-caught-up", check=1)
    assert "purged" in p.stderr and "backfill --restart" in p.stderr


def test_metrics_endpoint_and_json_logs(env):
    import urllib.request

    from migrator.devtools.sandbox import free_port

    path = make_shop(env, orders=5)
    backfill(load_mapping(path), workers=1)
    port = free_port()
    args = ("--log-format", "json", "cdc", "-m", str(path), "--follow", "--json")

    def metrics() -> str:
        """The metrics page once it counts the update ('' before)."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        except OSError:
            return ""
        return text if applied in text else ""

    applied = (
        f'migrator_cdc_events_applied_total{{migration="{env.db}->{env.db}",op="update",'
        'table="orders"} 1.0'
    )
    with cli_process(*args, "--metrics-port", str(port), pipe=True) as proc:
        env.sql("UPDATE orders SET note = 'metrics' WHERE id = 1")
        text = wait_until(metrics, "the metric", every=0.3)
        assert "migrator_cdc_lag_seconds" in text and "migrator_cdc_checkpoint_age_seconds" in text
        proc.send_signal(signal.SIGTERM)
        _out, errs = proc.communicate(timeout=60)
    assert proc.returncode == 0
    lines = [json.loads(x) for x in errs.splitlines() if x.startswith("{")]
    assert any(x["msg"] == "cdc starting" and x["level"] == "info" for x in lines)
    assert any(x["msg"] == "cdc stopped" for x in lines), errs[-3000:]
    password = env.url.split("://migrator:", 1)[1].split("@", 1)[0]
    assert password not in errs


def test_table_ids_reused_after_a_server_restart_decode_the_right_table(own_env):
    """Table ids are unique only while the server runs: a stream that crosses a restart
    decodes each table by its own definition, not by a cached one of another table under a
    reused id. CDC replays here from before the restart."""
    env = own_env
    env.sql(
        "CREATE TABLE a (id INT PRIMARY KEY, s VARCHAR(20))",
        "CREATE TABLE b (id INT PRIMARY KEY, t DATETIME(3), d DECIMAL(10,2), j JSON)",
        "INSERT INTO a VALUES (1, 'one')",
        "INSERT INTO b VALUES (1, '2024-01-01 10:00:00.123', 1.50, '{\"k\": 1}')",
    )
    path = env.mapping("  - {name: a, from: a}\n  - {name: b, from: b}\n")
    backfill(load_mapping(path), workers=1)
    env.sql("INSERT INTO a VALUES (2, 'two')", "INSERT INTO b VALUES (2, NOW(3), 2.25, '[]')")
    restart_mysql(env.stack)
    env.admin = connect(parse_mysql_url(env.stack.mysql_url), database=False)
    # opened in the other order after the restart: each can get the id the other had
    env.sql(
        "INSERT INTO b VALUES (3, '2025-05-05 05:05:05.500', 3.75, '{\"x\": [1]}')",
        "INSERT INTO a VALUES (3, 'three')",
        "UPDATE b SET d = 9.99 WHERE id = 1",
        "UPDATE a SET s = 'uno' WHERE id = 1",
    )
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0
    assert_same_as_fresh_backfill(env, path)


def test_a_server_away_fails_the_batch_instead_of_dead_lettering_its_events(own_env):
    """An event whose apply reads the source (a primary-key change re-reads the aggregate)
    while MariaDB is away fails the batch with the server's error (to be retried): it is not
    a dead letter (which would lose it)."""
    env = own_env
    env.sql(
        "CREATE TABLE p (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE c (pid INT, n INT, PRIMARY KEY (pid, n))",
        "INSERT INTO p VALUES (1, 1)",
    )
    path = env.mapping(
        "  - name: p\n    from: p\n    embed:\n      - {as: cs, from: c, on: {pid: id}}\n"
    )
    m = load_mapping(path)
    backfill(m, workers=1)
    conn = connect(parse_mysql_url(m.source.url))
    transform = compile_transform(m, introspect(conn, m.source_database))
    conn.close()
    client = mongo_connect(m.target.url)
    state = StateStore(client, m.state.database)
    proc = next(p for p in env.stack.procs if p.name in ("mariadb", "mysql"))
    proc.stop()
    try:
        lookup = SourceLookup(parse_mysql_url(m.source.url), patience=1.0)
        applier = Applier(transform, client[m.target_database], state, lookup)
        ev = ChangeEvent("p", "update", {"id": 1, "v": 1}, {"id": 2, "v": 1})
        with pytest.raises(ConnectError):
            applier.apply([Transaction([ev], Position("mysql-bin.000001", 4))])
        assert state.dead_letters.count_documents({}) == 0
    finally:
        restart_mysql(env.stack)
        client.close()
