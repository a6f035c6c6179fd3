"""Distributed SGD under stragglers: sync, K-sync, adaptive K, async, K-async, K-batch-async, coded.

Every trainer has the same interface: ``Trainer(problem, learning_rate=...,
...).fit(X, y)`` returns the trainer with ``coef_`` (the parameters) and
``history_`` (a :class:`History` of wall time, updates, gradients applied,
loss, distance to the optimum and staleness), on the current
``distributed.Client``. Inject the same straggler model into every variant
with :func:`dask_coded.faults.inject` (the gradient tasks' keys start with
``sgd-gradient-``; the coded products' with ``coded-product-``).

See Dutta, Joshi, Ghosh, Dube, Nagpurkar, "Slow and Stale Gradients Can Win
the Race", AISTATS 2018, and Tandon, Lei, Dimakis, Karampatziakis, "Gradient
Coding", ICML 2017.
"""

from __future__ import annotations

from .asynchronous import AsyncSGD, KAsyncSGD, KBatchAsyncSGD
from .base import Trainer
from .coded import CodedMatvecSGD, GradientCodedSGD
from .data import ReplicatedData, ShardedData
from .history import History
from .problems import LeastSquares, LogisticRegression, Problem
from .schedule import next_k
from .synchronous import AdaptiveKSyncSGD, KSyncSGD, SyncSGD, expected_k_sync_time

__all__ = [
    "AdaptiveKSyncSGD",
    "AsyncSGD",
    "CodedMatvecSGD",
    "GradientCodedSGD",
    "History",
    "KAsyncSGD",
    "KBatchAsyncSGD",
    "KSyncSGD",
    "LeastSquares",
    "LogisticRegression",
    "Problem",
    "ReplicatedData",
    "ShardedData",
    "SyncSGD",
    "Trainer",
    "expected_k_sync_time",
    "next_k",
]
