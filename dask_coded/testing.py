"""Test helpers: compare coded results with NumPy the way dask.array's ``assert_eq`` does."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

__all__ = ["assert_eq", "relative_error"]


def relative_error(actual: Any, expected: Any) -> float:
    """``max|actual - expected| / max|expected|``: error relative to the result's scale.

    Examples
    --------
    >>> relative_error([1.0, 2.0], [1.0, 2.5])
    0.2
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = np.abs(expected).max() if expected.size else 0.0
    difference = np.abs(actual - expected).max() if expected.size else 0.0
    return float(difference / scale) if scale else float(difference)


def assert_eq(actual: Any, expected: Any, rtol: float = 1e-10, *, like: Any = None, **compute: Any) -> None:
    """Assert a (Dask) result equals ``expected`` to ``rtol`` of the result's scale.

    Computes ``actual`` if it is a Dask array (``compute`` is passed on, e.g.
    ``scheduler="sync"``); checks shape and dtype against ``expected``, and
    chunks against ``like`` (the plain Dask array the result stands in for).

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> assert_eq(da.ones(3, chunks=1) * 2, np.full(3, 2.0))
    """
    expected = np.asarray(expected)
    if like is not None:
        assert actual.chunks == like.chunks, f"chunks {actual.chunks} != {like.chunks}"
        assert actual.dtype == like.dtype, f"dtype {actual.dtype} != {like.dtype}"
    if isinstance(actual, da.Array):
        assert actual.shape == expected.shape, f"lazy shape {actual.shape} != {expected.shape}"
        assert actual.dtype == expected.dtype, f"lazy dtype {actual.dtype} != {expected.dtype}"
        actual = actual.compute(**compute)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    scale = np.abs(expected).max() if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)
