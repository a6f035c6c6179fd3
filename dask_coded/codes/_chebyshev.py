"""Chebyshev points and bases: the stable real evaluation points the codes use."""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev

__all__ = ["chebyshev_points", "chebyshev_basis"]


def chebyshev_points(n: int) -> np.ndarray:
    """The ``n`` Chebyshev points of the first kind in (-1, 1)."""
    return np.cos((2 * np.arange(n) + 1) * np.pi / (2 * n))


def chebyshev_basis(points: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """``out[i, j] = T_{degrees[j]}(points[i])``."""
    return chebyshev.chebvander(points, int(max(degrees)))[:, degrees]
