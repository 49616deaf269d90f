"""A SET column's members are in the column's definition order on every path (backfill,
binlog CDC, Debezium decoding, reverse sync), whatever members and subsets a seed produces."""

from __future__ import annotations

import random

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.model.settings import load_mapping

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


def test_set_members_with_a_backslash_keep_the_definition_order(env):
    """information_schema writes a member `a\\b` as 'a\\\\b' (escaped): it is still that
    member, placed by its definition, not last."""
    env.sql(r"CREATE TABLE film (id INT PRIMARY KEY, title VARCHAR(40), v SET('a\\b', 'z'))")
    env.sql(r"INSERT INTO film VALUES (1, 't', 'z,a\\b')")
    assert env.sql("SELECT v FROM film WHERE id = 1") == [("a\\b,z",)]  # MySQL's order
    path = env.mapping("  - {name: film, from: film}\n")
    backfill(load_mapping(path), workers=1)
    _check(env, {1: {"v": ["a\\b", "z"]}})
    env.sql(r"INSERT INTO film VALUES (2, 't', 'z,a\\b')")
    env.sql("UPDATE film SET title = 'u' WHERE id = 1")
    run_cdc(load_mapping(path), mode="until-caught-up")
    _check(env, {1: {"v": ["a\\b", "z"]}, 2: {"v": ["a\\b", "z"]}})


def test_set_members_of_a_latin1_column_reach_the_documents_through_cdc(env):
    """The binlog lists a SET's members in the column's character set: a latin1 member with
    an accent is still that member after CDC, as after the backfill."""
    env.sql(
        "CREATE TABLE film (id INT PRIMARY KEY, title VARCHAR(40), "
        "v SET('élan', 'a', 'über'), e ENUM('x', 'ça')) CHARACTER SET latin1"
    )
    env.sql("INSERT INTO film VALUES (1, 't', 'über,élan', 'ça')")
    path = env.mapping("  - {name: film, from: film}\n")
    backfill(load_mapping(path), workers=1)
    _check(env, {1: {"v": ["élan", "über"], "e": "ça"}})
    env.sql("INSERT INTO film VALUES (2, 't', 'a,über,élan', 'ça')")
    env.sql("UPDATE film SET title = 'u' WHERE id = 1")
    run_cdc(load_mapping(path), mode="until-caught-up")
    _check(env, {1: {"v": ["élan", "über"], "e": "ça"}, 2: {"v": ["élan", "a", "über"], "e": "ça"}})
