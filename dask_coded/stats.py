"""Per-worker task-time statistics: how much slower each worker runs the same kind of task."""

from __future__ import annotations

import math
import statistics
import types
from typing import Any, TypeVar

import numpy as np

__all__ = ["TaskTimes", "task_kind"]

_T = TypeVar("_T")

#: Recent durations of a kind of task that a new one of that kind is compared with.
_REFERENCE_DURATIONS = 15
#: A kind needs this many durations on record before its tasks are compared with them.
_MIN_REFERENCE_DURATIONS = 3
#: Recent ratios whose median is a worker's ratio: few enough to notice a machine that turns slow
#: within a call, enough to outvote a task that a busy core held up once.
_RATIOS_PER_WORKER = 9
#: Ratios kept per worker for fitting the cluster's delays (the most recent ones).
_SAMPLES_PER_WORKER = 32
#: Kinds of task taking less than this (seconds) say more about timer noise than about delays.
_MIN_MODELLED_DURATION = 0.001
#: Kinds of task remembered; the one seen first is forgotten beyond that (it starts over if it returns).
_MAX_KINDS = 1000
#: Odds against chance at which a worker late in every group lately counts as slow (as a log).
_LATE_EVIDENCE = math.log(100)


#: Callables whose ``__name__`` is theirs to read cheaply.
_NAMED = frozenset({types.FunctionType, types.BuiltinFunctionType, types.MethodType, type, np.ufunc})


def task_kind(prefix: str, run_spec: Any) -> str:
    """What a task's duration is compared with: its key prefix, and its function where it has one.

    One prefix can hold different work: an encoding's data blocks are copied
    where they moved, its parities mix ``k`` blocks each; compared with one
    another, the parities' workers would look slow. ``prefix`` is the key's
    (``dask.utils.key_split``; on the scheduler, ``TaskState.prefix.name``).

    Examples
    --------
    >>> from dask._task_spec import Task
    >>> task_kind("coded-encode-rows-mds", Task("x", sum, [1.0]))
    'coded-encode-rows-mds.sum'
    >>> task_kind("finalize", None)
    'finalize'
    """
    function = getattr(run_spec, "func", None)
    if function is None:
        return prefix
    # Other callables may compute a name (toolz's Compose joins its functions'), or have none.
    name = function.__name__ if type(function) in _NAMED else type(function).__name__
    return f"{prefix}.{name}"


class TaskTimes:
    """Each worker's task durations relative to the cluster's, for the same kind of task.

    A finished task's *ratio* is its duration over the median of the last
    durations of its kind (:func:`task_kind`) on other workers, taken before it. The
    median is not pulled up by a slow machine's own tasks, and a worker is not
    compared with itself, so a machine 10x slower shows ratios near 10 (an
    average that includes the task, as the scheduler's per-prefix average
    does, caps them below 2). Kinds taking under a millisecond are not
    compared: their times are mostly the noise of a busy process. A worker's
    ratio (:attr:`ratios`) is the median of its recent ones, and
    :attr:`samples` keeps its recent ratios to model delays
    (:func:`~dask_coded.codes.sizing.fit_shifted_exponential`).

    A slow machine whose coded members are always dropped finishes nothing to
    be timed: :meth:`record_late` and :meth:`record_on_time` give it the
    ratio ``inf`` (slow, by how much unknown) once it has been late in
    enough groups in a row.

    Both dicts are updated in place, so a reference to them stays current.

    Examples
    --------
    >>> times = TaskTimes()
    >>> for worker, duration in [("a", 0.01), ("b", 0.01), ("c", 0.01), ("d", 0.01), ("a", 0.01), ("c", 0.1)]:
    ...     times.record("product", worker, duration)
    >>> times.ratios
    {'d': 1.0, 'a': 1.0, 'c': 10.0}
    """

    def __init__(self) -> None:
        #: worker address -> median of its recent duration ratios
        self.ratios: dict[str, float] = {}
        #: worker address -> its recent ratios of kinds taking at least a millisecond
        self.samples: dict[str, list[float]] = {}
        self._recent_ratios: dict[str, list[float]] = {}
        self._durations_by_kind: dict[str, list[tuple[str, float]]] = {}
        #: kind -> how many of its kept durations take at least _MIN_MODELLED_DURATION
        self._long_by_kind: dict[str, int] = {}
        #: worker -> log-likelihood ratio that its members are late lately because it is slow
        self._late_evidence: dict[str, float] = {}

    def record(self, kind: str, worker: str, duration: float | None) -> None:
        """Note that ``worker`` ran a task of ``kind`` in ``duration`` seconds.

        Durations that are unknown (``None``), not positive or not finite (a clock
        that jumped) are ignored.

        Examples
        --------
        >>> times = TaskTimes()
        >>> for worker, duration in [("b", 0.02), ("c", 0.02), ("d", 0.02), ("a", 0.06), ("a", float("nan"))]:
        ...     times.record("decode", worker, duration)
        >>> times.ratios, times.samples
        ({'a': 3.0}, {'a': [3.0]})
        """
        if duration is None or not (duration > 0 and math.isfinite(duration)):
            return
        durations = self._durations_by_kind.get(kind)
        if durations is None:
            if len(self._durations_by_kind) >= _MAX_KINDS:
                oldest = next(iter(self._durations_by_kind))
                del self._durations_by_kind[oldest], self._long_by_kind[oldest]
            durations = self._durations_by_kind[kind] = []
            self._long_by_kind[kind] = 0
        long = self._long_by_kind[kind]
        reference = 0.0
        # With none of the kept durations that long, neither is their median: most tasks of a plain
        # graph are quick, and this runs on the scheduler for every one of them.
        if long:
            # Only other workers' durations: a kind one worker runs alone (the operand x, say) would
            # compare that worker with itself, and its ratios of 1 would hide how slow it is elsewhere.
            others = [d for w, d in durations if w != worker]
            if len(others) >= _MIN_REFERENCE_DURATIONS:
                reference = statistics.median(others)
        if len(durations) >= _REFERENCE_DURATIONS and durations[0][1] >= _MIN_MODELLED_DURATION:
            long -= 1  # about to be dropped
        self._long_by_kind[kind] = long + (duration >= _MIN_MODELLED_DURATION)
        _keep_last(durations, (worker, duration), _REFERENCE_DURATIONS)
        if reference < _MIN_MODELLED_DURATION:
            return
        ratio = duration / reference
        self._late_evidence.pop(worker, None)  # timed now: its own ratio says how slow it is
        recent = _keep_last(self._recent_ratios.setdefault(worker, []), ratio, _RATIOS_PER_WORKER)
        self.ratios[worker] = statistics.median(recent)
        _keep_last(self.samples.setdefault(worker, []), ratio, _SAMPLES_PER_WORKER)

    def record_late(self, worker: str, chance: float) -> None:
        """Note that ``worker``'s member of a coded group was dropped unfinished (decoded without it).

        ``chance`` is how likely that was for a worker as fast as the others:
        the fraction of the group's members dropped unfinished. Each late
        member multiplies the odds that ``worker`` is slow by ``1 / chance``;
        at 100 to 1 its ratio becomes ``inf``, until a member of it finishes
        (:meth:`record_on_time`) or it finishes a timed task (:meth:`record`).

        Examples
        --------
        >>> times = TaskTimes()
        >>> for _ in range(3):
        ...     times.record_late("a", chance=0.25)  # 4**3 = 64 to 1: not yet
        >>> times.ratios
        {}
        >>> times.record_late("a", chance=0.25)
        >>> times.ratios
        {'a': inf}
        >>> times.record_on_time("a")
        >>> times.ratios
        {}
        """
        if not 0 < chance < 1:
            return
        evidence = self._late_evidence.get(worker, 0.0) + math.log(1 / chance)
        self._late_evidence[worker] = evidence
        if evidence >= _LATE_EVIDENCE:
            self.ratios[worker] = math.inf

    def record_on_time(self, worker: str) -> None:
        """Note that a member of a coded group finished on ``worker``: its lateness so far was chance."""
        if self._late_evidence.pop(worker, None) is None or self.ratios.get(worker) != math.inf:
            return
        recent = self._recent_ratios.get(worker)
        if recent:
            self.ratios[worker] = statistics.median(recent)
        else:
            del self.ratios[worker]

    def forget(self, worker: str) -> None:
        """Drop what is known of ``worker`` (it left the cluster).

        Examples
        --------
        >>> times = TaskTimes()
        >>> for duration in [0.02, 0.02, 0.02, 0.02]:
        ...     times.record("decode", "a", duration)
        >>> times.forget("a")
        >>> times.ratios
        {}
        """
        for by_worker in (self.ratios, self.samples, self._recent_ratios, self._late_evidence):
            by_worker.pop(worker, None)


def _keep_last(values: list[_T], value: _T, count: int) -> list[_T]:
    values.append(value)
    del values[:-count]
    return values
