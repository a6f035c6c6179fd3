"""Block arithmetic every code shares: linear combinations of blocks, and exact equilibration.

Equilibration scales each block by a power of two that brings its largest
magnitude into ``[0.5, 1)`` before parities mix blocks, so a small block
decoded through a parity keeps its own relative accuracy beside a large
one; powers of two make the scaling, and undoing it, exact. The weights
absorb the powers where they can, so no block is copied.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "combine",
    "equilibrated_combine",
    "equilibration_exponents",
    "exponents_from_max_abs",
    "frobenius_norm",
    "line_norms",
    "max_abs",
    "scale_by_power_of_two",
    "scaled_rows",
]


def _working_dtype(dtype: np.dtype) -> np.dtype:
    """Integers are decoded in float64: parity blocks are not integers."""
    return np.result_type(dtype, np.float64) if dtype.kind in "biu" else dtype


def max_abs(block: Any) -> float:
    """The largest magnitude in ``block`` (0.0 when empty, NaN or inf when it is not finite).

    Examples
    --------
    >>> max_abs(np.array([[1, -7], [3, 2]]))
    7.0
    """
    array = np.asarray(block)
    if not array.size:
        return 0.0
    if array.dtype.kind in "biu":
        return float(max(abs(int(array.max())), abs(int(array.min()))))
    if array.dtype.kind == "c":
        return float(np.abs(array).max())
    # The ufuncs' own reductions: the array methods add Python frames, and a decode task takes one
    # of these per block.
    return float(max(-np.minimum.reduce(array, axis=None), np.maximum.reduce(array, axis=None)))


def frobenius_norm(block: Any) -> float:
    """The 2-norm of ``block``'s entries, without overflow or underflow (inf or NaN if not finite).

    Examples
    --------
    >>> frobenius_norm(np.array([[3.0, 0.0], [0.0, -4.0]]))
    5.0
    >>> frobenius_norm(np.full(4, 1e300))  # its squares overflow
    2e+300
    """
    flat = _for_norms(np.asarray(block).reshape(-1))
    # One BLAS dot is as fast as the product it bounds; only where the squares leave the normal range
    # (rare) is the block scaled by its largest magnitude first, a copy.
    squares = float(np.vdot(flat, flat).real)
    real = np.finfo(flat.dtype)
    if float(real.tiny) / float(real.eps) < squares < math.inf:
        return math.sqrt(squares)
    largest = max_abs(flat)
    if not largest or not math.isfinite(largest):
        return abs(largest)  # zero, inf or NaN
    scaled = flat / largest
    return largest * math.sqrt(float(np.vdot(scaled, scaled).real))


def line_norms(block: Any, axis: int) -> np.ndarray:
    """The 2-norm of each row (``axis=0``) or column (``axis=1``) of a 2-D ``block``, without overflow.

    Examples
    --------
    >>> line_norms(np.array([[3.0, 4.0], [0.0, 1e300]]), axis=0).tolist()
    [5.0, 1e+300]
    >>> line_norms(np.array([[3.0, 4.0], [0.0, 1e300]]), axis=1).tolist()
    [3.0, 1e+300]
    """
    array = np.asarray(block)
    if array.ndim != 2 or axis not in (0, 1):
        raise ValueError(f"line_norms needs a 2-D block and axis 0 or 1, got {array.ndim}-D and {axis}")
    array = _for_norms(array)
    parts = (array.real, array.imag) if array.dtype.kind == "c" else (array,)
    subscripts = "ij,ij->i" if axis == 0 else "ij,ij->j"
    with np.errstate(over="ignore", under="ignore"):
        squares = sum(np.einsum(subscripts, part, part) for part in parts)
    real = np.finfo(array.dtype)
    norms = np.sqrt(squares)
    # Lines whose squares left the normal range (zero, underflowed, overflowed or not finite; rare):
    # again, each scaled by its largest magnitude first.
    redo = np.flatnonzero(~((squares > float(real.tiny) / float(real.eps)) & (squares < math.inf)))
    if redo.size:
        lines = np.abs(np.take(array, redo, axis=axis))
        largest = lines.max(axis=1 - axis, initial=0.0)
        safe = np.where((largest > 0) & np.isfinite(largest), largest, 1.0)
        scaled = lines / safe.reshape((-1, 1) if axis == 0 else (1, -1))
        rescued = safe * np.sqrt(np.einsum(subscripts, scaled, scaled))
        norms[redo] = np.where(np.isfinite(largest), rescued, largest)
    return norms


def _for_norms(array: np.ndarray) -> np.ndarray:
    """``array`` in a floating dtype of at least single precision, whose squares can be summed."""
    if array.dtype.kind in "fc" and array.dtype.itemsize >= 4 * (1 + (array.dtype.kind == "c")):
        return array
    return array.astype(np.result_type(array.dtype, np.float32))


def exponents_from_max_abs(magnitudes: Iterable[float], dtype: Any = None) -> np.ndarray:
    """Exponents ``e`` with ``magnitude * 2**-e`` in ``[0.5, 1)``; 0 for non-finite magnitudes.

    A zero block gets the smallest exponent of the others: decoded through
    parities it comes back as round-off at the scale of the smallest block,
    not of 1, and a wrong value in it stands out as much as in that block.
    With a floating ``dtype``, no exponent goes below that of its smallest
    normal number: a block of subnormals has fewer digits than the dtype,
    and scaled up further, the rounding of its products would be scaled up
    into the other blocks decoded through the same parities.

    Examples
    --------
    >>> exponents_from_max_abs([1e12, 1e-3, 0.0, float("nan"), 1.0]).tolist()
    [40, -9, -9, 0, 1]
    >>> exponents_from_max_abs([1e-315, 1.0], np.float64).tolist()
    [-1021, 1]
    """
    lowest = None
    if dtype is not None and np.dtype(dtype).kind in "fc":
        lowest = int(np.finfo(np.dtype(dtype)).minexp) + 1
    exponents: list[int | None] = []
    for magnitude in magnitudes:
        if math.isfinite(magnitude) and magnitude > 0:
            exponent = math.frexp(magnitude)[1]
            exponents.append(exponent if lowest is None else max(exponent, lowest))
        else:
            exponents.append(None if magnitude == 0 else 0)  # NaN and inf: 0
    smallest = min((e for e in exponents if e is not None), default=0)
    return np.array([smallest if e is None else e for e in exponents], dtype=np.int64)


def equilibration_exponents(blocks: Sequence[Any]) -> np.ndarray:
    """Per-block power-of-two exponents that bring each block's largest magnitude into ``[0.5, 1)``.

    Pass them to ``encode(..., exponents=e)`` and ``decode(..., exponents=e)``:
    parities then mix ``2**-e_j * block_j``, blocks of similar size, so a
    block decoded through a parity keeps its own relative accuracy however
    different the blocks' scales are. Powers of two make the scaling exact.
    See :func:`exponents_from_max_abs` for zero, non-finite and subnormal blocks.

    Examples
    --------
    >>> equilibration_exponents([np.full(2, 3e12), np.full(2, -1e-3)]).tolist()
    [42, -9]
    """
    dtype = _working_dtype(np.result_type(*blocks)) if len(blocks) else None
    return exponents_from_max_abs((max_abs(b) for b in blocks), dtype)


def scale_by_power_of_two(array: Any, exponent: int | np.ndarray) -> np.ndarray:
    """``array * 2**exponent``, exactly (barring overflow and underflow); integers become float64.

    ``exponent`` may be an integer array that broadcasts against ``array``
    (one exponent per row, say).

    Examples
    --------
    >>> scale_by_power_of_two(np.array([3.0, -1.5]), -1)
    array([ 1.5 , -0.75])
    >>> scale_by_power_of_two(np.array([1 + 2j]), 2)
    array([4.+8.j])
    >>> scale_by_power_of_two(np.ones((2, 2)), np.array([[1], [-1]]))
    array([[2. , 2. ],
           [0.5, 0.5]])
    """
    array = np.asarray(array)
    if array.dtype.kind not in "fc":
        array = array.astype(_working_dtype(array.dtype))
    if np.ndim(exponent):
        exponent = np.asarray(exponent, dtype=np.int32)
        if not exponent.any():
            return array
        if array.dtype.kind == "c":
            out = np.empty(np.broadcast_shapes(array.shape, exponent.shape), dtype=array.dtype)
            out.real, out.imag = np.ldexp(array.real, exponent), np.ldexp(array.imag, exponent)
            return out
        return np.ldexp(array, exponent)
    if not exponent:
        return array
    if array.dtype.kind == "c":
        real = np.ascontiguousarray(array).view(array.real.dtype)
        return np.ldexp(real, int(exponent)).view(array.dtype)
    return np.ldexp(array, int(exponent))


def _all_finite(array: np.ndarray) -> bool:
    return array.dtype.kind in "biu" or bool(np.isfinite(array).all())


def _selected_block(row: np.ndarray) -> int | None:
    """The block a weight row copies unchanged (a single weight of exactly 1), or None."""
    nonzero = np.flatnonzero(row)
    return int(nonzero[0]) if len(nonzero) == 1 and row[nonzero[0]] == 1 else None


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-pad ``array`` at the end of each axis up to ``shape``."""
    if array.shape == shape:
        return array
    if array.ndim != len(shape) or any(a > s for a, s in zip(array.shape, shape)):
        raise ValueError(f"block of shape {array.shape} does not fit in {shape}")
    out = np.zeros(shape, dtype=array.dtype)
    out[tuple(slice(0, a) for a in array.shape)] = array
    return out


def _common_shape(arrays: Iterable[np.ndarray], what: str) -> tuple[int, ...]:
    """The elementwise largest shape: uneven splits are zero-padded to it."""
    shapes = [a.shape for a in arrays]
    if len({len(s) for s in shapes}) > 1:
        raise ValueError(f"{what} have different numbers of dimensions: {sorted(set(shapes))}")
    return tuple(max(dims) for dims in zip(*shapes))


def combine(
    weights: np.ndarray, blocks: Sequence[np.ndarray], dtype: np.dtype | None = None
) -> list[np.ndarray]:
    """``out[r] = sum_s weights[r, s] * blocks[s]``, without stacking the blocks.

    Rows of ``weights`` that select one block with weight 1 return that block
    itself, whatever its dtype: a systematic decode from data blocks costs
    nothing and loses nothing (an int64 block never goes through float64).
    """
    if dtype is None:
        dtype = _working_dtype(np.result_type(*blocks))
    return _combine_rows(weights, [_selected_block(row) for row in weights], blocks, dtype)


def _combine_rows(
    weights: np.ndarray, selected: Sequence[int | None], blocks: Sequence[np.ndarray], dtype: np.dtype
) -> list[np.ndarray]:
    """:func:`combine`, told which rows select a block (``selected``, None for a weighted sum)."""
    shape = _common_shape(blocks, "blocks")
    return [
        blocks[block] if block is not None else _weighted_sum(row, blocks, shape, dtype)
        for row, block in zip(weights, selected)
    ]


def _weighted_sum(
    row: np.ndarray, blocks: Sequence[np.ndarray], shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    """``sum_s row[s] * blocks[s]``, accumulated in place with one scratch block.

    NumPy's own loops, not BLAS axpy: a multithreaded BLAS spins up its
    threads for every small block, which on a busy machine made each axpy
    hundreds of times slower than this. Nor a stacked copy of the blocks,
    which allocates as much again as the blocks: Dask's workers return freed
    memory to the system early (``MALLOC_TRIM_THRESHOLD_``), so a worker's
    fresh pages are page faults.
    """
    weights = row.tolist()  # Python numbers: a row is a handful, and every NumPy call has a set-up cost
    nonzero = [s for s, weight in enumerate(weights) if weight]
    if not nonzero:
        return np.zeros(shape, dtype=dtype)
    first, rest = nonzero[0], nonzero[1:]
    acc = np.multiply(_pad_to(blocks[first], shape), row[first], dtype=dtype, casting="unsafe")
    scratch = np.empty_like(acc) if rest else acc
    for s in rest:
        np.multiply(_pad_to(blocks[s], shape), row[s], out=scratch, casting="unsafe")
        acc += scratch
    return acc


def equilibrated_combine(
    matrix: np.ndarray,
    blocks: Sequence[np.ndarray],
    exponents: np.ndarray,
    dtype: np.dtype | None = None,
    copies: bool = True,
) -> list[np.ndarray]:
    """:func:`combine` of the rows of ``matrix`` that mix blocks with ``2**-exponents[j] * blocks[j]``.

    The powers of two go into the weights (no copy of a block) unless ``2**-e``
    would push a weight out of ``dtype``'s range (a block of subnormals, or
    one near the largest number): that block is scaled itself, exactly. Rows
    that copy a block return it unchanged, unless ``copies=False`` (a
    two-sided code, none of whose coded blocks is a data block): then every
    row is scaled.
    """
    if dtype is None:
        dtype = _working_dtype(np.result_type(*blocks))
    lowest = _range_of(np.dtype(dtype))[3]
    far = [j for j, e in enumerate(exponents.tolist()) if not lowest <= e <= -lowest]
    if not far:
        return combine(scaled_rows(matrix, exponents, copies), blocks, dtype)
    folded = np.array(exponents)
    folded[far] = 0
    scaled = [scale_by_power_of_two(b, -int(exponents[j])) if j in far else b for j, b in enumerate(blocks)]
    mixed = combine(scaled_rows(matrix, folded, copies), scaled, dtype)
    if not copies:
        return mixed
    return [
        m if (copied := _selected_block(row)) is None else blocks[copied] for row, m in zip(matrix, mixed)
    ]


def scaled_rows(matrix: np.ndarray, exponents: np.ndarray, copies: bool = True) -> np.ndarray:
    """``matrix`` with every row that mixes blocks multiplied by ``2**-exponents`` column-wise.

    Rows that copy one block (data rows, replicas) are left alone: those
    coded blocks are the data blocks themselves (unless ``copies=False``).
    """
    out = np.array(matrix, dtype=np.float64)
    for r, row in enumerate(matrix):
        if not copies or _selected_block(row) is None:
            out[r] = np.ldexp(row, -exponents.astype(np.int32))
    return out


#: Equilibration exponents within this many of a dtype's lowest (and highest) exponent are folded
#: into the weights: ``2**(1022 - 16)`` times any weight under ``2**16`` stays finite and normal.
_EXPONENT_MARGIN = 16


@functools.cache
def _range_of(dtype: np.dtype) -> tuple[float, float, int, int]:
    """``dtype``'s smallest normal and largest number, exponent span and lowest equilibration exponent.

    The last keeps ``2**-e`` times a parity weight finite (see :data:`_EXPONENT_MARGIN`).
    """
    info = np.finfo(dtype)
    span = int(info.maxexp - info.minexp)
    return float(info.tiny), float(info.max), span, int(info.minexp) + 1 + _EXPONENT_MARGIN


def _mixed_sizes(weights: np.ndarray, sizes: Sequence[float]) -> list[float]:
    """Per row of ``weights``: ``sum_s |weights[s]| * sizes[s]``, the most its weighted sum can reach.

    In Python floats: a product past the largest float is inf, not an error or a warning.
    """
    return [sum(abs(w) * size for w, size in zip(row, sizes)) for row in weights.tolist()]
