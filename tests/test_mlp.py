"""The CodeNet-style MLP: coded and replicated products train exactly as NumPy does under soft errors."""

import numpy as np
import pytest

import dask_coded
from dask_coded.faults import inject
from dask_coded.sgd.mlp import MLP, synthetic_classification

SIZES = (6, 12, 12, 3)


def _train(product, X, y, blocks=2):
    model = MLP(SIZES, product=product, blocks=blocks, max_errors=1, stragglers=0, learning_rate=0.5)
    return model.fit(X, y, epochs=1, batch_size=50)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # plain Dask's products overflow on the garbage
def test_coded_products_train_like_numpy_while_plain_dask_is_spoiled(client_of):
    client = client_of(6)
    X, y = synthetic_classification(100, features=6, classes=3)
    reference = _train("numpy", X, y)
    dask_coded.register(client)
    faulty = sorted(client.nthreads())[1]
    with inject(client, tasks="products", error_workers=(faulty,), error_kind="noise"):
        plain = _train("plain", X, y, blocks=6)  # one block per worker, so one lands on the faulty one
        replicated, coded = _train("replication", X, y), _train("coded", X, y)
    for model in (replicated, coded):
        for trained, expected in zip(model.weights, reference.weights):
            np.testing.assert_allclose(trained, expected, rtol=1e-9, atol=1e-12)
    spoiled = max(np.abs(w - e).max() / np.abs(e).max() for w, e in zip(plain.weights, reference.weights))
    assert not np.isfinite(spoiled) or spoiled > 1.0
    stats = dask_coded.plugin_stats(client)
    assert stats["corrections"] > 0 and set(stats["corrections_by_worker"]) == {faulty}
    # Replication pays 3 block products per block for one error; the MDS code k + 2.
    assert (replicated.block_products_per_product, coded.block_products_per_product) == (6, 4)


def test_training_improves_accuracy_and_records_it():
    X, y = synthetic_classification(600, features=6, classes=3, seed=1)
    model = MLP(SIZES, product="numpy", learning_rate=0.5).fit(
        X[:400], y[:400], epochs=15, batch_size=100, X_test=X[400:], y_test=y[400:]
    )
    history = model.history_
    assert list(history["epoch"]) == list(range(16)) and np.all(np.diff(history["time"]) >= 0)
    assert history["test_accuracy"][-1] > history["test_accuracy"][0] + 0.3


@pytest.mark.parametrize(
    "options, data, match",
    [
        ({"sizes": (4, 3)}, None, "at least"),
        ({"product": "magic"}, None, "unknown product"),
        ({}, (np.ones((5, 4)), np.zeros(5, dtype=int)), "6 columns"),
        ({}, (np.ones((5, 6)), np.zeros(4, dtype=int)), "5 rows but y has 4"),
        ({}, (np.ones((5, 6)), np.full(5, 3)), r"labels must be in \[0, 3\)"),
    ],
)
def test_bad_input_is_refused(options, data, match):
    with pytest.raises(ValueError, match=match):
        model = MLP(**{"sizes": SIZES, **options})
        model.fit(*data)
