"""Cluster recipes: the ``ray up`` files under ``recipes/`` and their offline check.

A recipe is a Ray cluster-launcher YAML (``ray up recipes/aws-gpu.yaml``).
:func:`validate_recipe` runs the part of ``ray up`` that needs no cloud, with
the installed Ray's own functions from ``ray.autoscaler._private.util``:

* ``prepare_config``: merges the provider's ``defaults.yaml`` shipped in the
  Ray wheel (top-level keys only), merges ``setup_commands`` into the head and
  worker setup commands, checks the Docker section and fills each node type's
  ``min_workers``/``max_workers``; for the ``local`` provider it first builds
  the single node type from ``head_ip``/``worker_ips``. It reads files only.
* ``validate_config``: ``jsonschema`` against ``ray/autoscaler/ray-schema.json``
  (unknown keys are errors), ``head_node_type`` must be a node type, the sum
  of ``min_workers`` must fit ``max_workers``.

``ray up`` (``_bootstrap_config`` in ``ray.autoscaler._private.commands``)
calls the same two, and in between does what is left out here on purpose
because it talks to the cloud: importing the node provider (boto3 /
googleapiclient, not installed here), looking up instance types to fill
missing ``resources`` (AWS); and after them ``bootstrap_config`` (IAM role,
key pair, security group, subnet, project). So the recipes declare every node
type's resources themselves.

Before Ray's functions, the file goes through the same schema as written (a
wrong type or an unknown key is named where the user wrote it, and Ray's
merging code never sees a malformed section); around them, a few checks Ray
leaves to the cloud API (:func:`worker_bounds_problem`, :func:`dfml_checks`).
Every failure is a :class:`~dfml.errors.ConfigError` of one line: the file,
the field, what is wrong.

Ray is imported inside the functions, so importing this module (the CLI does)
stays cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import json
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dfml.errors import ConfigError

#: The repository's ``recipes/`` folder (next to the ``dfml`` package in a checkout).
RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"

#: How the shipped recipes mark a value the user must replace.
PLACEHOLDER = "<YOUR_"


def expected_image(python: tuple[int, int] | None = None) -> str:
    """The Docker image the cloud recipes must use: this Ray and this Python.

    ``rayproject/ray:<ray version>-py<XY>-gpu``: the nodes must run the Ray that
    ``ray up`` runs here, and the Python ``requirements.lock`` is resolved for.
    """
    import ray

    major, minor = python or sys.version_info[:2]
    return f"rayproject/ray:{ray.__version__}-py{major}{minor}-gpu"


def list_recipes(directory: str | Path | None = None) -> list[Path]:
    """The ``*.yaml`` recipes in ``directory`` (default :data:`RECIPES_DIR`), sorted.

    A missing folder (dfml installed without its checkout) is an empty list.
    """
    root = Path(directory) if directory is not None else RECIPES_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def resolve_recipe(name_or_path: str | Path, directory: str | Path | None = None) -> Path:
    """A path as given if it exists, else ``<directory>/<name>[.yaml]``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    root = Path(directory) if directory is not None else RECIPES_DIR
    for candidate in (root / path, root / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no recipe {str(name_or_path)!r} (not a file, not in {root})")


def load_recipe(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in ``path``; a missing file or bad YAML is a one-line ConfigError."""
    import yaml

    path = Path(path)
    name = shown(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{name}: cannot read: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise ConfigError(f"{name}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: a cluster recipe is a YAML mapping, got {type(data).__name__}")
    return data


def validate_recipe(path: str | Path) -> dict[str, Any]:
    """Check one recipe offline the way ``ray up`` would; return the prepared config.

    The returned dict is what Ray's autoscaler would work with: the recipe
    merged with the provider's defaults, setup commands merged, per-type worker
    bounds filled in. Raises :class:`ConfigError` naming the file and the field.
    """
    import click
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = Path(path)
    name = shown(path)
    raw = load_recipe(path)
    schema = ray_schema()

    # 1. The file as written, against Ray's schema (cluster_name may come from defaults).
    as_written = copy.deepcopy(schema)
    as_written["required"] = [k for k in schema.get("required", []) if k != "cluster_name"]
    try:
        jsonschema.validate(raw, as_written)
    except jsonschema.ValidationError as err:
        raise ConfigError(f"{name}: {describe_schema_error(err)}") from None
    _check_local_fields(name, raw)

    # 2. Ray's own preparation and validation (defaults.yaml merged in; no cloud calls).
    try:
        with _quiet_autoscaler_log():
            prepared = prepare_config(raw)
    except (AssertionError, KeyError, TypeError, ValueError, NotImplementedError) as err:
        raise ConfigError(f"{name}: {_ray_message(err, raw)}") from None
    except click.ClickException as err:  # Ray's cli_logger.abort
        raise ConfigError(f"{name}: {_one_line(err.message)}") from None
    # Before validate_config, whose check of the sums would hide which type is wrong.
    problem = worker_bounds_problem(prepared)
    if problem is not None:
        raise ConfigError(f"{name}: {problem}")
    try:
        validate_config(prepared)
    except jsonschema.ValidationError as err:
        raise ConfigError(f"{name}: {describe_schema_error(err)}") from None
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"{name}: {_ray_message(err, prepared)}") from None

    # 3. What Ray leaves to the cloud API to refuse.
    problem = dfml_checks(prepared)
    if problem is not None:
        raise ConfigError(f"{name}: {problem}")
    return prepared


@contextlib.contextmanager
def _quiet_autoscaler_log() -> Iterator[None]:
    """Hide ``prepare_config``'s INFO lines ("setting max workers for ...")."""
    log = logging.getLogger("ray.autoscaler")
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


def shown(path: str | Path) -> str:
    """``path`` relative to the working directory when it is below it, else as given."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def ray_schema() -> dict[str, Any]:
    """The installed autoscaler's ``ray-schema.json`` (the file ``validate_config`` reads)."""
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(schema_path.read_text())


# ----- error messages ---------------------------------------------------------


def field_path(parts: Sequence[Any]) -> str:
    """``["available_node_types", "gpu", "node_config"]`` → ``available_node_types.gpu.node_config``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def describe_schema_error(err: Any) -> str:
    """``FIELD: what is wrong`` for a ``jsonschema.ValidationError``, the field spelled out.

    jsonschema puts the offending key of an unknown-key or missing-key error
    in its message, not in its path; it is moved into the field here.
    """
    parts = list(err.absolute_path)
    instance = err.instance
    if err.validator == "additionalProperties" and isinstance(instance, dict):
        known = set(err.schema.get("properties", {}))
        extra = sorted(k for k in instance if k not in known)
        if extra:
            close = difflib.get_close_matches(str(extra[0]), sorted(known), n=1)
            hint = (
                f"did you mean {close[0]}?"
                if close
                else "Ray's cluster schema allows here: " + ", ".join(sorted(known))
            )
            return f"{field_path([*parts, extra[0]])}: unknown field ({hint})"
    if err.validator == "required" and isinstance(instance, dict):
        missing = [k for k in err.validator_value if k not in instance]
        if missing:
            return f"{field_path([*parts, missing[0]])}: required field is missing"
    return f"{field_path(parts)}: {_one_line(err.message)}"


def _ray_message(err: BaseException, config: Mapping[str, Any]) -> str:
    """One line from an error Ray raised while preparing or validating a config."""
    if isinstance(err, KeyError):
        return f"{err.args[0]}: required field is missing"
    if isinstance(err, NotImplementedError):
        kind = config.get("provider", {}).get("type") if isinstance(config, dict) else None
        return f"provider.type: {kind!r} is not a provider this Ray knows"
    if isinstance(err, AssertionError) and "container" in str(err):
        return f"docker: {_one_line(str(err))} (docker.image and docker.container_name)"
    message = _one_line(str(err)) or type(err).__name__
    # validate_config's own checks name their field in backquotes; lead with it.
    for field in ("head_node_type", "max_workers"):
        if f"`{field}`" in message:
            return f"{field}: {message}"
    return message


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _check_local_fields(name: str, raw: Mapping[str, Any]) -> None:
    """The ``local`` provider's rules, checked before Ray would abort with a log banner."""
    provider = raw.get("provider", {})
    if provider.get("type") != "local":
        return
    for key in ("available_node_types", "head_node_type", "head_node", "worker_nodes"):
        if raw.get(key):
            raise ConfigError(
                f"{name}: {key}: not used with the local provider (its one node type "
                "comes from provider.head_ip and provider.worker_ips)"
            )
    if "coordinator_address" not in provider:
        for key in ("head_ip", "worker_ips"):
            if key not in provider:
                raise ConfigError(f"{name}: provider.{key}: required field is missing")


# ----- dfml's own checks ------------------------------------------------------


def dfml_checks(config: Mapping[str, Any]) -> str | None:
    """``FIELD: problem`` for the first thing Ray accepts offline but the cluster would not.

    * a ``rayproject/ray`` image of another Ray version than the installed one
      (``ray up`` and the nodes must run the same Ray);
    * GCP: ``scheduling`` must be a mapping; a node with ``guestAccelerators``
      needs ``onHostMaintenance: TERMINATE`` and must declare as many ``GPU``
      in ``resources`` as it attaches (GCP resources are never auto-detected).
    """
    import ray

    docker = config.get("docker") or {}
    for key in ("image", "head_image", "worker_image"):
        image = docker.get(key)
        if isinstance(image, str) and image.startswith("rayproject/ray:"):
            tag = image.split(":", 1)[1]
            if not tag.startswith(f"{ray.__version__}-") and tag != ray.__version__:
                return (
                    f"docker.{key}: {image} is not Ray {ray.__version__} (the Ray this "
                    f"dfml pins and `ray up` runs); use {expected_image()}"
                )
    if config.get("provider", {}).get("type") == "gcp":
        for name, node in config.get("available_node_types", {}).items():
            problem = _gcp_node_problem(node)
            if problem is not None:
                return f"available_node_types.{name}.{problem}"
    return None


def worker_bounds_problem(config: Mapping[str, Any]) -> str | None:
    """A node type with more ``min_workers`` than ``max_workers`` (Ray checks only sums)."""
    for name, node in config.get("available_node_types", {}).items():
        lo, hi = node.get("min_workers", 0), node.get("max_workers")
        if hi is not None and lo > hi:
            return f"available_node_types.{name}.min_workers: {lo} is more than max_workers {hi}"
    return None


def _gcp_node_problem(node: Mapping[str, Any]) -> str | None:
    node_config = node.get("node_config", {})
    scheduling = node_config.get("scheduling")
    if scheduling is not None and not isinstance(scheduling, dict):
        return (
            "node_config.scheduling: must be a mapping (onHostMaintenance: TERMINATE, "
            f"preemptible: true), got a {type(scheduling).__name__}"
        )
    accelerators = node_config.get("guestAccelerators") or []
    if not accelerators:
        return None
    if (scheduling or {}).get("onHostMaintenance") != "TERMINATE":
        return (
            "node_config.scheduling.onHostMaintenance: must be TERMINATE on a node with "
            "guestAccelerators (GPU VMs cannot live-migrate)"
        )
    attached = sum(int(a.get("acceleratorCount", 0)) for a in accelerators)
    declared = node.get("resources", {}).get("GPU", 0)
    if declared != attached:
        return (
            f"resources.GPU: declares {declared} but guestAccelerators attach {attached} "
            "(GCP resources are not auto-detected)"
        )
    return None


# ----- what to fill in ---------------------------------------------------------


def placeholders(config: Any, parts: tuple[Any, ...] = ()) -> Iterator[tuple[str, str]]:
    """``(field, value)`` for each value still holding a ``<YOUR_...>`` placeholder."""
    if isinstance(config, dict):
        for key, value in config.items():
            yield from placeholders(value, (*parts, key))
    elif isinstance(config, list):
        for index, value in enumerate(config):
            yield from placeholders(value, (*parts, index))
    elif isinstance(config, str) and PLACEHOLDER in config:
        yield field_path(parts), config


def to_fill_in(config: Mapping[str, Any]) -> list[str]:
    """One entry per distinct placeholder: ``<YOUR_X> (field, field, ...)``."""
    where: dict[str, list[str]] = {}
    for field, value in placeholders(config):
        where.setdefault(value, []).append(field)
    return [f"{value} ({', '.join(fields)})" for value, fields in where.items()]


def summary(path: Path, prepared: Mapping[str, Any]) -> str:
    """One line about a valid recipe: provider, head, worker types with bounds and resources."""
    provider = prepared.get("provider", {})
    place = provider.get("availability_zone") or provider.get("region") or ""
    if provider.get("type") == "local":
        place = f"head {provider.get('head_ip')}, {len(provider.get('worker_ips', []))} workers"
    head = prepared.get("head_node_type")
    workers = []
    for name, node in prepared.get("available_node_types", {}).items():
        if name == head:
            continue
        res = ", ".join(f"{k} {v}" for k, v in node.get("resources", {}).items())
        workers.append(
            f"{name} {node.get('min_workers', 0)}-{node.get('max_workers', 0)}"
            + (f" [{res}]" if res else "")
        )
    image = (prepared.get("docker") or {}).get("image") or "no docker"
    parts = [f"{provider.get('type')} {place}".strip(), f"head {head}"]
    if workers:
        parts.append("workers " + "; ".join(workers))
    parts.append(image)
    return f"{shown(path)}: ok ({', '.join(parts)})"


# ----- CLI ----------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """``dfml recipes [--validate PATH ...] [--dir DIR]``."""
    p = sub.add_parser(
        "recipes",
        help="list the `ray up` cluster recipes and check them offline",
        description=(
            "Check cluster recipes (ray up YAML) offline with the installed Ray's own "
            "config preparation and schema, and list what each still needs filled in. "
            "Without --validate: every recipe in the recipes folder."
        ),
    )
    p.add_argument(
        "--validate",
        nargs="+",
        metavar="PATH",
        help="recipe files (or names in the recipes folder) to check instead",
    )
    p.add_argument(
        "--dir",
        default=None,
        metavar="DIR",
        help=f"recipes folder (default: {RECIPES_DIR})",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    directory = args.dir
    if args.validate:
        paths = [resolve_recipe(p, directory) for p in args.validate]
    else:
        paths = list_recipes(directory)
        if not paths:
            root = directory or RECIPES_DIR
            raise ConfigError(f"no recipes in {root}; pass --dir DIR or --validate PATH")
    for path in paths:
        prepared = validate_recipe(path)
        print(summary(path, prepared))
        for item in to_fill_in(load_recipe(path)):
            print(f"  fill in: {item}")
    return 0
