"""Help text of every option, generated from the config dataclasses' docstrings.

The ``Attributes:`` section (Google style) of each config class is the one
place an option is described: ``dfml run --help`` reads it, so a new field
documented there shows up with its type, default and allowed values without
touching the CLI, and a field documented nowhere fails
``tests/launch/test_help.py`` (:func:`undocumented`) instead of reaching the
user as a bare flag.

Allowed values come from the modules' own constants (``TOPOLOGIES``,
``PARTITIONS``, ...) through :data:`CHOICES`, keyed by (class, field) because
the config classes live in modules owned elsewhere; a subclass inherits its
bases' entries.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dfml.actors.config import BACKENDS, PLACEMENTS, ResourceConfig
from dfml.algorithms.clfml.label_clustering import ClusteringConfig
from dfml.algorithms.fml import MetaConfig
from dfml.algorithms.robust.attacks import ATTACKS
from dfml.algorithms.robust.config import RULES, RobustConfig
from dfml.algorithms.server import AGGREGATIONS, FederatedSGDConfig
from dfml.channels import PACK_MODES, PUBLISH_DTYPES
from dfml.compression import COMPRESSORS, CompressionConfig
from dfml.data.config import PARTITIONS, DataConfig, PartitionConfig
from dfml.data.registry import DATASETS
from dfml.experiment import RunConfig
from dfml.fault.config import CHAOS_MODES, FaultConfig
from dfml.launch.options import SECTIONS, field_types
from dfml.launch.registry import ALGORITHMS, CLUSTER_BY
from dfml.models.zoo import MODELS, ModelConfig
from dfml.topology.config import EPIDEMIC_VARIANTS, MIXINGS, TOPOLOGIES, TopologyConfig

#: Allowed values of the string options that take one of a fixed set.
CHOICES: dict[tuple[type, str], tuple[str, ...]] = {
    (RunConfig, "algorithm"): tuple(sorted(ALGORITHMS)),
    (RunConfig, "cluster_by"): CLUSTER_BY,
    (DataConfig, "dataset"): DATASETS,
    (PartitionConfig, "partition"): PARTITIONS,
    (ModelConfig, "model"): ("auto", *sorted(MODELS)),
    (TopologyConfig, "topology"): TOPOLOGIES,
    (TopologyConfig, "mixing"): MIXINGS,
    (TopologyConfig, "epidemic"): EPIDEMIC_VARIANTS,
    (FaultConfig, "chaos_mode"): CHAOS_MODES,
    (ResourceConfig, "placement"): PLACEMENTS,
    (ResourceConfig, "pack_params"): PACK_MODES,
    (ResourceConfig, "publish_dtype"): PUBLISH_DTYPES,
    (ResourceConfig, "backend"): BACKENDS,
    (FederatedSGDConfig, "aggregation"): AGGREGATIONS,
    (MetaConfig, "aggregation"): AGGREGATIONS,
    (CompressionConfig, "compressor"): COMPRESSORS,
    (RobustConfig, "attack"): ATTACKS,
    (RobustConfig, "robust_aggregation"): RULES,
}

#: Knobs the label clustering adds to an algorithm run with ``--cluster-by labels``.
CLUSTERING_KNOBS = frozenset(field_types(ClusteringConfig))
#: Knobs a compressor adds to a gossip algorithm run with ``--compressor``.
COMPRESSION_KNOBS = frozenset(field_types(CompressionConfig))

#: Argument-group titles of the config sections; a section added to
#: ``SECTIONS`` without an entry here is titled by its key.
GROUP_TITLES: dict[str, str] = {
    "resources": "placement (resources)",
    "evaluation": "training / evaluation",
}

ALGORITHM_GROUP = "algorithm knobs"
ALGORITHM_GROUP_NOTE = (
    "Each knob applies only to the algorithms listed with it; the other algorithms reject it."
)

_ENTRY = re.compile(r"(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)")
_ROLE = re.compile(r":\w+:`(~?)([^`]+)`")


@dataclass(frozen=True)
class Option:
    """One ``--flag``: its field name, type hint (for bool handling) and help line."""

    name: str
    hint: Any
    help: str


@dataclass(frozen=True)
class OptionGroup:
    """One argparse argument group: a concern's title, summary and options."""

    title: str
    description: str
    options: tuple[Option, ...]


def plain(text: str) -> str:
    """Sphinx roles and double backticks dropped: help is read in a terminal."""

    def target(match: re.Match[str]) -> str:
        # Sphinx's ``~`` shows only the last component of a dotted name.
        return match[2].rsplit(".", 1)[-1] if match[1] else match[2]

    return _ROLE.sub(target, text).replace("``", "")


@functools.cache
def attribute_docs(doc: str | None) -> Mapping[str, str]:
    """Field name → one-line description from a Google-style ``Attributes:`` section.

    Continuation lines (deeper indent) are joined; the section ends at the
    first non-blank line indented no deeper than its header. Cached: every
    parser looks up ~1,000 fields through the MRO, and a docstring never
    changes, and the answer is read-only.
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Attributes:"]
    if not starts:
        return types.MappingProxyType({})
    header = lines[starts[0]]
    header_indent = len(header) - len(header.lstrip())
    out: dict[str, str] = {}
    entry_indent: int | None = None
    current: str | None = None
    for line in lines[starts[0] + 1 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= header_indent:
            break
        entry_indent = indent if entry_indent is None else entry_indent
        match = _ENTRY.fullmatch(line.strip()) if indent == entry_indent else None
        if match:
            current = match[1]
            out[current] = match[2].strip()
        elif current is not None:
            out[current] = f"{out[current]} {line.strip()}".strip()
    return types.MappingProxyType({name: plain(text) for name, text in out.items()})


def field_doc(cls: type, name: str) -> str | None:
    """The description of ``cls.name``: the most derived class that documents it wins."""
    for klass in cls.__mro__:
        text = attribute_docs(klass.__dict__.get("__doc__")).get(name)
        if text:
            return text
    return None


def declaring_class(cls: type, name: str) -> type:
    """The base-most class that declares field ``name``: where its doc belongs."""
    for klass in reversed(cls.__mro__):
        if name in inspect.get_annotations(klass):
            return klass
    return cls


def config_classes() -> list[type]:
    """Every class whose fields become options: the sections, then each algorithm's Config."""
    out: list[type] = []
    for cls in [*SECTIONS.values(), *(a.Config for a in ALGORITHMS.values())]:
        if cls not in out:
            out.append(cls)
    return out


def undocumented(classes: list[type] | None = None) -> dict[str, list[str]]:
    """``module.Class`` → its fields documented nowhere in the MRO's ``Attributes:``.

    The class named is the one that declares the field, so a missing doc is
    reported once, where it has to be written.
    """
    missing: dict[str, list[str]] = {}
    for cls in config_classes() if classes is None else classes:
        for f in dataclasses.fields(cls):
            if field_doc(cls, f.name) is None:
                owner = declaring_class(cls, f.name)
                names = missing.setdefault(f"{owner.__module__}.{owner.__qualname__}", [])
                if f.name not in names:
                    names.append(f.name)
    return missing


def choices(cls: type, name: str) -> tuple[str, ...] | None:
    """Allowed values of ``cls.name`` from :data:`CHOICES`, inherited along the MRO."""
    for klass in cls.__mro__:
        if (klass, name) in CHOICES:
            return CHOICES[(klass, name)]
    return None


def type_name(hint: Any) -> str:
    """How a value is written on the command line, as :func:`options.coerce` reads it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return f"{type_name(inner[0])} or none"
    if origin is tuple:
        return f"{type_name(args[0])}s, comma-separated"
    return getattr(hint, "__name__", str(hint))


def format_default(value: Any) -> str:
    """A default as the user would type it (``none``, ``true``, ``0,1,5``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(format_default(v) for v in value) or "empty"
    if value == "":
        return '""'
    return str(value)


def default_of(cls: type, name: str) -> Any:
    """The dataclass default of ``cls.name`` (factories called)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _description(cls: type, name: str) -> str:
    return (field_doc(cls, name) or "undocumented").rstrip(".")


def _details(kind: str, default: str, allowed: tuple[str, ...] | None) -> str:
    one_of = f"; one of {', '.join(allowed)}" if allowed else ""
    return f"({kind}, default {default}{one_of})"


def section_option(cls: type, name: str) -> Option:
    """A section field's flag: ``description (type, default d; one of ...)``."""
    hint = field_types(cls)[name]
    details = _details(type_name(hint), format_default(default_of(cls, name)), choices(cls, name))
    return Option(name, hint, f"{_description(cls, name)} {details}")


def algorithm_option(name: str) -> Option:
    """An algorithm knob's flag, merged over the algorithms whose Config declares it.

    The same name can mean different things in different algorithms
    (pFedMe's ``inner_steps`` is not MAML's), so each distinct description is
    listed with its algorithms; the most common default is given first, then
    the algorithms that differ from it.
    """
    users = {a: cls.Config for a, cls in ALGORITHMS.items() if name in field_types(cls.Config)}
    by_doc: dict[str, list[str]] = {}
    for algo, cfg in users.items():
        by_doc.setdefault(_description(cfg, name), []).append(algo)
    defaults = {a: format_default(default_of(cfg, name)) for a, cfg in users.items()}
    main = Counter(defaults.values()).most_common(1)[0][0]
    others = "".join(f"; {a}: {d}" for a, d in defaults.items() if d != main)
    kinds = dict.fromkeys(type_name(field_types(cfg)[name]) for cfg in users.values())
    allowed = next((c for c in (choices(cfg, name) for cfg in users.values()) if c), None)
    details = _details(" or ".join(kinds), main + others, allowed)
    if len(by_doc) == 1:
        who = "all algorithms" if len(users) == len(ALGORITHMS) else ", ".join(users)
        text = f"{next(iter(by_doc))} {details} [used by: {who}]"
    else:
        parts = "; ".join(f"{doc} [used by: {', '.join(algos)}]" for doc, algos in by_doc.items())
        text = f"{parts} {details}"
    if name in CLUSTERING_KNOBS:
        text += " [and by any algorithm with --cluster-by labels]"
    if name in COMPRESSION_KNOBS:
        text += " [and by any gossip algorithm with --compressor]"
    return Option(name, field_types(next(iter(users.values())))[name], text)


def _summary(cls: type) -> str:
    doc = cls.__dict__.get("__doc__") or ""
    return plain(inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " "))


def option_groups() -> list[OptionGroup]:
    """Every option once, grouped by concern in ``SECTIONS`` order, then algorithm knobs.

    A name declared by a section and by an algorithm Config is listed with
    the section (one flag sets both, as :func:`options.build_config` routes it).
    """
    groups: list[OptionGroup] = []
    taken: set[str] = set()
    for key, cls in SECTIONS.items():
        names = [f.name for f in dataclasses.fields(cls) if f.name not in taken]
        taken.update(names)
        groups.append(
            OptionGroup(
                GROUP_TITLES.get(key, key),
                _summary(cls),
                tuple(section_option(cls, n) for n in names),
            )
        )
    knobs = sorted({n for a in ALGORITHMS.values() for n in field_types(a.Config)} - taken)
    groups.append(
        OptionGroup(
            ALGORITHM_GROUP, ALGORITHM_GROUP_NOTE, tuple(algorithm_option(n) for n in knobs)
        )
    )
    return groups


def algorithm_lines() -> list[str]:
    """``dfml list --verbose``: one line per algorithm, from its module and class docstrings.

    The module's first paragraph names the method and its paper; the class's
    first line says what a round does; ``Config`` names the knobs' class.
    """
    lines = []
    for name in sorted(ALGORITHMS):
        cls = ALGORITHMS[name]
        module_doc = inspect.getdoc(inspect.getmodule(cls)) or ""
        paper = " ".join(module_doc.split("\n\n")[0].split())
        what = (inspect.getdoc(cls) or "").split("\n")[0]
        lines.append(f"{name}: {plain(paper)} — {plain(what)} [config: {cls.Config.__name__}]")
    return lines
