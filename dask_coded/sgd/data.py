"""Where the training data lives: NumPy replicas sent by the client, or a Dask array's shards on the workers.

A trainer asks its data set for the row blocks each worker's gradient tasks
read (:meth:`Dataset.worker_blocks`, or :meth:`Dataset.coded_blocks` for
gradient coding), for the reference optimum and for the losses of the
history. :class:`ReplicatedData` (NumPy input) answers as dask-coded always
has: every worker holds all rows and the client computes losses and optima.
:class:`ShardedData` (Dask input) keeps each chunk on one worker: gradients,
losses and the optimum are computed where the chunks are and only vectors
and d x d matrices travel; the one copy it makes is gradient coding's, each
partition on its ``s + 1`` workers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
from dask.core import flatten
from distributed import Future, futures_of

from .. import keys
from .placement import balance_shards, coded_copies
from .problems import Problem

__all__ = ["Dataset", "ReplicatedData", "ShardedData", "as_dataset"]

#: x blocks and y blocks a gradient task reads (futures, resolved on the worker).
Blocks = tuple[list[Any], list[Any]]
#: Per worker, partition index -> its x blocks, and -> its y blocks.
CodedBlocks = tuple[dict[int, list[Any]], dict[int, list[Any]]]


class Dataset:
    """Rows ``X`` (samples x features) and targets ``y`` as the trainers see them."""

    rows: int
    features: int

    def place(self, client: Any, workers: list[str], problem: Problem) -> list[str]:
        """Put the data on ``workers``, check it for ``problem``; return the workers that take part."""
        raise NotImplementedError

    def worker_blocks(self, client: Any, workers: list[str]) -> list[Blocks]:
        """For each worker, the blocks its mini-batches are drawn from."""
        raise NotImplementedError

    def coded_blocks(
        self, client: Any, workers: list[str], assignments: Sequence[Mapping[int, float]]
    ) -> list[CodedBlocks]:
        """For each worker, the blocks of each partition of its gradient-code assignment."""
        raise NotImplementedError

    def optimum(self, client: Any, problem: Problem) -> np.ndarray:
        """The minimiser of ``problem`` on all rows."""
        raise NotImplementedError

    def losses(self, client: Any, problem: Problem, parameters: np.ndarray) -> np.ndarray:
        """The objective on all rows at each row of ``parameters``."""
        raise NotImplementedError

    def release(self) -> None:
        """Drop the references that keep the placed data on the workers."""


class ReplicatedData(Dataset):
    """NumPy ``X``, ``y`` held by the client: every worker gets all rows, in P partitions."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X, self.y = X, y
        self.rows, self.features = X.shape
        self._futures: list[Any] = []

    def place(self, client: Any, workers: list[str], problem: Problem) -> list[str]:
        problem.check_targets(self.y)
        return workers

    def worker_blocks(self, client: Any, workers: list[str]) -> list[Blocks]:
        x_parts, y_parts = np.array_split(self.X, len(workers)), np.array_split(self.y, len(workers))
        x_blocks = client.scatter(x_parts, broadcast=True, hash=False)
        y_blocks = client.scatter(y_parts, broadcast=True, hash=False)
        self._futures += x_blocks + y_blocks
        return [(x_blocks, y_blocks)] * len(workers)

    def coded_blocks(
        self, client: Any, workers: list[str], assignments: Sequence[Mapping[int, float]]
    ) -> list[CodedBlocks]:
        x_parts, y_parts = np.array_split(self.X, len(workers)), np.array_split(self.y, len(workers))
        x_blocks, y_blocks = [], []
        for j, (x_part, y_part) in enumerate(zip(x_parts, y_parts)):
            holders = [workers[i] for i, a in enumerate(assignments) if j in a]
            x_blocks.append(client.scatter(x_part, workers=holders, broadcast=True, hash=False))
            y_blocks.append(client.scatter(y_part, workers=holders, broadcast=True, hash=False))
        self._futures += x_blocks + y_blocks
        return [({j: [x_blocks[j]] for j in a}, {j: [y_blocks[j]] for j in a}) for a in assignments]

    def optimum(self, client: Any, problem: Problem) -> np.ndarray:
        return problem.optimum(self.X, self.y)

    def losses(self, client: Any, problem: Problem, parameters: np.ndarray) -> np.ndarray:
        return np.array([problem.loss(w, self.X, self.y) for w in parameters])

    def release(self) -> None:
        self._futures = []


class ShardedData(Dataset):
    """Dask ``X``, ``y`` whose row chunks (shards) stay on the workers that hold them.

    ``place`` persists both (a no-op for data already persisted), keeps each
    shard on a worker that holds it and moves only what it takes to give
    every worker ``S // P`` shards or one more, worker to worker. The client
    never holds a row of X.
    """

    def __init__(self, X: Any, y: Any) -> None:
        X = da.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (samples x features), got {X.ndim}-D")
        if any(np.isnan(c) for c in X.chunks[0]):
            raise ValueError("X has unknown chunk sizes; call X.compute_chunk_sizes() first")
        y = y if isinstance(y, da.Array) else np.asarray(y)
        _check_shapes(X.shape, y.shape)
        y = y if isinstance(y, da.Array) else da.from_array(y, chunks=(X.chunks[0],))
        # One chunk of columns, y cut like X's rows: a shard is a block of whole rows and their targets.
        self.X = X.astype(float).rechunk({1: -1})
        self.y = y.astype(float).rechunk((X.chunks[0],))
        self.rows, self.features = (int(n) for n in X.shape)
        self._token = uuid.uuid4().hex[:8]
        self.release()

    def release(self) -> None:
        self.shards: list[tuple[Any, Any]] = []  # (x future, y future) of each shard
        self.owner: list[int] = []  # the index of the worker holding each shard
        self.worker_of: list[str] = []  # and its address
        self._copies: list[Any] = []

    def place(self, client: Any, workers: list[str], problem: Problem) -> list[str]:
        x_futures = _chunk_futures(client, self.X)
        y_futures = _chunk_futures(client, self.y)
        where = client.who_has(x_futures + y_futures)
        index = {w: i for i, w in enumerate(workers)}
        holders = [[index[w] for w in where.get(f.key, ()) if w in index] for f in x_futures]
        taking_part = min(len(workers), len(x_futures))
        self.owner = balance_shards(holders, taking_part)
        self.worker_of = [workers[o] for o in self.owner]
        self.shards = [
            (self._on(client, x, where, "x", i), self._on(client, yb, where, "y", i))
            for i, (x, yb) in enumerate(zip(x_futures, y_futures))
        ]
        client.gather(self._per_shard(client, "shard-check", _check_shard, problem))  # raises ValueError
        return workers[:taking_part]

    def _on(self, client: Any, future: Any, where: Mapping[Any, Any], kind: str, shard: int) -> Any:
        """Shard ``shard``'s block on its worker: ``future`` if it is there, else a copy by a pinned task."""
        worker = self.worker_of[shard]
        if worker in where.get(future.key, ()):
            return future
        return self._copy(client, future, f"{keys.SGD_SHARD}{kind}-{self._token}-{shard}", worker)

    def _copy(self, client: Any, future: Any, key: str, worker: str) -> Any:
        copy = _pinned(client, _same, future, key=key, worker=worker)
        self._copies.append(copy)
        return copy

    def worker_blocks(self, client: Any, workers: list[str]) -> list[Blocks]:
        blocks: list[Blocks] = [([], []) for _ in workers]
        for (x, y), owner in zip(self.shards, self.owner):
            blocks[owner][0].append(x)
            blocks[owner][1].append(y)
        return blocks

    def coded_blocks(
        self, client: Any, workers: list[str], assignments: Sequence[Mapping[int, float]]
    ) -> list[CodedBlocks]:
        # Partition j is worker j's shards; the code's other holders of partition j get copies of them.
        own = self.worker_blocks(client, workers)
        placed: dict[tuple[int, int], Blocks] = {(j, j): own[j] for j in range(len(workers))}
        for partition, receivers in coded_copies(assignments).items():
            for receiver in receivers:
                worker = workers[receiver]
                key = f"{keys.SGD_SHARD}coded-{self._token}-{partition}-{receiver}"
                placed[partition, receiver] = (
                    [self._copy(client, x, f"{key}-x-{n}", worker) for n, x in enumerate(own[partition][0])],
                    [self._copy(client, y, f"{key}-y-{n}", worker) for n, y in enumerate(own[partition][1])],
                )
        return [
            ({j: placed[j, i][0] for j in a}, {j: placed[j, i][1] for j in a})
            for i, a in enumerate(assignments)
        ]

    def _per_shard(self, client: Any, name: str, function: Any, *args: Any) -> list[Any]:
        """``function(*args, x, y)`` on every shard, on the shard's worker: futures of the (small) results."""
        token = uuid.uuid4().hex[:8]
        return [
            _pinned(client, function, *args, x, y, key=f"{keys.SGD}{name}-{token}-{i}", worker=worker)
            for i, ((x, y), worker) in enumerate(zip(self.shards, self.worker_of))
        ]

    def optimum(self, client: Any, problem: Problem) -> np.ndarray:
        """Newton's method on distributed gradient and Hessian sums (least squares: two steps)."""
        w = np.zeros(self.features)
        identity = np.eye(self.features)
        loss = self._loss(client, problem, w)
        for _ in range(50):
            terms = client.gather(self._per_shard(client, "optimum", _newton_terms, problem, w))
            gradient = sum(g for g, _ in terms) / self.rows + problem.l2 * w
            hessian = sum(h for _, h in terms) / self.rows + problem.l2 * identity
            step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
            # Backtrack on the distributed loss: a full Newton step can overshoot for the logistic loss.
            for _ in range(30):
                candidate = w - step
                candidate_loss = self._loss(client, problem, candidate)
                if candidate_loss <= loss + 1e-12 * abs(loss):
                    break
                step = step / 2
            w, loss = candidate, candidate_loss
            if np.linalg.norm(step) <= 1e-13 * max(float(np.linalg.norm(w)), 1.0):
                break
        return w

    def _loss(self, client: Any, problem: Problem, w: np.ndarray) -> float:
        return float(self.losses(client, problem, w[None, :])[0])

    def losses(self, client: Any, problem: Problem, parameters: np.ndarray) -> np.ndarray:
        parameters = np.atleast_2d(parameters)
        sums = client.gather(self._per_shard(client, "loss", _loss_sums, problem, parameters))
        ridge = 0.5 * problem.l2 * np.einsum("ij,ij->i", parameters, parameters)
        return np.sum(sums, axis=0) / self.rows + ridge


def as_dataset(X: Any, y: Any) -> Dataset:
    """:class:`ShardedData` when ``X`` is a Dask array, else :class:`ReplicatedData` of checked NumPy arrays.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> type(as_dataset(np.ones((4, 2)), np.ones(4))).__name__
    'ReplicatedData'
    >>> type(as_dataset(da.ones((4, 2), chunks=2), np.ones(4))).__name__
    'ShardedData'
    """
    if isinstance(X, da.Array):
        return ShardedData(X, y)
    if isinstance(y, da.Array):
        y = y.compute()
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples x features), got {X.ndim}-D")
    _check_shapes(X.shape, y.shape)
    _check_finite(X, y)
    return ReplicatedData(X, y)


def _check_shapes(x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> None:
    """Samples in rows of a 2-D ``X``, one target each in a 1-D ``y``, and at least one sample."""
    if len(y_shape) != 1:
        raise ValueError(f"y must be 1-D, got {len(y_shape)}-D")
    if x_shape[0] != y_shape[0]:
        raise ValueError(f"X has {x_shape[0]} rows but y has {y_shape[0]}")
    if x_shape[0] == 0:
        raise ValueError("X has no rows: SGD needs at least one sample")


def _chunk_futures(client: Any, array: Any) -> list[Future]:
    """The futures of an array's chunks in row order (one chunk of columns), persisting it if needed."""
    persisted = client.persist(array)
    by_key = {f.key: f for f in futures_of(persisted)}
    return [by_key[k] for k in flatten(persisted.__dask_keys__())]


def _pinned(client: Any, function: Any, *args: Any, key: str, worker: str) -> Future:
    """``function(*args)`` as a task that runs on ``worker`` and nowhere else."""
    return client.submit(function, *args, key=key, workers=[worker], allow_other_workers=False, pure=False)


def _same(block: np.ndarray) -> np.ndarray:
    """A block, on the worker this task is pinned to: moves data from worker to worker."""
    return block


def _check_finite(x: np.ndarray, y: np.ndarray) -> None:
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("X and y must be finite (found NaN or inf)")


def _check_shard(problem: Problem, x: np.ndarray, y: np.ndarray) -> int:
    _check_finite(x, y)
    problem.check_targets(y)
    return len(y)


def _newton_terms(
    problem: Problem, w: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    return problem.gradient_sum(w, x, y), problem.hessian_sum(w, x, y)


def _loss_sums(problem: Problem, parameters: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return problem.loss_sums(parameters, x, y)
