"""The scheduler plugin's decisions, as pure functions of plain data (tested without a cluster)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .codes import ONE_SIDED, TWO_SIDED, Code, DecodingPlan, ReplicationCode
from .codes.sizing import (
    coded_block_count,
    data_blocks_for,
    expected_latency,
    fit_shifted_exponential,
    slow_workers,
)
from .keys import ENCODE_COLUMNS, ENCODE_ROWS, ENCODE_TWO_SIDED, group_layout, replica_layout

__all__ = [
    "BACKUP_PRESETS",
    "BackupRule",
    "DecodePlan",
    "coded_block_count",
    "coded_block_index",
    "data_blocks_for",
    "decode_workers",
    "dropped_members",
    "expected_latency",
    "fit_shifted_exponential",
    "late_members",
    "member_positions",
    "member_workers",
    "plan_decode",
    "replica_position",
    "should_launch_backup",
    "slow_workers",
    "spread_position",
    "spread_worker",
    "time_saved",
]


@dataclass(frozen=True)
class DecodePlan:
    """How a waiting decode task can run now.

    Attributes
    ----------
    needed
        Group members (coded-block indices) the decode will read; the others
        can be dropped.
    recovery_set
        The blocks the decode is computed from (None: all finished ones,
        when wrong results must be located).
    weights
        The decode's weights when it combines several blocks (None for a
        copy or a checked decode): made here, on the scheduler, once per
        code and recovery set, and shipped with the task, so the worker
        does only the arithmetic.
    """

    needed: tuple[int, ...]
    recovery_set: tuple[int, ...] | None
    weights: DecodingPlan | None = field(default=None, repr=False)


def plan_decode(
    code: Code,
    output: int,
    finished: Iterable[int],
    max_errors: int = 0,
    suspects: Mapping[int, str | None] | None = None,
    *,
    dtype: Any = None,
    nonfinite: Iterable[int] = (),
    uncoded: Iterable[int] = (),
) -> DecodePlan | None:
    """Whether output ``output`` can be decoded from the ``finished`` members, and from which.

    Without error correction, an output that one finished block computes
    directly (a systematic data block, a replica) is that block, whatever it
    holds. Any other decode is a combination of several products, so:

    - members in ``nonfinite`` (products holding NaN or inf, or masked ones)
      are erasures: a combination would spread their NaN/inf into this
      output (or lose their masks);
    - an integer or bool ``dtype`` never decodes through parities, because
      floating-point decoding is not exact for integers: the output waits
      for its own block.

    With ``max_errors=t`` the decode waits for ``2t`` blocks of redundancy
    and reads every finished member (the decoder treats non-finite ones as
    wrong results); ``suspects`` (member -> worker) makes that ``2t``
    workers' worth.

    Members in ``uncoded`` are products of a two-sided code computed
    uncoded (:attr:`~dask_coded.two_sided.OperandScaling.uncoded`), each one
    term of an output (:meth:`~dask_coded.codes.Code.uncoded_members`): the
    output waits for each of its terms.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_coded.codes import MDSCode
    >>> code = MDSCode(k=3, n=5)
    >>> plan_decode(code, 0, [0, 3])
    DecodePlan(needed=(0,), recovery_set=(0,))
    >>> plan_decode(code, 2, [0, 3]) is None
    True
    >>> plan_decode(code, 2, [0, 1, 3]).recovery_set
    (0, 1, 3)
    >>> plan_decode(code, 2, [0, 1, 3, 4], max_errors=1) is None
    True
    >>> plan_decode(code, 2, [0, 1, 3, 4], nonfinite=[3]).recovery_set  # parity 3 holds NaN
    (0, 1, 4)
    >>> plan_decode(code, 2, [0, 1, 3, 4], nonfinite=[0, 3]) is None  # wait for block 2 itself
    True
    >>> plan_decode(code, 0, [0, 3], nonfinite=[0])  # block 0's own NaN is the answer
    DecodePlan(needed=(0,), recovery_set=(0,))
    >>> plan_decode(code, 2, [0, 1, 3], dtype=np.int64) is None  # integers: no parity decode
    True
    >>> code = MDSCode(k=3, n=6)
    >>> plan_decode(code, 0, range(6), max_errors=1).needed
    (0, 1, 2, 3, 4, 5)
    >>> plan_decode(code, 0, range(6), max_errors=1, suspects={0: "a", 1: "a", 2: "b", 3: "b"}) is None
    True
    >>> from dask_coded.codes import MatDotCode
    >>> plan_decode(MatDotCode(m=2, n=4), 0, [1, 2], uncoded=[1, 2])  # A_1 B_1 + A_0 B_0
    DecodePlan(needed=(2, 1), recovery_set=(2, 1))
    """
    finished = sorted(set(finished))
    uncoded = set(uncoded)
    if uncoded:
        members = code.uncoded_members(output, [i for i in finished if i in uncoded])
        return None if members is None else DecodePlan(members, members)
    if max_errors:
        if not code.is_recovery_set(finished, max_errors=max_errors, suspects=suspects):
            return None
        return DecodePlan(tuple(finished), None)
    direct = code.direct_block(output, finished)
    if direct is not None:
        return DecodePlan((direct,), (direct,))
    if dtype is not None and np.dtype(dtype).kind in "biu":
        return None
    erased = set(nonfinite)
    chosen = code.output_recovery_set(output, [i for i in finished if i not in erased])
    if chosen is None:
        return None
    weights = code.decoding_plan([output], chosen)
    return DecodePlan(weights.used, chosen, weights)


def coded_block_index(key: Any) -> int | None:
    """The coded-block index of an encode-layer key, or None for other keys.

    Examples
    --------
    >>> coded_block_index(("coded-encode-rows-abc", 4, 0))
    4
    >>> coded_block_index(("coded-encode-cols-abc", 0, 2))
    2
    >>> coded_block_index(("coded-encode-b-abc", 3, 1))
    3
    >>> coded_block_index(("x", 1)) is None
    True
    """
    if not isinstance(key, tuple) or len(key) < 2 or not isinstance(key[0], str):
        return None
    if key[0].startswith((ENCODE_ROWS, *ENCODE_TWO_SIDED)):
        return int(key[1])
    if key[0].startswith(ENCODE_COLUMNS):
        return int(key[-1])
    return None


def spread_position(key: Any, workers: int | None = None) -> int | None:
    """Where coded block ``key`` of an encoding goes in the round robin of ``workers``, or None.

    Block ``i``'s own index, except in a grouped encoding
    (:func:`~dask_coded.keys.grouped_name`): there a group's data blocks and
    parities take consecutive positions, so with ``group_size + parity <=
    W`` each group has one member per worker, and data block ``j`` keeps
    position ``j``; and in a replicated one
    (:func:`~dask_coded.keys.replicated_name`), whose copies of a block go
    to distinct workers (:func:`replica_position`; with ``workers`` None,
    the index).

    Examples
    --------
    >>> from dask_coded.keys import ENCODE_ROWS, grouped_name, replicated_name
    >>> name = grouped_name(ENCODE_ROWS, 6, 3, 1, "abc")  # groups (0 1 2 | 6) and (3 4 5 | 7)
    >>> [spread_position((name, i, 0)) for i in range(8)]
    [0, 1, 2, 3, 4, 5, 3, 6]
    >>> [spread_position((replicated_name(ENCODE_ROWS, 4, "abc"), i, 0), workers=4) for i in range(8)]
    [0, 1, 2, 3, 5, 6, 7, 8]
    """
    index = coded_block_index(key)
    if index is None:
        return None
    replicated = replica_layout(key[0])
    if replicated is not None:
        return index if workers is None else replica_position(index, replicated, workers)
    layout = group_layout(key[0])
    if layout is None:
        return index
    k, group_size, parity = layout
    if index < k or parity == 0:
        return index
    group, offset = divmod(index - k, parity)
    return min(k, (group + 1) * group_size) + offset


def replica_position(index: int, k: int, workers: int) -> int:
    """The round-robin position of coded block ``index`` (a copy of block ``index % k``) of a replication.

    Copy ``t`` of every block is shifted past the workers that hold its
    earlier copies: with ``r <= workers`` copies, those of a block are on
    distinct workers (in index order, copies ``k`` apart would land on the
    same worker whenever ``workers`` divides ``k``), and the load of the
    workers differs by at most one block.

    Examples
    --------
    >>> [replica_position(i, k=4, workers=4) % 4 for i in range(8)]  # blocks 0-3, then their copies
    [0, 1, 2, 3, 1, 2, 3, 0]
    >>> [replica_position(i, k=4, workers=8) for i in range(8)]  # copies on the other four workers
    [0, 1, 2, 3, 4, 5, 6, 7]
    """
    copy, block = divmod(index, k)
    used: set[int] = set()
    shift = 0
    for t in range(copy + 1):
        while (t * k + shift) % workers in used and len(used) < workers:
            shift += 1
        used.add((t * k + shift) % workers)
    return copy * k + shift + block


def member_positions(code: Code, first_position: int, workers: int) -> list[int]:
    """The round-robin position of each member of a group whose first member is at ``first_position``.

    Consecutive, except for a replication's copies (:func:`replica_position`), and a two-sided
    code's members past its terms (:attr:`~dask_coded.codes.Code.uncoded_terms`), laid out as
    copies: computed uncoded, they repeat the terms.

    Examples
    --------
    >>> member_positions(ReplicationCode(2, r=2), 0, workers=2)
    [0, 1, 3, 4]
    >>> from dask_coded.codes import MDSCode, PolynomialCode
    >>> member_positions(MDSCode(2, 3), 3, workers=2)
    [3, 4, 5]
    >>> member_positions(PolynomialCode(2, 2, 6), 0, workers=4)  # members 4, 5 repeat terms 0, 1
    [0, 1, 2, 3, 5, 6]
    """
    if isinstance(code, ReplicationCode) and code.r > 1:
        return [first_position + replica_position(i, code.k, workers) for i in range(code.n)]
    if code.kind == TWO_SIDED:  # members past the terms repeat them when computed uncoded
        return [first_position + replica_position(i, code.uncoded_terms, workers) for i in range(code.n)]
    return [first_position + i for i in range(code.n)]


def spread_worker(index: int, workers: Sequence[str]) -> str | None:
    """The worker coded block ``index`` lives on: one block per worker, round robin.

    A straggler then delays only its own blocks' products. ``workers`` is
    sorted so every graph agrees on the same placement.

    Examples
    --------
    >>> spread_worker(5, ["tcp://b:1", "tcp://a:1"])
    'tcp://b:1'
    """
    if not workers:
        return None
    return sorted(workers)[index % len(workers)]


def member_workers(
    positions: Sequence[int], holders: Sequence[Iterable[str]], workers: Sequence[str]
) -> list[str]:
    """Where each member of a group runs: one member per worker, beside its coded block where it can be.

    ``holders[i]`` are the workers holding member ``i``'s coded block (empty
    until it is computed). A block on its round-robin worker
    (:func:`spread_worker` of ``positions[i]``, from :func:`member_positions`) keeps its
    member there; a block elsewhere keeps its member beside it unless another
    member has that worker (moving a block costs a transfer on every call);
    every other member takes its round-robin worker, or the next one no
    member has. So a group of at most ``len(workers)`` members has one per
    worker, and a slow worker delays one member of it.

    Examples
    --------
    >>> member_workers([0, 1, 2], [set(), set(), set()], ["a", "b", "c", "d"])  # not computed yet
    ['a', 'b', 'c']
    >>> member_workers([0, 1, 2], [{"d"}, {"b"}, {"b"}], ["a", "b", "c", "d"])  # two blocks on "b"
    ['d', 'b', 'c']
    """
    ordered = sorted(workers)
    if not ordered:
        return []
    round_robin = [ordered[positions[i] % len(ordered)] for i in range(len(holders))]
    present = set(ordered)
    held = [set(h) & present for h in holders]  # a paused or retiring holder takes no tasks
    chosen: dict[int, str] = {i: w for i, w in enumerate(round_robin) if w in held[i]}
    taken = set(chosen.values())
    for i, candidates in enumerate(held):
        free = sorted(candidates - taken)
        if i not in chosen and free:
            chosen[i] = free[0]
            taken.add(free[0])
    for i in range(len(holders)):
        if i not in chosen:
            cycle = (ordered[(positions[i] + step) % len(ordered)] for step in range(len(ordered)))
            chosen[i] = next((w for w in cycle if w not in taken), round_robin[i])
            taken.add(chosen[i])
    return [chosen[i] for i in range(len(holders))]


def decode_workers(
    workers: Iterable[str], slow: Iterable[str] = (), busy: Iterable[str] = (), holders: Iterable[str] = ()
) -> set[str] | None:
    """Where a decode may run: off ``slow`` workers and workers ``busy`` running a late member.

    A slow machine slows the decode itself, and a decode placed beside a late
    member waits behind it. When every worker is slow or busy (the first
    members are in while every worker still runs another one), the decode
    may run on the ``holders`` of the members it reads, unless measured
    slow: they computed (or fetched) those members in time, while a busy
    worker that finished none may be a slow machine not measured yet.
    Failing that, anywhere but the slow ones.

    The answer is an exclusion, meant as a strict restriction: the scheduler
    still prefers the allowed workers holding the decode's inputs, and work
    stealing may move it only among the allowed ones. A loose restriction
    would not keep it off: stealing gives a loosely restricted task to any
    idle worker when no allowed worker is idle, and a worker whose late
    members were just released is idle to the scheduler. None means no
    restriction: nothing to avoid, or no worker left.

    Examples
    --------
    >>> sorted(decode_workers(["a", "b", "c"], slow=["a"]))
    ['b', 'c']
    >>> sorted(decode_workers(["a", "b", "c"], slow=["a"], busy=["b"]))
    ['c']
    >>> sorted(decode_workers(["a", "b", "c"], busy=["a", "b", "c"], holders=["b"]))
    ['b']
    >>> sorted(decode_workers(["a", "b", "c"], slow=["b"], busy=["a", "c"], holders=["b"]))
    ['a', 'c']
    >>> decode_workers(["a", "b"], slow=["gone"]) is None
    True
    >>> decode_workers(["a"], slow=["a"]) is None
    True
    """
    workers, slow = set(workers), set(slow)
    allowed = workers - slow - set(busy)
    if not allowed:
        allowed = (set(holders) & workers) - slow
    if not allowed:
        allowed = workers - slow
    if not allowed or allowed == workers:
        return None
    return allowed


def late_members(code: Code, unfinished: Iterable[int]) -> tuple[list[int], float]:
    """Which of a group's members dropped ``unfinished`` say their worker is late, and how likely by chance.

    A one-sided group's parities run last on purpose (the plugin orders
    them after the rest of the graph): dropped before they start, they say
    nothing of their workers, so only its data members count. The chance is
    the fraction of the counted members that were dropped unfinished: how
    likely that was for a worker as fast as the others
    (:meth:`~dask_coded.stats.TaskTimes.record_late`).

    Examples
    --------
    >>> from dask_coded.codes import MDSCode, MatDotCode
    >>> late_members(MDSCode(4, 6), [2, 4, 5])  # parities 4 and 5 were never needed
    ([2], 0.25)
    >>> late_members(MatDotCode(2, 5), [0, 4])
    ([0, 4], 0.4)
    """
    counted = code.k if type(code).kind == ONE_SIDED else code.n
    late = sorted(i for i in set(unfinished) if i < counted)
    return late, len(late) / counted


def dropped_members(members: Sequence[Any], needed: Iterable[int]) -> list[int]:
    """Indices of group members a decode no longer reads (MISSING ones excluded)."""
    needed = set(needed)
    return [i for i, m in enumerate(members) if m is not None and i not in needed]


def time_saved(expected_duration: float | None, running_for: float) -> float:
    """Lower bound on the wait avoided by dropping a member that has run ``running_for`` seconds.

    Examples
    --------
    >>> time_saved(2.0, 0.5)
    1.5
    >>> time_saved(None, 3.0)
    0.0
    """
    if expected_duration is None or not np.isfinite(expected_duration):
        return 0.0
    return max(expected_duration - running_for, 0.0)


@dataclass(frozen=True)
class BackupRule:
    """When a running task is late enough to be run again elsewhere (speculative execution).

    A task of a group (one stage of a graph: the tasks of one key name) is
    late once the group has at least ``min_tasks`` tasks, at least
    ``min_completed_fraction`` of them are done, and it has run longer than
    ``slow_factor`` times the median duration of the done ones and longer
    than ``min_runtime`` seconds (with ``min_completed_fraction`` 0 and none
    done yet, longer than ``min_runtime``).

    Attributes
    ----------
    min_tasks, min_completed_fraction, slow_factor, min_runtime
        As above.
    interval
        Seconds between two checks of the running tasks.
    """

    min_tasks: int = 10
    min_completed_fraction: float = 0.5
    slow_factor: float = 3.0
    min_runtime: float = 0.0
    interval: float = 0.05

    def __post_init__(self) -> None:
        if self.min_tasks < 1 or not 0 <= self.min_completed_fraction <= 1 or self.slow_factor < 1:
            raise ValueError(
                f"{self!r}: min_tasks must be at least 1, min_completed_fraction in [0, 1] "
                "and slow_factor at least 1"
            )
        if self.min_runtime < 0 or self.interval <= 0:
            raise ValueError(f"{self!r}: min_runtime must be >= 0 and interval > 0")


#: Named rules: Spark 4's defaults (``spark.speculation.quantile=0.9``, ``multiplier=3``,
#: ``minTaskRuntime=100ms``, checked every 100 ms) and cubed's ``should_launch_backup`` defaults.
BACKUP_PRESETS = {
    "spark": BackupRule(
        min_tasks=1, min_completed_fraction=0.9, slow_factor=3.0, min_runtime=0.1, interval=0.1
    ),
    "cubed": BackupRule(min_tasks=10, min_completed_fraction=0.5, slow_factor=3.0, min_runtime=0.0),
}


def should_launch_backup(
    running_for: float, completed: Sequence[float], group_size: int, rule: BackupRule
) -> bool:
    """Whether a task that has run ``running_for`` seconds is late (see :class:`BackupRule`).

    ``completed`` are the durations of the finished tasks of its group,
    ``group_size`` the number of tasks in the group.

    Examples
    --------
    >>> cubed = BACKUP_PRESETS["cubed"]
    >>> should_launch_backup(0.35, [0.1] * 6, 10, cubed)
    True
    >>> should_launch_backup(0.35, [0.1] * 4, 10, cubed)  # fewer than half are done
    False
    >>> should_launch_backup(0.25, [0.1] * 6, 10, cubed)  # not 3x the median yet
    False
    >>> should_launch_backup(0.35, [0.1] * 6, 8, cubed)  # too few tasks to judge
    False
    >>> eager = BackupRule(min_tasks=1, min_completed_fraction=0.0, min_runtime=0.02)
    >>> should_launch_backup(0.03, [], 8, eager)  # nothing done yet: min_runtime alone
    True
    """
    if group_size < rule.min_tasks or len(completed) < rule.min_completed_fraction * group_size:
        return False
    if not completed:  # min_completed_fraction 0: min_runtime alone says when
        return running_for > rule.min_runtime
    return running_for > max(rule.slow_factor * float(np.median(completed)), rule.min_runtime)
