"""Reading the files a user hands dfml without trusting them.

A file under ``--data-root``, a config, a tasks or partition file, a
checkpoint: any of them may be damaged, huge or crafted. This module reads
them so that the worst a file can do is be refused with one line:

* :func:`read_limited`: a file's bytes, refused above a size limit before
  they are read;
* :func:`load_yaml` / :func:`load_json`: refused when nested deeper than
  :data:`MAX_DEPTH` (the parsers recurse, and a deep file ends in a
  ``RecursionError``) and, for YAML, when it uses an alias (``*name``: a few
  hundred bytes of aliases expand to billions of nodes, the "billion laughs");
  the refusal never quotes the file;
* :func:`safe_loads`: unpickling restricted to the types a format holds.

**Pickles.** ``pickle.loads`` calls whatever callable a file names, so a crafted file
runs code (``os.system``, ``subprocess.Popen``, ...) the moment it is read.
dfml reads two pickle formats from disk: CIFAR's python batches under
``--data-root`` and ``driver.pkl`` of its own whole-run checkpoints. Both go
through :func:`safe_loads`, which resolves a global only if it is

* named exactly in ``allowed`` (``module`` and ``name``; a dotted name,
  which would reach attributes of attributes, never is), or
* a dataclass or an enum defined in an already imported module of one of
  ``trusted`` packages (dfml's own state slots: building one runs no code
  but its field checks).

Anything else raises :class:`pickle.UnpicklingError` naming the global;
no module is imported on the file's word before its name is allowed, so
nothing the file names is executed.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import json
import pickle
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from dfml.errors import ConfigError

#: How deep lists and mappings may nest in a YAML or JSON file a user gives.
MAX_DEPTH = 32

#: The globals a pickled numpy array or scalar uses (numpy 1 and 2 names).
NUMPY_ARRAYS: frozenset[tuple[str, str]] = frozenset(
    [
        *(
            (f"numpy.{core}.multiarray", n)
            for core in ("core", "_core")
            for n in ("_reconstruct", "scalar")
        ),
        *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),  # protocol 5
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    ]
)


class _Restricted(pickle.Unpickler):
    def __init__(
        self,
        data: bytes,
        allowed: Collection[tuple[str, str]],
        trusted: tuple[str, ...],
        encoding: str,
    ) -> None:
        super().__init__(io.BytesIO(data), encoding=encoding)
        self.allowed, self.trusted = allowed, trusted

    def find_class(self, module: str, name: str) -> Any:
        if "." not in name:
            if (module, name) in self.allowed:
                return super().find_class(module, name)
            loaded = sys.modules.get(module)
            if loaded is not None and any(module.startswith(f"{p}.") for p in self.trusted):
                found = getattr(loaded, name, None)
                if _plain_data(found, module):
                    return found
        raise pickle.UnpicklingError(
            f"refused to build {module}.{name}: not a type this file holds"
        )


def _plain_data(obj: Any, module: str) -> bool:
    """A dataclass or an enum defined in ``module`` itself (not imported into it)."""
    if not isinstance(obj, type) or obj.__module__ != module:
        return False
    return dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum)


def safe_loads(
    data: bytes,
    allowed: Collection[tuple[str, str]],
    trusted: tuple[str, ...] = (),
    encoding: str = "ASCII",
) -> Any:
    """Unpickle ``data``, building only ``allowed`` globals and ``trusted`` packages' data types.

    Raises:
        pickle.UnpicklingError: the data names any other global, or is not a pickle.
    """
    return _Restricted(data, frozenset(allowed), trusted, encoding).load()


def read_limited(path: Path, what: str, limit: int) -> bytes:
    """The bytes of ``path`` (``what`` names it in errors), refused above ``limit`` bytes."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise ConfigError(
                f"{what} is {size:,} bytes; at most {limit:,} are read (a bigger one is not a "
                "file of this kind)"
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist") from None
    except OSError as err:
        raise ConfigError(f"{what} cannot be read ({err.strerror})") from None


def load_yaml(text: str, what: str, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:
    """Parse YAML with ``loader`` (a safe loader) after refusing aliases and deep nesting.

    The event stream is checked first, so no alias is ever expanded and the
    recursive composer never sees a deep document. PyYAML's own errors
    (``yaml.YAMLError``) pass through for the caller to word.
    """
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1
            raise ConfigError(
                f"{what} uses a YAML alias (line {line}); aliases are not accepted: "
                "write the value out"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1
                raise ConfigError(f"{what} nests deeper than {MAX_DEPTH} levels (line {line})")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return yaml.load(text, Loader=loader)  # loader: a SafeLoader subclass (type above)


def load_json(data: str | bytes, what: str) -> Any:
    """Parse JSON, refusing nesting deeper than :data:`MAX_DEPTH`.

    ``json.JSONDecodeError`` and ``UnicodeDecodeError`` pass through for the
    caller to word.
    """
    try:
        doc = json.loads(data)
    except RecursionError:
        raise ConfigError(f"{what} nests deeper than {MAX_DEPTH} levels") from None
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ConfigError(f"{what} nests deeper than {MAX_DEPTH} levels")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items)
    return doc
