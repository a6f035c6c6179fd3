"""dask-coded: coded computation for Dask arrays, so stragglers and wrong blocks cannot stall a product."""

from __future__ import annotations

from . import codes
from .array import CodedArray, encode
from .codes import GradientCode, MatDotCode, MDSCode, PolynomialCode, ReplicationCode, make_code
from .config import load_config as _load_config
from .errors import ConditioningWarning, DaskCodedWarning, DecodingError, FallbackWarning
from .linalg import dot, matmul, matvec
from .plugin import CodedSchedulerPlugin, plugin_stats, register
from .xarray import CodedAccessor as _CodedAccessor  # noqa: F401  (registers DataArray.coded)

__version__ = "0.1.0"

__all__ = [
    "CodedArray",
    "CodedSchedulerPlugin",
    "ConditioningWarning",
    "DaskCodedWarning",
    "DecodingError",
    "FallbackWarning",
    "GradientCode",
    "MDSCode",
    "MatDotCode",
    "PolynomialCode",
    "ReplicationCode",
    "__version__",
    "codes",
    "dot",
    "encode",
    "make_code",
    "matmul",
    "matvec",
    "plugin_stats",
    "register",
    "sgd",
]

_load_config()


def __getattr__(name: str) -> object:
    # dask_coded.sgd pulls in scipy.optimize; importing it lazily keeps every worker's first
    # unpickling of a coded task (which imports this package) fast.
    if name == "sgd":
        import importlib

        return importlib.import_module(".sgd", __name__)
    raise AttributeError(f"module 'dask_coded' has no attribute {name!r}")
