"""The scheduler plugin: decode each coded group from its first finished blocks and drop the late ones.

Mechanism (distributed 2026.8). A coded output block is a decode task whose
``run_spec`` is ``CodedTask(decode_block, spec, TaskRef(member_0), ...,
TaskRef(member_n-1))``; the members are the group's block products. Plain
Dask would wait for all ``n``. This plugin watches members reach memory
(``transition`` hook, kept tiny because exceptions there are only logged)
and, from a loop callback rather than re-entrantly, for every waiting decode
whose finished members now suffice (:func:`dask_coded.policy.plan_decode`):

1. replaces the decode's ``run_spec`` with one that references only the
   members it will read and passes ``MISSING`` (None) for the others, so the
   worker is never asked for a key that will not exist, and records the
   recovery set in the spec;
2. removes the dropped members from the decode's ``dependencies`` and
   ``waiting_on`` and the decode from their ``dependents`` and ``waiters``;
3. restricts the decode to workers holding its inputs and not running a
   late member (:func:`dask_coded.policy.decode_workers`), then asks the
   scheduler to transition it to ``processing`` and every member that no
   task waits on any more to ``released`` (which cancels it on its worker;
   product kernels check for that and stop early);
4. once the decode is in memory, restores its original ``run_spec`` and
   re-links the released members as its dependencies, as Dask leaves the
   released intermediates of any finished task. Resubmitting the same graph
   then matches what the scheduler holds (a mismatch would be logged as a key
   collision and leave orphan tasks), and forgetting the decode forgets the
   members. If the decode ends any other way, its dropped members are
   forgotten.

Why a rewrite and not a collector task or client-side assembly: the result
stays an ordinary key of an ordinary Dask array, so ``dask.compute``,
``persist`` and ``client.compute`` all work, and nothing holds a thread or a
client connection while it waits.

Also, in ``update_graph``, coded blocks of encode layers are spread one per
worker (coded block ``i`` on worker ``i mod W``, a loose restriction), so a
straggler delays only its own blocks' products. Groups decoded with
``max_errors=t`` go further: member ``i`` is pinned to worker ``i mod W``
(a strict restriction, so work stealing cannot hand a faulty worker a second
member of the same group and turn one wrong worker into two wrong results).
When a worker leaves, its pinned tasks are freed to run anywhere.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from typing import Any

from dask._task_spec import Task, TaskRef
from distributed.diagnostics.plugin import SchedulerPlugin

from .blocks import CORRECTIONS_TOPIC, MISSING, NONFINITE_TYPENAME, CodedTask, DecodeSpec, decode_block
from .policy import (
    coded_block_index,
    decode_workers,
    dropped_members,
    plan_decode,
    spread_worker,
    time_saved,
)

__all__ = ["CodedSchedulerPlugin", "register", "plugin_stats"]

logger = logging.getLogger(__name__)

#: The plugin's name on the scheduler (``scheduler.plugins[NAME]``).
NAME = "dask-coded"


def _decode_spec(ts: Any) -> DecodeSpec | None:
    spec = ts.run_spec
    if isinstance(spec, Task) and spec.func is decode_block and spec.args:
        head = spec.args[0]
        return head if isinstance(head, DecodeSpec) else None
    return None


class CodedSchedulerPlugin(SchedulerPlugin):
    """Decode coded groups as soon as a recovery set is in memory; release the late members.

    Parameters
    ----------
    spread
        Place coded block ``i`` of every encoding on worker ``i mod W``
        (loosely: another worker takes over if that one is gone).

    Examples
    --------
    Register on a running cluster (or start the scheduler with
    ``dask scheduler --preload dask_coded.plugin``):

    >>> from distributed import Client, LocalCluster
    >>> import dask_coded
    >>> with LocalCluster(n_workers=2, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client:
    ...         dask_coded.register(client)
    ...         sorted(dask_coded.plugin_stats(client))  # doctest: +NORMALIZE_WHITESPACE
    ['corrections', 'corrections_by_block', 'corrections_by_worker', 'decodes_early', 'members_cancelled',
     'members_dropped', 'placements', 'time_saved_estimate']
    """

    name = NAME

    def __init__(self, spread: bool = True) -> None:
        self.spread = spread
        self.counters = {
            "decodes_early": 0,
            "members_dropped": 0,
            "members_cancelled": 0,
            "placements": 0,
            "time_saved_estimate": 0.0,
            "corrections": 0,
        }
        #: worker address -> wrong block products it computed that decodes corrected
        self.corrections_by_worker: dict[str, int] = {}
        #: coded-block index -> wrong products corrected at that index
        self.corrections_by_block: dict[int, int] = {}
        #: product key -> the worker that computed it, while it is alive
        self._computed_by: dict[Any, str] = {}
        self._pending: set[Any] = set()
        self._settling: set[Any] = set()
        #: decode key -> (its original run_spec, keys of the members it dropped)
        self._rewritten: dict[Any, tuple[Any, tuple[Any, ...]]] = {}
        #: product key -> the worker it is pinned to (groups with max_errors)
        self._pinned: dict[Any, str] = {}
        self._flush_scheduled = False
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    # -- placement -------------------------------------------------------------

    def update_graph(self, scheduler: Any, *, tasks: Iterable[Any] = (), **kwargs: Any) -> None:
        if not self.spread:
            return
        workers = [ws.address for ws in scheduler.running]
        if not workers:
            return
        for key in tasks:
            ts = scheduler.tasks.get(key)
            if ts is None:
                continue
            spec = _decode_spec(ts)
            if spec is not None and spec.max_errors:
                for index, ref in enumerate(ts.run_spec.args[1:]):
                    member = scheduler.tasks.get(ref.key) if isinstance(ref, TaskRef) else None
                    worker = spread_worker(index, workers)
                    if member is not None and worker is not None and self._place(member, worker, loose=False):
                        self._pinned[member.key] = worker
            block = coded_block_index(key)
            if block is not None:
                self._place(ts, spread_worker(block, workers), loose=True)

    def _place(self, ts: Any, worker: str | None, loose: bool) -> bool:
        if worker is None or ts.state not in ("released", "waiting"):
            return False
        if ts.worker_restrictions or ts.host_restrictions or ts.resource_restrictions:
            return False  # the user placed it
        ts.worker_restrictions = {worker}
        ts.loose_restrictions = loose
        self.counters["placements"] += 1
        return True

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        freed = [key for key, pinned in self._pinned.items() if pinned == worker]
        recommendations = {}
        for key in freed:
            del self._pinned[key]
            ts = scheduler.tasks.get(key)
            if ts is not None and ts.worker_restrictions == {worker}:
                ts.loose_restrictions = True
                if ts.state == "no-worker":
                    recommendations[key] = "processing"
        if recommendations:
            scheduler.loop.add_callback(scheduler.transitions, recommendations, f"coded-unpin-{time.time()}")

    # -- early decode ----------------------------------------------------------

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if self.scheduler is None:
            return
        if finish == "memory" and start == "processing" and "worker" in kwargs:
            self._computed_by[key] = kwargs["worker"]
        elif finish == "forgotten":
            self._computed_by.pop(key, None)
            self._pinned.pop(key, None)
        if key in self._rewritten and finish in ("memory", "erred", "released", "forgotten"):
            self._settling.add(key)
        if finish == "memory":
            ts = self.scheduler.tasks.get(key)
            for dependent in ts.dependents if ts is not None else ():
                if dependent.state == "waiting" and _decode_spec(dependent) is not None:
                    self._pending.add(dependent.key)
        if (self._pending or self._settling) and not self._flush_scheduled:
            self._flush_scheduled = True
            self.scheduler.loop.add_callback(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, set()
        settling, self._settling = self._settling, set()
        recommendations: dict[Any, str] = {}
        try:
            for key in pending:
                ts = self.scheduler.tasks.get(key)
                if ts is not None and ts.state == "waiting":
                    self._decode_early(ts, recommendations)
            for key in settling:
                self._settle(key, recommendations)
        except Exception:  # never take the scheduler down; the graph still completes without us
            logger.exception("dask-coded plugin failed to decode early")
        if recommendations:
            self.scheduler.transitions(recommendations, stimulus_id=f"coded-decode-early-{time.time()}")

    def _settle(self, key: Any, recommendations: dict[Any, str]) -> None:
        """Undo a rewrite once the decode has run (or forget its dropped members if it will not)."""
        original, dropped = self._rewritten.pop(key)
        tasks = self.scheduler.tasks
        ts = tasks.get(key)
        members = [tasks[k] for k in dropped if k in tasks]
        if ts is not None and ts.state == "memory":
            ts.run_spec = original
            for member in members:
                ts.add_dependency(member)
            return
        for member in members:
            if member.state == "released" and not (member.dependents or member.waiters or member.who_wants):
                recommendations[member.key] = "forgotten"

    def _decode_early(self, ts: Any, recommendations: dict[Any, str]) -> None:
        spec = _decode_spec(ts)
        if spec is None or spec.recovery_set is not None:
            return
        refs = ts.run_spec.args[1:]
        tasks = self.scheduler.tasks
        members: list[Any] = [tasks.get(r.key) if isinstance(r, TaskRef) else MISSING for r in refs]
        finished = [i for i, m in enumerate(members) if m is not None and m.state == "memory"]
        # The scheduler set ts.type from the result when the member reached memory (before this
        # callback): products holding NaN/inf are NonFiniteProducts (see dask_coded.blocks).
        nonfinite = [i for i in finished if members[i].type == NONFINITE_TYPENAME]
        plan = plan_decode(
            spec.code, spec.output, finished, spec.max_errors, dtype=spec.dtype, nonfinite=nonfinite
        )
        if plan is None:
            return
        dropped = dropped_members(members, plan.needed)
        if not dropped:
            return  # every member is needed: plain scheduling does the rest
        new_spec = dataclasses.replace(spec, recovery_set=plan.recovery_set)
        args = [r if i in plan.needed else MISSING for i, r in enumerate(refs)]
        self._rewritten[ts.key] = (ts.run_spec, tuple(members[i].key for i in dropped))
        ts.run_spec = CodedTask(ts.key, decode_block, new_spec, *args)
        busy = set()
        for i in dropped:
            member = members[i]
            ts.dependencies.discard(member)
            member.dependents.discard(ts)
            if ts.waiting_on:
                ts.waiting_on.discard(member)
            if member.waiters:
                member.waiters.discard(ts)
            if member.processing_on is not None:
                busy.add(member.processing_on.address)
            if member.waiters or member.who_wants or member.key in recommendations:
                continue  # another task still needs it
            self.counters["members_dropped"] += 1
            if member.state == "processing":
                self.counters["members_cancelled"] += 1
                expected = member.prefix.duration_average if member.prefix.duration_average > 0 else None
                running_for = member.processing_on.executing.get(member, 0.0)
                self.counters["time_saved_estimate"] += time_saved(expected, running_for)
            if member.state != "released":
                recommendations[member.key] = "released"
        if ts.waiting_on:
            return  # a needed member is not in memory after all; leave it to the scheduler
        holders = {ws.address for i in plan.needed for ws in (members[i].who_has or ())}
        running = [ws.address for ws in self.scheduler.running]
        restriction = decode_workers(holders, busy, running)
        if restriction is not None and not (ts.worker_restrictions or ts.host_restrictions):
            ts.worker_restrictions = restriction
            ts.loose_restrictions = True
        self.counters["decodes_early"] += 1
        recommendations[ts.key] = "processing"

    def log_event(self, topic: str, msg: Any) -> None:
        if topic != CORRECTIONS_TOPIC or not isinstance(msg, dict) or self.scheduler is None:
            return
        ts = self.scheduler.tasks.get(msg.get("key"))
        refs = ts.run_spec.args[1:] if ts is not None and _decode_spec(ts) is not None else ()
        for block in msg.get("blocks", ()):
            self.counters["corrections"] += 1
            ref = refs[block] if block < len(refs) else None
            worker = self._computed_by.get(ref.key, "unknown") if isinstance(ref, TaskRef) else "unknown"
            self.corrections_by_worker[worker] = self.corrections_by_worker.get(worker, 0) + 1
            self.corrections_by_block[block] = self.corrections_by_block.get(block, 0) + 1

    def stats(self) -> dict[str, Any]:
        """The counters, and the workers whose wrong products were corrected.

        Decodes done early, members dropped and cancelled, time saved (a
        lower bound), and wrong products corrected.
        """
        return {
            **self.counters,
            "corrections_by_worker": dict(self.corrections_by_worker),
            "corrections_by_block": dict(self.corrections_by_block),
        }


def register(client: Any, **options: Any) -> Any:
    """Register :class:`CodedSchedulerPlugin` on ``client``'s scheduler.

    Registering again replaces the plugin (and its counters). With an
    asynchronous client, await the result.

    Examples
    --------
    See :class:`CodedSchedulerPlugin`.
    """
    return client.register_plugin(CodedSchedulerPlugin(**options), name=NAME)


def plugin_stats(client: Any) -> dict[str, Any]:
    """The plugin's counters, read from the scheduler (the registered object is a copy).

    With an asynchronous client, await the result.

    Examples
    --------
    See :class:`CodedSchedulerPlugin`.
    """

    def read(dask_scheduler: Any) -> dict[str, Any]:
        plugin = dask_scheduler.plugins.get(NAME)
        if plugin is None:
            raise RuntimeError("the dask-coded plugin is not registered on this scheduler")
        return plugin.stats()

    return client.run_on_scheduler(read)


def dask_setup(scheduler: Any) -> None:
    """``dask scheduler --preload dask_coded.plugin`` registers the plugin at start-up."""
    scheduler.add_plugin(CodedSchedulerPlugin(), name=NAME)
