"""The sandbox's own guarantees: a Kafka broker on request, and a crashed server's log tail
in the error."""

from __future__ import annotations

import subprocess

import pytest
from kafka import KafkaProducer

from migrator.devtools.sandbox import Proc, _wait_mongo, start_kafka
from migrator.errors import SandboxError


def test_kafka_broker_accepts_records(tmp_path):
    bootstrap, proc = start_kafka(tmp_path / "kafka")
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        meta = producer.send("migrator-smoke", b"hello").get(timeout=30)
        assert meta.topic == "migrator-smoke" and meta.offset == 0
        producer.close()
    finally:
        proc.stop()
    assert not proc.alive()


def test_a_server_that_dies_while_starting_shows_its_log_tail(tmp_path):
    log = tmp_path / "server.log"
    with open(log, "wb") as fh:
        popen = subprocess.Popen(
            ["sh", "-c", "echo 'fatal: bad config line 3' >&2; exit 3"], stderr=fh
        )
    popen.wait()
    proc = Proc("fake", popen.pid, str(log))
    with pytest.raises(SandboxError) as e:
        _wait_mongo("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200", proc, popen, timeout=5)
    assert "exited with code 3" in str(e.value) and "fatal: bad config line 3" in str(e.value)
