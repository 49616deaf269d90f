"""Everything run as a source user with only the README's grants (`privileges.grant_statements`:
REPLICATION SLAVE, REPLICATION CLIENT on *.*, SELECT on the database), not as root.

MariaDB shows such a user no rows in information_schema.REFERENTIAL_CONSTRAINTS (they need
REFERENCES), so foreign keys come from SHOW CREATE TABLE: plan, init and CDC must see the same
cascades as for root, and plan blocks, naming the grant, where it cannot see a cascade's chain."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect
from migrator.source.privileges import grant_statements
from migrator.source.schema import introspect

from .conftest import Env, migrator_cmd

PARENT_CHILD = [
    "CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(20))",
    "CREATE TABLE child (id INT PRIMARY KEY, parent_id INT NOT NULL, note VARCHAR(20), "
    "CONSTRAINT fk_child_parent FOREIGN KEY (parent_id) REFERENCES parent(id) "
    "ON DELETE CASCADE ON UPDATE CASCADE)",
    "INSERT INTO parent VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    "INSERT INTO child VALUES (1, 1, 'x'), (2, 2, 'y'), (3, 3, 'z')",
]
MAPPING = "  - {name: parents, from: parent}\n  - {name: children, from: child}\n"


class User:
    def __init__(self, env: Env) -> None:
        self.env = env
        self.name = f"lp_{env.db[2:]}"
        self.account = f"'{self.name}'@'%'"
        password = uuid.uuid4().hex
        self.url = f"mysql://{self.name}:{password}@" + env.url.split("@", 1)[1]
        env.sql(f"CREATE USER {self.account} IDENTIFIED BY '{password}'")

    def grant_readme(self) -> None:
        """The README's grants up to `sync` (the write grants come only from dual_write on)."""
        for statement in grant_statements(self.env.db, self.account):
            if not statement.startswith("--"):
                self.env.sql(statement.rstrip(";"))

    def mapping(self, collections: str) -> Any:
        path = self.env.mapping(collections)
        path.write_text(path.read_text().replace(self.env.url, self.url))
        return path


@pytest.fixture
def user(env: Env) -> Iterator[User]:
    u = User(env)
    try:
        yield u
    finally:
        env.sql(f"DROP USER {u.account}")


def _cascades(report: dict[str, Any]) -> list[str]:
    return [c["message"] for c in report["checks"] if c["name"] == "fk_cascade"]


def test_plan_reports_cascades_to_a_user_with_the_readme_grants(env, user):
    env.sql(*PARENT_CHILD)
    user.grant_readme()
    path = user.mapping(MAPPING)
    report = json.loads(migrator_cmd("plan", "-m", str(path), "--json", check=0).stdout)
    assert report["privileges"]["cdc"]["ok"] and report["privileges"]["backfill"]["ok"]
    found = " ".join(_cascades(report))
    assert "child.fk_child_parent (parent_id -> parent) ON DELETE CASCADE" in found
    assert "child.fk_child_parent (parent_id -> parent) ON UPDATE CASCADE" in found


def test_init_writes_foreign_key_hints_for_a_user_with_the_readme_grants(env, user, tmp_path):
    env.sql(*PARENT_CHILD)
    user.grant_readme()
    out = tmp_path / "gen.yaml"
    migrator_cmd(
        "init", "--source", user.url, "--target", env.stack.mongo_url, "-o", str(out), check=0
    )
    text = out.read_text()
    assert (
        "# 1:N via fk_child_parent: embed child rows as an array "
        "(ON DELETE CASCADE: the binlog does not carry the cascade)" in text
    )
    assert "# N:1 via fk_child_parent: embed the parent row as a sub-document" in text


def test_cdc_applies_cascades_as_a_user_with_the_readme_grants(env, user):
    env.sql(*PARENT_CHILD)
    user.grant_readme()
    path = user.mapping(MAPPING)
    migrator_cmd("backfill", "-m", str(path), check=0)
    env.sql("DELETE FROM parent WHERE id = 1", "UPDATE parent SET id = 20 WHERE id = 2")
    migrator_cmd("cdc", "-m", str(path), "--until-caught-up", check=0)
    assert sorted(d["_id"] for d in env.target.parents.find()) == [3, 20]
    children = {d["_id"]: d["parent_id"] for d in env.target.children.find()}
    assert children == {2: 20, 3: 3}


# child -> link -> parent, both ON UPDATE CASCADE: a parent's new key reaches child through
# link, a table the mapping does not name.
CHAIN = [
    "CREATE TABLE parent (id INT PRIMARY KEY)",
    "CREATE TABLE link (parent_id INT PRIMARY KEY, "
    "FOREIGN KEY (parent_id) REFERENCES parent(id) ON UPDATE CASCADE)",
    "CREATE TABLE child (id INT PRIMARY KEY, link_pid INT, "
    "CONSTRAINT fk_child_link FOREIGN KEY (link_pid) REFERENCES link(parent_id) "
    "ON UPDATE CASCADE)",
]


def test_plan_blocks_naming_the_grant_when_a_cascade_passes_a_table_it_cannot_read(env, user):
    """Table grants on the mapped tables only: link is invisible, so whether a parent's change
    reaches child through it cannot be known. With link readable the same plan passes."""
    env.sql(*CHAIN)
    env.sql(
        f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {user.account}",
        f"GRANT SELECT ON `{env.db}`.`parent` TO {user.account}",
        f"GRANT SELECT ON `{env.db}`.`child` TO {user.account}",
    )
    path = user.mapping(MAPPING)
    p = migrator_cmd("plan", "-m", str(path), "--json", check=1)
    blocking = json.loads(p.stdout)["blocking"]
    assert [b for b in blocking if "fk_child_link" in b and f"SELECT ON `{env.db}`.`link`" in b]
    env.sql(f"GRANT SELECT ON `{env.db}`.`link` TO {user.account}")
    report = json.loads(migrator_cmd("plan", "-m", str(path), "--json", check=0).stdout)
    assert any("link" in m and "ON UPDATE CASCADE" in m for m in _cascades(report))


def test_plan_blocks_on_a_cascade_from_another_database(env, user):
    """The binlog CDC reads is filtered to the source database: a parent elsewhere whose
    changes cascade into a mapped table cannot be followed, whoever runs it."""
    other = f"{env.db}_o"
    env.sql(
        f"CREATE DATABASE `{other}`",
        f"CREATE TABLE `{other}`.parent (id INT PRIMARY KEY)",
        "CREATE TABLE parent (id INT PRIMARY KEY)",  # same name as the other database's
        "CREATE TABLE child (id INT PRIMARY KEY, parent_id INT, "
        f"CONSTRAINT fk_elsewhere FOREIGN KEY (parent_id) REFERENCES `{other}`.parent(id) "
        "ON DELETE CASCADE)",
    )
    try:
        user.grant_readme()
        path = user.mapping(MAPPING)
        for mapping in (path, env.mapping(MAPPING, name="root.yaml")):
            p = migrator_cmd("plan", "-m", str(mapping), "--json", check=1)
            report = json.loads(p.stdout)
            blocking = " ".join(report["blocking"])
            assert f"child.fk_elsewhere (parent_id -> {other}.parent) ON DELETE CASCADE" in (
                blocking
            )
            assert "another database" in blocking
            # not taken for a cascade from this database's table of the same name
            assert not [
                c
                for c in report["checks"]
                if c["level"] == "info" and "fk_elsewhere" in c["message"]
            ]
    finally:
        # this database's tables still reference it
        env.sql(
            "SET foreign_key_checks = 0", f"DROP DATABASE `{other}`", "SET foreign_key_checks = 1"
        )


def _ident(rng: random.Random) -> str:
    alphabet = "abcXYZ_09 `'\",().-é"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10))).strip() or "n"


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def test_foreign_keys_read_by_the_least_privileged_user_equal_root_s_information_schema(env, user):
    """Awkward names (spaces, backticks, quotes, commas, parentheses), composite keys, every
    rule, a reference to another database: what the user reads from SHOW CREATE TABLE is what
    root reads from information_schema."""
    rng = random.Random(8)
    other = f"{env.db}_o"
    env.sql(f"CREATE DATABASE `{other}`")
    try:
        env.sql(f"CREATE TABLE `{other}`.`far (x)` (a INT, b INT, PRIMARY KEY (a, b))")
        rules = ["", "ON DELETE CASCADE", "ON DELETE SET NULL", "ON DELETE NO ACTION"]
        rules.append("ON DELETE RESTRICT")
        updates = ["", "ON UPDATE CASCADE", "ON UPDATE SET NULL", "ON UPDATE NO ACTION"]
        parents: list[tuple[str, list[str]]] = []
        for i in range(8):
            name = f"{_ident(rng)}{i}"
            cols = [f"{_ident(rng)}{i}_{j}" for j in range(rng.randint(1, 3))]
            defs = [f"{_q(c)} INT NOT NULL" for c in cols]
            fks = []
            for k in range(rng.randint(0, 2)) if parents else ():
                ref, ref_cols = rng.choice(parents)
                mine = [f"{_ident(rng)}{i}_f{k}_{j}" for j in range(len(ref_cols))]
                defs += [f"{_q(c)} INT NULL" for c in mine]
                fks.append(
                    f"CONSTRAINT {_q(_ident(rng) + f'{i}.{k}')} FOREIGN KEY "
                    f"({', '.join(map(_q, mine))}) REFERENCES {_q(ref)} "
                    f"({', '.join(map(_q, ref_cols))}) {rng.choice(rules)} {rng.choice(updates)}"
                )
            if i == 5:
                defs += ["`fa` INT NULL", "`fb` INT NULL"]
                fks.append(
                    f"CONSTRAINT `to far` FOREIGN KEY (`fa`, `fb`) REFERENCES `{other}`."
                    "`far (x)` (`a`, `b`) ON DELETE CASCADE"
                )
            defs.append(f"`c{i}` VARCHAR(40) COMMENT 'it''s \\\\ CONSTRAINT `x` FOREIGN KEY (`y`)'")
            env.sql(
                f"CREATE TABLE {_q(name)} ({', '.join(defs)}, PRIMARY KEY "
                f"({', '.join(map(_q, cols))}){''.join(', ' + f for f in fks)})"
            )
            parents.append((name, cols))
        user.grant_readme()
        want = set(
            env.sql(
                "SELECT c.TABLE_NAME, c.CONSTRAINT_NAME, "
                "GROUP_CONCAT(k.COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR '\\0'), "
                "k.REFERENCED_TABLE_SCHEMA, c.REFERENCED_TABLE_NAME, "
                "GROUP_CONCAT(k.REFERENCED_COLUMN_NAME ORDER BY k.ORDINAL_POSITION "
                "SEPARATOR '\\0'), c.DELETE_RULE, c.UPDATE_RULE "
                "FROM information_schema.REFERENTIAL_CONSTRAINTS c "
                "JOIN information_schema.KEY_COLUMN_USAGE k ON k.CONSTRAINT_SCHEMA = "
                "c.CONSTRAINT_SCHEMA AND k.CONSTRAINT_NAME = c.CONSTRAINT_NAME "
                "AND k.TABLE_NAME = c.TABLE_NAME WHERE c.CONSTRAINT_SCHEMA = %s "
                "GROUP BY c.TABLE_NAME, c.CONSTRAINT_NAME",
                args=(env.db,),
            )
        )
        assert len(want) >= 6 and any(r[3] == other for r in want)
        conn = connect(parse_mysql_url(user.url))
        try:
            schema = introspect(conn, env.db)
        finally:
            conn.close()
        got = {
            (
                fk.table,
                fk.name,
                "\0".join(fk.columns),
                fk.ref_database or env.db,
                fk.ref_table,
                "\0".join(fk.ref_columns),
                fk.on_delete,
                fk.on_update,
            )
            for t in schema.tables.values()
            for fk in t.foreign_keys + t.outside_foreign_keys
        }
        assert got == want
    finally:
        # this database's tables still reference it
        env.sql(
            "SET foreign_key_checks = 0", f"DROP DATABASE `{other}`", "SET foreign_key_checks = 1"
        )


def test_verify_with_the_readme_verify_grant_reports_a_difference_while_cdc_runs(env, user):
    """README, Least privilege: verify needs `SELECT` on the mapped tables. A re-check that
    waits for a running CDC must not need more (SHOW MASTER STATUS needs REPLICATION CLIENT):
    the difference is reported, exit 1, not an error."""
    from .helpers import start_cdc

    env.sql(*PARENT_CHILD)
    env.sql(f"GRANT SELECT ON `{env.db}`.* TO {user.account}")
    cdc_path = env.mapping(MAPPING, name="cdc.yaml")  # CDC runs with its own (root) user
    migrator_cmd("backfill", "-m", str(cdc_path), check=0)
    verify_path = user.mapping(MAPPING)
    cdc = start_cdc(env, cdc_path)
    try:
        env.target.children.update_one({"_id": 2}, {"$set": {"note": "tampered"}})
        p = migrator_cmd("verify", "-m", str(verify_path), "--json")
        assert p.returncode == 1, p.stderr[-2000:]
        assert [d["_id"] for d in json.loads(p.stdout)["differences"]] == [2]
    finally:
        cdc.stop()
