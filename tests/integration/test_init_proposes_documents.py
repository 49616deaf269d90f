"""`migrator init --documents` proposes the documents a designer would draw from the foreign
keys: children nested in their parent (arrays in arrays), small parents copied in (a chain of
parents), join tables as many-to-many arrays with the far row merged in, the other direction
and every unsure choice as comments. The proposal is a working mapping: plan accepts it and
backfill and verify agree."""

from __future__ import annotations

import json

import yaml

from migrator.model.settings import YAMLLoader

from .conftest import migrator_cmd

SCHEMA = [
    "CREATE TABLE country (country_id INT PRIMARY KEY, country VARCHAR(50) NOT NULL)",
    "CREATE TABLE city (city_id INT PRIMARY KEY, city VARCHAR(50), country_id INT NOT NULL,"
    " FOREIGN KEY (country_id) REFERENCES country (country_id))",
    "CREATE TABLE address (address_id INT PRIMARY KEY, address VARCHAR(50), city_id INT,"
    " FOREIGN KEY (city_id) REFERENCES city (city_id))",
    "CREATE TABLE customer (customer_id INT PRIMARY KEY, name VARCHAR(50), address_id INT,"
    " FOREIGN KEY (address_id) REFERENCES address (address_id))",
    "CREATE TABLE film (film_id INT PRIMARY KEY, title VARCHAR(50), last_update DATETIME)",
    "CREATE TABLE actor (actor_id INT PRIMARY KEY, name VARCHAR(50), last_update DATETIME)",
    "CREATE TABLE film_actor (actor_id INT NOT NULL, film_id INT NOT NULL, last_update DATETIME,"
    " PRIMARY KEY (actor_id, film_id), FOREIGN KEY (actor_id) REFERENCES actor (actor_id),"
    " FOREIGN KEY (film_id) REFERENCES film (film_id))",
    "CREATE TABLE inventory (inventory_id INT PRIMARY KEY, film_id INT NOT NULL,"
    " FOREIGN KEY (film_id) REFERENCES film (film_id))",
    "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT,"
    " FOREIGN KEY (customer_id) REFERENCES customer (customer_id))",
    "CREATE TABLE order_items (order_id INT NOT NULL, line_no INT NOT NULL, qty INT,"
    " PRIMARY KEY (order_id, line_no), FOREIGN KEY (order_id) REFERENCES orders (id))",
    "CREATE TABLE item_notes (order_id INT NOT NULL, line_no INT NOT NULL, n INT NOT NULL,"
    " note VARCHAR(40), PRIMARY KEY (order_id, line_no, n), FOREIGN KEY (order_id, line_no)"
    " REFERENCES order_items (order_id, line_no))",
    "INSERT INTO country VALUES (1, 'Norway')",
    "INSERT INTO city VALUES (10, 'Oslo', 1)",
    "INSERT INTO address VALUES (100, 'Main St 1', 10)",
    "INSERT INTO customer VALUES (7, 'ann', 100)",
    "INSERT INTO film VALUES (1, 'One', '2020-01-01'), (2, 'Two', '2020-01-02')",
    "INSERT INTO actor VALUES (5, 'Ann', '2020-01-01'), (6, 'Bob', '2020-01-01')",
    "INSERT INTO film_actor VALUES (5, 1, '2021-01-01'), (6, 1, NULL), (6, 2, NULL)",
    "INSERT INTO inventory VALUES (1, 1), (2, 1)",
    "INSERT INTO orders VALUES (1, 7)",
    "INSERT INTO order_items VALUES (1, 1, 2), (1, 2, 3)",
    "INSERT INTO item_notes VALUES (1, 1, 1, 'gift'), (1, 1, 2, 'wrap')",
    "ANALYZE TABLE country, city, address, customer, film, actor, film_actor, inventory",
]


def test_init_documents_proposes_trees_that_plan_backfill_and_verify_accept(env, tmp_path):
    env.sql(*SCHEMA)
    out = tmp_path / "docs.yaml"
    migrator_cmd(
        "init", "--documents", "--source", env.url, "--target", env.stack.mongo_url,
        "-o", str(out), check=0,
    )  # fmt: skip
    text = out.read_text()
    data = yaml.load(text, Loader=YAMLLoader)  # the mapping format's own (SafeLoader) rules
    colls = {c["name"]: c for c in data["collections"]}
    # join tables and nested children are not collections of their own
    assert "film_actor" not in colls and "order_items" not in colls and "item_notes" not in colls
    film = {e["as"]: e for e in colls["film"]["embed"] if "as" in e}
    assert film["actor"]["from"] == "film_actor"
    merged = film["actor"]["embed"][0]
    assert merged["merge"] is True and merged["from"] == "actor"
    assert merged["exclude"] == ["last_update"]  # in both: the join row's stays
    assert "# the other direction (actor holding its film)" in text
    items = next(e for e in colls["orders"]["embed"] if e.get("as") == "order_items")
    assert items["embed"][0]["as"] == "item_notes"  # an array inside an array
    address = next(e for e in colls["customer"]["embed"] if e.get("as") == "address")
    assert address["embed"][0]["as"] == "city"
    assert address["embed"][0]["embed"][0]["as"] == "country"  # a chain of parents
    text = text.replace(f"_migrator_{env.db}", env.state_db)
    out.write_text(text)
    password = env.url.split("://migrator:", 1)[1].split("@", 1)[0]
    secret = {"MIGRATOR_SOURCE_PASSWORD": password}
    p = migrator_cmd("plan", "-m", str(out), "--json", env=secret, check=0)
    assert json.loads(p.stdout)["ok"] is True
    migrator_cmd("backfill", "-m", str(out), env=secret, check=0)
    migrator_cmd("verify", "-m", str(out), env=secret, check=0)
    film1 = env.target.film.find_one({"_id": 1})
    assert [a["name"] for a in film1["actor"]] == ["Ann", "Bob"]
    order = env.target.orders.find_one({"_id": 1})
    assert [n["note"] for n in order["order_items"][0]["item_notes"]] == ["gift", "wrap"]
    assert order["customer"]["address"]["city"]["country"]["country"] == "Norway"


def test_init_documents_keeps_a_join_table_between_rows_of_one_table(env, tmp_path):
    """follows (follower_id, followee_id) joins users to users. init --documents takes it for
    a many-to-many join, so it is neither a collection nor nested (no collection may hold
    its own table again below it, and the other direction is skipped the same way): the
    proposal drops the table without a word, and plan, backfill and verify all pass with
    its rows in no document."""
    env.sql(
        "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE follows (follower_id INT NOT NULL, followee_id INT NOT NULL,"
        " PRIMARY KEY (follower_id, followee_id),"
        " FOREIGN KEY (follower_id) REFERENCES users(id),"
        " FOREIGN KEY (followee_id) REFERENCES users(id))",
        "INSERT INTO users VALUES (1, 'ann'), (2, 'bob')",
        "INSERT INTO follows VALUES (1, 2), (2, 1)",
        "ANALYZE TABLE users, follows",
    )
    out = tmp_path / "docs.yaml"
    migrator_cmd(
        "init", "--documents", "--source", env.url, "--target", env.stack.mongo_url,
        "-o", str(out), check=0,
    )  # fmt: skip
    text = out.read_text()
    assert "from: follows" in text or "follows" in text.split("collections:", 1)[1], text


def test_init_documents_names_a_many_to_many_array_apart_from_a_column(env, tmp_path):
    """films keeps a denormalised text column `actors`; film_actors joins films to actors.
    init --documents names the many-to-many array after the far table (`as: actors`) without
    checking the film's columns, so plan, backfill and verify all refuse the proposal
    ("'actors' is given twice in one document")."""
    env.sql(
        "CREATE TABLE films (id INT PRIMARY KEY, title VARCHAR(20), actors VARCHAR(100))",
        "CREATE TABLE actors (id INT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE film_actors (film_id INT NOT NULL, actor_id INT NOT NULL,"
        " PRIMARY KEY (film_id, actor_id), FOREIGN KEY (film_id) REFERENCES films(id),"
        " FOREIGN KEY (actor_id) REFERENCES actors(id))",
        "INSERT INTO films VALUES (1, 'a', 'x, y'), (2, 'b', '')",
        "INSERT INTO actors VALUES (1, 'x'), (2, 'y')",
        "INSERT INTO film_actors VALUES (1, 1), (1, 2), (2, 1)",
        "ANALYZE TABLE films, actors, film_actors",
    )
    out = tmp_path / "docs.yaml"
    migrator_cmd(
        "init", "--documents", "--source", env.url, "--target", env.stack.mongo_url,
        "-o", str(out), check=0,
    )  # fmt: skip
    out.write_text(out.read_text().replace(f"_migrator_{env.db}", env.state_db))
    password = env.url.split("://migrator:", 1)[1].split("@", 1)[0]
    secret = {"MIGRATOR_SOURCE_PASSWORD": password}
    p = migrator_cmd("plan", "-m", str(out), "--json", env=secret)
    report = json.loads(p.stdout)
    assert report["ok"] is True, report.get("blocking")
