"""Synchronous SGD: every update waits for all P workers (sync) or for the fastest K (K-sync)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Trainer, wait_until
from .data import Dataset

__all__ = ["KSyncSGD", "SyncSGD", "expected_k_sync_time"]


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
