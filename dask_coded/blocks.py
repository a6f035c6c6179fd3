"""What runs on a worker: encode a parity block, multiply coded blocks, decode one output block.

These functions are the tasks of a coded graph. The scheduler plugin
recognises a group by its decode task (a :class:`CodedTask` calling
:func:`decode_block`); when it drops late members it replaces their
arguments with :data:`MISSING`, which :func:`decode_block` skips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._compat import Task, running_task, worker_task_state
from .codes import Code
from .codes.base import combine

__all__ = [
    "MISSING",
    "CodedTask",
    "DecodeSpec",
    "decode_block",
    "parity_block",
    "product_block",
    "task_cancelled",
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
    """

    code: Code
    output: int
    shape: tuple[int, ...]
    dtype: np.dtype
    max_errors: int = 0
    recovery_set: tuple[int, ...] | None = None


def parity_block(weights: np.ndarray, *data_blocks: np.ndarray) -> np.ndarray:
    """``sum_j weights[j] * data_blocks[j]``, zero-padding uneven blocks."""
    return combine(np.asarray(weights)[None, :], [np.asarray(b) for b in data_blocks])[0]


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


def product_block(left: Sequence[np.ndarray], right: Sequence[np.ndarray]) -> np.ndarray:
    """``sum_kk left[kk] @ right[kk]``: one coded product over the inner chunks.

    Works through the rows in pieces and stops (``distributed.Reschedule``)
    when the scheduler dropped the task (a late group member), so the worker
    is free for the next computation. The result equals ``np.dot`` on the
    whole blocks up to rounding.
    """
    if not left or len(left) != len(right):
        raise ValueError(f"product_block needs matching inner blocks, got {len(left)} and {len(right)}")
    first = np.asarray(left[0])
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
        pieces.append(_sum_of_products([np.asarray(a)[rows] for a in left], right))
    return np.concatenate(pieces)


def _sum_of_products(left: Sequence[Any], right: Sequence[Any]) -> np.ndarray:
    total = np.dot(left[0], right[0])
    for a, b in zip(left[1:], right[1:]):
        total = total + np.dot(a, b)
    return total


def decode_block(spec: DecodeSpec, *products: Any) -> np.ndarray:
    """Decode one output block from the group's products (``MISSING`` where dropped).

    With ``spec.max_errors``, wrong products are located first and reported
    to the scheduler as a ``dask-coded-corrections`` event, so the plugin can
    count them per worker.
    """
    results = {i: p for i, p in enumerate(products) if p is not MISSING}
    if spec.max_errors:
        wrong = spec.code.locate_errors(results, spec.max_errors)
        if wrong:
            _report_corrections(wrong)
            results = {i: p for i, p in results.items() if i not in wrong}
    (out,) = spec.code.decode(
        results,
        shapes=[spec.shape],
        outputs=[spec.output],
        recovery_set=spec.recovery_set,  # None with max_errors: the plugin plans those on every result
    )
    if np.dtype(spec.dtype).kind in "iu":
        # Integers are decoded in float64; round back to NumPy's result dtype.
        return np.rint(out).astype(spec.dtype) if out.dtype != spec.dtype else out
    return out.astype(spec.dtype, copy=False)
