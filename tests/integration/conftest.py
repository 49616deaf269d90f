"""Real servers for the integration suite: one throwaway stack per test session.

MIGRATOR_TEST_MYSQL_URL / MIGRATOR_TEST_MONGO_URL point the suite at given servers; otherwise
the sandbox starts MariaDB and a MongoDB wire server itself. If they cannot start, every
integration test errors loudly: nothing is skipped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from migrator.devtools.sandbox import Stack, start_stack, url_with_database
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect

REPO = Path(__file__).resolve().parents[2]


def discard(stack: Stack) -> None:
    """Stop a throwaway stack at once: its data is deleted with it, so its servers are
    killed (a clean MariaDB shutdown takes two seconds)."""
    for p in stack.procs:
        if p.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
    stack.stop()


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    s = start_stack()
    try:
        yield s
    finally:
        discard(s)


@pytest.fixture(scope="session")
def admin(stack: Stack) -> Any:
    """A converting MySQL connection with no default database (for DDL and fixtures)."""
    conn = connect(parse_mysql_url(stack.mysql_url), database=False)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def mongo(stack: Stack) -> Iterator[MongoClient[Any]]:
    client: MongoClient[Any] = MongoClient(stack.mongo_url, tz_aware=False)
    yield client
    client.close()


class Env:
    """One test's databases: a MySQL database, a target database and a state database."""

    def __init__(self, stack: Stack, admin: Any, mongo: MongoClient[Any], tmp: Path) -> None:
        self.stack, self.admin, self.mongo, self.tmp = stack, admin, mongo, tmp
        tag = uuid.uuid4().hex[:8]
        self.db = f"t_{tag}"
        self.state_db = f"_migrator_{tag}"
        cur = admin.cursor()
        cur.execute(f"CREATE DATABASE `{self.db}` CHARACTER SET utf8mb4")
        self.url = url_with_database(stack.mysql_url, self.db)

    def sql(self, *statements: str, args: Any = None) -> list[tuple[Any, ...]]:
        cur = self.admin.cursor()
        cur.execute(f"USE `{self.db}`")
        rows: list[tuple[Any, ...]] = []
        for s in statements:
            cur.execute(s, args)
            rows = list(cur.fetchall() or [])
        self.admin.commit()
        return rows

    def mapping(
        self, collections: str, name: str = "m.yaml", source: str = "", **extra: str
    ) -> Path:
        """A mapping file for this test's databases; `source`: more of the source block (e.g.
        `, timezone: "Europe/Paris"`); `extra`: top-level blocks."""
        text = (
            "version: 1\n"
            f'source: {{url: "{self.url}"{source}}}\n'
            f'target: {{url: "{self.stack.mongo_url}", database: {self.db}}}\n'
            f"state: {{database: {self.state_db}}}\n"
            + "".join(f"{k}: {v}\n" for k, v in extra.items())
            + "collections:\n"
            + collections
        )
        p = self.tmp / name
        p.write_text(text)
        return p

    @property
    def target(self) -> Any:
        return self.mongo[self.db]

    @property
    def state(self) -> Any:
        return self.mongo[self.state_db]

    def cleanup(self) -> None:
        self.admin.cursor().execute(f"DROP DATABASE IF EXISTS `{self.db}`")
        self.mongo.drop_database(self.db)
        self.mongo.drop_database(self.state_db)


@pytest.fixture
def own_env(tmp_path: Path) -> Iterator[Env]:
    """A stack of its own, for tests that restart, stop or purge their servers."""
    own = start_stack()
    conn = connect(parse_mysql_url(own.mysql_url), database=False)
    # a test may leave its MongoDB server dead: closing the client must not wait 30 s for it
    client: MongoClient[Any] = MongoClient(own.mongo_url, serverSelectionTimeoutMS=2000)
    e = Env(own, conn, client, tmp_path)
    try:
        yield e
    finally:
        with contextlib.suppress(Exception):
            e.admin.close()
        client.close()
        discard(own)


@pytest.fixture
def env(stack: Stack, admin: Any, mongo: MongoClient[Any], tmp_path: Path) -> Iterator[Env]:
    e = Env(stack, admin, mongo, tmp_path)
    try:
        yield e
    finally:
        e.cleanup()


def migrator_cmd(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, check: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess (as a user would)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    p = subprocess.run(
        [sys.executable, "-m", "migrator.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=REPO,
    )
    if check is not None:
        assert p.returncode == check, (
            f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
        )
    return p
