"""What every trainer shares: input checks, data placement, the stopping rule, and the record.

The client process is the parameter server: it holds the parameters ``w``
and submits gradient tasks, one per worker at a time, with ``w`` as an
argument (a small vector). Gradient tasks run where their data already is
and never on another worker, so a slow worker stays slow for the trainer
exactly as it is for the scheduler.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from distributed import Future, get_client, wait

from .. import keys
from .data import Dataset, as_dataset
from .history import History
from .problems import Problem, make_problem

__all__ = ["Trainer", "minibatch_gradient", "partition_gradient", "wait_until"]

#: Key prefix of every gradient task (fault models can select them by it).
GRADIENT_PREFIX = keys.SGD_GRADIENT


def minibatch_gradient(
    problem: Problem,
    w: np.ndarray,
    x_blocks: list[np.ndarray],
    y_blocks: list[np.ndarray],
    batch_size: int | None,
    seed: tuple[int, int],
) -> tuple[np.ndarray, int, float]:
    """(gradient sum, rows, loss sum) over ``batch_size`` rows drawn uniformly from the blocks (None: all).

    The loss sum at ``w`` comes from the same predictions as the gradient:
    the estimate adaptive K-sync watches, at no extra product.
    """
    if not y_blocks:  # a worker without data (fewer shards than workers) sends nothing to add
        return np.zeros(len(w)), 0, 0.0
    if batch_size is None:
        sums = [problem.gradient_and_loss_sum(w, x, y) for x, y in zip(x_blocks, y_blocks)]
        return np.sum([g for g, _ in sums], axis=0), sum(len(y) for y in y_blocks), sum(s for _, s in sums)
    offsets = np.cumsum([0] + [len(y) for y in y_blocks])
    rows = np.sort(np.random.default_rng(seed).integers(offsets[-1], size=batch_size))
    block_of = np.searchsorted(offsets, rows, side="right") - 1
    x = np.concatenate([x_blocks[b][rows[block_of == b] - offsets[b]] for b in np.unique(block_of)])
    y = np.concatenate([y_blocks[b][rows[block_of == b] - offsets[b]] for b in np.unique(block_of)])
    gradient, loss = problem.gradient_and_loss_sum(w, x, y)
    return gradient, batch_size, loss


def partition_gradient(
    problem: Problem,
    w: np.ndarray,
    x_blocks: Mapping[int, Sequence[np.ndarray]],
    y_blocks: Mapping[int, Sequence[np.ndarray]],
    coefficients: Mapping[int, float],
) -> np.ndarray:
    """``sum_j coefficients[j] * G_j``: a gradient-coded worker's message (``G_j`` partition j's)."""
    total = np.zeros(len(w))
    for j, c in coefficients.items():
        for x, y in zip(x_blocks[j], y_blocks[j]):
            total += c * problem.gradient_sum(w, x, y)
    return total


class Trainer:
    """Base of the SGD trainers: ``fit(X, y)`` returns the trainer, with ``coef_`` and ``history_``.

    Parameters
    ----------
    problem
        A :class:`~dask_coded.sgd.problems.Problem` or ``"least-squares"`` /
        ``"logistic"``.
    learning_rate
        Step size (constant).
    batch_size
        Rows per worker gradient, drawn uniformly from the rows the worker
        holds: all of them for NumPy data (each worker holds a replica, as in
        Dutta et al.), its own shards for Dask data. ``None`` uses all of
        them (full-batch gradients).
    max_iterations
        Parameter updates before stopping.
    max_time
        Seconds before stopping (None: no limit).
    target_error
        Stop once ``|w - w*| / |w*|`` falls to this (None: run to the limits).
    client
        The ``distributed.Client`` (default: the current one; without one,
        ``fit`` runs on a temporary ``LocalCluster`` of 4 single-threaded
        workers).
    seed
        Seed of the mini-batch draws.
    """

    method = "trainer"

    def __init__(
        self,
        problem: Problem | str = "least-squares",
        *,
        learning_rate: float = 0.1,
        batch_size: int | None = 64,
        max_iterations: int = 200,
        max_time: float | None = None,
        target_error: float | None = None,
        client: Any = None,
        seed: int = 0,
    ) -> None:
        self.problem = make_problem(problem)
        if not _is_number(learning_rate) or not np.isfinite(learning_rate) or learning_rate <= 0:
            raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
        if batch_size is not None and (not _is_integer(batch_size) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        if not _is_integer(max_iterations) or max_iterations < 1:
            raise ValueError(f"max_iterations must be an integer of at least 1, got {max_iterations!r}")
        self.learning_rate = float(learning_rate)
        self.batch_size = batch_size
        self.max_iterations = int(max_iterations)
        self.max_time = max_time
        self.target_error = target_error
        self.client = client
        self.seed = int(seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.problem!r}, learning_rate={self.learning_rate:g})"

    # -- the public interface --------------------------------------------------

    def fit(self, X: Any, y: Any, *, optimum: np.ndarray | None = None) -> Trainer:
        """Train on ``X`` (rows are samples) and ``y``: NumPy arrays, or Dask arrays sharded on the workers.

        NumPy data is sent from the client to the workers (a replica on each
        for the mini-batch variants). A Dask array's row chunks stay on the
        workers (persisted first if they are not): each worker's gradients
        come from the chunks it holds, and the optimum and the history's
        losses are distributed reductions, so no row of X reaches the client.

        ``optimum`` is the reference for the history's error column; by
        default the problem's own solver computes it (on the client for
        NumPy data, by distributed Newton steps for Dask data).
        """
        data = as_dataset(X, y)
        if self.client is None and _current_client() is None:
            from distributed import Client, LocalCluster

            # No cluster yet: a temporary local one, single-threaded workers like the benchmarks'.
            with LocalCluster(
                n_workers=4, threads_per_worker=1, processes=False, dashboard_address=":0"
            ) as cluster:
                with Client(cluster) as client:
                    return self._fit(client, data, optimum)
        return self._fit(self.client or _current_client(), data, optimum)

    def _fit(self, client: Any, data: Dataset, optimum: np.ndarray | None) -> Trainer:
        # Not scheduler_info()["workers"]: distributed's periodic refresh (totals only, no workers) can
        # overwrite the answer before it is returned, and did under load.
        workers = sorted(client.nthreads())
        if not workers:
            raise ValueError("the client's cluster has no workers")
        self._prepare_for(len(workers))
        self._check_dataset(data)
        try:
            taking_part = data.place(client, workers, self.problem)
            if len(taking_part) < len(workers):  # fewer shards than workers: only their holders compute
                self._prepare_for(len(taking_part))
            if optimum is None:
                reference = data.optimum(client, self.problem)
            else:
                reference = np.asarray(optimum, dtype=float)
            if reference.shape != (data.features,):
                raise ValueError(f"optimum has shape {reference.shape}, expected ({data.features},)")
            self._run_id = uuid.uuid4().hex[:8]
            self._submitted = 0
            self._record = _Recorder(self, reference, np.zeros(data.features))
            w = self._train(client, taking_part, data)
            self.coef_ = w
            self.workers_ = taking_part
            self.shard_workers_ = list(getattr(data, "worker_of", []))
            parameters = np.array(self._record.parameters)
            self.history_ = self._record.history(self.method, data.losses(client, self.problem, parameters))
        finally:
            data.release()
        return self

    def _train(self, client: Any, workers: list[str], data: Dataset) -> np.ndarray:
        raise NotImplementedError

    def _prepare_for(self, workers: int) -> None:
        """Check the options against the number of workers (ValueError) and build what depends on it."""

    def _check_dataset(self, data: Dataset) -> None:
        """Refuse data this trainer cannot use (before anything is placed on the workers)."""

    # -- helpers for the subclasses ---------------------------------------------

    def _submit(self, client: Any, worker: str, index: int, function: Any, *args: Any) -> Future:
        """One gradient task pinned to ``worker`` (worker number ``index``)."""
        key = f"{GRADIENT_PREFIX}{self.method}-{self._run_id}-{index}-{self._submitted}"
        self._submitted += 1
        return client.submit(
            function, *args, key=key, workers=[worker], allow_other_workers=False, pure=False
        )

    def _submit_minibatch(
        self, client: Any, worker: str, index: int, w: np.ndarray, blocks: tuple[list[Any], list[Any]]
    ) -> Future:
        """A :func:`minibatch_gradient` task at ``w`` on ``worker``; its rows are drawn per submission."""
        x_blocks, y_blocks = blocks
        seed = (self.seed, self._submitted)
        return self._submit(
            client,
            worker,
            index,
            minibatch_gradient,
            self.problem,
            w,
            x_blocks,
            y_blocks,
            self.batch_size,
            seed,
        )

    def _step(self, w: np.ndarray, gradient_sum: np.ndarray, rows: int) -> np.ndarray:
        return w - self.learning_rate * (gradient_sum / rows + self.problem.l2 * w)


def wait_until(futures: Sequence[Future], enough: Callable[[list[Future]], bool]) -> list[Future]:
    """Wait for ``futures`` until the finished ones are ``enough``; cancel the others.

    Returns the finished futures in arrival order (ties in submission order).
    """
    pending = set(futures)
    done: list[Future] = []
    while not enough(done):
        finished, pending = wait(pending, return_when="FIRST_COMPLETED")
        done.extend(f for f in futures if f in finished)
    if pending:
        futures[0].client.cancel(list(pending))
    return done


class _Recorder:
    """Parameters after every update, timed; decides when to stop and catches divergence."""

    def __init__(self, trainer: Trainer, reference: np.ndarray, w0: np.ndarray) -> None:
        self.trainer = trainer
        self.reference = reference
        self.scale = max(float(np.linalg.norm(reference)), np.finfo(float).tiny)
        self.limit = 1e8 * max(self.scale, 1.0)
        self.start = time.perf_counter()
        self.rows: list[tuple[float, int, float]] = [(0.0, 0, 0.0)]
        self.parameters = [w0.copy()]
        self.workers: list[int] = []
        self.staleness: list[int] = []

    def gradient(self, worker: int, staleness: int) -> None:
        self.workers.append(worker)
        self.staleness.append(staleness)

    def update(self, w: np.ndarray, gradients: int, staleness: float = 0.0) -> bool:
        """Record an update; True when training should stop."""
        elapsed = time.perf_counter() - self.start
        iteration = len(self.parameters)
        self.rows.append((elapsed, self.rows[-1][1] + gradients, staleness))
        self.parameters.append(w.copy())
        norm = float(np.linalg.norm(w))
        if not np.isfinite(norm) or norm > self.limit:
            raise FloatingPointError(
                f"{self.trainer.method} diverged at update {iteration} (|w| = {norm:.3g}); "
                f"lower the learning rate (now {self.trainer.learning_rate:g}), or a worker returned "
                "wrong gradients (only gradient coding outvotes them)"
            )
        trainer = self.trainer
        if iteration >= trainer.max_iterations:
            return True
        if trainer.max_time is not None and elapsed >= trainer.max_time:
            return True
        error = float(np.linalg.norm(w - self.reference)) / self.scale
        return trainer.target_error is not None and error <= trainer.target_error

    def history(self, method: str, losses: np.ndarray) -> History:
        times, gradients, staleness = (np.array(c) for c in zip(*self.rows))
        return History(
            method,
            time=times,
            iteration=np.arange(len(times)),
            gradients=gradients.astype(int),
            loss=np.asarray(losses, dtype=float),
            error=np.array([np.linalg.norm(w - self.reference) / self.scale for w in self.parameters]),
            parameters=np.array(self.parameters),
            staleness=staleness,
            gradient_worker=np.array(self.workers, dtype=int),
            gradient_staleness=np.array(self.staleness, dtype=int),
        )


def _current_client() -> Any:
    try:
        return get_client()
    except ValueError:
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
