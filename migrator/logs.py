"""Structured logs: `--log-format text|json` on every command, to stderr.

Once a command has read its mapping, every record carries the migration's identity (`bind`,
called in one place: cli/common.load); a record the console already showed people (`ECHOED`:
a failure's red message, plan's findings) goes to JSON only. Worker processes `inherit` the
configuration and the identity from the environment their parent leaves them.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

from migrator.model.urls import redact

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

# The process's identity fields (migration, source, target, state_db, command): one migration
# per process, so a plain dict (threads see it too, unlike a contextvar)
_context: dict[str, str] = {}

# Where a parent leaves its format, level and identity for its worker processes
CHILD_ENV = "_MIGRATOR_LOGGING"

# extra=ECHOED: the console already says this to people (text logs skip it)
ECHOED: dict[str, Any] = {"_echoed": True}


class IdentityFilter(logging.Filter):
    """Adds the bound identity to every record (a record's own field of that name wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for k, v in _context.items():
            if k not in record.__dict__:
                setattr(record, k, v)
        return True


class _NotEchoed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "_echoed", False)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        # extras too: every value is redacted in its serialised form
        return redact(json.dumps(doc, default=str))


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: [migration] message key=value ...`: the identity's other fields
    are the same on every line, so they are left out."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        name = fields.pop("migration", None)
        for k, v in _context.items():
            if fields.get(k) == v:
                del fields[k]
        if fields:
            tail = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
            line, sep, trace = line.partition("\n")  # the fields before any traceback
            line = f"{line} {tail}{sep}{trace}"
        if name:
            head, sep, msg = line.partition(": ")
            line = f"{head}: [{name}] {msg}" if sep else f"[{name}] {line}"
        return redact(line)


def setup(fmt: str = "text", level: str = "warning") -> None:
    """Configure the `migrator` loggers (and forget any identity bound before)."""
    _context.clear()
    _install(fmt, level)
    os.environ[CHILD_ENV] = json.dumps({"format": fmt, "level": level, "context": {}})


def _install(fmt: str, level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(IdentityFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_NotEchoed())
    root = logging.getLogger("migrator")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def bind(**fields: str | None) -> None:
    """From now on every record of this process (and of the workers it starts) carries
    these fields."""
    _context.update({k: v for k, v in fields.items() if v is not None})
    saved = os.environ.get(CHILD_ENV)
    if saved:
        conf = json.loads(saved)
        os.environ[CHILD_ENV] = json.dumps({**conf, "context": dict(_context)})


def inherit() -> None:
    """In a worker process: the parent's format, level and identity (nothing if it set none)."""
    saved = os.environ.get(CHILD_ENV)
    if not saved:
        return
    conf = json.loads(saved)
    _context.clear()
    _context.update(conf.get("context") or {})
    _install(conf["format"], conf["level"])
