"""Imported partitions: dfml's own partition.parquet and the JSON form."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dfml.data.builtin import load_digits
from dfml.data.config import PartitionConfig
from dfml.data.partition import make_partition, make_splits
from dfml.data.partition_file import load_partition_file, num_clients_in
from dfml.data.split import ClientSplit, client_seed, split_train
from dfml.errors import ConfigError
from dfml.launch.results import partition_table

LABELS = load_digits().y
CFG = PartitionConfig(partition="dirichlet", alpha=0.5)


def _assert_same(a: list[ClientSplit], b: list[ClientSplit]) -> None:
    assert len(a) == len(b)
    for s, t in zip(a, b, strict=True):
        for name in ("meta_train", "query", "test"):
            x, y = getattr(s, name), getattr(t, name)
            assert x.dtype == y.dtype == np.int64 and np.array_equal(x, y), name
        if s.label_permutation is None:
            assert t.label_permutation is None
        else:
            assert np.array_equal(s.label_permutation, t.label_permutation)


def _write_json(path: Path, clients: list[dict]) -> Path:
    path.write_text(json.dumps({"clients": clients}))
    return path


def _parquet(tmp_path: Path, splits: list[ClientSplit]) -> Path:
    path = tmp_path / "partition.parquet"
    pq.write_table(partition_table(splits), path)
    return path


def test_parquet_round_trip_gives_identical_splits(tmp_path):
    splits = make_splits(LABELS, 8, CFG, seed=3)
    path = _parquet(tmp_path, splits)
    assert num_clients_in(path) == 8
    _assert_same(load_partition_file(path, LABELS, CFG, seed=99), splits)


def test_zeta_applies_on_top_of_an_imported_partition(tmp_path):
    cfg = replace(CFG, zeta=0.5)
    drawn = make_partition(LABELS, 6, cfg, seed=1)
    path = _parquet(tmp_path, drawn.splits)  # the file holds samples, not permutations
    imported = make_partition(LABELS, 6, replace(cfg, partition_file=str(path)), seed=1)
    assert imported.repair_moves == 0
    assert sum(s.label_permutation is not None for s in imported.splits) == 3
    _assert_same(imported.splits, drawn.splits)


def test_json_with_query_is_taken_as_given(tmp_path):
    clients = [
        {"train": [5, 1, 3], "query": [7, 2], "test": [0, 4]},
        {"train": [9, 8], "query": [10], "test": [6, 11]},
    ]
    path = _write_json(tmp_path / "p.json", clients)
    assert num_clients_in(path) == 2
    got = load_partition_file(path, LABELS, CFG, seed=0)
    assert [s.meta_train.tolist() for s in got] == [[1, 3, 5], [8, 9]]
    assert [s.query.tolist() for s in got] == [[2, 7], [10]]
    assert [s.test.tolist() for s in got] == [[0, 4], [6, 11]]


def test_json_without_query_splits_train_like_a_drawn_partition(tmp_path):
    drawn = make_splits(LABELS, 4, CFG, seed=2)
    clients = [{"train": s.train.tolist(), "test": s.test.tolist()} for s in drawn]
    path = _write_json(tmp_path / "p.json", clients)
    got = load_partition_file(path, LABELS, CFG, seed=2)
    _assert_same(got, load_partition_file(path, LABELS, CFG, seed=2))
    for cid, (s, d) in enumerate(zip(got, drawn, strict=True)):
        _assert_same([s], [split_train(d.train, d.test, LABELS, CFG, client_seed(2, cid))])
        assert np.array_equal(s.train, d.train) and np.array_equal(s.test, d.test)
        assert not set(s.meta_train) & set(s.query)
        counts = np.bincount(LABELS[s.query], minlength=10)
        assert len(s.query) and len(set(counts[counts > 0])) == 1, "D^Q is label-balanced"


GOOD = [{"train": [0, 1, 2], "test": [3]}, {"train": [4, 5], "test": [6]}]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"clients": [{"train": [0, 1], "test": [1797]}, GOOD[1]]}, "index 1797 is out of range"),
        ({"clients": [{"train": [-1, 1], "test": [2]}, GOOD[1]]}, "index -1 is out of range"),
        (
            {"clients": [GOOD[0], {"train": [4, 2], "test": [6]}]},
            r"index 2 appears twice \(client 0 train and client 1 train\)",
        ),
        (
            {"clients": [{"train": [0, 1], "query": [1], "test": [3]}, GOOD[1]]},
            r"index 1 appears twice \(client 0 train and client 0 query\)",
        ),
        ({"clients": [GOOD[0], {"train": [], "test": []}]}, "client 1 is empty"),
        ({"clients": [GOOD[0], {"train": [4, 5]}]}, "client 1 has no test indices"),
        ({"clients": [GOOD[0], {"train": [4, 5], "test": []}]}, "client 1 has no test indices"),
        ({"clients": [GOOD[0], {"test": [4, 5]}]}, "client 1 has no train indices"),
        ({"clients": [GOOD[0]]}, r"holds 1 client\(s\); need >= 2"),
        ({"clients": [GOOD[0], {"train": [4, 5.5], "test": [6]}]}, "5.5, not an integer"),
        ({"clients": [GOOD[0], {"train": [4, True], "test": [6]}]}, "True, not an integer"),
        ({"clients": [GOOD[0], {"train": "4", "test": [6]}]}, "must be a list of indices"),
        ({"clients": [GOOD[0], {"meta_train": [4], "test": [6]}]}, "unknown key 'meta_train'"),
        ({"clients": [GOOD[0], [4, 5]]}, "client 1 must be an object"),
        ([GOOD], "must hold"),
    ],
)
def test_bad_json_is_one_line_naming_file_and_value(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=match) as err:
        load_partition_file(path, LABELS, CFG, seed=0)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _table(client, split, index) -> pa.Table:
    return pa.table(
        {
            "client": pa.array(client, pa.int32()),
            "split": pa.array(split),
            "index": pa.array(index, pa.int64()),
        }
    )


@pytest.mark.parametrize(
    ("table", "match"),
    [
        (_table([0, 0, 2, 2], ["meta_train", "test"] * 2, [0, 1, 2, 3]), "client 1 is empty"),
        (
            _table([0, 0, 1], ["meta_train", "test", "meta_train"], [0, 1, 2]),
            "client 1 has no test",
        ),
        (_table([0, 0, 1, 1], ["meta_train", "test", "train", "test"], [0, 1, 2, 3]), "'train'"),
        (_table([0, 0, 1, 1], ["meta_train", "test"] * 2, [0, 1, 2, 1]), "index 1 appears twice"),
        (_table([0, 0, 1, 1], ["meta_train", "test"] * 2, [0, 1, 2, 5000]), "index 5000 is out"),
        (pa.table({"client": [0, 1], "index": [0, 1]}), "no column 'split'"),
    ],
)
def test_bad_parquet_is_one_line(tmp_path, table, match):
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    with pytest.raises(ConfigError, match=match) as err:
        load_partition_file(path, LABELS, CFG, seed=0)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_unusable_files_are_one_line(tmp_path):
    cases = {
        tmp_path / "missing.parquet": "does not exist",
        tmp_path / "p.csv": "must end in .parquet or .json",
        tmp_path / "text.parquet": "is not a parquet file",
        tmp_path / "broken.json": r"is not valid JSON \(line 1\)",
    }
    (tmp_path / "p.csv").write_text("client,split,index\n")
    (tmp_path / "text.parquet").write_text("not parquet at all\n")
    (tmp_path / "broken.json").write_text('{"clients": [')
    for path, match in cases.items():
        with pytest.raises(ConfigError, match=match) as err:
            num_clients_in(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_client_count_must_match_the_run(tmp_path):
    path = _parquet(tmp_path, make_splits(LABELS, 4, CFG, seed=0))
    with pytest.raises(ConfigError, match="holds 4 clients, but the run needs 5"):
        make_partition(LABELS, 5, replace(CFG, partition_file=str(path)), seed=0)


def test_partition_file_config_field():
    assert PartitionConfig().partition_file is None
    with pytest.raises(ConfigError, match="partition_file"):
        PartitionConfig(partition_file=" ")
