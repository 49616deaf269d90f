"""The verify_clean gate accepts only a full, clean, fresh run over every collection of the
mapping, or a clean `--changed` run on top of one (DESIGN.md, "Consistency rules")."""

from __future__ import annotations

from migrator.backfill.copy import backfill
from migrator.cutover.gates import evaluate
from migrator.cutover.playbook import default_playbook
from migrator.model.settings import load_mapping
from migrator.sink.mongo import connect
from migrator.state.store import StateStore
from migrator.verify.engine import verify


def _gate(path) -> tuple[bool, str]:
    m = load_mapping(path)
    client = connect(m.target.url)
    try:
        (g,) = [
            g
            for g in evaluate(
                "read_mongo", m, StateStore(client, m.state.database), default_playbook()
            )
            if g.name == "verify_clean"
        ]
    finally:
        client.close()
    return g.ok, g.measured


def test_the_verify_gate_accepts_only_a_full_clean_run_or_changed_on_top_of_one(env):
    env.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v INT)",
        "INSERT INTO t SELECT seq, seq FROM seq_1_to_300",
    )
    path = env.mapping("  - {name: t, from: t}\n")
    backfill(load_mapping(path), workers=1)
    res = verify(load_mapping(path), changed=True)  # checks nothing: CDC touched nothing
    assert res.ok and sum(c.checked for c in res.collections) == 0
    ok, measured = _gate(path)
    assert not ok and "no full verification" in measured
    assert verify(load_mapping(path), sample_pct=10, seed=1).ok
    ok, measured = _gate(path)
    assert not ok, measured
    assert verify(load_mapping(path)).ok
    assert _gate(path)[0]
    assert verify(load_mapping(path), changed=True).ok  # clean, on top of the clean full run
    ok, measured = _gate(path)
    assert ok and "changed" in measured
    env.target.t.update_one({"_id": 5}, {"$set": {"v": -1}})
    assert not verify(load_mapping(path), recheck=0).ok
    assert not _gate(path)[0]


def test_the_verify_gate_does_not_take_one_collection_for_a_full_run(env):
    """`verify --collections a` is a full run of `a` only: the gate does not take it for a
    full run, since collection `b`, never checked, is missing a document."""
    env.sql(
        "CREATE TABLE a (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE b (id INT PRIMARY KEY, v INT)",
        "INSERT INTO a SELECT seq, seq FROM seq_1_to_50",
        "INSERT INTO b SELECT seq, seq FROM seq_1_to_50",
    )
    path = env.mapping("  - {name: a, from: a}\n  - {name: b, from: b}\n")
    backfill(load_mapping(path), workers=1)
    env.target.b.delete_one({"_id": 7})
    assert verify(load_mapping(path), collections=["a"]).ok
    ok, measured = _gate(path)
    assert not ok, f"gate passed with collection b unverified (and wrong): {measured}"
