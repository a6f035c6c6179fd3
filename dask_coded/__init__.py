"""dask-coded: coded computation for Dask arrays, so stragglers and wrong blocks cannot stall a product."""

from __future__ import annotations

from . import codes
from ._imports import when_imported as _when_imported
from .array import CodedArray, encode
from .codes import (
    GradientCode,
    GroupedMDSCode,
    MatDotCode,
    MDSCode,
    PolynomialCode,
    ReplicationCode,
    make_code,
)
from .config import load_config as _load_config
from .errors import ConditioningWarning, DaskCodedWarning, DecodingError, FallbackWarning
from .linalg import dot, matmul, matvec
from .plugin import CodedSchedulerPlugin, plugin_stats, register, unregister

__version__ = "0.1.0"

__all__ = [
    "CodedArray",
    "CodedSchedulerPlugin",
    "ConditioningWarning",
    "DaskCodedWarning",
    "DecodingError",
    "FallbackWarning",
    "GradientCode",
    "GroupedMDSCode",
    "MDSCode",
    "MatDotCode",
    "PolynomialCode",
    "ReplicationCode",
    "__version__",
    "codes",
    "dot",
    "encode",
    "faults",
    "make_code",
    "matmul",
    "matvec",
    "plugin_stats",
    "register",
    "sgd",
    "unregister",
]

_load_config()


def _register_xarray_accessor() -> None:
    from . import xarray  # noqa: F401  (registers DataArray.coded)


# Workers import this package to unpickle coded tasks; importing xarray (and pandas) there would
# cost every worker a second for an accessor only clients use. It is registered once xarray is.
_when_imported("xarray", _register_xarray_accessor)

#: Submodules imported on first access, for the same reason: sgd pulls in scipy.optimize, faults
#: click and the worker plugin machinery.
_LAZY_SUBMODULES = ("faults", "sgd")


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'dask_coded' has no attribute {name!r}")
