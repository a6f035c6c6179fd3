"""Exceptions and warnings raised by dask-coded."""

from __future__ import annotations

__all__ = ["DaskCodedWarning", "ConditioningWarning", "DecodingError", "FallbackWarning"]


class DaskCodedWarning(UserWarning):
    """Base class of every warning dask-coded emits."""


class ConditioningWarning(DaskCodedWarning):
    """A decode's condition number may cost more accuracy than dask-coded promises.

    The promise is a relative error below 1e-10 for float64 and complex128
    and below 1e-4 for float32 and complex64; a decode warns when its
    condition number times the dtype's machine epsilon exceeds that.
    """


class FallbackWarning(DaskCodedWarning):
    """A product could not be coded, so ``da.dot``'s (or ``da.matmul``'s) own graph computes it.

    The message names the reason (masked arrays, stacks, unknown chunks, ...).
    Set ``coded.fallback: raise`` to make it an error instead.
    """


class DecodingError(ValueError):
    """Block results could not be decoded into a trustworthy answer.

    Raised when the results are not enough to decode, or when they disagree
    with the code by more than round-off and the disagreement cannot be
    corrected. ``suspects`` holds the coded-block indices that are to blame
    (or may be), so an operator can find a faulty worker. ``relative_error``
    is set when the decode was refused because its result could miss the
    dtype's accuracy by that much (``Code.decode(..., inaccurate="raise")``).
    """

    def __init__(
        self, message: str, suspects: tuple[int, ...] = (), *, relative_error: float | None = None
    ) -> None:
        super().__init__(message)
        self.suspects = tuple(suspects)
        self.relative_error = relative_error
