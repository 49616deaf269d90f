"""The torture runs share one throwaway stack (its servers are restarted by some seeds: the
MongoDB server runs with --sync-on-commit so that a kill -9 loses no acknowledged write)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from migrator.devtools.sandbox import Stack, start_stack


@pytest.fixture(scope="session")
def torture_stack() -> Iterator[Stack]:
    from tests.integration.conftest import discard

    s = start_stack(mongo_sync_on_commit=True)
    try:
        yield s
    finally:
        discard(s)
