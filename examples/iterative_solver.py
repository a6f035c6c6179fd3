"""Conjugate gradients on A^T A x = A^T b with a persisted CodedArray: encode once, reuse every step.

One worker is 10x slow; every matrix-vector product decodes from the first blocks to finish.

Run: python examples/iterative_solver.py
"""

import time

import numpy as np
from distributed import Client, LocalCluster

import dask_coded
from dask_coded.faults import inject
from dask_coded.testing import one_block_per_worker


def main():
    with (
        LocalCluster(n_workers=6, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        dask_coded.register(client)
        A = one_block_per_worker(client, 12_000, 300)  # six row blocks, one per worker
        coded_rows = dask_coded.encode(A, code=dask_coded.MDSCode(4, 6)).persist()
        coded_cols = dask_coded.encode(A, code=dask_coded.MDSCode(4, 6), axis=1).persist()
        b = np.random.default_rng(1).standard_normal(12_000)

        def normal_matvec(v):  # A^T (A v): two coded products
            return dask_coded.dot(dask_coded.dot(coded_rows, v).compute(), coded_cols).compute()

        start = time.perf_counter()
        with inject(client, tasks="products", delay_shift=0.02, slow_workers=1, slow_factor=10):
            rhs = dask_coded.dot(b, coded_cols).compute()
            x, r = np.zeros(300), rhs.copy()
            p, rr = r.copy(), r @ r
            steps = 0
            for steps in range(1, 61):  # noqa: B007  (reported below)
                q = normal_matvec(p)
                alpha = rr / (p @ q)
                x, r = x + alpha * p, r - alpha * q
                rr, rr_old = r @ r, rr
                if np.sqrt(rr) < 1e-10 * np.linalg.norm(rhs):
                    break
                p = r + rr / rr_old * p
        dense = A.compute()
        reference = np.linalg.lstsq(dense, b, rcond=None)[0]
        error = np.linalg.norm(x - reference) / np.linalg.norm(reference)
        print(f"{steps} CG steps in {time.perf_counter() - start:.1f} s; error vs lstsq {error:.1e}")
        print("plugin:", dask_coded.plugin_stats(client))
        assert error < 1e-8, error


if __name__ == "__main__":  # worker processes re-import this file
    main()
