"""The few exception types the library raises; each carries what, where and what to do.

The CLI maps them to exit codes: 2 for usage, configuration and connection errors, 1 for a
check that ran and failed.
"""

from __future__ import annotations


class MigratorError(Exception):
    """Base class: a message a user can act on, an optional hint, and the CLI exit code."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(MigratorError):
    """A mapping or playbook file is wrong: names the file, line and key."""


class ConnectError(MigratorError):
    """A server cannot be reached or refuses us: names the host and the setting."""


class SchemaError(MigratorError):
    """The mapping does not fit the source schema (unknown table or column, no primary key)."""


class SandboxError(MigratorError):
    """A throwaway server could not start; the message carries its log tail."""


class ConversionError(MigratorError):
    """A value cannot be converted by its type rule (it goes to the dead-letter collection)."""


class CheckFailed(MigratorError):
    """A check ran and found problems (plan blockers, verification differences)."""

    exit_code = 1


# The servers this process talks to, for errors that come from a driver in the middle of a run:
# kind ("mysql" | "mongodb" | "kafka") -> (address, the setting that names it).
SERVERS: dict[str, tuple[str, str]] = {}


def remember_server(kind: str, address: str, setting: str) -> None:
    SERVERS[kind] = (address, setting)


def describe_server(kind: str) -> str:
    name = {"mysql": "MySQL", "mongodb": "MongoDB", "kafka": "Kafka"}[kind]
    if kind in SERVERS:
        address, setting = SERVERS[kind]
        return f"{name} at {address} ({setting})"
    return name


def server_kind(exc: BaseException) -> str | None:
    """Which server a driver exception came from (by the driver's package), if any."""
    mod = type(exc).__module__
    if mod.startswith(("pymongo", "bson")):
        return "mongodb"
    if mod.startswith(("MySQLdb", "pymysql", "pymysqlreplication", "_mysql")):
        return "mysql"
    if mod.startswith("kafka"):
        return "kafka"
    return None
