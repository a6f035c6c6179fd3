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
from dask._task_spec import Task

from .codes import Code
from .codes.base import combine

__all__ = ["MISSING", "CodedTask", "DecodeSpec", "parity_block", "product_block", "decode_block"]

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
    """

    code: Code
    output: int
    shape: tuple[int, ...]
    dtype: np.dtype
    max_errors: int = 0


def parity_block(weights: np.ndarray, *data_blocks: np.ndarray) -> np.ndarray:
    """``sum_j weights[j] * data_blocks[j]``, zero-padding uneven blocks."""
    return combine(np.asarray(weights)[None, :], [np.asarray(b) for b in data_blocks])[0]


def product_block(left: Sequence[np.ndarray], right: Sequence[np.ndarray]) -> np.ndarray:
    """``sum_kk left[kk] @ right[kk]``: one coded product over the inner chunks."""
    if not left or len(left) != len(right):
        raise ValueError(f"product_block needs matching inner blocks, got {len(left)} and {len(right)}")
    total = np.dot(left[0], right[0])
    for a, b in zip(left[1:], right[1:]):
        total = total + np.dot(a, b)
    return total


def decode_block(spec: DecodeSpec, *products: Any) -> np.ndarray:
    """Decode one output block from the group's products (``MISSING`` where dropped)."""
    results = {i: p for i, p in enumerate(products) if p is not MISSING}
    (out,) = spec.code.decode(results, max_errors=spec.max_errors, shapes=[spec.shape], outputs=[spec.output])
    if np.dtype(spec.dtype).kind in "iu":
        # Integers are decoded in float64; round back to NumPy's result dtype.
        return np.rint(out).astype(spec.dtype) if out.dtype != spec.dtype else out
    return out.astype(spec.dtype, copy=False)
