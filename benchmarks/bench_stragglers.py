"""Plain da.dot against dask_coded.dot under stragglers, on the same cluster and data, back to back.

Every worker is single-threaded. Plain Dask splits A into one row block per
worker; dask-coded into k = W - parity data blocks plus parity blocks, one
coded block per worker (the plugin places them). The same seeded fault model
(applied to block products only) hits both. For each model: latency
percentiles over repeated matvecs, the ratio plain / coded, and the oracle
bound: the time the k-th fastest coded product finished plus the decode,
compared with when the last decode really finished (both on the workers'
clocks, from submission).

Run: python -m benchmarks.bench_stragglers [--quick] [--scheduler ADDRESS]
"""

from __future__ import annotations

import time
from typing import Any

import dask.array as da
import numpy as np
from distributed import Client, get_task_stream

import dask_coded
from benchmarks.common import cluster_arguments, on_cluster, percentiles, save
from dask_coded import keys
from dask_coded.faults import inject
from dask_coded.testing import one_block_per_worker

MODELS: dict[str, dict[str, Any]] = {
    "slow-worker-10x": {"delay_shift": 0.05, "slow_workers": 1, "slow_factor": 10.0},
    "shifted-exponential": {"delay": "shifted-exponential", "delay_shift": 0.05, "delay_scale": 0.1},
    "pareto": {"delay": "pareto", "delay_shift": 0.02, "delay_scale": 0.04, "pareto_shape": 1.5},
}


def _oracle(stream: list[dict[str, Any]], start: float, code: Any) -> tuple[float, float]:
    """(oracle, decoded): both seconds since ``start``, on the workers' clocks.

    oracle: when every group of ``code`` had its fastest recovery set of
    products (the ``k``-th fastest of the group's members for MDS groups,
    one copy of each block for replication), plus the longest decode;
    decoded: the last decode finished. Their ratio is how close the plugin
    gets to the bound; what follows the decodes (assembling the result and
    sending it to the client) is the same for plain Dask. Products are
    matvec products, keyed ``(name, i)``.
    """
    finishes: dict[int, float] = {}
    decodes, decoded = [], 0.0
    for record in stream:
        name = keys.key_name(record["key"])
        compute = [s for s in record["startstops"] if s["action"] == "compute"]
        if not compute:
            continue
        if name.startswith(keys.PRODUCT):
            finishes[int(record["key"][1])] = compute[-1]["stop"] - start
        elif name.startswith(keys.DECODE):
            decodes.append(compute[-1]["stop"] - compute[-1]["start"])
            decoded = max(decoded, compute[-1]["stop"] - start)
    ready = 0.0
    for group in code.groups:
        finished: list[int] = []
        for stop, member in sorted((finishes[i], m) for m, i in enumerate(group.members) if i in finishes):
            finished.append(member)
            if group.code.redundancy(finished) >= 0:
                ready = max(ready, stop)
                break
        else:
            return float("nan"), decoded
    return ready + (max(decodes) if decodes else 0.0), decoded


def run(client: Client, rows: int, cols: int, repeats: int, parity: int, seed: int) -> list[dict[str, Any]]:
    workers = len(client.nthreads())
    k = workers - parity
    rng = np.random.default_rng(seed)
    plain = one_block_per_worker(client, rows, cols, seed=seed)
    dask_coded.register(client)
    coded = client.persist(dask_coded.encode(plain, code=dask_coded.MDSCode(k, workers)))
    rows_out = []
    warm_up = rng.standard_normal(cols)  # first computes import and deserialise on every worker
    da.dot(plain, warm_up).compute()
    dask_coded.dot(coded, warm_up).compute()
    for name, params in MODELS.items():
        with inject(client, tasks="products", seed=seed, **params) as model:
            plain_times, coded_times, oracles, decoded, errors = [], [], [], [], []
            for _ in range(repeats):
                x = rng.standard_normal(cols)
                start = time.perf_counter()
                expected = da.dot(plain, x).compute()
                plain_times.append(time.perf_counter() - start)
                with get_task_stream(client) as stream:
                    wall = time.time()
                    start = time.perf_counter()
                    result = dask_coded.dot(coded, x).compute()
                    coded_times.append(time.perf_counter() - start)
                oracle, last_decode = _oracle(stream.data, wall, coded.code)
                oracles.append(oracle)
                decoded.append(last_decode)
                errors.append(float(np.abs(result - expected).max() / np.abs(expected).max()))
        plain_p, coded_p, oracle_p = percentiles(plain_times), percentiles(coded_times), percentiles(oracles)
        decoded_p = percentiles(decoded)
        row = {
            "model": name,
            "fault_model": dict(model.__dict__),
            "workers": workers,
            "k": k,
            "n": workers,
            "rows": rows,
            "cols": cols,
            "repeats": repeats,
            "plain": plain_p,
            "coded": coded_p,
            "oracle": oracle_p,
            "decoded": decoded_p,
            "speedup": {q: plain_p[q] / coded_p[q] for q in ("p50", "p95", "p99")},
            "fraction_of_oracle_p50": oracle_p["p50"] / decoded_p["p50"],
            "max_relative_error": max(errors),
        }
        rows_out.append(row)
        print(
            f"{name:20s} plain p50 {plain_p['p50']:.3f}s p99 {plain_p['p99']:.3f}s | coded p50 "
            f"{coded_p['p50']:.3f}s p99 {coded_p['p99']:.3f}s | speedup p50 {row['speedup']['p50']:.2f}x "
            f"p99 {row['speedup']['p99']:.2f}x | oracle/decoded {row['fraction_of_oracle_p50']:.2f} "
            f"| err {max(errors):.1e}",
            flush=True,
        )
    return rows_out


def plot(rows: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.2), sharey=False)
    for ax, row in zip(np.atleast_1d(axes), rows):
        qs = ["p50", "p95", "p99"]
        positions = np.arange(len(qs))
        ax.bar(positions - 0.2, [row["plain"][q] for q in qs], 0.4, label="plain da.dot")
        ax.bar(positions + 0.2, [row["coded"][q] for q in qs], 0.4, label="dask_coded.dot")
        ax.plot(positions + 0.2, [row["oracle"][q] for q in qs], "k_", markersize=20, label="oracle")
        ax.set_xticks(positions, qs)
        ax.set_title(row["model"])
        ax.set_ylabel("latency (s)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(
        f"{rows[0]['workers']} workers, k={rows[0]['k']}, n={rows[0]['n']}, "
        f"A {rows[0]['rows']}x{rows[0]['cols']}, {rows[0]['repeats']} back-to-back matvecs"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = cluster_arguments(__doc__.splitlines()[0])
    parser.add_argument("--parity", type=int, default=2)
    args = parser.parse_args(argv)
    rows, cols, repeats = (2000, 200, 8) if args.quick else (16000, 1000, 40)
    results = on_cluster(
        args.scheduler, args.workers, lambda client: run(client, rows, cols, repeats, args.parity, args.seed)
    )
    save("stragglers", results, args.out, plot)
    return results


if __name__ == "__main__":
    main()
