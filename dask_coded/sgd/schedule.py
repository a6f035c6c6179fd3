"""When adaptive K-sync SGD waits for more workers: a pure rule on the recent losses.

In the spirit of AdaSync (Dutta, Wang, Joshi, Ghosh, Dube, Nagpurkar, "Slow
and Stale Gradients Can Win the Race", IEEE JSAIT 2021) and AdaComm (Wang and
Joshi, "Adaptive Communication Strategies to Achieve the Best Error-Runtime
Trade-off in Local-Update SGD", SysML 2019): a small K makes fast but noisy (or,
on sharded data, biased) progress; once the loss stops falling, waiting for
more workers buys a lower error floor. The trainer applies the rule; the rule
itself is a function of plain numbers, tested without a cluster.

What adaptive K pays over the best switch it could make is the updates it
spends proving each stall. So the rule keeps the losses from before a raise
as evidence: one window at the new K decides whether waiting for more
workers helped, instead of two fresh windows at every K.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["loss_stalled", "next_k"]


def loss_stalled(
    losses: Sequence[float], window: int = 3, significance: float = 2.0, rtol: float = 1e-9
) -> bool:
    """Whether the last ``window`` losses are not significantly below the ``window`` before them.

    The two window means are compared with the standard error of their
    difference (the loss estimates are noisy: mini-batches, or a varying
    set of K workers' shards): the loss has stalled when it fell by less than
    ``significance`` standard errors, and by less than ``rtol`` of its level
    (so that a noise-free loss stalls once it stops changing in its leading
    digits). Fewer than ``2 * window`` losses never stall.

    Parameters
    ----------
    losses
        Loss estimates, one per update, oldest first.
    window
        Updates per window. Three is the fewest whose spread (two degrees
        of freedom each) the test can weigh a decrease against.
    significance
        Standard errors a decrease needs to count.
    rtol
        Relative decrease that always counts.

    Examples
    --------
    >>> loss_stalled([8, 7, 6, 5, 4, 3], window=3)  # still falling
    False
    >>> loss_stalled([1.0, 1.1, 0.9, 1.05, 0.95, 1.0], window=3)  # noise around a floor
    True
    >>> loss_stalled([1.0, 0.9], window=3)  # too few to tell
    False
    """
    if window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if len(losses) < 2 * window:
        return False
    recent = np.asarray(losses[-window:], dtype=float)
    previous = np.asarray(losses[-2 * window : -window], dtype=float)
    decrease = previous.mean() - recent.mean()
    standard_error = math.sqrt((previous.var(ddof=1) + recent.var(ddof=1)) / window) if window > 1 else 0.0
    needed = max(significance * standard_error, rtol * abs(recent.mean()))
    return bool(decrease <= needed)


def next_k(
    k: int,
    workers: int,
    losses: Sequence[float],
    *,
    updates_at_k: int | None = None,
    window: int = 3,
    significance: float = 2.0,
    growth: float = 2.0,
    rtol: float = 1e-9,
) -> int:
    """The K for the next update: ``k`` while the loss falls, ``ceil(growth * k)`` (at most P) once it stalls.

    The loss has stalled when the mean of the last ``window`` losses, all
    made at K, is not significantly below the mean of the ``window`` before
    them (:func:`loss_stalled`). Those earlier losses may come from the
    previous K: the evidence that led to the last raise is kept, so one
    window at the new K tells whether waiting for more workers lowered the
    loss, and K grows again at once if it did not. Each K therefore costs
    ``window`` updates after the first (``2 * window`` at the start), not
    ``2 * window`` each.

    Parameters
    ----------
    k
        Gradients the updates wait for now.
    workers
        P, the largest K.
    losses
        Loss estimates of the updates so far, oldest first, whatever K they
        were made at (only the last ``2 * window`` are read).
    updates_at_k
        How many of the last ``losses`` were made at ``k`` (default: all of
        them). K stays while fewer than ``window`` were.
    window, significance, rtol
        The stall test, :func:`loss_stalled`.
    growth
        Factor K grows by (at least by one).

    Returns
    -------
    int
        The K of the next update, in ``[k, workers]``.

    Examples
    --------
    >>> next_k(2, 8, [5.0, 4.0, 3.0, 2.0])  # too few losses to tell
    2
    >>> next_k(2, 8, [1.0, 1.1, 0.9, 1.0, 1.05, 0.95])  # flat for two windows
    4
    >>> floor_at_2 = [1.0, 1.1, 0.9]
    >>> next_k(4, 8, floor_at_2 + [1.0, 0.95, 1.05], updates_at_k=3)  # K = 4 did not lower the loss
    8
    >>> next_k(4, 8, floor_at_2 + [0.5, 0.45, 0.55], updates_at_k=3)  # it did: keep K = 4
    4
    >>> next_k(4, 8, floor_at_2 + [1.0, 0.95], updates_at_k=2)  # one window at K = 4 first
    4
    >>> next_k(6, 8, [1.0, 1.1, 0.9, 1.0], window=2)  # never beyond P
    8
    >>> next_k(8, 8, [1.0] * 10)
    8
    """
    if not 1 <= k <= workers:
        raise ValueError(f"k must be in [1, P={workers}], got {k!r}")
    if growth <= 1:
        raise ValueError(f"growth must exceed 1, got {growth!r}")
    if window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    at_k = len(losses) if updates_at_k is None else updates_at_k
    if isinstance(at_k, bool) or not 0 <= at_k <= len(losses):
        raise ValueError(f"updates_at_k must be in [0, {len(losses)}] (the losses), got {updates_at_k!r}")
    if k == workers or at_k < window or not loss_stalled(losses, window, significance, rtol):
        return k
    return min(workers, max(k + 1, math.ceil(growth * k)))
