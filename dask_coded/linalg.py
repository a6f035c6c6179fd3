"""Drop-in coded ``dot``, ``matmul`` and ``matvec``, returning plain ``dask.array.Array``s.

Every output block is one decode task (``coded-decode-*``) whose
dependencies are the ``n`` coded block products (``coded-product-*``) of its
group. Without the scheduler plugin the decode waits for all of them and, for
systematic codes, returns the data-block product unchanged; with the plugin
it runs as soon as a recovery set is in memory.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from typing import Any

import dask.array as da
import numpy as np
from dask._task_spec import List, TaskRef
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from . import config
from .array import CodedArray, encode, even_chunks, resolve_one_sided_code
from .blocks import CodedTask, DecodeSpec, decode_block, parity_block, product_block
from .codes import Code, MatDotCode, PolynomialCode, make_code
from .codes.base import check_max_errors
from .errors import DaskCodedWarning
from .policy import ENCODE_TWO_SIDED

__all__ = ["dot", "matmul", "matvec"]

_TWO_SIDED_NAMES = ("polynomial", "matdot")


class _Layer:
    """A graph layer with the collection methods ``HighLevelGraph.from_collections`` reads."""

    def __init__(self, name: str, layer: dict[Any, Any], *dependencies: Any) -> None:
        self.name = name
        self.graph = HighLevelGraph.from_collections(name, layer, dependencies=list(dependencies))  # type: ignore[list-item]

    def __dask_graph__(self) -> HighLevelGraph:
        return self.graph

    def __dask_layers__(self) -> tuple[str]:
        return (self.name,)


def _as_operand(x: Any, name: str) -> da.Array | CodedArray:
    if isinstance(x, (CodedArray, da.Array)):
        array = x
    else:
        array = da.asarray(x)
    if array.dtype.kind not in "iufc":
        raise TypeError(f"dask_coded.dot needs numbers; {name} has dtype {array.dtype}")
    if array.ndim not in (1, 2):
        raise ValueError(
            f"dask_coded.dot takes 1-D or 2-D operands, {name} is {array.ndim}-D; use matmul for stacks"
        )
    return array


def _check_inner(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
    inner_a = a_shape[-1]
    inner_b = b_shape[0] if len(b_shape) == 1 else b_shape[-2]
    if inner_a != inner_b:
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


def _finish(out_name: str, layer: dict[Any, Any], products: _Layer, chunks: Any, dtype: np.dtype) -> da.Array:
    graph = HighLevelGraph.from_collections(out_name, layer, dependencies=[products])  # type: ignore[list-item]
    meta = np.empty((0,) * len(chunks), dtype=dtype)
    return da.Array(graph, out_name, chunks, meta=meta)


def _one_sided(coded: CodedArray, other: da.Array, max_errors: int) -> da.Array:
    """``coded @ other`` (coded along axis 0) or ``other @ coded`` (coded along axis 1)."""
    code, left = coded.code, coded.axis == 0
    _check_correctable(code, max_errors)
    inner_chunks = coded.chunks[1] if left else coded.chunks[0]
    other = other.rechunk({0 if left else other.ndim - 1: inner_chunks})
    dtype = np.result_type(coded.dtype, other.dtype)
    token = tokenize(coded, other, max_errors)
    product_name, out_name = "coded-product-" + token, "coded-decode-" + token
    # Groups are the output blocks along the uncoded axis: columns of `other` (left) or its rows (right).
    group_chunks = (
        (other.chunks[1] if other.ndim == 2 else (None,))
        if left
        else (other.chunks[0] if other.ndim == 2 else (None,))
    )
    inner = range(len(inner_chunks))
    products: dict[Any, Any] = {}
    decodes: dict[Any, Any] = {}
    for g, group_size in enumerate(group_chunks):
        keys = []
        for i in range(code.n):
            if left:
                lhs = [TaskRef((coded.name, i, kk)) for kk in inner]
                rhs = [TaskRef((other.name, kk, g) if other.ndim == 2 else (other.name, kk)) for kk in inner]
                key = (product_name, i, g) if other.ndim == 2 else (product_name, i)
            else:
                lhs = [TaskRef((other.name, g, kk) if other.ndim == 2 else (other.name, kk)) for kk in inner]
                rhs = [TaskRef((coded.name, kk, i)) for kk in inner]
                key = (product_name, g, i) if other.ndim == 2 else (product_name, i)
            products[key] = CodedTask(key, product_block, List(*lhs), List(*rhs))
            keys.append(key)
        specs = {}
        for j, size in enumerate(coded.chunks[coded.axis]):
            if left:
                index, shape = ((j, g), (size, group_size)) if group_size is not None else ((j,), (size,))
            else:
                index, shape = ((g, j), (group_size, size)) if group_size is not None else ((j,), (size,))
            specs[index] = DecodeSpec(code, j, shape, dtype, max_errors)
        decodes.update(_decode_layer(out_name, keys, specs))
    product_layer = _Layer(product_name, products, coded, other)
    coded_chunks = coded.chunks[coded.axis]
    if left:
        chunks = (coded_chunks, other.chunks[1]) if other.ndim == 2 else (coded_chunks,)
    else:
        chunks = (other.chunks[0], coded_chunks) if other.ndim == 2 else (coded_chunks,)
    return _finish(out_name, decodes, product_layer, chunks, dtype)


def _encode_layer(name: str, weights: np.ndarray, blocks: list[list[Any]]) -> dict[Any, Any]:
    """``(name, i, g)``: row ``i`` of ``weights`` applied to the blocks ``blocks[g]``."""
    return {
        (name, i, g): CodedTask((name, i, g), parity_block, weights[i], *[TaskRef(b) for b in group])
        for g, group in enumerate(blocks)
        for i in range(weights.shape[0])
    }


def _polynomial(a: da.Array, b: da.Array, code: PolynomialCode, max_errors: int) -> da.Array:
    if a.ndim != 2:
        raise ValueError("a polynomial code needs a 2-D left operand (A split by rows)")
    if b.ndim == 1:
        if code.p != 1:
            raise ValueError(f"a vector cannot be split into p={code.p} column blocks; use p=1")
        return _polynomial(a, b[:, None], code, max_errors)[:, 0]
    _check_correctable(code, max_errors)
    a = _split(a, 0, code.m)
    b = _split(b, 1, code.p)
    a = a.rechunk({1: b.chunks[0]})
    dtype = np.result_type(a.dtype, b.dtype)
    token = tokenize(a, b, code, max_errors)
    enc_a, enc_b = (prefix + token for prefix in ENCODE_TWO_SIDED)
    inner = range(len(a.chunks[1]))
    layer = _encode_layer(enc_a, code.a_weights, [[(a.name, j, kk) for j in range(code.m)] for kk in inner])
    layer.update(
        _encode_layer(enc_b, code.b_weights, [[(b.name, kk, col) for col in range(code.p)] for kk in inner])
    )
    encoded = _Layer("coded-encode-" + token, layer, a, b)
    product_name, out_name = "coded-product-" + token, "coded-decode-" + token
    products = {
        (product_name, i): CodedTask(
            (product_name, i),
            product_block,
            List(*[TaskRef((enc_a, i, kk)) for kk in inner]),
            List(*[TaskRef((enc_b, i, kk)) for kk in inner]),
        )
        for i in range(code.n)
    }
    specs = {
        (row, col): DecodeSpec(
            code, row * code.p + col, (a.chunks[0][row], b.chunks[1][col]), dtype, max_errors
        )
        for row, col in itertools.product(range(code.m), range(code.p))
    }
    decodes = _decode_layer(out_name, [(product_name, i) for i in range(code.n)], specs)
    return _finish(
        out_name, decodes, _Layer(product_name, products, encoded), (a.chunks[0], b.chunks[1]), dtype
    )


def _matdot(a: da.Array, b: da.Array, code: MatDotCode, max_errors: int) -> da.Array:
    if a.ndim != 2:
        raise ValueError("a MatDot code needs a 2-D left operand (split along the inner dimension)")
    _check_correctable(code, max_errors)
    a = _split(a, 1, code.m)
    b = b.rechunk({0: a.chunks[1]})
    dtype = np.result_type(a.dtype, b.dtype)
    token = tokenize(a, b, code, max_errors)
    enc_a, enc_b = (prefix + token for prefix in ENCODE_TWO_SIDED)
    rows, cols = range(len(a.chunks[0])), range(len(b.chunks[1])) if b.ndim == 2 else [None]
    layer = _encode_layer(enc_a, code.split_weights, [[(a.name, r, j) for j in range(code.m)] for r in rows])
    b_blocks = [[(b.name, j, c) if c is not None else (b.name, j) for j in range(code.m)] for c in cols]
    layer.update(_encode_layer(enc_b, code.split_weights, b_blocks))
    encoded = _Layer("coded-encode-" + token, layer, a, b)
    product_name, out_name = "coded-product-" + token, "coded-decode-" + token
    products: dict[Any, Any] = {}
    decodes: dict[Any, Any] = {}
    for r, (g, c) in itertools.product(rows, enumerate(cols)):
        keys = [(product_name, r, g, i) for i in range(code.n)]
        for i, key in enumerate(keys):
            products[key] = CodedTask(
                key, product_block, List(TaskRef((enc_a, i, r))), List(TaskRef((enc_b, i, g)))
            )
        index, shape = (
            ((r, g), (a.chunks[0][r], b.chunks[1][g])) if c is not None else ((r,), (a.chunks[0][r],))
        )
        decodes.update(_decode_layer(out_name, keys, {index: DecodeSpec(code, 0, shape, dtype, max_errors)}))
    chunks = (a.chunks[0], b.chunks[1]) if b.ndim == 2 else (a.chunks[0],)
    return _finish(out_name, decodes, _Layer(product_name, products, encoded), chunks, dtype)


def _split(array: da.Array, axis: int, blocks: int) -> da.Array:
    """``array`` with ``blocks`` chunks along ``axis``: its own chunks if they already are that many."""
    if len(array.chunks[axis]) == blocks:
        return array
    return array.rechunk({axis: even_chunks(array.shape[axis], blocks)})


def _two_sided_code(code: Code | str, a: da.Array, b: da.Array, max_errors: int) -> Code:
    if isinstance(code, Code):
        return code
    parity = int(config.get("parity")) + 2 * max_errors
    if code == "polynomial":
        m, p = len(a.chunks[0]), len(b.chunks[1]) if b.ndim == 2 else 1
        return make_code("polynomial", m=m, p=p, n=m * p + parity)
    m = len(a.chunks[-1])
    return make_code("matdot", m=m, n=2 * m - 1 + parity)


def dot(a: Any, b: Any, code: Code | str | None = None, *, max_errors: int | None = None) -> da.Array:
    """Coded ``a @ b`` for 1-D and 2-D operands: a drop-in for ``da.dot``.

    Parameters
    ----------
    a, b
        NumPy arrays, Dask arrays or :class:`CodedArray` s, with NumPy's
        shape rules for ``np.dot``.
    code
        A code object, a registered name (``"mds"``, ``"replication"``,
        ``"polynomial"``, ``"matdot"``) or ``None`` for ``dask.config``'s
        ``coded.code``. One-sided codes split ``a`` by rows (or, when ``a`` is
        1-D, ``b`` by columns) along the operand's existing chunks; a
        CodedArray operand brings its own code. Polynomial codes split ``a``
        by rows and ``b`` by columns; MatDot codes split both along the inner
        dimension.
    max_errors
        Wrong block products to locate and correct per output block (default
        ``coded.max-errors``); named codes are built with ``2 * max_errors``
        extra blocks.

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
    max_errors = check_max_errors(config.get("max-errors") if max_errors is None else max_errors)
    a, b = _as_operand(a, "a"), _as_operand(b, "b")
    _check_inner(a.shape, b.shape)
    if isinstance(a, CodedArray) and isinstance(b, CodedArray):
        raise ValueError("only one operand of dask_coded.dot may be a CodedArray")
    for coded, side, axis in ((a, "left", 0), (b, "right", 1)):
        if isinstance(coded, CodedArray):
            if code is not None and code != coded.code:
                raise ValueError(f"{coded!r} is already encoded with {coded.code!r}, not {code!r}")
            if coded.axis != axis or coded.ndim != 2:
                raise ValueError(
                    f"a CodedArray used as the {side} operand must be 2-D and encoded along axis {axis}"
                )
            return _one_sided(coded, b if side == "left" else a, max_errors)
    name = code if isinstance(code, (str, Code)) else config.get("code")
    two_sided = name in _TWO_SIDED_NAMES or isinstance(name, (PolynomialCode, MatDotCode))
    if two_sided and np.result_type(a.dtype, b.dtype).kind in "biu":
        # Two-sided codes have no systematic blocks: every output would be solved in floating
        # point, which is not exact for integers. A systematic code returns each block exactly.
        warnings.warn(
            f"{name!r} cannot decode integer products exactly (it has no systematic blocks); "
            "using a systematic MDS code instead",
            DaskCodedWarning,
            stacklevel=2,
        )
        code, two_sided = "mds", False
    if two_sided:
        if a.ndim == 1:
            return _two_sided_vector(a, b, name, max_errors)
        resolved = _two_sided_code(name, a, b, max_errors)
        if isinstance(resolved, PolynomialCode):
            return _polynomial(a, b, resolved, max_errors)
        if isinstance(resolved, MatDotCode):
            return _matdot(a, b, resolved, max_errors)
    if a.ndim == 2:
        return _one_sided(_encode_for(a, code, 0, max_errors), b, max_errors)
    if b.ndim == 2:
        return _one_sided(_encode_for(b, code, 1, max_errors), a, max_errors)
    # vector . vector: a 1 x K row times a K vector, then the scalar.
    return dot(a[None, :], b, code, max_errors=max_errors)[0]


def _two_sided_vector(a: da.Array, b: da.Array, code: Any, max_errors: int) -> da.Array:
    """1-D ``a``: multiply as a 1 x K row and drop the row axis again."""
    return dot(a[None, :], b, code, max_errors=max_errors)[0]


def _encode_for(array: da.Array, code: Code | str | None, axis: int, max_errors: int) -> CodedArray:
    if isinstance(code, Code):
        return encode(array, code, axis)
    return encode(array, resolve_one_sided_code(code, len(array.chunks[axis]), max_errors), axis)


def matmul(a: Any, b: Any, code: Code | str | None = None, *, max_errors: int | None = None) -> da.Array:
    """Coded ``a @ b`` with ``np.matmul``'s rules, including stacks of matrices.

    For 1-D and 2-D operands this is :func:`dot`. Stacked operands
    (``(..., M, K) @ (..., K, N)``) broadcast their leading dimensions and are
    multiplied one matrix at a time, each product coded on its own.

    Examples
    --------
    >>> import numpy as np
    >>> import dask_coded
    >>> a, b = np.ones((2, 3, 4)), np.ones((4, 5))
    >>> dask_coded.matmul(a, b).shape
    (2, 3, 5)
    """
    a_arr = a if isinstance(a, CodedArray) else da.asarray(a)
    b_arr = b if isinstance(b, CodedArray) else da.asarray(b)
    if a_arr.ndim == 0 or b_arr.ndim == 0:
        raise ValueError("matmul: input operand does not have enough dimensions (scalars are not allowed)")
    if a_arr.ndim <= 2 and b_arr.ndim <= 2:
        return dot(a, b, code, max_errors=max_errors)
    if isinstance(a_arr, CodedArray) or isinstance(b_arr, CodedArray):
        raise ValueError("stacked matmul takes NumPy or Dask arrays, not CodedArrays")
    a_mat = a_arr if a_arr.ndim > 1 else a_arr[None, :]
    b_mat = b_arr if b_arr.ndim > 1 else b_arr[:, None]
    _check_inner(a_mat.shape[-2:], b_mat.shape[-2:])
    batch = np.broadcast_shapes(a_mat.shape[:-2], b_mat.shape[:-2])
    a_mat = da.broadcast_to(a_mat, batch + a_mat.shape[-2:])
    b_mat = da.broadcast_to(b_mat, batch + b_mat.shape[-2:])
    products = [dot(a_mat[index], b_mat[index], code, max_errors=max_errors) for index in np.ndindex(batch)]
    out = da.stack(products).reshape(batch + products[0].shape)
    if a_arr.ndim == 1:
        out = out[..., 0, :]
    if b_arr.ndim == 1:
        out = out[..., 0]
    return out


def matvec(A: Any, x: Any, code: Code | str | None = None, *, max_errors: int | None = None) -> da.Array:
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
    x_arr = x if isinstance(x, CodedArray) else np.asarray(x) if not isinstance(x, da.Array) else x
    if x_arr.ndim != 1:
        raise ValueError(f"matvec takes a 1-D vector x, got {x_arr.ndim}-D")
    return dot(A, x, code, max_errors=max_errors)
