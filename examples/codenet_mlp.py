"""A CodeNet-style MLP under soft errors: plain Dask products versus coded ones.

Seven workers; one returns garbage for every block product it computes and
one is 10x slow. The same network is trained with plain ``da.dot`` products
(one row block per worker) and with MDS-coded products that correct one wrong and skip one late block
(``dask_coded.dot(..., max_errors=1)``), next to the error-free NumPy run.
Writes codenet_mlp.png. About a minute on 2 cores.

Run: python examples/codenet_mlp.py
"""

import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from distributed import Client, LocalCluster

import dask_coded
from dask_coded.faults import inject
from dask_coded.sgd.mlp import MLP, synthetic_classification


def main():
    X, y = synthetic_classification(3000, features=20, classes=5)
    data = dict(X_test=X[2000:], y_test=y[2000:], epochs=6, batch_size=500)
    with (
        LocalCluster(n_workers=7, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        dask_coded.register(client)
        faulty, slow = sorted(client.nthreads())[1::5]
        faults = dict(
            tasks="products", error_workers=(faulty,), slow_workers=(slow,), slow_factor=10, delay_shift=0.005
        )
        with inject(client, **faults), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the garbage overflows plain Dask's products
            for product in ("numpy", "plain", "coded"):
                # Plain Dask gets one block per worker (7); the code 4 data blocks + 3 parity blocks.
                blocks = 7 if product == "plain" else 4
                model = MLP(
                    (20, 64, 64, 5),
                    product=product,
                    blocks=blocks,
                    max_errors=1,
                    stragglers=1,
                    learning_rate=0.5,
                )
                accuracy = model.fit(X[:2000], y[:2000], **data).history_["test_accuracy"]
                print(f"{product:6s} test accuracy by epoch: {' '.join(f'{a:.2f}' for a in accuracy)}")
                plt.plot(accuracy, label=product)
        print("wrong block products corrected:", dask_coded.plugin_stats(client)["corrections_by_worker"])
    plt.xlabel("epoch")
    plt.ylabel("test accuracy")
    plt.legend()
    plt.savefig("codenet_mlp.png", dpi=110)
    print("wrote codenet_mlp.png")


if __name__ == "__main__":  # worker processes re-import this file
    main()
