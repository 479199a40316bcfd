"""The CL-FML task benchmark gives each method its own flags (``--set-for``):
algorithms with equal options share one ``dfml compare``, others get their own."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "clfml_tasks.py"
_spec = importlib.util.spec_from_file_location("clfml_tasks", SCRIPT)
clfml_tasks = sys.modules["clfml_tasks"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(clfml_tasks)  # a script, not a package: loaded from its file


def test_option_groups_split_by_per_algorithm_flags():
    common = {"dataset": "digits", "tasks": 5}
    groups = clfml_tasks.option_groups(
        ["clfml", "cdfedavg", "gfml", "dfedavg"],
        common,
        [
            "clfml:episodes=labels",
            "gfml:episodes=labels",
            "clfml:task-head=prototype",
            "gfml:task-head=prototype",
        ],
    )
    assert groups == [
        (["clfml", "gfml"], {**common, "episodes": "labels", "task_head": "prototype"}),
        (["cdfedavg", "dfedavg"], common),
    ]


def test_option_groups_one_group_without_per_algorithm_flags():
    assert clfml_tasks.option_groups(["clfml", "gfml"], {"tasks": 5}, []) == [
        (["clfml", "gfml"], {"tasks": 5})
    ]


@pytest.mark.parametrize("bad", ["fedavg:lr=0.1", "clfml-lr=0.1", "clfml:lr"])
def test_option_groups_refuse_a_malformed_or_unknown_setting(bad):
    with pytest.raises(SystemExit, match="expected ALGO:KEY=VALUE"):
        clfml_tasks.option_groups(["clfml", "gfml"], {}, [bad])
