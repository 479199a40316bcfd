"""YAML files and command-line flags → typed, validated config objects.

Options are one flat namespace (``--clients 10`` on the command line is
``clients: 10`` in YAML); each name belongs to exactly one config dataclass
field, so routing needs no table of special cases: a key goes to the
dataclass that declares it. Flags override the file.

Bad input (the rules every command follows):

* Every bad value — a config value, a flag, a dataset path, a topology, a
  schedule, a Ray address, a results folder — ends the command before it
  runs anything, with one line on stderr that names the value and what is
  allowed, and exit code 2; never a traceback. Numbers must be finite
  (``inf`` and ``nan`` are refused). A YAML file may give a key only once
  (``local-epochs`` and ``local_epochs`` are the same key), and a flag may
  be given only once.
* An option given explicitly (a flag or a YAML key) that the chosen setup
  does not read is an error naming the option and what it applies to
  (``--degree applies to topology k-regular or small-world, not ring``):
  see :data:`UNUSED_RULES`. Options not given (left at their defaults) never
  trigger it, and a switch set to false (``--download false``) asks for
  nothing, so it is never an error. ``dfml run --resume`` re-reads the run's full recorded
  config, which is exempt.
* Results are never lost: a run refuses a results folder (``--out``) that
  already holds results, and a checkpoint URI that already holds
  checkpoints, unless ``--overwrite`` is given (every old result file is
  moved aside and removed once the new run has started, so no file of the
  old run survives to be mixed with the new one, and a run that fails
  before puts them back: :mod:`dfml.launch.replacement`) or the run is
  continued with ``--resume OUT``. All checks
  run before anything is written; a run that fails or is interrupted after
  it started keeps what it wrote and says why in ``summary.json``
  (``status``: completed, diverged, interrupted or failed).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dfml.actors.config import ResourceConfig
from dfml.algorithms.clfml.label_clustering import ClusteringConfig
from dfml.algorithms.evaluation import EvalConfig
from dfml.compression import QUANTIZERS, SPARSIFIERS, CompressionConfig
from dfml.data.config import DataConfig, PartitionConfig
from dfml.data.registry import MEDMNIST_PREFIX, TORCHVISION_NAMES
from dfml.errors import ConfigError
from dfml.experiment import ExperimentConfig, RunConfig
from dfml.fault.config import FaultConfig
from dfml.launch import services
from dfml.launch.limits import MAX_CONFIG_BYTES, check_int, check_path, check_string, shown
from dfml.launch.registry import ALGORITHMS, algorithm_class, clusters
from dfml.launch.tracking import check_tracking
from dfml.models.zoo import ModelConfig
from dfml.runtime.membership import MembershipConfig
from dfml.topology.config import TopologyConfig
from dfml.untrusted import load_yaml, read_limited

#: Ray addresses ``--ray-address`` accepts besides ``HOST:PORT`` and ``ray://HOST:PORT``.
RAY_ADDRESS_KEYWORDS = ("auto", "local")

#: The experiment options that name local files or folders (``checkpoint_uri``
#: only when it is a plain path, not ``s3://...``): recorded absolute in run.json.
PATH_OPTIONS = (
    "data_root",
    "partition_file",
    "edge_list",
    "tasks_file",
    "checkpoint_uri",
    "speed_trace",
)
#: Launch options that are always local paths (checked as paths, never recorded).
LOCAL_PATHS = ("out", "resume", "tensorboard_dir")


@dataclass(frozen=True)
class LaunchConfig:
    """How to run, not what: output directory, Ray address, progress bar.

    Attributes:
        out: results folder (summary.json, metrics.parquet, plots); created if missing.
            A folder that already holds results is refused unless ``overwrite``
            (or ``--resume``) is given.
        ray_address: Ray cluster to join: ``auto`` (the cluster running on this
            machine), ``HOST:PORT`` (its GCS, port 6379 by default) or
            ``ray://HOST:10001`` (Ray Client); ``local`` starts a local Ray even
            where ``ray start`` runs one; ``None`` joins the cluster ``ray start``
            last started here, else starts a local Ray.
        progress: show a progress bar with the mean client accuracy per round.
        dashboard: start the Ray dashboard (local Ray only) and print its address.
        resume: continue the run whose results folder (or checkpoint URI) this
            names, from its last complete checkpoint; launch flags may be given
            again, experiment flags must equal the checkpoint's.
        overwrite: replace the results already in ``out`` (and the checkpoints
            under ``checkpoint_uri``): every old result file is moved aside
            once Ray has started and removed once the run's actors have
            started; a run that fails before puts them back. Without it, a
            run refuses a folder that holds results.
        tracking: trackers that also receive the run (comma-separated):
            ``tensorboard``, ``mlflow``; the options, every round's client
            metrics (mean and spread), bytes and seconds, the summary, and
            in MLflow the results files. A tracker that fails warns once and
            the run goes on. Empty: none.
        tracking_uri: MLflow's tracking URI (``sqlite:///PATH`` or
            ``http(s)://HOST``); ``None``: ``sqlite:///OUT/mlflow.db``.
        tensorboard_dir: TensorBoard's log folder (one sub-folder per run);
            ``None``: ``OUT/tensorboard``.
        object_store_gb: the object store of a Ray that dfml starts, in GiB
            (0.1 to this machine's memory); ``None``: Ray's default, 30 % of
            the memory. A run with many clients holds two rounds of published
            vectors at once (100,000 clients of the 8,970-parameter MLP: 7.2
            GB), and whatever does not fit is spilled to disk.
    """

    out: str = "runs/latest"
    ray_address: str | None = None
    progress: bool = True
    dashboard: bool = True
    resume: str | None = None
    overwrite: bool = False
    tracking: tuple[str, ...] = ()
    tracking_uri: str | None = None
    tensorboard_dir: str | None = None
    object_store_gb: float | None = None

    def __post_init__(self) -> None:
        if not str(self.out).strip():
            raise ConfigError("--out must be a folder path, got an empty string")
        check_ray_address(self.ray_address)
        check_object_store(self.object_store_gb)
        if self.overwrite and self.resume:
            raise ConfigError(
                "--overwrite and --resume exclude each other: --resume continues the results "
                "in the folder, --overwrite replaces them"
            )
        check_tracking(self.tracking, self.tracking_uri, self.tensorboard_dir)


def check_object_store(gb: float | None) -> None:
    """``--object-store-gb`` is a size between 0.1 GiB and this machine's memory."""
    if gb is None:
        return
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    if not (math.isfinite(gb) and 0.1 <= gb <= total):
        raise ConfigError(
            f"--object-store-gb must be 0.1 to {total:.1f} (this machine's memory in GiB), got {gb:g}"
        )


def split_host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT``, ``[v6]:PORT`` or ``ray://HOST:PORT``; None if malformed."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def check_ray_address(address: str | None) -> None:
    """The forms ``--ray-address`` takes; reachability is checked when Ray starts."""
    if address is None or address in RAY_ADDRESS_KEYWORDS:
        return
    scheme = address.split("://", 1)[0] if "://" in address else None
    if scheme not in (None, "ray") or split_host_port(address) is None:
        raise ConfigError(
            f"--ray-address must be auto, HOST:PORT or ray://HOST:PORT, got {address!r}"
        )


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
    **services.SECTIONS,
    "launch": LaunchConfig,
}


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """``cls``'s field name → type hint. Cached: building the CLI's parsers asks
    about 3,000 times, and resolving the string annotations each time took 2 s."""
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
            number = int(str(value).strip()) if isinstance(value, str) else int(value)
            check_int(f"--{flag(name)}", number)
            return number
        if hint is float:
            out = float(value)
            if not math.isfinite(out):
                raise ConfigError(f"--{flag(name)} must be a finite number, got {shown(value)}")
            return out
        if hint is str:
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            text = str(value)
            if name in LOCAL_PATHS or (name in PATH_OPTIONS and "://" not in text):
                check_path(f"--{flag(name)}", text)
            check_string(f"--{flag(name)}", text)
            return text
    except (TypeError, ValueError, OverflowError):
        kind = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"--{flag(name)} must be {kind}, got {shown(value)}") from None
    raise TypeError(f"unsupported option type {hint!r} for {name}")


def flag(name: str) -> str:
    return name.replace("_", "-")


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: int, second: int) -> None:
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a mapping may name a key only once.

    PyYAML keeps the last of two equal keys without a word. Keys are compared
    as options are (``local-epochs`` is ``local_epochs``); keys merged in
    with ``<<`` may be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str):
                key = key.replace("-", "_")
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise _DuplicateKey(str(key), first, line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's options: at most ``MAX_CONFIG_BYTES``, no alias, no deep nesting."""
    check_path("config file", str(path))
    p = Path(path)
    what = f"config file {str(p)!r}"
    if p.exists() and not p.is_file():
        raise ConfigError(f"{what} is not a file")
    try:
        text = read_limited(p, what, MAX_CONFIG_BYTES).decode("utf-8")
        loaded = load_yaml(text, what, _UniqueKeyLoader)  # a SafeLoader
    except _DuplicateKey as dup:
        raise ConfigError(
            f"{what} gives key {dup.key!r} twice (lines {dup.first} and {dup.second}); keep one"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} is not UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{what} is not valid YAML{where}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def _build(cls: type, options: Mapping[str, Any]) -> Any:
    hints = field_types(cls)
    kwargs = {k: coerce(k, v, hints[k]) for k, v in options.items() if k in hints}
    return cls(**kwargs)


@dataclass(frozen=True)
class UnusedRule:
    """Options that only some setups read, and a test of whether this one does.

    An option in ``options`` that was given explicitly while ``reads`` is
    false is an error: ``{flag} applies to {where}, not {actual}``.
    ``when_true``: only a true value counts (a switch set to false asks for
    nothing).
    """

    options: tuple[str, ...]
    where: str
    reads: Callable[[ExperimentConfig, LaunchConfig], bool]
    actual: Callable[[ExperimentConfig, LaunchConfig], str]
    when_true: bool = False


def _topology(cfg: ExperimentConfig, _: LaunchConfig) -> str:
    return cfg.topology.topology


def _partition(cfg: ExperimentConfig, _: LaunchConfig) -> str:
    if cfg.partition.partition_file is not None:
        return "--partition-file (the file fixes the clients)"
    return cfg.partition.partition


def _drawn(name: str) -> Callable[[ExperimentConfig, LaunchConfig], bool]:
    return lambda cfg, _: cfg.partition.partition_file is None and cfg.partition.partition == name


def _file_dataset(name: str) -> bool:
    return name in TORCHVISION_NAMES or name.startswith(MEDMNIST_PREFIX)


_FILE_DATASETS = (
    "the datasets read from files (mnist, fashion-mnist, emnist, cifar10, cifar100, "
    "medmnist:<name>)"
)


def _dataset(cfg: ExperimentConfig, _: LaunchConfig) -> str:
    return cfg.data.dataset


def _compressor(cfg: ExperimentConfig, _: LaunchConfig) -> str:
    return f"compressor {getattr(cfg.algorithm, 'compressor', 'none')}"


def _compresses_with(methods: tuple[str, ...]) -> Callable[[ExperimentConfig, LaunchConfig], bool]:
    return lambda cfg, _: getattr(cfg.algorithm, "compressor", "none") in methods


def _robustness(cfg: ExperimentConfig) -> Any:
    return services.section(cfg, "robustness")


def _attack(cfg: ExperimentConfig, _: LaunchConfig) -> str:
    sec = _robustness(cfg)
    return f"attack {sec.attack}" if sec.byzantine > 0 else "a run without --byzantine"


def _rule(name: str) -> Callable[[ExperimentConfig, LaunchConfig], bool]:
    return lambda cfg, _: _robustness(cfg).robust_aggregation == name


def _rule_name(cfg: ExperimentConfig, _: LaunchConfig) -> str:
    return f"robust-aggregation {_robustness(cfg).robust_aggregation}"


#: Which options each setup reads. build_config refuses an explicitly given
#: option whose rule says the chosen setup does not read it.
UNUSED_RULES: tuple[UnusedRule, ...] = (
    UnusedRule(
        ("degree",),
        "topology k-regular or small-world",
        lambda cfg, _: cfg.topology.topology in ("k-regular", "small-world"),
        _topology,
    ),
    UnusedRule(
        ("edge_probability",),
        "topology erdos-renyi",
        lambda cfg, _: cfg.topology.topology == "erdos-renyi",
        _topology,
    ),
    UnusedRule(
        ("rewire_probability",),
        "topology small-world",
        lambda cfg, _: cfg.topology.topology == "small-world",
        _topology,
    ),
    UnusedRule(
        ("edge_list",),
        "topology edge-list",
        lambda cfg, _: cfg.topology.topology == "edge-list",
        _topology,
    ),
    UnusedRule(
        ("peers", "epidemic"),
        "topology epidemic",
        lambda cfg, _: cfg.topology.topology == "epidemic",
        _topology,
    ),
    UnusedRule(
        ("hidden",),
        "model auto, mlp, cnn or resnet-lite",
        lambda cfg, _: cfg.model.model != "linear",
        lambda cfg, _: f"model {cfg.model.model}",
    ),
    UnusedRule(("alpha",), "partition dirichlet", _drawn("dirichlet"), _partition),
    UnusedRule(
        ("classes_per_client",), "partition pathological", _drawn("pathological"), _partition
    ),
    UnusedRule(
        ("groups", "group_overlap"), "partition label-group", _drawn("label-group"), _partition
    ),
    UnusedRule(("quantity_alpha",), "partition quantity", _drawn("quantity"), _partition),
    UnusedRule(
        ("partition", "test_fraction", "min_samples"),
        "drawn partitions",
        lambda cfg, _: cfg.partition.partition_file is None,
        _partition,
    ),
    UnusedRule(
        ("synthetic_samples", "synthetic_classes", "synthetic_shape"),
        "dataset synthetic",
        lambda cfg, _: cfg.data.dataset == "synthetic",
        _dataset,
    ),
    UnusedRule(
        ("data_root",),
        _FILE_DATASETS,
        lambda cfg, _: _file_dataset(cfg.data.dataset),
        _dataset,
    ),
    UnusedRule(
        ("download",),
        _FILE_DATASETS,
        lambda cfg, _: _file_dataset(cfg.data.dataset),
        _dataset,
        when_true=True,
    ),
    UnusedRule(
        ("compression",),
        f"compressor {' or '.join(SPARSIFIERS)}",
        _compresses_with(SPARSIFIERS),
        _compressor,
    ),
    UnusedRule(
        ("levels",),
        f"compressor {' or '.join(QUANTIZERS)}",
        _compresses_with(QUANTIZERS),
        _compressor,
    ),
    UnusedRule(
        ("chaos_fraction",),
        "runs with --chaos-rounds",
        lambda cfg, _: bool(cfg.fault.chaos_rounds),
        lambda cfg, _: "a run without them",
    ),
    UnusedRule(
        ("chaos_mode",),
        "runs with chaos (--chaos-kill-rate or --chaos-rounds)",
        lambda cfg, _: cfg.fault.chaos,
        lambda cfg, _: "a run without chaos",
    ),
    UnusedRule(
        ("pers_steps", "local_only_epochs", "local_only_lr"),
        "runs with --personalized-eval true",
        lambda cfg, _: cfg.evaluation.personalized_eval,
        lambda cfg, _: "--personalized-eval false",
    ),
    UnusedRule(
        ("dp_delta",),
        "runs with DP-SGD (--dp-clip)",
        lambda cfg, _: services.section(cfg, "privacy").active,
        lambda cfg, _: "a run without --dp-clip",
    ),
    UnusedRule(
        ("attack",),
        "runs with attackers (--byzantine)",
        lambda cfg, _: _robustness(cfg).byzantine > 0,
        lambda cfg, _: "a run without --byzantine",
    ),
    UnusedRule(
        ("attack_scale",),
        "attack sign-flip or gaussian",
        lambda cfg, _: (
            _robustness(cfg).byzantine > 0 and _robustness(cfg).attack in ("sign-flip", "gaussian")
        ),
        _attack,
    ),
    UnusedRule(
        ("trim_fraction",), "robust-aggregation trimmed-mean", _rule("trimmed-mean"), _rule_name
    ),
    UnusedRule(
        ("krum_byzantine", "krum_select"), "robust-aggregation krum", _rule("krum"), _rule_name
    ),
    UnusedRule(
        ("clip_radius",), "robust-aggregation clipped-gossip", _rule("clipped-gossip"), _rule_name
    ),
    UnusedRule(
        ("step_seconds",),
        "runs with --speeds, --stragglers, --latency or --schedule-mode async (a "
        "--speed-trace gives every client's seconds)",
        lambda cfg, _: (
            services.section(cfg, "clock").active
            and services.section(cfg, "clock").speed_trace is None
        ),
        lambda cfg, _: (
            "--speed-trace"
            if services.section(cfg, "clock").speed_trace is not None
            else "a run without a virtual clock"
        ),
    ),
    UnusedRule(
        ("object_store_gb",),
        "a Ray that dfml starts (--backend ray without --ray-address)",
        lambda cfg, launch: (
            cfg.resources.backend == "ray" and launch.ray_address in (None, "local")
        ),
        lambda cfg, launch: (
            f"--ray-address {launch.ray_address}"
            if launch.ray_address not in (None, "local")
            else f"--backend {cfg.resources.backend}"
        ),
    ),
    UnusedRule(
        ("dashboard",),
        "a local Ray (without --ray-address)",
        lambda _, launch: launch.ray_address in (None, "local"),
        lambda _, launch: f"--ray-address {launch.ray_address}",
        when_true=True,
    ),
)


def check_unused(
    given: Mapping[str, Any],
    cfg: ExperimentConfig,
    launch: LaunchConfig,
    allow: Collection[str] = (),
) -> None:
    """Refuse an explicitly given option that ``cfg`` / ``launch`` does not read."""
    for rule in UNUSED_RULES:
        for name in rule.options:
            if name not in given or name in allow or rule.reads(cfg, launch):
                continue
            if rule.when_true and not coerce(name, given[name], bool):
                continue
            raise ConfigError(
                f"--{flag(name)} applies to {rule.where}, not {rule.actual(cfg, launch)}"
            )


def build_config(
    options: Mapping[str, Any], allow_unused: Collection[str] = ()
) -> tuple[ExperimentConfig, LaunchConfig]:
    """Route each option to the dataclass that declares it; reject the rest.

    Every key of ``options`` counts as given explicitly: one that the built
    setup does not read is refused (:data:`UNUSED_RULES`) unless it is in
    ``allow_unused``.
    """
    opts = {k.replace("-", "_"): v for k, v in options.items()}
    given = dict(opts)
    algo_name = str(opts.get("algorithm", RunConfig.algorithm))
    if clusters(algo_name):  # clfml, cdfedavg: clustering is part of the algorithm
        if str(opts.get("cluster_by", "labels")) != "labels":
            raise ConfigError(
                f"algorithm {algo_name!r} always clusters by labels; "
                f"--cluster-by {opts['cluster_by']} does not apply"
            )
        opts["cluster_by"] = "labels"
    compressor = str(opts.get("compressor", "none"))
    algo_cls = algorithm_class(
        algo_name, str(opts.get("cluster_by", RunConfig.cluster_by)), compressor
    )
    if "compressor" not in field_types(algo_cls.Config):
        opts.pop("compressor", None)  # --compressor none: the algorithm as it is
    known = set(field_types(algo_cls.Config))
    for cls in SECTIONS.values():
        known |= set(field_types(cls))
    others = set(all_option_types())
    for key in sorted(opts):
        if key in known:
            continue
        if key in others:
            needs = ""
            if key in field_types(ClusteringConfig):
                needs = " without --cluster-by labels"
            elif key in field_types(CompressionConfig):
                needs = " without --compressor"
            raise ConfigError(
                f"option --{flag(key)} does not apply to algorithm {algo_name!r}{needs}"
            )
        raise ConfigError(f"unknown option --{flag(key)}; see 'dfml run --help'")
    if opts.get("partition_file") and "clients" not in opts:
        from dfml.data.partition_file import num_clients_in

        # The file fixes the clients (initial + reserve); an explicit --clients is checked later.
        membership = _build(MembershipConfig, opts)
        path = coerce("partition_file", opts["partition_file"], str)
        opts["clients"] = num_clients_in(path) - membership.reserve
    if (opts.get("tasks") or opts.get("tasks_file")) and "train_split" in known:
        # Tasks fine-tune on D^Q: every method pretrains on D^M alone unless told otherwise.
        opts.setdefault("train_split", "meta")
    if "task_head" in opts and "episode_head" in known:
        # Meta-training takes the step a task takes, unless told otherwise.
        opts.setdefault("episode_head", opts["task_head"])
    built = {name: _build(cls, opts) for name, cls in SECTIONS.items()}
    launch = built.pop("launch")
    sections = {name: built.pop(name) for name in services.SECTIONS}
    experiment = ExperimentConfig(
        **built, services=sections, algorithm=_build(algo_cls.Config, opts)
    )
    check_unused(given, experiment, launch, set(allow_unused))
    return experiment, launch


def absolute_paths(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with every local path of :data:`PATH_OPTIONS` made absolute.

    A run records its options this way when it starts, so ``--resume`` from
    another directory reads the same files and writes the same checkpoints.
    """
    out = dict(options)
    for name in PATH_OPTIONS:
        value = out.get(name)
        if isinstance(value, str) and value.strip() and "://" not in value:
            out[name] = str(Path(value).expanduser().resolve())
    return out


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """A JSON-ready record of every effective setting (services' sections included)."""
    own = [name for name in SECTIONS if name != "launch" and name not in services.SECTIONS]
    return {
        **{name: dataclasses.asdict(getattr(cfg, name)) for name in own},
        **{name: dataclasses.asdict(services.section(cfg, name)) for name in services.SECTIONS},
        "algorithm": dataclasses.asdict(cfg.algorithm),
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
