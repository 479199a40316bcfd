"""YAML files and command-line flags → typed, validated config objects.

Options are one flat namespace (``--clients 10`` on the command line is
``clients: 10`` in YAML); each name belongs to exactly one config dataclass
field, so routing needs no table of special cases: a key goes to the
dataclass that declares it. Flags override the file.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dfml.actors.config import ResourceConfig
from dfml.algorithms.evaluation import EvalConfig
from dfml.data.config import DataConfig, PartitionConfig
from dfml.errors import ConfigError
from dfml.experiment import ExperimentConfig, RunConfig
from dfml.fault.config import FaultConfig
from dfml.launch.registry import ALGORITHMS, algorithm_class
from dfml.models.zoo import ModelConfig
from dfml.runtime.membership import MembershipConfig
from dfml.topology.config import TopologyConfig


@dataclass(frozen=True)
class LaunchConfig:
    """How to run, not what: output directory, Ray address, progress bar.

    Attributes:
        out: results folder (summary.json, metrics.parquet, plots); created if missing.
        ray_address: Ray cluster to join (``auto``, ``ray://host:10001``); ``None``
            starts a local Ray.
        progress: show a progress bar with the mean client accuracy per round.
        dashboard: start the Ray dashboard (local Ray only) and print its address.
        resume: continue the run whose results folder (or checkpoint URI) this
            names, from its last complete checkpoint; launch flags may be given
            again, experiment flags must equal the checkpoint's.
    """

    out: str = "runs/latest"
    ray_address: str | None = None
    progress: bool = True
    dashboard: bool = True
    resume: str | None = None


SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "data": DataConfig,
    "partition": PartitionConfig,
    "model": ModelConfig,
    "topology": TopologyConfig,
    "resources": ResourceConfig,
    "evaluation": EvalConfig,
    "fault": FaultConfig,
    "membership": MembershipConfig,
    "launch": LaunchConfig,
}


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def all_option_types() -> dict[str, Any]:
    """Every option name with its type, over sections and all algorithms."""
    out: dict[str, Any] = {}
    for cls in [*SECTIONS.values(), *(a.Config for a in ALGORITHMS.values())]:
        out.update(field_types(cls))
    return out


def coerce(name: str, value: Any, hint: Any) -> Any:
    """Turn a YAML value or a flag string into ``hint``'s type, or say why not."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(name, value, inner[0])
    if origin is tuple:
        if isinstance(value, str):
            items = value.replace("x", ",").split(",")
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            items = [value]  # a YAML scalar (hidden: 128, pers_steps: 3) is one item
        return tuple(coerce(name, v, args[0]) for v in items if str(v).strip() != "")
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if hint is float:
            out = float(value)
            if math.isnan(out):
                raise ValueError(value)
            return out
        if hint is str:
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError):
        kind = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"--{flag(name)} must be {kind}, got {value!r}") from None
    raise TypeError(f"unsupported option type {hint!r} for {name}")


def flag(name: str) -> str:
    return name.replace("_", "-")


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def _build(cls: type, options: Mapping[str, Any]) -> Any:
    hints = field_types(cls)
    kwargs = {k: coerce(k, v, hints[k]) for k, v in options.items() if k in hints}
    return cls(**kwargs)


def build_config(options: Mapping[str, Any]) -> tuple[ExperimentConfig, LaunchConfig]:
    """Route each option to the dataclass that declares it; reject the rest."""
    opts = {k.replace("-", "_"): v for k, v in options.items()}
    algo_name = str(opts.get("algorithm", RunConfig.algorithm))
    algo_cls = algorithm_class(algo_name)
    known = set(field_types(algo_cls.Config))
    for cls in SECTIONS.values():
        known |= set(field_types(cls))
    others = set(all_option_types())
    for key in sorted(opts):
        if key in known:
            continue
        if key in others:
            raise ConfigError(f"option --{flag(key)} does not apply to algorithm {algo_name!r}")
        raise ConfigError(f"unknown option --{flag(key)}; see 'dfml run --help'")
    if opts.get("partition_file") and "clients" not in opts:
        from dfml.data.partition_file import num_clients_in

        # The file fixes the clients (initial + reserve); an explicit --clients is checked later.
        membership = _build(MembershipConfig, opts)
        opts["clients"] = num_clients_in(str(opts["partition_file"])) - membership.reserve
    built = {name: _build(cls, opts) for name, cls in SECTIONS.items()}
    launch = built.pop("launch")
    experiment = ExperimentConfig(**built, algorithm=_build(algo_cls.Config, opts))
    return experiment, launch


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """A JSON-ready record of every effective setting."""
    return {
        name: dataclasses.asdict(getattr(cfg, name))
        for name in (
            "run",
            "data",
            "partition",
            "model",
            "topology",
            "resources",
            "evaluation",
            "fault",
            "membership",
            "algorithm",
        )
    }


def config_to_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """The flat option mapping that :func:`build_config` turns back into ``cfg``."""
    out: dict[str, Any] = {}
    for section in config_to_dict(cfg).values():
        out.update(section)
    return out


def check_resume_options(stored: ExperimentConfig, given: Mapping[str, Any]) -> None:
    """With ``--resume``, an experiment option may be repeated only with the same value."""
    effective = config_to_options(stored)
    launch = set(field_types(LaunchConfig))
    types = all_option_types()
    for key, value in sorted(given.items()):
        if key in launch:
            continue
        if key not in effective:
            raise ConfigError(f"option --{flag(key)} does not apply to the resumed run")
        if coerce(key, value, types[key]) != coerce(key, effective[key], types[key]):
            raise ConfigError(
                f"--{flag(key)} {value} differs from the resumed run's {effective[key]!r}; "
                "a resumed run keeps its experiment settings"
            )
