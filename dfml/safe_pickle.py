"""Unpickling that builds only the types a format is known to hold.

``pickle.loads`` calls whatever callable a file names, so a crafted file
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
import pickle
import sys
from collections.abc import Collection
from typing import Any

#: The globals a pickled numpy array or scalar uses (numpy 1 and 2 names).
NUMPY_ARRAYS: frozenset[tuple[str, str]] = frozenset(
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | {("numpy", "ndarray"), ("numpy", "dtype")}


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
