"""dask-coded: coded computation for Dask arrays, so stragglers and wrong blocks don't stall or spoil a product."""

from __future__ import annotations

from . import codes
from .codes import GradientCode, MatDotCode, MDSCode, PolynomialCode, ReplicationCode
from .config import load_config as _load_config
from .errors import ConditioningWarning, DaskCodedWarning, DecodingError

__version__ = "0.1.0"

__all__ = [
    "ConditioningWarning",
    "DaskCodedWarning",
    "DecodingError",
    "GradientCode",
    "MDSCode",
    "MatDotCode",
    "PolynomialCode",
    "ReplicationCode",
    "__version__",
    "codes",
]

_load_config()
