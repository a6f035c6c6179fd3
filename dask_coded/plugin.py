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
3. keeps the decode off workers running a late member or measured slow
   (:func:`dask_coded.policy.decode_workers`: a strict restriction to every
   other worker, so that work stealing cannot move it back onto them; the
   scheduler still prefers the allowed workers holding its inputs), then
   asks the scheduler to transition it to ``processing`` and every member no
   task waits on any more to ``released`` (which cancels it on its worker;
   product kernels check for that and stop early).

The rewrite is never undone: the decode's ``run_spec`` and its dependencies
stay consistent for as long as the task exists, whatever is released,
cancelled or recomputed. A client that submits the same graph again (the
same keys) would carry the original ``run_spec``, which the scheduler would
see as a key collision ("Detected different run_spec") and resolve by
keeping stale links, a hang on the worker. So the plugin sees every new graph
first (:func:`dask_coded._compat.intercept_graph_updates`) and substitutes
the rewritten spec for any decode it still holds: the same key computes the
same block from the same recovery set.

Why a rewrite and not a collector task or client-side assembly: the result
stays an ordinary key of an ordinary Dask array, so ``dask.compute``,
``persist`` and ``client.compute`` all work, and nothing holds a thread or a
client connection while it waits.

Also, in ``update_graph``, coded blocks of encode layers are spread one per
worker (coded block ``i`` on worker ``i mod W``, a loose restriction), so a
straggler delays only its own blocks' products, and member ``i`` of a group
is pinned to worker ``i mod W``: a strict restriction, so work stealing cannot
hand a slow worker a second member of the same group (it looks idle once its
late member is released, and would steal the parities queued elsewhere), nor
turn one faulty worker into two wrong results under ``max_errors=t``.
Decodes are kept off workers measured slow from the start (strictly, as
above). When a worker leaves or stops taking tasks (paused for memory,
retiring), its pinned tasks are freed to run anywhere, and so is a decode
whose allowed workers have all gone.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado.ioloop import PeriodicCallback

from . import _compat, config, keys
from ._compat import Task, reference_key
from .backup import BackupTasks
from .blocks import (
    CORRECTIONS_TOPIC,
    MISSING,
    UNCODED_TYPENAME,
    UNMIXABLE_TYPENAMES,
    CodedTask,
    DecodeSpec,
    decode_block,
    replica_block,
    scaled_parity_block,
)
from .codes import ONE_SIDED
from .errors import DaskCodedWarning
from .policy import (
    BACKUP_PRESETS,
    BackupRule,
    coded_block_index,
    decode_workers,
    dropped_members,
    late_members,
    member_positions,
    member_workers,
    plan_decode,
    slow_workers,
    spread_position,
    spread_worker,
    time_saved,
)
from .stats import TaskTimes, task_kind

__all__ = ["CodedSchedulerPlugin", "register", "unregister", "plugin_stats"]

logger = logging.getLogger(__name__)

#: The plugin's name on the scheduler (``scheduler.plugins[NAME]``).
NAME = "dask-coded"
#: Where ``dropped_by_worker`` counts a late member that no worker had started or was to run.
UNASSIGNED = "unassigned"
#: Task states after which a decode is no longer in flight.
_SETTLED = frozenset({"memory", "erred", "released", "forgotten"})
#: The scheduler's periodic callbacks that launch backups: of any late task, of late decodes.
_BACKUP_CALLBACKS = ("dask-coded-backup", "dask-coded-decode-backup")


def _decode_spec(ts: Any) -> DecodeSpec | None:
    spec = ts.run_spec
    if isinstance(spec, Task) and spec.func is decode_block and spec.args:
        head = spec.args[0]
        return head if isinstance(head, DecodeSpec) else None
    return None


def _is_parity_encode(ts: Any) -> bool:
    spec = ts.run_spec
    return (
        keys.key_name(ts.key).startswith(keys.ENCODE)
        and isinstance(spec, Task)
        and spec.func in (scaled_parity_block, replica_block)
    )


def _loosen(scheduler: Any, tasks: Iterable[Any], why: str) -> None:
    """Make ``tasks``' worker restrictions a preference; those left with no worker are scheduled again."""
    recommendations = {}
    for ts in tasks:
        ts.loose_restrictions = True
        if ts.state == "no-worker":
            recommendations[ts.key] = "processing"
    if recommendations:
        scheduler.loop.add_callback(scheduler.transitions, recommendations, f"coded-{why}-{time.time()}")


def _block_holders(member: Any) -> set[str]:
    """Workers holding ``member``'s coded block (its largest one, for a two-sided product)."""
    held = [d for d in member.dependencies if d.who_has and coded_block_index(d.key) is not None]
    if not held:
        return set()
    return {ws.address for ws in max(held, key=lambda d: d.nbytes).who_has}


def _member_worker(ts: Any, pinned: str | None = None) -> str:
    """The worker a late member was running on, is held by or is ``pinned`` to, or :data:`UNASSIGNED`."""
    if ts.processing_on is not None:
        return ts.processing_on.address
    holders = sorted(ws.address for ws in ts.who_has or ())
    return holders[0] if holders else pinned or UNASSIGNED


class CodedSchedulerPlugin(SchedulerPlugin):
    """Decode coded groups as soon as a recovery set is in memory; release the late members.

    Parameters
    ----------
    spread
        Place coded block ``i`` of every encoding on worker ``i mod W``,
        and each group of a grouped code on distinct workers
        (:func:`~dask_coded.policy.spread_position`; loosely: another worker
        takes over if that one is gone).
    backup
        Backup tasks for every graph, coded or not (speculative execution,
        :mod:`dask_coded.backup`): ``"off"``, a preset (``"spark"``,
        ``"cubed"``), a :class:`~dask_coded.policy.BackupRule`, or None for
        ``dask.config``'s ``coded.backup``. Late decodes are copied by their
        own rule, ``coded.decode-backup-after``, whatever this one says.

    Examples
    --------
    Register on a running cluster (or start the scheduler with
    ``dask scheduler --preload dask_coded.plugin``):

    >>> from distributed import Client, LocalCluster
    >>> import dask_coded
    >>> with LocalCluster(n_workers=2, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client:
    ...         dask_coded.register(client)
    ...         counters = sorted(dask_coded.plugin_stats(client))
    ...         dask_coded.unregister(client)  # also lifts the pins it set (see unregister)
    >>> counters  # doctest: +NORMALIZE_WHITESPACE
    ['cancelled_by_worker', 'corrections', 'corrections_by_block', 'corrections_by_worker',
     'decode_backups_cancelled', 'decode_backups_failed', 'decode_backups_launched',
     'decode_backups_won', 'decodes_early',
     'dropped_by_worker', 'duration_ratios', 'groups_in_flight', 'members_cancelled', 'members_dropped',
     'placements', 'slow_workers', 'time_saved_estimate']
    """

    name = NAME

    def __init__(self, spread: bool = True, backup: str | BackupRule | None = None) -> None:
        self.spread = spread
        self.backup_rule = _backup_rule(config.get("backup") if backup is None else backup)
        self.decode_backup_rule = _decode_backup_rule(config.get("decode-backup-after"))
        self._backups: BackupTasks | None = None
        #: the backup checks this plugin runs, by their names in the scheduler's periodic callbacks
        self._callbacks: dict[str, PeriodicCallback] = {}
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
        #: each worker's task durations relative to the cluster's, for the same kind of task
        self.task_times = TaskTimes()
        #: worker address -> median of its recent duration ratios (``task_times.ratios``)
        self.duration_ratios = self.task_times.ratios
        #: worker address -> its recent duration ratios, for fitting the cluster's delays
        self.duration_samples = self.task_times.samples
        #: worker address -> late members dropped that it was running or holding (UNASSIGNED: not started)
        self.dropped_by_worker: dict[str, int] = {}
        #: worker address -> late members cancelled while it was running them
        self.cancelled_by_worker: dict[str, int] = {}
        #: decode tasks between "waiting" and a final state (the groups in flight), kept as transitions
        #: happen so that reading their number never scans the scheduler's tasks
        self._in_flight: set[Any] = set()
        #: product key -> the worker that computed it, while it is alive
        self._computed_by: dict[Any, str] = {}
        self._pending: set[Any] = set()
        #: dropped members released by the last flush, to forget once nothing refers to them
        self._orphans: set[Any] = set()
        #: decode keys whose run_spec this plugin rewrote, while the scheduler holds them
        self._rewritten: set[Any] = set()
        #: product key -> the worker it is pinned to (groups with max_errors)
        self._pinned: dict[Any, str] = {}
        #: decodes and their inputs this plugin restricted away from slow or busy workers, while held
        self._kept_off: set[Any] = set()
        self._flush_scheduled = False
        self._warned: set[str] = set()
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        if scheduler.plugins.get(NAME, self) is not self:
            # register() replaces the plugin, as its docstring says; removed first, distributed does not
            # warn that it is "overwriting" one (an error where warnings are). A preloaded plugin is
            # already in place when it starts.
            scheduler.remove_plugin(NAME)
        previous = _compat.intercepting_plugin(scheduler)
        if isinstance(previous, CodedSchedulerPlugin) and previous is not self:
            self._take_over(previous, scheduler)
        _add_dashboard_page(scheduler)
        missing = _compat.missing_internals(scheduler)
        if missing:
            message = (
                "dask-coded: this version of distributed lacks "
                f"{', '.join(missing)}; coded graphs stay correct but wait for every block "
                "(no early decoding)"
            )
            # One warning where users see it (a warning raised here would stay in the scheduler).
            logger.warning(message)
            _compat.warn_clients(scheduler, message, DaskCodedWarning)
            return
        self.scheduler = scheduler
        # The same dict, kept up to date: clients read it to size codes (coded.parity: auto).
        scheduler.set_metadata(keys=_compat.DURATION_RATIOS_METADATA, value=self.duration_ratios)
        scheduler.set_metadata(keys=_compat.DURATION_SAMPLES_METADATA, value=self.duration_samples)
        _compat.intercept_graph_updates(scheduler, self._before_graph_update)
        if self.backup_rule is None and self.decode_backup_rule is None:
            return
        self._backups = BackupTasks(
            scheduler,
            self.backup_rule,
            self._rewritten.add,
            self.decode_backup_rule,
            self._decode_copy_workers,
        )
        # Each rule checks its own tasks at its own interval: decodes every few milliseconds, the
        # others (every running task, with backup on) as often as the rule asks.
        checks = (self._backups.check, self._backups.check_decodes)
        for name, rule, check in zip(_BACKUP_CALLBACKS, (self.backup_rule, self.decode_backup_rule), checks):
            if rule is not None:
                callback = PeriodicCallback(
                    functools.partial(self._check_backups, check), rule.interval * 1000
                )
                self._callbacks[name] = scheduler.periodic_callbacks[name] = callback
                callback.start()

    def _take_over(self, previous: CodedSchedulerPlugin, scheduler: Any) -> None:
        """Keep what an earlier plugin (replaced, or unregistered) learned, and did to tasks still held.

        Resubmitted, the decodes it rewrote must keep their rewrites; and the
        restrictions it set, lifted by no one when their worker leaves, would
        leave their tasks without a worker for good (a hang). Unregistered, it
        saw no task forgotten since, and no worker leave: what it knew of
        those tasks is dropped, and pins to those workers are lifted now.
        """
        tasks = scheduler.tasks
        # What it learned of the workers: a worker found wrong must not be trusted again, nor a slow
        # one measured afresh, because options changed.
        self.task_times = previous.task_times
        self.duration_ratios, self.duration_samples = self.task_times.ratios, self.task_times.samples
        self.corrections_by_worker.update(previous.corrections_by_worker)
        self._rewritten |= {key for key in previous._rewritten if key in tasks}
        self._pinned.update(
            (key, worker)
            for key, worker in previous._pinned.items()
            if key in tasks and tasks[key].worker_restrictions == {worker}
        )
        self._kept_off |= {key for key in previous._kept_off if key in tasks}
        kept_to = (tasks[key].worker_restrictions or () for key in self._kept_off)
        for worker in set(self._pinned.values()).union(*kept_to) - set(scheduler.workers):
            self._unpin(worker, scheduler)

    def _release_restrictions(self) -> None:
        """Lift every pin and keep-off this plugin set: each becomes a preference (loose).

        :func:`unregister` calls it, since a removed plugin no longer
        lifts a pin when its worker leaves.
        """
        held = [self.scheduler.tasks.get(key) for key in [*self._pinned, *self._kept_off]]
        _loosen(self.scheduler, [ts for ts in held if ts is not None and ts.worker_restrictions], "release")
        self._pinned.clear()
        self._kept_off.clear()

    def _check_backups(self, check: Callable[[], None]) -> None:
        # Removing a plugin (unregister_scheduler_plugin, or register() replacing it) does not tell it.
        if self in self.scheduler.plugins.values():
            check()
        else:
            self._stop_backups()

    def _decode_copy_workers(self, ts: Any) -> set[str] | None:
        """Where a copy of a late decode may run: not on slow workers, and where the user placed it.

        The busy workers its placement avoided have been released from their late members since.
        A decode that locates wrong products is not copied: its copy would count them again.
        """
        spec = _decode_spec(ts)
        if spec is None or spec.max_errors:
            return None
        running = {ws.address for ws in self.scheduler.running}
        if ts.worker_restrictions and ts.key not in self._kept_off:
            return ts.worker_restrictions & running
        return running - self._untrusted()

    async def close(self) -> None:
        self._stop_backups()

    def _stop_backups(self) -> None:
        """Stop launching backups, and release the copies still racing: their originals run on."""
        for name, callback in self._callbacks.items():
            callback.stop()
            if self.scheduler.periodic_callbacks.get(name) is callback:  # not a later plugin's
                del self.scheduler.periodic_callbacks[name]
        self._callbacks.clear()
        if self._backups is not None:
            self._backups.stop()

    def _before_graph_update(self, dsk: dict[Any, Any]) -> None:
        """Give a resubmitted decode the run_spec the scheduler holds for it (see the module docstring)."""
        tasks = self.scheduler.tasks
        for key in self._rewritten.intersection(dsk):
            ts = tasks.get(key)
            if ts is not None:
                dsk[key] = ts.run_spec

    # -- placement -------------------------------------------------------------

    def update_graph(self, scheduler: Any, *, tasks: Iterable[Any] = (), **kwargs: Any) -> None:
        if self.scheduler is None:
            return
        workers = [ws.address for ws in scheduler.running] if self.spread else []
        avoid = self._untrusted()
        # What a faulty worker encodes from would be wrong in data blocks and parities alike, which no
        # check sees: walk through the coded blocks too (restricted, those tasks are not queued).
        through_coded = bool(self._faulty())
        inputs_seen: set[Any] = set()
        for key in tasks:
            ts = scheduler.tasks.get(key)
            if ts is None:
                continue
            spec = _decode_spec(ts)
            if spec is not None:
                self._parities_last(ts, spec)
                if avoid and self._keep_off(ts, avoid):
                    # A slow machine slows the decode too; keep it off before it is scheduled.
                    self.counters["placements"] += 1
                if avoid:
                    self._keep_inputs_off(ts, avoid, inputs_seen, through_coded)
            if not workers:
                continue
            if spec is not None:
                self._pin_members(ts, spec, workers)
            position = spread_position(key, len(workers))
            if position is not None:
                worker = spread_worker(position, workers)
                if worker is not None:
                    self._place(ts, {worker}, loose=True)

    def _keep_inputs_off(self, ts: Any, slow: set[str], seen: set[Any], through_coded: bool) -> None:
        """Keep the tasks that decode ``ts``'s members read (operands, what they come from) off ``slow``.

        Every member waits for them, so one of them on a slow machine delays
        the whole group, whatever its parities: the small operand of a
        matvec computed beside data the slow machine holds, say. Coded
        blocks are left to the spread (the slow machine's own block feeds
        only its member, which is dropped), and so is what they are encoded
        from, unless ``through_coded``: a chunk a faulty worker computed
        would be encoded wrong into parities and data blocks alike, a wrong
        answer no check can see. Tasks already placed, running or done are
        left alone (:meth:`_keep_off`).
        """
        stack = [
            dependency
            for member in ts.dependencies
            for dependency in member.dependencies
            if dependency.key not in seen
        ]
        while stack:
            dependency = stack.pop()
            if dependency.key in seen:
                continue
            seen.add(dependency.key)
            if dependency.state not in ("released", "waiting"):
                continue
            coded = coded_block_index(dependency.key) is not None
            if coded and not through_coded:
                continue
            if not coded and self._keep_off(dependency, slow):
                self.counters["placements"] += 1
            stack.extend(d for d in dependency.dependencies if d.key not in seen)

    def _parities_last(self, ts: Any, spec: DecodeSpec) -> None:
        """Run a one-sided group's parity members (and their encodes) after the rest of the graph.

        They are insurance: with nothing late, the group decodes from its
        data members and the parities are released before they start.
        With a straggler they run on the other workers once their own data
        products are done, which is when they are needed.
        """
        if type(spec.code).kind != ONE_SIDED:
            return
        tasks = self.scheduler.tasks
        for ref in ts.run_spec.args[1 + spec.code.k :]:
            member = tasks.get(reference_key(ref))
            if member is None or not _compat.run_last(member):
                continue
            for dependency in member.dependencies:
                # An on-the-fly encode's parity block: needed only by the parity product.
                if _is_parity_encode(dependency):
                    _compat.run_last(dependency)

    def _pin_members(self, ts: Any, spec: DecodeSpec, workers: list[str]) -> None:
        """Pin each member of a group to a worker of its own (:func:`~dask_coded.policy.member_workers`).

        Work stealing could otherwise hand one worker a second member of the
        same group. A slow worker whose late member was just released looks
        idle to the scheduler and steals the members still queued elsewhere
        (the parities, which run last), so the group waits for it after all;
        and one faulty worker with two members gives two wrong results. A
        ``max_errors`` decode learns which worker computes each member
        (``DecodeSpec.suspects``), so a worker with several members counts as
        one error. Only the spec's contents change, not its dependencies, so a
        resubmitted graph matches it.
        """
        members = [
            self.scheduler.tasks.get(key) if key is not None else None
            for key in map(reference_key, ts.run_spec.args[1:])
        ]
        homes: Sequence[str | None]
        if all(m is None or m.key in self._pinned for m in members):
            homes = [None] * len(members)  # every decode of the group after the first
        else:
            holders = [set() if m is None else _block_holders(m) for m in members]
            positions = member_positions(spec.code, spec.first_position, len(workers))
            homes = member_workers(positions[: len(members)], holders, workers)
        suspects: list[str | None] = []
        for member, worker in zip(members, homes):
            # _place refuses a member the user placed, or one running or done already.
            if member is not None and worker is not None and self._place(member, {worker}, loose=False):
                self._pinned[member.key] = worker
                for dependency in member.dependencies:
                    # Its encode on the fly: stolen, it delays its member, and on a faulty worker
                    # (idle, as nothing else is given it) it is wrong under another worker's name.
                    if coded_block_index(dependency.key) is not None:
                        self._pin_beside(dependency, worker)
            suspects.append(None if member is None else self._pinned.get(member.key))
        if not spec.max_errors:
            return
        known = {i: w for i, w in enumerate(suspects) if w is not None}
        if not spec.code.is_recovery_set(range(spec.code.n), spec.max_errors, suspects=known):
            # Counted by worker, even a healthy cluster would leave too few checks (every decode raised,
            # measured): each member counts on its own, as without the plugin.
            remedy = (
                "build the product while a client is connected (so dask_coded.dot sizes the code for "
                "the cluster) or add workers"
                if type(spec.code).kind == ONE_SIDED
                else "two-sided codes are not sized for the cluster: use code='mds' or add workers"
            )
            self._warn_clients(
                f"dask-coded: {spec.code!r} cannot correct max_errors={spec.max_errors} faulty "
                f"workers on this cluster of {len(workers)}: its {spec.code.n} members share "
                "workers, and a faulty worker gets all of its members wrong. Each member is checked "
                f"on its own: a faulty worker's wrong results will raise DecodingError; {remedy}."
            )
            return
        if ts.state in ("released", "waiting") and spec.suspects is None:
            new_spec = dataclasses.replace(spec, suspects=tuple(suspects))
            ts.run_spec = CodedTask(ts.key, decode_block, new_spec, *ts.run_spec.args[1:])

    def _pin_beside(self, ts: Any, worker: str) -> None:
        """Pin ``ts`` to ``worker`` strictly, also where ``update_graph`` spread it there loosely."""
        spread_there = ts.worker_restrictions == {worker} and ts.loose_restrictions
        if spread_there and ts.state in ("released", "waiting"):
            ts.loose_restrictions = False
            self._pinned[ts.key] = worker
        elif self._place(ts, {worker}, loose=False):
            self._pinned[ts.key] = worker

    def _warn_clients(self, message: str) -> None:
        """A warning on every connected client (once per message), and in the scheduler's log."""
        if message in self._warned:
            return
        self._warned.add(message)
        logger.warning(message)
        _compat.warn_clients(self.scheduler, message, DaskCodedWarning)

    def _place(self, ts: Any, workers: set[str], loose: bool) -> bool:
        if not workers or ts.state not in ("released", "waiting"):
            return False
        if ts.worker_restrictions or ts.host_restrictions or ts.resource_restrictions:
            return False  # the user placed it
        ts.worker_restrictions = set(workers)
        ts.loose_restrictions = loose
        self.counters["placements"] += 1
        return True

    def _faulty(self) -> set[str]:
        """Workers whose products have been found wrong (under ``max_errors``)."""
        return set(self.corrections_by_worker) - {"unknown"}

    def _untrusted(self) -> set[str]:
        """Workers to keep decodes and the tasks their members read off: slow ones, and faulty ones.

        ``max_errors`` checks products only: a decode, or an operand every
        product reads, computed by a worker that returns wrong results would
        be wrong unseen. Once a worker's products have been found wrong, it
        is not trusted with them again.
        """
        return slow_workers(self.duration_ratios) | self._faulty()

    def _keep_off(
        self, ts: Any, slow: set[str], busy: Iterable[str] = (), holders: Iterable[str] = ()
    ) -> bool:
        """Keep ``ts`` (a decode, or a task its members read) off ``slow`` and ``busy`` workers.

        The workers allowed are :func:`~dask_coded.policy.decode_workers`'s.

        False if it cannot be or need not be. The restriction is strict, because
        the scheduler's work stealing hands a loosely restricted task to any idle
        worker when none of its allowed workers is idle (``_get_thief`` in
        ``distributed/stealing.py``, the same on 2025.1 and 2026.8), and a worker
        whose late members were just released is idle to the scheduler, however
        slow it is. :meth:`_unpin` lifts the restriction if all the allowed
        workers leave or stop taking tasks.
        """
        if ts.state not in ("released", "waiting"):
            return False
        if ts.host_restrictions or ts.resource_restrictions:
            return False  # the user placed it
        if ts.worker_restrictions and ts.key not in self._kept_off:
            return False  # the user placed it
        allowed = decode_workers(self.scheduler.workers, slow=slow, busy=busy, holders=holders)
        running = {ws.address for ws in self.scheduler.running}
        if allowed is not None and not allowed & running:  # only paused or retiring workers left
            allowed = decode_workers(running, slow=slow, busy=busy, holders=holders)
        if allowed is None:
            return False
        ts.worker_restrictions = allowed
        ts.loose_restrictions = False
        self._kept_off.add(ts.key)
        return True

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        # Under worker churn (adaptive scaling, restarts) per-worker records of gone workers would
        # grow for good; a new worker on the same address starts afresh.
        self.task_times.forget(worker)
        for by_worker in (self.dropped_by_worker, self.cancelled_by_worker, self.corrections_by_worker):
            by_worker.pop(worker, None)
        if self.scheduler is not None:
            self._unpin(worker)

    def _unpin(self, worker: str, scheduler: Any = None) -> None:
        """Free what is pinned to ``worker``, which has left or stopped taking tasks (paused, retiring).

        Its pinned members and encodes may run anywhere (the group has its
        parities for a worker that is gone or stopped), and so may a decode (or
        a task its members read) whose allowed workers have all gone: better a
        slow worker than none. ``scheduler``: the one this plugin is starting on,
        before it takes part.
        """
        scheduler = scheduler or self.scheduler
        freed = []
        for key in [key for key, pinned in self._pinned.items() if pinned == worker]:
            del self._pinned[key]
            ts = scheduler.tasks.get(key)
            if ts is not None and ts.worker_restrictions == {worker}:
                freed.append(ts)
        running = {ws.address for ws in scheduler.running} - {worker}
        for key in list(self._kept_off):
            ts = scheduler.tasks.get(key)
            if ts is None:
                self._kept_off.discard(key)
            elif not ts.loose_restrictions and not (ts.worker_restrictions or set()) & running:
                freed.append(ts)
        _loosen(scheduler, freed, "unpin")

    # -- early decode ----------------------------------------------------------

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if self.scheduler is None:
            return
        if self._backups is not None and self._backups.transition(key, start, finish, kwargs):
            self._schedule_flush()
        if finish in _SETTLED:
            self._in_flight.discard(key)
        elif finish == "waiting" and key not in self._in_flight and keys.is_decode(key):
            waiting = self.scheduler.tasks.get(key)
            if waiting is not None and _decode_spec(waiting) is not None:
                self._in_flight.add(key)
        if finish == "memory":
            ts = self.scheduler.tasks.get(key)
            if ts is None:
                return
            if start == "processing" and "worker" in kwargs:
                if keys.key_name(key).startswith(keys.PRODUCT):  # only members are ever looked up
                    self._computed_by[key] = kwargs["worker"]
                    self.task_times.record_on_time(kwargs["worker"])
                duration = _compat.task_duration(kwargs.get("startstops"))
                self.task_times.record(task_kind(ts.prefix.name, ts.run_spec), kwargs["worker"], duration)
            for dependent in ts.dependents:
                if dependent.state == "waiting" and _decode_spec(dependent) is not None:
                    self._pending.add(dependent.key)
            if self._pending:
                self._schedule_flush()
        elif finish == "forgotten":
            self._computed_by.pop(key, None)
            self._pinned.pop(key, None)
            self._rewritten.discard(key)
            self._kept_off.discard(key)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.scheduler.loop.add_callback(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, set()
        recommendations: dict[Any, str] = {}
        try:
            for key in pending:
                ts = self.scheduler.tasks.get(key)
                if ts is not None and ts.state == "waiting":
                    self._decode_early(ts, recommendations)
            if self._backups is not None:
                self._backups.settle()
        except Exception:  # never take the scheduler down; the graph still completes without us
            logger.exception("dask-coded plugin failed to decode early")
        if recommendations:
            self.scheduler.transitions(recommendations, stimulus_id=f"coded-decode-early-{time.time()}")
        if self._orphans:
            self._forget_orphans()

    def _forget_orphans(self) -> None:
        """Forget released members nothing refers to any more, as Dask forgets unread intermediates."""
        orphans, self._orphans = self._orphans, set()
        _compat.release_unneeded(self.scheduler, orphans, f"coded-forget-dropped-{time.time()}")

    def _decode_early(self, ts: Any, recommendations: dict[Any, str]) -> None:
        spec = _decode_spec(ts)
        if spec is None or ts.key in self._rewritten:
            return
        refs = ts.run_spec.args[1:]
        tasks = self.scheduler.tasks
        keys = [reference_key(r) for r in refs]
        members: list[Any] = [tasks.get(k) if k is not None else MISSING for k in keys]
        finished = [i for i, m in enumerate(members) if m is not None and m.state == "memory"]
        suspects = None
        if spec.max_errors:
            # Who really computed each finished member (pins are freed when a worker leaves).
            pinned = spec.suspects or (None,) * len(members)
            suspects = {i: self._computed_by.get(members[i].key, pinned[i]) for i in finished}
            spec = dataclasses.replace(spec, suspects=tuple(suspects.get(i) for i in range(len(members))))
        # The scheduler set ts.type from the result when the member reached memory (before this
        # callback): products holding NaN/inf are NonFiniteProducts, masked ones MaskedArrays (see
        # dask_coded.blocks); either may be its own output, and no other.
        nonfinite = [i for i in finished if members[i].type in UNMIXABLE_TYPENAMES]
        uncoded = [i for i in finished if members[i].type == UNCODED_TYPENAME]
        parts = spec.parts or (spec,)  # a fused decode: every part, from the same members
        plans = []
        for part in parts:
            plan = plan_decode(
                part.code,
                part.output,
                finished,
                part.max_errors,
                suspects,
                dtype=part.dtype,
                nonfinite=nonfinite,
                uncoded=uncoded,
            )
            if plan is None:
                return
            plans.append(plan)
        needed = {i for plan in plans for i in plan.needed}
        dropped = dropped_members(members, needed)
        if not dropped:
            return  # every member is needed: plain scheduling does the rest
        new_spec = spec.planned(plans)
        args = [r if i in needed else MISSING for i, r in enumerate(refs)]
        ts.run_spec = CodedTask(ts.key, decode_block, new_spec, *args)
        self._rewritten.add(ts.key)
        busy = set()
        late, chance = late_members(spec.code, (i for i in dropped if members[i].state != "memory"))
        for i in dropped:
            member = members[i]
            _compat.drop_dependency(ts, member)
            worker = _member_worker(member, self._pinned.get(member.key))
            if worker != UNASSIGNED and member.state != "memory":
                # Late with this member, started or not (it may still be running a copy of a block
                # the member needs): the decode must not queue behind it.
                busy.add(worker)
            if member.waiters or member.who_wants or member.key in recommendations:
                continue  # another task still needs it
            if worker != UNASSIGNED and i in late:  # once per member: one always dropped is never timed
                self.task_times.record_late(worker, chance)
            self.counters["members_dropped"] += 1
            self.dropped_by_worker[worker] = self.dropped_by_worker.get(worker, 0) + 1
            if member.state == "processing":
                self.counters["members_cancelled"] += 1
                self.cancelled_by_worker[worker] = self.cancelled_by_worker.get(worker, 0) + 1
                expected = member.prefix.duration_average if member.prefix.duration_average > 0 else None
                running_for = member.processing_on.executing.get(member, 0.0)
                self.counters["time_saved_estimate"] += time_saved(expected, running_for)
            if member.state != "released":
                recommendations[member.key] = "released"  # cancels it where it runs
            self._orphans.add(member.key)
        if ts.waiting_on:
            return  # a needed member is not in memory after all; leave it to the scheduler
        holders = {ws.address for i in needed for ws in (members[i].who_has or ())}
        self._keep_off(ts, self._untrusted(), busy=busy, holders=holders)
        self.counters["decodes_early"] += 1
        recommendations[ts.key] = "processing"

    def log_event(self, topic: str, msg: Any) -> None:
        if not isinstance(msg, dict) or self.scheduler is None:
            return
        if msg.get("action") == "worker-status-change" and msg.get("status") != "running":
            self._unpin(topic)  # the scheduler logs a worker's status change under its address
        if topic != CORRECTIONS_TOPIC:
            return
        ts = self.scheduler.tasks.get(msg.get("key"))
        refs = ts.run_spec.args[1:] if ts is not None and _decode_spec(ts) is not None else ()
        for block in msg.get("blocks", ()):
            self.counters["corrections"] += 1
            ref = refs[block] if block < len(refs) else None
            key = reference_key(ref)
            worker = self._computed_by.get(key, "unknown") if key is not None else "unknown"
            self.corrections_by_worker[worker] = self.corrections_by_worker.get(worker, 0) + 1
            self.corrections_by_block[block] = self.corrections_by_block.get(block, 0) + 1

    def stats(self) -> dict[str, Any]:
        """The counters, and the workers whose wrong products were corrected.

        Decodes done early, members dropped and cancelled (in total and by
        worker), time saved (a lower bound), backup copies launched, won and
        cancelled (of decodes, and of other tasks when ``backup`` is on),
        wrong products corrected, the
        groups (decode tasks) now in flight, and each worker's task durations
        relative to the cluster's (``duration_ratios``; above 3x the median
        is slow).
        """
        return {
            **self.counters,
            **(self._backups.counters if self._backups is not None else {}),
            "groups_in_flight": len(self._in_flight),
            "slow_workers": sorted(slow_workers(self.duration_ratios)),
            "duration_ratios": dict(self.duration_ratios),
            "dropped_by_worker": dict(self.dropped_by_worker),
            "cancelled_by_worker": dict(self.cancelled_by_worker),
            "corrections_by_worker": dict(self.corrections_by_worker),
            "corrections_by_block": dict(self.corrections_by_block),
        }


def _backup_rule(setting: Any) -> BackupRule | None:
    """The backup rule from a preset name, a rule, or ``coded.backup``'s mapping."""
    if isinstance(setting, BackupRule):
        return setting
    if setting is False:  # YAML reads an unquoted `off` as False
        return None
    if isinstance(setting, str):
        if setting == "off":
            return None
        if setting not in BACKUP_PRESETS:
            raise ValueError(
                f"unknown backup rule {setting!r}; choose 'off' or one of {sorted(BACKUP_PRESETS)}"
            )
        return BACKUP_PRESETS[setting]
    if not isinstance(setting, Mapping):
        raise ValueError(
            f"coded.backup must be 'off', a preset name or a mapping with a rule, got {setting!r}"
        )
    rule = dict(setting)
    preset = _backup_rule(rule.pop("rule", "off"))
    if preset is None:
        return None
    overrides: dict[str, Any] = {}
    known = {field.name for field in dataclasses.fields(BackupRule)}
    for name, value in rule.items():
        option = name.replace("-", "_")
        if option not in known:
            raise ValueError(
                f"unknown option coded.backup.{name}; the options are rule and "
                f"{', '.join(sorted(n.replace('_', '-') for n in known))}"
            )
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"coded.backup.{name} must be a number or null, got {value!r}")
        overrides[option] = value
    return dataclasses.replace(preset, **overrides)


def _decode_backup_rule(after: Any) -> BackupRule | None:
    """The rule for copying late decodes from ``coded.decode-backup-after`` (seconds, or null/off)."""
    if after is None or after == "off":
        return None
    if isinstance(after, bool) or not isinstance(after, (int, float)) or not after >= 0:
        raise ValueError(f"coded.decode-backup-after must be seconds >= 0 or null, got {after!r}")
    # Judged against recent decodes of every call (dask_coded.backup), from the first decode of a call
    # on (min_completed_fraction 0): the late one may be the only one of its call that combines products.
    return BackupRule(
        min_tasks=1,
        min_completed_fraction=0.0,
        slow_factor=3.0,
        min_runtime=after,
        interval=max(after / 2, 0.005),
    )


def _add_dashboard_page(scheduler: Any) -> None:
    """Serve the Coded page (:mod:`dask_coded.dashboard`) when the scheduler has a dashboard.

    Imported here, not at the top: the page needs Bokeh, which workers never import.
    """
    try:
        from .dashboard import add_page

        add_page(scheduler)
    except Exception:  # a page must never keep the plugin, or the scheduler, from starting
        logger.exception("dask-coded: could not add the Coded page to the dashboard")


def register(client: Any, **options: Any) -> Any:
    """Register :class:`CodedSchedulerPlugin` on ``client``'s scheduler.

    Registering again replaces the plugin and its counters; what the
    earlier one learned of the workers (their speed, which returned wrong
    results) and the pins it set carry over. With an asynchronous client,
    await the result.

    Examples
    --------
    See :class:`CodedSchedulerPlugin`.
    """
    return client.register_plugin(CodedSchedulerPlugin(**options), name=NAME)


def unregister(client: Any) -> Any:
    """Remove :class:`CodedSchedulerPlugin` from ``client``'s scheduler, lifting the pins it set.

    Prefer it to ``client.unregister_scheduler_plugin``: the plugin pins
    coded tasks to workers and lifts a pin when its worker leaves; removed
    without this, a task it pinned would wait for a worker that left
    forever. Here every pin becomes a preference first. With an
    asynchronous client, await the result.

    Raises
    ------
    ValueError
        If the plugin is not registered.

    Examples
    --------
    See :class:`CodedSchedulerPlugin`.
    """

    def remove(dask_scheduler: Any) -> None:
        plugin = dask_scheduler.plugins.get(NAME)
        if plugin is None:
            raise ValueError("the dask-coded plugin is not registered on this scheduler")
        if plugin.scheduler is not None:
            plugin._release_restrictions()
            plugin._stop_backups()
        dask_scheduler.remove_plugin(NAME)

    return client.run_on_scheduler(remove)


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
