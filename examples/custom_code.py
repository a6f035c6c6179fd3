"""Register your own code and use it by name in dask_coded.dot: early decode, wrong blocks corrected.

The code is systematic and one-sided (it splits A into row blocks, like MDS): parity block i is
sum_j P[i, j] A_j with a parity matrix you choose. Here P[i, j] = (j + 1) ** i, a Vandermonde
matrix on positive nodes: every square submatrix of it is nonsingular, so any k of the n blocks
decode.

Run: python examples/custom_code.py
"""

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

import dask_coded
from dask_coded.codes import ONE_SIDED, Chunking, MDSCode, register_code
from dask_coded.codes.sizing import coded_block_count
from dask_coded.faults import inject


class ParityMatrixCode(MDSCode):
    """A systematic code with a user-chosen parity matrix (``n - k`` rows, ``k`` columns)."""

    def __init__(self, parity):
        self.parity = np.asarray(parity, dtype=float)
        self.k, self.n = self.parity.shape[1], sum(self.parity.shape)
        self.generator = np.vstack([np.eye(self.k), self.parity])  # data blocks first, unchanged
        self.targets = np.eye(self.k)
        self.generator_name, self.seed = "user", 0

    def _params(self):  # equal matrices give equal codes and equal Dask keys
        return (tuple(map(tuple, self.parity.tolist())),)

    def _param_names(self):
        return ("parity",)


def vandermonde_parity(chunking: Chunking) -> ParityMatrixCode:
    """The factory: plain numbers in (no Dask), a code for the operand's blocks out."""
    # Redundancy for stragglers and wrong blocks, sized so that a faulty worker computing several
    # members of a group (more members than workers) still counts as one.
    k = chunking.blocks
    rows = coded_block_count(k, chunking.parity, chunking.max_errors, chunking.workers) - k
    nodes = np.arange(1, k + 1)
    return ParityMatrixCode(nodes[None, :] ** np.arange(rows)[:, None])


register_code("my-code", ParityMatrixCode, kind=ONE_SIDED, from_chunking=vandermonde_parity)

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    A = da.from_array(rng.standard_normal((4000, 300)), chunks=(1000, 300))  # k = 4 row blocks
    x = rng.standard_normal(300)
    expected = A.compute() @ x
    with (
        LocalCluster(
            n_workers=8, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        dask_coded.register(client)
        workers = sorted(client.nthreads())
        # One worker is 50x slow at its block products: the decode does not wait for it.
        with inject(client, tasks="products", delay_shift=0.02, slow_workers=workers[:1], slow_factor=50):
            y = dask_coded.dot(A, x, code="my-code").compute()
        print(f"my-code: max error vs NumPy {np.abs(y - expected).max():.1e}")
        print("decoded early:", dask_coded.plugin_stats(client)["decodes_early"], "blocks")
        # Another worker returns garbage while two are slow: max_errors=1 adds two parity rows, and the
        # decode reads the six fastest products, locates the wrong one and decodes around it.
        faults = {
            "delay_shift": 0.02,
            "slow_workers": workers[2:4],
            "slow_factor": 50,
            "error_workers": workers[1:2],
        }
        with inject(client, tasks="products", **faults):
            y = dask_coded.dot(A, x, code="my-code", max_errors=1).compute()
        print(f"my-code, max_errors=1: max error vs NumPy {np.abs(y - expected).max():.1e}")
        print("wrong products corrected:", dask_coded.plugin_stats(client)["corrections"])
