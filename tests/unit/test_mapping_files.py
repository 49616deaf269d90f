"""The shipped mapping files validate, and the JSON Schema file matches the pydantic model."""

import json
from pathlib import Path

import pytest

from migrator.devtools.shop import shop_mapping
from migrator.model.settings import json_schema, load_mapping

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


def test_json_schema_file_is_generated_from_the_model():
    on_disk = json.loads((MAPPINGS / "mapping.schema.json").read_text())
    assert on_disk == json_schema(), (
        "regenerate: python -c 'import json; from migrator.model.settings import json_schema; "
        "print(json.dumps(json_schema(), indent=2))' > mappings/mapping.schema.json"
    )
    assert "path" not in on_disk["properties"] and "embed" in json.dumps(on_disk)


@pytest.mark.parametrize("name", sorted(p.name for p in MAPPINGS.glob("*.yaml")))
def test_example_mappings_validate(monkeypatch, name):
    monkeypatch.setenv("MIGRATOR_SOURCE_PASSWORD", "x")
    m = load_mapping(MAPPINGS / name)
    assert m.collections


def test_demo_mapping_template_validates(tmp_path):
    p = tmp_path / "shop.yaml"
    p.write_text(shop_mapping("mysql://u:p@h:1/shop", "mongodb://m:2"))
    m = load_mapping(p)
    assert [c.name for c in m.collections] == ["orders", "customers", "products"]
