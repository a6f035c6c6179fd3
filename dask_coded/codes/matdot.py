"""MatDot codes for A @ B split along the inner dimension (Dutta, Cadambe, Grover 2019)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ._chebyshev import chebyshev_basis, chebyshev_points
from .base import TWO_SIDED, Code
from .replication import _positive

__all__ = ["MatDotCode"]


class MatDotCode(Code):
    """Any ``2m - 1`` of ``n`` products decode ``A @ B``, both split ``m`` ways along the inner dimension.

    ``A @ B = sum_j A_j @ B_j`` where ``A_j`` are column blocks of A and
    ``B_j`` row blocks of B. Worker ``i`` multiplies ``sum_j c_j A_j T_j(x_i)``
    by ``sum_j c_j B_j T_j(x_i)`` (``c_0 = 1``, ``c_j = sqrt(2)``): a
    polynomial of degree ``2m - 2`` whose ``T_0`` coefficient is exactly
    ``A @ B``, because ``T_j T_l = (T_(j+l) + T_|j-l|) / 2``. This is the
    Chebyshev (numerically stable) form of MatDot: the recovery threshold is
    ``2m - 1`` for every worker computing a full-size ``A @ B``-shaped product
    of 1/m of the inner dimension.

    ``decode`` returns one target, ``A @ B``.

    Examples
    --------
    >>> import numpy as np
    >>> code = MatDotCode(m=2, n=4)
    >>> A, B = np.arange(12.0).reshape(3, 4), np.arange(8.0).reshape(4, 2)
    >>> coded_a, coded_b = code.encode(np.split(A, 2, axis=1), np.split(B, 2))
    >>> products = {i: coded_a[i] @ coded_b[i] for i in (0, 2, 3)}
    >>> np.allclose(code.decode(products)[0], A @ B)
    True
    """

    kind = TWO_SIDED
    splits = ("inner", "inner")

    def __init__(self, m: int, n: int) -> None:
        self.m = _positive(m, "m")
        self.n = _positive(n, "n")
        self.k = self.m
        if self.n < 2 * self.m - 1:
            raise ValueError(f"a MatDot code needs n >= 2m - 1, got m={m}, n={n}")
        points = chebyshev_points(self.n)
        scale = np.where(np.arange(self.m) == 0, 1.0, np.sqrt(2.0))
        self.split_weights = chebyshev_basis(points, np.arange(self.m)) * scale
        self.generator = chebyshev_basis(points, np.arange(2 * self.m - 1))
        self.targets = np.eye(1, 2 * self.m - 1)

    @property
    def recovery_threshold(self) -> int:
        return 2 * self.m - 1

    @property
    def operand_weights(self) -> tuple[np.ndarray, np.ndarray]:
        return self.split_weights, self.split_weights

    def _params(self) -> tuple[int, int]:
        return (self.m, self.n)

    def _param_names(self) -> tuple[str, str]:
        return ("m", "n")

    def redundancy(self, indices: Iterable[int]) -> int:
        return len(self._validate_indices(indices)) - self.recovery_threshold

    def choose_recovery_set(self, indices: Iterable[int]) -> tuple[int, ...]:
        return self._validate_indices(indices)[: self.recovery_threshold]

    def encode(
        self, a_blocks: Sequence[np.ndarray], b_blocks: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The ``n`` coded operands from ``m`` column blocks of A and ``m`` row blocks of B.

        Unequal inner blocks are zero-padded, which leaves every product unchanged.
        """
        return (
            self._encode_with(self.split_weights, a_blocks, "column blocks of A"),
            self._encode_with(self.split_weights, b_blocks, "row blocks of B"),
        )
