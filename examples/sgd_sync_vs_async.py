"""Sync, K-sync, async and coded SGD on one LocalCluster with one 10x slow worker.

Every variant meets the same injected straggler model. Prints the time each
takes to get within 1e-3 of the least-squares optimum and writes
sgd_sync_vs_async.png (error versus wall clock). About a minute on 2 cores.

Run: python examples/sgd_sync_vs_async.py
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from distributed import Client, LocalCluster

from dask_coded import keys
from dask_coded.faults import inject
from dask_coded.sgd import AsyncSGD, GradientCodedSGD, KBatchAsyncSGD, KSyncSGD, SyncSGD


def main():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4000, 30))
    y = X @ rng.standard_normal(30) + 0.01 * rng.standard_normal(4000)
    options = dict(learning_rate=0.2, batch_size=64, max_iterations=10_000, max_time=30, target_error=1e-3)

    with (
        LocalCluster(n_workers=6, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        # Gradient tasks take 50 ms more; one worker takes 10 times as long.
        with inject(client, delay_shift=0.05, slow_workers=1, slow_factor=10, prefixes=(keys.SGD,)):
            runs = [
                SyncSGD(**options),
                KSyncSGD(4, **options),
                AsyncSGD(**options),
                KBatchAsyncSGD(4, **options),
                GradientCodedSGD(1, **{**options, "batch_size": None}),
            ]
            for trainer in runs:
                history = trainer.fit(X, y).history_
                seconds, updates = history.time_to(1e-3), history.iteration[-1]
                print(f"{trainer.method:15s} reached 1e-3 after {seconds:6.2f} s ({updates} updates)")
                history.plot()

    plt.legend()
    plt.title("least squares, 6 workers, one 10x slow")
    plt.savefig("sgd_sync_vs_async.png", dpi=110)
    print("wrote sgd_sync_vs_async.png")


if __name__ == "__main__":  # worker processes re-import this file
    main()
