"""Polynomial codes for A @ B with A split by rows and B by columns (Yu et al. 2017)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ._chebyshev import chebyshev_basis, chebyshev_points
from .base import TWO_SIDED, Code
from .replication import _positive

__all__ = ["PolynomialCode"]


class PolynomialCode(Code):
    """Any ``m * p`` of ``n`` products decode ``A @ B`` (A in ``m`` row blocks, B in ``p`` column blocks).

    Worker ``i`` multiplies ``A~(x_i) = sum_j A_j a_j(x_i)`` by
    ``B~(x_i) = sum_l B_l b_l(x_i)``: their product is a polynomial of degree
    ``m * p - 1`` in ``x`` whose coefficients are the ``m * p`` blocks
    ``A_j @ B_l``, recovered by interpolation from any ``m * p`` points.
    Yu, Maddah-Ali and Avestimehr use monomials ``x^j`` and ``x^(l m)``;
    real Vandermonde systems are badly conditioned, so here ``a_j = T_j``
    and ``b_l = T_(l m)`` are Chebyshev polynomials evaluated at Chebyshev
    points, the numerically stable form of Fahim and Cadambe. The product
    ``T_j T_(l m)`` has leading term ``T_(l m + j)``, so the map from blocks to
    Chebyshev coefficients is triangular and the threshold stays ``m * p``.

    ``decode`` returns the ``m * p`` blocks in row-major order: target
    ``j * p + l`` is ``A_j @ B_l``.

    Examples
    --------
    >>> import numpy as np
    >>> code = PolynomialCode(m=2, p=2, n=6)
    >>> A, B = np.arange(8.0).reshape(4, 2), np.arange(6.0).reshape(2, 3)
    >>> coded_a, coded_b = code.encode(np.split(A, 2), [B[:, :2], B[:, 2:]])
    >>> products = {i: coded_a[i] @ coded_b[i] for i in (1, 2, 4, 5)}
    >>> blocks = code.decode(products, shapes=[(2, 2), (2, 1), (2, 2), (2, 1)])
    >>> np.allclose(np.block([blocks[:2], blocks[2:]]), A @ B)
    True
    """

    kind = TWO_SIDED
    splits = ("rows", "cols")

    def __init__(self, m: int, p: int, n: int) -> None:
        self.m = _positive(m, "m")
        self.p = _positive(p, "p")
        self.n = _positive(n, "n")
        self.k = self.m * self.p
        if self.n < self.k:
            raise ValueError(f"a polynomial code needs n >= m * p, got m={m}, p={p}, n={n}")
        points = chebyshev_points(self.n)
        self.a_weights = chebyshev_basis(points, np.arange(self.m))
        self.b_weights = chebyshev_basis(points, np.arange(self.p) * self.m)
        self.generator = np.einsum("ij,il->ijl", self.a_weights, self.b_weights).reshape(self.n, self.k)
        self.targets = np.eye(self.k)

    @property
    def recovery_threshold(self) -> int:
        return self.k

    @property
    def operand_weights(self) -> tuple[np.ndarray, np.ndarray]:
        return self.a_weights, self.b_weights

    def _params(self) -> tuple[int, int, int]:
        return (self.m, self.p, self.n)

    def _param_names(self) -> tuple[str, str, str]:
        return ("m", "p", "n")

    def redundancy(self, indices: Iterable[int]) -> int:
        return len(self._validate_indices(indices)) - self.k

    def choose_recovery_set(self, indices: Iterable[int]) -> tuple[int, ...]:
        return self._validate_indices(indices)[: self.k]

    def encode(
        self, a_blocks: Sequence[np.ndarray], b_blocks: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The ``n`` coded left and right operands: ``m`` row blocks of A, ``p`` column blocks of B."""
        return (
            self._encode_with(self.a_weights, a_blocks, "row blocks of A"),
            self._encode_with(self.b_weights, b_blocks, "column blocks of B"),
        )
