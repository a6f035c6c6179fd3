"""Systematic real-valued MDS codes: any k of n block products decode (Lee et al. 2017)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ._chebyshev import chebyshev_basis, chebyshev_points
from .base import ONE_SIDED, Code
from .replication import _positive

__all__ = ["MDSCode", "GENERATORS"]

#: The parity constructions MDSCode knows, by name.
GENERATORS = ("gaussian", "cauchy", "chebyshev")


class MDSCode(Code):
    """Systematic ``(n, k)`` MDS code over the reals: any ``k`` of ``n`` blocks decode.

    Blocks ``0..k-1`` are the data blocks, unchanged; blocks ``k..n-1`` are
    parities, fixed linear combinations of all data blocks. A row-split
    product ``A @ B`` is decoded from whichever ``k`` block products finish
    first; when they are the data blocks, decoding costs nothing.

    Parameters
    ----------
    k
        Number of data blocks.
    n
        Number of coded blocks (``n >= k``).
    generator
        How the parity rows are built:

        ``"gaussian"`` (default)
            seeded standard normal rows scaled by ``1/sqrt(k)``. Generic
            Gaussian matrices have every square submatrix invertible, and of
            the constructions here they have the smallest worst-case decoding
            condition numbers (``benchmarks/bench_codes.py``).
        ``"cauchy"``
            a Cauchy matrix on Chebyshev points, with normalised rows:
            every minor is nonzero by construction.
        ``"chebyshev"``
            evaluations of the degree ``k - 1`` Chebyshev interpolant at
            ``n`` Chebyshev points, made systematic: a stable form of the
            Reed-Solomon (Vandermonde) code. Good for few parities only.
    seed
        Seed of the ``"gaussian"`` generator; encoder and decoder must agree.

    Examples
    --------
    >>> import numpy as np
    >>> code = MDSCode(k=3, n=5)
    >>> A = np.arange(12.0).reshape(6, 2)
    >>> coded = code.encode(np.split(A, 3))
    >>> len(coded), coded[0] is not None
    (5, True)
    >>> products = {i: coded[i] @ [1.0, 1.0] for i in (0, 3, 4)}
    >>> np.allclose(np.concatenate(code.decode(products)), A.sum(axis=1))
    True
    """

    kind = ONE_SIDED

    def __init__(self, k: int, n: int, generator: str = "gaussian", seed: int = 0) -> None:
        self.k = _positive(k, "k")
        self.n = _positive(n, "n")
        if self.n < self.k:
            raise ValueError(f"an MDS code needs n >= k, got k={self.k}, n={self.n}")
        if generator not in GENERATORS:
            raise ValueError(f"unknown MDS generator {generator!r}; choose one of {GENERATORS}")
        self.generator_name = generator
        self.seed = int(seed)
        parity = _parity(self.k, self.n, generator, self.seed)
        self.generator = np.vstack([np.eye(self.k), parity])
        self.targets = np.eye(self.k)

    @property
    def recovery_threshold(self) -> int:
        return self.k

    def _params(self) -> tuple[int, int, str, int]:
        return (self.k, self.n, self.generator_name, self.seed)

    def _param_names(self) -> tuple[str, str, str, str]:
        return ("k", "n", "generator", "seed")

    def redundancy(self, indices: Iterable[int]) -> int:
        return len(self._validate_indices(indices)) - self.k

    def choose_recovery_set(self, indices: Iterable[int]) -> tuple[int, ...]:
        return self._validate_indices(indices)[: self.k]

    def encode(
        self, blocks: Sequence[np.ndarray], exponents: Sequence[int] | np.ndarray | None = None
    ) -> list[np.ndarray]:
        """The ``n`` coded blocks: the ``k`` data blocks as given, then the parities.

        Blocks of unequal size (an uneven split) are zero-padded at the end of
        each axis to the largest before the parities are formed; integer
        blocks give float64 parities.

        With ``exponents`` (one integer per block, e.g.
        :func:`~dask_coded.codes.arithmetic.equilibration_exponents`), parity ``i``
        is ``sum_j generator[i, j] * 2**-exponents[j] * blocks[j]``: blocks of
        very different scales are equilibrated, so each decodes to its own
        relative accuracy. Pass the same exponents to :meth:`decode`.

        Examples
        --------
        >>> import numpy as np
        >>> from dask_coded.codes.arithmetic import equilibration_exponents
        >>> code = MDSCode(k=2, n=3)
        >>> blocks = [np.array([1e12, 2e12]), np.array([1e-3, 3e-3])]
        >>> e = equilibration_exponents(blocks)
        >>> coded = code.encode(blocks, exponents=e)
        >>> small = code.decode({0: coded[0], 2: coded[2]}, exponents=e)[1]
        >>> bool(np.allclose(small, blocks[1], rtol=1e-12, atol=0))
        True
        """
        return self._encode_with(self.generator, blocks, "blocks", exponents)


def _parity(k: int, n: int, generator: str, seed: int) -> np.ndarray:
    if generator == "gaussian":
        return np.random.default_rng(seed).standard_normal((n - k, k)) / np.sqrt(k)
    if generator == "cauchy":
        points = chebyshev_points(n)
        # Interleave: data nodes and parity nodes alternate along (-1, 1).
        order = np.argsort(np.arange(n) % 2 == 0, kind="stable") if n - k else np.arange(n)
        parity_nodes = np.sort(points[order[: n - k]])
        data_nodes = np.setdiff1d(points, parity_nodes)
        cauchy = 1.0 / (parity_nodes[:, None] - data_nodes[None, :k])
        return cauchy / np.linalg.norm(cauchy, axis=1, keepdims=True)
    basis = chebyshev_basis(chebyshev_points(n), np.arange(k))
    return basis[k:] @ np.linalg.inv(basis[:k])
