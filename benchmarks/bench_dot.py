"""Overhead of dask_coded.dot over da.dot when nothing straggles, on the same cluster and data.

A persisted CodedArray (k data blocks + 2 parities, the plugin registered)
against the same A persisted as k plain blocks, for repeated matvecs and
matmuls. Reports the median latency ratio coded / plain.

Run: python -m benchmarks.bench_dot [--quick] [--scheduler ADDRESS]
"""

from __future__ import annotations

import time
from typing import Any

import dask.array as da
import numpy as np
from distributed import Client

import dask_coded
from benchmarks.common import cluster_arguments, on_cluster, percentiles, save
from dask_coded.testing import one_block_per_worker


def _latencies(function: Any, repeats: int) -> list[float]:
    function()  # warm up (imports, first transfers)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def run(
    client: Client, rows: int, cols: int, blocks: list[int], repeats: int, seed: int
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cols)
    right = rng.standard_normal((cols, 64))
    dask_coded.register(client)
    out = []
    for k in blocks:
        plain = one_block_per_worker(client, rows, cols, k, seed)
        coded = client.persist(dask_coded.encode(plain, code=dask_coded.MDSCode(k, k + 2)))
        for operation, operand in (("matvec", x), ("matmul", right)):
            plain_p = percentiles(_latencies(lambda p=plain, o=operand: da.dot(p, o).compute(), repeats))
            coded_p = percentiles(
                _latencies(lambda c=coded, o=operand: dask_coded.dot(c, o).compute(), repeats)
            )
            row = {
                "operation": operation,
                "k": k,
                "n": k + 2,
                "rows": rows,
                "cols": cols,
                "repeats": repeats,
                "plain": plain_p,
                "coded": coded_p,
                "overhead_p50": coded_p["p50"] / plain_p["p50"],
            }
            out.append(row)
            print(
                f"{operation} k={k:2d} n={k + 2:2d}  plain p50 {plain_p['p50'] * 1e3:7.1f} ms  coded p50 "
                f"{coded_p['p50'] * 1e3:7.1f} ms  coded/plain {row['overhead_p50']:.2f}",
                flush=True,
            )
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = cluster_arguments(__doc__.splitlines()[0]).parse_args(argv)
    rows, cols, repeats, blocks = (2048, 256, 5, [2, 4]) if args.quick else (16384, 1024, 20, [2, 4, 8, 16])
    results = on_cluster(
        args.scheduler, args.workers, lambda client: run(client, rows, cols, blocks, repeats, args.seed)
    )
    save("dot", results, args.out)
    return results


if __name__ == "__main__":
    main()
