"""The SGD trainers on a real cluster (scheduler and workers in separate processes)."""

import dask.array as da
import numpy as np
import pytest
from dask.core import flatten
from distributed import futures_of, get_client, wait

import dask_coded
from dask_coded.faults import inject
from dask_coded.keys import PRODUCT, SGD_GRADIENT
from dask_coded.sgd import (
    AdaptiveKSyncSGD,
    AsyncSGD,
    CodedMatvecSGD,
    GradientCodedSGD,
    KAsyncSGD,
    KBatchAsyncSGD,
    KSyncSGD,
    LeastSquares,
    LogisticRegression,
    ShardedData,
    SyncSGD,
)
from dask_coded.testing import KeyRecorder, keys_received, one_block_per_worker

P = 4
GRADIENT_TASKS = (SGD_GRADIENT, PRODUCT)


@pytest.fixture
def client(client_of):
    return client_of(P)


def _least_squares(n=400, d=5, noise=1e-3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, X @ rng.standard_normal(d) + noise * rng.standard_normal(n)


def _trainers(**options):
    return [
        SyncSGD(**options),
        KSyncSGD(2, **options),
        AsyncSGD(**options),
        KAsyncSGD(2, **options),
        KBatchAsyncSGD(3, **options),
        GradientCodedSGD(1, **options),
        CodedMatvecSGD(**options),
    ]


def test_every_variant_reaches_the_least_squares_optimum(client):
    X, y = _least_squares()
    optimum = np.linalg.lstsq(X, y, rcond=None)[0]
    for trainer in _trainers(learning_rate=0.1, batch_size=32, max_iterations=600, target_error=5e-4):
        model = trainer.fit(X, y)
        error = np.linalg.norm(model.coef_ - optimum) / np.linalg.norm(optimum)
        assert error < 1e-3, (trainer.method, error)
        history = model.history_
        assert history.error[-1] == pytest.approx(error)
        assert np.all(np.diff(history.time) >= 0) and history.iteration[-1] == len(history.time) - 1
        assert history.loss[-1] < history.loss[0]


def test_every_variant_reaches_the_scipy_logistic_reference(client):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 4))
    y = (X @ np.array([1.5, -1.0, 0.5, 2.0]) + 0.5 * rng.standard_normal(300) > 0).astype(float)
    problem = LogisticRegression(l2=0.1)
    reference = problem.optimum(X, y)
    for trainer in _trainers(
        problem=problem, learning_rate=2.0, batch_size=None, max_iterations=400, target_error=1e-4
    ):
        model = trainer.fit(X, y, optimum=reference)
        np.testing.assert_allclose(model.coef_, reference, rtol=0, atol=1e-3 * np.linalg.norm(reference))


def test_coded_variants_follow_sync_iterates_under_stragglers(client):
    X, y = _least_squares(noise=0.1)
    options = dict(learning_rate=0.2, batch_size=None, max_iterations=25)
    sync = SyncSGD(**options).fit(X, y).history_
    with inject(client, slow_workers=1, slow_factor=10, delay_shift=0.02, prefixes=GRADIENT_TASKS):
        coded = [GradientCodedSGD(1, **options).fit(X, y), CodedMatvecSGD(**options).fit(X, y)]
    for model in coded:
        np.testing.assert_allclose(
            model.history_.parameters, sync.parameters, rtol=0, atol=1e-10 * np.abs(sync.parameters).max()
        )
    # ... without waiting for the slow worker: gradient coding decoded from P - 1 messages, and the
    # plugin decoded the coded products early.
    assert np.median(np.diff(coded[0].history_.gradients)) == P - 1
    assert dask_coded.plugin_stats(client)["decodes_early"] > 0


def test_async_runs_without_a_barrier_and_records_staleness(client):
    X, y = _least_squares()
    slow = sorted(client.nthreads())[0]
    # The slow worker's gradients take at least 0.5 s (a sleep), the others' 0.02 s plus overhead.
    with inject(client, slow_workers=(slow,), slow_factor=25, delay_shift=0.02, prefixes=GRADIENT_TASKS):
        model = AsyncSGD(learning_rate=0.05, batch_size=32, max_iterations=240).fit(X, y)
    history = model.history_
    from_slow = history.gradient_staleness[history.gradient_worker == 0]
    from_fast = history.gradient_staleness[history.gradient_worker != 0]
    # Fast workers kept going while the slow one computed: no barrier, and its gradients came back
    # stale. Medians, not extremes: the first gradients of a run, and a loaded machine's pauses,
    # make single gradients' staleness erratic (seen: a first slow gradient 5, a fast one 4).
    assert len(from_fast) > 5 * max(len(from_slow), 1)
    assert len(from_slow) >= 1 and np.median(from_slow) > 2 * np.median(from_fast)
    # Async applies one gradient per update: the history's staleness is the gradient's.
    assert history.staleness.max() == history.gradient_staleness.max()


@pytest.mark.slow
def test_k_sync_updates_use_the_fastest_k_and_ignore_a_stuck_worker(client):
    """K-sync waits for the fastest K of P gradients and cancels the rest.

    One worker's gradients would take 0.02 s * 10000 = 200 s: every step finishing at all shows
    that none waited for it, and every update counts exactly K gradients. (The step-time theory,
    the K-th order statistic, is checked by ``expected_k_sync_time``'s doctest and measured by
    the SGD benchmark; a wall-clock comparison in a test flakes on a loaded machine.)
    """
    X, y = _least_squares()
    k = P - 1
    stuck = sorted(client.nthreads())[0]
    options = dict(learning_rate=0.1, batch_size=None, max_iterations=30)
    reference = SyncSGD(**options).fit(X, y).history_
    with inject(client, slow_workers=(stuck,), slow_factor=10_000, delay_shift=0.02, prefixes=GRADIENT_TASKS):
        history = KSyncSGD(k, **options).fit(X, y).history_
    assert history.iteration[-1] == 30
    assert np.all(np.diff(history.gradients) == k)
    # Full-batch gradients from K of P data partitions still descend.
    assert history.loss[-1] < history.loss[0] and history.error[-1] < reference.error[0]


BAD_INPUT = [
    (SyncSGD(), (np.ones((5, 2)), np.ones(4)), "5 rows but y has 4"),
    (SyncSGD(), (np.ones(5), np.ones(5)), "X must be 2-D"),
    (SyncSGD(), (np.full((5, 2), np.nan), np.ones(5)), "finite"),
    (KSyncSGD(P + 1), (np.ones((8, 2)), np.ones(8)), f"K={P + 1} exceeds"),
    (KAsyncSGD(P + 1), (np.ones((8, 2)), np.ones(8)), f"K={P + 1} exceeds"),
    (SyncSGD(LogisticRegression()), (np.ones((4, 2)), np.arange(4.0)), r"labels y in \{0, 1\}"),
    (GradientCodedSGD(2, scheme="fractional"), (np.ones((9, 2)), np.ones(9)), "use scheme='cyclic'"),
    (CodedMatvecSGD(), (np.ones((9, 1)), np.ones(9)), "columns into 2 blocks"),
    # A review found these diverging ("lower the learning rate") or failing on a worker instead.
    (SyncSGD(batch_size=None), (np.ones((0, 3)), np.ones(0)), "X has no rows"),
    (SyncSGD(), (np.ones((0, 3)), np.ones(0)), "X has no rows"),
    (GradientCodedSGD(1), (np.ones((0, 3)), np.ones(0)), "X has no rows"),
]


def test_bad_input_is_refused(client):
    for trainer, data, match in BAD_INPUT:
        with pytest.raises(ValueError, match=match):
            trainer.fit(*data)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SyncSGD(learning_rate=-1), "learning_rate"),
        (lambda: SyncSGD(batch_size=0), "batch_size"),
        (lambda: SyncSGD(batch_size=1.5), "batch_size must be a positive integer"),
        (lambda: SyncSGD(learning_rate="0.1"), "learning_rate must be a positive number"),
        (lambda: SyncSGD(learning_rate=None), "learning_rate must be a positive number"),
        (lambda: SyncSGD(max_iterations=2.5), "max_iterations must be an integer"),
        (lambda: KSyncSGD(0), "K must be a positive integer"),
        (lambda: SyncSGD("ridge"), "unknown problem"),
        (lambda: LeastSquares(l2=-1.0), "l2"),
    ],
)
def test_bad_options_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_fit_without_a_client_uses_a_temporary_local_cluster():
    X, y = _least_squares(n=100)
    model = SyncSGD(learning_rate=0.3, batch_size=None, max_iterations=80).fit(X, y)
    assert model.history_.error[-1] < 1e-6
    with pytest.raises(ValueError, match="No global client"):
        get_client()  # and it is gone again


@pytest.mark.parametrize("trainer", [SyncSGD, AsyncSGD, GradientCodedSGD], ids=lambda t: t.__name__)
def test_a_diverging_learning_rate_stops_with_a_clear_message(client, trainer):
    X, y = _least_squares()
    with pytest.raises(FloatingPointError, match="diverged .* lower the learning rate"):
        trainer(learning_rate=50.0, batch_size=None, max_iterations=10_000).fit(X, y)


def test_history_is_a_table_of_arrays(client):
    X, y = _least_squares()
    history = SyncSGD(learning_rate=0.1, max_iterations=5).fit(X, y).history_
    table = history.as_dict()
    assert {len(v) for k, v in table.items() if not k.startswith("gradient_")} == {6}
    assert table["gradients"][-1] == 5 * P
    assert history.time_to(-1.0) == float("inf")


# -- data sharded on the workers (Dask arrays) ------------------------------------------------------------


def _sharded_least_squares(client, n=400, d=5, noise=1e-3, seed=0):
    """X and y as Dask arrays, one row chunk per worker, generated there; and NumPy copies to check with.

    Each chunk of y is computed on its X chunk's worker, strictly: a task stolen by another worker would
    copy the X chunk there, and the trainers could then take that copy as the shard's home.
    """
    workers = sorted(client.nthreads())
    X = one_block_per_worker(client, n, d, seed=seed)
    w = np.random.default_rng(seed).standard_normal(d)
    y_chunks = []
    for i, size in enumerate(X.chunks[0]):
        noise_chunk = da.random.default_rng([seed + 1, i]).standard_normal(size, chunks=size)
        y_chunk = X.blocks[i] @ w + noise * noise_chunk
        y_chunks.append(client.persist(y_chunk, workers=[workers[i % len(workers)]]))
    y = da.concatenate(y_chunks)
    wait([X, y])
    # Gathered to the client: X.compute() would copy every chunk to the worker assembling them, one more
    # holder of each shard until those copies are dropped.
    chunks = {future.key: future for future in futures_of(X)}
    X_local = np.concatenate(client.gather([chunks[key] for key in flatten(X.__dask_keys__())]))
    return X, y, X_local, y.compute()


SHARDED_TRAINERS = [
    lambda **o: SyncSGD(**o),
    lambda **o: KSyncSGD(3, **o),
    lambda **o: AdaptiveKSyncSGD(1, **o),
    lambda **o: AsyncSGD(**{**o, "learning_rate": 0.2}),
    lambda **o: KAsyncSGD(2, **o),
    lambda **o: KBatchAsyncSGD(3, **o),
    lambda **o: GradientCodedSGD(1, **o),
]


@pytest.mark.slow
def test_sharded_fit_reaches_the_numpy_optimum(client):
    Xd, yd, X, y = _sharded_least_squares(client)
    optimum = np.linalg.lstsq(X, y, rcond=None)[0]
    for make in SHARDED_TRAINERS:
        model = make(learning_rate=0.5, batch_size=None, max_iterations=400, target_error=1e-4).fit(Xd, yd)
        np.testing.assert_allclose(
            model.coef_, optimum, rtol=0, atol=1e-3 * np.linalg.norm(optimum), err_msg=model.method
        )
        # The distributed reference and losses are NumPy's.
        np.testing.assert_allclose(model.history_.loss[0], LeastSquares().loss(np.zeros(5), X, y), rtol=1e-12)
        error = np.linalg.norm(model.coef_ - optimum) / np.linalg.norm(optimum)
        np.testing.assert_allclose(model.history_.error[-1], error, rtol=1e-6)
        assert sorted(set(model.shard_workers_)) == sorted(model.workers_)
    # Newton steps on distributed gradient and Hessian sums find the reference optimum, L-BFGS's for
    # logistic regression, and the losses are NumPy's to round-off.
    labels = (X @ np.array([1.5, -1.0, 0.5, 2.0, 0.0]) > 0).astype(float)
    problem = LogisticRegression(l2=0.1)
    data = ShardedData(Xd, labels)
    data.place(client, sorted(client.nthreads()), problem)
    reference = problem.optimum(X, labels)
    np.testing.assert_allclose(data.optimum(client, problem), reference, rtol=0, atol=1e-8)
    points = np.stack([reference, np.zeros(5), np.ones(5)])
    expected = [problem.loss(w, X, labels) for w in points]
    np.testing.assert_allclose(data.losses(client, problem, points), expected, rtol=1e-12)
    ridge = LeastSquares(l2=0.01)
    np.testing.assert_allclose(data.optimum(client, ridge), ridge.optimum(X, labels), rtol=0, atol=1e-12)
    # What only the workers can check is refused from there.
    with pytest.raises(TypeError, match="use GradientCodedSGD"):
        CodedMatvecSGD().fit(Xd, yd)
    with pytest.raises(ValueError, match="finite"):
        SyncSGD().fit(Xd, yd * np.nan)
    with pytest.raises(ValueError, match=r"labels y in \{0, 1\}"):
        SyncSGD(LogisticRegression()).fit(Xd, yd)


def test_sharded_input_with_unknown_or_mismatched_rows_is_refused():
    X = da.ones((40, 3), chunks=(10, 3))
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        SyncSGD().fit(X[X[:, 0] > 0], np.ones(40))
    with pytest.raises(ValueError, match="40 rows but y has 39"):
        SyncSGD().fit(X, da.ones(39, chunks=10))
    with pytest.raises(ValueError, match="40 rows but y has 39"):  # was dask's "Chunks do not add up"
        SyncSGD().fit(X, np.ones(39))
    with pytest.raises(ValueError, match="X has no rows"):
        SyncSGD().fit(da.ones((0, 3), chunks=(10, 3)), np.ones(0))
    with pytest.raises(ValueError, match="X must be 2-D"):
        SyncSGD().fit(da.ones(40, chunks=10), np.ones(40))


def _x_shards_received(received, Xd, trainer):
    """Per worker, the indices of the row blocks of X that reached it in the fit (originals or copies)."""
    shards = {}
    for worker, keys in received.items():
        indices = set()
        for key in keys:
            if isinstance(key, tuple) and key[0] == Xd.name:
                indices.add(key[1])
            elif isinstance(key, str) and key.startswith("sgd-shard-coded-") and "-x-" in key:
                partition = int(key.split("-")[4])  # one shard per worker: partition p is shard p
                indices.add(trainer.shard_workers_.index(trainer.workers_[partition]))
            elif isinstance(key, str) and key.startswith("sgd-shard-x-"):
                indices.add(int(key.rsplit("-", 1)[1]))
        shards[worker] = indices
    return shards


@pytest.mark.slow
def test_sharded_data_reaches_neither_the_client_nor_one_worker(client):
    Xd, yd, X, _ = _sharded_least_squares(client)
    client.register_plugin(KeyRecorder())
    options = dict(learning_rate=0.5, batch_size=None, max_iterations=10)
    for stragglers, trainer in [(0, KSyncSGD(3, **options)), (1, GradientCodedSGD(1, **options))]:
        trainer.fit(Xd, yd)
        received = _x_shards_received(keys_received(client), Xd, trainer)
        # K-sync reads each shard where it was generated, nothing moves; gradient coding copies to each
        # worker the s partitions its code adds to its own, and no more.
        for worker, shards in received.items():
            moved = shards - {trainer.shard_workers_.index(worker)}
            assert len(moved) == stragglers, (trainer.method, received)
        # ... and the trainer keeps no rows of X.
        arrays = [v for v in vars(trainer).values() if isinstance(v, np.ndarray)]
        assert all(a.size < X.shape[0] for a in arrays)
        assert not any(isinstance(v, ShardedData) for v in vars(trainer).values())


@pytest.mark.slow
def test_gradient_coding_removes_the_bias_k_sync_has_on_sharded_data(client):
    """One worker 30x slow: K-sync never applies its shard's gradient and plateaus at the optimum of the
    other shards' rows; gradient coding decodes the full gradient without it; adaptive K ends at P."""
    Xd, yd, X, y = _sharded_least_squares(client, noise=1.0, seed=3)
    workers = sorted(client.nthreads())
    slow = workers[0]  # one_block_per_worker put shard 0 there
    optimum = np.linalg.lstsq(X, y, rcond=None)[0]
    rows_elsewhere = np.arange(len(y)) >= Xd.chunks[0][0]
    others = np.linalg.lstsq(X[rows_elsewhere], y[rows_elsewhere], rcond=None)[0]
    floor = np.linalg.norm(others - optimum) / np.linalg.norm(optimum)
    assert floor > 1e-3  # the bias is not round-off
    options = dict(learning_rate=0.5, batch_size=None, max_iterations=40)
    # 30x: on a loaded machine a 10x slow worker was sometimes among the fastest P - 1, and K-sync
    # then read its shard in a few of the last updates.
    with inject(client, slow_workers=(slow,), slow_factor=30, delay_shift=0.02, prefixes=GRADIENT_TASKS):
        k_sync = KSyncSGD(P - 1, **options).fit(Xd, yd)
        coded = GradientCodedSGD(1, **options).fit(Xd, yd)
        adaptive = AdaptiveKSyncSGD(1, **{**options, "max_iterations": 400, "target_error": 1e-8}).fit(Xd, yd)
    assert slow in k_sync.shard_workers_[:1]
    # K-sync: the last ten updates sit at the bias floor (their median, within 20%).
    np.testing.assert_allclose(np.median(k_sync.history_.error[-10:]), floor, rtol=0.2)
    # Gradient coding: the same faults, the same seed, and no floor.
    assert coded.history_.error[-1] < 1e-8 < floor / 1e4
    assert np.median(np.diff(coded.history_.gradients)) == P - 1
    # Adaptive K raised K until it waited for the slow worker, and then went below the floor too.
    ks = [k for _, k in adaptive.k_schedule_]
    assert ks[0] == 1 and ks[-1] == P and ks == sorted(ks)
    assert adaptive.history_.error[-1] <= 1e-8
