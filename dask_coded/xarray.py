"""The ``DataArray.coded`` accessor: ``xr.dot`` with a coded product underneath."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import xarray as xr

from .codes import Code
from .linalg import dot

__all__ = ["CodedAccessor"]


@xr.register_dataarray_accessor("coded")
class CodedAccessor:
    """Coded products of a DataArray, registered as ``DataArray.coded``."""

    def __init__(self, obj: xr.DataArray) -> None:
        self._obj = obj

    def dot(
        self,
        other: xr.DataArray,
        dim: Hashable | Sequence[Hashable] | None = None,
        code: Code | str | None = None,
        *,
        max_errors: int | None = None,
    ) -> xr.DataArray:
        """Contract ``dim`` like ``xr.dot(self, other, dim=dim)``, computing it with :func:`dask_coded.dot`.

        Exactly one dimension is contracted (by default the one dimension the
        two arrays share; ``...``, as in ``xr.dot``, every dimension, which
        only two vectors along one dimension pass); each operand has at most
        one other dimension.
        Coordinates are aligned as ``xr.dot`` aligns them (an inner join). The
        result is Dask-backed, with the remaining dimensions in ``xr.dot``'s
        order and their coordinates.

        Examples
        --------
        >>> import numpy as np, xarray as xr
        >>> import dask_coded
        >>> a = xr.DataArray(np.ones((4, 3)), dims=("time", "x"))
        >>> b = xr.DataArray(np.arange(3.0), dims="x", coords={"x": [10, 20, 30]})
        >>> a.coded.dot(b, dim="x").values
        array([3., 3., 3., 3.])
        """
        a, b = self._obj, other
        if not isinstance(b, xr.DataArray):
            raise TypeError(f"coded.dot takes a DataArray, got {type(b).__name__}")
        shared = [d for d in a.dims if d in b.dims]
        if dim is None:
            dims = shared
        elif dim is ...:  # as in xr.dot: every dimension of either array
            dims = list(dict.fromkeys([*a.dims, *b.dims]))
        elif isinstance(dim, str) or not isinstance(dim, Sequence):
            dims = [dim]
        else:
            dims = list(dim)
        if len(dims) != 1:
            raise ValueError(f"coded.dot contracts exactly one dimension, got {dims} (shared: {shared})")
        (contracted,) = dims
        if contracted not in a.dims or contracted not in b.dims:
            raise ValueError(f"dimension {contracted!r} is not in both arrays: {a.dims} and {b.dims}")
        a_rest = [d for d in a.dims if d != contracted]
        b_rest = [d for d in b.dims if d != contracted]
        if len(a_rest) > 1 or len(b_rest) > 1 or set(a_rest) & set(b_rest):
            raise ValueError(
                "coded.dot multiplies a matrix or vector by a matrix or vector: each operand may "
                f"have one dimension besides {contracted!r}, not shared; got {a.dims} and {b.dims}"
            )
        return xr.apply_ufunc(
            lambda x, y: dot(x, y, code=code, max_errors=max_errors),
            a,
            b,
            input_core_dims=[[*a_rest, contracted], [contracted, *b_rest]],
            output_core_dims=[[*a_rest, *b_rest]],
            dask="allowed",
            # As xr.dot: an inner join (``(a * b).sum()``) unless the user asked for exact alignment.
            join="exact" if xr.get_options()["arithmetic_join"] == "exact" else "inner",
        )
