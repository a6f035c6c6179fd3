"""Operands of coded graphs: Dask arrays are reached by key, NumPy arrays travel inside the tasks.

A NumPy operand wrapped by ``da.asarray`` is one task that every product
depends on: when that task lands on a slow worker, the whole coded call waits
for it. So a NumPy operand's blocks are sliced once, at graph-build time, and
put by value into the arguments of each task that reads them; those tasks
depend on no operand task at all. Pickle keeps one copy of a block that
several tasks of one graph share, because every task holds the same object.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da
import numpy as np
from dask.array.core import normalize_chunks
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ._compat import TaskRef
from .array import encoding_name
from .codes import Code

__all__ = ["CodedOperand", "GraphLayer", "Operand"]

Chunks = tuple[tuple[int, ...], ...]


class GraphLayer:
    """A graph layer with the collection methods ``HighLevelGraph.from_collections`` reads."""

    def __init__(self, name: str, layer: dict[Any, Any], *dependencies: Any) -> None:
        self.name = name
        self.graph = HighLevelGraph.from_collections(name, layer, dependencies=list(dependencies))

    def __dask_graph__(self) -> HighLevelGraph:
        return self.graph

    def __dask_layers__(self) -> tuple[str]:
        return (self.name,)


class Operand:
    """One plain operand of a coded product: its chunks, and each block as a task argument.

    Parameters
    ----------
    array
        A Dask array (blocks are :class:`~dask._task_spec.TaskRef` s to its
        keys) or a NumPy array (blocks are the sliced arrays themselves).
    chunks
        The NumPy array's chunks; by default ``da.from_array``'s, so results
        have ``da.dot``'s chunks. Ignored for Dask arrays.

    Examples
    --------
    >>> import numpy as np
    >>> x = Operand(np.arange(6.0), chunks=((4, 2),))
    >>> x.block((1,))
    array([4., 5.])
    >>> x.collections
    []
    """

    def __init__(self, array: da.Array | np.ndarray, chunks: Chunks | None = None) -> None:
        self.array = array
        if isinstance(array, da.Array):
            self.chunks: Chunks = array.chunks
        else:
            self.chunks = normalize_chunks(
                "auto" if chunks is None else chunks, array.shape, dtype=array.dtype
            )
        self._blocks: dict[tuple[int, ...], np.ndarray] = {}
        self._token: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def ndim(self) -> int:
        return len(self.chunks)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def collections(self) -> list[Any]:
        """The Dask collections a layer reading this operand depends on (none for NumPy)."""
        return [self.array] if isinstance(self.array, da.Array) else []

    def block(self, index: Sequence[int]) -> TaskRef | np.ndarray:
        """Block ``index`` as a task argument: a reference to its key, or the NumPy block itself."""
        index = tuple(index)
        if isinstance(self.array, da.Array):
            return TaskRef((self.array.name, *index))
        if index not in self._blocks:
            self._blocks[index] = self.array[_slices(self.chunks, index)]
        return self._blocks[index]

    def rechunk(self, chunks: dict[int, tuple[int, ...]]) -> Operand:
        """The same operand with new chunks along some axes (re-slicing a NumPy array costs nothing)."""
        if all(self.chunks[axis] == tuple(c) for axis, c in chunks.items()):
            return self
        if isinstance(self.array, da.Array):
            return Operand(self.array.rechunk(chunks))
        return Operand(self.array, tuple(tuple(chunks.get(ax, c)) for ax, c in enumerate(self.chunks)))

    def expand(self, axis: int) -> Operand:
        """A vector as a one-row (``axis=0``) or one-column (``axis=1``) matrix."""
        if isinstance(self.array, da.Array):
            return Operand(da.expand_dims(self.array, axis))
        chunks = list(self.chunks)
        chunks.insert(axis, (1,))
        return Operand(np.expand_dims(self.array, axis), tuple(chunks))

    def __dask_tokenize__(self) -> Any:
        if self._token is None:
            self._token = tokenize(self.array, self.chunks)
        return ("dask-coded-operand", self._token)


class CodedOperand:
    """An operand split into ``code.n`` coded blocks along ``axis``: data blocks first, then parities.

    Built by :meth:`of_coded_array` from a :class:`~dask_coded.CodedArray`,
    or by :meth:`encode` from a NumPy :class:`Operand`: its data blocks then
    travel by value and each parity block is a task of its own, so no product
    waits on a task holding the whole array.
    """

    def __init__(
        self,
        code: Code,
        axis: int,
        chunks: Chunks,
        block: Callable[[tuple[int, ...]], Any],
        collections: list[Any],
        token: str,
        source_chunks: tuple[int, ...] | None = None,
    ) -> None:
        self.code = code
        self.axis = axis
        self.chunks = chunks
        self.block = block
        self.collections = collections
        self.token = token
        #: Along ``axis``, the chunks of the array that was encoded (its data blocks may be others):
        #: the chunks its products must have.
        self.source_chunks = chunks[axis] if source_chunks is None else source_chunks

    @classmethod
    def of_coded_array(cls, coded: Any) -> CodedOperand:
        """The blocks of a CodedArray, by key."""
        return cls(
            coded.code,
            coded.axis,
            coded.chunks,
            lambda index: TaskRef((coded.name, *index)),
            [coded],
            coded.name,
            coded._source_chunks,
        )

    @classmethod
    def encode(
        cls,
        operand: Operand,
        code: Code,
        axis: int,
        encode_name: str,
        source_chunks: tuple[int, ...] | None = None,
    ) -> CodedOperand:
        """Encode a NumPy operand whose chunks along ``axis`` are ``code``'s ``k`` data blocks.

        ``encode_name`` prefixes the parity keys (the scheduler plugin reads
        a block's index from it, as for :func:`~dask_coded.encode`);
        ``source_chunks`` are the operand's chunks before it was split into them.
        """
        from .blocks import (
            CodedTask,
            block_equilibration,
            chunk_cuts,
            scaled_parity_block,
            segment_bounds,
            segment_equilibration,
            segment_max_abs,
            segment_parity_block,
        )
        from .codes.arithmetic import max_abs

        name = encoding_name(encode_name, code, tokenize(operand, code, axis))
        others = range(len(operand.chunks[1 - axis])) if operand.ndim == 2 else [None]

        def index(i: int, other: int | None) -> tuple[int, ...]:
            if other is None:
                return (i,)
            return (i, other) if axis == 0 else (other, i)

        # Equilibration of whole data blocks (every chunk along the other axis), known
        # now because the data is here: a 1e-3 block decoded through a parity that also carries a
        # 1e12 block keeps its own relative accuracy, and no task gathers them.
        bounds = np.cumsum((0, *operand.chunks[axis]))
        whole = [np.take(operand.array, range(bounds[j], bounds[j + 1]), axis=axis) for j in range(code.k)]
        largest = [max_abs(block) for block in whole]
        equilibration = block_equilibration(code.k, *largest, dtype=operand.dtype)
        layer: dict[Any, Any] = {}
        for group in code.groups:
            members = group.members[: group.code.k]
            # A re-split data block holds rows of several chunks: equilibrated by segments of rows.
            split_from = source_chunks or operand.chunks[axis]
            segments = segment_bounds(operand.chunks[axis], split_from, members)
            if segments is not None:
                cuts = [chunk_cuts(operand.chunks[axis], split_from, j) for j in members]
                magnitudes = [segment_max_abs(axis, segments, whole[j], c) for j, c in zip(members, cuts)]
                by_segment = segment_equilibration(len(members), *magnitudes, dtype=operand.dtype)
            for other in others:
                data = [operand.block(index(j, other)) for j in members]
                for local in range(group.code.k, group.code.n):
                    if group.code.copied_block(local) is not None:
                        continue  # a replica is the data block itself, carried by value
                    key = (name, *index(group.members[local], other))
                    weights = group.code.generator[local]
                    if segments is None:
                        task = CodedTask(
                            key, scaled_parity_block, weights, equilibration.of_blocks(members), *data
                        )
                    else:
                        task = CodedTask(
                            key, segment_parity_block, weights, by_segment, (axis, segments, None), *data
                        )
                    layer[key] = task
        parities = GraphLayer(name, layer)

        def block(idx: tuple[int, ...]) -> Any:
            i = idx[axis]
            copied = code.copied_block(i)  # a data block (systematic codes) or a replica of one
            if copied is not None:
                data_index = list(idx)
                data_index[axis] = copied
                return operand.block(data_index)
            return TaskRef((name, *idx))

        return cls(code, axis, operand.chunks, block, [parities], name, source_chunks)

    def __dask_tokenize__(self) -> Any:
        return ("dask-coded-coded-operand", self.token)


def _slices(chunks: Chunks, index: tuple[int, ...]) -> tuple[slice, ...]:
    starts = [sum(axis_chunks[:i]) for axis_chunks, i in zip(chunks, index)]
    return tuple(slice(start, start + chunks[ax][i]) for ax, (start, i) in enumerate(zip(starts, index)))
