"""MigratorVerificationDifferences fires on `migrator_verify_differences`: it must stay on
while differences a verification found are still open (the verify_clean gate refuses), not
clear because a later run looked at other collections or at a sample."""

from __future__ import annotations

from migrator.model.settings import load_mapping
from migrator.verify.engine import verify

from .helpers import ready, state_metric


def _differences(path) -> float:
    """sum(migrator_verify_differences) as the alert sums it, from one fresh read."""
    return state_metric(path, "migrator_verify_differences")


def test_a_later_run_over_another_collection_does_not_hide_open_differences(env):
    path = ready(env, orders=10)
    env.target.orders.delete_one({"_id": 3})  # MongoDB lost a document
    assert not verify(load_mapping(path)).ok
    assert _differences(path) == 1
    # someone checks only customers (clean): orders' difference is still open
    assert verify(load_mapping(path), collections=["customers"]).ok
    assert env.state.open_differences.count_documents({"c": "orders"}) == 1  # the gate refuses
    assert _differences(path) >= 1
