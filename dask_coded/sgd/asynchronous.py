"""Asynchronous SGD with no global barrier: async, K-async and K-batch-async (Dutta et al. 2018).

The client is the parameter server. Every worker always has one gradient
task in flight; ``distributed.as_completed`` hands the server each gradient
as it arrives. A gradient is *stale* by the number of updates applied
between the parameters it was computed at and the update that applies it;
the history records it per gradient.

- async: apply every gradient on arrival; the sender restarts at once with
  the new parameters.
- K-async: wait for K gradients (from K distinct senders), apply their mean;
  those K senders restart with the new parameters, the others keep
  computing on their older ones.
- K-batch-async: every sender restarts at once with the latest parameters
  (no idling); an update applies the mean of the next K gradients, from any
  workers (one worker may send several).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from distributed import as_completed

from .base import Trainer
from .data import Dataset
from .synchronous import _check_k, _positive_k

__all__ = ["AsyncSGD", "KAsyncSGD", "KBatchAsyncSGD"]


class _ParameterServer(Trainer):
    """The event loop every asynchronous variant shares; subclasses say when to update and restart."""

    #: gradients per update
    k = 1
    #: whether a sender restarts before the update it contributed to (K-batch-async)
    restart_before_update = False

    def _train(self, client: Any, workers: list[str], data: Dataset) -> np.ndarray:
        blocks = data.worker_blocks(client, workers)
        w, version = np.zeros(data.features), 0
        started: dict[Any, tuple[int, int]] = {}  # future -> (worker index, version it computes at)

        def start(index: int) -> Any:
            future = self._submit_minibatch(client, workers[index], index, w, blocks[index])
            started[future] = (index, version)
            return future

        arrivals = as_completed([start(i) for i in range(len(workers))])
        buffer: list[tuple[int, np.ndarray, int, int]] = []
        try:
            for future in arrivals:
                index, computed_at = started.pop(future)
                gradient, rows, _ = future.result()
                buffer.append((index, gradient, rows, version - computed_at))
                self._record.gradient(index, version - computed_at)
                if self.restart_before_update:
                    arrivals.add(start(index))
                if len(buffer) >= self.k:
                    w = self._step(w, np.sum([b[1] for b in buffer], axis=0), sum(b[2] for b in buffer))
                    version += 1
                    if self._record.update(w, len(buffer), float(np.mean([b[3] for b in buffer]))):
                        return w
                    if not self.restart_before_update:
                        for sender in [b[0] for b in buffer]:
                            arrivals.add(start(sender))
                    buffer = []
        finally:
            client.cancel(list(started))
        # Unreachable: fewer than K <= P gradients are buffered, so some worker is always computing.
        raise RuntimeError("the parameter server ran out of gradients")


class AsyncSGD(_ParameterServer):
    """Apply each worker's mini-batch gradient as soon as it arrives, stale or not.

    See :class:`~dask_coded.sgd.base.Trainer` for the parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from distributed import Client, LocalCluster
    >>> from dask_coded.sgd import AsyncSGD
    >>> X = np.random.default_rng(0).standard_normal((200, 4))
    >>> with LocalCluster(n_workers=2, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client:
    ...         trainer = AsyncSGD(learning_rate=0.2, batch_size=None, max_iterations=100)
    ...         model = trainer.fit(X, X @ np.ones(4))
    >>> bool(model.history_.error[-1] < 1e-6)
    True
    """

    method = "async"


class KAsyncSGD(_ParameterServer):
    """Wait for ``k`` gradients from distinct workers, apply their mean; only those ``k`` restart.

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
    >>> from dask_coded.sgd import KAsyncSGD
    >>> X = np.random.default_rng(0).standard_normal((200, 4))
    >>> with LocalCluster(n_workers=3, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client:
    ...         trainer = KAsyncSGD(2, learning_rate=0.2, batch_size=None, max_iterations=80)
    ...         model = trainer.fit(X, X @ np.ones(4))
    >>> bool(model.history_.error[-1] < 1e-6)
    True
    """

    method = "k-async"

    def __init__(self, k: int, **options: Any) -> None:
        super().__init__(**options)
        self.k = _positive_k(k)

    def _prepare_for(self, workers: int) -> None:
        _check_k(self.k, workers)


class KBatchAsyncSGD(KAsyncSGD):
    """Every worker restarts at once with the latest parameters; apply the mean of each ``k`` arrivals.

    Parameters
    ----------
    k
        Gradients per update (any positive integer: a worker may send several).
    **options
        See :class:`~dask_coded.sgd.base.Trainer`.

    Examples
    --------
    >>> import numpy as np
    >>> from distributed import Client, LocalCluster
    >>> from dask_coded.sgd import KBatchAsyncSGD
    >>> X = np.random.default_rng(0).standard_normal((200, 4))
    >>> with LocalCluster(n_workers=2, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client:
    ...         trainer = KBatchAsyncSGD(3, learning_rate=0.2, batch_size=None, max_iterations=80)
    ...         model = trainer.fit(X, X @ np.ones(4))
    >>> int(model.history_.gradients[-1])  # 3 gradients per update
    240
    """

    method = "k-batch-async"
    restart_before_update = True

    def _prepare_for(self, workers: int) -> None:
        pass  # K counts mini-batches, not workers
