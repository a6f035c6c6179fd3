"""When ``dot``/``matmul`` cannot code a product: the one place that decides, and the warning that says why.

``dask_coded.dot`` promises ``da.dot``'s result: values, dtype, mask, shape
and chunks. Where a coded graph cannot keep that promise, the caller returns
``da.dot``'s own graph instead and :func:`fall_back` tells the user why, once
(or raises, with ``coded.fallback: raise``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import config
from .array import CodedArray
from .codes import ONE_SIDED, TWO_SIDED, Code
from .errors import FallbackWarning

__all__ = ["Reason", "fall_back", "fallback_reason", "parities_less_precise"]

#: ``coded.fallback`` settings.
_MODES = ("warn", "raise")


@dataclass(frozen=True)
class Reason:
    """Why a product is not coded.

    Attributes
    ----------
    text
        The reason, completing "dask_coded.dot: ...".
    error
        The exception raised instead of falling back under ``coded.fallback: raise``:
        ``TypeError`` for what the operands are, ``ValueError`` for their shapes.
    """

    text: str
    error: type[Exception] = ValueError

    def __str__(self) -> str:
        return self.text


def fallback_reason(
    operation: str, a: Any, b: Any, result: Any, *, code: Code | str | None = None, max_errors: int = 0
) -> Reason | None:
    """Why ``a @ b`` cannot be coded, or ``None`` when it can.

    A function of the operands' metadata (``shape``, ``dtype``, and where
    they have them ``chunks`` and ``_meta``), of ``result``, the lazy
    ``da.dot(a, b)`` (or ``da.matmul``) whose dtype, chunks and meta the coded
    graph must reproduce, and of what the call asks for (``code``, None for
    ``coded.code``'s, which is the one setting it reads, and ``max_errors``).

    Parameters
    ----------
    operation
        ``"dot"`` or ``"matmul"``: N-D operands are stacks for ``matmul``.
    a, b
        The operands: NumPy arrays, Dask arrays or CodedArrays.
    result
        ``da.dot(a, b)`` (``da.matmul(a, b)``), built lazily.
    code, max_errors
        What the call asks for: integer products under the default code
        (None, with ``coded.code: mds``) and no ``max_errors`` are not coded,
        since no integer output is ever decoded through parities.

    Returns
    -------
    Reason or None

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> a, b = da.ones((4, 3), chunks=2, dtype="int8"), np.ones(3, dtype="int8")
    >>> print(fallback_reason("dot", a, b, da.dot(a, b)))
    da.dot multiplies int8 blocks in int8 (wrapping on overflow) and sums them in int64; \
parity blocks cannot reproduce that wrap
    >>> a = da.ones((4, 3), chunks=2)
    >>> fallback_reason("dot", a, np.ones(3), da.dot(a, np.ones(3))) is None
    True
    >>> a = da.ones((4, 3), chunks=2, dtype="int64")
    >>> fallback_reason("dot", a, a.T, da.dot(a, a.T), max_errors=1) is None  # parities check them
    True
    """
    for x in (a, b, result):
        reason = _array_type_reason(_meta(x))
        if reason:
            return reason
    if max(a.ndim, b.ndim) > 2:
        if operation == "matmul":
            return Reason("stacks of matrices are not coded")
        return Reason(f"{max(a.ndim, b.ndim)}-D operands are not coded (only 1-D and 2-D ones are)")
    for x in (a, b):
        if x.dtype.kind not in "iufc":
            return Reason(f"{x.dtype} operands are not coded (only numbers are)", TypeError)
    block_dtype = np.promote_types(a.dtype, b.dtype)
    if block_dtype != result.dtype:
        return Reason(
            f"da.{operation} multiplies {block_dtype} blocks in {block_dtype} (wrapping on overflow) and "
            f"sums them in {result.dtype}; parity blocks cannot reproduce that wrap",
            TypeError,
        )
    if block_dtype.itemsize < 4 and block_dtype.kind in "fc":
        return Reason(
            f"{block_dtype} products are not coded: a decode from parity blocks needs more precision "
            f"than {block_dtype} has",
            TypeError,
        )
    if block_dtype.kind in "fc" and np.finfo(block_dtype).eps < np.finfo(np.float64).eps:
        return Reason(
            f"{block_dtype} products are not coded: decodes from parity blocks are solved in float64, "
            f"with fewer digits than {block_dtype} has",
            TypeError,
        )
    for x in (a, b):
        if isinstance(x, CodedArray) and parities_less_precise(x.dtype, result.dtype):
            return Reason(
                f"a {x.dtype} CodedArray's parity blocks hold {x.dtype} numbers, too few digits to decode a "
                f"{result.dtype} product from; encode it as {result.dtype} (A.astype) to code this product",
                TypeError,
            )
    encoded = [(x, side) for x, side in ((a, 0), (b, 1)) if isinstance(x, CodedArray)]
    if encoded and not any(x.ndim == 2 and x.axis == side for x, side in encoded):
        x, side = encoded[0]
        return Reason(
            f"a {x.ndim}-D CodedArray encoded along axis {x.axis}, as the {('left', 'right')[side]} "
            "operand, is summed over its coded axis: its parities decode no block of this product"
        )
    for x in (a, b):
        if any(math.isnan(c) for axis in getattr(x, "chunks", ()) for c in axis):
            return Reason("operands with unknown (nan) chunk sizes cannot be split into coded blocks")
    if 0 in a.shape or 0 in b.shape:
        return Reason("empty operands are not coded (there is nothing to compute)")
    if isinstance(code, Code) and not encoded:
        reason = _too_many_blocks(code, a, b, result.dtype)
        if reason:
            return reason
    if result.dtype.kind in "iu" and code is None and not max_errors and not encoded:
        if config.get("code") == "mds":
            # Each output would wait for its own product, as in da.dot, only pinned where a slow machine
            # holds it, where da.dot's is stolen away (slower than da.dot in a reviewer's reproducer).
            return Reason(
                f"{result.dtype} products are never decoded through parities (floating point is not "
                "exact for them): the default MDS code would only add work; pass code='mds' or "
                "max_errors to check them, or code='replication' for exact copies",
                TypeError,
            )
    return None


def _too_many_blocks(code: Code, a: Any, b: Any, dtype: np.dtype) -> Reason | None:
    """Why a code object cannot split the operands: more blocks along an axis than it is long."""
    rows = a.shape[0] if a.ndim == 2 else 1  # a vector on the left is multiplied as a 1 x K row
    cols = b.shape[-1] if b.ndim == 2 else 1
    if type(code).kind == ONE_SIDED:
        coded_rows = a.ndim == 2 or b.ndim == 1
        needs = [
            (
                "rows of the left" if coded_rows else "columns of the right",
                rows if coded_rows else cols,
                code.k,
            )
        ]
    elif dtype.kind in "biu" or type(code).kind != TWO_SIDED:
        return None  # integers get an MDS code instead; a code that is no product code is refused later
    elif type(code).splits == ("rows", "cols"):
        m, p = (weights.shape[1] for weights in code.operand_weights)
        if b.ndim == 1 and p != 1:
            return Reason(f"{code!r} splits the right operand into p={p} column blocks, but it is a vector")
        needs = [("rows of the left", rows, m), ("columns of the right", cols, p)]
    elif type(code).splits == ("inner", "inner"):
        needs = [("inner dimension of each", a.shape[-1], code.operand_weights[0].shape[1])]
    else:
        return None  # dask_coded.dot says which splits it knows
    for what, length, blocks in needs:
        if length < blocks:
            return Reason(f"{code!r} splits the {what} operand into {blocks} blocks, but it has {length}")
    return None


def parities_less_precise(encoded: np.dtype, product: np.dtype) -> bool:
    """Whether parity blocks of ``encoded`` data hold fewer digits than a ``product`` needs.

    Parities keep the data's dtype (integers: float64), so a float32 array's
    parities cannot decode a float64 product to float64's accuracy.

    Examples
    --------
    >>> parities_less_precise(np.dtype("float32"), np.dtype("float64"))
    True
    >>> parities_less_precise(np.dtype("int64"), np.dtype("complex128"))
    False
    """
    if product.kind not in "fc":
        return False
    parities = np.result_type(encoded, np.float64) if encoded.kind in "biu" else encoded
    return bool(np.finfo(parities).eps > np.finfo(product).eps)


def fall_back(operation: str, reason: Reason, stacklevel: int = 3) -> None:
    """Tell the user that ``operation`` computes ``da.<operation>``'s graph, and why.

    Emits one :class:`~dask_coded.FallbackWarning`, or raises ``reason.error``
    when ``coded.fallback`` is ``"raise"``.

    Examples
    --------
    >>> import dask, pytest
    >>> with dask.config.set({"coded.fallback": "raise"}), pytest.raises(ValueError, match="stacks"):
    ...     fall_back("matmul", Reason("stacks of matrices are not coded"))
    """
    mode = config.get("fallback")
    if mode not in _MODES:
        raise ValueError(f"coded.fallback must be one of {_MODES}, got {mode!r}")
    if mode == "raise":
        raise reason.error(f"dask_coded.{operation}: {reason} (coded.fallback is 'raise')")
    warnings.warn(
        f"dask_coded.{operation}: {reason}; computing da.{operation}'s graph instead",
        FallbackWarning,
        stacklevel=stacklevel,
    )


def _meta(x: Any) -> Any:
    """An empty block of ``x``'s type: NumPy arrays are their own; CodedArrays hold NumPy blocks."""
    if isinstance(x, np.ndarray):
        return x
    return getattr(x, "_meta", np.empty(0))


def _array_type_reason(meta: Any) -> Reason | None:
    # Only plain NumPy blocks are coded: parities would drop a mask, and sparse or GPU blocks
    # would need their own encode and decode kernels.
    if isinstance(meta, np.ma.MaskedArray):
        return Reason("masked arrays are not coded", TypeError)
    if type(meta) is not np.ndarray:
        kind = f"{type(meta).__module__}.{type(meta).__qualname__}"
        return Reason(f"{kind} blocks are not coded (only NumPy arrays are)", TypeError)
    return None
