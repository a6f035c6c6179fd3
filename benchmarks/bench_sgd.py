"""SGD error versus wall clock: every variant under the same straggler model, on the same cluster and data.

Least squares, data replicated on every worker (each samples mini-batches
from all rows, as in Dutta et al. 2018; the coded variants partition or
encode it instead). One worker is slow by a factor; every gradient task
and every coded product takes a fixed extra delay, times that factor on
the slow worker. Reports, per variant, the time to reach the target
distance to the optimum and the ratio to sync SGD.

Run: python -m benchmarks.bench_sgd [--quick] [--scheduler ADDRESS]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from distributed import Client

from benchmarks.common import cluster_arguments, on_cluster, save
from dask_coded import keys
from dask_coded.faults import inject
from dask_coded.sgd import (
    AsyncSGD,
    CodedMatvecSGD,
    GradientCodedSGD,
    KAsyncSGD,
    KBatchAsyncSGD,
    KSyncSGD,
    SyncSGD,
)

STRAGGLERS = {
    "delay_shift": 0.05,
    "slow_workers": 1,
    "slow_factor": 10.0,
    "prefixes": (keys.SGD, keys.PRODUCT),
}


def trainers(workers: int, options: dict[str, Any]) -> list[Any]:
    k = workers - 2
    return [
        SyncSGD(**options),
        KSyncSGD(k, **options),
        AsyncSGD(**options),
        KAsyncSGD(k, **options),
        KBatchAsyncSGD(k, **options),
        GradientCodedSGD(1, **{**options, "batch_size": None}),
        CodedMatvecSGD(**{**options, "batch_size": None}),
    ]


def run(
    client: Client, rows: int, cols: int, target: float, max_time: float, seed: int
) -> list[dict[str, Any]]:
    workers = len(client.nthreads())
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, cols))
    y = X @ rng.standard_normal(cols) + 0.01 * rng.standard_normal(rows)
    options = dict(
        learning_rate=0.2, batch_size=64, max_iterations=100_000, max_time=max_time, target_error=target
    )
    out = []
    with inject(client, seed=seed, **STRAGGLERS) as model:
        for trainer in trainers(workers, options):
            try:
                history = trainer.fit(X, y).history_
                diverged = False
            except FloatingPointError:
                history, diverged = None, True
            row = {
                "method": trainer.method,
                "k": getattr(trainer, "k", None),
                "diverged": diverged,
                "time_to_target": history.time_to(target) if history else float("inf"),
                "updates": int(history.iteration[-1]) if history else 0,
                "seconds_per_update": history.mean_iteration_time() if history else float("nan"),
                "final_error": float(history.error[-1]) if history else float("nan"),
                "curve": {"time": history.time.tolist(), "error": history.error.tolist()}
                if history
                else None,
            }
            out.append(row)
            print(
                f"{row['method']:15s} time to {target:g}: {row['time_to_target']:7.2f} s  "
                f"updates {row['updates']:5d}  {row['seconds_per_update'] * 1e3:7.1f} ms/update  "
                f"final error {row['final_error']:.1e}",
                flush=True,
            )
    sync_time = out[0]["time_to_target"]
    for row in out:
        row["speedup_vs_sync"] = sync_time / row["time_to_target"]
    for row in out:
        row.update(fault_model=dict(model.__dict__), workers=workers, rows=rows, cols=cols, target=target)
    return out


def _thin(times: np.ndarray, errors: np.ndarray, points: int = 400) -> dict[str, list[float]]:
    """At most ``points`` evenly spaced (in updates) points of a curve, the last one kept."""
    keep = np.unique(np.r_[np.linspace(0, len(times) - 1, points).astype(int), len(times) - 1])
    return {"time": times[keep].tolist(), "error": errors[keep].tolist()}


def plot(rows: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row in rows:
        if row["curve"]:
            ax.semilogy(row["curve"]["time"], row["curve"]["error"], label=row["method"])
    ax.axhline(rows[0]["target"], color="k", linestyle=":", linewidth=1)
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("|w - w*| / |w*|")
    first = rows[0]
    ax.set_title(
        f"least squares {first['rows']}x{first['cols']}, {first['workers']} workers, one 10x slow",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = cluster_arguments(__doc__.splitlines()[0]).parse_args(argv)
    rows, cols, target, max_time = (2000, 20, 1e-2, 20.0) if args.quick else (8000, 50, 1e-3, 60.0)
    results = on_cluster(
        args.scheduler, args.workers, lambda client: run(client, rows, cols, target, max_time, args.seed)
    )
    save("sgd", results, args.out, plot)
    return results


if __name__ == "__main__":
    main()
