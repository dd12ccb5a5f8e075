"""Tests for course_lib.records: a weights file read with its JSON record and checked by sha256.

Every broken record (missing, not JSON, not an object, a key missing) and every broken weights
file (missing, other bytes) must give a DataError that names the file; no KeyError or
JSONDecodeError may escape, neither from the loader nor from the two loaders built on it.
"""
import hashlib
import json
import shutil

import pytest
import torch

from course_lib import fast_style as FS
from course_lib import models
from course_lib.data import ChecksumError, DataError
from course_lib.records import load_weights, read_record


@pytest.fixture
def shipped(tmp_path):
    """A small weights file ``net.pt`` and its complete record ``net.json`` in ``tmp_path``."""
    weights = tmp_path / "net.pt"
    torch.save({"w": torch.arange(6.0).view(2, 3)}, weights)
    record = {"width": 3, "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    weights.with_suffix(".json").write_text(json.dumps(record))
    return weights


def test_weights_and_record_load_together(shipped):
    state, record = load_weights(shipped, ("width",))
    assert torch.equal(state["w"], torch.arange(6.0).view(2, 3))
    assert record["width"] == 3


@pytest.mark.parametrize("text,why", [(None, "missing"), ("{not json", "not valid JSON"),
                                      ("\xff\xfe", "not valid JSON"), ("[1, 2]", "JSON object"),
                                      ('{"weights_sha256": "00"}', "lacks the key.*width"),
                                      ('{"width": 3}', "lacks the key.*weights_sha256")])
def test_a_bad_record_is_a_data_error_naming_the_file(shipped, text, why):
    record = shipped.with_suffix(".json")
    if text is None:
        record.unlink()
    else:
        record.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=why) as e:
        load_weights(shipped, ("width",), fix="restore it, please")
    assert str(record) in str(e.value) and "restore it, please" in str(e.value)


def test_bad_weights_are_refused_naming_the_file(shipped):
    data = bytearray(shipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shipped.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="corrupt") as e:
        load_weights(shipped, ("width",))
    assert str(shipped) in str(e.value) and "net.json" in str(e.value)
    shipped.unlink()
    with pytest.raises(DataError, match=f"{shipped.name} is missing"):
        load_weights(shipped, ("width",))


def test_read_record_lists_every_missing_key_once(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"a": 1}')
    assert read_record(path, ("a",)) == {"a": 1}
    with pytest.raises(DataError, match=r"lacks the key\(s\) b, c;"):
        read_record(path, ("a", "b", "c", "b"))


@pytest.mark.parametrize("text,why", [("{truncated", "not valid JSON"), ('{"classes": ["a"]}', "lacks the key")])
def test_the_course_model_with_a_bad_record_is_a_clear_error(tmp_path, text, why):
    weights = tmp_path / "course_model.pt"
    shutil.copy(models.COURSE_WEIGHTS, weights)
    (tmp_path / "course_model.json").write_text(text)
    with pytest.raises(DataError, match=why) as e:
        models.load_course_model(weights)
    assert "course_model.json" in str(e.value) and "course_lib.train" in str(e.value)


def test_a_fast_style_network_with_an_incomplete_record_is_a_clear_error(tmp_path):
    record = sorted(FS.FAST_STYLE_DIR.glob("*.json"))[0]
    meta = json.loads(record.read_text())
    shutil.copy(record.with_suffix(".pt"), tmp_path / record.with_suffix(".pt").name)
    del meta["channels"]
    (tmp_path / record.name).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="lacks the key.*channels") as e:
        FS.load_fast_style(meta["style"], meta["norm"], meta["variant"], folder=tmp_path)
    assert record.name in str(e.value)
    with pytest.raises(DataError, match=record.name):
        FS.read_record(tmp_path / record.name)
