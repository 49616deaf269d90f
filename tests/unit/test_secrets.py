"""No exception path, log line or report prints a secret."""

from __future__ import annotations

import json
import logging

from migrator.logs import JsonFormatter, TextFormatter
from migrator.model.urls import parse_mysql_url, redact, register_secret
from migrator.verify.canonical import field_diffs


def test_redact_hides_query_string_secrets_and_registered_values():
    assert (
        redact("https://hooks.example/x?token=abc123&x=1")
        == "https://hooks.example/x?token=***&x=1"
    )
    assert "s3cr3t" not in redact("mongodb://m/?authSource=admin&password=s3cr3t")
    register_secret("correct-horse-battery")
    assert redact("login failed for correct-horse-battery!") == "login failed for ***!"
    parse_mysql_url("mysql://u:Very%2FSecret@h/db")
    assert "Very/Secret" not in redact("server said: Very/Secret is wrong")


def _record(**extra):
    rec = logging.makeLogRecord({"name": "migrator.x", "levelname": "INFO", "msg": "m"})
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_json_log_extras_are_redacted():
    line = JsonFormatter().format(
        _record(url="mysql://u:pw1234@h/db", hook={"http": "http://x/?api_key=k9k9k9"})
    )
    assert "pw1234" not in line and "k9k9k9" not in line
    assert json.loads(line)["url"] == "mysql://u:***@h/db"
    register_secret("registered-secret-value")
    assert "registered-secret-value" not in TextFormatter().format(
        _record(msg="x registered-secret-value")
    )


def test_verify_differences_never_print_credentials_even_inside_sub_documents():
    expected = {"_id": 1, "auth": {"user": "u", "password": "hunter2"}, "apiToken": "t0k"}
    diffs = field_diffs(expected, {"_id": 1})
    text = json.dumps(diffs)
    assert "hunter2" not in text and "t0k" not in text
    assert {d["path"] for d in diffs} == {"auth", "apiToken"}
