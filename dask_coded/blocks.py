"""What runs on a worker: encode a parity block, multiply coded blocks, decode one output block.

These functions are the tasks of a coded graph. The scheduler plugin
recognises a group by its decode task (a :class:`CodedTask` calling
:func:`decode_block`); when it drops late members it replaces their
arguments with :data:`MISSING`, which :func:`decode_block` skips.

Two facts travel with the values, so the decoder can be exact and safe:

- MDS parity blocks of a :class:`~dask_coded.CodedArray` are equilibrated
  (each data block scaled by a power of two before mixing; a re-split data
  block, segment by segment of the chunks it holds). They are
  :class:`ScaledBlock` s carrying those exponents; the products of parity
  blocks carry them on to the decode task.
- A product that is not all finite is returned as a
  :class:`NonFiniteProduct` (an ``ndarray`` subclass). The scheduler records
  a result's type name in ``TaskState.type`` when it reaches memory, before
  the plugin plans a decode, so the plugin knows which members hold NaN/inf
  without another message (:data:`UNMIXABLE_TYPENAMES`).
- A block that turns out masked when computed (behind a plain ``ndarray``
  meta, which ``dask_coded.dot`` could not see coming) is multiplied as
  ``da.dot`` multiplies it (``np.ma.dot``; masked entries count as 0), and
  its product stays a ``MaskedArray``: the answer for its own output only,
  since no combination of products carries masks. A parity mixed from
  masked blocks is all NaN, so its products are :class:`NonFiniteProduct` s
  and every output of the group waits for its own product.
- Under ``max_errors``, a finite product is a :class:`CheckedProduct`: it
  carries a bound on its own round-off, which only the worker holding the
  operands can compute, so the error check can tell round-off from a wrong
  result even where the product cancels.
- A two-sided code whose operands hold NaN, inf or masks, or values no
  decode could cancel to ``da.dot``'s accuracy, is not coded at all
  (:attr:`~dask_coded.two_sided.OperandScaling.uncoded`): its products are
  :class:`UncodedBlock` s, each one term of an output, so the plugin
  waits for each term rather than for a recovery set
  (:data:`UNCODED_TYPENAME`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dask.sizeof import sizeof
from dask.utils import typename

from ._compat import Task, running_task, worker_task_state
from .codes import Code, DecodingPlan
from .codes.arithmetic import (
    _working_dtype,
    equilibrated_combine,
    exponents_from_max_abs,
    frobenius_norm,
    line_norms,
    max_abs,
    scale_by_power_of_two,
)
from .codes.base import target_unknowns
from .errors import DecodingError

__all__ = [
    "MISSING",
    "UNCODED_TYPENAME",
    "UNMIXABLE_TYPENAMES",
    "CheckedProduct",
    "CodedTask",
    "DecodeSpec",
    "Equilibration",
    "NonFiniteProduct",
    "NonFiniteScaledBlock",
    "ScaledBlock",
    "UncodedBlock",
    "aligned_block",
    "block_equilibration",
    "block_max_abs",
    "checked_product_block",
    "chunk_cuts",
    "decode_block",
    "product_block",
    "replica_block",
    "scaled_parity_block",
    "segment_bounds",
    "segment_equilibration",
    "segment_max_abs",
    "segment_parity_block",
    "suspects_of",
    "task_cancelled",
    "transpose_block",
]

#: Stands in for a group member the scheduler plugin dropped.
MISSING = None


class CodedTask(Task):
    """A task of a coded graph; never fused, so groups stay visible to the scheduler.

    Dask's linear fusion would merge a decode task into an elementwise task
    after it (``dot(A, x) + 1``) and hide it from the plugin, and could merge
    a product into its encode task.
    """

    __slots__ = ()

    @property
    def block_fusion(self) -> bool:
        return True


@dataclass(frozen=True)
class DecodeSpec:
    """What a decode task needs besides the products: one per output block.

    Attributes
    ----------
    code
        The code of the group.
    output
        Which of the code's targets this task returns.
    shape
        The output block's true shape (products may be zero-padded).
    dtype
        The output dtype (NumPy's result type of the operands).
    max_errors
        Wrong products to locate and skip.
    recovery_set
        Set by the scheduler plugin when it decodes early: the blocks to
        decode from (only those with nonzero weight are passed).
    suspects
        Set by the scheduler plugin for ``max_errors``: the worker that
        computes each member (None where unknown), so one faulty worker's
        members count as one error.
    first_position
        Member ``i`` is coded block ``first_position + i`` in the plugin's
        round robin of workers (:func:`~dask_coded.policy.spread_position`):
        the group's first data block in a grouped code, 0 otherwise.
    plan
        Set by the scheduler plugin with ``recovery_set`` when the decode
        combines blocks: its weights, solved for on the scheduler (once per
        code and recovery set), so a decode task has only the arithmetic
        left, and less work to be delayed by.
    window
        ``(axis, start, stop)``: this decode returns only that slice of the
        output block along ``axis`` (a part of a fused decode).
    parts
        A fused decode: the output block is these parts (each a window of
        one output of ``code``), joined along their window's axis, decoded
        in one task from the group's products. A re-split
        :class:`~dask_coded.CodedArray`'s products come back in the chunks
        of the array it encoded this way, without a task stage of their
        own: every stage is one more wait for stragglers. The plugin plans
        each part; ``output`` is the first part's.
    scaled_by
        Two-sided codes whose operands were equilibrated (:class:`~dask_coded.two_sided.OperandScaling`):
        the positions, in the products' exponents, of the two blocks whose
        product this output is; the decode scales it back by ``2**`` their sum.
    """

    code: Code
    output: int
    shape: tuple[int, ...]
    dtype: np.dtype
    max_errors: int = 0
    recovery_set: tuple[int, ...] | None = None
    suspects: tuple[str | None, ...] | None = None
    first_position: int = 0
    plan: DecodingPlan | None = field(default=None, compare=False)  # follows from the rest; holds an array
    window: tuple[int, int, int] | None = None
    parts: tuple[DecodeSpec, ...] = ()
    scaled_by: tuple[int, int] | None = None

    def planned(self, plans: Sequence[Any]) -> DecodeSpec:
        """The decode with each part's recovery set and weights set, as the plugin plans it.

        ``plans`` holds one :class:`~dask_coded.policy.DecodePlan` per part
        (a decode without parts is its own one part).
        """
        parts = tuple(
            dataclasses.replace(part, recovery_set=plan.recovery_set, plan=plan.weights)
            for part, plan in zip(self.parts or (self,), plans, strict=True)
        )
        return dataclasses.replace(self, parts=parts) if self.parts else parts[0]


def suspects_of(spec: DecodeSpec) -> dict[int, str] | None:
    """Member index -> the worker that computes it, where the plugin knows it."""
    if spec.suspects is None:
        return None
    return {i: worker for i, worker in enumerate(spec.suspects) if worker is not None}


@dataclass(frozen=True, eq=False)
class ScaledBlock:
    """A block computed from equilibrated data: ``values`` mixes ``2**-exponents[j] * block_j``.

    An MDS parity block of a :class:`~dask_coded.CodedArray`, or the product
    of one; :func:`decode_block` reads the exponents from whichever parity
    product it receives and undoes the scaling exactly.

    With ``bounds`` (a parity of re-split data blocks), ``exponents`` has a
    column per segment: rows ``bounds[p]:bounds[p + 1]`` along ``axis`` of
    ``values`` mix ``2**-exponents[j, p] * block_j``. ``zeros``, shaped like
    ``exponents``, says which data blocks (segments) are all zero: their
    products are exactly zero, as ``da.dot`` gives them, where a decode
    through parities would leave round-off.
    """

    values: np.ndarray
    exponents: np.ndarray
    bounds: tuple[int, ...] | None = None
    axis: int = 0
    zeros: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype


@sizeof.register(ScaledBlock)
def _sizeof_scaled(block: ScaledBlock) -> int:
    zeros = 0 if block.zeros is None else int(block.zeros.nbytes)
    return int(sizeof(block.values)) + int(block.exponents.nbytes) + zeros


class NonFiniteProduct(np.ndarray):
    """A block product holding NaN or inf, marked by its type.

    Only the output the product computes directly (its own data block, a
    replica) may use it; every other decode treats it as an erasure.
    """


@dataclass(frozen=True, eq=False)
class NonFiniteScaledBlock(ScaledBlock):
    """A :class:`NonFiniteProduct` of a parity: marked by its type, and still carrying its exponents.

    A decode of a window of it that holds no NaN may mix those rows in, scaled back exactly.
    """


#: ``TaskState.type`` of the products the scheduler must not mix into other outputs: those holding
#: NaN/inf, and masked ones (a combination of products cannot carry masks).
UNMIXABLE_TYPENAMES = frozenset(
    {typename(NonFiniteProduct), typename(NonFiniteScaledBlock), typename(np.ma.MaskedArray)}
)


@dataclass(frozen=True, eq=False)
class CheckedProduct:
    """A finite block product under ``max_errors``, with a bound on its round-off.

    ``roundoff`` is ``eps * sum_k ||left[:, k]|| ||right[k, :]||`` over the
    inner index (a bound on ``eps * || |left| |right| ||``, in the product's
    own scaling), plus what underflow may lose. A product whose entries
    cancel (rows of +1e8 and -1e8 summing to about 10) has round-off of the
    size of its operands, not of its result, and only the worker holding the
    operands can tell; without this bound the check would call such a
    product wrong.

    ``bounds`` holds the same bound per run of the coded axis (``axis``) from
    one chunk (between ``cuts``; one run without them) and per line of the
    other axis (``line_axis``: each column of ``A @ X``, each row of
    ``X @ C``; one line for a vector). The decode scales each run by its
    chunk's exponent, and checks lines of very different scale apart, so a
    chunk of 1e-3 beside one of 1e12, or a column of X 1e-8 the size of
    another, is checked at its own scale.
    """

    product: Any  # an ndarray or a ScaledBlock
    roundoff: float
    bounds: np.ndarray | None = None
    cuts: tuple[int, ...] | None = None
    axis: int = 0
    line_axis: int | None = None


@sizeof.register(CheckedProduct)
def _sizeof_checked(block: CheckedProduct) -> int:
    return int(sizeof(block.product)) + 8


def _values(block: Any) -> np.ndarray:
    return block.values if isinstance(block, (ScaledBlock, UncodedBlock)) else np.asarray(block)


def _masked(block: Any) -> bool:
    return isinstance(block, np.ma.MaskedArray)


def _kept_masked(block: Any) -> Any:
    """:func:`_values`, keeping a ``MaskedArray``'s masks."""
    return block if _masked(block) else _values(block)


def _concatenate(pieces: Sequence[Any], axis: int = 0) -> np.ndarray:
    """``np.concatenate``, keeping masks where a piece is a ``MaskedArray`` (``np.ma.concatenate``)."""
    if any(_masked(piece) for piece in pieces):
        return np.ma.concatenate(pieces, axis=axis)
    return np.concatenate(pieces, axis=axis)


def _without_masks(parity: Any, data_blocks: Sequence[Any]) -> Any:
    """``parity`` (mixed from ``data_blocks``), all NaN if any of them is masked.

    Its mixed values would count masked entries that ``da.dot`` counts as 0, and no decode through
    it could give an output its mask: NaN makes every product of it an erasure.
    """
    if any(_masked(block) for block in data_blocks):
        _values(parity)[...] = np.nan
    return parity


def aligned_block(block: Any) -> Any:
    """``block``, copied only where its memory is not aligned for its dtype.

    distributed reads a message's first array into the same buffer as the
    message's header (``_add_frames_header`` in ``distributed/comm/tcp.py``),
    so a block that travelled between workers may start at any byte, and
    NumPy multiplies such a block without BLAS, several times slower. A data
    block of a persisted :class:`~dask_coded.CodedArray` is moved to its
    worker once and multiplied on every call: it is aligned once, here (a
    block moved again later, off a retiring worker, is not).

    Examples
    --------
    >>> buffer = np.zeros(8 * 6 + 1, dtype=np.uint8)
    >>> block = np.ndarray((2, 3), dtype=np.float64, buffer=buffer, offset=1)
    >>> block.flags.aligned, aligned_block(block).flags.aligned
    (False, True)
    """
    if not isinstance(block, np.ndarray) or block.flags.aligned or _masked(block):
        return block
    return np.require(block, requirements="A")


def replica_block(block: Any) -> Any:
    """A replication's copy of a data block: the block itself, aligned (:func:`aligned_block`).

    Not ``np.copy``, which returns a masked block's data without its mask (a
    silent wrong answer wherever a copy stood in for a late original). A task
    of its own, so the copy can live on another worker; the plugin tells it
    from a data block by this function.

    Examples
    --------
    >>> block = np.ma.masked_greater(np.arange(4.0), 2.0)
    >>> replica_block(block).mask.tolist()
    [False, False, False, True]
    """
    return aligned_block(block)


@dataclass(frozen=True, eq=False)
class UncodedBlock:
    """A data block standing for a coded block of a two-sided code, or the product of two of them.

    See :attr:`~dask_coded.two_sided.OperandScaling.uncoded`. A wrapper, not an ``ndarray``
    subclass: distributed sends a subclass as a plain ``ndarray``, and a
    decode that took uncoded products for coded ones would interpolate
    them into a wrong answer.
    """

    values: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)


@sizeof.register(UncodedBlock)
def _sizeof_uncoded(block: UncodedBlock) -> int:
    return int(sizeof(block.values))


#: ``TaskState.type`` of a product of uncoded blocks, one term of an output: the plugin plans by terms.
UNCODED_TYPENAME = typename(UncodedBlock)


@dataclass(frozen=True, eq=False)
class Equilibration:
    """How a group's parities scale its data blocks: an exponent per block (per segment), and which are zero.

    ``zeros[j]`` says data block ``j`` is all zero in every chunk along the
    other axis: its product is then exactly zero, whatever a decode through
    parities computes (see :class:`ScaledBlock`).
    """

    exponents: np.ndarray
    zeros: np.ndarray

    @classmethod
    def from_max_abs(cls, per_block: np.ndarray, dtype: Any) -> Equilibration:
        """From the largest magnitude of each data block (segment), an array of any shape."""
        exponents = exponents_from_max_abs(per_block.ravel().tolist(), dtype).reshape(per_block.shape)
        return cls(exponents, per_block == 0)

    def of_blocks(self, blocks: Sequence[int]) -> Equilibration:
        """The exponents and zeros of data ``blocks`` only."""
        return Equilibration(self.exponents[list(blocks)], self.zeros[list(blocks)])


def block_max_abs(block: Any) -> float:
    """The largest magnitude of one data chunk (a tiny task feeding :func:`block_equilibration`)."""
    return max_abs(block)


def block_equilibration(k: int, *magnitudes: float, dtype: Any = None) -> Equilibration:
    """:class:`Equilibration` of ``k`` data blocks from the largest magnitude of each of their chunks.

    ``magnitudes`` are ``k`` runs of equal length: the chunks of data block 0,
    then those of block 1, ... A data block's exponent must be the same in
    every chunk along the other axis, or the products would not be linear in
    the blocks. ``dtype`` is the data's (subnormal blocks: see
    :func:`~dask_coded.codes.arithmetic.exponents_from_max_abs`).

    Examples
    --------
    >>> found = block_equilibration(2, 3.0, 0.5, 0.0, 0.0)  # block 1's two chunks are zero
    >>> found.exponents.tolist(), found.zeros.tolist()
    ([2, 2], [False, True])
    """
    found = segment_equilibration(k, *([m] for m in magnitudes), dtype=dtype)
    return Equilibration(found.exponents[:, 0], found.zeros[:, 0])  # one segment


def _promoted(data_blocks: Sequence[Any], dtype: Any = None) -> list[np.ndarray]:
    """``data_blocks`` as arrays of at least ``dtype``'s precision (masks dropped: parities carry none).

    A chunk may be narrower than the array says it is (a float32 chunk from
    ``map_blocks`` or ``from_delayed`` declared float64): ``da.dot`` then
    computes its product in float64 all the same, so its parities must be too,
    or a product solved through them keeps float32's accuracy.

    Examples
    --------
    >>> [b.dtype.name for b in _promoted([np.ones(2, np.float32), np.ones(2, np.float32)], np.float64)]
    ['float64', 'float64']
    """
    blocks = [np.asarray(b) for b in data_blocks]
    if dtype is None:
        return blocks
    working = np.result_type(dtype, *blocks)
    return [b.astype(working, copy=False) for b in blocks]


def scaled_parity_block(
    weights: np.ndarray, equilibration: Equilibration | None, *data_blocks: Any, dtype: Any = None
) -> ScaledBlock:
    """``sum_j weights[j] * 2**-exponents[j] * data_blocks[j]``, with the :class:`Equilibration` attached.

    ``equilibration=None`` computes it from ``data_blocks`` (when they are
    whole data blocks, not chunks of them). ``dtype``: at least this
    precision, the array's (:func:`_promoted`).
    """
    blocks = _promoted(data_blocks, dtype)
    if equilibration is None:
        magnitudes = np.array([max_abs(b) for b in blocks], dtype=np.float64)
        equilibration = Equilibration.from_max_abs(magnitudes, np.result_type(*blocks))
    scales = equilibration.exponents
    values = equilibrated_combine(np.asarray(weights)[None, :], blocks, scales)[0]
    return _without_masks(ScaledBlock(values, scales, zeros=equilibration.zeros), data_blocks)


def chunk_cuts(chunks: Sequence[int], source_chunks: Sequence[int], block: int) -> tuple[int, ...]:
    """Where data block ``block``'s rows change chunk of the array they were cut from, in its own rows.

    Examples
    --------
    >>> chunk_cuts((3, 3), (2, 2, 2), 1)  # block 1 holds rows 3:4 of chunk 1 and 4:6 of chunk 2
    (0, 1, 3)
    """
    starts = np.cumsum((0, *chunks)).tolist()
    edges = np.cumsum(source_chunks).tolist()[:-1]
    inside = [edge - starts[block] for edge in edges if starts[block] < edge < starts[block + 1]]
    return (0, *inside, chunks[block])


def segment_bounds(
    chunks: Sequence[int], source_chunks: Sequence[int], members: Sequence[int]
) -> tuple[int, ...] | None:
    """Where the rows of a group's data blocks change chunk of the array they were cut from.

    ``chunks`` are the data blocks along the coded axis, re-split from an
    array of ``source_chunks``; ``members`` are the group's data blocks. A
    parity mixes row ``r`` of every member, so it is equilibrated segment by
    segment between these bounds (in the blocks' own coordinates, every
    member's :func:`chunk_cuts` together): a chunk 1e15 times smaller than
    its neighbour in one data block keeps its own accuracy through the
    parities. None when no member holds rows of two chunks (or any row).

    Examples
    --------
    >>> segment_bounds((3, 3), (2, 2, 2), (0, 1))  # block 0 holds rows 0:2, 2:3; block 1 3:4, 4:6
    (0, 1, 2, 3)
    >>> segment_bounds((2, 2, 2), (2, 2, 2), (0, 1, 2)) is None
    True
    >>> segment_bounds((1, 0, 0), (1, 0, 0), (1, 2)) is None  # a group of empty blocks
    True
    """
    cuts = {0, max(chunks[j] for j in members)}
    for j in members:
        cuts.update(chunk_cuts(chunks, source_chunks, j)[1:-1])
    return None if len(cuts) <= 2 else tuple(sorted(cuts))


def segment_max_abs(
    axis: int, bounds: Sequence[int], block: Any, cuts: Sequence[int] | None = None
) -> np.ndarray:
    """The largest magnitude of each segment of one data block (rows past its end count 0).

    With the block's own ``cuts`` (:func:`chunk_cuts`), the segments of one
    chunk all take that chunk's largest magnitude: a segment another
    member's chunk boundary cut short (a row or two) would otherwise get an
    exponent of its own, and every decode would scale its window row by row.

    Examples
    --------
    >>> block = np.array([4.0, 1.0, 1.0, 9.0])
    >>> segment_max_abs(0, (0, 1, 3, 4), block).tolist()
    [4.0, 1.0, 9.0]
    >>> segment_max_abs(0, (0, 1, 3, 4), block, cuts=(0, 3, 4)).tolist()  # rows 0:3 are one chunk
    [4.0, 4.0, 9.0]
    """
    block = np.asarray(block)
    segments = list(zip(bounds, bounds[1:]))
    maxima = np.array([max_abs(_rows(block, axis, start, stop)) for start, stop in segments])
    for start, stop in zip(cuts or (), (cuts or ())[1:]):
        inside = [p for p, (first, _) in enumerate(segments) if start <= first < stop]
        if inside:
            maxima[inside] = np.max(maxima[inside])  # NaN stays NaN
    return maxima


def _rows(block: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    """Rows (``axis`` 0) or columns ``start:stop`` of ``block``, a view (short or empty past its end)."""
    return block[(slice(None),) * axis + (slice(start, stop),)]


def segment_equilibration(k: int, *magnitudes: Iterable[float], dtype: Any = None) -> Equilibration:
    """:class:`Equilibration` of ``(k, segments)`` from :func:`segment_max_abs` of every chunk.

    ``magnitudes`` are ``k`` runs of equal length, and ``dtype`` the data's, as for
    :func:`block_equilibration`.
    """
    per_chunk = np.asarray(magnitudes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        per_block = per_chunk.reshape(k, -1, per_chunk.shape[-1]).max(axis=1)
    return Equilibration.from_max_abs(per_block, dtype)


def segment_parity_block(
    weights: np.ndarray,
    equilibration: Equilibration | None,
    segments: tuple[int, tuple[int, ...], tuple[tuple[int, ...], ...] | None],
    *data_blocks: Any,
    dtype: Any = None,
) -> ScaledBlock:
    """:func:`scaled_parity_block`, by segment ``(axis, bounds, cuts)`` (see :func:`segment_bounds`).

    ``equilibration=None`` computes it from ``data_blocks`` (when they are
    whole data blocks), by chunk where each block's ``cuts`` are given
    (:func:`segment_max_abs`).
    """
    axis, bounds, cuts = segments
    blocks = _promoted(data_blocks, dtype)
    if equilibration is None:
        magnitudes = [
            segment_max_abs(axis, bounds, b, None if cuts is None else cuts[j]) for j, b in enumerate(blocks)
        ]
        equilibration = segment_equilibration(len(blocks), *magnitudes, dtype=np.result_type(*blocks))
    exponents = equilibration.exponents
    pieces = [
        equilibrated_combine(
            np.asarray(weights)[None, :],
            [_rows(b, axis, start, stop) for b in blocks],
            exponents[:, p],
        )[0]
        for p, (start, stop) in enumerate(zip(bounds, bounds[1:]))
    ]
    parity = ScaledBlock(
        np.concatenate(pieces, axis=axis), exponents, tuple(bounds), axis, equilibration.zeros
    )
    return _without_masks(parity, data_blocks)


def _segment_scaled(values: np.ndarray, unknown: int | None, scaling: ScaledBlock, sign: int) -> np.ndarray:
    """``values`` of data block ``unknown`` times ``2**(sign * e)``, ``e`` its exponent in each segment.

    Segments run along ``scaling.axis``; ``unknown=None`` (a parity) leaves ``values`` as they are.
    """
    if unknown is None:
        return values
    assert scaling.bounds is not None
    rows = np.repeat(sign * scaling.exponents[unknown], np.diff(scaling.bounds))[: values.shape[scaling.axis]]
    shape = [1] * values.ndim
    shape[scaling.axis] = len(rows)
    return scale_by_power_of_two(values, rows.reshape(shape))


def transpose_block(block: Any) -> Any:
    """``block.T``, keeping a :class:`ScaledBlock`'s exponents."""
    if isinstance(block, ScaledBlock):
        axis = block.values.ndim - 1 - block.axis
        return dataclasses.replace(block, values=np.transpose(block.values), axis=axis)
    return np.transpose(block)


#: Event topic under which decode tasks report the blocks they corrected.
CORRECTIONS_TOPIC = "dask-coded-corrections"


def _report_corrections(blocks: Sequence[int]) -> None:
    """Tell the scheduler which blocks of this task's group were wrong (no-op off a cluster)."""
    running = running_task()
    if running is not None:
        worker, key = running
        worker.log_event(CORRECTIONS_TOPIC, {"key": key, "blocks": [int(b) for b in blocks]})


def task_cancelled() -> bool:
    """Whether the task running in this thread was cancelled by the scheduler.

    A Python thread cannot be interrupted, so a cancelled product would keep
    its worker busy and the *next* computation would queue behind it. Long
    kernels call this between pieces of work and stop early. Outside a
    ``dask.distributed`` worker it is always False.
    """
    running = running_task()
    if running is None:
        return False
    worker, key = running
    state = worker_task_state(worker, key)
    return state is None or state.state in ("cancelled", "released", "forgotten")


#: Rows of the left block multiplied at a time between cancellation checks.
_ROWS_PER_PIECE = 512


def product_block(left: Sequence[Any], right: Sequence[Any]) -> Any:
    """``sum_kk left[kk] @ right[kk]``: one coded product over the inner chunks.

    Works through the rows in pieces and stops (``distributed.Reschedule``)
    when the scheduler dropped the task (a late group member), so the worker
    is free for the next computation. The result equals ``np.dot`` on the
    whole blocks up to rounding. A product of :class:`ScaledBlock` s is one
    too (same exponents); a product holding NaN or inf is a
    :class:`NonFiniteProduct`, so the scheduler knows before it plans a decode.
    """
    if not left or len(left) != len(right):
        raise ValueError(f"product_block needs matching inner blocks, got {len(left)} and {len(right)}")
    if isinstance(left[0], UncodedBlock):
        product = product_block([a.values for a in left], [b.values for b in right])
        return UncodedBlock(_kept_masked(product))  # not a NonFiniteProduct: its type is UncodedBlock's
    scaling = _common_scaling([*left, *right])
    if any(_masked(operand) for operand in (*left, *right)):
        return _masked_product(left, right, scaling)
    values = _product_values([_values(a) for a in left], [_values(b) for b in right])
    nonfinite = values.dtype.kind in "fc" and not np.isfinite(values).all()
    if scaling is None:
        return values.view(NonFiniteProduct) if nonfinite else values
    # The coded axis is the left operand's rows or the right one's columns, and so is the product's.
    coded_left = isinstance(left[0], ScaledBlock)
    if scaling.bounds is not None and scaling.axis != (0 if coded_left else scaling.values.ndim - 1):
        raise ValueError("a block equilibrated by segments of its inner axis cannot be multiplied")
    marked = NonFiniteScaledBlock if nonfinite else ScaledBlock
    return marked(
        values, scaling.exponents, scaling.bounds, 0 if coded_left else values.ndim - 1, scaling.zeros
    )


def _masked_product(left: Sequence[Any], right: Sequence[Any], scaling: ScaledBlock | None) -> Any:
    """The product of blocks some of which are masked, as ``da.dot`` computes it.

    Each pair of inner blocks is multiplied by ``np.ma.dot`` where one is masked (dask's
    ``tensordot_lookup``), and the partial products are summed as masked arrays. A parity's
    product (``scaling``) is of no use to any decode: all NaN, an erasure.
    """
    partials = [
        np.ma.dot(*operands) if _masked(operands[0]) or _masked(operands[1]) else np.dot(*operands)
        for operands in ((_kept_masked(a), _kept_masked(b)) for a, b in zip(left, right))
    ]
    total = _masked_sum(partials)
    if scaling is None:
        return np.ma.asarray(total)
    dtype = np.result_type(np.ma.getdata(total).dtype, np.float64)
    values = np.full(np.shape(total), np.nan, dtype=dtype)
    axis = 0 if isinstance(left[0], ScaledBlock) else values.ndim - 1
    return NonFiniteScaledBlock(values, scaling.exponents, scaling.bounds, axis, scaling.zeros)


def _masked_sum(terms: Sequence[Any]) -> Any:
    """``sum(terms)`` as ``da.dot`` sums masked partial products: masked only where every term is."""
    return terms[0] if len(terms) == 1 else np.ma.stack(terms).sum(axis=0)


def checked_product_block(
    left: Sequence[Any], right: Sequence[Any], cuts: Sequence[int] | None = None, coded_left: bool = True
) -> Any:
    """:func:`product_block`, as a :class:`CheckedProduct` where it is finite.

    ``coded_left`` says which operand is the coded one; ``cuts`` are where
    its rows (``coded_left``) or columns change chunk (:func:`chunk_cuts`).
    A non-finite product is returned as it is: it is wrong whatever its
    round-off, and the scheduler reads its type.

    Examples
    --------
    >>> checked = checked_product_block([np.array([[1e8, -1e8], [1.0, 2.0]])], [np.ones(2)])
    >>> checked.product.tolist(), bool(checked.roundoff > 1e-8)  # of the size of |A| |x|, not of 0
    ([0.0, 3.0], True)
    """
    product = product_block(left, right)
    if isinstance(product, (NonFiniteProduct, NonFiniteScaledBlock, np.ma.MaskedArray, UncodedBlock)):
        return product
    values = _values(product)
    coded_axis = 0 if coded_left else values.ndim - 1
    runs = (
        list(zip(cuts, cuts[1:]))
        if cuts is not None
        else [(0, values.shape[coded_axis] if values.ndim else 1)]
    )
    lines = values.shape[1 - coded_axis] if values.ndim == 2 else 1
    per_cell, bound, inner = np.zeros((len(runs), lines)), 0.0, 0
    with np.errstate(over="ignore"):  # a bound past the largest float is inf: the check says so
        for a, b in zip(left, right):
            lhs, rhs = _values(a), _values(b)
            if lhs.shape[-1] == 0:
                continue  # an empty inner chunk adds nothing to the product, nor to its round-off
            inner += lhs.shape[-1]
            coded, other = (lhs, rhs) if coded_left else (rhs, lhs)
            if coded.ndim == 2:
                axis = 0 if coded_left else 1
                pieces = np.array([_inner_norms(_rows(coded, axis, s, e), left=coded_left) for s, e in runs])
            else:
                pieces = _inner_norms(coded, left=coded_left)[None, :]
            # |other| with the inner index first and one column per line.
            magnitudes = _magnitudes(other)
            magnitudes = (
                magnitudes.reshape(len(magnitudes), -1) if coded_left else magnitudes.T.reshape(-1, lines)
            )
            per_cell += pieces @ magnitudes
            bound += float(np.hypot.reduce(pieces, axis=0) @ _inner_norms(other, left=not coded_left))
    if values.dtype.kind in "iu" and not bound < np.iinfo(values.dtype).max:
        # No entry exceeds the bound: below it no integer product wraps. Above it one may have, as
        # in da.dot, and the float64 parities cannot check a wrapped product.
        return CheckedProduct(product, math.inf)
    real = np.finfo(_working_dtype(values.dtype))
    # Rounding, relative to |A| |x|, plus what underflow may lose: each of the inner terms of each
    # entry a subnormal spacing.
    floor = inner * math.sqrt(max(values.size, 1)) * float(real.smallest_subnormal)
    return CheckedProduct(
        product,
        float(real.eps) * bound + floor,
        float(real.eps) * per_cell + floor,
        None if cuts is None else tuple(cuts),
        coded_axis,
        1 - coded_axis if values.ndim == 2 else None,
    )


def _inner_norms(block: np.ndarray, left: bool) -> np.ndarray:
    """The 2-norm of each slice of ``block`` along the product's inner axis.

    The columns of a left operand, the rows of a right one; a vector's entries' magnitudes. Summed
    over the inner axis, their products bound ``|| |A| |x| ||`` (Frobenius) however differently
    scaled ``A``'s columns are, where ``||A|| ||x||`` may exceed it by their whole range.
    """
    if block.ndim == 1:
        return _magnitudes(block)
    return line_norms(block, axis=1 if left else 0).astype(np.float64, copy=False)


def _magnitudes(block: np.ndarray) -> np.ndarray:
    """``|block|`` in float64 (or wider), where the abs of an integer's minimum cannot wrap."""
    return np.abs(block.astype(np.result_type(block.dtype, np.float64), copy=False))


def _common_scaling(operands: Sequence[Any]) -> ScaledBlock | None:
    """The scaled block among ``operands`` (all of them scaled alike), or None."""
    found = [o for o in operands if isinstance(o, ScaledBlock)]
    if not found:
        return None
    first = found[0]
    # Python integers, not an elementwise comparison: a decode task asks for every product, and on a
    # busy worker each NumPy reduction costs more than comparing these few numbers.
    signature = (first.exponents.shape, first.exponents.tolist(), first.bounds)
    if any((o.exponents.shape, o.exponents.tolist(), o.bounds) != signature for o in found[1:]):
        raise ValueError("the chunks of one coded block were equilibrated with different exponents")
    return first


def _product_values(left: Sequence[np.ndarray], right: Sequence[np.ndarray]) -> np.ndarray:
    first = left[0]
    if first.ndim < 2 or first.shape[0] <= _ROWS_PER_PIECE:
        return _sum_of_products(left, right)
    pieces = []
    for start in range(0, first.shape[0], _ROWS_PER_PIECE):
        if task_cancelled():
            from distributed import Reschedule

            # A cancelled task's outcome is dropped. If the scheduler asked for the key again
            # meanwhile (the same product in the next compute), Reschedule makes it run again
            # instead of failing.
            raise Reschedule()
        rows = slice(start, start + _ROWS_PER_PIECE)
        pieces.append(_sum_of_products([a[rows] for a in left], right))
    return np.concatenate(pieces)


def _sum_of_products(left: Sequence[Any], right: Sequence[Any]) -> np.ndarray:
    total = np.dot(left[0], right[0])
    for a, b in zip(left[1:], right[1:]):
        total = total + np.dot(a, b)
    return total


def decode_block(spec: DecodeSpec, *products: Any) -> np.ndarray:
    """Decode one output block from the group's products (``MISSING`` where dropped).

    The output's own product (a systematic data block, a replica) is returned
    bit for bit, cast only to the output dtype. Otherwise it is solved from
    finite products (NaN/inf never spread from one block to another), with
    the equilibration exponents read from the parity products. Integer
    outputs are never solved through parities in floating point: that is not
    exact, so they raise :class:`DecodingError` instead.

    With ``spec.max_errors``, wrong products are located first and reported
    to the scheduler as a ``dask-coded-corrections`` event, so the plugin can
    count them per worker.
    """
    if spec.parts:
        pieces = [
            decode_block(
                part if part.suspects == spec.suspects else dataclasses.replace(part, suspects=spec.suspects),
                *products,
            )
            for part in spec.parts
        ]
        return pieces[0] if len(pieces) == 1 else _concatenate(pieces, axis=spec.parts[0].window[0])  # type: ignore[index]
    checked = {i: p for i, p in enumerate(products) if isinstance(p, CheckedProduct)}
    if checked:
        products = tuple(p.product if isinstance(p, CheckedProduct) else p for p in products)
    if spec.window is not None:
        products = tuple(_windowed(p, *spec.window) for p in products)
    present = {i: p for i, p in enumerate(products) if p is not MISSING}
    if any(isinstance(p, UncodedBlock) for p in present.values()):
        return _uncoded_output(spec, present)
    if not spec.max_errors:
        # The output's own product, when it is in, is the answer: no decoding machinery at all.
        direct = spec.code.direct_block(spec.output, present)
        if direct is not None:
            return _scaled_back(_trimmed(_kept_masked(present[direct]), spec), spec, present[direct])
    _refuse_masked(spec, present)
    scaling = _common_scaling(list(present.values()))
    results = {i: _values(p) for i, p in present.items()}
    # The exponents of data blocks, whose products are the outputs; a two-sided code's are scaled back below.
    one_sided = scaling is not None and spec.scaled_by is None and target_unknowns(spec.code) is not None
    exponents = scaling.exponents if one_sided else None  # type: ignore[union-attr]
    solvable = results
    segmented = scaling if scaling is not None and scaling.bounds is not None else None
    if segmented is not None and exponents is not None and _uniform_rows(exponents):
        # One exponent per data block over this window (a window of one chunk's rows, mostly): the
        # whole-block path, whose powers of two go into the weights, with no scaled copies.
        exponents, segmented = exponents[:, 0], None
    if segmented is not None:
        # Exponents per segment of rows: bring the data products to the equilibrated unknowns the
        # parities mix, exactly, and solve for those (the outputs are scaled back below).
        copied = spec.code.copied_block
        solvable = {i: _segment_scaled(r, copied(i), segmented, -1) for i, r in results.items()}
        exponents = None
    if spec.max_errors:
        wrong = _located_errors(
            spec, solvable, {i: c for i, c in checked.items() if i in present}, exponents, segmented
        )
        if wrong:
            _report_corrections(wrong)
            results = {i: p for i, p in results.items() if i not in wrong}
            solvable = {i: p for i, p in solvable.items() if i not in wrong}
        # The output's own product may have passed the check (without max_errors it was not in).
        direct = spec.code.direct_block(spec.output, results)
        if direct is not None:
            return _scaled_back(_trimmed(_kept_masked(present[direct]), spec), spec, present[direct])
    dtype = np.dtype(spec.dtype)
    zero_segments = _zero_segments(spec, scaling)
    if zero_segments and all(zero_segments) and all(math.isfinite(max_abs(r)) for r in solvable.values()):
        # The unknown block is zero in every row of the output, and the finite products say the other
        # operand is finite where it meets it: the product is exactly zero, as da.dot gives it.
        return np.zeros(spec.shape, dtype)
    if dtype.kind in "biu":
        raise DecodingError(
            f"output block {spec.output} of {spec.code!r} has integer dtype {dtype}, and without its "
            f"own block product (have {sorted(results)}) it could only be solved through parities in "
            "floating point, which is not exact; it needs its own product",
            suspects=tuple(i for i in range(spec.code.n) if i not in results),
        )
    (out,) = spec.code.decode(
        solvable,
        shapes=[spec.shape],
        outputs=[spec.output],
        recovery_set=spec.recovery_set,  # None with max_errors: planned on every result
        plan=spec.plan,
        exponents=exponents,
    )
    if segmented is not None:
        unknowns = target_unknowns(spec.code)
        if unknowns is None:
            raise ValueError(f"{spec.code!r} decodes combinations of blocks; segment exponents do not apply")
        out = _segment_scaled(out, unknowns[spec.output], segmented, 1)
    if any(zero_segments):
        # Some segments of the unknown are zero: round-off there would be an infinite relative error.
        # The decode mixed only finite products, so those rows of the product are exactly zero.
        assert scaling is not None
        out = np.array(out)  # a copy: the decode may have returned a view of a product
        if scaling.bounds is None:
            out[...] = 0
        else:
            rows = np.repeat(zero_segments, np.diff(scaling.bounds))[: out.shape[scaling.axis]]
            out[(slice(None),) * scaling.axis + (rows,)] = 0
    return _scaled_back(np.asarray(out), spec, scaling).astype(dtype, copy=False)


def _uncoded_output(spec: DecodeSpec, products: dict[int, Any]) -> np.ndarray:
    """An output of a two-sided code computed uncoded: the sum of its terms' products.

    See :attr:`~dask_coded.two_sided.OperandScaling.uncoded`.
    """
    if spec.max_errors:
        raise DecodingError(
            f"the operands of {spec.code!r} hold NaN, inf or masks, or values no decode could cancel to "
            "da.dot's accuracy, so its products were computed uncoded (each term once, or repeated), and "
            f"wrong ones cannot be located (max_errors={spec.max_errors}); use an MDS code "
            "(code='mds'), whose data blocks are products of their own",
            suspects=(),
        )
    members = spec.code.uncoded_members(spec.output, products)
    if members is None:
        raise DecodingError(
            f"output block {spec.output} of {spec.code!r}: its products were computed uncoded, and "
            f"{sorted(products)} miss a term of this output",
            suspects=(),
        )
    terms = [products[i].values for i in members]
    if any(_masked(term) for term in terms):
        return _trimmed(_masked_sum(terms), spec)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return _trimmed(total, spec)


def _scaled_back(out: np.ndarray, spec: DecodeSpec, scaling: Any) -> np.ndarray:
    """An output of a two-sided code whose operands were scaled (``spec.scaled_by``), scaled back."""
    if spec.scaled_by is None or not isinstance(scaling, ScaledBlock):
        return out
    left, right = spec.scaled_by
    return scale_by_power_of_two(out, int(scaling.exponents[left]) + int(scaling.exponents[right]))


def _zero_segments(spec: DecodeSpec, scaling: ScaledBlock | None) -> list[bool]:
    """Whether the data block that ``spec``'s output is, is all zero in each segment (one without them).

    Empty where the parities carry no zeros, or the output combines data blocks (MatDot codes).
    """
    if scaling is None or scaling.zeros is None:
        return []
    if spec.scaled_by is not None:  # a two-sided output A_j B_l: zero if either block is
        return [bool(scaling.zeros[list(spec.scaled_by)].any())]
    unknowns = target_unknowns(spec.code)
    if unknowns is None:
        return []
    # A few booleans: Python reads them faster than a NumPy reduction would.
    zeros = scaling.zeros[unknowns[spec.output]].tolist()
    return zeros if isinstance(zeros, list) else [zeros]


def _refuse_masked(spec: DecodeSpec, products: dict[int, Any]) -> None:
    """Raise where an output would be solved from masked products: no combination carries masks."""
    masked = sorted(i for i, product in products.items() if _masked(product))
    if masked:
        raise DecodingError(
            f"output block {spec.output} of {spec.code!r} would be solved from masked block products "
            f"{masked}, which no combination of products can give their masks; masked arrays need "
            "da.dot (dask_coded.dot falls back to it when the array's meta is masked)",
            suspects=(),
        )


def _located_errors(
    spec: DecodeSpec,
    solvable: dict[int, np.ndarray],
    checked: dict[int, CheckedProduct],
    exponents: np.ndarray | None,
    segmented: ScaledBlock | None,
) -> tuple[int, ...]:
    """The wrong products among ``solvable`` (:meth:`Code.locate_errors`), line group by line group."""
    copied, suspects = spec.code.copied_block, suspects_of(spec)
    groups: list[np.ndarray | None] = [None]
    if len(checked) == len(solvable):
        groups = list(_line_groups(list(checked.values())) or groups)
    found: set[int] = set()
    for lines in groups:
        results = solvable
        if lines is not None:
            axis = next(iter(checked.values())).line_axis
            results = {i: np.take(r, lines, axis=axis) for i, r in solvable.items()}
        roundoff = {
            i: _roundoff_bound(c, spec.window, segmented, copied(i), lines) for i, c in checked.items()
        }
        found.update(
            spec.code.locate_errors(
                results,
                spec.max_errors,
                exponents=exponents,
                suspects=suspects,
                roundoff=roundoff or None,
            )
        )
    wrong = tuple(sorted(found))
    if len({(suspects or {}).get(i, ("block", i)) for i in wrong}) > spec.max_errors:
        raise DecodingError(
            f"more than {spec.max_errors} wrong result(s) of {spec.code!r}: blocks {list(wrong)}, each "
            "wrong in some of the product's columns (or rows)",
            suspects=wrong,
        )
    return wrong


def _roundoff_bound(
    checked: CheckedProduct,
    window: tuple[int, int, int] | None,
    scaling: ScaledBlock | None,
    unknown: int | None,
    lines: np.ndarray | None = None,
) -> float:
    """``checked``'s bound over the ``window`` and ``lines`` the decode reads, scaled as its values are.

    With ``scaling`` (exponents per segment) and ``unknown`` (the data block
    it holds), each run of rows is scaled by its own exponent.
    """
    if checked.bounds is None:
        return checked.roundoff
    runs = np.hypot.reduce(checked.bounds if lines is None else checked.bounds[:, lines], axis=1)
    cuts = np.asarray(checked.cuts if checked.cuts is not None else (0, np.iinfo(np.int64).max))
    windowed = window is not None and window[0] == checked.axis
    start, stop = (window[1], window[2]) if window is not None and windowed else (0, int(cuts[-1]))
    kept = np.flatnonzero((cuts[:-1] < stop) & (cuts[1:] > start))
    if scaling is not None and unknown is not None and scaling.exponents[unknown].size:
        exponents = scaling.exponents[unknown]
        union = np.asarray(scaling.bounds if scaling.bounds is not None else (0,)) + start
        for run in kept:
            low, high = max(cuts[run], start), min(cuts[run + 1], stop)
            first, last = np.searchsorted(union, low, "right") - 1, np.searchsorted(union, high, "left")
            inside = exponents[max(first, 0) : max(last, first + 1)]
            if inside.size:
                runs[run] = float(scale_by_power_of_two(runs[run], -int(inside.min())))
    return frobenius_norm(runs[kept])


def _line_groups(checked: Sequence[CheckedProduct]) -> list[np.ndarray] | None:
    """The products' lines (columns of ``A @ X``, rows of ``X @ C``) in groups of similar scale, or None.

    An error in a line 1e-8 the size of another is below the round-off allowed for the two together:
    lines whose bounds are more than 2**20 apart are checked apart. None where one group holds them all.
    """
    axes = {c.line_axis for c in checked}
    if not checked or any(c.bounds is None for c in checked) or len(axes) != 1 or None in axes:
        return None
    scales = np.max([np.max(c.bounds, axis=0) for c in checked if c.bounds is not None], axis=0)
    with np.errstate(divide="ignore"):
        bins = np.floor(np.log2(scales) / 20)
    labels = np.unique(bins)
    if len(labels) < 2:
        return None
    return [np.flatnonzero(bins == label) for label in labels]


def _uniform_rows(exponents: np.ndarray) -> bool:
    """Whether every row of a (blocks, segments) array of exponents is one value (and there is one)."""
    rows = exponents.tolist()  # a few integers: Python compares them faster than a NumPy reduction
    return bool(exponents.size) and all(value == row[0] for row in rows for value in row)


def _windowed(product: Any, axis: int, start: int, stop: int) -> Any:
    """Rows (``axis`` 0) or columns ``start:stop`` of a product, a view; ``MISSING`` stays."""
    if product is MISSING:
        return product
    if not isinstance(product, ScaledBlock):
        return _rows(product, axis, start, stop)
    values = _rows(product.values, axis, start, stop)
    if product.bounds is None:
        return type(product)(values, product.exponents, None, product.axis, product.zeros)
    if axis != product.axis:
        raise ValueError(f"a window along axis {axis} of a block equilibrated along axis {product.axis}")
    if start >= stop:  # the window of an empty chunk
        return type(product)(
            values, product.exponents[:, :0], (0,), product.axis, _columns(product.zeros, 0, 0)
        )
    first, last, cuts = _window_segments(product.bounds, start, stop)
    # The class itself, not dataclasses.replace: a decode task windows every product, and each of its
    # Python steps is work the stragglers delay.
    zeros = _columns(product.zeros, first, last)
    return type(product)(values, product.exponents[:, first:last], cuts, product.axis, zeros)


def _columns(zeros: np.ndarray | None, first: int, last: int) -> np.ndarray | None:
    return None if zeros is None else zeros[:, first:last]


@functools.lru_cache(maxsize=1024)
def _window_segments(bounds: tuple[int, ...], start: int, stop: int) -> tuple[int, int, tuple[int, ...]]:
    """The segments between ``bounds`` that rows ``start:stop`` overlap (``first:last``), and their cuts."""
    kept = [p for p in range(len(bounds) - 1) if bounds[p] < stop and bounds[p + 1] > start]
    cuts = [max(bounds[kept[0]], start) - start] + [min(bounds[p + 1], stop) - start for p in kept]
    return kept[0], kept[-1] + 1, tuple(cuts)


def assembled_block(grid: tuple[int, ...], slices: Sequence[tuple[slice, ...]], *blocks: Any) -> np.ndarray:
    """One block cut from the ``blocks`` it overlaps: ``blocks[i][slices[i]]``, laid out in ``grid``.

    Examples
    --------
    >>> a, b = np.arange(4.0), np.arange(4.0, 6.0)
    >>> assembled_block((2,), [(slice(3, 4),), (slice(0, 2),)], a, b).tolist()
    [3.0, 4.0, 5.0]
    """
    pieces = [_kept_masked(block)[where] for block, where in zip(blocks, slices)]
    if len(pieces) == 1:
        return pieces[0]
    if len(grid) == 1:
        return _concatenate(pieces)
    rows = [_concatenate(pieces[r * grid[1] : (r + 1) * grid[1]], axis=1) for r in range(grid[0])]
    return _concatenate(rows)


def _trimmed(out: np.ndarray, spec: DecodeSpec) -> np.ndarray:
    """A product as the output block: cut to its true shape, in the output dtype."""
    if out.shape != tuple(spec.shape):
        out = out[tuple(slice(0, s) for s in spec.shape)]
    return out if out.dtype == spec.dtype else out.astype(spec.dtype)
