"""Swap da.dot for dask_coded.dot in a pipeline; nothing else changes.

Run: python examples/drop_in_pipeline.py
"""

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

import dask_coded


def pipeline(dot):
    X = da.random.default_rng(0).standard_normal((40_000, 200), chunks=(5_000, 200))
    X = (X - X.mean(axis=0)) / X.std(axis=0)  # normalise the columns
    w = np.linspace(-1, 1, 200)
    scores = dot(X, w)  # the only line that differs
    return scores.max(), scores.std(), (scores > 0).sum()


def main():
    with (
        LocalCluster(n_workers=4, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        dask_coded.register(client)
        plain = da.compute(*pipeline(da.dot))
        coded = da.compute(*pipeline(dask_coded.dot))
        print("da.dot:        ", plain)
        print("dask_coded.dot:", coded)
        np.testing.assert_allclose(coded, plain, rtol=1e-10)
        print("same results; plugin:", dask_coded.plugin_stats(client))


if __name__ == "__main__":  # worker processes re-import this file
    main()
