"""Every touch of ``distributed``'s scheduler internals, checked once at start-up.

The early decode rewrites a waiting task's ``run_spec`` and its dependency
links, and must see a new graph before the scheduler compares it with the
tasks it holds. None of that is public API, so it lives here, and
:func:`missing_internals` says what is absent on the running version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "drop_dependency",
    "intercept_graph_updates",
    "make_alias",
    "missing_internals",
    "new_task_like",
    "rekeyed",
    "release_unneeded",
    "task_duration",
    "worker_count",
]

#: TaskState attributes the plugin reads or writes.
_TASK_ATTRIBUTES = ("run_spec", "dependencies", "dependents", "waiting_on", "waiters", "who_has", "state")


def missing_internals(scheduler: Any) -> list[str]:
    """The internals the plugin needs that ``scheduler`` lacks (empty when early decoding works)."""
    missing = [name for name in ("tasks", "transitions", "running", "loop") if not hasattr(scheduler, name)]
    if not callable(getattr(scheduler, "_generate_taskstates", None)):
        missing.append("Scheduler._generate_taskstates")
    task_state = _task_state_class()
    if task_state is None:
        missing.append("distributed.scheduler.TaskState")
    else:
        slots = set(getattr(task_state, "__slots__", ())) | set(dir(task_state))
        missing += [f"TaskState.{name}" for name in _TASK_ATTRIBUTES if name not in slots]
    return missing


def _task_state_class() -> type | None:
    try:
        from distributed.scheduler import TaskState
    except ImportError:
        return None
    return TaskState


def intercept_graph_updates(scheduler: Any, before: Callable[[dict[Any, Any]], None]) -> None:
    """Call ``before(dsk)`` on every new graph before the scheduler compares it with its tasks.

    A graph resubmitted while a decode task holds a rewritten ``run_spec``
    would otherwise differ from it, which the scheduler logs as a key
    collision and resolves by keeping stale dependency links (a hang on the
    worker). ``before`` may replace entries of ``dsk``. Installed once per
    scheduler; the latest ``before`` wins.
    """
    scheduler._dask_coded_before_graph = before
    if getattr(scheduler, "_dask_coded_intercepting", False):
        return
    original = scheduler._generate_taskstates

    def _generate_taskstates(*args: Any, **kwargs: Any) -> Any:
        dsk = kwargs["dsk"] if "dsk" in kwargs else args[1]
        scheduler._dask_coded_before_graph(dsk)
        return original(*args, **kwargs)

    scheduler._generate_taskstates = _generate_taskstates
    scheduler._dask_coded_intercepting = True


def drop_dependency(task: Any, member: Any) -> None:
    """Unlink ``member`` from ``task`` both ways, as if ``task`` had never needed it."""
    task.dependencies.discard(member)
    member.dependents.discard(task)
    if task.waiting_on:
        task.waiting_on.discard(member)
    if member.waiters:
        member.waiters.discard(task)


def task_duration(startstops: Any) -> float | None:
    """Seconds a finished task spent computing, from the ``startstops`` of its transition."""
    total = 0.0
    for startstop in startstops or ():
        if startstop.get("action") == "compute":
            total += startstop["stop"] - startstop["start"]
    return total or None


def worker_count() -> int | None:
    """Workers of the default client's cluster, or None without a client (threads, processes)."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return None
    info = client.scheduler_info(n_workers=0)  # totals only: one small round trip
    return int(info.get("n_workers") or len(info.get("workers", {}))) or None


def rekeyed(spec: Any, key: Any) -> Any:
    """A copy of task ``spec`` under another key (None for nodes that are not tasks)."""
    from dask._task_spec import Task

    if not isinstance(spec, Task):
        return None
    return type(spec)(key, spec.func, *spec.args, **spec.kwargs)


def new_task_like(scheduler: Any, ts: Any, spec: Any) -> Any:
    """A new released task running ``spec``, with ``ts``'s dependencies and priority."""
    copy = scheduler.new_task(spec.key, spec, "released")
    copy.priority = ts.priority
    # Every task group belongs to a span; the workers' heartbeats report metrics by span and
    # the scheduler refuses a task without one (it would close the workers).
    spans = scheduler.extensions.get("spans")
    if spans is not None and ts.group.span_id and not copy.group.span_id:
        copy.group.span_id = ts.group.span_id
        spans.spans[ts.group.span_id].groups.add(copy.group)
    for dependency in ts.dependencies:
        copy.add_dependency(dependency)
    return copy


def make_alias(ts: Any, source: Any) -> list[Any]:
    """Make ``ts`` a copy of ``source``'s result; returns the keys of the dependencies it dropped."""
    from dask._task_spec import Alias

    dropped = []
    for dependency in list(ts.dependencies):
        drop_dependency(ts, dependency)
        dropped.append(dependency.key)
    ts.run_spec = Alias(ts.key, source.key)
    ts.add_dependency(source)
    return dropped


def release_unneeded(scheduler: Any, keys: Any, stimulus_id: str) -> None:
    """Release, then forget, tasks among ``keys`` that nothing needs any more."""
    tasks = scheduler.tasks
    release = {
        key: "released"
        for key in keys
        if (ts := tasks.get(key)) is not None and ts.state == "memory" and not (ts.waiters or ts.who_wants)
    }
    if release:
        scheduler.transitions(release, stimulus_id)
    forget = {
        key: "forgotten"
        for key in keys
        if (ts := tasks.get(key)) is not None
        and ts.state == "released"
        and not (ts.dependents or ts.waiters or ts.who_wants)
    }
    if forget:
        scheduler.transitions(forget, stimulus_id)
