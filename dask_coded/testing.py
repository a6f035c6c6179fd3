"""Test and benchmark helpers: compare with NumPy, lay out plain Dask data fairly on a cluster."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["KeyRecorder", "assert_eq", "keys_received", "one_block_per_worker", "relative_error"]


def relative_error(actual: Any, expected: Any) -> float:
    """``max|actual - expected| / max|expected|``: error relative to the result's scale.

    Examples
    --------
    >>> relative_error([1.0, 2.0], [1.0, 2.5])
    0.2
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = np.abs(expected).max() if expected.size else 0.0
    difference = np.abs(actual - expected).max() if expected.size else 0.0
    return float(difference / scale) if scale else float(difference)


def assert_eq(actual: Any, expected: Any, rtol: float = 1e-10, *, like: Any = None, **compute: Any) -> None:
    """Assert a (Dask) result equals ``expected`` to ``rtol`` of the result's scale.

    Computes ``actual`` if it is a Dask array (``compute`` is passed on, e.g.
    ``scheduler="sync"``); checks shape and dtype against ``expected``, and
    chunks against ``like`` (the plain Dask array the result stands in for).

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> assert_eq(da.ones(3, chunks=1) * 2, np.full(3, 2.0))
    """
    expected = np.asarray(expected)
    if like is not None:
        assert actual.chunks == like.chunks, f"chunks {actual.chunks} != {like.chunks}"
        assert actual.dtype == like.dtype, f"dtype {actual.dtype} != {like.dtype}"
    if isinstance(actual, da.Array):
        assert actual.shape == expected.shape, f"lazy shape {actual.shape} != {expected.shape}"
        assert actual.dtype == expected.dtype, f"lazy dtype {actual.dtype} != {expected.dtype}"
        actual = actual.compute(**compute)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    scale = np.abs(expected).max() if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def one_block_per_worker(
    client: Any, rows: int, cols: int, blocks: int | None = None, seed: int = 0
) -> da.Array:
    """A random ``rows x cols`` array in ``blocks`` row blocks, block ``i`` kept on worker ``i mod W``.

    Plain Dask's best layout for a blocked product on a cluster, and the fair
    baseline for a coded one: each block is generated on its worker (nothing
    large travels in the graph), so a slow worker delays only its own blocks.
    ``blocks`` defaults to the number of workers. The blocks are the array's
    own keys, already in memory: persisting it runs nothing (a concatenation
    of persisted pieces would run one alias task per block, on any worker).

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> with LocalCluster(n_workers=2, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client:
    ...         one_block_per_worker(client, 10, 3, seed=1).chunks
    ((5, 5), (3,))
    """
    workers = sorted(client.nthreads())
    blocks = len(workers) if blocks is None else blocks
    sizes = tuple(len(part) for part in np.array_split(np.arange(rows), blocks))
    name = "random-rows-" + tokenize(rows, cols, blocks, seed, workers)
    futures: dict[Any, Any] = {
        (name, i, 0): client.submit(
            _standard_normal, (seed, i), (size, cols), key=(name, i, 0), workers=[workers[i % len(workers)]]
        )
        for i, size in enumerate(sizes)
    }
    graph = HighLevelGraph.from_collections(name, futures, dependencies=())
    return da.Array(graph, name, (sizes, (cols,)), dtype=np.float64, meta=np.empty((0, 0)))


def _standard_normal(seed: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


class KeyRecorder(WorkerPlugin):
    """Records every key that reaches a worker's memory once registered: computed there or fetched.

    Register it with ``client.register_plugin(KeyRecorder())`` and read the
    record with :func:`keys_received`: which data moved where during a run.
    """

    name = "dask-coded-key-recorder"

    def setup(self, worker: Any) -> None:
        self.keys: set[Any] = set()

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "memory":
            self.keys.add(key)


def keys_received(client: Any) -> dict[str, set[Any]]:
    """Worker address -> the keys that reached its memory since :class:`KeyRecorder` was registered."""
    return {worker: set(keys) for worker, keys in client.run(_recorded_keys).items()}


def _recorded_keys(dask_worker: Any) -> list[Any]:
    return list(dask_worker.plugins[KeyRecorder.name].keys)
