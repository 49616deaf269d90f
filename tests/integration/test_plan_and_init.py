"""`plan` preflight findings and `init` mapping generation against the real server."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from migrator.backfill.copy import backfill
from migrator.model.settings import load_mapping

from .conftest import migrator_cmd
from .helpers import make_shop


def test_plan_on_the_shop_is_ready_and_describes_everything(env):
    path = make_shop(env, orders=40)
    p = migrator_cmd("plan", "-m", str(path), "--json", check=0)
    report = json.loads(p.stdout)
    assert report["ok"] is True and report["blocking"] == []
    checks = {(c["name"], c["level"]) for c in report["checks"]}
    for name in (
        "binlog_format",
        "binlog_row_image",
        "binlog_row_metadata",
        "privileges",
        "binlog_retention",
    ):
        assert (name, "ok") in checks, name
    msgs = " ".join(c["message"] for c in report["checks"])
    assert "fk_items_order" in msgs and "ON DELETE CASCADE" in msgs
    assert "fk_orders_customer" in msgs and "ON DELETE SET NULL" in msgs
    colls = {c["name"]: c for c in report["collections"]}
    assert set(colls) == {"orders", "customers", "products"}
    sample = colls["orders"]["sample"]
    assert sample["_id"] == 1 and isinstance(sample["items"], list)
    assert colls["orders"]["embeds"] == [
        "items <- order_items (1:N)",
        "customer <- customers (N:1)",
    ]
    # the rich rendering works too, and says it is ready
    p = migrator_cmd("plan", "-m", str(path), check=0)
    assert "ready" in p.stdout and "sample document: orders" in p.stdout


@pytest.mark.parametrize(
    ("variable", "bad", "expected"),
    [
        ("binlog_row_image", "MINIMAL", "binlog_row_image=MINIMAL: must be FULL"),
        ("binlog_format", "MIXED", "binlog_format=MIXED: must be ROW"),
        ("binlog_row_metadata", "MINIMAL", "binlog_row_metadata=MINIMAL: must be FULL"),
        ("log_bin_compress", "ON", "log_bin_compress=ON: CDC cannot read compressed"),
    ],
)
def test_plan_blocks_on_binlog_settings(env, variable, bad, expected):
    path = make_shop(env, orders=10)
    old = env.sql(f"SELECT @@GLOBAL.{variable}")[0][0]
    env.sql(f"SET GLOBAL {variable} = '{bad}'")
    try:
        p = migrator_cmd("plan", "-m", str(path), "--json", check=1)
    finally:
        env.sql(f"SET GLOBAL {variable} = {old!r}")  # a str quoted, a flag's 0 not
    report = json.loads(p.stdout)
    assert report["ok"] is False
    assert any(expected in b for b in report["blocking"])


def test_plan_blocks_on_missing_privileges(env):
    path = make_shop(env, orders=10)
    env.sql(
        "CREATE USER IF NOT EXISTS 'reader'@'%' IDENTIFIED BY 'rpw'",
        f"GRANT SELECT ON `{env.db}`.* TO 'reader'@'%'",
    )
    text = path.read_text().replace(env.url, "mysql://reader:rpw@" + env.url.split("@", 1)[1])
    path.write_text(text)
    try:
        p = migrator_cmd("plan", "-m", str(path), "--json", check=1)
    finally:
        env.sql("DROP USER 'reader'@'%'")
    blocking = " ".join(json.loads(p.stdout)["blocking"])
    assert "REPLICATION SLAVE" in blocking and "REPLICATION CLIENT" in blocking
    assert "SELECT (" not in blocking


def test_plan_warns_about_lossy_types_and_bool_values(env):
    env.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, big DECIMAL(40,2), fine DATETIME(6), "
        "flag TINYINT(1), u BIGINT UNSIGNED)",
        "INSERT INTO t VALUES (1, 1, NOW(), 5, 1)",
    )
    path = env.mapping("  - {name: t, from: t}\n")
    report = json.loads(migrator_cmd("plan", "-m", str(path), "--json", check=0).stdout)
    warns = " ".join(c["message"] for c in report["checks"] if c["level"] == "warn")
    assert "DECIMAL(40,2) can exceed Decimal128's 34 digits" in warns
    assert "DATETIME(6) loses microseconds" in warns
    assert "holds values other than 0/1" in warns
    assert "BIGINT UNSIGNED above 2^63-1" in warns


def test_plan_names_the_fields_reverse_sync_cannot_restore(env):
    env.sql("CREATE TABLE t (id INT PRIMARY KEY, n INT, price DECIMAL(9,2), at DATETIME)")
    path = env.mapping(
        "  - name: t\n    from: t\n    fields:\n"
        "      n: {column: n, type: bool}\n"
        "      price: {column: price, type: double}\n"
        "      at: {column: at, type: date}\n"
    )
    report = json.loads(migrator_cmd("plan", "-m", str(path), "--json", check=0).stdout)
    rev = [c["message"] for c in report["checks"] if c["name"] == "reverse"]
    assert len(rev) == 3 and all("reverse sync cannot restore" in m for m in rev)
    assert any("t.n: `type: bool` keeps only zero / non-zero" in m for m in rev)


def test_init_writes_a_working_mapping_without_the_password(env, tmp_path):
    make_shop(env, orders=20)
    env.sql(
        "CREATE TABLE odd (id INT PRIMARY KEY, big DECIMAL(40,2), fine DATETIME(6), "
        "flag TINYINT(1))",
        "INSERT INTO odd VALUES (1, 1.5, NOW(6), 2)",
        "CREATE TABLE nokey (a INT)",
    )
    out = tmp_path / "gen.yaml"
    p = migrator_cmd(
        "init", "--source", env.url, "--target", env.stack.mongo_url, "-o", str(out), check=0
    )
    assert "MIGRATOR_SOURCE_PASSWORD" in p.stderr
    text = out.read_text()
    password = env.url.split("://migrator:", 1)[1].split("@", 1)[0]
    assert password not in text and "${MIGRATOR_SOURCE_PASSWORD}" in text
    assert "DECIMAL(40,2) can exceed" in text and "DATETIME(6) loses microseconds" in text
    assert "DECISION: holds values other than 0/1" in text
    assert "table 'nokey' has no primary key" in text
    assert "# 1:N via fk_items_order: embed order_items rows as an array" in text
    assert (
        "{as: order_items, from: order_items, on: {order_id: id}, many: true, "
        "order_by: [line_no]}" in text
    )
    assert "# N:1 via fk_orders_customer" in text
    data = yaml.safe_load(text)
    assert [c["name"] for c in data["collections"]] == [
        "categories",
        "customers",
        "departments",
        "odd",
        "order_items",
        "orders",
        "product_categories",
        "products",
    ]
    # the generated file backfills as it is, with the password from the environment
    import os

    os.environ["MIGRATOR_SOURCE_PASSWORD"] = password
    try:
        mapping = load_mapping(out)
        mapping = mapping.model_copy(
            update={"state": mapping.state.model_copy(update={"database": env.state_db})}
        )
        summary = backfill(mapping, workers=1)
    finally:
        del os.environ["MIGRATOR_SOURCE_PASSWORD"]
    by = {c.name: c.documents for c in summary.collections}
    assert by == {
        "categories": 8,
        "customers": 30,
        "departments": 3,
        "odd": 1,
        "order_items": env.sql("SELECT COUNT(*) FROM order_items")[0][0],
        "orders": 20,
        "product_categories": env.sql("SELECT COUNT(*) FROM product_categories")[0][0],
        "products": 10,
    }
    assert env.target.order_items.find_one()["_id"].keys() == {"order_id", "line_no"}


def test_init_refuses_to_overwrite(env, tmp_path):
    out = tmp_path / "gen.yaml"
    out.write_text("keep me")
    p = migrator_cmd(
        "init", "--source", env.url, "--target", env.stack.mongo_url, "-o", str(out), check=2
    )
    assert "--force" in p.stderr and out.read_text() == "keep me"


def test_init_takes_the_target_database_from_the_url(env, tmp_path):
    env.sql("CREATE TABLE t (id INT PRIMARY KEY)")
    out = tmp_path / "gen.yaml"
    base = env.stack.mongo_url.split("/?", 1)
    target = f"{base[0].rstrip('/')}/other_db" + (f"?{base[1]}" if len(base) > 1 else "")
    migrator_cmd("init", "--source", env.url, "--target", target, "-o", str(out), check=0)
    data = yaml.safe_load(out.read_text())
    assert data["target"]["database"] == "other_db"
    out2 = tmp_path / "gen2.yaml"
    migrator_cmd(
        "init", "--source", env.url, "--target", env.stack.mongo_url, "-o", str(out2), check=0
    )
    assert yaml.safe_load(out2.read_text())["target"]["database"] == env.db


def test_uncommenting_every_embed_init_suggests_gives_a_mapping_plan_accepts(
    env, tmp_path, monkeypatch
):
    """A table with a parent and children gets one `embed:` list, not one block per foreign
    key (two `embed:` keys would keep only the last); names never collide, even for two keys
    to one parent or a table that points at itself."""
    env.sql(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40))",
        "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, CONSTRAINT fk_orders_customer "
        "FOREIGN KEY (customer_id) REFERENCES customers (id))",
        "CREATE TABLE order_items (order_id INT, line_no INT, qty INT, "
        "PRIMARY KEY (order_id, line_no), CONSTRAINT fk_items_order FOREIGN KEY (order_id) "
        "REFERENCES orders (id) ON DELETE CASCADE)",
        "CREATE TABLE accounts (id INT PRIMARY KEY)",
        "CREATE TABLE transfers (id INT PRIMARY KEY, from_account INT, to_account INT, "
        "CONSTRAINT fk_from FOREIGN KEY (from_account) REFERENCES accounts (id), "
        "CONSTRAINT fk_to FOREIGN KEY (to_account) REFERENCES accounts (id))",
        "CREATE TABLE staff (id INT PRIMARY KEY, manager_id INT, "
        "CONSTRAINT fk_manager FOREIGN KEY (manager_id) REFERENCES staff (id))",
        # no primary key: cannot be an array's elements, so nothing to uncomment for it
        "CREATE TABLE audit_log (customer_id INT, what VARCHAR(20), CONSTRAINT fk_log_customer "
        "FOREIGN KEY (customer_id) REFERENCES customers (id))",
        "INSERT INTO customers VALUES (1, 'Ada')",
        "INSERT INTO orders VALUES (10, 1)",
        "INSERT INTO order_items VALUES (10, 1, 3), (10, 2, 4)",
        "INSERT INTO accounts VALUES (1), (2)",
        "INSERT INTO transfers VALUES (5, 1, 2)",
        "INSERT INTO staff VALUES (1, NULL), (2, 1)",
    )
    out = tmp_path / "gen.yaml"
    migrator_cmd(
        "init", "--source", env.url, "--target", env.stack.mongo_url, "-o", str(out), check=0
    )
    # uncomment every suggested embed line, as a user would: drop the leading '# '
    suggestion = re.compile(r"^(\s*)# (embed:|  - \{as: )")
    lines = out.read_text().splitlines()
    edited = [suggestion.sub(r"\1\2", ln) for ln in lines]
    assert sum(a != b for a, b in zip(lines, edited, strict=True)) == 16
    text = "\n".join(edited).replace(f"_migrator_{env.db}", env.state_db) + "\n"
    out.write_text(text)

    password = env.url.split("://migrator:", 1)[1].split("@", 1)[0]
    p = migrator_cmd(
        "plan", "-m", str(out), "--json", env={"MIGRATOR_SOURCE_PASSWORD": password}, check=0
    )
    assert json.loads(p.stdout)["ok"] is True
    monkeypatch.setenv("MIGRATOR_SOURCE_PASSWORD", password)
    embeds = {
        c.name: sorted((e.from_, tuple(e.on.items())) for e in c.embed)
        for c in load_mapping(out).collections
        if c.embed
    }
    assert embeds["orders"] == [
        ("customers", (("id", "customer_id"),)),
        ("order_items", (("order_id", "id"),)),
    ]
    assert embeds["transfers"] == [
        ("accounts", (("id", "from_account"),)),
        ("accounts", (("id", "to_account"),)),
    ]
    assert embeds["accounts"] == [
        ("transfers", (("from_account", "id"),)),
        ("transfers", (("to_account", "id"),)),
    ]
    assert embeds["staff"] == [
        ("staff", (("id", "manager_id"),)),
        ("staff", (("manager_id", "id"),)),
    ]
    assert embeds["customers"] == [("orders", (("customer_id", "id"),))]
