"""Grouped MDS codes: consecutive groups of data blocks, each with parities of its own.

One MDS code over every chunk of an axis does not scale: each parity reads
all ``k`` data blocks and each decode waits on all ``n`` products, so the
graph grows as ``k**2``, and ``n - k`` parities shared by thousands of
blocks outlast as many stragglers as they do for ten. A grouped code splits
the axis into groups of about as many blocks as the cluster has workers
(:func:`group_size_for`); every group is an MDS code of its own, so graphs
grow linearly and each group outlasts ``parity`` slow workers.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, cast

import numpy as np

from ..errors import DecodingError
from .base import ONE_SIDED, Code, CodeGroup, DecodingPlan
from .mds import GENERATORS, MDSCode
from .replication import _positive

__all__ = ["GroupedMDSCode", "group_size_for", "MAX_AUTO_GROUP_SIZE", "UNKNOWN_CLUSTER_GROUP_SIZE"]

#: ``auto`` never makes groups larger than this: each decode reads at most this many blocks
#: plus the parities, however large the cluster.
MAX_AUTO_GROUP_SIZE = 64
#: ``auto``'s group size when no cluster is known (threads, or a graph built without a client).
UNKNOWN_CLUSTER_GROUP_SIZE = 16


def group_size_for(workers: int | None, redundancy: int) -> int:
    """Data blocks per group for a cluster of ``workers``, each group with ``redundancy`` extra blocks.

    One member of each group per worker: ``workers - redundancy`` data
    blocks, so a slow worker delays one member of a group and a group
    outlasts ``redundancy`` of them. That costs ``redundancy / (workers -
    redundancy)`` extra work, so it is chosen only where that is at most
    50% (``workers >= 3 * redundancy``); on smaller clusters, and when
    ``workers`` is None, groups only bound the graph's size
    (:data:`UNKNOWN_CLUSTER_GROUP_SIZE`). Never more than
    :data:`MAX_AUTO_GROUP_SIZE`.

    Examples
    --------
    >>> group_size_for(8, redundancy=2)
    6
    >>> group_size_for(4, redundancy=2), group_size_for(None, redundancy=2), group_size_for(500, redundancy=2)
    (16, 16, 64)
    """
    if workers is None or workers < 3 * redundancy:
        return UNKNOWN_CLUSTER_GROUP_SIZE
    return min(MAX_AUTO_GROUP_SIZE, workers - redundancy)


class GroupedMDSCode(Code):
    """``k`` data blocks in groups of ``group_size``, each a systematic MDS code with ``parity`` parities.

    Coded blocks ``0..k-1`` are the data blocks, unchanged; then come the
    parities, ``parity`` per group in group order. Group ``q`` holds data
    blocks ``q * group_size`` up to ``min(k, (q + 1) * group_size)`` (the
    last group may be smaller) and parities ``k + q * parity ...``. A group
    decodes from any of its blocks that number its data blocks, so ``parity``
    lost blocks in *each* group are tolerated.

    Parameters
    ----------
    k
        Number of data blocks.
    group_size
        Data blocks per group (``k`` or more: one group, like
        :class:`~dask_coded.MDSCode`).
    parity
        Parity blocks per group.
    generator, seed
        The parity construction of every group (see :class:`~dask_coded.MDSCode`).

    Examples
    --------
    >>> import numpy as np
    >>> code = GroupedMDSCode(k=5, group_size=3, parity=1)
    >>> code.n, [group.members for group in code.groups]
    (7, [(0, 1, 2, 5), (3, 4, 6)])
    >>> blocks = np.split(np.arange(10.0).reshape(5, 2), 5)
    >>> coded = code.encode(blocks)
    >>> products = {i: coded[i] @ [1.0, 1.0] for i in (0, 2, 5, 3, 6)}  # blocks 1 and 4 are late
    >>> np.allclose(np.concatenate(code.decode(products)), np.arange(10.0).reshape(5, 2).sum(axis=1))
    True
    """

    kind = ONE_SIDED

    def __init__(
        self, k: int, group_size: int, parity: int, generator: str = "gaussian", seed: int = 0
    ) -> None:
        self.k = _positive(k, "k")
        self.group_size = _positive(group_size, "group_size")
        if int(parity) != parity or parity < 0:
            raise ValueError(f"parity must be a non-negative integer, got {parity!r}")
        self.parity = int(parity)
        if generator not in GENERATORS:
            raise ValueError(f"unknown MDS generator {generator!r}; choose one of {GENERATORS}")
        self.generator_name = generator
        self.seed = int(seed)
        self.group_count = -(-self.k // self.group_size)
        self.n = self.k + self.parity * self.group_count

    # -- the groups ----------------------------------------------------------

    @functools.cached_property
    def groups(self) -> tuple[CodeGroup, ...]:  # type: ignore[override]
        codes: dict[int, MDSCode] = {}  # groups of one size share one code
        out = []
        for q in range(self.group_count):
            start, stop = q * self.group_size, min(self.k, (q + 1) * self.group_size)
            size = stop - start
            if size not in codes:
                codes[size] = MDSCode(size, size + self.parity, self.generator_name, self.seed)
            parities = range(self.k + q * self.parity, self.k + (q + 1) * self.parity)
            out.append(CodeGroup(codes[size], (*range(start, stop), *parities)))
        return tuple(out)

    @property
    def group_layout(self) -> tuple[int, int]:
        return self.group_size, self.parity

    def group_of(self, block: int) -> int:
        """The group coded block ``block`` belongs to.

        Examples
        --------
        >>> code = GroupedMDSCode(k=5, group_size=3, parity=1)
        >>> [code.group_of(i) for i in range(code.n)]
        [0, 0, 0, 1, 1, 0, 1]
        """
        if not 0 <= block < self.n:
            raise ValueError(f"block index must be in [0, {self.n}) for {self!r}, got {block}")
        if block < self.k:
            return block // self.group_size
        return (block - self.k) // self.parity

    @functools.cached_property
    def generator(self) -> np.ndarray:  # type: ignore[override]
        """The whole ``(n, k)`` generator, block diagonal by group (built on first use only)."""
        rows = np.zeros((self.n, self.k))
        rows[: self.k] = np.eye(self.k)
        for group in self.groups:
            size = group.code.k
            data, parities = group.members[:size], group.members[size:]
            rows[np.ix_(parities, data)] = group.code.generator[size:]
        return rows

    @functools.cached_property
    def targets(self) -> np.ndarray:  # type: ignore[override]
        return np.eye(self.k)

    def _split(self, indices: Iterable[int]) -> list[list[int]]:
        """``indices`` as each group's local indices."""
        local: list[list[int]] = [[] for _ in self.groups]
        for i in self._validate_indices(indices):
            q = self.group_of(i)
            local[q].append(self.groups[q].members.index(i))
        return local

    # -- what Code needs ------------------------------------------------------

    @property
    def recovery_threshold(self) -> int:
        return self.n - self.parity

    def _params(self) -> tuple[int, int, int, str, int]:
        return (self.k, self.group_size, self.parity, self.generator_name, self.seed)

    def _param_names(self) -> tuple[str, ...]:
        return ("k", "group_size", "parity", "generator", "seed")

    def _threshold_phrase(self) -> str:
        return f"each group needs as many blocks as it has data blocks ({self.parity} may be lost per group)"

    def redundancy(self, indices: Iterable[int]) -> int:
        return min(len(local) - group.code.k for local, group in zip(self._split(indices), self.groups))

    def choose_recovery_set(self, indices: Iterable[int]) -> tuple[int, ...]:
        chosen = []
        for local, group in zip(self._split(indices), self.groups):
            chosen += [group.members[i] for i in local[: group.code.k]]
        return tuple(sorted(chosen))

    def minimal_recovery_sets(self) -> Iterator[tuple[int, ...]]:
        per_group = [itertools.combinations(g.members, g.code.k) for g in self.groups]
        return (tuple(sorted(itertools.chain(*sets))) for sets in itertools.product(*per_group))

    def copied_block(self, i: int) -> int | None:
        self.group_of(i)  # checks the index
        return i if i < self.k else None

    def _scales(self, exponents: Sequence[int] | np.ndarray | None) -> np.ndarray | None:
        """Per-data-block exponents, checked without building the whole generator."""
        if exponents is None:
            return None
        out = np.asarray(exponents)
        if out.shape != (self.k,) or out.dtype.kind not in "iu":
            raise ValueError(
                f"{self!r} takes {self.k} integer exponents, one per data block, got {exponents!r}"
            )
        return out.astype(np.int64)

    def encode(
        self, blocks: Sequence[np.ndarray], exponents: Sequence[int] | np.ndarray | None = None
    ) -> list[np.ndarray]:
        """The ``n`` coded blocks: the data blocks as given, then each group's parities.

        Blocks are zero-padded to the largest of their group; see
        :meth:`MDSCode.encode <dask_coded.MDSCode.encode>` for ``exponents``.
        """
        if len(blocks) != self.k:
            raise ValueError(f"{self!r} encodes {self.k} blocks, got {len(blocks)}")
        scales = self._scales(exponents)
        coded: list[np.ndarray] = [np.asarray(b) for b in blocks]
        for group in self.groups:
            data = group.members[: group.code.k]
            group_scales = None if scales is None else scales[list(data)]
            mds = cast(MDSCode, group.code)
            coded += mds.encode([blocks[j] for j in data], exponents=group_scales)[mds.k :]
        return coded

    def decode(
        self,
        results: Mapping[int, Any],
        *,
        max_errors: int = 0,
        shapes: Sequence[tuple[int, ...]] | None = None,
        outputs: Sequence[int] | None = None,
        recovery_set: Iterable[int] | None = None,
        exponents: Sequence[int] | np.ndarray | None = None,
        suspects: Mapping[int, Hashable] | None = None,
        plan: DecodingPlan | None = None,
        inaccurate: Literal["warn", "raise"] = "warn",
        roundoff: Mapping[int, float] | None = None,
    ) -> list[np.ndarray]:
        """Decode group by group (see :meth:`Code.decode <dask_coded.codes.Code.decode>`)."""
        if plan is not None:  # the weights are known: no need to split the results by group
            return super().decode(
                results,
                max_errors=max_errors,
                suspects=suspects,
                shapes=shapes,
                outputs=outputs,
                recovery_set=recovery_set,
                exponents=exponents,
                plan=plan,
                inaccurate=inaccurate,
                roundoff=roundoff,
            )
        outputs = list(range(self.k)) if outputs is None else [int(o) for o in outputs]
        if any(not 0 <= o < self.k for o in outputs):
            raise ValueError(f"outputs must be in [0, {self.k}) for {self!r}, got {outputs}")
        scales = self._scales(exponents)
        chosen = None if recovery_set is None else set(self._validate_indices(recovery_set))
        decoded: dict[int, np.ndarray] = {}
        for group in self.groups:
            local = {block: i for i, block in enumerate(group.members)}
            wanted = [o for o in outputs if o in local]
            if not wanted:
                continue
            group_results = {local[b]: r for b, r in results.items() if b in local}
            if not group_results:
                raise DecodingError(
                    f"blocks {sorted(results)} are not a recovery set of {self!r}: {self._threshold_phrase()}"
                )
            values = group.code.decode(
                group_results,
                max_errors=max_errors,
                shapes=None if shapes is None else [shapes[outputs.index(o)] for o in wanted],
                outputs=[local[o] for o in wanted],
                recovery_set=None if chosen is None else [local[b] for b in chosen if b in local],
                exponents=None if scales is None else scales[list(group.members[: group.code.k])],
                suspects=None
                if suspects is None
                else {local[b]: s for b, s in suspects.items() if b in local},
                inaccurate=inaccurate,
                roundoff=None
                if roundoff is None
                else {local[b]: r for b, r in roundoff.items() if b in local},
            )
            decoded.update(zip(wanted, values))
        return [decoded[o] for o in outputs]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for cached in ("generator", "targets", "groups"):  # rebuilt on demand
            state.pop(cached, None)
        return state
