"""Synchronous SGD: every update waits for all P workers (sync), the fastest K (K-sync), or an adaptive K."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Trainer, wait_until
from .data import Dataset
from .schedule import next_k

__all__ = ["AdaptiveKSyncSGD", "KSyncSGD", "SyncSGD", "expected_k_sync_time"]


class SyncSGD(Trainer):
    """Each update averages one mini-batch gradient from every worker, so it waits for the slowest.

    See :class:`~dask_coded.sgd.base.Trainer` for the parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from distributed import Client, LocalCluster
    >>> from dask_coded.sgd import SyncSGD
    >>> X = np.random.default_rng(0).standard_normal((200, 4))
    >>> y = X @ np.arange(4.0)
    >>> with LocalCluster(n_workers=2, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client:
    ...         model = SyncSGD(learning_rate=0.3, batch_size=None, max_iterations=60).fit(X, y)
    >>> bool(model.history_.error[-1] < 1e-6)
    True
    """

    method = "sync"

    def _wait_for(self) -> int | None:
        """How many of the P gradients the next update uses (None: all)."""
        return None

    def _updated(self, results: list[tuple[np.ndarray, int, float]], workers: int) -> None:
        """Called after each update with the gradients it applied (adaptive K looks at their losses)."""

    def _train(self, client: Any, workers: list[str], data: Dataset) -> np.ndarray:
        blocks = data.worker_blocks(client, workers)
        w = np.zeros(data.features)
        while True:
            futures = [
                self._submit_minibatch(client, worker, index, w, blocks[index])
                for index, worker in enumerate(workers)
            ]
            done = _fastest(futures, self._wait_for() or len(workers))
            results = client.gather(done)
            w = self._step(w, np.sum([g for g, _, _ in results], axis=0), sum(rows for _, rows, _ in results))
            if self._record.update(w, len(results)):
                return w
            self._updated(results, len(workers))


class KSyncSGD(SyncSGD):
    """Each update averages the fastest ``k`` of the P workers' gradients; the rest are cancelled.

    Parameters
    ----------
    k
        Gradients per update (``1 <= k <= P``).
    **options
        See :class:`~dask_coded.sgd.base.Trainer`.

    Examples
    --------
    >>> import numpy as np
    >>> from distributed import Client, LocalCluster
    >>> from dask_coded.sgd import KSyncSGD
    >>> X = np.random.default_rng(0).standard_normal((200, 4))
    >>> with LocalCluster(n_workers=3, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client:
    ...         trainer = KSyncSGD(2, learning_rate=0.3, batch_size=None, max_iterations=60)
    ...         model = trainer.fit(X, X @ np.ones(4))
    >>> np.round(model.coef_, 6)
    array([1., 1., 1., 1.])
    """

    method = "k-sync"

    def __init__(self, k: int, **options: Any) -> None:
        super().__init__(**options)
        self.k = _positive_k(k)

    def _wait_for(self) -> int | None:
        return self.k

    def _prepare_for(self, workers: int) -> None:
        _check_k(self.k, workers)


class AdaptiveKSyncSGD(KSyncSGD):
    """K-sync SGD that starts with a small K and raises it each time the loss stalls (AdaSync).

    Each update's loss estimate is the mean row loss over the rows its K
    gradients used, at the parameters they were computed at (no extra
    work); :func:`~dask_coded.sgd.schedule.next_k` decides, from the
    recent estimates, when to wait for more workers. A small K is fast but
    noisy (mini-batches) or biased towards the fast workers' shards
    (sharded data); raising K to P ends as sync SGD, with neither. The first
    stall takes two windows of updates; after a raise, one window at the
    new K shows whether it lowered the loss, and K grows again if not.

    Parameters
    ----------
    k
        The K of the first updates (``1 <= k <= P``).
    window, significance, growth
        The schedule's options, see :func:`~dask_coded.sgd.schedule.next_k`.
    **options
        See :class:`~dask_coded.sgd.base.Trainer`.

    Attributes
    ----------
    k_schedule_
        ``(update, K)`` pairs: the K in force from that update on.

    Examples
    --------
    >>> import numpy as np
    >>> from distributed import Client, LocalCluster
    >>> from dask_coded.sgd import AdaptiveKSyncSGD
    >>> X = np.random.default_rng(0).standard_normal((200, 4))
    >>> with LocalCluster(n_workers=2, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client:
    ...         trainer = AdaptiveKSyncSGD(1, learning_rate=0.3, batch_size=None, max_iterations=80)
    ...         model = trainer.fit(X, X @ np.ones(4))
    >>> model.k_schedule_[0]
    (0, 1)
    """

    method = "adaptive-k-sync"

    def __init__(
        self, k: int = 1, *, window: int = 3, significance: float = 2.0, growth: float = 2.0, **options: Any
    ) -> None:
        super().__init__(k, **options)
        next_k(1, 1, [], window=window, significance=significance, growth=growth)  # checks the options
        self.window = int(window)
        self.significance = float(significance)
        self.growth = float(growth)

    def _train(self, client: Any, workers: list[str], data: Dataset) -> np.ndarray:
        self._current_k = self.k
        self._losses: list[float] = []
        self._updates_at_k = 0
        self.k_schedule_ = [(0, self.k)]
        return super()._train(client, workers, data)

    def _wait_for(self) -> int | None:
        return self._current_k

    def _updated(self, results: list[tuple[np.ndarray, int, float]], workers: int) -> None:
        rows = sum(r for _, r, _ in results)
        self._losses.append(sum(loss for _, _, loss in results) / max(rows, 1))
        del self._losses[: -2 * self.window]  # all the rule reads
        self._updates_at_k = min(self._updates_at_k + 1, len(self._losses))
        k = next_k(
            self._current_k,
            workers,
            self._losses,
            updates_at_k=self._updates_at_k,
            window=self.window,
            significance=self.significance,
            growth=self.growth,
        )
        if k != self._current_k:
            self._current_k, self._updates_at_k = k, 0
            self.k_schedule_.append((len(self._record.parameters) - 1, k))


def expected_k_sync_time(workers: int, k: int, mean_delay: float) -> float:
    """Expected time of a K-sync step when task times are i.i.d. exponential with mean ``mean_delay``.

    The K-th order statistic of P exponentials: ``mean_delay * sum_{i=P-K+1}^{P} 1/i``
    (Dutta et al. 2018).

    Examples
    --------
    >>> round(expected_k_sync_time(4, 4, 1.0), 4)  # sync: the maximum of 4
    2.0833
    """
    return mean_delay * sum(1.0 / i for i in range(workers - k + 1, workers + 1))


def _fastest(futures: list[Any], count: int) -> list[Any]:
    """The first ``count`` futures to finish (ties in submission order); the others are cancelled."""
    done = wait_until(futures, lambda finished: len(finished) >= count)
    if len(done) > count:
        futures[0].client.cancel(done[count:])
    return done[:count]


def _positive_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"K must be a positive integer, got {k!r}")
    return int(k)


def _check_k(k: int, workers: int) -> None:
    if k > workers:
        raise ValueError(f"K={k} exceeds the number of workers P={workers}")
