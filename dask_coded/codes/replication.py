"""Replication: r copies of each block, the baseline every code is compared with."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .base import ONE_SIDED, Code, CodeGroup

__all__ = ["ReplicationCode", "REPLICATION_GROUP_SIZE"]

#: Blocks per group of a replication: a decode reads the copies of its group's blocks only, so the
#: graph grows linearly with ``k`` (one group of 1,024 blocks gave each decode 2,048 dependencies).
REPLICATION_GROUP_SIZE = 64


class ReplicationCode(Code):
    """``r`` copies of each of ``k`` blocks; any one copy of every block decodes.

    Coded block ``i`` is a copy of data block ``i % k``, so blocks ``0..k-1``
    are the data blocks themselves and ``n = k * r``. Decoding is free. With
    ``max_errors=t``, wrong copies are outvoted block by block when every
    block has at least ``2t + 1`` finished copies, so up to ``t`` wrong copies
    *of each block* are corrected (a worker holding copies of several blocks
    may be wrong on all of them).

    Parameters
    ----------
    k
        Number of data blocks.
    r
        Copies of each block (``r >= 1``; 1 is no redundancy).

    Examples
    --------
    >>> import numpy as np
    >>> code = ReplicationCode(k=2, r=2)
    >>> code.n, code.recovery_threshold
    (4, 3)
    >>> code.is_recovery_set([2, 1])
    True
    >>> code.is_recovery_set([0, 2])
    False
    """

    kind = ONE_SIDED

    def __init__(self, k: int, r: int = 2) -> None:
        self.k = _positive(k, "k")
        self.r = _positive(r, "r")
        self.n = self.k * self.r
        self.generator = np.tile(np.eye(self.k), (self.r, 1))
        self.targets = np.eye(self.k)

    @functools.cached_property
    def groups(self) -> tuple[CodeGroup, ...]:  # type: ignore[override]
        """Runs of :data:`REPLICATION_GROUP_SIZE` blocks with their copies: each decodes on its own.

        Examples
        --------
        >>> [group.members for group in ReplicationCode(k=3, r=2).groups]
        [(0, 1, 2, 3, 4, 5)]
        >>> [group.members for group in ReplicationCode(k=100, r=2).groups][1][:3]
        (64, 65, 66)
        """
        if self.k <= REPLICATION_GROUP_SIZE:
            return super().groups
        out = []
        for start in range(0, self.k, REPLICATION_GROUP_SIZE):
            size = min(REPLICATION_GROUP_SIZE, self.k - start)
            blocks = range(start, start + size)
            members = [copy * self.k + block for copy in range(self.r) for block in blocks]
            out.append(CodeGroup(ReplicationCode(size, self.r), tuple(members)))
        return tuple(out)

    @property
    def recovery_threshold(self) -> int:
        # Worst case: r - 1 copies of one block finish before any of another.
        return self.n - self.r + 1

    def _params(self) -> tuple[int, int]:
        return (self.k, self.r)

    def _param_names(self) -> tuple[str, str]:
        return ("k", "r")

    def _threshold_phrase(self) -> str:
        return f"one copy of each of the {self.k} blocks is needed"

    def redundancy(self, indices: Iterable[int]) -> int:
        copies = np.bincount(
            np.asarray(self._validate_indices(indices), dtype=int) % self.k, minlength=self.k
        )
        return int(copies.min()) - 1

    def choose_recovery_set(self, indices: Iterable[int]) -> tuple[int, ...]:
        first: dict[int, int] = {}
        for i in self._validate_indices(indices):
            first.setdefault(i % self.k, i)
        return tuple(sorted(first.values()))

    def minimal_recovery_sets(self) -> Iterator[tuple[int, ...]]:
        copies = [range(j, self.n, self.k) for j in range(self.k)]
        return (tuple(sorted(s)) for s in itertools.product(*copies))

    def condition_number(self, samples: int | None = 2000, seed: int = 0) -> float:
        return 1.0

    def locate_errors(
        self,
        results: Mapping[int, Any],
        max_errors: int,
        exponents: Sequence[int] | np.ndarray | None = None,
        suspects: Mapping[int, Hashable] | None = None,
        roundoff: Mapping[int, float] | None = None,
    ) -> tuple[int, ...]:
        """The wrong copies, outvoted block by block (``max_errors`` per block).

        Copies of one block computed by the same suspect (``suspects``: block
        -> worker) cast one vote; copies may differ by their round-off (see
        :meth:`Code.locate_errors`).

        Examples
        --------
        >>> import numpy as np
        >>> code = ReplicationCode(k=2, r=3)
        >>> results = {i: np.full(2, float(i % 2)) for i in range(6)}
        >>> results[0], results[3] = results[0] + 1.0, results[3] - 7.0  # one bad copy of each block
        >>> code.locate_errors(results, max_errors=1)
        (0, 3)
        """
        indices = self._validate_indices(results)
        self._check_exponents(exponents)  # copies are never mixed: exponents change nothing
        wrong: list[int] = []
        for block in range(self.k):
            copies = [i for i in indices if i % self.k == block]
            # The copies of one block form a repetition code of length len(copies).
            vote = ReplicationCode(1, max(len(copies), 1))
            voters = {c: suspects.get(i) for c, i in enumerate(copies)} if suspects else None
            bounds = {c: roundoff[i] for c, i in enumerate(copies) if i in roundoff} if roundoff else None
            found = Code.locate_errors(
                vote,
                {c: results[i] for c, i in enumerate(copies)},
                max_errors,
                suspects=voters,
                roundoff=bounds,
            )
            wrong.extend(copies[c] for c in found)
        return tuple(sorted(wrong))

    def encode(self, blocks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The ``n`` coded blocks: ``r`` references to each data block (no copies made)."""
        if len(blocks) != self.k:
            raise ValueError(f"{self!r} encodes {self.k} blocks, got {len(blocks)}")
        return [blocks[i % self.k] for i in range(self.n)]


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
