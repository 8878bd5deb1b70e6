import json

import numpy as np
import pytest

from semphase.errors import InputError
from semphase.phases import DEFAULT_TABLE, IGNORE, ClassTable, load_class_table


def test_default_table_is_the_study_table():
    assert DEFAULT_TABLE.names == ["Matrix", "Carbide", "Void", "Reprecipitate", "Dilution"]
    assert DEFAULT_TABLE.raw_ids == [1, 2, 3, 4, 5]
    assert DEFAULT_TABLE.num_classes == 5


def test_remap_raw_ids_and_unknown_to_ignore():
    raw = np.array([[1, 2, 3], [4, 5, 0], [9, 1, 5]], dtype=np.uint8)
    out = DEFAULT_TABLE.remap(raw)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 1, 2], [3, 4, IGNORE], [IGNORE, 0, 4]]
    assert DEFAULT_TABLE.unknown_raw_ids(raw) == [0, 9]
    assert DEFAULT_TABLE.to_raw(out[:1]).tolist() == [[1, 2, 3]]


def test_remap_16bit_masks():
    raw = np.array([[1, 300]], dtype=np.uint16)
    table = ClassTable.from_dict({"classes": [{"name": "a", "raw_id": 1}, {"name": "b", "raw_id": 300}]})
    assert table.remap(raw).tolist() == [[0, 1]]


def test_color_lut_leaves_ignore_black():
    lut = DEFAULT_TABLE.color_lut()
    assert tuple(lut[0]) == DEFAULT_TABLE.colors[0]
    assert tuple(lut[IGNORE]) == (0, 0, 0)


def test_table_round_trips_through_dict():
    assert ClassTable.from_dict(DEFAULT_TABLE.to_dict()) == DEFAULT_TABLE


def test_load_json_and_toml_tables(tmp_path):
    j = tmp_path / "t.json"
    j.write_text(json.dumps({"classes": [{"name": "Ni", "raw_id": 10}, {"name": "WC", "raw_id": 20}]}))
    t = load_class_table(j)
    assert t.names == ["Ni", "WC"] and t.raw_ids == [10, 20]
    toml = tmp_path / "t.toml"
    toml.write_text('[[classes]]\nname = "Ni"\nraw_id = 0\ncolor = [1, 2, 3]\n')
    t = load_class_table(toml)
    assert t.raw_ids == [0] and t.colors == [(1, 2, 3)]


@pytest.mark.parametrize(
    "content",
    [
        "{",
        json.dumps({"classes": []}),
        json.dumps({"classes": [{"raw_id": 1}]}),
        json.dumps({"classes": [{"name": "a", "raw_id": 1}, {"name": "b", "raw_id": 1}]}),
        json.dumps({"classes": [{"name": "a", "color": [1, 2]}]}),
    ],
)
def test_bad_tables_name_the_file(tmp_path, content):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(InputError) as info:
        load_class_table(p)
    assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_missing_table_file(tmp_path):
    with pytest.raises(InputError, match="cannot read class table"):
        load_class_table(tmp_path / "none.json")
