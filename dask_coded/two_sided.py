"""What runs on a worker for a two-sided code: the operands' scaling, and their coded blocks.

Polynomial and MatDot codes mix every block of both operands into every
coded block. Before encoding, one task gathers the largest magnitude of
each line of each chunk along the inner axis (:func:`inner_max_abs`, a tiny
task per chunk) and decides, in :func:`polynomial_scaling` or
:func:`matdot_scaling`, how each block is scaled by a power of two, and
whether a decode can reach ``da.dot``'s answer at all: where it cannot
(NaN, inf or masks in the data, values a decode could not cancel
accurately, overflow, underflow), every member computes one term of the
product uncoded (:class:`~dask_coded.blocks.UncodedBlock`).
:func:`operand_block` builds each coded block accordingly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .blocks import ScaledBlock, UncodedBlock, block_equilibration
from .codes.arithmetic import combine, equilibrated_combine
from .codes.base import accuracy_target

__all__ = [
    "OperandScaling",
    "inner_max_abs",
    "matdot_scaling",
    "operand_block",
    "polynomial_scaling",
]


@dataclass(frozen=True, eq=False)
class OperandScaling:
    """Power-of-two exponents of the blocks of both operands of a two-sided code.

    ``left[j]`` scales data block ``j`` of A, ``right[l]`` block ``l`` of B
    (:func:`operand_block`), so blocks of very different size enter the coded
    blocks at similar sizes: without it, an output is decoded to the absolute
    accuracy of the largest block products, far from ``da.dot``'s.

    ``carried``: the coded blocks carry ``exponents`` (``left`` then
    ``right``) as :class:`ScaledBlock` s, and each output ``A_j @ B_l`` is
    scaled back by ``2**(left[j] + right[l])`` (polynomial codes), or is exact
    zeros where ``zeros`` says ``A_j`` or ``B_l`` is all zero. Otherwise the
    scaling cancels in every output (MatDot: ``right = -left``).

    ``uncoded``: a block holds NaN, inf or masks, which any coded block
    would spread into every product, or the blocks' magnitudes say a decode
    would miss ``da.dot``'s accuracy (:func:`_decodable`). Each coded block
    is then one data block itself, unscaled
    (:meth:`~dask_coded.codes.Code.uncoded_operands`), and each output the
    sum of its terms' products, as ``da.dot`` computes it.
    """

    left: np.ndarray
    right: np.ndarray
    carried: bool
    zeros: np.ndarray | None = None  # carried: which blocks (``left`` then ``right``) are all zero
    uncoded: bool = False

    @property
    def exponents(self) -> np.ndarray:
        return np.concatenate([self.left, self.right])


def inner_max_abs(block: Any, side: int, cuts: Sequence[int] | None = None) -> np.ndarray:
    """The largest magnitude of each line of ``block`` along a product's inner axis, in float64.

    Per column of a left operand's block (``side`` 0), per row of a right
    one's (``side`` 1; a vector's entries' magnitudes): the tiny task each
    chunk of a two-sided code's operand runs for :func:`polynomial_scaling`
    or :func:`matdot_scaling`. ``sum_k a[k] * b[k]`` bounds every entry of
    ``|A_j| |B_l|``. NaN for a masked block: a mask, like NaN, would be lost
    in any coded block, so either makes the code compute uncoded. With
    ``cuts`` (a block re-split from several chunks of ``da.dot``'s output,
    :func:`~dask_coded.blocks.chunk_cuts`), one row of maxima per segment
    between them, along the other axis.

    Examples
    --------
    >>> inner_max_abs(np.array([[1, -7], [3, 2]]), 0).tolist(), inner_max_abs(np.array([[1, -7]]), 1).tolist()
    ([3.0, 7.0], [7.0])
    >>> inner_max_abs(np.array([[1, -7], [3, 2]]), 0, cuts=(0, 1, 2)).tolist()  # rows 0 and 1 apart
    [[1.0, 7.0], [3.0, 2.0]]
    """
    if cuts is not None:
        axis = 0 if side == 0 else 1
        pieces = [np.take(block, range(start, stop), axis=axis) for start, stop in zip(cuts, cuts[1:])]
        return np.stack([inner_max_abs(piece, side) for piece in pieces])
    lines = block.shape[-1] if side == 0 or block.ndim == 1 else block.shape[0]
    if isinstance(block, np.ma.MaskedArray):
        return np.full(lines, np.nan)
    array = np.asarray(block)
    axis = 0 if side == 0 else 1
    if array.ndim == 1 or array.dtype.kind == "c" or array.shape[axis] == 0:
        magnitudes = np.abs(array)
        return magnitudes.astype(np.float64) if array.ndim == 1 else magnitudes.max(axis=axis, initial=0.0)
    # Largest and smallest per line, then in float64 (an integer's minimum has no absolute value).
    largest = np.maximum.reduce(array, axis=axis).astype(np.float64)
    return np.maximum(largest, -np.minimum.reduce(array, axis=axis).astype(np.float64))


def polynomial_scaling(
    left_blocks: int, right_blocks: int, *lines: np.ndarray, dtype: Any = None, condition: float = 1.0
) -> OperandScaling:
    """:class:`OperandScaling` bringing every block of both operands to magnitudes in ``[0.5, 1)``.

    ``lines`` are :func:`inner_max_abs` of every chunk of A's
    ``left_blocks`` blocks, block by block, then of B's ``right_blocks``
    blocks, in runs of equal length (the chunks along the inner axis); a
    block re-split from several of ``da.dot``'s output chunks has a row of
    maxima per segment. Each output is scaled back by its two blocks'
    exponents. Uncoded where :func:`_decodable` says the outputs ``A_j B_l``,
    segment by segment, cannot all be interpolated from the products as
    accurately as ``da.dot`` computes them (a code of worst ``condition``
    number ``condition``).

    Examples
    --------
    >>> a = [np.array([3e8]), np.array([1e8]), np.array([1e-8]), np.array([0.25])]  # A_0, A_1: 2 chunks each
    >>> scaling = polynomial_scaling(2, 1, *a, np.array([4.0]), np.array([2.0]))
    >>> scaling.left.tolist(), scaling.right.tolist(), scaling.uncoded
    ([29, -1], [3], False)
    >>> a = [np.array([1e300, 0.0]), np.array([1.0, 1.0])]  # A_0's large column meets a zero row of B
    >>> polynomial_scaling(1, 1, *a, np.array([0.0, 1.0]), np.array([1.0, 1.0])).uncoded
    True
    """
    split = len(lines) * left_blocks // (left_blocks + right_blocks)
    maxima = [float(line.max(initial=0.0)) for line in lines]
    left = block_equilibration(left_blocks, *maxima[:split], dtype=dtype)
    right = block_equilibration(right_blocks, *maxima[split:], dtype=dtype)
    zeros = np.concatenate([left.zeros, right.zeros])
    rows, row_blocks = _segment_maxima(lines[:split], left_blocks, -left.exponents)
    columns, column_blocks = _segment_maxima(lines[split:], right_blocks, -right.exponents)
    # |A_j B_l| <= bounds[s, t] entry by entry on segments s of A_j and t of B_l, both scaled.
    bounds = rows @ columns.T
    outputs = [
        (float(bounds[s, t]), int(left.exponents[row] + right.exponents[column]))
        for s, row in enumerate(row_blocks)
        for t, column in enumerate(column_blocks)
        if not zeros[row] and not zeros[left_blocks + column]  # exact zeros, decoded or not
    ]
    decodable = _decodable(bounds, outputs, condition, dtype)
    return OperandScaling(left.exponents, right.exponents, carried=True, zeros=zeros, uncoded=not decodable)


def matdot_scaling(
    blocks: int, left_chunks: int, *lines: np.ndarray, dtype: Any = None, condition: float = 1.0
) -> OperandScaling:
    """:class:`OperandScaling` balancing ``A_j`` against ``B_j``: ``A_j B_j`` keeps its value.

    ``lines`` are :func:`inner_max_abs` of the ``left_chunks`` chunks of
    each of A's ``blocks`` blocks, block by block, then of every chunk of
    B's blocks (runs of equal length). ``A_j`` is scaled by ``2**-e_j`` and
    ``B_j`` by ``2**e_j``, with ``e_j`` half the difference of their
    exponents, so both come to about ``sqrt(|A_j| |B_j|)``. A MatDot decode
    cancels every cross term ``A_j B_l``: uncoded where :func:`_decodable`
    says one is too large beside ``A @ B`` to be cancelled as accurately as
    ``da.dot`` computes it (a code of worst ``condition`` number ``condition``).

    Examples
    --------
    >>> lines = [np.array([1e8]), np.array([1e-8]), np.array([1e-8]), np.array([1e8])]  # A_0, A_1, B_0, B_1
    >>> scaling = matdot_scaling(2, 1, *lines)  # balanced, A_0 B_1 is no larger than A @ B
    >>> scaling.left.tolist(), scaling.right.tolist(), scaling.uncoded
    ([26, -27], [-26, 27], False)
    >>> lines = [np.array([1e20, 1.0]), np.array([1.0, 1.0]), np.array([0.0, 1.0]), np.array([1.0, 1.0])]
    >>> matdot_scaling(2, 1, *lines).uncoded  # A_0's large column meets B_0's zero row, and B_1's
    True
    """
    split = blocks * left_chunks
    maxima = [float(line.max(initial=0.0)) for line in lines]
    left = block_equilibration(blocks, *maxima[:split], dtype=dtype).exponents
    balance = (left - block_equilibration(blocks, *maxima[split:], dtype=dtype).exponents) // 2
    # rows[r, j] and columns[c, l]: inner block j of A's row chunk r, and l of B's column chunk c, scaled.
    right_chunks = (len(lines) - split) // blocks
    # Each chunk's lines a segment of their own (lines run block by block, chunk by chunk within).
    rows, _ = _segment_maxima(lines[:split], split, np.repeat(-balance, left_chunks))
    columns, _ = _segment_maxima(lines[split:], len(lines) - split, np.repeat(balance, right_chunks))
    rows = rows.reshape(blocks, left_chunks, -1).swapaxes(0, 1)
    columns = columns.reshape(blocks, right_chunks, -1).swapaxes(0, 1)
    # Each output chunk A_r B_c is decoded from its own products, cancelling its own cross terms:
    # |A_rj B_lc| <= bounds[r, c, j, l].
    bounds = np.einsum("rjk,clk->rcjl", rows, columns)
    decodable = all(
        _decodable(bounds[r, c], [(float(np.trace(bounds[r, c])), 0)], condition, dtype)
        for r in range(bounds.shape[0])
        for c in range(bounds.shape[1])
        # Every term zero (a zero or empty chunk): each product of this output is exactly zero, and so
        # is its decode.
        if bounds[r, c].any()
    )
    return OperandScaling(balance, -balance, carried=False, uncoded=not decodable)


def _segment_maxima(
    lines: Sequence[np.ndarray], blocks: int, exponents: np.ndarray
) -> tuple[np.ndarray, list[int]]:
    """One row per segment of each block: its chunks' ``lines`` joined, times ``2**exponents[j]``.

    Zero-padded; with the block each row belongs to. A block's chunks follow each other along the
    inner axis, and hold the same segments (one where the block was not re-split).
    """
    runs = len(lines) // blocks
    joined = [
        np.concatenate([np.atleast_2d(line) for line in lines[j * runs : (j + 1) * runs]], axis=-1)
        for j in range(blocks)
    ]
    out = np.zeros((sum(len(rows) for rows in joined), max((rows.shape[1] for rows in joined), default=0)))
    owners: list[int] = []
    with np.errstate(invalid="ignore", over="ignore"):  # NaN stays NaN; _decodable refuses it
        for j, rows in enumerate(joined):
            out[len(owners) : len(owners) + len(rows), : rows.shape[1]] = np.ldexp(rows, int(exponents[j]))
            owners.extend([j] * len(rows))
    return out, owners


def _decodable(
    bounds: np.ndarray, outputs: Sequence[tuple[float, int]], condition: float, dtype: Any
) -> bool:
    """Whether products mixing terms bounded by ``bounds`` decode each output as ``da.dot`` computes it.

    ``bounds[j, l]`` bounds the entries of ``|A_j| |B_l|`` as the coded
    blocks hold them (scaled); ``outputs`` are each output's bound there,
    and the exponent that scales it back. ``da.dot`` computes an output to
    about ``eps`` times its bound; a decode, to about ``eps * condition``
    times the largest term it cancels. So every output's bound must be
    within ``target / (eps * condition)`` of the largest (``target`` the
    accuracy dask-coded promises), the data finite, no product or output
    past the largest float (where ``da.dot``'s inf or NaN is its own), no
    output near the subnormal range (where ``da.dot`` loses digits of its
    own), and none so small beside its blocks that their scaled products
    lose digits to underflow.
    """
    real = np.finfo(np.dtype(dtype) if dtype is not None else np.float64)
    eps, target = float(real.eps), accuracy_target(real.dtype)
    if not np.isfinite(bounds).all():
        return False
    largest = float(bounds.max(initial=0.0))
    if not largest * bounds.size < float(real.max):
        return False
    for size, exponent in outputs:
        if not size >= float(real.tiny) / target or eps * condition * largest > target * size:
            return False
        # Past the largest float, or below the smallest normal one over the target, da.dot's own inf,
        # NaN or digits lost to underflow are the answer.
        if (
            not math.log2(float(real.tiny) / target)
            <= math.log2(size) + exponent
            < math.log2(float(real.max))
        ):
            return False
    return True


def operand_block(
    weights: np.ndarray,
    scaling: OperandScaling | None,
    side: int,
    *data_blocks: np.ndarray,
    dtype: Any = None,
    uncoded: int = 0,
) -> Any:
    """``sum_j weights[j] * 2**-e_j * data_blocks[j]``, ``e`` the ``side`` (0: A, 1: B) of ``scaling``.

    A coded block of one operand of a two-sided code, zero-padding uneven
    blocks; a :class:`ScaledBlock` where ``scaling.carried``. ``dtype``: at
    least this precision, the product's (a float32 operand multiplied by a
    float64 one is encoded in float64, or the product would keep only
    float32's accuracy). Where ``scaling.uncoded``, data block ``uncoded``
    itself (masks kept), as an :class:`UncodedBlock`.

    Examples
    --------
    >>> blocks = [np.full((1, 2), 4.0), np.full((1, 2), 0.5)]
    >>> lines = [inner_max_abs(b, 0) for b in blocks] + [np.ones(2)]
    >>> scaling = polynomial_scaling(2, 1, *lines)  # A_0 by 2**-3, A_1 by 2**0, B by 2**-1
    >>> operand_block(np.array([1.0, 1.0]), scaling, 0, *blocks).values.tolist()
    [[1.0, 1.0]]
    >>> uncoded = polynomial_scaling(2, 1, lines[0] * np.nan, *lines[1:])
    >>> operand_block(np.array([1.0, 1.0]), uncoded, 0, *blocks, uncoded=1).values.tolist()
    [[0.5, 0.5]]
    """
    working = None if dtype is None else np.result_type(dtype, *(b.dtype for b in data_blocks))
    if scaling is not None and scaling.uncoded:
        block = data_blocks[uncoded]
        return UncodedBlock(block.astype(working or block.dtype, copy=False))
    if any(isinstance(block, np.ma.MaskedArray) for block in data_blocks):
        raise TypeError(
            "a block of this two-sided code's operand is a masked array, but the code's scaling did not "
            "mark it uncoded: no coded block can carry a mask"
        )
    blocks = [np.asarray(b) for b in data_blocks]
    if scaling is None:
        return combine(np.asarray(weights)[None, :], blocks, working)[0]
    exponents = scaling.right if side else scaling.left
    values = equilibrated_combine(np.asarray(weights)[None, :], blocks, exponents, working, copies=False)[0]
    return ScaledBlock(values, scaling.exponents, zeros=scaling.zeros) if scaling.carried else values
