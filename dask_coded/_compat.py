"""Every touch of Dask's and ``distributed``'s private internals, in one place.

- Graph nodes: ``dask._task_spec`` (``Task``, ``TaskRef``, ``Alias``, ``List``,
  ``NestedContainer``, ``DataNode``, ``GraphNode``) is how graphs are written since dask 2025.1,
  but it is a private module whose details change between releases: dask
  2025.1 stores a task's references to other keys as ``Alias`` nodes, 2026.8
  as ``TaskRef`` objects. :func:`reference_key` reads either.
- The scheduler: the early decode rewrites a waiting task's ``run_spec`` and
  its dependency links, and must see a new graph before the scheduler
  compares it with the tasks it holds. :func:`missing_internals` says what is
  absent on the running version.
- ``dask.array.rechunk.old_to_new``: which slices of the old chunks make
  each new chunk, what ``da.rechunk`` plans its tasks from.
- The worker: which task this thread runs, and the worker's state of a task
  (cancelled or not; its ``run_spec``, which fault injection wraps).

Tested against dask and distributed 2025.1.0 and the newest release.
"""

from __future__ import annotations

import functools
import inspect
import pickle
from collections.abc import Callable
from typing import Any

from dask._task_spec import Alias, DataNode, GraphNode, List, NestedContainer, Task, TaskRef
from dask.array.rechunk import old_to_new

__all__ = [
    "Alias",
    "DataNode",
    "GraphNode",
    "List",
    "Task",
    "TaskRef",
    "drop_dependency",
    "duration_ratios",
    "duration_samples",
    "intercept_graph_updates",
    "intercepting_plugin",
    "make_alias",
    "missing_internals",
    "new_task_like",
    "old_to_new",
    "reference_key",
    "rekeyed",
    "release_unneeded",
    "running_task",
    "spare_threads",
    "task_duration",
    "warn_clients",
    "worker_count",
    "worker_task_state",
]


def reference_key(node: Any) -> Any | None:
    """The key a task argument refers to, or None when it is a value.

    A graph built with ``TaskRef(key)`` holds ``TaskRef`` objects on dask 2026.8
    but ``Alias(key)`` nodes on dask 2025.1 (``Task`` converts them), and
    ``client.submit(f, future)`` passes an ``Alias``.

    Examples
    --------
    >>> reference_key(TaskRef(("x", 0))), reference_key(Alias("y", ("x", 1))), reference_key(3.0)
    (('x', 0), ('x', 1), None)
    """
    if isinstance(node, TaskRef):
        return node.key
    if isinstance(node, Alias):
        return node.target
    return None


#: TaskState attributes the plugin reads or writes.
_TASK_ATTRIBUTES = (
    "run_spec",
    "dependencies",
    "dependents",
    "waiting_on",
    "waiters",
    "who_has",
    "who_wants",
    "state",
    "processing_on",
    "prefix",
    "worker_restrictions",
    "loose_restrictions",
)


def missing_internals(scheduler: Any) -> list[str]:
    """The internals the plugin needs that ``scheduler`` lacks (empty when early decoding works).

    Besides the scheduler's attributes, this checks that a task built the way
    dask-coded builds decode tasks still names its members in a form
    :func:`reference_key` reads: when it does not, the plugin would find no
    finished member and never decode early, silently.

    Examples
    --------
    >>> missing_internals(object())  # doctest: +ELLIPSIS
    ['tasks', 'transitions', 'workers', 'running', 'loop', 'Scheduler._generate_taskstates(dsk=...)']
    """
    names = ("tasks", "transitions", "workers", "running", "loop")
    missing = [name for name in names if not hasattr(scheduler, name)]
    if "dsk" not in _parameters(getattr(scheduler, "_generate_taskstates", None)):
        missing.append("Scheduler._generate_taskstates(dsk=...)")
    task_state = _scheduler_class("TaskState")
    if task_state is None:
        missing.append("distributed.scheduler.TaskState")
    else:
        slots = set(getattr(task_state, "__slots__", ())) | set(dir(task_state))
        missing += [f"TaskState.{name}" for name in _TASK_ATTRIBUTES if name not in slots]
    if not hasattr(_scheduler_class("WorkerState"), "_dec_needs_replica"):
        missing.append("WorkerState._dec_needs_replica")
    if not _reads_task_references():
        missing.append("dask._task_spec references readable as TaskRef or Alias")
    return missing


def _parameters(function: Any) -> set[str]:
    if not callable(function):
        return set()
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()


def _reads_task_references() -> bool:
    """Whether the members of a decode-like task can be read back from its arguments."""
    task = Task("decode", max, TaskRef("member-0"), None, TaskRef("member-2"))
    keys = [reference_key(arg) for arg in task.args]
    return keys == ["member-0", None, "member-2"] and set(task.dependencies) == {"member-0", "member-2"}


def _scheduler_class(name: str) -> type | None:
    try:
        from distributed import scheduler
    except ImportError:
        return None
    return getattr(scheduler, name, None)


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

    # wraps: the signature stays the original's, so a plugin registered again passes the start-up check.
    @functools.wraps(original)
    def _generate_taskstates(*args: Any, **kwargs: Any) -> Any:
        dsk = kwargs["dsk"] if "dsk" in kwargs else args[1]
        # distributed 2025.1 passes the graph's dependencies as a separate mapping (newer versions
        # read them from the nodes); they must match a replaced entry, or it is a key collision.
        dependencies = kwargs.get("dependencies")
        given = dict(dsk) if dependencies is not None else {}
        scheduler._dask_coded_before_graph(dsk)
        if dependencies is not None:
            for key, node in dsk.items():
                if node is not given.get(key) and isinstance(node, GraphNode):
                    dependencies[key] = set(node.dependencies)
        return original(*args, **kwargs)

    scheduler._generate_taskstates = _generate_taskstates
    scheduler._dask_coded_intercepting = True


def intercepting_plugin(scheduler: Any) -> Any | None:
    """The object whose ``before`` :func:`intercept_graph_updates` installed last, or None.

    It stays installed when its plugin is unregistered, so a plugin registered
    later finds its predecessor here even then.
    """
    return getattr(getattr(scheduler, "_dask_coded_before_graph", None), "__self__", None)


def drop_dependency(task: Any, member: Any) -> None:
    """Unlink ``member`` from ``task`` both ways, as if ``task`` had never needed it.

    A worker processing ``task`` may still be fetching ``member`` for it. It is counted in the
    worker's ``needs_what`` (and occupancy) until ``task`` leaves the worker, which reads
    ``task.dependencies`` then: without this, the count would never go back to zero.
    """
    worker = task.processing_on
    if worker is not None and member in task.dependencies and member in worker.needs_what:
        worker._dec_needs_replica(member)
    task.dependencies.discard(member)
    member.dependents.discard(task)
    if task.waiting_on:
        task.waiting_on.discard(member)
    if member.waiters:
        member.waiters.discard(task)


#: Added to the graph order of a task that should run after the rest of its graph.
_RUN_LAST = 2**40


def run_last(ts: Any) -> bool:
    """Order a released or waiting task after every task of its graph (same user priority and generation).

    The scheduler's priority is ``(-user priority, generation, graph order)``
    on every supported version; workers run ready tasks in that order.
    """
    priority = ts.priority
    if not priority or ts.state not in ("released", "waiting") or priority[-1] >= _RUN_LAST:
        return False
    ts.priority = (*priority[:-1], priority[-1] + _RUN_LAST)
    return True


def task_duration(startstops: Any) -> float | None:
    """Seconds a finished task spent computing, from the ``startstops`` of its transition."""
    total = 0.0
    for startstop in startstops or ():
        if startstop.get("action") == "compute":
            total += startstop["stop"] - startstop["start"]
    return total or None


def _default_client() -> Any | None:
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def worker_count() -> int | None:
    """Workers of the default client's cluster, or None without a client (threads, processes)."""
    client = _default_client()
    if client is None:
        return None
    info = client.scheduler_info(n_workers=0)  # totals only: one small round trip
    return int(info.get("n_workers") or len(info.get("workers", {}))) or None


#: Where the scheduler plugin publishes its per-worker task-time ratios (scheduler metadata):
#: the median of each worker's recent ratios, and its recent ratios (:class:`~dask_coded.stats.TaskTimes`).
DURATION_RATIOS_METADATA = ["dask-coded", "duration-ratios"]
DURATION_SAMPLES_METADATA = ["dask-coded", "duration-samples"]


def duration_ratios() -> dict[str, float] | None:
    """The plugin's per-worker task-time ratios, read from the default client's scheduler, or None.

    None too for an asynchronous client: a graph is built synchronously, and
    it cannot wait for the answer.
    """
    return _plugin_metadata(DURATION_RATIOS_METADATA)


def duration_samples() -> dict[str, list[float]] | None:
    """Each worker's recent task-time ratios, as :func:`duration_ratios` reads the averages."""
    return _plugin_metadata(DURATION_SAMPLES_METADATA)


def _plugin_metadata(keys: list[str]) -> Any:
    client = _default_client()
    if client is None or client.asynchronous:
        return None
    return client.get_metadata(keys, default=None)


def spare_threads(scheduler: Any) -> int:
    """Idle worker threads beyond those the tasks waiting for one may take.

    Tasks wait on the scheduler (queued, unrunnable) or on a worker whose threads all have a task
    (work stealing moves them to a worker that falls idle).
    """
    waiting = len(scheduler.queued) + len(scheduler.unrunnable)
    idle = 0
    for ws in scheduler.running:
        busy = len(ws.processing)
        idle += max(ws.nthreads - busy, 0)
        waiting += max(busy - ws.nthreads, 0)
    return idle - waiting


def rekeyed(spec: Any, key: Any) -> Any:
    """A copy of task ``spec`` under another key (None for nodes that are not tasks).

    Containers (``List``, ``Dict``, ... : ``dask.delayed([...])``) take no key: their copy is a
    plain ``Task`` calling the same function on the same arguments. Other subclasses of ``Task`` are
    copied only if they are a ``Task`` under another name (no state or call of their own); a p2p
    barrier, say, is more than its function.
    """
    if isinstance(spec, NestedContainer):
        return Task(key, spec.func, *spec.args, **spec.kwargs)
    if not isinstance(spec, Task):
        return None
    subclasses = type(spec).__mro__[: type(spec).__mro__.index(Task)]
    if type(spec).__call__ is not Task.__call__ or any(vars(cls).get("__slots__") for cls in subclasses):
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


def warn_clients(scheduler: Any, message: str, category: type[Warning]) -> None:
    """Raise ``message`` as a ``category`` warning in every connected client.

    A warning raised inside the scheduler reaches only the scheduler's log. A
    ``"warn"`` event reaches every client subscribed to it, which ``Client``
    is by default: its handler (``distributed.client._handle_warn``) unpickles
    ``message`` and ``category`` and calls ``warnings.warn``. Clients that
    connect later do not see it; the scheduler's log keeps it.
    """
    scheduler.log_event("warn", {"message": pickle.dumps(message), "category": pickle.dumps(category)})


def running_task() -> tuple[Any, Any] | None:
    """(worker, key) of the task running in this thread, or None outside a ``dask.distributed`` worker."""
    try:
        from distributed.worker import get_worker, thread_state

        return get_worker(), thread_state.key
    except (ImportError, AttributeError, ValueError):
        return None


def worker_task_state(worker: Any, key: Any) -> Any | None:
    """The worker's state of task ``key`` (its ``state`` and ``run_spec``), or None once forgotten."""
    return worker.state.tasks.get(key)
