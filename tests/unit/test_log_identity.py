"""Log records carry the migration's identity once it is bound, from any logger under
`migrator` and any thread (and a worker process that inherits the configuration); a record
the console already showed people is not said twice in text; no format prints a secret."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from migrator import logs
from migrator.model.urls import register_secret

IDENTITY = {
    "migration": "shop->shop_mongo",
    "source": "db:3306/shop",
    "target": "shop_mongo",
    "state_db": "_migrator",
    "command": "backfill",
}


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """logs.setup(fmt, level) writing into a buffer; the logger and context restored after."""
    root = logging.getLogger("migrator")
    saved = (root.handlers[:], root.level, root.propagate)
    monkeypatch.delenv(logs.CHILD_ENV, raising=False)

    def setup(fmt: str, level: str = "debug") -> io.StringIO:
        logs.setup(fmt, level)
        buf = io.StringIO()
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buf)
        return buf

    yield setup
    logs.setup("text", "warning")  # forgets the bound identity
    root.handlers[:], root.level, root.propagate = saved
    os.environ.pop(logs.CHILD_ENV, None)


def test_records_after_bind_carry_the_identity_from_any_logger_and_thread(capture):
    buf = capture("json")
    logging.getLogger("migrator.cli").info("before")
    logs.bind(**IDENTITY)
    logging.getLogger("migrator.backfill").debug("chunk written", extra={"rows": 5})
    t = threading.Thread(target=lambda: logging.getLogger("migrator.sink").warning("retry"))
    t.start()
    t.join()
    before, chunk, retry = (json.loads(x) for x in buf.getvalue().splitlines())
    assert "migration" not in before
    assert {k: chunk[k] for k in IDENTITY} == IDENTITY and chunk["rows"] == 5
    assert {k: retry[k] for k in IDENTITY} == IDENTITY
    # a record's own field of the same name is kept
    logging.getLogger("migrator.x").info("own", extra={"command": "mine"})
    assert json.loads(buf.getvalue().splitlines()[-1])["command"] == "mine"


def test_text_lines_show_the_migration_and_the_fields(capture):
    buf = capture("text")
    logs.bind(**IDENTITY)
    logging.getLogger("migrator.backfill").info("chunk written", extra={"rows": 5, "docs": 4})
    line = buf.getvalue().strip()
    assert "[shop->shop_mongo]" in line and line.endswith("chunk written rows=5 docs=4")


def test_a_record_the_console_showed_is_json_only(capture):
    buf = capture("text")
    logging.getLogger("migrator.cli").error("command failed", extra=logs.ECHOED)
    assert buf.getvalue() == ""
    buf = capture("json")
    logging.getLogger("migrator.cli").error("command failed", extra=logs.ECHOED)
    assert json.loads(buf.getvalue())["msg"] == "command failed"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_urls_and_secrets_in_fields_are_redacted(capture, fmt):
    buf = capture(fmt)
    register_secret("Pa55-w0rd-xyz")
    logs.bind(source="db:3306/shop")
    logging.getLogger("migrator.x").warning(
        "connect",
        extra={
            "url": "mysql://app:Pa55-w0rd-xyz@db:3306/shop",
            "nested": {"target": "mongodb://u:hidden-pw@m:27017/?authSource=admin"},
            "cause": "login failed for Pa55-w0rd-xyz",
        },
    )
    text = buf.getvalue()
    assert "Pa55-w0rd-xyz" not in text and "hidden-pw" not in text
    assert "mysql://app:***@db:3306/shop" in text


def test_a_worker_process_inherits_the_format_level_and_identity(capture):
    capture("json", "debug")
    logs.bind(**IDENTITY)
    code = (
        "import logging; from migrator import logs; logs.inherit(); "
        "logging.getLogger('migrator.backfill').debug('in a worker')"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy()
    )
    rec = json.loads(p.stderr)
    assert rec["msg"] == "in a worker" and rec["level"] == "debug"
    assert {k: rec[k] for k in IDENTITY} == IDENTITY


def test_a_mongodb_retry_is_a_warning_naming_its_cause(capture):
    from pymongo.errors import AutoReconnect

    from migrator.sink.mongo import with_retry

    buf = capture("json", "info")
    calls = iter([AutoReconnect("primary stepped down"), "written"])

    def call() -> str:
        got = next(calls)
        if isinstance(got, Exception):
            raise got
        return got

    assert with_retry(call) == "written"
    (rec,) = (json.loads(x) for x in buf.getvalue().splitlines())
    assert rec["level"] == "warning" and rec["attempt"] == 1
    assert rec["cause"] == "AutoReconnect: primary stepped down"
