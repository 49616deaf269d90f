"""A SET column's members are in the column's definition order on every path (backfill,
binlog CDC, Debezium decoding, reverse sync), whatever members and subsets a seed produces."""

from __future__ import annotations

import random

import pytest

from migrator.backfill import backfill
from migrator.cdc.runner import run_cdc
from migrator.config import load_mapping

from .cdc_helpers import assert_same_as_fresh_backfill

POOL = [
    "Trailers", "Commentaries", "Deleted Scenes", "Behind the Scenes", "a", "B", "c d",
    "it''s", "élan", "日本", "z", "Y", "x-y", "0", "10", "9", "_", "zz top", "A1", "b2",
]  # fmt: skip


def _definition(rng: random.Random) -> list[str]:
    members = rng.sample(POOL, rng.randint(2, 12))
    # members equal but for case would be refused by MySQL under a case-insensitive collation
    seen: set[str] = set()
    out = []
    for m in members:
        if m.lower() not in seen:
            seen.add(m.lower())
            out.append(m)
    return out


def _subset(rng: random.Random, members: list[str]) -> list[str]:
    return rng.sample(members, rng.randint(0, len(members)))  # written in a random order


def _sql_text(members: list[str]) -> str:
    return "'" + ",".join(members) + "'"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_set_members_follow_the_definition_order_through_backfill_and_cdc(env, seed):
    rng = random.Random(seed)
    defs = {f"s{i}": _definition(rng) for i in range(3)}
    cols = ", ".join(f"{c} SET({', '.join(repr_m(m) for m in ms)}) NULL" for c, ms in defs.items())
    env.sql(f"CREATE TABLE film (id INT PRIMARY KEY, title VARCHAR(40), {cols})")
    expected: dict[int, dict[str, list[str] | None]] = {}

    def write(i: int, verb: str) -> None:
        values = {c: (None if rng.random() < 0.1 else _subset(rng, ms)) for c, ms in defs.items()}
        sets = ", ".join(
            f"{c} = {'NULL' if v is None else _sql_text(v)}" for c, v in values.items()
        )
        if verb == "insert":
            env.sql(f"INSERT INTO film SET id = {i}, title = 't{i}', {sets}")
        else:
            env.sql(f"UPDATE film SET title = 'u{i}', {sets} WHERE id = {i}")
        expected[i] = {
            c: None if v is None else [m.replace("''", "'") for m in defs[c] if m in v]
            for c, v in values.items()
        }

    for i in range(40):
        write(i, "insert")
    path = env.mapping("  - {name: film, from: film}\n")
    backfill(load_mapping(path), workers=1)
    _check(env, expected)
    # CDC: a change of another column carries the SET's whole image; then new values
    for i in range(0, 40, 2):
        env.sql(f"UPDATE film SET title = 'retitled {i}' WHERE id = {i}")
    for i in range(1, 40, 2):
        write(i, "update")
    for i in range(40, 60):
        write(i, "insert")
    run_cdc(load_mapping(path), mode="until-caught-up")
    _check(env, expected)
    assert_same_as_fresh_backfill(env, path)


def repr_m(m: str) -> str:
    return f"'{m}'"


def _check(env, expected) -> None:
    docs = {d["_id"]: d for d in env.target.film.find()}
    assert sorted(docs) == sorted(expected)
    for i, want in expected.items():
        for c, members in want.items():
            assert docs[i][c] == members, (i, c, docs[i][c], members)
