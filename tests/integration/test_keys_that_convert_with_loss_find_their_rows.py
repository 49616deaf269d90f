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
    path = env.tmp / "keys.yaml"
    path.write_text(
        "version: 1\n"
        f'source: {{url: "{env.url}"{source}}}\n'
        f'target: {{url: "{env.stack.mongo_url}", database: {env.db}}}\n'
        f"state: {{database: {env.state_db}}}\n"
        "collections:\n"
        "  - name: ev\n"
        "    from: ev\n"
        "    embed:\n"
        "      - as: lines\n"
        "        from: ev_lines\n"
        "        on: {ev_k: k}\n"
        "        many: true\n"
        "        embed:\n"
        "          - {as: tag, from: tags, on: {id: tag_id}, many: false}\n"
    )
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
