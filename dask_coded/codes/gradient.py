"""Gradient codes: the exact sum of all partition gradients from any n - s workers (Tandon et al. 2017)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from .base import Code
from .replication import _positive

__all__ = ["GradientCode", "SCHEMES"]

#: The gradient-code constructions, by name.
SCHEMES = ("fractional", "cyclic")


class GradientCode(Code):
    """``n`` workers, ``n`` data partitions, any ``s`` stragglers tolerated.

    Worker ``i`` computes ``sum_j generator[i, j] * g_j`` over the ``s + 1``
    partitions it holds (:meth:`assignment`); ``decode`` returns the full
    gradient ``sum_j g_j`` from any ``n - s`` workers.

    Parameters
    ----------
    n
        Workers, and data partitions.
    s
        Stragglers tolerated (``0 <= s < n``).
    scheme
        ``"fractional"`` (fractional repetition, needs ``s + 1`` to divide
        ``n``): workers form ``s + 1`` groups that each cover all partitions,
        and decoding adds one worker per partition group.
        ``"cyclic"`` (cyclic repetition, any ``n``): worker ``i`` holds
        partitions ``i..i+s`` (mod ``n``) with seeded random coefficients
        chosen so any ``n - s`` rows span the all-ones vector.
    seed
        Seed of the cyclic construction.

    Examples
    --------
    >>> import numpy as np
    >>> code = GradientCode(n=4, s=1, scheme="fractional")
    >>> gradients = [np.full(3, float(j)) for j in range(4)]
    >>> coded = code.encode(gradients)
    >>> code.decode({i: coded[i] for i in (0, 1, 3)})[0]
    array([6., 6., 6.])
    """

    supports_error_correction = False

    def __init__(self, n: int, s: int, scheme: str = "fractional", seed: int = 0) -> None:
        self.n = self.k = _positive(n, "n")
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < self.n:
            raise ValueError(f"s must be an integer in [0, n={self.n}), got {s!r}")
        self.s = int(s)
        if scheme not in SCHEMES:
            raise ValueError(f"unknown gradient-code scheme {scheme!r}; choose one of {SCHEMES}")
        if scheme == "fractional" and self.n % (self.s + 1):
            raise ValueError(
                f"fractional repetition needs s + 1 to divide n, got n={self.n}, s={self.s}; "
                "use scheme='cyclic'"
            )
        self.scheme = scheme
        self.seed = int(seed)
        self.generator = (
            _fractional(self.n, self.s) if scheme == "fractional" else _cyclic(self.n, self.s, self.seed)
        )
        self.targets = np.ones((1, self.n))

    @property
    def recovery_threshold(self) -> int:
        return self.n - self.s

    @property
    def _groups(self) -> int:
        return self.n // (self.s + 1)

    def _params(self) -> tuple[int, int, str, int]:
        return (self.n, self.s, self.scheme, self.seed)

    def _param_names(self) -> tuple[str, str, str, str]:
        return ("n", "s", "scheme", "seed")

    def redundancy(self, indices: Iterable[int]) -> int:
        indices = self._validate_indices(indices)
        if self.scheme == "cyclic":
            return len(indices) - self.recovery_threshold
        present = np.bincount(np.asarray(indices, dtype=int) % self._groups, minlength=self._groups)
        return int(present.min()) - 1

    def choose_recovery_set(self, indices: Iterable[int]) -> tuple[int, ...]:
        indices = self._validate_indices(indices)
        if self.scheme == "cyclic":
            return indices[: self.recovery_threshold]
        first: dict[int, int] = {}
        for i in indices:
            first.setdefault(i % self._groups, i)
        return tuple(sorted(first.values()))

    def minimal_recovery_sets(self) -> Iterator[tuple[int, ...]]:
        if self.scheme == "cyclic":
            return super().minimal_recovery_sets()
        import itertools

        members = [range(g, self.n, self._groups) for g in range(self._groups)]
        return (tuple(sorted(s)) for s in itertools.product(*members))

    def assignment(self, worker: int) -> dict[int, float]:
        """Partition index -> coefficient of that partition's gradient in worker ``worker``'s sum.

        Examples
        --------
        >>> GradientCode(n=4, s=1, scheme="fractional").assignment(1)
        {2: 1.0, 3: 1.0}
        """
        if not 0 <= worker < self.n:
            raise ValueError(f"worker must be in [0, {self.n}), got {worker}")
        row = self.generator[worker]
        return {int(j): float(row[j]) for j in np.flatnonzero(row)}

    def encode(self, gradients: Sequence[np.ndarray]) -> list[np.ndarray]:
        """What each of the ``n`` workers sends, from the ``n`` partition gradients."""
        return self._encode_with(self.generator, gradients, "partition gradients")


def _fractional(n: int, s: int) -> np.ndarray:
    groups = n // (s + 1)
    generator = np.zeros((n, n))
    for worker in range(n):
        group = worker % groups
        generator[worker, group * (s + 1) : (group + 1) * (s + 1)] = 1.0
    return generator


def _cyclic(n: int, s: int, seed: int) -> np.ndarray:
    # Tandon et al., Algorithm 2: rows live in the null space of H, which
    # holds the all-ones vector, and generic rows make any n - s span it.
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((s, n))
    h[:, -1] = -h[:, :-1].sum(axis=1)
    generator = np.zeros((n, n))
    for worker in range(n):
        support = [(worker + t) % n for t in range(s + 1)]
        generator[worker, support[0]] = 1.0
        if s:
            generator[worker, support[1:]] = np.linalg.solve(h[:, support[1:]], -h[:, support[0]])
    return generator
