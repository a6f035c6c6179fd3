"""How many coded blocks a group needs to outlast slow and faulty workers, and how many are data."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np

__all__ = [
    "MIN_DELAY_SAMPLES",
    "auto_or_count",
    "count_option",
    "coded_block_count",
    "data_blocks_for",
    "delays_from_evidence",
    "expected_latency",
    "fit_shifted_exponential",
    "parity_from_evidence",
    "slow_worker_count",
    "slow_workers",
]

#: Task times :func:`fit_shifted_exponential` needs before it fits anything.
MIN_DELAY_SAMPLES = 16


def auto_or_count(name: str, setting: object, minimum: int) -> Literal["auto"] | int:
    """An option that is ``'auto'`` or an integer of at least ``minimum``, checked.

    Examples
    --------
    >>> auto_or_count("coded.parity", 3, minimum=0)
    3
    >>> auto_or_count("coded.parity", -1, minimum=0)
    Traceback (most recent call last):
    ...
    ValueError: coded.parity must be 'auto' or an integer of at least 0, got -1
    """
    if setting == "auto":
        return "auto"
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < minimum:
        raise ValueError(f"{name} must be 'auto' or an integer of at least {minimum}, got {setting!r}")
    return setting


def count_option(name: str, setting: object, minimum: int) -> int:
    """An option that is an integer of at least ``minimum``, checked (no silent rounding or clamping).

    Examples
    --------
    >>> count_option("coded.replicas", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: coded.replicas must be an integer of at least 1, got 0
    """
    if isinstance(setting, bool) or not isinstance(setting, (int, np.integer)) or setting < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {setting!r}")
    return int(setting)


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

    ``ratios`` maps a worker to its task durations over the cluster's for
    the same kind of task (the scheduler plugin keeps the median of each
    worker's recent ones), so workers that ran different work compare fairly.

    Examples
    --------
    >>> sorted(slow_workers({"a": 1.0, "b": 0.9, "c": 1.1, "d": 8.0}))
    ['d']
    >>> slow_workers({"a": 1.0})
    set()
    >>> sorted(slow_workers({"a": 1.0, "b": 1.1, "c": float("inf"), "d": 10.0}))  # c: never timed
    ['c', 'd']
    """
    if len(ratios) < 2:
        return set()
    # inf: late in group after group, never timed (TaskTimes.record_late); slow, by a factor unknown,
    # so it stays out of the median the others are compared with.
    finite = [ratio for ratio in ratios.values() if math.isfinite(ratio)]
    median = float(np.median(finite)) if finite else math.inf
    return {worker for worker, ratio in ratios.items() if ratio > factor * median or ratio == math.inf}


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
    slow = slow_worker_count(ratios, workers, factor)
    if slow is None or workers is None:
        return fallback
    return max(1, min(slow + 1, workers - 1))


def slow_worker_count(
    ratios: Mapping[str, float] | None, workers: int | None, factor: float = 3.0
) -> int | None:
    """How many workers the evidence calls slow, or None until at least half of ``workers`` are measured.

    Examples
    --------
    >>> slow_worker_count({"a": 1.0, "b": 1.1, "c": 0.9, "d": 9.0}, workers=4)
    1
    >>> slow_worker_count({"a": 1.0}, workers=8) is None
    True
    """
    if workers is None or not ratios or len(ratios) < max(2, workers / 2):
        return None
    return len(slow_workers(ratios, factor))


def fit_shifted_exponential(samples: Iterable[float]) -> tuple[float, float] | None:
    """``(shift, scale)`` of ``shift + Exp(scale)`` fitted to task times (None: too few of them).

    ``samples`` are task durations over the median duration of the tasks of
    their kind before them (as the scheduler plugin records them), so tasks of different sizes
    pool; at least :data:`MIN_DELAY_SAMPLES` of them. The fit uses the
    median and the lower quartile, which the shifted exponential puts at
    ``shift + scale * ln 2`` and ``shift + scale * ln(4/3)``: a few extreme
    samples (a slow machine, a heavy tail) move them little. On a quiet
    cluster both are close, and ``scale`` is near 0.

    Examples
    --------
    >>> import numpy as np
    >>> times = 0.5 + np.random.default_rng(0).exponential(2.0, 20_000)
    >>> [round(float(v), 1) for v in fit_shifted_exponential(times)]
    [0.5, 2.0]
    >>> fit_shifted_exponential([1.0] * 20)
    (1.0, 0.0)
    >>> fit_shifted_exponential([1.0, 2.0]) is None
    True
    """
    values = np.asarray([float(v) for v in samples])
    values = values[np.isfinite(values)]
    if values.size < MIN_DELAY_SAMPLES:
        return None
    quartile, median = np.quantile(values, [0.25, 0.5])
    scale = max(float(median - quartile) / float(np.log(2) - np.log(4 / 3)), 0.0)
    return max(float(median) - scale * float(np.log(2)), 0.0), scale


def delays_from_evidence(
    samples: Mapping[str, Sequence[float]] | None,
    ratios: Mapping[str, float] | None,
    workers: int | None,
    factor: float = 3.0,
) -> tuple[float, float] | None:
    """The delays of the workers not measured slow, fitted, or None before half the workers have run tasks.

    ``samples`` maps a worker to its recent task-time ratios and ``ratios``
    to their median, as the scheduler plugin keeps them. Slow
    workers (:func:`slow_workers`) are left out: they are counted by the
    parity instead (:func:`parity_from_evidence`).

    Examples
    --------
    >>> samples = {"a": [1.0] * 8, "b": [1.0] * 8, "c": [9.0] * 8}
    >>> delays_from_evidence(samples, {"a": 1.0, "b": 1.0, "c": 9.0}, workers=3)
    (1.0, 0.0)
    >>> delays_from_evidence({"a": [1.0] * 20}, {"a": 1.0}, workers=4) is None  # one worker of four
    True
    """
    if workers is None or not samples or len(samples) < max(2, workers / 2):
        return None
    slow = slow_workers(ratios or {}, factor)
    pooled = (t for worker, times in samples.items() if worker not in slow for t in times)
    return fit_shifted_exponential(pooled)


def expected_latency(k: int, n: int, shift: float, scale: float) -> float:
    """Expected time until ``k`` of ``n`` workers finish, each computing ``1/k`` of the work.

    The model of Lee et al. (IEEE Trans. Inf. Theory 2018): a worker's time
    for the whole work would be ``shift + Exp(scale)``; for ``1/k`` of it,
    that over ``k``. The ``k``-th fastest of ``n`` then finishes, on
    average, at ``(shift + scale * (H(n) - H(n - k))) / k``, ``H`` the
    harmonic numbers. Larger ``k`` gives smaller blocks but waits for more
    of them.

    Examples
    --------
    >>> expected_latency(8, 8, shift=1.0, scale=0.0)  # nothing straggles: no waiting for a tail
    0.125
    >>> round(expected_latency(8, 8, 1.0, 2.0), 3), round(expected_latency(5, 8, 1.0, 2.0), 3)
    (0.804, 0.554)
    """
    if not 1 <= k <= n:
        raise ValueError(f"expected_latency needs 1 <= k <= n, got k={k}, n={n}")
    tail = sum(1.0 / i for i in range(n - k + 1, n + 1))
    return (shift + scale * tail) / k


def data_blocks_for(workers: int, parity: int, delays: tuple[float, float] | None) -> int | None:
    """Data blocks ``k`` of a code with one coded block per worker (``n = workers``), or None.

    ``parity`` blocks of redundancy are the least (one per worker measured
    slow, plus one: :func:`parity_from_evidence`); the slow ones'
    blocks count as lost. With ``delays``, the ``(shift, scale)`` the other
    workers' task times fit (:func:`fit_shifted_exponential`), ``k`` hedges
    between two readings of them that task times of one size cannot tell
    apart: delays that grow with a task's work (Lee et al.'s model,
    :func:`expected_latency`, where smaller blocks finish sooner) and delays
    that do not (a pause, a busy neighbour: a task takes as long at any
    ``k``, and only the wait for the ``k``-th fastest of ``n`` counts). It
    is the ``k`` whose expected latency is closest to the best under either
    reading (least worst regret; the largest such ``k`` on a tie). Without
    ``delays``, ``workers - parity``. Never below half the workers, so a call
    does at most twice the work of an uncoded one; None where that leaves no
    choice (too few workers for ``parity``).

    Examples
    --------
    >>> data_blocks_for(8, parity=1, delays=(1.0, 0.0))  # a quiet cluster: one parity
    7
    >>> data_blocks_for(8, parity=1, delays=(1.0, 0.2))  # a short tail: one more parity
    6
    >>> data_blocks_for(8, parity=1, delays=(1.0, 2.0))  # a long tail: half the blocks are spare
    4
    >>> data_blocks_for(8, parity=2, delays=None), data_blocks_for(2, parity=2, delays=None)
    (6, None)
    """
    largest = workers - parity
    smallest = -(-workers // 2)
    if largest < max(smallest, 1):
        return None
    if delays is None:
        return largest
    if not all(math.isfinite(value) and value >= 0 for value in delays):
        raise ValueError(f"data_blocks_for needs finite, non-negative delays, got {delays}")
    on_time = workers - max(parity - 1, 0)  # the slow workers' blocks never arrive in time
    choices = range(smallest, largest + 1)
    scaling = [expected_latency(k, on_time, *delays) for k in choices]
    fixed = [k * latency for k, latency in zip(choices, scaling)]  # the whole task, at any k
    regrets = [max(pair) for pair in zip(_regrets(scaling), _regrets(fixed))]
    return max(k for k, regret in zip(choices, regrets) if regret == min(regrets))


def _regrets(latencies: Sequence[float]) -> list[float]:
    """How much slower each choice is than the best one, as a fraction of the best."""
    best = min(latencies)
    return [latency / best - 1 if best > 0 else 0.0 for latency in latencies]
