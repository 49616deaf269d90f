"""Fixtures shared by the integration and torture suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from migrator.devtools.sandbox import Stack, start_stack


@pytest.fixture(scope="session")
def debezium_stack() -> Iterator[Stack]:
    """One stack for real Debezium (the end-to-end test and the torture run's Debezium seed):
    a Debezium-compatible MariaDB, a Kafka broker, and a MongoDB server that loses no
    acknowledged write on kill -9 (the torture run restarts it)."""
    from tests.integration.conftest import discard

    s = start_stack(with_kafka=True, debezium_compatible=True, mongo_sync_on_commit=True)
    try:
        yield s
    finally:
        discard(s)
