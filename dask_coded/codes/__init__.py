"""The codes: encode blocks, decode from any recovery set, locate wrong results.

Pure NumPy; nothing here imports Dask. Codes are also available by short
name through a small registry (:func:`make_code`, :func:`register_code`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Code
from .gradient import GradientCode
from .matdot import MatDotCode
from .mds import MDSCode
from .polynomial import PolynomialCode
from .replication import ReplicationCode

__all__ = [
    "Code",
    "GradientCode",
    "MDSCode",
    "MatDotCode",
    "PolynomialCode",
    "ReplicationCode",
    "make_code",
    "register_code",
    "registered_codes",
]

_REGISTRY: dict[str, Callable[..., Code]] = {}


def register_code(name: str, factory: Callable[..., Code]) -> None:
    """Make ``make_code(name, ...)`` build codes with ``factory(...)``.

    Examples
    --------
    >>> register_code("mds", MDSCode)
    Traceback (most recent call last):
    ...
    ValueError: a code named 'mds' is already registered
    """
    if name in _REGISTRY:
        raise ValueError(f"a code named {name!r} is already registered")
    _REGISTRY[name] = factory


def make_code(name: str, **params: Any) -> Code:
    """Build the code registered as ``name`` with keyword ``params``.

    Examples
    --------
    >>> make_code("mds", k=4, n=6)
    MDSCode(k=4, n=6, generator='gaussian', seed=0)
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown code {name!r}; registered codes: {sorted(_REGISTRY)}") from None
    return factory(**params)


def registered_codes() -> list[str]:
    """The names :func:`make_code` accepts."""
    return sorted(_REGISTRY)


for _name, _factory in [
    ("replication", ReplicationCode),
    ("mds", MDSCode),
    ("polynomial", PolynomialCode),
    ("matdot", MatDotCode),
    ("gradient", GradientCode),
]:
    register_code(_name, _factory)
