"""Coded SGD: the exact full gradient every update, from the fastest workers.

- :class:`GradientCodedSGD`: gradient coding (Tandon et al. 2017). The data
  are cut into P partitions; worker ``i`` holds the ``s + 1`` partitions of
  its :meth:`~dask_coded.codes.GradientCode.assignment` and sends one
  combination of their gradients; any ``P - s`` messages decode the full
  gradient, and the rest are cancelled.
- :class:`CodedMatvecSGD`: the full gradient ``X^T r(Xw)`` through two coded
  matrix-vector products, ``dask_coded.dot`` on a persisted
  :class:`~dask_coded.CodedArray` of ``X`` (row blocks) and one of ``X``'s
  column blocks, with the scheduler plugin dropping the late products.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import dask.array as da
import numpy as np

from .. import linalg
from ..array import encode, parity_for
from ..codes import Code, GradientCode, MDSCode
from ..errors import ConditioningWarning
from ..plugin import NAME, register
from .base import Trainer, partition_gradient, wait_until
from .data import Dataset, ReplicatedData

__all__ = ["CodedMatvecSGD", "GradientCodedSGD"]


class GradientCodedSGD(Trainer):
    """Full-gradient descent that ignores any ``stragglers`` slow workers, by gradient coding.

    Parameters
    ----------
    stragglers
        Workers whose messages are not waited for (``s``; each worker then
        computes ``s + 1`` partition gradients).
    scheme
        ``"cyclic"`` (any P) or ``"fractional"`` (``s + 1`` divides P).
    **options
        See :class:`~dask_coded.sgd.base.Trainer` (``batch_size`` is unused:
        gradients are exact).

    Examples
    --------
    >>> import numpy as np
    >>> from distributed import Client, LocalCluster
    >>> from dask_coded.sgd import GradientCodedSGD
    >>> X = np.random.default_rng(0).standard_normal((200, 4))
    >>> with LocalCluster(n_workers=3, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client:
    ...         model = GradientCodedSGD(1, learning_rate=0.3, max_iterations=60).fit(X, X @ np.ones(4))
    >>> np.round(model.coef_, 6)
    array([1., 1., 1., 1.])
    """

    method = "gradient-coded"

    def __init__(self, stragglers: int = 1, scheme: str = "cyclic", **options: Any) -> None:
        super().__init__(**options)
        self.stragglers = stragglers
        self.scheme = scheme

    def _prepare_for(self, workers: int) -> None:
        self.code_ = GradientCode(workers, self.stragglers, self.scheme, seed=self.seed)

    def _train(self, client: Any, workers: list[str], data: Dataset) -> np.ndarray:
        code = self.code_
        assignments = [code.assignment(i) for i in range(len(workers))]
        blocks = data.coded_blocks(client, workers, assignments)
        w = np.zeros(data.features)
        while True:
            futures = {
                self._submit(
                    client,
                    worker,
                    i,
                    partition_gradient,
                    self.problem,
                    w,
                    blocks[i][0],
                    blocks[i][1],
                    assignments[i],
                ): i
                for i, worker in enumerate(workers)
            }
            done = wait_until(list(futures), functools.partial(_decodable, code, futures))
            messages = {futures[f]: f.result() for f in done}
            with warnings.catch_warnings():
                # Near the optimum the full gradient is far smaller than the partitions' gradients, so
                # its round-off relative to itself is large; a plain sum of the partitions has the same.
                warnings.simplefilter("ignore", ConditioningWarning)
                (total,) = code.decode(messages)
            w = self._step(w, total, data.rows)
            if self._record.update(w, len(messages)):
                return w


class CodedMatvecSGD(Trainer):
    """Full-gradient descent whose two matrix-vector products per step are coded (``dask_coded.dot``).

    Parameters
    ----------
    code
        One-sided code for both products (its ``k`` data blocks split X's
        rows and, for the second product, its columns); default: MDS with
        ``k = P - coded.parity`` and ``n = P``, one coded block per worker.
    **options
        See :class:`~dask_coded.sgd.base.Trainer` (``batch_size`` is unused).

    Examples
    --------
    >>> import numpy as np
    >>> from distributed import Client, LocalCluster
    >>> from dask_coded.sgd import CodedMatvecSGD
    >>> X = np.random.default_rng(0).standard_normal((200, 4))
    >>> with LocalCluster(n_workers=3, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client:
    ...         model = CodedMatvecSGD(learning_rate=0.3, max_iterations=60).fit(X, X @ np.ones(4))
    >>> np.round(model.coef_, 6)
    array([1., 1., 1., 1.])
    """

    method = "coded-matvec"

    def __init__(self, code: Code | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.code = code

    def _prepare_for(self, workers: int) -> None:
        k = max(workers - parity_for(workers), 1)
        self.code_: Code = self.code if self.code is not None else MDSCode(k, max(workers, k + 1))

    def _check_dataset(self, data: Dataset) -> None:
        if not isinstance(data, ReplicatedData):
            raise TypeError(
                "CodedMatvecSGD encodes X into parity blocks, each a combination of all of X's row blocks "
                "(gathered on one worker); for data sharded on the workers use GradientCodedSGD"
            )

    def _train(self, client: Any, workers: list[str], data: Dataset) -> np.ndarray:
        assert isinstance(data, ReplicatedData)  # _check_dataset
        X, y = data.X, data.y
        if self.code_.k > X.shape[1]:
            raise ValueError(f"{self.code_!r} splits X's {X.shape[1]} columns into {self.code_.k} blocks")
        if not client.run_on_scheduler(_has_plugin):
            register(client)
        rows = np.array_split(X, self.code_.k)
        plain = da.concatenate(
            [
                client.persist(da.from_array(part, chunks=part.shape), workers=[workers[i % len(workers)]])
                for i, part in enumerate(rows)
            ]
        )
        by_rows = client.persist(encode(plain, self.code_, axis=0))
        by_columns = client.persist(encode(plain, self.code_, axis=1))
        w = np.zeros(X.shape[1])
        while True:
            predictions = linalg.dot(by_rows, w).compute()
            gradient = linalg.dot(self.problem.residual(predictions, y), by_columns).compute()
            w = self._step(w, gradient, len(y))
            if self._record.update(w, 1):
                return w


def _decodable(code: GradientCode, sender: dict[Any, int], finished: list[Any]) -> bool:
    """Whether the messages of the ``finished`` futures decode the full gradient."""
    return code.is_recovery_set(sender[f] for f in finished)


def _has_plugin(dask_scheduler: Any) -> bool:
    return NAME in dask_scheduler.plugins
