"""Helpers for CDC tests: compare the CDC-maintained target with a fresh backfill."""

from __future__ import annotations

from typing import Any

from migrator.backfill.copy import backfill
from migrator.model.keys import id_key
from migrator.model.settings import load_mapping


def fresh_copy(env: Any, path: Any) -> dict[str, dict[Any, dict[str, Any]]]:
    """Backfill the same mapping into a scratch database and return {collection: {_id: doc}}."""
    m = load_mapping(path)
    scratch_db, scratch_state = env.db + "_fresh", env.state_db + "_fresh"
    m = m.model_copy(
        update={
            "target": m.target.model_copy(update={"database": scratch_db}),
            "state": m.state.model_copy(update={"database": scratch_state}),
        }
    )
    try:
        backfill(m, workers=1)
        return {
            c.name: {_key(d["_id"]): d for d in env.mongo[scratch_db][c.name].find()}
            for c in m.collections
        }
    finally:
        env.mongo.drop_database(scratch_db)
        env.mongo.drop_database(scratch_state)


def _key(v: Any) -> Any:
    return id_key(v)


def assert_same_as_fresh_backfill(env: Any, path: Any) -> None:
    expected = fresh_copy(env, path)
    for coll, docs in expected.items():
        got = {_key(d["_id"]): d for d in env.target[coll].find()}
        missing = sorted(set(docs) - set(got), key=repr)
        extra = sorted(set(got) - set(docs), key=repr)
        assert not missing and not extra, f"{coll}: missing {missing[:5]} extra {extra[:5]}"
        for k, want in docs.items():
            assert got[k] == want, f"{coll} {k}:\n got  {got[k]}\n want {want}"
