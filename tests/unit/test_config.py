"""Mapping validation: errors name the file, the line and the key, and say what was expected."""

import pytest

from migrator.errors import ConfigError
from migrator.model.settings import load_mapping, parse_mapping

GOOD = """\
version: 1
source: {url: "mysql://app:${DB_PW}@db:3306/shop"}
target: {url: "mongodb://mongo:27017"}
collections:
  - name: orders
    from: orders
    fields:
      orderNo: order_no
      total: {column: total, type: decimal}
    exclude: [legacy_flag]
    embed:
      - {as: items, from: order_items, on: {order_id: id}, many: true, order_by: [line_no]}
"""


def test_good_mapping_with_env_interpolation(monkeypatch):
    monkeypatch.setenv("DB_PW", "s3cret")
    m = parse_mapping(GOOD, "shop.yaml")
    assert m.source.url == "mysql://app:s3cret@db:3306/shop"
    assert m.source_database == "shop"
    assert m.target_database == "shop"  # no target database: the source's name
    assert m.state.database == "_migrator"
    emb = m.collections[0].embed[0]
    # `on` is a key here, not YAML 1.1's boolean true.
    assert emb.on == {"order_id": "id"} and emb.as_ == "items" and emb.from_ == "order_items"
    fields = dict(m.collections[0].field_items())
    assert fields["total"].type == "decimal" and fields["orderNo"].column == "order_no"


def test_missing_env_var_names_file_line_key_and_variable(monkeypatch):
    monkeypatch.delenv("DB_PW", raising=False)
    with pytest.raises(ConfigError) as e:
        parse_mapping(GOOD, "shop.yaml")
    assert "shop.yaml:2 source.url" in str(e.value) and "DB_PW" in str(e.value)


def test_env_default(monkeypatch):
    monkeypatch.delenv("DB_PW", raising=False)
    m = parse_mapping(GOOD.replace("${DB_PW}", "${DB_PW:-fallback}"), "x.yaml")
    assert ":fallback@" in m.source.url


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("many: true", "many: maybe"), "x.yaml:12 collections[0].embed[0].many"),
        (("type: decimal", "type: money"), "x.yaml:9 collections[0].fields.total"),
        (
            ("    from: orders\n", "    form: orders\n"),
            "x.yaml:6 collections[0].form: is not a known key",
        ),
        (("    from: orders\n", ""), "collections[0].from: is required but missing"),
        (('url: "mongodb://mongo:27017"', 'url: "http://mongo"'), "x.yaml:3 target.url"),
        (('"mysql://app', '"postgres://app'), "x.yaml:2 source.url: expected a mysql:// URL"),
        (("version: 1", "version: 2"), "x.yaml:1 version"),
        (("orderNo: order_no", "_id: order_no"), "collections[0].fields: _id is the primary key"),
        (
            ("many: true, order_by: [line_no]", "many: false, order_by: [line_no]"),
            "order_by applies only to many: true",
        ),
    ],
)
def test_validation_errors_name_file_line_and_key(monkeypatch, change, expected):
    monkeypatch.setenv("DB_PW", "pw")
    text = GOOD.replace(*change)
    with pytest.raises(ConfigError) as e:
        parse_mapping(text, "x.yaml")
    assert expected in str(e.value)


def test_duplicate_collection_and_embed_names(monkeypatch):
    monkeypatch.setenv("DB_PW", "pw")
    dup = GOOD + "  - {name: orders, from: orders2}\n"
    with pytest.raises(ConfigError, match="two collections are named 'orders'"):
        parse_mapping(dup, "x.yaml")


def test_yaml_syntax_error_has_line():
    with pytest.raises(ConfigError, match=r"x.yaml:3: not valid YAML"):
        parse_mapping("version: 1\nsource: [unclosed\n", "x.yaml")


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read mapping file"):
        load_mapping(tmp_path / "nope.yaml")


def test_where_points_at_nested_keys(monkeypatch):
    monkeypatch.setenv("DB_PW", "pw")
    m = parse_mapping(GOOD, "shop.yaml")
    assert (
        m.where("collections", 0, "embed", 0, "from") == "shop.yaml:12 collections[0].embed[0].from"
    )
    assert m.where("collections", 0, "exclude", 0) == "shop.yaml:10 collections[0].exclude[0]"


# Two `embed:` blocks in one collection, as uncommenting two separate suggestions gives.
TWO_EMBEDS = GOOD + (
    "    embed:\n"  # line 13: the second `embed:` of collections[0]
    "      - {as: customer, from: customers, on: {id: customer_id}, many: false}\n"
)


def test_a_repeated_key_is_an_error_naming_the_file_both_lines_and_the_key(monkeypatch):
    monkeypatch.setenv("DB_PW", "pw")
    with pytest.raises(ConfigError) as e:
        parse_mapping(TWO_EMBEDS, "shop.yaml")
    msg = str(e.value)
    assert msg.startswith("shop.yaml:13 collections[0].embed: "), msg
    assert "'embed'" in msg and "lines 11 and 13" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a flow mapping, deep in the tree
        (
            GOOD.replace("total: {column: total,", "total: {column: total, column: x,"),
            "x.yaml:9 collections[0].fields.total.column: the key 'column' is given twice "
            "(both on line 9)",
        ),
        # the top level
        (
            GOOD + 'source: {url: "mysql://other@db/shop"}\n',
            "x.yaml:13 source: the key 'source' is given twice (lines 2 and 13)",
        ),
        # keys that are equal once read ("1" and "01" are both the integer 1)
        (
            GOOD.replace("orderNo: order_no", "1: a\n      01: b"),
            "x.yaml:9 collections[0].fields.01: the key '01' is given twice (lines 8 and 9)",
        ),
    ],
)
def test_repeated_keys_anywhere_are_errors(monkeypatch, text, expected):
    monkeypatch.setenv("DB_PW", "pw")
    with pytest.raises(ConfigError) as e:
        parse_mapping(text, "x.yaml")
    assert expected in str(e.value)


def test_a_merge_key_override_is_not_a_repeated_key(monkeypatch):
    monkeypatch.setenv("DB_PW", "pw")
    text = GOOD.replace(
        "      total: {column: total, type: decimal}\n",
        "      total: &money {column: total, type: decimal}\n"
        "      tax: {<<: *money, column: tax}\n",
    )
    m = parse_mapping(text, "x.yaml")
    assert m.collections[0].fields["tax"].column == "tax"  # the explicit key wins


def test_a_repeated_key_in_a_playbook_is_an_error(tmp_path):
    from migrator.cutover.playbook import load_playbook

    p = tmp_path / "pb.yaml"
    p.write_text(
        "version: 1\n"
        "steps:\n"
        "  sync: {gates: [backfill_complete]}\n"
        "  dual_write: {gates: [cdc_lag]}\n"
        "  sync: {gates: []}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_playbook(p)
    assert f"{p}:5 steps.sync: the key 'sync' is given twice (lines 3 and 5)" in str(e.value)
