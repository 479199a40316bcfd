"""Reading user files without trusting them (dfml/untrusted.py), no Ray."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import yaml

from dfml.errors import ConfigError
from dfml.untrusted import MAX_DEPTH, NUMPY_ARRAYS, load_json, load_yaml, read_limited, safe_loads

BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "clients: *i\n"
)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_yaml_within_the_limits_loads_as_pyyaml_does():
    text = "clients: 4\nhidden: [[1, 2], {a: [3]}]\n<<: {rounds: 2}\n"
    assert load_yaml(text, "x") == yaml.safe_load(text)
    assert load_yaml(nested(MAX_DEPTH), "x") == yaml.safe_load(nested(MAX_DEPTH))


def test_a_yaml_alias_is_refused_without_expanding_or_quoting_it():
    with pytest.raises(ConfigError) as err:
        load_yaml(BOMB, "config file 'b.yaml'")
    line = str(err.value)
    assert line == (
        "config file 'b.yaml' uses a YAML alias (line 2); aliases are not accepted: "
        "write the value out"
    )
    with pytest.raises(ConfigError, match="alias"):
        load_yaml("base: &b 4\nclients: *b\n", "x")


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_deep_yaml_and_json_are_refused(depth):
    with pytest.raises(ConfigError, match=f"x nests deeper than {MAX_DEPTH} levels"):
        load_yaml(nested(depth), "x")
    with pytest.raises(ConfigError, match=f"x nests deeper than {MAX_DEPTH} levels"):
        load_json(nested(depth), "x")


def test_json_within_the_limits_loads_as_json_does():
    doc = {"clients": [{"train": [1, 2], "test": [3]}], "deep": json.loads(nested(MAX_DEPTH - 1))}
    assert load_json(json.dumps(doc), "x") == doc


def test_a_file_over_its_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 101)
    assert read_limited(path, "f", 101) == b"x" * 101
    with pytest.raises(ConfigError, match="f is 101 bytes; at most 100 are read"):
        read_limited(path, "f", 100)
    with pytest.raises(ConfigError, match="g does not exist"):
        read_limited(tmp_path / "g", "g", 100)


def test_pickles_build_only_what_is_allowed():
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for protocol in (2, 5):
        data = pickle.dumps({"data": array, "labels": [1, 2]}, protocol=protocol)
        allowed = NUMPY_ARRAYS | {("_codecs", "encode")}
        got = safe_loads(data, allowed)
        assert np.array_equal(got["data"], array) and got["labels"] == [1, 2]
    with pytest.raises(pickle.UnpicklingError, match=r"refused to build builtins\.eval"):
        safe_loads(pickle.dumps(eval), NUMPY_ARRAYS)
    # a dotted name reaches attributes of attributes: never, even under an allowed module
    dotted = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x05numpy\x8c\x0bndarray.max\x93."
    with pytest.raises(pickle.UnpicklingError, match=r"refused to build numpy\.ndarray\.max"):
        safe_loads(dotted, NUMPY_ARRAYS)
