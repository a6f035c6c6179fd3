import time

import dask.array as da
import numpy as np
import pytest
from distributed.utils_test import gen_cluster

import dask_coded
from dask_coded._compat import Task
from dask_coded.blocks import ScaledBlock, UncodedBlock
from dask_coded.faults import FaultInjector, FaultModel, computes_product, corrupt, inject, task_delay
from dask_coded.keys import PRODUCT
from dask_coded.testing import relative_error

#: gen_cluster's time limit: a guard against hangs, not a speed limit (on a loaded 2-core machine
#: a plugin test took 31 s and hit the default 30 s).
TIMEOUT = 120


@pytest.mark.parametrize(
    "params,match",
    [
        ({"delay": "gamma"}, "unknown delay model"),
        ({"error_kind": "cosmic"}, "unknown error kind"),
        ({"tasks": "some"}, "unknown task selection"),
        ({"delay_shift": -1.0}, "non-negative"),
        ({"min_run_time": -0.1}, "non-negative"),
        ({"slow_factor": 0.5}, "at least 1"),
        ({"error_rate": 2.0}, "error_rate"),
    ],
)
def test_bad_models_raise(params, match):
    with pytest.raises(ValueError, match=match):
        FaultModel(**params)


@pytest.mark.parametrize(
    "model,mean",
    [
        (FaultModel(delay="shifted-exponential", delay_shift=0.1, delay_scale=0.2), 0.3),
        (FaultModel(delay="pareto", delay_shift=0.0, delay_scale=0.1, pareto_shape=3.0), 0.15),
        (FaultModel(delay_shift=0.25), 0.25),
    ],
    ids=["shifted-exponential", "pareto", "fixed"],
)
def test_delays_are_seeded_and_follow_their_distribution(model, mean):
    delays = np.array([task_delay(model, ("task", i)) for i in range(4000)])
    assert np.array_equal(delays, [task_delay(model, ("task", i)) for i in range(4000)])
    assert delays.min() >= model.delay_shift
    np.testing.assert_allclose(delays.mean(), mean, rtol=0.08)
    other_seed = FaultModel(**{**model.__dict__, "seed": 1})
    if model.delay != "none":
        assert task_delay(other_seed, ("task", 0)) != delays[0]


@pytest.mark.parametrize("kind", ["noise", "nan", "bitflip"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_corruption_changes_the_array(kind, dtype):
    value = np.random.default_rng(0).standard_normal((30, 20)).astype(dtype)
    bad = corrupt(value, kind, np.random.default_rng(1))
    assert bad.shape == value.shape and bad.dtype == value.dtype
    assert not np.array_equal(bad, value, equal_nan=False)
    assert relative_error(np.nan_to_num(bad, nan=1e30, posinf=1e30, neginf=-1e30), value) > 1e-3
    np.testing.assert_array_equal(value, np.random.default_rng(0).standard_normal((30, 20)).astype(dtype))


def test_corruption_reaches_the_values_of_wrapped_products():
    """Measured: an uncoded product (two-sided codes on NaN data) went through uncorrupted."""
    for wrapped in (UncodedBlock(np.ones(4)), ScaledBlock(np.ones(4), np.zeros(2, int))):
        bad = corrupt(wrapped, "nan", np.random.default_rng(0))
        assert type(bad) is type(wrapped) and np.isnan(bad.values).any()
        np.testing.assert_array_equal(wrapped.values, 1.0)


def test_corruption_leaves_non_arrays_alone():
    assert corrupt(3, "noise", np.random.default_rng(0)) == 3
    ints = np.arange(4)
    assert corrupt(ints, "noise", np.random.default_rng(0)) is ints


def test_products_are_recognised_through_fusion():
    a = da.ones((40, 4), chunks=(10, 4))
    y = da.dot(a, np.ones(4))
    plain = dict(y.__dask_optimize__(y.__dask_graph__(), y.__dask_keys__()))
    assert any(computes_product(t) for t in plain.values())
    coded = dict(dask_coded.dot(a, np.ones(4)).__dask_graph__())
    products = [k for k, t in coded.items() if computes_product(t)]
    assert products and all(str(k[0]).startswith(PRODUCT) for k in products)
    assert not computes_product(Task("x", np.add, 1, 2))


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 3, timeout=TIMEOUT)
async def test_slow_worker_is_slow_for_plain_dask(c, s, a, b, w):
    model = FaultModel(delay_shift=0.05, slow_workers=(a.address,), slow_factor=20)
    await c.register_plugin(FaultInjector(model), name="faults")
    start = time.monotonic()
    await c.submit(np.ones, 3, workers=[b.address], pure=False)
    fast = time.monotonic() - start
    start = time.monotonic()
    await c.submit(np.ones, 3, workers=[a.address], pure=False)
    slow = time.monotonic() - start
    # Lower bounds the injected sleeps guarantee (an upper bound on `fast` would flake under load);
    # which worker applies the slow factor is the injectors' state.
    assert slow > 0.9 and fast >= 0.05, (slow, fast)
    assert [worker.plugins["faults"].slow for worker in (a, b, w)] == [True, False, False]


def _work(seconds):
    end = time.thread_time() + seconds  # CPU time of this thread: the task's own work
    while time.thread_time() < end:
        pass
    return seconds


def _wait(seconds):
    time.sleep(seconds)
    return seconds


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], timeout=TIMEOUT)
async def test_only_tasks_with_min_run_time_of_work_are_delayed(c, s, a):
    # 1000 s would outlast the test's time limit: a tiny task that returns was not delayed.
    await c.register_plugin(FaultInjector(FaultModel(delay_shift=1000.0, min_run_time=0.05)), name="faults")
    assert await c.submit(int, "7") == 7
    assert await c.submit(_wait, 0.1, pure=False) == 0.1  # waiting is not work
    await c.register_plugin(FaultInjector(FaultModel(delay_shift=0.3, min_run_time=0.05)), name="faults")
    start = time.monotonic()
    assert await c.submit(_work, 0.1, pure=False) == 0.1
    assert time.monotonic() - start >= 0.4  # its 0.1 s of work, then the 0.3 s delay


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 4, timeout=TIMEOUT)
async def test_soft_errors_spoil_plain_dask(c, s, *workers):
    data = np.random.default_rng(0).standard_normal((400, 30))
    matrix = await c.persist(da.from_array(data, chunks=(100, 30)))
    model = FaultModel(error_workers=tuple(w.address for w in workers), tasks="products", error_kind="noise")
    await c.register_plugin(FaultInjector(model), name="faults")
    result = await c.compute(da.dot(matrix, np.ones(30)))
    assert relative_error(result, data.sum(axis=1)) > 1.0


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 2, timeout=TIMEOUT)
async def test_soft_errors_reach_results_that_are_tuples_of_arrays(c, s, *workers):
    """A review found SGD's gradient tasks, which return (gradient, rows, loss), never corrupted."""
    model = FaultModel(error_workers=tuple(w.address for w in workers), error_kind="nan")
    await c.register_plugin(FaultInjector(model), name="faults")
    gradient, rows, loss = await c.submit(lambda: (np.ones(50), np.arange(5), 0.5), pure=False)
    assert np.isnan(gradient).any()
    np.testing.assert_array_equal(rows, np.arange(5))  # integers are indices, not numbers computed
    assert loss == 0.5


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 3, timeout=TIMEOUT)
async def test_error_rate_hits_some_tasks(c, s, *workers):
    model = FaultModel(error_rate=0.5, seed=3)
    await c.register_plugin(FaultInjector(model), name="faults")
    futures = c.map(lambda i: np.full(5, float(i)), range(40))
    results = await c.gather(futures)
    wrong = sum(not np.array_equal(r, np.full(5, float(i))) for i, r in enumerate(results))
    assert 8 < wrong < 32


def test_inject_context_manager_chooses_slow_workers(client):
    with inject(client, slow_workers=1, slow_factor=5, seed=2) as model:
        assert len(model.slow_workers) == 1
        assert model.slow_workers[0] in client.nthreads()
        plugins = client.run(lambda dask_worker: sorted(dask_worker.plugins))
        assert all("dask-coded-faults" in names for names in plugins.values())
    plugins = client.run(lambda dask_worker: sorted(dask_worker.plugins))
    assert not any("dask-coded-faults" in names for names in plugins.values())
    with pytest.raises(ValueError, match="cannot make 5 of 2 workers"), inject(client, slow_workers=5):
        pass


def test_model_round_trips_through_json():
    model = FaultModel(delay="pareto", slow_workers=("w1",), prefixes=(PRODUCT,), tasks="products")
    params = __import__("json").loads(model.to_json())
    rebuilt = FaultModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
    assert rebuilt == model


def test_trace_model_replays_per_worker_gamma_latencies_with_slow_episodes():
    import pathlib
    from types import SimpleNamespace

    from dask_coded.faults import load_trace

    trace = load_trace(pathlib.Path(__file__).parents[1] / "benchmarks" / "traces" / "gamma_markov.json")
    model = FaultModel(delay="trace", trace=trace, seed=1)
    delays = {}
    for name in (0, 1):
        injector = FaultInjector(model)
        injector.setup(SimpleNamespace(name=name, address=f"tcp://127.0.0.1:{4000 + name}"))
        rng = np.random.default_rng(0)
        states = []
        samples = []
        for _ in range(20000):
            samples.append(injector._trace_delay(rng))
            states.append(injector._trace_slow)
        delays[name] = np.array(samples)
        fast_mean, slow_mean, _, p_in, p_out = trace[name]
        slow = np.array(states)
        # The slow state is visited about p_in / (p_in + p_out) of the time, in episodes.
        np.testing.assert_allclose(slow.mean(), p_in / (p_in + p_out), atol=0.04)
        assert (np.diff(slow.astype(int)) == 1).sum() >= 20
        np.testing.assert_allclose(delays[name][~slow].mean(), fast_mean, rtol=0.1)
        np.testing.assert_allclose(delays[name][slow].mean(), slow_mean, rtol=0.15)
    assert abs(delays[0].mean() - delays[1].mean()) > 0.01, "workers replay different rows"


def test_trace_model_needs_rows():
    with pytest.raises(ValueError, match="needs trace rows"):
        FaultModel(delay="trace")
