"""Backup tasks (speculative execution) for any Dask graph: run a late task again elsewhere, keep the first.

Dask has no speculative execution (dask/distributed#391); Spark and cubed
do. This is the baseline coded computation must beat, and a strategy in its
own right. The decision is :func:`dask_coded.policy.should_launch_backup`;
this module applies it on the scheduler, driven by the scheduler plugin.

A task is judged from when it began to run, as far as the scheduler can
tell (see ``BackupTasks._running``).

Mechanism. A task ``K`` that runs late gets a copy ``B`` (a new key,
``coded-backup-...``, the same function and dependencies) restricted to
other workers and wanted by a pseudo-client, so it counts as needed. If
``K`` finishes first, ``B`` is released (cancelled where it runs). If ``B``
finishes first, ``K`` becomes an alias of ``B``: its ``run_spec`` is
replaced by ``Alias(K, B)``, its dependencies by ``B``, and it is sent
through ``released`` to run again, now a copy of ``B``'s result on ``B``'s
worker. As for decode rewrites, that change is never undone and the
scheduler plugin substitutes it into resubmitted graphs.

Decodes get their own rule (``coded.decode-backup-after``, on by default
whatever the rule for other tasks), judged against the recent decodes of
every call: a decode is a small fraction of a product's work, so where
decodes usually take a fraction of ``decode-backup-after``, one running
longer is on a worker that has become slow, and the whole call waits for
it. (Where they usually take longer, every task waits, and so would a
copy.) Its copy runs only on an idle worker (a wasted copy then costs no one
any time) that the plugin allows (not measured slow; where the user placed
the decode). Decodes that locate wrong products (``max_errors``) are never
copied: the plugin counts their corrections once per decode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _compat, keys
from .policy import BackupRule, should_launch_backup

__all__ = ["BackupTasks", "BACKUP_PREFIX"]

#: Key prefix of backup copies (the name shows on the dashboard and in fault models).
BACKUP_PREFIX = keys.BACKUP
#: The pseudo-client that wants backup copies until one result wins.
_CLIENT = "dask-coded-backup"
#: Task groups whose durations are kept, most recent first out.
_MAX_GROUPS = 1000
#: Durations of decodes kept (the most recent), across calls.
_RECENT_DECODES = 100


@dataclass
class _Group:
    """Durations of one task group's finished tasks, and how many tasks it has."""

    durations: list[float] = field(default_factory=list)


@dataclass
class _Watch:
    """The tasks one rule judges: decodes are checked far more often than other tasks, and alone."""

    rule: BackupRule
    launch: Callable[[Any], None]
    decodes: bool
    #: processing task key -> when the scheduler sent it to a worker
    sent: dict[Any, float] = field(default_factory=dict)
    #: what the last check took to be running, since when, and when it ran
    running: dict[Any, float] = field(default_factory=dict)
    checked: float = -math.inf


class BackupTasks:
    """Launch and settle backup copies of late tasks on a running scheduler.

    Parameters
    ----------
    scheduler
        The ``distributed.Scheduler``.
    rule
        When a running task counts as late (None: only decodes are copied).
    rewritten
        Called with a key whose ``run_spec`` was replaced (so resubmitted
        graphs get the replacement), and with each copy's key (so its decode
        plan is never made again).
    decode_rule
        When a running decode counts as late (None: decodes follow ``rule``).
    decode_copy_workers
        Where a copy of a running task of a decode key name may run (it runs
        on one of them that is idle), or None for no copy.
    """

    def __init__(
        self,
        scheduler: Any,
        rule: BackupRule | None,
        rewritten: Callable[[Any], None],
        decode_rule: BackupRule | None = None,
        decode_copy_workers: Callable[[Any], set[str] | None] = lambda ts: None,
    ) -> None:
        self.scheduler = scheduler
        self.decode_rule = decode_rule
        self._decode_copy_workers = decode_copy_workers
        self._rewritten = rewritten
        self.counters: dict[str, int] = {}
        for kind, kind_rule in (("backups_", rule), ("decode_backups_", decode_rule)):
            if kind_rule is not None:
                events = ("launched", "won", "cancelled", "failed")
                self.counters.update({kind + event: 0 for event in events})
        self._others = None if rule is None else _Watch(rule, self._launch, decodes=False)
        self._decodes = (
            None if decode_rule is None else _Watch(decode_rule, self._launch_decode_copy, decodes=True)
        )
        #: original key -> its backup's key, and back
        self._backup_of: dict[Any, Any] = {}
        self._original_of: dict[Any, Any] = {}
        #: originals whose copy failed while they ran on: never copied again (a copy that raises
        #: would raise again, and one whose worker died may kill the next)
        self._copy_failed: set[Any] = set()
        self._groups: dict[Any, _Group] = {}
        self._settle: list[Any] = []

    # -- hooks (called from the plugin's transition hook: keep them cheap) ---------------

    def transition(self, key: Any, start: str, finish: str, kwargs: dict[str, Any]) -> bool:
        """Record a transition; True when a backup race needs settling in a loop callback."""
        if finish == "processing":
            watch = self._decodes if self._by_decode_rule(key) else self._others
            if watch is not None:
                watch.sent[key] = time.monotonic()
            return False
        # Every transition of every task comes here: the common ones leave after a test or two.
        if start == "processing":  # leaving it, on every path (the scheduler reports each step)
            tracked = (self._others is not None and self._others.sent.pop(key, None) is not None) or (
                self._decodes is not None and self._decodes.sent.pop(key, None) is not None
            )
            if tracked and finish == "memory" and key not in self._original_of:
                ts = self.scheduler.tasks.get(key)
                duration = _compat.task_duration(kwargs.get("startstops"))
                if ts is not None and duration is not None:
                    self._record(ts, duration)
        if self._copy_failed and finish in ("memory", "erred", "forgotten"):
            self._copy_failed.discard(key)
        if (self._backup_of or self._original_of) and finish in ("memory", "erred", "forgotten"):
            if key in self._backup_of or key in self._original_of:
                self._settle.append(key)
                return True
        return False

    def _record(self, ts: Any, duration: float) -> None:
        if isinstance(ts.run_spec, _compat.Alias):
            return  # a won race's alias, handing its copy's result on: not the task's time
        judged_with = self._judged_with(ts)
        group = self._groups.setdefault(judged_with, _Group())
        group.durations.append(duration)
        if judged_with[0] == "decodes" and len(group.durations) > _RECENT_DECODES:
            del group.durations[0]
        if len(self._groups) > _MAX_GROUPS:
            self._groups.pop(next(iter(self._groups)))

    # -- loop callbacks --------------------------------------------------------------

    def check(self) -> None:
        """Launch a backup for every running task the rule calls late (a periodic callback)."""
        if self._others is not None:
            self._check(self._others)

    def check_decodes(self) -> None:
        """Launch a copy of every running decode the decode rule calls late (a periodic callback)."""
        if self._decodes is not None:
            self._check(self._decodes)

    def _check(self, watch: _Watch) -> None:
        now = time.monotonic()
        watch.running, watch.checked = self._running(watch), now
        tasks = self.scheduler.tasks
        for key, since in watch.running.items():
            ts = tasks.get(key)
            if ts is None or ts.state != "processing" or key in self._backup_of or key in self._original_of:
                continue
            if key in self._copy_failed:  # its copy failed: the original runs on alone
                continue
            group = self._groups.get(self._judged_with(ts))
            completed = group.durations if group is not None else []
            if watch.decodes and not _decodes_are_quick(completed, watch.rule):
                continue
            if should_launch_backup(now - since, completed, len(ts.group), watch.rule):
                watch.launch(ts)

    def _running(self, watch: _Watch) -> dict[Any, float]:
        """The tasks each worker is running now, as far as the scheduler can tell, and since when.

        It is not told when a task starts. A worker runs ``nthreads`` tasks at a time, each to its
        end, and starts the others in priority order as threads free up, once it holds their
        inputs (it tells the scheduler of each input it fetched): so those running at the last
        check still are, and the rest of the threads take the first by priority whose inputs are
        there (each rule counts its own tasks only). Judged from when they were sent, every task
        queued behind a slow one would look late, and so would a decode fetching the products it
        reads from other workers, which takes longer than the decode itself on a busy machine; a
        copy of each would be as many extra tasks (and fetches) for a wait that ends when the one
        ahead (or the fetch) does. A task that was waiting at the last check started since then.
        """
        queued: dict[Any, list[Any]] = {}
        tasks = self.scheduler.tasks
        for key in watch.sent:
            ts = tasks.get(key)
            if ts is not None and ts.processing_on is not None:
                queued.setdefault(ts.processing_on, []).append(ts)
        running: dict[Any, float] = {}
        for worker, processing in queued.items():
            ready = [ts for ts in processing if _holds_inputs(worker, ts)]
            carried = [ts for ts in ready if ts.key in watch.running][: worker.nthreads]
            waiting = sorted((ts for ts in ready if ts.key not in watch.running), key=_priority)
            for ts in carried + waiting[: worker.nthreads - len(carried)]:
                sent = watch.sent[ts.key]
                running[ts.key] = watch.running.get(ts.key, sent if sent >= watch.checked else watch.checked)
        return running

    def _judged_with(self, ts: Any) -> tuple[str, str]:
        """The durations a running task is compared with: its group's, or every recent decode's.

        A group of decodes is one call's, and its first decodes are judged before any is done;
        decodes of earlier calls say how long one takes here (the work they do and the delays every
        task of this cluster meets, which a copy would meet too).
        """
        if self._by_decode_rule(ts.key):
            return ("decodes", ts.prefix.name)
        return ("group", ts.group.name)

    def settle(self) -> None:
        """Keep the first result of each race and release the other."""
        settle, self._settle = self._settle, []
        for key in settle:
            if key in self._backup_of:
                self._original_done(key)
            elif key in self._original_of:
                self._backup_done(key)

    def stop(self) -> None:
        """Forget every race, releasing the copies (the plugin is going): the originals run on."""
        copies = [key for key in self._original_of if key in self.scheduler.tasks]
        self._others = self._decodes = None
        self._backup_of.clear()
        self._original_of.clear()
        self._settle.clear()
        if copies:
            self.scheduler.client_releases_keys(keys=copies, client=_CLIENT)

    # -- mechanism --------------------------------------------------------------------

    def _launch(self, ts: Any) -> None:
        if ts.worker_restrictions or ts.host_restrictions or ts.resource_restrictions or ts.actor:
            return  # placed on purpose: a copy elsewhere would break that
        if _compat.spare_threads(self.scheduler) < 1:
            return  # a copy would take a thread a waiting task needs (and might never give it back)
        # Only idle workers, as Spark uses free slots only: a copy holds its thread until it returns,
        # and a task that blocks (on an Event another task sets, say) would keep it from that task.
        idle = {ws.address for ws in self.scheduler.running if not ws.processing}
        self._start_copy(ts, idle - {ts.processing_on.address})

    def _launch_decode_copy(self, ts: Any) -> None:
        allowed = self._decode_copy_workers(ts)
        if allowed is None:
            return
        idle = {ws.address for ws in self.scheduler.running if not ws.processing} & allowed
        self._start_copy(ts, idle - {ts.processing_on.address})

    def _start_copy(self, ts: Any, workers: set[str]) -> None:
        spec = _compat.rekeyed(ts.run_spec, _backup_key(ts.key))
        if not workers or spec is None or spec.key in self.scheduler.tasks:
            return  # (a key of that name is a user's, or a copy made before this plugin was)
        backup = _compat.new_task_like(self.scheduler, ts, spec)
        # The copy runs its original's run_spec as it stands now: a decode's plan, made for the
        # dependencies copied with it, is never made again for the copy.
        self._rewritten(backup.key)
        backup.worker_restrictions = workers
        backup.loose_restrictions = False
        self._backup_of[ts.key], self._original_of[backup.key] = backup.key, ts.key
        self.scheduler.client_desires_keys(keys=[backup.key], client=_CLIENT)
        self._count(ts.key, "launched")
        self.scheduler.transitions({backup.key: "waiting"}, stimulus_id=f"coded-backup-{time.time()}")

    def _by_decode_rule(self, key: Any) -> bool:
        """Whether ``key`` is judged, copied and counted by the decode rule."""
        return self.decode_rule is not None and keys.is_decode(key)

    def _count(self, key: Any, event: str) -> None:
        self.counters[("decode_backups_" if self._by_decode_rule(key) else "backups_") + event] += 1

    def _original_done(self, key: Any) -> None:
        """The original finished (or failed, or went): its backup is not needed."""
        backup_key = self._backup_of.pop(key)
        self._original_of.pop(backup_key, None)
        backup = self.scheduler.tasks.get(backup_key)
        self._count(key, "cancelled")  # unused, even if it finished too before this settled
        if backup is not None:
            self.scheduler.client_releases_keys(keys=[backup_key], client=_CLIENT)

    def _backup_done(self, backup_key: Any) -> None:
        """The backup finished first: the original becomes a copy of its result."""
        key = self._original_of.pop(backup_key)
        self._backup_of.pop(key, None)
        tasks = self.scheduler.tasks
        ts, backup = tasks.get(key), tasks.get(backup_key)
        failed = backup is None or backup.state != "memory"
        if failed:
            # The copy raised, or its worker went: the original runs on, as without backups.
            self._count(key, "failed")
            if ts is not None and ts.state == "processing":
                self._copy_failed.add(key)
        if failed or ts is None or ts.state not in ("processing", "waiting"):
            if not failed:  # the original finished, went or was requeued meanwhile: the copy is unused
                self._count(key, "cancelled")
            if backup is not None:
                self.scheduler.client_releases_keys(keys=[backup_key], client=_CLIENT)
            return
        self._count(key, "won")
        orphans = _compat.make_alias(ts, backup)
        # The original now reads the copy's result: should it be lost, the copy runs again, and the
        # workers it was kept to (others than the original's, idle then) may have gone since.
        backup.loose_restrictions = True
        # The alias runs where the copy's result is. Placed by the scheduler's own rules it could go
        # back to the worker still running the original (a root-ish task goes to any worker that
        # looks idle, and that one does once the original is released), and a worker runs one
        # execution of a key at a time: it would wait for that one.
        ts.worker_restrictions = {ws.address for ws in backup.who_has}
        ts.loose_restrictions = True
        self._rewritten(key)
        self.scheduler.transitions({key: "released"}, stimulus_id=f"coded-backup-won-{time.time()}")
        self.scheduler.client_releases_keys(keys=[backup_key], client=_CLIENT)
        _compat.release_unneeded(self.scheduler, orphans, f"coded-backup-orphans-{time.time()}")


def _decodes_are_quick(recent: list[float], rule: BackupRule) -> bool:
    """Whether decodes usually finish well before the rule's ``min_runtime`` (or none has yet).

    Only then is a copy quick: where every task waits (a busy cluster, a delay on every task), a
    copy waits as long as the decode it races, and a winning copy's result is handed on by one more
    task, which waits too.
    """
    return not recent or rule.slow_factor * float(np.median(recent)) <= rule.min_runtime


def _holds_inputs(worker: Any, ts: Any) -> bool:
    return all(worker in (dependency.who_has or ()) for dependency in ts.dependencies)


def _priority(ts: Any) -> tuple[Any, ...]:
    return ts.priority or ()


def _backup_key(key: Any) -> Any:
    if isinstance(key, tuple) and key and isinstance(key[0], str):
        return (BACKUP_PREFIX + key[0], *key[1:])
    return BACKUP_PREFIX + str(key)
