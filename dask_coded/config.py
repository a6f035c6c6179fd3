"""dask-coded's options: ``coded.*`` in ``dask.config``, with defaults shipped in ``coded.yaml``."""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import dask.config
import yaml

__all__ = ["DEFAULTS_PATH", "get", "load_config", "option_names"]

DEFAULTS_PATH = pathlib.Path(__file__).with_name("coded.yaml")


@functools.cache
def _defaults() -> dict[str, Any]:
    with DEFAULTS_PATH.open() as f:
        return yaml.safe_load(f)


def load_config() -> None:
    """Register the packaged defaults; user settings (``dask.config.set``, env) win."""
    dask.config.update_defaults(_defaults())


def get(name: str) -> Any:
    """The option ``coded.<name>``: the user's setting, else the packaged default.

    The packaged default is a fallback too, because some tools (such as
    ``distributed.utils_test``) restore a config snapshot taken before
    dask-coded was imported.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"coded.parity": 4}):
    ...     get("parity")
    4
    """
    name = _canonical(name)
    return dask.config.get(f"coded.{name}", default=_defaults()["coded"].get(name))


def option_names() -> list[str]:
    """The ``coded.*`` options: the packaged ones and any the user set.

    Examples
    --------
    >>> "parity" in option_names()
    True
    """
    user = dask.config.get("coded", default={}) or {}
    return sorted(set(_defaults()["coded"]) | {_canonical(name) for name in user})


def _canonical(name: str) -> str:
    # dask.config reads DASK_CODED__MAX_ERRORS as "max_errors", and treats it as "max-errors".
    hyphenated = name.replace("_", "-")
    return hyphenated if hyphenated in _defaults()["coded"] else name
