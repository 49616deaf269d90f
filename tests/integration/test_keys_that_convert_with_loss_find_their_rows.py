"""Keys whose `_id` keeps less than the column holds (a DATETIME(6) key's microseconds, a
DATETIME key in the source's time zone): CDC rebuilding a nested document (a change deep in
its tree) keeps the document and its content, never deletes it for a row it could not find;
verify afterwards is clean (its re-checks and extras search find the rows by the values the
`_id` stands for)."""

from __future__ import annotations

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.model.settings import load_mapping
from migrator.verify.engine import verify


def _nested(on: str, tag_on: str) -> str:
    """`ev` documents with their `ev_lines` as an array, each line with its tag."""
    return (
        "  - name: ev\n"
        "    from: ev\n"
        "    embed:\n"
        "      - as: lines\n"
        "        from: ev_lines\n"
        f"        on: {{{on}}}\n"
        "        many: true\n"
        "        embed:\n"
        f"          - {{as: tag, from: tags, on: {{{tag_on}}}, many: false}}\n"
    )


KEYS = {
    "micros": (
        "DATETIME(6)",
        "'2024-03-31' + INTERVAL seq * 7 MINUTE + INTERVAL 250 MICROSECOND",
        "",
    ),
    "zone": ("DATETIME", "'2024-03-31' + INTERVAL seq * 7 MINUTE", ', timezone: "Europe/Paris"'),
}


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_cdc_rebuilds_a_nested_document_whatever_its_key(env, kind):
    column, values, source = KEYS[kind]
    env.sql(
        f"CREATE TABLE ev (k {column} PRIMARY KEY, n INT NOT NULL)",
        f"INSERT INTO ev SELECT {values}, seq FROM seq_1_to_40",
        f"CREATE TABLE ev_lines (id INT PRIMARY KEY, ev_k {column} NOT NULL, tag_id INT NOT NULL)",
        "CREATE TABLE tags (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)",
        "INSERT INTO tags SELECT seq, CONCAT('t', seq) FROM seq_1_to_5",
        "INSERT INTO ev_lines SELECT seq, k, 1 + seq % 5 FROM ev JOIN seq_1_to_40 ON seq = n",
    )
    path = env.mapping(_nested("ev_k: k", "id: tag_id"), source=source)
    backfill(load_mapping(path), workers=1)
    run_cdc(load_mapping(path), mode="until-caught-up")
    env.sql(
        "UPDATE tags SET name = 'renamed' WHERE id = 2",  # deep in many trees: rebuilt
        "UPDATE ev_lines SET tag_id = 3 WHERE id = 10",
        "UPDATE ev SET n = n + 100 WHERE n = 20",
    )
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0
    coll = env.target.ev
    assert coll.count_documents({}) == 40
    assert coll.count_documents({"lines.tag.name": "renamed"}) == 8
    assert coll.count_documents({"n": 120}) == 1
    assert verify(load_mapping(path), recheck=0).ok


def test_cdc_rebuilds_a_document_with_a_float_key_found_through_mysql(env):
    """A FLOAT key's documents rebuilt from keys MySQL gives back (the root keys of a row deep
    in the tree, found through a case-insensitive text join): MySQL never matches a FLOAT
    column with `=` or `IN` to the value it prints, so those keys are searched by their range
    too, never taken for rows that are gone."""
    env.sql(
        "CREATE TABLE ev (k FLOAT PRIMARY KEY, code VARCHAR(10) NOT NULL UNIQUE, n INT NOT NULL)",
        "INSERT INTO ev SELECT seq + 0.1, CONCAT('c', seq), seq FROM seq_1_to_40",
        "CREATE TABLE ev_lines (id INT PRIMARY KEY, ev_code VARCHAR(10) NOT NULL,"
        " tag_code VARCHAR(10) NOT NULL)",
        "CREATE TABLE tags (code VARCHAR(10) PRIMARY KEY, name VARCHAR(20) NOT NULL)",
        "INSERT INTO tags SELECT CONCAT('t', seq), CONCAT('t', seq) FROM seq_1_to_5",
        "INSERT INTO ev_lines SELECT seq, CONCAT('c', seq), CONCAT('t', 1 + seq % 5)"
        " FROM seq_1_to_40",
    )
    path = env.mapping(_nested("ev_code: code", "code: tag_code"))
    backfill(load_mapping(path), workers=1)
    run_cdc(load_mapping(path), mode="until-caught-up")
    coll = env.target.ev
    assert coll.count_documents({}) == 40
    env.sql("UPDATE tags SET name = 'renamed' WHERE code = 't2'")  # deep in 8 trees: rebuilt
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0
    assert coll.count_documents({}) == 40
    assert coll.count_documents({"lines.tag.name": "renamed"}) == 8
    assert verify(load_mapping(path), recheck=0).ok


@pytest.mark.parametrize("column", ["DATETIME", "DATETIME(6)", "DATE"])
def test_a_zero_date_key_s_document_is_not_taken_for_an_extra(env, column):
    """A zero date in a DATETIME/DATE key becomes a null `_id`: verify finds its row again by
    the zero date, reports nothing, and --repair leaves the document in place."""
    env.sql(
        "SET @mode = @@SESSION.sql_mode, SESSION sql_mode = ''",
        f"CREATE TABLE ev (k {column} PRIMARY KEY, n INT NOT NULL)",
        "INSERT INTO ev VALUES ('0000-00-00 00:00:00', 0)",
        "INSERT INTO ev SELECT '2024-03-31' + INTERVAL seq DAY, seq FROM seq_1_to_5",
        "SET SESSION sql_mode = @mode",
    )
    path = env.mapping("  - {name: ev, from: ev}\n")
    backfill(load_mapping(path), workers=1)
    coll = env.target.ev
    assert coll.count_documents({}) == 6
    assert coll.find_one({"_id": None})["n"] == 0
    result = verify(load_mapping(path), recheck=0)
    assert result.ok, [(d.id, d.kind) for d in result.differences]
    verify(load_mapping(path), recheck=0, repair=True)
    assert coll.find_one({"_id": None}) is not None
    assert coll.count_documents({}) == 6


def test_a_float_key_with_more_digits_than_printed_finds_its_row(env):
    """A FLOAT key whose value has more significant digits than MySQL prints (1234577 is
    printed 1.23458e6): the `_id` is the printed value, and verify and --repair find the row
    again by the range the printed value stands for."""
    env.sql(
        "CREATE TABLE ev (k FLOAT PRIMARY KEY, n INT NOT NULL)",
        "INSERT INTO ev SELECT 1234567 + 10 * seq, seq FROM seq_1_to_20",
        "INSERT INTO ev SELECT seq + 0.1, 100 + seq FROM seq_1_to_20",
    )
    path = env.mapping("  - {name: ev, from: ev}\n")
    _copied_verified_and_repaired_keep(env, path, 40)


def test_cdc_changes_the_document_of_a_float_key_with_more_digits_than_printed(env):
    """A row event's FLOAT key becomes the `_id` the backfill gave its row (the value MySQL
    prints), not a second document."""
    env.sql(
        "CREATE TABLE ev (k FLOAT PRIMARY KEY, n INT NOT NULL, f FLOAT NOT NULL)",
        "INSERT INTO ev SELECT 1234567 + 10 * seq, seq, 7654321 + seq FROM seq_1_to_20",
    )
    path = env.mapping("  - {name: ev, from: ev}\n")
    backfill(load_mapping(path), workers=1)
    run_cdc(load_mapping(path), mode="until-caught-up")
    env.sql("UPDATE ev SET n = n + 100, f = f + 1 WHERE n = 5")
    run_cdc(load_mapping(path), mode="until-caught-up")
    coll = env.target.ev
    assert coll.count_documents({}) == 20
    assert coll.count_documents({"n": 105}) == 1
    result = verify(load_mapping(path), recheck=0)
    assert result.ok, [(d.id, d.kind) for d in result.differences]


def test_a_key_in_a_day_the_source_s_time_zone_skipped_finds_its_row(env):
    """Samoa skipped 2011-12-30: a DATETIME key on that day (MySQL keeps any wall-clock time)
    converts like the same time a day later, and verify and --repair find its row again."""
    env.sql(
        "CREATE TABLE ev (k DATETIME PRIMARY KEY, n INT NOT NULL)",
        "INSERT INTO ev SELECT '2011-12-29' + INTERVAL seq * 5 HOUR, seq FROM seq_1_to_12",
    )
    path = env.mapping("  - {name: ev, from: ev}\n", source=', timezone: "Pacific/Apia"')
    _copied_verified_and_repaired_keep(env, path, 12)


def test_cdc_rebuilds_a_document_named_by_another_spelling_of_its_text_key(env):
    """A key (code, ts DATETIME(6)) whose child row names its parent 'ACME' while the parent
    row is 'acme' (a case-insensitive collation matches them): rebuilt in a batch that also
    rebuilds documents by their `_id`s (the keys are searched by ranges there), the document
    gets the child's change."""
    env.sql(
        "CREATE TABLE ev (code VARCHAR(10) NOT NULL, ts DATETIME(6) NOT NULL, n INT NOT NULL,"
        " PRIMARY KEY (code, ts))",
        "INSERT INTO ev VALUES ('acme', '2024-03-31 10:00:00.000250', 1),"
        " ('beta', '2024-03-31 11:00:00.000250', 2)",
        "CREATE TABLE ev_lines (id INT PRIMARY KEY, ev_code VARCHAR(10) NOT NULL,"
        " ev_ts DATETIME(6) NOT NULL, tag_id INT NOT NULL)",
        "CREATE TABLE tags (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)",
        "INSERT INTO tags VALUES (1, 't1'), (2, 't2'), (3, 't3')",
        "INSERT INTO ev_lines VALUES (1, 'ACME', '2024-03-31 10:00:00.000250', 1),"
        " (2, 'beta', '2024-03-31 11:00:00.000250', 2)",
    )
    path = env.mapping(_nested("ev_code: code, ev_ts: ts", "id: tag_id"))
    backfill(load_mapping(path), workers=1)
    run_cdc(load_mapping(path), mode="until-caught-up")
    coll = env.target.ev
    assert [d["lines"][0]["tag"]["name"] for d in coll.find({}).sort("n", 1)] == ["t1", "t2"]
    env.sql(
        "BEGIN",
        "UPDATE ev_lines SET tag_id = 3 WHERE id = 1",  # its parent found by its own spelling
        "UPDATE tags SET name = 'renamed' WHERE id = 2",  # beta's document, by its `_id`
        "COMMIT",
    )
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert [d["lines"][0]["tag"]["name"] for d in coll.find({}).sort("n", 1)] == [
        "t3",
        "renamed",
    ]
    assert coll.count_documents({}) == 2
    assert verify(load_mapping(path), recheck=0).ok


def test_reverse_sync_writes_the_row_a_lossy_key_s_document_came_from(env):
    """After the write switch, a change to a document whose `_id` keeps less than its row's
    key (a DATETIME(6) key's microseconds) reaches that row, and a deleted document deletes
    it: no second row at the millisecond, no row left behind."""
    from .helpers import switch

    env.sql(
        "CREATE TABLE ev (k DATETIME(6) PRIMARY KEY, n INT NOT NULL)",
        "INSERT INTO ev SELECT '2024-03-31' + INTERVAL seq MINUTE + INTERVAL 250 MICROSECOND,"
        " seq FROM seq_1_to_3",
    )
    path = env.mapping("  - {name: ev, from: ev}\n")
    backfill(load_mapping(path), workers=1)
    switch(path)
    coll = env.target.ev
    coll.update_one({"n": 1}, {"$set": {"n": 101}})
    coll.delete_one({"n": 2})
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.sql("SELECT DATE_FORMAT(k, '%i.%f'), n FROM ev ORDER BY k") == [
        ("01.000250", 101),
        ("03.000250", 3),
    ]


def _copied_verified_and_repaired_keep(env, path, n):
    """Backfill, then verify is clean and --repair deletes nothing: every document's row is
    found again by its key."""
    backfill(load_mapping(path), workers=1)
    coll = env.target.ev
    assert coll.count_documents({}) == n
    result = verify(load_mapping(path), recheck=0)
    assert result.ok, [(d.id, d.kind) for d in result.differences]
    verify(load_mapping(path), recheck=0, repair=True)
    assert coll.count_documents({}) == n
