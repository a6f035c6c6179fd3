"""CodedArray: a Dask collection holding an array's data blocks plus parity blocks along one axis."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import dask.array as da
import numpy as np
from dask.base import DaskMethodsMixin, tokenize
from dask.highlevelgraph import HighLevelGraph

from . import _compat, config, keys
from ._compat import Task, TaskRef
from .blocks import (
    CodedTask,
    aligned_block,
    block_equilibration,
    block_max_abs,
    chunk_cuts,
    replica_block,
    scaled_parity_block,
    segment_bounds,
    segment_equilibration,
    segment_max_abs,
    segment_parity_block,
    transpose_block,
)
from .codes import ONE_SIDED, Chunking, Code, ReplicationCode, build_code, code_kind, registered_codes
from .codes.base import check_max_errors
from .codes.sizing import auto_or_count, delays_from_evidence, parity_from_evidence, slow_worker_count
from .policy import ENCODE_COLUMNS, ENCODE_ROWS

__all__ = [
    "CodedArray",
    "chunking",
    "data_array",
    "encode",
    "encoding_name",
    "even_chunks",
    "parity_for",
    "resolve_one_sided_code",
]


def even_chunks(length: int, blocks: int) -> tuple[int, ...]:
    """Split ``length`` into ``blocks`` chunks as equal as possible (larger first), like np.array_split."""
    if blocks > length:
        raise ValueError(f"cannot split an axis of length {length} into {blocks} non-empty blocks")
    base, extra = divmod(length, blocks)
    return tuple(base + 1 if j < extra else base for j in range(blocks))


def chunking(
    row_blocks: int,
    col_blocks: int,
    inner_blocks: int,
    blocks: int,
    max_errors: int = 0,
    workers: int | None = None,
    resplit: bool = False,
) -> Chunking:
    """A :class:`~dask_coded.codes.Chunking` with ``dask.config``'s ``coded.*`` options filled in.

    With ``coded.parity: auto``, the scheduler plugin's evidence sizes the
    code: the parity, and the delays a re-split operand's blocks are chosen
    for.

    Examples
    --------
    >>> chunking(4, 1, 2, blocks=4).parity
    2
    """
    options = {name: config.get(name) for name in config.option_names()}
    if workers is None:
        workers = _compat.worker_count()  # codes are sized for the cluster that will run them
    evidence = workers and config.get("parity") == "auto"
    ratios = _compat.duration_ratios() if evidence else None
    delays = None
    if resplit and evidence:
        delays = delays_from_evidence(_compat.duration_samples(), ratios, workers)
    return Chunking(
        row_blocks,
        col_blocks,
        inner_blocks,
        blocks,
        _parity(workers, ratios),
        max_errors,
        workers,
        options,
        resplit=resplit,
        delays=delays,
        slow=slow_worker_count(ratios, workers) or 0,
    )


def parity_for(workers: int | None) -> int:
    """``coded.parity`` as a number: ``auto`` reads the scheduler plugin's evidence of slow workers.

    See :func:`~dask_coded.codes.sizing.parity_from_evidence`.

    Examples
    --------
    >>> import dask
    >>> parity_for(workers=None)  # no cluster, no evidence
    2
    >>> with dask.config.set({"coded.parity": 3}):
    ...     parity_for(workers=8)
    3
    """
    evidence = workers and config.get("parity") == "auto"
    return _parity(workers, _compat.duration_ratios() if evidence else None)


def _parity(workers: int | None, ratios: Mapping[str, float] | None) -> int:
    setting = auto_or_count("coded.parity", config.get("parity"), minimum=0)
    return parity_from_evidence(ratios, workers) if setting == "auto" else setting


def _resplits() -> bool:
    """``coded.data-blocks``: ``auto`` (encode may re-split the coded axis) or ``keep``."""
    setting = config.get("data-blocks")
    if setting not in ("auto", "keep"):
        raise ValueError(f"coded.data-blocks must be 'auto' or 'keep', got {setting!r}")
    return setting == "auto"


def encoding_name(prefix: str, code: Code, token: str) -> str:
    """The key name of an encoding: ``prefix + token``, with the group layout when the code has one.

    A code of several groups in the layout :attr:`Code.group_layout
    <dask_coded.codes.Code.group_layout>` describes
    (:class:`~dask_coded.GroupedMDSCode`) names it
    (:func:`~dask_coded.keys.grouped_name`), so the plugin places each
    group's members on distinct workers; so does a replicated encoding
    (:func:`~dask_coded.keys.replicated_name`) with the copies of each block.
    """
    if isinstance(code, ReplicationCode) and code.r > 1:
        return keys.replicated_name(prefix, code.k, token)
    layout = code.group_layout
    if layout is None or len(code.groups) == 1:
        return prefix + token
    return keys.grouped_name(prefix, code.k, *layout, token)


def resolve_one_sided_code(code: Code | str | None, chunks: Callable[[], Chunking]) -> Code:
    """A one-sided code from a code object, a registered name, or ``dask.config``'s ``coded.code``.

    A name is built by its registered factory (:func:`dask_coded.codes.build_code`)
    for ``chunks()``, which is called only then, because it asks the cluster
    for its size and its evidence of slow workers: with ``max_errors`` and
    the cluster's ``workers``, the MDS code gets enough parities to correct
    that many faulty workers, each computing several members
    (:func:`dask_coded.codes.sizing.coded_block_count`).
    """
    if isinstance(code, Code):
        if code_kind(code) != ONE_SIDED:
            raise ValueError(f"{code!r} does not split one operand into blocks; use dask_coded.dot")
        resolved = code
    else:
        name = code if code is not None else config.get("code")
        if name not in registered_codes():
            raise ValueError(f"unknown code {name!r}; registered codes: {registered_codes()}")
        if code_kind(name) != ONE_SIDED:
            raise ValueError(
                f"code {name!r} cannot encode one array; encode takes a registered one-sided code "
                f"({', '.join(registered_codes(ONE_SIDED))}); two-sided codes are chosen in dask_coded.dot"
            )
        resolved = build_code(name, chunks())
    if not resolved.systematic:
        raise ValueError(
            f"{resolved!r} is not systematic: a one-sided code's first k coded blocks must be its data "
            "blocks, unchanged (generator rows 0..k-1 the identity, targets the identity)"
        )
    return resolved


class CodedArray(DaskMethodsMixin):
    """A Dask array encoded along one axis: ``k`` data blocks followed by ``n - k`` parity blocks.

    Built by :func:`encode`. Block ``i`` along the coded axis is data block
    ``i`` for ``i < k`` (the array's chunks, unchanged, or the array re-split
    into ``k`` blocks: see :func:`encode`) and a parity block
    (zero-padded to the largest data block) after that. MDS parity blocks are
    equilibrated: they mix ``2**-e_j * A_j``, ``e_j`` from the largest
    magnitude of data block ``j`` (of each run of its rows from one chunk,
    when it was re-split), and carry the exponents with them
    (:class:`~dask_coded.blocks.ScaledBlock`), so decodes undo the scaling
    exactly. Computing a CodedArray returns the original array; persisting it keeps the parity
    blocks in memory, so that many products reuse one encoding.

    Use it as the left operand of :func:`dask_coded.dot` when encoded along
    axis 0, as the right operand when encoded along axis 1, or with ``@``,
    ``np.dot`` and ``np.matmul``. ``max_errors`` is ``coded.max-errors`` when
    it was encoded (where its code can correct that many): its products
    correct that many wrong ones unless a call asks for another number.
    """

    __array_priority__ = 20  # above dask.array's, so our __rmatmul__ wins

    def __init__(
        self,
        graph: HighLevelGraph,
        name: str,
        code: Code,
        chunks: tuple[tuple[int, ...], ...],
        dtype: np.dtype,
        axis: int,
        source_chunks: tuple[int, ...] | None = None,
        max_errors: int = 0,
    ) -> None:
        self.dask = graph
        self.name = name
        self.code = code
        self.chunks = chunks
        self.dtype = np.dtype(dtype)
        self.axis = axis
        # The encoded array's chunks along the axis, before any re-split: products are returned in them.
        self._source_chunks = chunks[axis] if source_chunks is None else source_chunks
        self.max_errors = max_errors

    # -- array-like attributes -------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(sum(c) for c in self.chunks)

    @property
    def ndim(self) -> int:
        return len(self.chunks)

    @property
    def _meta(self) -> np.ndarray:
        # Like da.Array._meta: an empty block of the array's type. Encoded blocks are plain NumPy.
        return np.empty((0,) * self.ndim, dtype=self.dtype)

    @property
    def coded_chunks(self) -> tuple[tuple[int, ...], ...]:
        """Chunks including the parity blocks (the largest data block of their group; a copy, its block's)."""
        data = self.chunks[self.axis]
        parities = [0] * (self.code.n - self.code.k)
        for group in self.code.groups:
            size = max(data[j] for j in group.members[: group.code.k])
            for local in range(group.code.k, group.code.n):
                copied = group.code.copied_block(local)
                own = size if copied is None else data[group.members[copied]]
                parities[group.members[local] - self.code.k] = own
        coded = data + tuple(parities)
        return tuple(coded if ax == self.axis else c for ax, c in enumerate(self.chunks))

    @property
    def T(self) -> CodedArray:  # noqa: N802 - NumPy's name
        """The transpose, coded along the other axis (2-D only)."""
        if self.ndim != 2:
            raise ValueError("CodedArray.T needs a 2-D array")
        name = keys.TRANSPOSE + tokenize(self.name)
        layer: dict[Any, Any] = {
            (name, j, i): CodedTask((name, j, i), transpose_block, TaskRef((self.name, i, j)))
            for i in range(len(self.coded_chunks[0]))
            for j in range(len(self.coded_chunks[1]))
        }
        graph = HighLevelGraph.from_collections(name, layer, dependencies=[cast(Any, self)])
        return CodedArray(
            graph,
            name,
            self.code,
            self.chunks[::-1],
            self.dtype,
            1 - self.axis,
            self._source_chunks,
            self.max_errors,
        )

    def __repr__(self) -> str:
        return (
            f"CodedArray<{self.name}, shape={self.shape}, dtype={self.dtype}, "
            f"axis={self.axis}, code={self.code!r}>"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th>{k}</th><td>{v}</td></tr>"
            for k, v in [
                ("shape", self.shape),
                ("dtype", self.dtype),
                ("coded axis", self.axis),
                ("code", repr(self.code)),
                ("data blocks", self.code.k),
                ("coded blocks", self.code.n),
                ("recovery threshold", self.code.recovery_threshold),
                ("chunks", self.chunks),
                ("tasks", len(self.dask)),
            ]
        )
        return f"<table><caption>CodedArray</caption>{rows}</table>"

    # -- the Dask collection protocol ------------------------------------------

    def __dask_graph__(self) -> HighLevelGraph:
        return self.dask

    def __dask_layers__(self) -> tuple[str, ...]:
        return (self.name,)

    def __dask_keys__(self) -> list[Any]:
        grid = np.empty(tuple(len(c) for c in self.coded_chunks), dtype=object)
        for index in np.ndindex(grid.shape):
            grid[index] = (self.name, *index)
        return grid.tolist()

    def __dask_tokenize__(self) -> str:
        return self.name

    __dask_optimize__ = staticmethod(da.Array.__dask_optimize__)
    __dask_scheduler__ = staticmethod(da.Array.__dask_scheduler__)

    def __dask_postcompute__(self) -> tuple[Any, tuple[Any, ...]]:
        return _assemble_data, (self.axis, self.code.k)

    def __dask_postpersist__(self) -> tuple[Any, tuple[Any, ...]]:
        return self._rebuild, ()

    def _rebuild(self, graph: Mapping[Any, Any], *, rename: Mapping[str, str] | None = None) -> CodedArray:
        name = rename.get(self.name, self.name) if rename else self.name
        if not isinstance(graph, HighLevelGraph):
            graph = HighLevelGraph.from_collections(name, dict(graph), dependencies=())
        return CodedArray(
            graph, name, self.code, self.chunks, self.dtype, self.axis, self._source_chunks, self.max_errors
        )

    # -- products --------------------------------------------------------------

    def __matmul__(self, other: Any) -> da.Array:
        from .linalg import matmul

        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> da.Array:
        from .linalg import matmul

        return matmul(other, self)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        # np.matmul is a ufunc: `ndarray @ CodedArray` arrives here, not at __rmatmul__.
        if ufunc is np.matmul and method == "__call__":
            from .linalg import matmul

            _no_extra_arguments("matmul", (), kwargs)
            return matmul(*inputs)
        # Anything but a product is about the encoded array's values: Dask's, on its data blocks.
        return getattr(ufunc, method)(*_as_data(inputs), **_as_data(kwargs))

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        from . import linalg

        handlers = {np.dot: linalg.dot, np.matmul: linalg.matmul}
        if func not in handlers:
            return func(*_as_data(args), **_as_data(kwargs))
        _no_extra_arguments(func.__name__, args[2:], kwargs)
        return handlers[func](*args[:2])

    def __getitem__(self, index: Any) -> da.Array:
        # A slice of the encoded array holds no whole coded block: a plain Dask array of its values.
        return data_array(self)[index]

    def to_dask_array(self) -> da.Array:
        """The encoded array as a plain Dask array, without parities: what ``da.asarray`` makes of it.

        Dask and NumPy functions other than products (``da.sum``, ``np.concatenate``, an xarray
        ``DataArray`` wrapping it) see this array.

        Examples
        --------
        >>> import dask.array as da
        >>> C = encode(da.arange(6.0, chunks=2).reshape(3, 2))
        >>> float(da.sum(C).compute())
        15.0
        """
        return data_array(self)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.compute()
        return out if dtype is None else out.astype(dtype)


def _no_extra_arguments(name: str, args: Any, kwargs: dict[str, Any]) -> None:
    """Refuse ``out=`` (and NumPy-only options) in ``np.dot``/``np.matmul`` on a CodedArray, as Dask does."""
    if args or kwargs:
        given = [*(repr(type(a).__name__) for a in args), *kwargs]
        raise TypeError(
            f"np.{name} on a CodedArray takes two operands and no other arguments (got {', '.join(given)}): "
            "the result is a new lazy Dask array, so out= cannot be filled"
        )


def _as_data(value: Any) -> Any:
    """``value`` with every CodedArray in it (in lists, tuples, dicts) replaced by its data array."""
    if isinstance(value, CodedArray):
        return data_array(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_as_data(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_data(v) for k, v in value.items()}
    return value


def data_array(coded: CodedArray) -> da.Array:
    """The data blocks of ``coded`` as a plain Dask array (the array that was encoded).

    Examples
    --------
    >>> import numpy as np
    >>> C = encode(np.arange(6.0).reshape(3, 2))
    >>> data_array(C).compute().tolist()
    [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    """
    # The data blocks' keys are (name, i, j) with i < k along the coded axis, which is exactly
    # the key grid of a Dask array with the original chunks; the parity keys are not part of it.
    return da.Array(coded.dask, coded.name, coded.chunks, meta=coded._meta)


def _assemble_data(results: list[Any], axis: int, k: int) -> np.ndarray:
    """The original array from computed blocks: the first ``k`` along the coded axis."""
    grid = np.empty(
        (len(results), len(results[0])) if isinstance(results[0], (list, tuple)) else (len(results),),
        dtype=object,
    )
    for index in np.ndindex(grid.shape):
        value: Any = results
        for i in index:
            value = value[i]
        grid[index] = value
    data = grid[:k] if axis == 0 else grid[:, :k]
    return np.block(data.tolist()) if data.ndim == 2 else np.concatenate(list(data))


def encode(A: Any, code: Code | str | None = None, axis: int = 0) -> CodedArray:
    """Encode ``A`` along ``axis``: its chunks become data blocks, and parity blocks are added.

    Parameters
    ----------
    A
        A NumPy or Dask array, 1-D or 2-D, of numbers.
    code
        A one-sided code (:class:`~dask_coded.MDSCode`,
        :class:`~dask_coded.ReplicationCode`, or a user's systematic code),
        a registered one-sided name (``"mds"``, ``"replication"``, or one
        registered with :func:`dask_coded.codes.register_code`) or ``None``
        for ``dask.config``'s ``coded.code``. A name builds the code for A's
        chunks along ``axis``; a code object whose ``k`` differs from them
        rechunks A into ``k`` equal blocks. On a cluster of ``W`` workers,
        with ``coded.data-blocks: auto`` (the default), the MDS code re-splits an ``A`` of
        at most ``W`` chunks (and at least ``W`` entries) along ``axis``
        into the ``k`` data blocks of ``W`` coded blocks, one per worker,
        ``k`` chosen from the task times the scheduler plugin measured
        (:func:`~dask_coded.codes.sizing.data_blocks_for`);
        :attr:`CodedArray.chunks` says how.
    axis
        The axis to split: 0 for a left operand (rows), 1 for a right one (columns).

    Returns
    -------
    CodedArray

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> import dask_coded
    >>> A = da.ones((6, 4), chunks=(2, 4))
    >>> C = dask_coded.encode(A)            # 3 data blocks + 2 parities (dask.config)
    >>> C.code
    MDSCode(k=3, n=5, generator='gaussian', seed=0)
    >>> np.array_equal(C.compute(), np.ones((6, 4)))
    True
    """
    kind = getattr(getattr(A, "dtype", None), "kind", None)
    if kind is not None and kind not in "iufc":  # before da.asarray, which fails on objects its own way
        raise TypeError(f"encode needs an array of numbers, got dtype {A.dtype}")
    A = da.asarray(A)
    if A.ndim not in (1, 2):
        raise ValueError(f"encode takes a 1-D or 2-D array, got {A.ndim}-D")
    if A.dtype.kind not in "iufc":
        raise TypeError(f"encode needs an array of numbers, got dtype {A.dtype}")
    if type(A._meta) is not np.ndarray:
        # Parity blocks are plain arrays: a mask (or a sparse/GPU layout) would be silently lost.
        raise TypeError(
            f"encode needs NumPy blocks, got {type(A._meta).__module__}.{type(A._meta).__name__} "
            "blocks; dask_coded.dot falls back to da.dot for these"
        )
    if not -A.ndim <= axis < A.ndim:
        raise ValueError(f"axis {axis} is out of bounds for a {A.ndim}-D array")
    axis %= A.ndim
    if any(np.isnan(c) for chunks in A.chunks for c in chunks):
        raise ValueError("encode needs known chunk sizes; call A.compute_chunk_sizes() first")
    # The other operand is not known yet: its blocks count as 1.
    split, other_blocks = len(A.chunks[axis]), len(A.chunks[1 - axis]) if A.ndim == 2 else 1
    rows, cols = (split, 1) if axis == 0 else (1, split)
    length = A.shape[axis]

    def sized() -> Chunking:
        workers = _compat.worker_count()
        max_errors = check_max_errors(config.get("max-errors"))  # dot's default: its products must correct
        resplit = _resplits() and workers is not None and length >= workers
        return chunking(rows, cols, other_blocks, split, max_errors, workers=workers, resplit=resplit)

    code = resolve_one_sided_code(code, sized)
    source_chunks = A.chunks[axis]
    if code.k != split:
        A = A.rechunk({axis: even_chunks(length, code.k)})

    # The axis (and a grouped code's layout) is in the name so the scheduler plugin can read a
    # block's index and group from its key.
    name = encoding_name(ENCODE_ROWS if axis == 0 else ENCODE_COLUMNS, code, tokenize(A, code, axis))
    other_axis_blocks = range(len(A.chunks[1 - axis])) if A.ndim == 2 else [None]
    layer: dict[Any, Any] = {}

    def key(base: str, i: int, other: int | None) -> tuple[Any, ...]:
        if other is None:
            return (base, i)
        return (base, i, other) if axis == 0 else (base, other, i)

    for other in other_axis_blocks:
        for j in range(code.k):
            # A task, not an alias: the block is moved to its own worker, and aligned once there.
            layer[key(name, j, other)] = CodedTask(
                key(name, j, other), aligned_block, TaskRef(key(A.name, j, other))
            )
    max_name = keys.MAX_ABS + tokenize(name)
    for q, group in enumerate(code.groups):
        data = group.members[: group.code.k]
        equilibration: Any = None
        # A re-split data block holds rows of several chunks: its parities are equilibrated by
        # segments of rows, so a small chunk keeps its accuracy beside a large one.
        segments = segment_bounds(A.chunks[axis], source_chunks, data)
        cuts = None if segments is None else tuple(chunk_cuts(A.chunks[axis], source_chunks, j) for j in data)
        mixes = any(group.code.copied_block(i) is None for i in range(group.code.k, group.code.n))
        if mixes and len(other_axis_blocks) > 1:
            # Equilibration exponents per data block, from every chunk of it along the other axis:
            # one tiny max-abs task per chunk, one task per group gathering them.
            magnitudes = []
            for local, j in enumerate(data):
                for other in other_axis_blocks:
                    chunk_key = key(max_name, j, other)
                    chunk = TaskRef(key(A.name, j, other))
                    task = (
                        Task(chunk_key, block_max_abs, chunk)
                        if cuts is None  # no data block holds rows of two chunks
                        else Task(chunk_key, segment_max_abs, axis, segments, chunk, cuts[local])
                    )
                    layer[chunk_key] = task
                    magnitudes.append(TaskRef(chunk_key))
            exp_key = (keys.EXPONENTS + tokenize(name), q)
            gather = block_equilibration if segments is None else segment_equilibration
            layer[exp_key] = Task(exp_key, gather, len(data), *magnitudes, dtype=A.dtype)
            equilibration = TaskRef(exp_key)
        for other in other_axis_blocks:
            refs = [TaskRef(key(A.name, j, other)) for j in data]
            for local in range(group.code.k, group.code.n):
                parity_key = key(name, group.members[local], other)
                copied = group.code.copied_block(local)
                weights = group.code.generator[local]
                if copied is not None:
                    # A replica is a task of its own so it can live on another worker.
                    layer[parity_key] = CodedTask(parity_key, replica_block, refs[copied])
                elif segments is None:
                    # Equilibrated: a 1e-3 block decoded through a parity that also carries a
                    # 1e12 block keeps its own relative accuracy (equilibration=None: from these blocks).
                    layer[parity_key] = CodedTask(
                        parity_key, scaled_parity_block, weights, equilibration, *refs, dtype=A.dtype
                    )
                else:
                    layer[parity_key] = CodedTask(
                        parity_key,
                        segment_parity_block,
                        weights,
                        equilibration,
                        (axis, segments, cuts),
                        *refs,
                        dtype=A.dtype,
                    )
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[A])
    # Encoded to correct faulty workers (coded.max-errors), it goes on correcting them in later calls.
    max_errors = check_max_errors(config.get("max-errors"))
    correctable = (
        max_errors if max_errors and code.is_recovery_set(range(code.n), max_errors=max_errors) else 0
    )
    return CodedArray(graph, name, code, A.chunks, A.dtype, axis, source_chunks, correctable)
