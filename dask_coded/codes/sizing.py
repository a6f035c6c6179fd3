"""How many coded blocks a group needs to outlast slow and faulty workers."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["coded_block_count", "parity_from_evidence", "slow_workers"]


def coded_block_count(k: int, stragglers: int, max_errors: int = 0, workers: int | None = None) -> int:
    """``n`` for a ``k``-of-``n`` code that survives slow and faulty *workers*, not only blocks.

    Member ``i`` of a group runs on worker ``i mod W``, so with ``n > W`` a
    worker computes up to ``ceil(n / W)`` members, and a faulty one gets them
    all wrong. Correcting ``max_errors`` faulty workers while ``stragglers``
    others are late needs ``n - (stragglers + 2 * max_errors) * ceil(n / W)
    >= k``. Without ``max_errors``, or when ``W`` is unknown, that is
    ``k + stragglers + 2 * max_errors``. Where the cluster has too few
    workers for ``stragglers`` too, fewer stragglers are tolerated; with
    ``W <= 2 * max_errors`` no code can tell a faulty worker apart.

    Examples
    --------
    >>> coded_block_count(4, stragglers=2)
    6
    >>> coded_block_count(4, stragglers=0, max_errors=1, workers=4)  # 2 members a worker
    8
    >>> coded_block_count(4, stragglers=2, max_errors=1, workers=3)  # 3 workers: 1 per data block
    12
    >>> coded_block_count(4, stragglers=2, max_errors=1, workers=2)
    Traceback (most recent call last):
    ...
    ValueError: max_errors=1 needs at least 3 workers to outvote a faulty one; the cluster has 2
    """
    if not max_errors or workers is None:
        return k + stragglers + 2 * max_errors
    if workers <= 2 * max_errors:
        raise ValueError(
            f"max_errors={max_errors} needs at least {2 * max_errors + 1} workers to outvote a "
            f"faulty one; the cluster has {workers}"
        )
    lost = min(stragglers, workers - 2 * max_errors - 1) + 2 * max_errors
    n = k + lost
    while n - lost * -(-n // workers) < k:
        n += 1
    return n


def slow_workers(ratios: Mapping[str, float], factor: float = 3.0) -> set[str]:
    """Workers whose tasks take ``factor`` times longer than the median worker's.

    ``ratios`` maps a worker to a running average of its task durations over
    the cluster-wide average for the same kind of task, so workers that ran
    different work compare fairly.

    Examples
    --------
    >>> sorted(slow_workers({"a": 1.0, "b": 0.9, "c": 1.1, "d": 8.0}))
    ['d']
    >>> slow_workers({"a": 1.0})
    set()
    """
    if len(ratios) < 2:
        return set()
    median = float(np.median(list(ratios.values())))
    return {worker for worker, ratio in ratios.items() if ratio > factor * median}


def parity_from_evidence(
    ratios: Mapping[str, float] | None, workers: int | None, fallback: int = 2, factor: float = 3.0
) -> int:
    """Parities per group from the workers' measured speed: one per slow worker, plus one.

    A slow machine is late with every member it holds, and groups put one
    member on each worker (:func:`~dask_coded.codes.grouped.group_size_for`),
    so each group needs a parity per slow worker; one more absorbs a
    passing straggler among the others. When nothing straggles that is a
    single parity. ``fallback`` applies until at least half of the
    ``workers`` have finished tasks (``ratios``, as kept by the scheduler
    plugin), or without a cluster. Never more than ``workers - 1``.

    Examples
    --------
    >>> parity_from_evidence({"a": 1.0, "b": 1.1, "c": 0.9, "d": 1.0}, workers=4)
    1
    >>> parity_from_evidence({"a": 1.0, "b": 1.1, "c": 0.9, "d": 9.0}, workers=4)
    2
    >>> parity_from_evidence({"a": 1.0}, workers=8), parity_from_evidence(None, workers=None)
    (2, 2)
    """
    if workers is None or not ratios or len(ratios) < max(2, workers / 2):
        return fallback
    return max(1, min(len(slow_workers(ratios, factor)) + 1, workers - 1))
