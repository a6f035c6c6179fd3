r"""Seeded stragglers, worker deaths and soft errors, injected at the worker for plain and coded graphs alike.

A :class:`FaultModel` says what goes wrong; :class:`FaultInjector` (a
``WorkerPlugin``) makes it happen. When a task starts executing on a worker,
the injector wraps it: the task runs, then sleeps for the modelled delay
(longer on slow workers), then its result may be corrupted. The wrapper is
the same whatever the task is, so a plain ``da.dot`` and a
``dask_coded.dot`` on the same cluster meet the same stragglers; nothing in
the library knows whether faults are injected.

The modelled delay is slept in short steps and stops when the scheduler
cancels the task, which is what a slow worker running dask-coded's
product kernels does (they work in row pieces and stop once cancelled).
Plain Dask never cancels, so it always sleeps in full.

From Python::

    with dask_coded.faults.inject(client, slow_workers=1, slow_factor=10, delay_shift=0.05):
        ...

For separately started workers (options after the preload go to it)::

    dask worker tcp://127.0.0.1:8786 --preload dask_coded.faults \\
        --model '{"delay_shift": 0.1, "slow_factor": 10}' --slow
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import click
import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

from ._compat import GraphNode, Task, worker_task_state
from .blocks import CheckedProduct, ScaledBlock, UncodedBlock, task_cancelled

__all__ = [
    "FaultInjector",
    "FaultModel",
    "computes_product",
    "corrupt",
    "dask_setup",
    "inject",
    "load_trace",
    "task_delay",
]

logger = logging.getLogger(__name__)

#: The injector's name on the workers.
NAME = "dask-coded-faults"

DELAYS = ("none", "shifted-exponential", "pareto", "trace")
ERRORS = ("noise", "nan", "bitflip")
TASKS = ("all", "products")
#: Functions that multiply blocks, in dask.array, NumPy and dask-coded.
_PRODUCT_FUNCTIONS = frozenset(
    {"_tensordot", "_matmul", "product_block", "checked_product_block", "dot", "matmul", "tensordot"}
)
#: Sleep granularity of modelled delays: how late a cancelled task notices.
_STEP = 0.01


@dataclass(frozen=True)
class FaultModel:
    """A reproducible model of what goes wrong on the workers.

    Attributes
    ----------
    delay
        Extra time each task takes: ``"none"``, ``"shifted-exponential"``
        (``delay_shift + Exp(mean=delay_scale)``) or ``"pareto"``
        (``delay_shift + delay_scale * (Pareto(pareto_shape) + 1)``).
        With ``"none"``, only ``delay_shift`` is added.
    delay_shift, delay_scale, pareto_shape
        Parameters of the delay distribution, in seconds.
    slow_workers
        Names or addresses of slow workers, or how many of the workers to
        make slow (chosen by :func:`inject` with ``seed``).
    slow_factor
        A task on a slow worker takes ``slow_factor`` times as long (its own
        run time plus its modelled delay).
    error_rate
        Probability that a task's array result is corrupted.
    error_workers
        Names or addresses of workers whose array results are always corrupted.
    error_kind
        ``"noise"`` (add large Gaussian noise), ``"nan"`` (NaN entries) or
        ``"bitflip"`` (flip an exponent or high mantissa bit of some entries).
    kill_workers, kill_after
        These workers die ``kill_after`` seconds after they start their first
        affected task.
    min_run_time
        A task that uses less than this many seconds of CPU time on its
        thread gets no modelled delay (a slow worker still multiplies its
        wall run time, waits included): stragglers come from work, and a
        task that only hands on a block or assembles a tuple has next to
        none. Threads a task starts (a multithreaded BLAS) are not counted.
        0 (the default) delays every task.
    tasks
        Which tasks are affected: ``"all"``, or ``"products"``: the tasks
        that multiply blocks (``np.dot``/``matmul``/``tensordot`` chunks,
        dask's own and dask-coded's, fused or not). Stragglers in the coded
        computation literature are workers slow at their block products.
    prefixes
        Only tasks whose key name starts with one of these are affected
        (empty: no filter by name).
    trace
        For ``delay="trace"``: per-worker latency rows, ``(fast_mean,
        slow_mean, gamma_shape, p_fast_to_slow, p_slow_to_fast)`` seconds and
        probabilities, as :func:`load_trace` reads them from a file. Worker
        ``i`` (by name, else by address hash) replays row ``i mod rows``: a
        task waits a Gamma-distributed time whose mean depends on whether the
        worker is in its slow state, which switches as a Markov chain from
        task to task (Severinson et al.'s model of AWS and Azure latency).
    seed
        Seeds every random choice, per task key.
    """

    delay: str = "none"
    delay_shift: float = 0.0
    delay_scale: float = 0.0
    pareto_shape: float = 3.0
    slow_workers: tuple[str, ...] | int = ()
    slow_factor: float = 1.0
    error_rate: float = 0.0
    error_workers: tuple[str, ...] = ()
    error_kind: str = "noise"
    kill_workers: tuple[str, ...] = ()
    kill_after: float = 0.0
    min_run_time: float = 0.0
    tasks: str = "all"
    prefixes: tuple[str, ...] = field(default_factory=tuple)
    trace: tuple[tuple[float, float, float, float, float], ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.delay not in DELAYS:
            raise ValueError(f"unknown delay model {self.delay!r}; choose one of {DELAYS}")
        if self.tasks not in TASKS:
            raise ValueError(f"unknown task selection {self.tasks!r}; choose one of {TASKS}")
        if self.error_kind not in ERRORS:
            raise ValueError(f"unknown error kind {self.error_kind!r}; choose one of {ERRORS}")
        times = (self.delay_shift, self.delay_scale, self.kill_after, self.min_run_time)
        if min(times) < 0 or self.slow_factor < 1:
            raise ValueError("delays must be non-negative and slow_factor at least 1")
        if not 0 <= self.error_rate <= 1:
            raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate}")
        for name in ("slow_workers", "error_workers", "kill_workers", "prefixes"):
            value = getattr(self, name)
            if isinstance(value, (list, str)):
                object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        object.__setattr__(self, "trace", tuple(tuple(float(v) for v in row) for row in self.trace))
        if self.delay == "trace" and (not self.trace or any(len(row) != 5 for row in self.trace)):
            raise ValueError("delay='trace' needs trace rows (fast_mean, slow_mean, shape, p_in, p_out)")

    @classmethod
    def slow_machine(
        cls, workers: tuple[str, ...] | int = 1, factor: float = 10.0, latency: float = 0.01, seed: int = 0
    ) -> FaultModel:
        """A slow machine: every task it runs takes ``factor`` times as long.

        Operand creation, encodes, products, decodes and data it serves all
        slow down, as they do on a real overloaded or throttled node, not
        only block products. Every task on every worker also waits
        ``latency`` seconds (scaled by ``factor`` on the slow machine), so
        even tiny tasks show the slowdown.

        Examples
        --------
        >>> model = FaultModel.slow_machine(workers=("tcp://127.0.0.1:4000",), factor=20)
        >>> model.tasks, model.slow_factor
        ('all', 20.0)
        """
        return cls(
            delay_shift=latency, slow_workers=workers, slow_factor=float(factor), tasks="all", seed=seed
        )

    def to_json(self) -> str:
        """The model as JSON, for ``dask worker --preload dask_coded.faults --model JSON``."""
        return json.dumps(dataclasses.asdict(self))


def load_trace(path: Any) -> tuple[tuple[float, float, float, float, float], ...]:
    """Per-worker latency rows from a JSON trace file (``{"workers": [{...}, ...]}``).

    Each worker entry has ``fast_mean``, ``slow_mean``, ``shape``,
    ``p_fast_to_slow`` and ``p_slow_to_fast``; ``benchmarks/traces/`` holds
    one generated from Severinson et al.'s model.
    """
    with open(path) as f:
        workers = json.load(f)["workers"]
    return tuple(
        (
            float(w["fast_mean"]),
            float(w["slow_mean"]),
            float(w["shape"]),
            float(w["p_fast_to_slow"]),
            float(w["p_slow_to_fast"]),
        )
        for w in workers
    )


def _key_seed(seed: int, key: Any) -> np.random.Generator:
    """A generator seeded by the model seed and the task key: reproducible anywhere."""
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode())])


def task_delay(model: FaultModel, key: Any) -> float:
    """The modelled extra seconds of task ``key`` (before any slow-worker factor).

    Examples
    --------
    >>> model = FaultModel(delay="shifted-exponential", delay_shift=0.1, delay_scale=0.2, seed=1)
    >>> task_delay(model, ("x", 0)) == task_delay(model, ("x", 0)) > 0.1
    True
    """
    if model.delay in ("none", "trace"):  # a trace's delays depend on the worker: see FaultInjector
        return model.delay_shift
    rng = _key_seed(model.seed, key)
    if model.delay == "shifted-exponential":
        return model.delay_shift + rng.exponential(model.delay_scale)
    return model.delay_shift + model.delay_scale * (rng.pareto(model.pareto_shape) + 1.0)


def corrupt(value: Any, kind: str, rng: np.random.Generator) -> Any:
    """A wrong copy of an array result (or of the arrays in a tuple); anything else is returned unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> bad = corrupt(np.ones(4), "nan", np.random.default_rng(0))
    >>> bool(np.isnan(bad).any())
    True
    """
    if isinstance(value, (ScaledBlock, UncodedBlock)):  # a parity product, or an uncoded one: its values
        return dataclasses.replace(value, values=corrupt(value.values, kind, rng))
    if isinstance(value, CheckedProduct):  # a product under max_errors: its values, not its bound
        return dataclasses.replace(value, product=corrupt(value.product, kind, rng))
    if type(value) is tuple:  # an SGD gradient task's (gradient, rows, loss): its arrays
        return tuple(corrupt(item, kind, rng) for item in value)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fc" or value.size == 0:
        return value
    out = np.array(value, copy=True)
    flat = out.reshape(-1)
    if kind == "noise":
        scale = float(np.abs(flat).max()) or 1.0
        flat += 1e3 * scale * rng.standard_normal(flat.shape).astype(out.real.dtype)
    elif kind == "nan":
        flat[rng.random(flat.size) < 0.5] = np.nan
        flat[rng.integers(flat.size)] = np.nan
    else:
        real = flat.view(out.real.dtype) if out.dtype.kind == "c" else flat
        bits = real.view(np.uint64 if real.dtype.itemsize == 8 else np.uint32)
        width = real.dtype.itemsize * 8
        mantissa = {64: 52, 32: 23}[width]
        entries = rng.choice(bits.size, size=max(1, bits.size // 100), replace=False)
        # Exponent and top mantissa bits: the flips that change the value materially.
        positions = rng.integers(mantissa - 4, width - 1, size=len(entries))
        bits[entries] ^= np.ones(len(entries), dtype=bits.dtype) << positions.astype(bits.dtype)
    return out


def computes_product(node: Any) -> bool:
    """Whether a task spec (fused or not) multiplies blocks.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_coded._compat import Task
    >>> computes_product(Task("k", np.dot, 1, 2)), computes_product(Task("k", np.add, 1, 2))
    (True, False)
    """
    if isinstance(node, Task):
        if getattr(node.func, "__name__", None) in _PRODUCT_FUNCTIONS:
            return True
        return any(computes_product(a) for a in (*node.args, *node.kwargs.values()))
    if isinstance(node, (list, tuple, set, frozenset)):
        return any(computes_product(a) for a in node)
    if isinstance(node, dict):
        return any(computes_product(a) for a in node.values())
    return False


def _matches(worker: Any, names: tuple[str, ...] | int) -> bool:
    if isinstance(names, int):
        return False
    return str(worker.name) in names or worker.address in names


def _mark_start(call: dict[str, Any]) -> None:
    """Run on the worker's thread just before the wrapped task: its own run time starts here."""
    call["start"] = time.time()
    call["cpu_start"] = time.thread_time()


def _faulty_result(call: dict[str, Any], started: None, result: Any) -> Any:
    """Run on the worker after the wrapped task: sleep the modelled delay, maybe corrupt the result.

    ``started`` is :func:`_mark_start`'s None: evaluated first, it timed the task's own work.
    """
    run_time = time.time() - call["start"]
    # Work is the CPU time of the task's thread: on a worker whose event loop holds the GIL, or a
    # machine with more workers than cores, a task of microseconds can take milliseconds to run.
    work = time.thread_time() - call["cpu_start"]
    delay = call["delay"] if work >= call["min_run_time"] else 0.0
    if call["slow_factor"] > 1:
        delay = (delay + run_time) * call["slow_factor"] - run_time
    deadline = time.time() + max(delay, 0.0)
    while time.time() < deadline:
        if task_cancelled():
            break
        time.sleep(min(_STEP, max(deadline - time.time(), 0.0)))
    if call["corrupt"]:
        return corrupt(result, call["error_kind"], np.random.default_rng(call["rng_seed"]))
    return result


class FaultInjector(WorkerPlugin):
    """Apply a :class:`FaultModel` to every task a worker executes.

    Parameters
    ----------
    model
        What goes wrong.
    slow, faulty
        Force this worker to be slow / to corrupt every result (for workers
        started on the command line, which know only themselves).
    """

    name = NAME

    def __init__(self, model: FaultModel, *, slow: bool = False, faulty: bool = False) -> None:
        self.model = model
        self.force_slow = slow
        self.force_faulty = faulty
        self.worker: Any = None
        self._kill_armed = False

    def setup(self, worker: Any) -> None:
        self.worker = worker
        self.slow = self.force_slow or _matches(worker, self.model.slow_workers)
        self.faulty = self.force_faulty or _matches(worker, self.model.error_workers)
        self.killer = _matches(worker, self.model.kill_workers)
        if self.model.trace:
            name = str(worker.name)
            row = int(name) if name.isdigit() else zlib.crc32(worker.address.encode())
            self._trace_row = self.model.trace[row % len(self.model.trace)]
            self._trace_rng = np.random.default_rng([self.model.seed, row])
            self._trace_slow = False

    def teardown(self, worker: Any) -> None:
        self.worker = None

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "executing" or self.worker is None:
            return
        ts = worker_task_state(self.worker, key)
        # Any graph node, not only Tasks: a slow machine is slow to hand out data it holds too.
        if ts is None or not isinstance(ts.run_spec, GraphNode) or not self._affects(key, ts.run_spec):
            return
        model = self.model
        rng = _key_seed(model.seed, key)
        corrupt_it = self.faulty or (model.error_rate > 0 and rng.random() < model.error_rate)
        delay = task_delay(model, key)
        if model.delay == "trace":
            delay += self._trace_delay(rng)
        call: dict[str, Any] = {
            "delay": delay,
            "slow_factor": model.slow_factor if self.slow else 1.0,
            "min_run_time": model.min_run_time,
            "corrupt": bool(corrupt_it),
            "error_kind": model.error_kind,
            "rng_seed": int(rng.integers(2**63)),
        }
        if call["delay"] or call["slow_factor"] > 1 or call["corrupt"]:
            # The start is taken on the thread that runs the task, not here on the event loop: the wait
            # for a free thread is not work of the task's own (min_run_time).
            ts.run_spec = Task(key, _faulty_result, call, Task(None, _mark_start, call), ts.run_spec)
        if self.killer and not self._kill_armed:
            self._kill_armed = True
            self.worker.loop.call_later(model.kill_after, self._kill)

    def _trace_delay(self, rng: np.random.Generator) -> float:
        """The next delay of this worker's trace row; its slow state switches as a Markov chain."""
        fast_mean, slow_mean, shape, p_in, p_out = self._trace_row
        if self._trace_rng.random() < (p_out if self._trace_slow else p_in):
            self._trace_slow = not self._trace_slow
        mean = slow_mean if self._trace_slow else fast_mean
        return float(rng.gamma(shape, mean / shape))

    def _affects(self, key: Any, spec: Any) -> bool:
        if self.model.prefixes:
            name = key[0] if isinstance(key, tuple) else key
            if not (isinstance(name, str) and name.startswith(self.model.prefixes)):
                return False
        return self.model.tasks == "all" or computes_product(spec)

    def _kill(self) -> None:
        logger.warning("dask-coded faults: killing worker %s as the fault model says", self.worker.address)
        self.worker.loop.add_callback(
            self.worker.close, nanny=False, executor_wait=False, reason="fault-injection"
        )


def _choose(addresses: list[str], count: int, seed: int) -> tuple[str, ...]:
    if count > len(addresses):
        raise ValueError(f"cannot make {count} of {len(addresses)} workers faulty")
    rng = np.random.default_rng(seed)
    return tuple(sorted(rng.choice(sorted(addresses), size=count, replace=False).tolist()))


@contextlib.contextmanager
def inject(client: Any, model: FaultModel | None = None, **params: Any) -> Iterator[FaultModel]:
    """Inject faults on every worker of ``client``'s cluster while the block runs.

    ``slow_workers`` may be a count: that many workers are chosen (seeded)
    and the model that is yielded names them.

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> import dask.array as da, dask_coded
    >>> with LocalCluster(n_workers=2, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client:
    ...         with dask_coded.faults.inject(client, delay_shift=0.01) as model:
    ...             total = da.ones(4, chunks=2).sum().compute()
    >>> float(total)
    4.0
    """
    model = model or FaultModel(**params)
    if isinstance(model.slow_workers, int):
        addresses = list(client.nthreads())
        model = dataclasses.replace(model, slow_workers=_choose(addresses, model.slow_workers, model.seed))
    client.register_plugin(FaultInjector(model), name=NAME)
    try:
        yield model
    finally:
        client.unregister_worker_plugin(NAME)


@click.command()
@click.option("--model", default="{}", help="The FaultModel as JSON (FaultModel.to_json()).")
@click.option("--slow", is_flag=True, help="This worker is slow (slow_factor applies).")
@click.option("--faulty", is_flag=True, help="This worker corrupts every array result.")
async def dask_setup(worker: Any, model: str, slow: bool, faulty: bool) -> None:
    """``dask worker ADDRESS --preload dask_coded.faults --model JSON [--slow] [--faulty]``."""
    params = json.loads(model)
    for name in ("slow_workers", "error_workers", "kill_workers", "prefixes"):
        if isinstance(params.get(name), list):
            params[name] = tuple(params[name])
    injector = FaultInjector(FaultModel(**params), slow=slow, faulty=faulty)
    # The worker's own registration (what Client.register_plugin asks it to do): it calls setup and
    # tears the injector down with the worker. catch_errors=False: a bad model fails the preload loudly.
    await worker.plugin_add(injector, name=NAME, catch_errors=False)
