"""Cluster recipes (``recipes/*.yaml``): offline validation with Ray's own autoscaler code.

No cloud and no Ray cluster: ``validate_recipe`` runs the installed Ray's
``prepare_config`` (provider defaults.yaml merged in) and ``validate_config``
(ray-schema.json) plus dfml's checks; broken copies of the shipped files must
be refused with the file and the field named in one line.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from dfml.errors import ConfigError
from dfml.launch import recipes
from dfml.launch.recipes import (
    RECIPES_DIR,
    expected_image,
    list_recipes,
    load_recipe,
    to_fill_in,
    validate_recipe,
)

SHIPPED = ["aws-gpu.yaml", "gcp-gpu.yaml", "local-multinode.yaml"]
CLOUD = ["aws-gpu.yaml", "gcp-gpu.yaml"]
REPO = Path(__file__).resolve().parents[2]


def raw(name: str) -> dict[str, Any]:
    return yaml.safe_load((RECIPES_DIR / name).read_text())


def write(tmp_path: Path, config: dict[str, Any], name: str = "broken.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_recipes_dir_is_the_repository_folder():
    assert RECIPES_DIR == REPO / "recipes"
    assert [p.name for p in list_recipes()] == SHIPPED
    assert [p.name for p in list_recipes(RECIPES_DIR)] == SHIPPED


def test_list_recipes_other_folder_and_missing_folder(tmp_path):
    (tmp_path / "b.yaml").write_text("cluster_name: b\n")
    (tmp_path / "a.yml").write_text("cluster_name: a\n")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_recipes(tmp_path)] == ["a.yml", "b.yaml"]
    assert list_recipes(tmp_path / "nope") == []


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_validates(name):
    prepared = validate_recipe(RECIPES_DIR / name)
    # prepare_config ran: defaults merged, setup commands merged, bounds filled.
    assert "cluster_synced_files" in prepared
    assert (
        prepared["head_setup_commands"][: len(prepared["setup_commands"])]
        == (prepared["setup_commands"])
    )
    head = prepared["head_node_type"]
    assert head in prepared["available_node_types"]
    for node in prepared["available_node_types"].values():
        assert {"min_workers", "max_workers", "resources", "node_config"} <= node.keys()


def test_validation_goes_through_rays_own_functions(monkeypatch):
    from ray.autoscaler._private import util

    calls: list[str] = []
    real_prepare, real_validate = util.prepare_config, util.validate_config

    def prepare(config):
        calls.append("prepare_config")
        return real_prepare(config)

    def validate(config):
        calls.append("validate_config")
        return real_validate(config)

    monkeypatch.setattr(util, "prepare_config", prepare)
    monkeypatch.setattr(util, "validate_config", validate)
    validate_recipe(RECIPES_DIR / "aws-gpu.yaml")
    assert calls == ["prepare_config", "validate_config"]


def test_rays_functions_alone_reject_the_typo():
    """The broken copy is refused by Ray itself, not only by dfml's wrapper."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = raw("aws-gpu.yaml")
    config["max_worker"] = config.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("name", CLOUD)
def test_cloud_recipes_pin_the_installed_ray_image(name):
    config = raw(name)
    major, minor = sys.version_info[:2]
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py{major}{minor}-gpu"
    assert config["docker"]["image"] == expected_image()
    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    assert config["docker"]["image"].endswith("-gpu")
    # One image for head and workers: nothing overrides it per node.
    assert not {"head_image", "worker_image"} & config["docker"].keys()
    for node in config["available_node_types"].values():
        assert "docker" not in node


def test_image_python_satisfies_the_package():
    text = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in text
    assert "-py311-" in expected_image((3, 11))


@pytest.mark.parametrize("name", SHIPPED)
def test_setup_installs_this_checkout_at_the_locked_versions(name):
    config = raw(name)
    assert config["file_mounts"] == {"~/dfml": "."}
    assert ".gitignore" in config["rsync_filter"]  # .venv, runs/, data/ stay home
    commands = " && ".join(config["setup_commands"])
    assert "-r ~/dfml/requirements.lock" in commands
    assert "--no-deps ~/dfml" in commands
    assert commands.index("requirements.lock") < commands.index("--no-deps ~/dfml")
    assert (REPO / "requirements.lock").is_file()
    locked = (REPO / "requirements.lock").read_text().split()
    assert f"ray=={ray.__version__}" in locked


@pytest.mark.parametrize(
    "name, spot_type, spot_key",
    [
        ("aws-gpu.yaml", "gpu_worker_spot", "InstanceMarketOptions"),
        ("gcp-gpu.yaml", "gpu_worker_preemptible", "scheduling"),
    ],
)
def test_cloud_node_types(name, spot_type, spot_key):
    config = raw(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # no client actors on the head
    assert "GPU" not in head["resources"]
    worker = types["gpu_worker"]
    assert worker["min_workers"] == 0
    assert worker["max_workers"] == config["max_workers"] == 8
    assert worker["resources"] == {"CPU": 8, "GPU": 1}
    spot = types[spot_type]
    assert spot["resources"] == worker["resources"]
    assert spot["node_config"][spot_key]
    if name == "aws-gpu.yaml":
        assert spot["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
        assert config["provider"]["region"] == "us-west-2"
        assert config["provider"]["availability_zone"].startswith("us-west-2")
    else:
        assert spot["node_config"]["scheduling"]["preemptible"] is True
        for node in (worker, spot):
            assert node["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"
            assert node["node_config"]["guestAccelerators"][0]["acceleratorCount"] == 1
        assert config["provider"]["project_id"] == "<YOUR_GCP_PROJECT>"


def test_local_recipe_is_one_machine_without_docker():
    config = raw("local-multinode.yaml")
    assert config["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    assert "docker" not in config
    assert "available_node_types" not in config
    prepared = validate_recipe(RECIPES_DIR / "local-multinode.yaml")
    assert prepared["max_workers"] == 0
    assert prepared["docker"] == {}


def test_placeholders_are_listed():
    assert to_fill_in(load_recipe(RECIPES_DIR / "gcp-gpu.yaml"))[0].startswith(
        "<YOUR_GCP_PROJECT> (provider.project_id)"
    )
    aws = to_fill_in(load_recipe(RECIPES_DIR / "aws-gpu.yaml"))
    assert len(aws) == 1 and aws[0].startswith("<YOUR_GPU_AMI_ID> (")
    assert "available_node_types.gpu_worker_spot.node_config.ImageId" in aws[0]
    local = to_fill_in(load_recipe(RECIPES_DIR / "local-multinode.yaml"))
    assert local == ["<YOUR_SSH_USER> (auth.ssh_user)"]


Edit = Callable[[dict[str, Any]], None]


def _pop_into(key: str, new: str) -> Edit:
    def edit(c: dict[str, Any]) -> None:
        c[new] = c.pop(key)

    return edit


def _set(path: str, value: Any) -> Edit:
    *parents, last = path.split(".")

    def edit(c: dict[str, Any]) -> None:
        node = c
        for part in parents:
            node = node[part]
        node[last] = value

    return edit


def _delete(path: str) -> Edit:
    *parents, last = path.split(".")

    def edit(c: dict[str, Any]) -> None:
        node = c
        for part in parents:
            node = node[part]
        del node[last]

    return edit


BROKEN = [
    ("aws-gpu.yaml", _pop_into("max_workers", "max_worker"), "max_worker: unknown field (did you mean max_workers?)"),
    ("aws-gpu.yaml", _delete("available_node_types.gpu_worker.node_config"), "available_node_types.gpu_worker.node_config: required field is missing"),
    ("aws-gpu.yaml", _delete("available_node_types.gpu_worker.resources"), "available_node_types.gpu_worker.resources: required field is missing"),
    ("aws-gpu.yaml", _set("available_node_types.gpu_worker.min_workers", 9), "available_node_types.gpu_worker.min_workers: 9 is more than max_workers 8"),
    ("aws-gpu.yaml", _set("max_workers", "eight"), "max_workers: 'eight' is not of type 'integer'"),
    ("aws-gpu.yaml", _set("available_node_types.gpu_worker.resources.GPU", 0.5), "available_node_types.gpu_worker.resources.GPU: 0.5 is not of type 'integer'"),
    ("aws-gpu.yaml", _set("idle_timeout_minutes", -1), "idle_timeout_minutes: -1 is less than the minimum of 0"),
    ("aws-gpu.yaml", _set("setup_commands", "pip install dfml"), "setup_commands: 'pip install dfml' is not of type 'array'"),
    ("aws-gpu.yaml", _set("docker.imagee", "x"), "docker.imagee: unknown field (did you mean image?)"),
    ("aws-gpu.yaml", _set("auth.ssh_usr", "ubuntu"), "auth.ssh_usr: unknown field (did you mean ssh_user?)"),
    ("aws-gpu.yaml", _delete("docker.container_name"), "docker: Must provide a container & image name"),
    ("aws-gpu.yaml", _set("head_node_type", "ray_hed"), "head_node_type: `head_node_type` must be one of `available_node_types`"),
    ("aws-gpu.yaml", _set("available_node_types.gpu_worker_spot.min_workers", 9), "available_node_types.gpu_worker_spot.min_workers: 9 is more than max_workers 0"),
    ("aws-gpu.yaml", _set("available_node_types.gpu_worker.min_workers", 8) , None),
    ("aws-gpu.yaml", _delete("provider"), "provider: required field is missing"),
    ("aws-gpu.yaml", _set("provider.type", "awz"), "provider.type: 'awz' is not a provider this Ray knows"),
    ("aws-gpu.yaml", _set("docker.image", "rayproject/ray:2.9.0-gpu"), "docker.image: rayproject/ray:2.9.0-gpu is not Ray"),
    ("gcp-gpu.yaml", _set("available_node_types.gpu_worker.node_config.scheduling", [{"onHostMaintenance": "TERMINATE"}]), "available_node_types.gpu_worker.node_config.scheduling: must be a mapping"),
    ("gcp-gpu.yaml", _set("available_node_types.gpu_worker.node_config.scheduling", {"preemptible": True}), "available_node_types.gpu_worker.node_config.scheduling.onHostMaintenance: must be TERMINATE"),
    ("gcp-gpu.yaml", _set("available_node_types.gpu_worker.resources", {"CPU": 8}), "available_node_types.gpu_worker.resources.GPU: declares 0 but guestAccelerators attach 1"),
    ("gcp-gpu.yaml", _set("provider.project_id", 1234), "provider.project_id: 1234 is not of type 'string', 'null'"),
    ("local-multinode.yaml", _set("available_node_types", {"n": {"resources": {}, "node_config": {}}}), "available_node_types: not used with the local provider"),
    ("local-multinode.yaml", _delete("provider.worker_ips"), "provider.worker_ips: required field is missing"),
    ("local-multinode.yaml", _set("provider.worker_ips", "10.0.0.2"), "provider.worker_ips: '10.0.0.2' is not of type 'array'"),
]  # fmt: skip


@pytest.mark.parametrize("name, edit, message", BROKEN)
def test_broken_copy_is_refused_with_file_and_field(tmp_path, name, edit, message):
    config = copy.deepcopy(raw(name))
    edit(config)
    path = write(tmp_path, config)
    if message is None:  # a control: a legal edit still validates
        validate_recipe(path)
        return
    with pytest.raises(ConfigError) as info:
        validate_recipe(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{recipes.shown(path)}: ")
    assert message in text


def test_min_workers_over_the_global_max_is_refused_by_ray(tmp_path):
    config = raw("aws-gpu.yaml")
    config["available_node_types"]["gpu_worker"]["min_workers"] = 5
    config["available_node_types"]["gpu_worker_spot"].update(min_workers=5, max_workers=8)
    with pytest.raises(ConfigError, match=r"broken\.yaml: max_workers: The specified global"):
        validate_recipe(write(tmp_path, config))


@pytest.mark.parametrize(
    "text, message",
    [
        ("cluster_name: [a,\n", "not valid YAML at line 2"),
        ("- a\n- b\n", "a cluster recipe is a YAML mapping, got list"),
        ("", "a cluster recipe is a YAML mapping, got NoneType"),
    ],
)
def test_unreadable_recipe(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape("bad.yaml: " + message)):
        validate_recipe(path)
    with pytest.raises(ConfigError, match="cannot read"):
        validate_recipe(tmp_path / "missing.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfml")
    sub = parser.add_subparsers(dest="command", required=True)
    recipes.add_parser(sub)
    return parser


def test_cli_lists_and_validates_the_shipped_recipes(capsys):
    args = _parser().parse_args(["recipes"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert f"{name}: ok (" in out
    assert "fill in: <YOUR_GCP_PROJECT> (provider.project_id)" in out
    assert "fill in: <YOUR_GPU_AMI_ID>" in out
    assert "INFO" not in out


def test_cli_validate_paths_and_names(tmp_path, capsys):
    good = write(tmp_path, raw("gcp-gpu.yaml"), "mine.yaml")
    args = _parser().parse_args(["recipes", "--validate", str(good), "aws-gpu"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{recipes.shown(good)}: ok (gcp us-west1-b")
    assert any("aws-gpu.yaml: ok (aws" in line for line in out)

    broken = raw("aws-gpu.yaml")
    broken["max_worker"] = broken.pop("max_workers")
    args = _parser().parse_args(["recipes", "--validate", str(write(tmp_path, broken))])
    with pytest.raises(ConfigError, match=r"broken\.yaml: max_worker: unknown field"):
        args.handler(args)

    args = _parser().parse_args(["recipes", "--validate", "nope"])
    with pytest.raises(ConfigError, match="no recipe 'nope'"):
        args.handler(args)

    args = _parser().parse_args(["recipes", "--dir", str(tmp_path / "empty")])
    with pytest.raises(ConfigError, match="no recipes in"):
        args.handler(args)


def test_cli_registered_when_the_lead_adds_it():
    """Once cli.py lists the recipes parser, `dfml recipes` runs through the real CLI."""
    from dfml.launch import cli

    if not any("recipes" in getattr(add, "__name__", "") for add in cli.COMMANDS):
        pytest.skip("dfml recipes not registered in cli.COMMANDS yet")
    assert cli.main(["recipes"]) == 0
