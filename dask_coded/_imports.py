"""Run code right after a module is imported, without importing it ourselves.

Every worker that unpickles a coded task imports ``dask_coded``. Registering
the ``DataArray.coded`` accessor at import would import xarray and pandas
there too (about a second, and memory), although workers never use them. So
the accessor is registered when xarray is imported, by whoever imports it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

__all__ = ["when_imported"]

logger = logging.getLogger(__name__)


def when_imported(name: str, callback: Callable[[], None]) -> None:
    """Call ``callback()`` once module ``name`` is imported: now if it already is, else right after.

    An exception in ``callback`` is logged, never raised into the import
    that triggered it.

    Examples
    --------
    >>> calls = []
    >>> when_imported("json", lambda: calls.append("json"))  # imported already (doctest uses it)
    >>> calls
    ['json']
    """
    if name in sys.modules:
        _call(name, callback)
    else:
        sys.meta_path.insert(0, _AfterImport(name, callback))


def _call(name: str, callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        logger.exception("dask-coded: setting up after importing %s failed", name)


class _AfterImport(importlib.abc.MetaPathFinder):
    """A finder that lets the other finders find ``name``, then wraps its loader to call back."""

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name = name
        self.callback = callback
        self._finding = False

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        loader: Any = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return None  # let the import system report it as usual
        exec_module = loader.exec_module

        def exec_then_call(module: ModuleType) -> None:
            exec_module(module)
            del loader.exec_module  # the loader is this module's own; undo the wrapping
            if self in sys.meta_path:
                sys.meta_path.remove(self)  # safe here: no finder loop is iterating meta_path now
            _call(self.name, self.callback)

        # Patch the instance, not wrap it: the loader stays the one xarray's resources expect.
        loader.exec_module = exec_then_call
        return spec
