"""The Debezium source's throughput and lag, measured as bench/cdc.py measures the binlog's
(printed, not a timed test).

On a throwaway Tansu broker and MariaDB (the captured Debezium table `orders`, events in
Debezium's default JSON format with schemas, as tests/fixtures/debezium holds them; keyed by
primary key over a topic of 2 partitions), from one run:
  1. the reference: kafka-python's own consumer reading and JSON-decoding the same records
     (the consumer's ceiling, as python-mysql-replication's decode is the binlog's);
  2. `cdc --source debezium --dry-run` over them (decode, Transform, operations built; no sink):
     one consumer, then two consumer processes in one group (one partition each);
  3. lag (a record's source.ts_ms -> its batch applied, the newest record of each batch) p50/p99
     while records arrive at steady rates, dry run;
  4. a real apply into the MongoDB server the stack gives (named), one consumer.
Rates are counted from the first record consumed to the last (the group join before is not).

Usage: .venv/bin/python bench/cdc_debezium.py [--records 20000] [--rates 1000,2000,5000]
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from migrator.cdc.kafka import run_debezium
from migrator.devtools.sandbox import start_stack, url_with_database
from migrator.model.settings import parse_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "debezium"
PREFIX = "bench"
DB = "dbz_bench"
TOPIC = f"{PREFIX}.{DB}.orders"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s)) - 1))] if s else 0.0


def samples() -> dict[str, dict[str, Any]]:
    return {
        op: json.loads((FIXTURES / "samples" / f"schema_defaults_op_{op}.json").read_text())
        for op in ("c", "u", "d")
    }


def record(
    tpl: dict[str, dict[str, Any]], op: str, key: int, db: str = DB, ts_ms: int | None = None
) -> tuple[Any, Any]:
    d = tpl[op]
    value = copy.deepcopy(d["value"])
    payload = value["payload"]
    payload["source"]["db"] = db
    payload["source"]["ts_ms"] = payload["ts_ms"] = ts_ms or int(time.time() * 1000)
    for image in ("before", "after"):
        if payload.get(image):
            payload[image]["id"] = key
    k = copy.deepcopy(d["key"])
    k["payload"]["id"] = key
    return k, value


def workload(n: int) -> list[tuple[str, int]]:
    """Row changes as an application makes them: each row inserted, updated twice, and every
    second one deleted (~29 % inserts, 57 % updates, 14 % deletes)."""
    out: list[tuple[str, int]] = []
    key = 0
    while len(out) < n:
        key += 1
        out += [("c", key), ("u", key), ("u", key)] + ([("d", key)] if key % 2 else [])
    return out[:n]


def producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        batch_size=256 * 1024,
        max_in_flight_requests_per_connection=1,  # keeps each key's records in order
        key_serializer=lambda k: json.dumps(k).encode(),
        value_serializer=lambda v: json.dumps(v).encode(),
    )


def raw_read(bootstrap: str, n: int) -> float:
    """The reference: kafka-python reads and JSON-decodes n records (rows/s)."""
    c = KafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{time.time_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2000,
        key_deserializer=lambda b: json.loads(b) if b else None,
        value_deserializer=lambda b: json.loads(b) if b else None,
    )
    got, first = 0, None
    try:
        while got < n:
            for recs in c.poll(timeout_ms=500).values():
                first = first or time.monotonic()
                got += len(recs)
    finally:
        c.close()
    return n / (time.monotonic() - (first or time.monotonic()))


def consume(
    mapping_text: str,
    bootstrap: str,
    group: str,
    *,
    dry_run: bool,
    out: Any = None,
    prefix: str = PREFIX,
) -> tuple[int, float, float]:
    """run_debezium until caught up: (events, first batch time, last batch time)."""
    times: list[float] = []

    def on_batch(stats: Any) -> None:
        if stats.events:
            times.append(time.time())

    s = run_debezium(
        parse_mapping(mapping_text, "bench.yaml"),
        bootstrap=bootstrap,
        prefix=prefix,
        group=group,
        mode="until-caught-up",
        on_batch=on_batch,
        dry_run=dry_run,
    )
    res = (s.events, times[0] if times else 0.0, times[-1] if times else 0.0)
    if out is not None:
        out.put(res)
    return res


def two_consumers(mapping_text: str, bootstrap: str) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    group = f"two-{time.time_ns()}"
    procs = [
        ctx.Process(target=consume, args=(mapping_text, bootstrap, group),
                    kwargs={"dry_run": True, "out": q})
        for _ in range(2)
    ]  # fmt: skip
    for p in procs:
        p.start()
    results = [q.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    events = sum(r[0] for r in results)
    first = min(r[1] for r in results if r[0])
    last = max(r[2] for r in results)
    shares = ", ".join(str(r[0]) for r in results)
    print(f"  (events per consumer: {shares})")
    return events / (last - first) if last > first else 0.0


def paced_producer(bootstrap: str, topic: str, rate: int, seconds: float, out: Any) -> None:
    """Its own process: the records are serialized before the clock starts, then sent at
    `rate` per second (each stamped with its send time as Debezium's source.ts_ms)."""
    tpl = samples()
    ops = workload(int(rate * seconds))
    stamp = "1111111111111"  # replaced by the send time
    built = [record(tpl, op, key, ts_ms=int(stamp)) for op, key in ops]
    key_bytes = [json.dumps(k).encode() for k, _v in built]
    bodies = [json.dumps(v) for _k, v in built]
    p = KafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=5, max_in_flight_requests_per_connection=1
    )
    sent, t0 = 0, time.monotonic()
    while sent < len(ops) and time.monotonic() - t0 < seconds * 3:
        due = min(int((time.monotonic() - t0) * rate), len(ops))
        ms = str(int(time.time() * 1000))
        while sent < due:
            p.send(topic, key=key_bytes[sent], value=bodies[sent].replace(stamp, ms).encode())
            sent += 1
        time.sleep(0.002)
    p.flush()
    out.put(sent / (time.monotonic() - t0))
    p.close()


def steady_lag(mapping_text: str, bootstrap: str, rate: int, seconds: float) -> str:
    prefix = f"lag{rate}"
    topic = f"{prefix}.{DB}.orders"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    stop = threading.Event()
    lags: list[float] = []
    done = {"events": 0}

    def follow() -> None:
        def on_batch(stats: Any) -> None:
            if stats.events > done["events"]:
                lags.append(stats.lag_seconds)
                done["events"] = stats.events

        run_debezium(
            parse_mapping(mapping_text, "bench.yaml"),
            bootstrap=bootstrap,
            prefix=prefix,
            group=f"lag-{rate}",
            mode="follow",
            stop=stop,
            on_batch=on_batch,
            dry_run=True,
            poll_ms=100,
        )

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    time.sleep(6)  # the consumer joins its group (the topic is empty until now)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    prod = ctx.Process(target=paced_producer, args=(bootstrap, topic, rate, seconds, q))
    prod.start()
    achieved = q.get(timeout=600)
    prod.join(timeout=60)
    time.sleep(3)
    stop.set()
    t.join(timeout=30)
    if not lags:
        return f"{rate}/s asked: no batch seen"
    return (
        f"{rate:,}/s asked, {achieved:,.0f}/s produced: lag p50 "
        f"{statistics.median(lags) * 1000:.0f} ms, p99 {pct(lags, 99) * 1000:.0f} ms "
        f"({len(lags)} batches; a batch's lag is its newest record's)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--apply-records", type=int, default=4_000)
    ap.add_argument("--rates", default="1000,2000,5000")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    stack = start_stack(with_kafka=True)
    try:
        bootstrap = stack.kafka_bootstrap
        assert bootstrap is not None
        conn = connect(parse_mysql_url(stack.mysql_url), database=False)
        cur = conn.cursor()
        cur.execute(f"CREATE DATABASE {DB}")
        cur.execute(f"USE {DB}")
        ddl = (FIXTURES / "table.sql").read_text().split(";")
        cur.execute(next(s for s in ddl if "CREATE TABLE" in s).replace("shop.orders", "orders"))
        conn.close()
        mapping_text = (
            "version: 1\n"
            f'source: {{url: "{url_with_database(stack.mysql_url, DB)}"}}\n'
            f'target: {{url: "{stack.mongo_url}", database: {DB}}}\n'
            f"state: {{database: _migrator_{DB}}}\n"
            "collections:\n  - {name: orders, from: orders}\n"
        )
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)])
        admin.close()
        tpl = samples()
        p = producer(bootstrap)
        t0 = time.monotonic()
        for op, key in workload(args.records):
            k, v = record(tpl, op, key)
            p.send(TOPIC, key=k, value=v)
        p.flush()
        p.close()
        size = len(json.dumps(record(tpl, "u", 1)[1]))
        print(
            f"Debezium source: {args.records:,} row changes (schema-embedded JSON, ~{size:,} "
            f"bytes each) on a topic of 2 partitions, produced in {time.monotonic() - t0:.1f} s; "
            f"Kafka: Tansu; MongoDB server: {stack.mongo_kind}"
        )
        raw = raw_read(bootstrap, args.records)
        print(f"reference, kafka-python consumer read + JSON decode: {raw:,.0f} rows/s")
        n, first, last = consume(mapping_text, bootstrap, f"one-{time.time_ns()}", dry_run=True)
        one = n / (last - first) if last > first else 0.0
        print(
            f"cdc --source debezium --dry-run, one consumer: {one:,.0f} rows/s "
            f"({n:,} events; ratio {one / raw:.2f})"
        )
        two = two_consumers(mapping_text, bootstrap)
        print(
            f"cdc --source debezium --dry-run, two consumer processes in one group: "
            f"{two:,.0f} rows/s (ratio {two / raw:.2f})"
        )
        for rate in [int(r) for r in args.rates.split(",") if r]:
            lag = steady_lag(mapping_text, bootstrap, rate, args.seconds)
            print("steady load, dry run: " + lag)
        # a real apply, into the stack's MongoDB: a topic of its own, fewer records
        p = producer(bootstrap)
        for op, key in workload(args.apply_records):
            k, v = record(tpl, op, key)
            p.send(f"apply.{DB}.orders", key=k, value=v)
        p.flush()
        p.close()
        n, first, last = consume(
            mapping_text, bootstrap, f"apply-{time.time_ns()}", dry_run=False, prefix="apply"
        )
        real = n / (last - first) if last > first else 0.0
        print(
            f"real apply into {stack.mongo_kind}, one consumer: {real:,.0f} events/s over "
            f"{n:,} events (the sink bounds it)"
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
