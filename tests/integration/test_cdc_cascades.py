"""Foreign-key cascades the binlog never carries (ON UPDATE CASCADE, ON DELETE CASCADE,
SET NULL), applied by CDC into separate collections, embedded elements and sub-documents, to
any depth. Each ends equal to a fresh backfill of the same source."""

from __future__ import annotations

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.cdc.upkeep import request_sweeps
from migrator.model.settings import load_mapping

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import migrator_cmd
from .helpers import applier_for

# A sakila-like schema: ON UPDATE CASCADE on every foreign key, composite keys in the join table.
WORLD = [
    "CREATE TABLE country (country_id INT PRIMARY KEY, country VARCHAR(50) NOT NULL)",
    "CREATE TABLE city (city_id INT PRIMARY KEY, city VARCHAR(50) NOT NULL, "
    "country_id INT NOT NULL, FOREIGN KEY (country_id) REFERENCES country(country_id) "
    "ON UPDATE CASCADE ON DELETE RESTRICT)",
    "CREATE TABLE address (address_id INT PRIMARY KEY, address VARCHAR(50) NOT NULL, "
    "city_id INT NOT NULL, FOREIGN KEY (city_id) REFERENCES city(city_id) "
    "ON UPDATE CASCADE ON DELETE RESTRICT)",
    "CREATE TABLE actor (actor_id INT PRIMARY KEY, name VARCHAR(50) NOT NULL)",
    "CREATE TABLE film (film_id INT PRIMARY KEY, title VARCHAR(50) NOT NULL)",
    "CREATE TABLE film_actor (actor_id INT NOT NULL, film_id INT NOT NULL, "
    "role VARCHAR(20), PRIMARY KEY (actor_id, film_id), "
    "FOREIGN KEY (actor_id) REFERENCES actor(actor_id) ON UPDATE CASCADE ON DELETE CASCADE, "
    "FOREIGN KEY (film_id) REFERENCES film(film_id) ON UPDATE CASCADE ON DELETE CASCADE)",
    "INSERT INTO country VALUES (1, 'Aland'), (2, 'Borduria'), (3, 'Carpania')",
    "INSERT INTO city VALUES (10, 'A1', 1), (11, 'A2', 1), (20, 'B1', 2), (30, 'C1', 3)",
    "INSERT INTO address VALUES (100, 'a', 10), (101, 'b', 10), (110, 'c', 11), (200, 'd', 20)",
    "INSERT INTO actor VALUES (1, 'Ann'), (2, 'Bob'), (3, 'Cy')",
    "INSERT INTO film VALUES (1, 'One'), (2, 'Two'), (3, 'Three')",
    "INSERT INTO film_actor VALUES (1, 1, 'lead'), (1, 2, NULL), (2, 2, 'lead'), (3, 1, NULL), "
    "(3, 3, 'cameo')",
]

WORLD_MAPPING = """\
  - {name: countries, from: country}
  - name: cities
    from: city
    embed:
      - {as: country, from: country, on: {country_id: country_id}, many: false}
      - {as: addresses, from: address, on: {city_id: city_id}, many: true}
  - name: addresses
    from: address
    embed:
      - {as: city, from: city, on: {city_id: city_id}, many: false}
  - name: actors
    from: actor
    embed:
      - {as: films, from: film_actor, on: {actor_id: actor_id}, many: true}
  - {name: film_actor, from: film_actor}
  - name: films
    from: film
    embed:
      - {as: cast, from: film_actor, on: {film_id: film_id}, many: true, order_by: [role]}
"""


@pytest.fixture
def world(env):
    env.sql(*WORLD)
    path = env.mapping(WORLD_MAPPING)
    backfill(load_mapping(path), workers=1)
    return path


def converge(env, path) -> None:
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0, list(env.state.dead_letters.find())
    assert_same_as_fresh_backfill(env, path)


def test_on_update_cascade_into_another_collection(env, world):
    """The issue's case: country 1 -> 1000; city rows say 1000 in MySQL, so must documents."""
    env.sql("UPDATE country SET country_id = 1000 WHERE country_id = 1")
    converge(env, world)
    assert sorted(d["_id"] for d in env.target.cities.find({"country_id": 1000})) == [10, 11]
    assert env.target.cities.find_one({"_id": 10})["country"]["country_id"] == 1000


def test_on_update_cascade_two_levels_and_into_embedded_elements(env, world):
    env.sql(
        "UPDATE city SET city_id = 500 WHERE city_id = 10",  # address.city_id follows
        "UPDATE country SET country_id = 9 WHERE country_id = 2",
    )
    converge(env, world)
    assert sorted(d["_id"] for d in env.target.addresses.find({"city_id": 500})) == [100, 101]
    assert env.target.addresses.find_one({"_id": 100})["city"]["city_id"] == 500


def test_on_update_cascade_rekeys_composite_primary_keys(env, world):
    """film_actor's key contains actor_id: its documents get new _ids; the arrays embedding
    film_actor rows in actors and films follow."""
    env.sql(
        "UPDATE actor SET actor_id = 900 WHERE actor_id = 3",
        "UPDATE film SET film_id = 70 WHERE film_id = 2",
    )
    converge(env, world)
    assert env.target.film_actor.find_one({"_id": {"actor_id": 900, "film_id": 3}})
    assert env.target.film_actor.find_one({"_id": {"actor_id": 3, "film_id": 3}}) is None
    assert [f["film_id"] for f in env.target.actors.find_one({"_id": 1})["films"]] == [1, 70]


def test_on_delete_cascade_into_separate_collections_and_arrays(env, world):
    env.sql("DELETE FROM film WHERE film_id = 2", "DELETE FROM actor WHERE actor_id = 3")
    converge(env, world)
    assert env.target.film_actor.count_documents({"_id.film_id": 2}) == 0
    assert [f["film_id"] for f in env.target.actors.find_one({"_id": 1})["films"]] == [1]
    assert [c["actor_id"] for c in env.target.films.find_one({"_id": 1})["cast"]] == [1]


DEEP = [
    "CREATE TABLE region (id INT PRIMARY KEY, name VARCHAR(20))",
    "CREATE TABLE customer (id INT PRIMARY KEY, region_id INT NULL, name VARCHAR(20), "
    "FOREIGN KEY (region_id) REFERENCES region(id) ON DELETE SET NULL ON UPDATE CASCADE)",
    "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT NOT NULL, note VARCHAR(20), "
    "FOREIGN KEY (customer_id) REFERENCES customer(id) ON DELETE CASCADE ON UPDATE CASCADE)",
    "CREATE TABLE item (order_id INT NOT NULL, line INT NOT NULL, sku VARCHAR(10), "
    "PRIMARY KEY (order_id, line), "
    "FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE CASCADE ON UPDATE CASCADE)",
    "CREATE TABLE shipment (id INT PRIMARY KEY, order_id INT NULL, "
    "FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE SET NULL ON UPDATE SET NULL)",
    "INSERT INTO region VALUES (1, 'north'), (2, 'south')",
    "INSERT INTO customer VALUES (1, 1, 'a'), (2, 1, 'b'), (3, 2, 'c')",
    "INSERT INTO orders VALUES (10, 1, 'x'), (11, 1, 'y'), (20, 2, 'z'), (30, 3, 'w')",
    "INSERT INTO item VALUES (10, 1, 's1'), (10, 2, 's2'), (11, 1, 's3'), (20, 1, 's4'), "
    "(30, 1, 's5')",
    "INSERT INTO shipment VALUES (1, 10), (2, 11), (3, 20), (4, 30)",
]

DEEP_MAPPING = """\
  - {name: regions, from: region}
  - name: customers
    from: customer
    embed:
      - {as: region, from: region, on: {id: region_id}, many: false}
  - {name: orders, from: orders}
  - {name: items, from: item}
  - {name: shipments, from: shipment}
  - name: customer_orders
    from: customer
    embed:
      - {as: orders, from: orders, on: {customer_id: id}, many: true}
"""


@pytest.fixture
def deep(env):
    env.sql(*DEEP)
    path = env.mapping(DEEP_MAPPING)
    backfill(load_mapping(path), workers=1)
    return path


def test_on_delete_cascade_three_levels_deep_across_collections(env, deep):
    """customer -> orders -> item (CASCADE) and -> shipment (SET NULL): none of these rows
    is in the binlog, each lives in its own collection."""
    env.sql("DELETE FROM customer WHERE id = 1")
    converge(env, deep)
    assert env.target.orders.count_documents({"customer_id": 1}) == 0
    assert env.target.items.count_documents({"_id.order_id": {"$in": [10, 11]}}) == 0
    assert env.target.shipments.find_one({"_id": 1})["order_id"] is None


def test_set_null_and_update_cascade_chains(env, deep):
    env.sql(
        "DELETE FROM region WHERE id = 2",  # customer 3 region -> NULL
        "UPDATE region SET id = 5 WHERE id = 1",  # customers 1, 2 follow
        "UPDATE customer SET id = 7 WHERE id = 2",  # orders.customer_id follows
        "UPDATE orders SET id = 99 WHERE id = 20",  # item keys follow; shipment.order_id NULL
    )
    converge(env, deep)
    assert env.target.customers.find_one({"_id": 3})["region"] is None
    assert env.target.customers.find_one({"_id": 1})["region"]["id"] == 5
    assert env.target.items.find_one({"_id": {"order_id": 99, "line": 1}})
    assert env.target.shipments.find_one({"_id": 3})["order_id"] is None


def test_plan_blocks_a_cascade_cdc_cannot_follow(env):
    """A cascade into a collection whose documents do not carry the foreign key cannot be
    found by CDC: plan says so and blocks instead of claiming CDC applies it."""
    from migrator.preflight.plan import preflight

    env.sql(*DEEP)
    path = env.mapping("  - {name: orders, from: orders, exclude: [customer_id]}\n")
    report = preflight(load_mapping(path))
    blocks = [c.message for c in report.checks if c.level == "block"]
    assert any("customer_id" in b and "orders" in b for b in blocks), blocks


def test_plan_accepts_a_chain_whose_keys_only_the_deleted_aggregate_holds(env):
    """root -> child (ON DELETE CASCADE) -> grandchild (ON DELETE SET NULL, referencing a
    child column the condition does not fix). The child rows' keys live only in the root's
    array, which goes with the root; CDC still reads them there before deleting, so plan does
    not block, and the grandchildren's documents lose the reference."""
    from migrator.preflight.plan import preflight

    env.sql(
        "CREATE TABLE r (id INT PRIMARY KEY)",
        "CREATE TABLE c (cid INT PRIMARY KEY, r_id INT NOT NULL, "
        "FOREIGN KEY (r_id) REFERENCES r(id) ON DELETE CASCADE)",
        "CREATE TABLE g (gid INT PRIMARY KEY, c_id INT NULL, "
        "FOREIGN KEY (c_id) REFERENCES c(cid) ON DELETE SET NULL)",
        "INSERT INTO r VALUES (1), (2)",
        "INSERT INTO c VALUES (10, 1), (11, 1), (20, 2)",
        "INSERT INTO g VALUES (100, 10), (101, 11), (200, 20)",
    )
    path = env.mapping(
        "  - name: rs\n    from: r\n    embed:\n      - {as: cs, from: c, on: {r_id: id}}\n"
        "  - {name: gs, from: g}\n"
    )
    report = preflight(load_mapping(path))
    assert not [c.message for c in report.checks if c.level == "block"]
    backfill(load_mapping(path), workers=1)
    env.sql("DELETE FROM r WHERE id = 1")
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0
    assert [d["c_id"] for d in env.target.gs.find({}).sort("_id", 1)] == [None, None, 20]
    assert_same_as_fresh_backfill(env, path)


def test_a_parent_key_moved_between_the_copy_s_reads_is_met_by_cdc(env, monkeypatch):
    """The copy reads a page of root rows, then the N:1 parents they point at, as separate
    statements. A parent's key moved in between (ON UPDATE CASCADE moves the root rows with
    it, with no event of theirs): the document is written without its sub-document, and CDC
    replaying the key change must find it through MySQL (the rows now pointing at the new
    key), not through the old key it never held."""
    from migrator.model.urls import parse_mysql_url
    from migrator.source import reader as reader_mod
    from migrator.source.connection import connect

    env.sql(
        "CREATE TABLE kinds (id INT PRIMARY KEY, label VARCHAR(20))",
        "CREATE TABLE things (id INT PRIMARY KEY, kind_id INT, note VARCHAR(20), "
        "FOREIGN KEY (kind_id) REFERENCES kinds(id) ON UPDATE CASCADE)",
        "INSERT INTO kinds VALUES (1, 'one'), (2, 'two')",
        "INSERT INTO things VALUES (5, 1, 'a'), (6, 2, 'b')",
    )
    path = env.mapping(
        "  - name: things\n    from: things\n    embed:\n"
        "      - {as: kind, from: kinds, on: {id: kind_id}, many: false}\n"
    )
    original = reader_mod.ChunkReader.read_embeds
    moved = []

    def read_embeds(self, rows):
        if not moved and self.plan.name == "things":
            other = connect(parse_mysql_url(env.url))
            try:
                other.cursor().execute("UPDATE kinds SET id = 9 WHERE id = 1")
                other.commit()
            finally:
                other.close()
            moved.append(1)
        return original(self, rows)

    monkeypatch.setattr(reader_mod.ChunkReader, "read_embeds", read_embeds)
    backfill(load_mapping(path), workers=1)
    assert moved
    monkeypatch.undo()
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.target.things.find_one({"_id": 5})["kind"] == {"id": 9, "label": "one"}
    assert_same_as_fresh_backfill(env, path)


def test_rows_entering_the_filter_through_on_update_cascade_get_documents(env):
    """`cities` holds cities outside country 1 (a `filter`). `UPDATE country SET country_id =
    1000 WHERE country_id = 1` moves cities 10 and 11 into the collection by ON UPDATE CASCADE
    (no binlog event for them, and no document holding the old value for discovery to find):
    they get their documents."""
    env.sql(
        "CREATE TABLE country (country_id INT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE city (city_id INT PRIMARY KEY, name VARCHAR(20), country_id INT NOT NULL, "
        "FOREIGN KEY (country_id) REFERENCES country(country_id) ON UPDATE CASCADE)",
        "INSERT INTO country VALUES (1, 'A'), (2, 'B')",
        "INSERT INTO city VALUES (10, 'a1', 1), (11, 'a2', 1), (20, 'b1', 2)",
    )
    path = env.mapping(
        "  - {name: countries, from: country}\n"
        '  - {name: cities, from: city, filter: "country_id <> 1"}\n'
    )
    backfill(load_mapping(path), workers=1)
    assert env.target.cities.count_documents({}) == 1
    env.sql("UPDATE country SET country_id = 1000 WHERE country_id = 1")
    converge(env, path)
    assert sorted(d["_id"] for d in env.target.cities.find()) == [10, 11, 20]


def test_on_delete_cascade_matches_keys_as_mysql_does(env):
    """MySQL matches foreign keys through the column's collation (case-insensitive by
    default): city 2 references country 'US' as 'us', and `DELETE FROM country WHERE code =
    'US'` cascades to it; CDC finds and deletes city 2's document too, not only those holding
    exactly 'US'."""
    env.sql(
        "CREATE TABLE country (code VARCHAR(2) PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE city (id INT PRIMARY KEY, name VARCHAR(20), country_code VARCHAR(2), "
        "FOREIGN KEY (country_code) REFERENCES country(code) ON DELETE CASCADE)",
        "INSERT INTO country VALUES ('US', 'States'), ('FR', 'France')",
        "INSERT INTO city VALUES (1, 'NYC', 'US'), (2, 'LA', 'us'), (3, 'Paris', 'FR')",
    )
    path = env.mapping("  - {name: countries, from: country}\n  - {name: cities, from: city}\n")
    backfill(load_mapping(path), workers=1)
    env.sql("DELETE FROM country WHERE code = 'US'")
    assert env.sql("SELECT COUNT(*) FROM city")[0][0] == 1
    converge(env, path)
    assert sorted(d["_id"] for d in env.target.cities.find()) == [3]


def test_a_delete_chain_through_documents_newer_than_the_event_leaves_nothing_behind(env):
    """customer -> orders -> item, replayed over orders documents copied after the delete (a
    newer snapshot): the item documents the chain reaches through those orders go too (the
    dangling-reference sweep)."""
    env.sql(*DEEP)
    # no other collection holds the orders rows the chain goes through
    path = env.mapping(DEEP_MAPPING.split("  - name: customer_orders")[0])
    backfill(load_mapping(path), workers=1)
    env.sql("DELETE FROM customer WHERE id = 1")  # orders 10, 11 and their items go
    # the orders collection is copied again after the delete; CDC still starts before it
    migrator_cmd("backfill", "-m", str(path), "--collection", "orders", "--restart", check=0)
    assert env.target.orders.count_documents({"_id": {"$in": [10, 11]}}) == 0
    assert env.target.items.count_documents({"_id.order_id": {"$in": [10, 11]}}) == 3
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0
    assert env.target.items.count_documents({"_id.order_id": {"$in": [10, 11]}}) == 0
    assert_same_as_fresh_backfill(env, path)


def test_a_sweep_ahead_of_the_stream_does_not_lose_rows_a_key_change_moves(env):
    """A sweep of dangling references reads the source *now*, so it can run before CDC
    reaches the key change that made them dangle: the child rows, under the new key by ON
    UPDATE CASCADE, still reach their collection when CDC meets the key change."""
    env.sql(
        "CREATE TABLE parent (id VARCHAR(20) PRIMARY KEY, note VARCHAR(10))",
        "CREATE TABLE child (parent_id VARCHAR(20) NOT NULL, line INT NOT NULL, sku CHAR(2), "
        "PRIMARY KEY (parent_id, line), FOREIGN KEY (parent_id) REFERENCES parent(id) "
        "ON DELETE CASCADE ON UPDATE CASCADE)",
        "INSERT INTO parent VALUES ('k1', 'x'), ('k2', 'y')",
        "INSERT INTO child VALUES ('k1', 1, 'a'), ('k1', 2, 'b'), ('k2', 1, 'c')",
    )
    path = env.mapping(
        "  - name: parents\n    from: parent\n    embed:\n"
        "      - {as: lines, from: child, on: {parent_id: id}}\n"
        "  - {name: children, from: child}\n"
    )
    m = load_mapping(path)
    backfill(m, workers=1)
    env.sql("UPDATE parent SET id = 'k9' WHERE id = 'k1'")  # child rows move by cascade
    with applier_for(m) as applier:
        # an earlier cascade through a text key asked for a sweep of this rule; it runs
        # between batches, before CDC has read the key change
        request_sweeps(applier, list(applier.cascades.rules["parent"]))
        applier.sweep_dangling()
    summary = run_cdc(m, mode="until-caught-up")
    assert summary.dead_letters == 0
    assert env.target.children.count_documents({"_id.parent_id": "k9"}) == 2
    assert_same_as_fresh_backfill(env, path)
