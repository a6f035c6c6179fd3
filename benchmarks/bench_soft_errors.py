"""Soft errors: a CodeNet-style MLP trained with plain, replicated and coded products, one worker faulty.

Seven single-threaded workers; one returns garbage (large noise) for every
block product it computes and another is 10x slow. The same network, data
and seed are trained four ways: NumPy on the client (error free), plain
Dask (``da.dot``, one row block per worker), replication (3 + 1 copies per block: one wrong, one late)
and an MDS code (k + 3 blocks: one wrong, one late). Reports test accuracy
per epoch, wall time, and block products per distributed product.

Run: python -m benchmarks.bench_soft_errors [--quick] [--scheduler ADDRESS]
"""

from __future__ import annotations

import warnings
from typing import Any

from distributed import Client

import dask_coded
from benchmarks.common import cluster_arguments, on_cluster, save
from dask_coded.faults import inject
from dask_coded.sgd.mlp import MLP, synthetic_classification

PRODUCTS = ("numpy", "plain", "replication", "coded")


def run(client: Client, samples: int, epochs: int, seed: int) -> list[dict[str, Any]]:
    X, y = synthetic_classification(samples + 1000, features=20, classes=5, seed=seed)
    train, test = slice(0, samples), slice(samples, None)
    workers = sorted(client.nthreads())
    dask_coded.register(client)
    params = {
        "tasks": "products",
        "error_workers": (workers[1],),
        "error_kind": "noise",
        "delay_shift": 0.005,
        "slow_workers": (workers[-1],),
        "slow_factor": 10.0,
        "seed": seed,
    }
    out = []
    with inject(client, **params) as model, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # plain Dask overflows on the garbage
        for product in PRODUCTS:
            mlp = MLP(
                (20, 64, 64, 5),
                product=product,
                blocks=len(workers) if product == "plain" else 4,
                max_errors=1,
                stragglers=1,
                learning_rate=0.5,
                seed=seed,
            )
            history = mlp.fit(
                X[train], y[train], epochs=epochs, batch_size=500, X_test=X[test], y_test=y[test]
            ).history_
            row = {
                "product": product,
                "test_accuracy": history["test_accuracy"].tolist(),
                "time": history["time"].tolist(),
                "block_products_per_product": mlp.block_products_per_product if product != "numpy" else 0,
                "fault_model": dict(model.__dict__),
                "workers": len(workers),
                "samples": samples,
            }
            out.append(row)
            print(
                f"{product:12s} final test accuracy {row['test_accuracy'][-1]:.3f}  "
                f"wall {row['time'][-1]:6.1f} s  block products per product "
                f"{row['block_products_per_product']}",
                flush=True,
            )
    out[0]["time"] = [float("nan")] * len(out[0]["time"])  # client-side NumPy: not comparable
    stats = dask_coded.plugin_stats(client)
    for row in out:
        row["corrections"] = stats["corrections"]
    return out


def plot(rows: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    labels = {
        "numpy": "no faults (NumPy)",
        "plain": "plain da.dot",
        "replication": "replication (r = 4)",
        "coded": "MDS (k + 3)",
    }
    for row, style in zip(rows, ["k:", "o-", "s-", "^-"]):
        ax.plot(range(len(row["test_accuracy"])), row["test_accuracy"], style, label=labels[row["product"]])
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("MLP 20-64-64-5, 7 workers: one returns garbage, one 10x slow", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = cluster_arguments(__doc__.splitlines()[0], workers=None).parse_args(argv)
    samples, epochs = (1000, 2) if args.quick else (2000, 8)
    results = on_cluster(args.scheduler, 7, lambda client: run(client, samples, epochs, args.seed))
    save("soft_errors", results, args.out, plot)
    return results


if __name__ == "__main__":
    main()
