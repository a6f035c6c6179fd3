"""Drop-in coded ``dot``, ``matmul`` and ``matvec``, returning plain ``dask.array.Array``s.

Every output block is one decode task (``coded-decode-*``) whose
dependencies are the ``n`` coded block products (``coded-product-*``) of its
group. Without the scheduler plugin the decode waits for all of them and, for
systematic codes, returns the data-block product unchanged; with the plugin
it runs as soon as a recovery set is in memory.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from . import config, keys
from ._compat import List, Task, TaskRef, old_to_new
from .array import CodedArray, chunking, data_array, encode, even_chunks, resolve_one_sided_code
from .blocks import (
    CodedTask,
    DecodeSpec,
    assembled_block,
    checked_product_block,
    chunk_cuts,
    decode_block,
    product_block,
)
from .codes import ONE_SIDED, TWO_SIDED, Chunking, Code, build_code, code_kind
from .codes.base import check_max_errors
from .errors import DaskCodedWarning
from .fallback import fall_back, fallback_reason, parities_less_precise
from .operands import CodedOperand, GraphLayer, Operand
from .policy import ENCODE_COLUMNS, ENCODE_ROWS, ENCODE_TWO_SIDED
from .two_sided import inner_max_abs, matdot_scaling, operand_block, polynomial_scaling

__all__ = ["dot", "matmul", "matvec"]


def _as_input(x: Any, name: str) -> Any:
    """``x`` as an array ``da.dot`` takes; only sequences and scalars are converted (by NumPy)."""
    array = x if all(hasattr(x, attr) for attr in ("shape", "dtype", "ndim")) else np.asarray(x)
    if array.dtype.kind not in "biufcO":
        raise TypeError(f"dask_coded.dot needs numbers; {name} has dtype {array.dtype}")
    return array


def _as_array(x: Any) -> Any:
    """``x`` as NumPy, Dask or a CodedArray: other array-likes as the Dask array ``da.asarray`` makes.

    An xarray DataArray, an h5py or zarr dataset: their ``chunks`` are not Dask's (None, or a tuple
    of ints).
    """
    return x if isinstance(x, (np.ndarray, da.Array, CodedArray)) else da.asarray(x)


def _plain(x: Any) -> Any:
    """What ``da.dot`` is given in place of ``x``: a CodedArray's data as the array that was encoded.

    In that array's chunks: ``encode(A) @ x`` has the chunks of ``A @ x`` even when encode re-split
    ``A`` into other data blocks (the decoded blocks are rechunked).
    """
    if not isinstance(x, CodedArray):
        return x
    data = data_array(x)
    source = x._source_chunks
    return data if data.chunks[x.axis] == source else data.rechunk({x.axis: source})


def _check_inner(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
    inner_a = a_shape[-1]
    inner_b = b_shape[0] if len(b_shape) == 1 else b_shape[-2]
    if inner_a != inner_b and not (math.isnan(inner_a) or math.isnan(inner_b)):  # nan: unknown chunks
        raise ValueError(
            f"shapes {a_shape} and {b_shape} not aligned: {inner_a} (dim {len(a_shape) - 1}) != "
            f"{inner_b} (dim {max(len(b_shape) - 2, 0)})"
        )


def _decode_layer(
    out_name: str,
    product_keys: list[Any],
    specs: Mapping[Any, DecodeSpec],
) -> dict[Any, Any]:
    refs = [TaskRef(k) for k in product_keys]
    return {
        (out_name, *index): CodedTask((out_name, *index), decode_block, spec, *refs)
        for index, spec in specs.items()
    }


def _check_correctable(code: Code, max_errors: int) -> None:
    """Fail at graph-build time, not in a worker, when ``code`` cannot correct ``max_errors``."""
    if max_errors and not code.is_recovery_set(range(code.n), max_errors=max_errors):
        raise ValueError(
            f"{code!r} cannot correct max_errors={max_errors} wrong block products: that needs "
            f"{2 * max_errors} blocks of redundancy; encode with more parity blocks"
        )


def _finish(
    out_name: str, layer: dict[Any, Any], products: GraphLayer, chunks: Any, dtype: np.dtype
) -> da.Array:
    graph = HighLevelGraph.from_collections(out_name, layer, dependencies=[products])  # type: ignore[list-item]
    meta = np.empty((0,) * len(chunks), dtype=dtype)
    return da.Array(graph, out_name, chunks, meta=meta)


def dot(a: Any, b: Any, *, code: Code | str | None = None, max_errors: int | None = None) -> da.Array:
    """Coded ``a @ b`` for 1-D and 2-D operands: a drop-in for ``da.dot``.

    Returns what ``da.dot(a, b)`` returns: the same values (to round-off for
    floats, exactly for integers), dtype, shape and chunks. Products that
    cannot be coded (masked arrays, N-D operands, unknown chunks, ...; see
    :func:`dask_coded.fallback.fallback_reason`) are computed by ``da.dot``'s
    own graph, with one :class:`~dask_coded.FallbackWarning` naming the reason.

    Parameters
    ----------
    a, b
        NumPy arrays, Dask arrays or :class:`CodedArray` s, with NumPy's
        shape rules for ``np.dot``. NumPy operands travel inside the tasks
        that read them (no task holds a whole NumPy operand).
    code
        A code object, a registered name (``"mds"``, ``"replication"``,
        ``"polynomial"``, ``"matdot"``, or a user's code registered with
        :func:`dask_coded.codes.register_code`) or ``None`` for
        ``dask.config``'s ``coded.code``. A name is built by its registered
        factory from the operands' chunking. One-sided codes split ``a`` by rows (or, when ``a`` is
        1-D, ``b`` by columns) along the operand's existing chunks; a
        CodedArray operand brings its own code. Polynomial codes split ``a``
        by rows and ``b`` by columns; MatDot codes split both along the inner
        dimension. A code object with its own number of blocks still gives
        ``da.dot``'s chunks (the decoded blocks are rechunked).
    max_errors
        Wrong block products to locate and correct per output block (default
        ``coded.max-errors``, or a CodedArray operand's ``max_errors`` if
        larger); named codes are built with ``2 * max_errors`` extra blocks.

    Returns
    -------
    dask.array.Array
        Same shape, dtype and chunks as ``da.dot(a, b)``.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> import dask_coded
    >>> A = da.random.default_rng(0).standard_normal((8, 6), chunks=(2, 6))
    >>> x = np.ones(6)
    >>> y = dask_coded.dot(A, x)
    >>> y.chunks
    ((2, 2, 2, 2),)
    >>> np.allclose(y.compute(), A.compute() @ x)
    True
    """
    return _contract("dot", a, b, code, max_errors)


def matmul(a: Any, b: Any, *, code: Code | str | None = None, max_errors: int | None = None) -> da.Array:
    """Coded ``a @ b`` with ``np.matmul``'s rules: a drop-in for ``da.matmul``.

    For 1-D and 2-D operands this is :func:`dot`. Stacks of matrices
    (``(..., M, K) @ (..., K, N)``) are not coded: they are computed by
    ``da.matmul``'s own graph, keeping its batch chunks, with a
    :class:`~dask_coded.FallbackWarning`.

    Examples
    --------
    >>> import numpy as np
    >>> import dask_coded
    >>> a, b = np.ones((3, 4)), np.ones((4, 5))
    >>> dask_coded.matmul(a, b).shape
    (3, 5)
    """
    return _contract("matmul", a, b, code, max_errors)


def matvec(A: Any, x: Any, *, code: Code | str | None = None, max_errors: int | None = None) -> da.Array:
    """Coded matrix-vector product ``A @ x`` (``x`` 1-D): the building block of iterative solvers.

    Encode ``A`` once (``dask_coded.encode(A).persist()``) and pass the
    CodedArray to reuse the parity blocks across many products.

    Examples
    --------
    >>> import numpy as np
    >>> import dask_coded
    >>> A = np.arange(12.0).reshape(4, 3)
    >>> C = dask_coded.encode(A)
    >>> np.allclose(dask_coded.matvec(C, np.ones(3)).compute(), A.sum(axis=1))
    True
    """
    x_arr = _as_input(x, "x")
    if x_arr.ndim != 1:
        raise ValueError(f"matvec takes a 1-D vector x, got {x_arr.ndim}-D")
    return _contract("dot", A, x_arr, code, max_errors)


def _contract(operation: str, a: Any, b: Any, code: Code | str | None, max_errors: int | None) -> da.Array:
    """``da.<operation>(a, b)``, coded where :func:`fallback_reason` allows it."""
    if max_errors is None:
        # A CodedArray encoded to correct wrong products keeps correcting them outside that config.
        encoded_for = [o.max_errors for o in (a, b) if isinstance(o, CodedArray)]
        max_errors = max([check_max_errors(config.get("max-errors")), *encoded_for])
    max_errors = check_max_errors(max_errors)
    a, b = _as_input(a, "a"), _as_input(b, "b")
    if a.ndim == 0 or b.ndim == 0:
        # da.dot fails on 0-d operands too (with an IndexError); say why.
        raise ValueError(
            f"{operation}: input operand does not have enough dimensions (scalars are not allowed; "
            "multiply by a scalar with *)"
        )
    _check_inner(a.shape, b.shape)
    # The contract: the result is da.dot's, so its lazy graph gives the dtype, chunks and meta.
    reference = (da.matmul if operation == "matmul" else da.dot)(_plain(a), _plain(b))
    a, b = _as_array(a), _as_array(b)
    reason = fallback_reason(operation, a, b, reference, code=code, max_errors=max_errors)
    if reason is not None:
        fall_back(operation, reason, stacklevel=4)
        return reference
    out = _coded(operation, a, b, code, max_errors, reference.dtype)
    if out.chunks != reference.chunks:
        # A code chose its own number of blocks; the result still has da.dot's chunks.
        out = _in_chunks(out, reference.chunks)
    return out


def _in_chunks(out: da.Array, chunks: tuple[tuple[int, ...], ...]) -> da.Array:
    """``out`` in ``chunks``: one task per new block, cutting it from the decoded blocks it overlaps.

    ``da.rechunk`` splits and merges in two layers of tasks, and under stragglers every layer of
    tasks is one more wait for the slowest.
    """
    name = keys.RECHUNK + tokenize(out, chunks)
    pieces = old_to_new(out.chunks, chunks)  # per axis, per new chunk: (old chunk, slice of it)
    layer: dict[Any, Any] = {}
    for index in itertools.product(*(range(len(c)) for c in chunks)):
        grid = [pieces[axis][i] for axis, i in enumerate(index)]
        overlapped = list(itertools.product(*grid))
        refs = [TaskRef((out.name, *(block for block, _ in piece))) for piece in overlapped]
        slices = [tuple(where for _, where in piece) for piece in overlapped]
        key = (name, *index)
        layer[key] = Task(key, assembled_block, tuple(len(g) for g in grid), slices, *refs)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[out])  # type: ignore[list-item]
    return da.Array(graph, name, chunks, meta=out._meta)


def _coded(
    operation: str, a: Any, b: Any, code: Code | str | None, max_errors: int, dtype: np.dtype
) -> da.Array:
    """The coded graph of ``a @ b`` (1-D or 2-D operands that :func:`fallback_reason` accepted)."""
    # A CodedArray encoded along the inner axis is a plain operand here (fallback_reason made sure
    # one operand's parities code this product's rows or columns; the left one's win).
    if isinstance(a, CodedArray) and not (a.ndim == 2 and a.axis == 0):
        a = _plain(a)
    if isinstance(b, CodedArray) and (isinstance(a, CodedArray) or not (b.ndim == 2 and b.axis == 1)):
        b = _plain(b)
    for coded, side in ((a, "left"), (b, "right")):
        if isinstance(coded, CodedArray):
            if code is not None and code != coded.code:
                raise ValueError(f"{coded!r} is already encoded with {coded.code!r}, not {code!r}")
            _check_correctable(coded.code, max_errors)
            other = Operand(b if side == "left" else a)
            return _one_sided(CodedOperand.of_coded_array(coded), other, dtype, max_errors)
    if a.ndim == 1 and b.ndim == 1:
        # vector . vector: a 1 x K row times the vector, then the scalar. da.dot computes a NumPy
        # scalar and da.matmul a 0-d array; indexing and squeezing give the same.
        row = _coded_operands(Operand(a).expand(0), Operand(b), code, max_errors, dtype)
        return row.squeeze(0) if operation == "matmul" else row[0]
    return _coded_operands(Operand(a), Operand(b), code, max_errors, dtype)


def _coded_operands(
    a: Operand, b: Operand, code: Code | str | None, max_errors: int, dtype: np.dtype
) -> da.Array:
    name = code if isinstance(code, (str, Code)) else config.get("code")
    kind = code_kind(name)  # the registry's word, or the code object's: never its name or class
    if kind == TWO_SIDED and dtype.kind in "biu":
        # Two-sided codes have no systematic blocks: every output would be solved in floating
        # point, which is not exact for integers. A systematic code returns each block exactly.
        warnings.warn(
            f"{name!r} cannot decode integer products exactly (it has no systematic blocks); "
            "using a systematic MDS code instead",
            DaskCodedWarning,
            stacklevel=4,
        )
        name, kind = "mds", ONE_SIDED
    if a.ndim == 1 and (b.ndim == 1 or kind == TWO_SIDED):
        # A vector on the left of a two-sided code, or vector . vector: multiply as a 1 x K row
        # and drop the row axis again.
        return _coded_operands(a.expand(0), b, name, max_errors, dtype)[0]
    if kind == TWO_SIDED:
        resolved = name if isinstance(name, Code) else build_code(name, _chunking(a, b, 1, max_errors))
        return _two_sided(a, b, resolved, max_errors, dtype)
    axis = 0 if a.ndim == 2 else 1  # encode a's rows, or b's columns when a is a vector
    coded, other = (a, b) if axis == 0 else (b, a)
    encoded = _encode_for(coded, name, axis, lambda: _chunking(a, b, axis, max_errors), dtype)
    return _one_sided(encoded, other, dtype, max_errors)


def _chunking(a: Operand, b: Operand, split: int, max_errors: int) -> Chunking:
    """The operands' blocks as plain numbers for a code factory.

    ``split`` 0: a one-sided code splits the rows of ``a``; 1: the columns of ``b``.
    """
    rows = len(a.chunks[0]) if a.ndim == 2 else 1
    cols = len(b.chunks[-1]) if b.ndim == 2 else 1
    return chunking(rows, cols, len(a.chunks[-1]), rows if split == 0 else cols, max_errors)


def _encode_for(
    operand: Operand, code: Code | str | None, axis: int, chunks: Callable[[], Chunking], dtype: np.dtype
) -> CodedOperand:
    """``operand`` encoded along ``axis``: as a CodedArray (Dask) or with its blocks by value (NumPy).

    Parities hold the operand's dtype: one less precise than the product (a float32 ``A`` times a
    float64 ``x``) is cast to the product's first, as ``np.dot`` casts it before multiplying.
    """
    resolved = resolve_one_sided_code(code, chunks)
    if parities_less_precise(operand.dtype, dtype):
        operand = Operand(operand.array.astype(dtype), operand.chunks)
    if isinstance(operand.array, da.Array):
        return CodedOperand.of_coded_array(encode(operand.array, resolved, axis))
    source = operand.chunks[axis]
    if resolved.k != len(source):
        operand = operand.rechunk({axis: even_chunks(operand.shape[axis], resolved.k)})
    return CodedOperand.encode(operand, resolved, axis, ENCODE_ROWS if axis == 0 else ENCODE_COLUMNS, source)


def _two_sided(a: Operand, b: Operand, code: Code, max_errors: int, dtype: np.dtype) -> da.Array:
    """The graph of a two-sided code, chosen by how it splits the operands (:attr:`Code.splits`)."""
    if type(code).splits == ("rows", "cols"):
        return _rows_by_columns(a, b, code, max_errors, dtype)
    if type(code).splits == ("inner", "inner"):
        return _inner(a, b, code, max_errors, dtype)
    raise ValueError(
        f"{code!r} is two-sided but splits the operands as {type(code).splits!r}; dask_coded.dot knows "
        "('rows', 'cols') and ('inner', 'inner')"
    )


def _one_sided(coded: CodedOperand, other: Operand, dtype: np.dtype, max_errors: int) -> da.Array:
    """``coded @ other`` (coded along axis 0) or ``other @ coded`` (coded along axis 1).

    The result has the encoded array's chunks along the coded axis (``coded.source_chunks``):
    where the code's data blocks are others, each output block is one fused decode of the
    windows of the decoded blocks it overlaps (see :class:`DecodeSpec`'s ``parts``).
    """
    code, left = coded.code, coded.axis == 0
    _check_correctable(code, max_errors)
    multiply = checked_product_block if max_errors else product_block
    inner_chunks = coded.chunks[1] if left else coded.chunks[0]
    other = other.rechunk({0 if left else other.ndim - 1: inner_chunks})
    token = tokenize(coded, other, max_errors)
    product_name, out_name = keys.PRODUCT + token, keys.DECODE + token
    # One set of products per block of `other` along the uncoded axis: its columns (left) or rows (right).
    matrix = other.ndim == 2
    other_chunks: tuple[int | None, ...] = other.chunks[1 if left else 0] if matrix else (None,)
    inner = range(len(inner_chunks))
    sizes = coded.chunks[coded.axis]
    windows = _fusable(code, sizes, coded.source_chunks)
    resplit = tuple(sizes) != tuple(coded.source_chunks)
    # The axis of an output block along which the coded axis runs.
    out_axis = 0 if left or not matrix else 1
    products: dict[Any, Any] = {}
    decodes: dict[Any, Any] = {}
    for o, other_size in enumerate(other_chunks):
        members = []
        for i in range(code.n):
            if left:
                lhs = [coded.block((i, kk)) for kk in inner]
                rhs = [other.block((kk, o) if matrix else (kk,)) for kk in inner]
                key = (product_name, i, o) if matrix else (product_name, i)
            else:
                lhs = [other.block((o, kk) if matrix else (kk,)) for kk in inner]
                rhs = [coded.block((kk, i)) for kk in inner]
                key = (product_name, o, i) if matrix else (product_name, i)
            options: dict[str, Any] = {"coded_left": left} if max_errors else {}
            copied = code.copied_block(i)
            if max_errors and resplit and copied is not None:
                # Each run of rows from one chunk is checked at that chunk's scale.
                options["cuts"] = chunk_cuts(sizes, coded.source_chunks, copied)
            products[key] = CodedTask(key, multiply, List(*lhs), List(*rhs), **options)
            members.append(key)
        place = functools.partial(_output_block, other=o, other_size=other_size, left=left)
        # Each output block is decoded from the members of its code group only.
        for group in code.groups:
            data = group.members[: group.code.k]
            specs = {}
            for local, j in enumerate(data):
                index, shape = place(j, sizes[j])
                specs[index] = DecodeSpec(
                    group.code, local, shape, dtype, max_errors, first_position=group.members[0]
                )
            if windows is not None:
                specs = _fused(specs, windows, data, place, out_axis)
            decodes.update(_decode_layer(out_name, [members[i] for i in group.members], specs))
    product_layer = GraphLayer(product_name, products, *coded.collections, *other.collections)
    coded_chunks = sizes if windows is None else coded.source_chunks
    if left:
        chunks = (coded_chunks, other.chunks[1]) if matrix else (coded_chunks,)
    else:
        chunks = (other.chunks[0], coded_chunks) if matrix else (coded_chunks,)
    return _finish(out_name, decodes, product_layer, chunks, dtype)


def _output_block(
    j: int, size: int, *, other: int, other_size: int | None, left: bool
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The index and shape of output block ``j`` along the coded axis (``size`` long there)."""
    if other_size is None:
        return (j,), (size,)
    return ((j, other), (size, other_size)) if left else ((other, j), (other_size, size))


def _fusable(
    code: Code, sizes: tuple[int, ...], wanted: tuple[int, ...]
) -> list[list[tuple[int, int, int]]] | None:
    """Per block of ``wanted``, the ``(decoded block, start, stop)`` windows it is cut from, in one stage.

    Each wanted block must overlap decoded blocks (of ``sizes``) of one group only (its decode task
    reads that group's products); None where the sizes already agree or that fails.
    """
    if tuple(sizes) == tuple(wanted) or sum(sizes) != sum(wanted):
        return None
    group_of = {j: g for g, group in enumerate(code.groups) for j in group.members[: group.code.k]}
    windows = [
        [(j, *where.indices(sizes[j])[:2]) for j, where in pieces]
        for pieces in old_to_new((sizes,), (wanted,))[0]
    ]
    if any(len({group_of[j] for j, _, _ in pieces}) != 1 for pieces in windows):
        return None
    return windows


def _fused(
    specs: Mapping[tuple[int, ...], DecodeSpec],
    windows: list[list[tuple[int, int, int]]],
    data: tuple[int, ...],
    place: Callable[[int, int], tuple[tuple[int, ...], tuple[int, ...]]],
    out_axis: int,
) -> dict[tuple[int, ...], DecodeSpec]:
    """One decode per output block whose ``windows`` are in this group's decoded blocks (``data``).

    ``specs`` are the group's decodes of whole blocks; each fused one has a part per decoded block
    it overlaps, windowed to the rows (or columns) it takes from it.
    """
    by_block = {j: spec for j, spec in zip(data, specs.values())}
    fused = {}
    for c, pieces in enumerate(windows):
        if pieces[0][0] not in by_block:
            continue  # another group's block
        parts = [
            dataclasses.replace(by_block[j], shape=place(j, stop - start)[1], window=(out_axis, start, stop))
            for j, start, stop in pieces
        ]
        index, shape = place(c, sum(stop - start for _, start, stop in pieces))
        fused[index] = dataclasses.replace(parts[0], shape=shape, window=None, parts=tuple(parts))
    return fused


def _two_sided_names(code: Code, token: str) -> tuple[str, str]:
    """The names of a two-sided code's coded blocks of A and of B.

    Computed uncoded, members past the code's terms repeat them: named so the plugin lays them out
    as a replication's copies, each on another worker than the member it repeats.
    """
    left, right = (keys.replicated_name(prefix, code.uncoded_terms, token) for prefix in ENCODE_TWO_SIDED)
    return left, right


def _encode_layer(
    name: str, code: Code, blocks: list[list[Any]], dtype: np.dtype, scaling: Any, side: int
) -> dict[Any, Any]:
    """``(name, i, g)``: coded block ``i`` of operand ``side`` from the blocks ``blocks[g]`` (refs or NumPy).

    Encoded in at least the product's ``dtype``, so a float32 operand of a float64 product
    keeps float64 accuracy; each block scaled by ``scaling``'s exponents of operand ``side``.
    """
    weights = code.operand_weights[side]
    return {
        (name, i, g): CodedTask(
            (name, i, g),
            operand_block,
            weights[i],
            scaling,
            side,
            *group,
            dtype=dtype,
            uncoded=code.uncoded_operands(i)[side],
        )
        for g, group in enumerate(blocks)
        for i in range(weights.shape[0])
    }


def _operand_scaling(
    layer: dict[Any, Any],
    token: str,
    gather: Any,
    counts: tuple[int, ...],
    *sides: Any,
    code: Code,
    dtype: np.dtype,
) -> Any:
    """The :class:`~dask_coded.two_sided.OperandScaling` ``gather(*counts, *lines)`` of a two-sided code.

    ``sides`` are ``(operand, block indices, cuts)`` triples: the largest magnitude of each line of
    each block along the inner axis (:func:`~dask_coded.two_sided.inner_max_abs`, by segment where
    ``cuts(index)`` gives a re-split block's), a tiny task for a Dask operand's block (added to
    ``layer``), read now from a NumPy one. With NumPy operands only, the scaling itself is computed
    now: their coded blocks depend on no task.
    """
    lines: list[Any] = []
    for side, (operand, indices, cuts) in enumerate(sides):
        for index in indices:
            block = operand.block(index)
            if not isinstance(block, TaskRef):
                lines.append(inner_max_abs(block, side, cuts(index)))
                continue
            key = (keys.MAX_ABS + token, side, *index)
            layer[key] = Task(key, inner_max_abs, block, side, cuts(index))
            lines.append(TaskRef(key))
    condition = _worst_condition(code)
    if not any(isinstance(line, TaskRef) for line in lines):
        return gather(*counts, *lines, dtype=dtype, condition=condition)
    scaling_key = (keys.EXPONENTS + token, 0)
    layer[scaling_key] = Task(scaling_key, gather, *counts, *lines, dtype=dtype, condition=condition)
    return TaskRef(scaling_key)


@functools.lru_cache(maxsize=64)
def _worst_condition(code: Code) -> float:
    """The worst condition number of ``code``'s decodes: how much it may amplify round-off."""
    return code.condition_number()


def _rows_by_columns(a: Operand, b: Operand, code: Code, max_errors: int, dtype: np.dtype) -> da.Array:
    """A two-sided code over row blocks of ``a`` and column blocks of ``b`` (polynomial codes)."""
    a_weights, b_weights = code.operand_weights
    m, p = a_weights.shape[1], b_weights.shape[1]
    if a.ndim != 2:
        raise ValueError(f"{code!r} needs a 2-D left operand (A split by rows)")
    if b.ndim == 1:
        if p != 1:
            raise ValueError(f"a vector cannot be split into p={p} column blocks; use p=1")
        return _rows_by_columns(a, b.expand(1), code, max_errors, dtype)[:, 0]
    _check_correctable(code, max_errors)
    multiply = checked_product_block if max_errors else product_block
    # A block re-split from several of da.dot's output chunks is judged chunk by chunk: a 1e-16 chunk
    # beside a 1 in one block came back 2x off, accurate relative to the block only.
    a_cuts, b_cuts = _segments(a, 0, m), _segments(b, 1, p)
    a = _split(a, 0, m)
    b = _split(b, 1, p)
    a = a.rechunk({1: b.chunks[0]})
    token = tokenize(a, b, code, max_errors)
    enc_a, enc_b = _two_sided_names(code, token)
    inner = range(len(a.chunks[1]))
    layer: dict[Any, Any] = {}
    # Polynomial codes interpolate every output from all blocks' products: each block is brought
    # to magnitude 1 first, or a small output would keep only the largest one's absolute accuracy.
    a_blocks = [(j, kk) for j in range(m) for kk in inner]
    b_blocks = [(kk, col) for col in range(p) for kk in inner]
    scaling = _operand_scaling(
        layer,
        token,
        polynomial_scaling,
        (m, p),
        (a, a_blocks, lambda index: a_cuts[index[0]]),
        (b, b_blocks, lambda index: b_cuts[index[1]]),
        code=code,
        dtype=dtype,
    )
    a_groups = [[a.block((j, kk)) for j in range(m)] for kk in inner]
    layer.update(_encode_layer(enc_a, code, a_groups, dtype, scaling, 0))
    b_groups = [[b.block((kk, col)) for col in range(p)] for kk in inner]
    layer.update(_encode_layer(enc_b, code, b_groups, dtype, scaling, 1))
    encoded = GraphLayer(keys.ENCODE + token, layer, *a.collections, *b.collections)
    product_name, out_name = keys.PRODUCT + token, keys.DECODE + token
    products = {
        (product_name, i): CodedTask(
            (product_name, i),
            multiply,
            List(*[TaskRef((enc_a, i, kk)) for kk in inner]),
            List(*[TaskRef((enc_b, i, kk)) for kk in inner]),
        )
        for i in range(code.n)
    }
    specs = {
        (row, col): DecodeSpec(
            code,
            row * p + col,
            (a.chunks[0][row], b.chunks[1][col]),
            dtype,
            max_errors,
            scaled_by=(row, m + col),
        )
        for row, col in itertools.product(range(m), range(p))
    }
    decodes = _decode_layer(out_name, [(product_name, i) for i in range(code.n)], specs)
    return _finish(
        out_name, decodes, GraphLayer(product_name, products, encoded), (a.chunks[0], b.chunks[1]), dtype
    )


def _inner(a: Operand, b: Operand, code: Code, max_errors: int, dtype: np.dtype) -> da.Array:
    """A two-sided code over blocks of the inner dimension of both operands (MatDot codes)."""
    m = code.operand_weights[0].shape[1]
    if a.ndim != 2:
        raise ValueError(f"{code!r} needs a 2-D left operand (split along the inner dimension)")
    _check_correctable(code, max_errors)
    multiply = checked_product_block if max_errors else product_block
    a = _split(a, 1, m)
    b = b.rechunk({0: a.chunks[1]})
    token = tokenize(a, b, code, max_errors)
    enc_a, enc_b = _two_sided_names(code, token)
    rows, cols = range(len(a.chunks[0])), range(len(b.chunks[1])) if b.ndim == 2 else [None]
    layer: dict[Any, Any] = {}
    # A MatDot decode cancels the cross terms A_j B_l: A_j and B_j are balanced first, or a large A_0
    # beside a large B_1 would leave only their product's absolute accuracy to a small output.
    a_blocks = [(r, j) for j in range(m) for r in rows]
    b_blocks = [(j, c) if c is not None else (j,) for j in range(m) for c in cols]
    scaling = _operand_scaling(
        layer,
        token,
        matdot_scaling,
        (m, len(rows)),
        (a, a_blocks, _no_cuts),
        (b, b_blocks, _no_cuts),
        code=code,
        dtype=dtype,
    )
    a_groups = [[a.block((r, j)) for j in range(m)] for r in rows]
    layer.update(_encode_layer(enc_a, code, a_groups, dtype, scaling, 0))
    b_groups = [[b.block((j, c) if c is not None else (j,)) for j in range(m)] for c in cols]
    layer.update(_encode_layer(enc_b, code, b_groups, dtype, scaling, 1))
    encoded = GraphLayer(keys.ENCODE + token, layer, *a.collections, *b.collections)
    product_name, out_name = keys.PRODUCT + token, keys.DECODE + token
    products: dict[Any, Any] = {}
    decodes: dict[Any, Any] = {}
    for r, (g, c) in itertools.product(rows, enumerate(cols)):
        members = [(product_name, r, g, i) for i in range(code.n)]
        for i, key in enumerate(members):
            products[key] = CodedTask(
                key, multiply, List(TaskRef((enc_a, i, r))), List(TaskRef((enc_b, i, g)))
            )
        index, shape = (
            ((r, g), (a.chunks[0][r], b.chunks[1][g])) if c is not None else ((r,), (a.chunks[0][r],))
        )
        decodes.update(
            _decode_layer(out_name, members, {index: DecodeSpec(code, 0, shape, dtype, max_errors)})
        )
    chunks = (a.chunks[0], b.chunks[1]) if b.ndim == 2 else (a.chunks[0],)
    return _finish(out_name, decodes, GraphLayer(product_name, products, encoded), chunks, dtype)


def _segments(operand: Operand, axis: int, blocks: int) -> list[tuple[int, ...] | None]:
    """Per block of :func:`_split`'s, where its lines along ``axis`` change chunk of ``operand`` (or None)."""
    if len(operand.chunks[axis]) == blocks:
        return [None] * blocks
    sizes = even_chunks(operand.shape[axis], blocks)
    # Without the empty chunks' cuts: an empty segment has no output to judge.
    return [tuple(sorted(set(chunk_cuts(sizes, operand.chunks[axis], j)))) for j in range(blocks)]


def _no_cuts(index: Any) -> None:
    return None


def _split(operand: Operand, axis: int, blocks: int) -> Operand:
    """``operand`` with ``blocks`` chunks along ``axis``: its own chunks if they already are that many."""
    if len(operand.chunks[axis]) == blocks:
        return operand
    return operand.rechunk({axis: even_chunks(operand.shape[axis], blocks)})
