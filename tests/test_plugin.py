import asyncio
import time
import warnings
from unittest import mock

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Event, wait
from distributed.core import Status
from distributed.utils_test import async_poll_for, gen_cluster, poll_for

import dask_coded
from dask_coded import DaskCodedWarning, GroupedMDSCode, MDSCode, _compat
from dask_coded.blocks import UNMIXABLE_TYPENAMES, product_block
from dask_coded.faults import FaultInjector, FaultModel
from dask_coded.keys import DECODE, ENCODE, PRODUCT
from dask_coded.plugin import NAME
from dask_coded.testing import relative_error

pytestmark = pytest.mark.filterwarnings("ignore:Sending large graph:UserWarning")

SIX_WORKERS = [("127.0.0.1", 1)] * 6
#: gen_cluster's time limit: a guard against hangs, not a speed limit (on a loaded 2-core machine
#: test_hundreds_of_groups_at_once took 31 s and hit the default 30 s).
TIMEOUT = 120
VALIDATE = {"distributed.scheduler.validate": True}
#: Products on the slow worker take about 0.05 s * 80 = 4 s; everything else about 0.05 s.
SLOW_FACTOR, SHIFT = 80.0, 0.05
SLOW_SECONDS = SHIFT * SLOW_FACTOR
#: A straggler that would take 0.05 s * 20000 = 1000 s, far beyond any test's timeout: a test that
#: finishes did not wait for it, and a worker that is free again stopped its cancelled product early.
#: This shows "did not wait" by outcome, not by a wall-clock limit a loaded machine could miss.
STUCK_FACTOR = 20_000.0


def _matrix(rows=400, cols=60, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, cols))


async def _setup(c, s, slow_worker, factor=SLOW_FACTOR):
    await dask_coded.register(c)
    model = FaultModel(
        delay_shift=SHIFT, slow_workers=(slow_worker.address,), slow_factor=factor, tasks="products"
    )
    await c.register_plugin(FaultInjector(model), name="faults")
    return s.plugins[NAME]


def _coded_keys(tasks):
    return [k for k in tasks if isinstance(k, tuple) and str(k[0]).startswith((PRODUCT, DECODE))]


def _states_on(worker, key):
    """The states ``worker`` moved task ``key`` through, from its transition log."""
    return [entry[3] for entry in worker.state.story(key) if len(entry) == 7 and entry[0] == key]


def _products_run_on(worker, collection):
    """The coded products of ``collection`` that ``worker`` started executing."""
    keys = [k for k in collection.__dask_graph__() if str(k[0]).startswith(PRODUCT)]
    return [k for k in keys if "executing" in _states_on(worker, k)]


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_decodes_without_waiting_for_the_slow_worker(c, s, *workers):
    a = _matrix()
    plugin = await _setup(c, s, workers[0], factor=STUCK_FACTOR)
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(100, 60))))  # k=4, n=6, one per worker
    x = np.arange(60.0)
    y = dask_coded.dot(coded, x)
    result = await c.compute(y)
    # The moment the result is in: the stuck worker's product never reached memory.
    (slow,) = _products_run_on(workers[0], y)
    assert slow not in s.tasks or s.tasks[slow].state != "memory"
    assert relative_error(result, a @ x) < 1e-10
    assert plugin.counters["decodes_early"] >= 1
    # It was cancelled while it ran, and its result never kept.
    assert "cancelled" in _states_on(workers[0], slow) and "memory" not in _states_on(workers[0], slow)
    # No product or decode task lingers on the scheduler or the workers.
    await async_poll_for(lambda: not _coded_keys(s.tasks), timeout=30)
    await async_poll_for(lambda: not any(_coded_keys(w.state.tasks) for w in workers), timeout=30)
    # Gone workers leave no per-worker records (churn would grow them for good: hostile review).
    assert plugin.cancelled_by_worker[workers[0].address] >= 1
    await workers[0].close()
    await async_poll_for(lambda: workers[0].address not in s.workers, timeout=30)
    stats = plugin.stats()
    assert not any(workers[0].address in stats[name] for name in ("cancelled_by_worker", "dropped_by_worker"))


@pytest.mark.parametrize("persisted", [True, False])
@pytest.mark.parametrize("blocks", [4, 130])  # 130: three groups of copies (ReplicationCode.groups)
@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 4, config=VALIDATE, timeout=TIMEOUT)
async def test_replication_with_as_many_blocks_as_workers_outlasts_a_stuck_worker(
    c, s, *workers, persisted, blocks
):
    """Copy i of 8 went to worker i mod 4, its original's: the copies hedged nothing against it."""
    a = _matrix(rows=4 * blocks)
    await _setup(c, s, workers[1], factor=STUCK_FACTOR)
    plain = da.from_array(a, chunks=(4, 60))
    code = dask_coded.ReplicationCode(blocks, r=2)
    operand = await c.persist(dask_coded.encode(plain, code=code)) if persisted else plain
    x = np.arange(60.0)
    before = len(s.get_task_stream())  # the scheduler records its task stream from the first call
    result = await c.compute(dask_coded.dot(operand, x, code=None if persisted else "replication"))
    np.testing.assert_allclose(result, a @ x, rtol=1e-12)
    # Every block has a copy off the stuck worker, and it computed nothing the answer needed.
    stream = s.get_task_stream()[before:]
    done_on = {r["key"]: r["worker"] for r in stream if str(r["key"][0]).startswith(PRODUCT)}
    for block in range(blocks):
        homes = {w for key, w in done_on.items() if key[1] % blocks == block}
        assert homes and workers[1].address not in homes


async def _stick_the_holder_of_block_0(c, s, coded):
    """Make the worker holding ``coded``'s data block 0 stuck at products: that output must be solved."""
    (holder,) = s.tasks[(coded.name, 0, 0)].who_has
    model = FaultModel(
        delay_shift=SHIFT, slow_workers=(holder.address,), slow_factor=STUCK_FACTOR, tasks="products"
    )
    await c.register_plugin(FaultInjector(model), name="faults")


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_a_solved_decode_is_shipped_its_weights(c, s, *workers):
    """The plugin solves for the weights where it picks the recovery set: the worker only sums."""
    a = _matrix()
    await dask_coded.register(c)
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(100, 60))))  # k=4, n=6, one per worker
    await _stick_the_holder_of_block_0(c, s, coded)  # output 0 must be solved from the others
    x = np.arange(60.0)
    y = await c.persist(
        dask_coded.dot(coded, x)
    )  # persisted: the decodes keep the specs the plugin gave them
    await wait(y)
    spec = s.tasks[y.__dask_keys__()[0]].run_spec.args[0]
    assert spec.plan is not None and 0 not in spec.plan.used and spec.plan.chosen == spec.recovery_set
    np.testing.assert_array_equal(spec.plan.weights, spec.code.decoding_plan([0], spec.recovery_set).weights)
    assert relative_error(await c.compute(y), a @ x) < 1e-10


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_a_fused_decode_plans_each_of_its_parts(c, s, *workers):
    """An output block across two decoded blocks of a re-split array: each part planned, none waits."""
    a = _matrix()
    await dask_coded.register(c)
    plain = da.from_array(a, chunks=(100, 60))
    coded = await c.persist(dask_coded.encode(plain, MDSCode(3, 6)))  # data blocks of 134, 133, 133 rows
    await _stick_the_holder_of_block_0(c, s, coded)
    x = np.arange(60.0)
    y = await c.persist(dask_coded.dot(coded, x))
    await wait(y)
    assert y.chunks == plain[:, 0].chunks
    spec = s.tasks[y.__dask_keys__()[1]].run_spec.args[0]  # rows 100-200: blocks 0 and 1
    first, second = spec.parts
    assert (first.output, first.window, second.output, second.window) == (0, (0, 100, 134), 1, (0, 0, 66))
    assert first.plan is not None and 0 not in first.plan.used  # solved: its own block is stuck
    # The other part is its own block's copy, or solved too if that was not in yet.
    assert second.recovery_set == (1,) or (second.plan is not None and 0 not in second.plan.used)
    np.testing.assert_allclose(await c.compute(y), a @ x, atol=1e-10 * np.abs(a @ x).max())


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_late_members_are_released_and_cancelled(c, s, *workers):
    a = _matrix()
    await _setup(c, s, workers[0])
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(100, 60))))
    holders = {
        ws.address
        for ts in s.tasks.values()
        if ts.who_has
        for ws in ts.who_has
        if str(ts.key[0]).startswith(ENCODE)
    }
    assert holders == {w.address for w in workers}, "one coded block per worker"
    y = dask_coded.dot(coded, np.ones(60))
    future = c.compute(y)
    await wait(future)
    stats = await dask_coded.plugin_stats(c)
    # The slow worker's product is among the cancelled ones: it was running when it was dropped.
    (slow,) = _products_run_on(workers[0], y)
    assert "cancelled" in _states_on(workers[0], slow)
    assert stats["members_dropped"] >= stats["members_cancelled"] >= 1
    await async_poll_for(lambda: slow not in workers[0].state.tasks, timeout=30)


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_repeated_computes_stay_fast(c, s, *workers):
    """Cancelled products stop early, so the next compute does not queue behind a zombie."""
    a = _matrix()
    plugin = await _setup(c, s, workers[0], factor=STUCK_FACTOR)
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(100, 60))))
    for seed in range(4):
        x = np.random.default_rng(seed).standard_normal(60)
        early = plugin.counters["decodes_early"]
        y = dask_coded.dot(coded, x)
        result = await c.compute(y)
        assert relative_error(result, a @ x) < 1e-10
        assert plugin.counters["decodes_early"] > early
        # The stuck worker ran this compute's product (so it was free, not busy with the last
        # one) and frees its thread again, about 1000 s before its modelled delay would end.
        assert _products_run_on(workers[0], y)
        await async_poll_for(lambda: workers[0].state.executing_count == 0, timeout=30)


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_plain_dask_waits_for_the_straggler(c, s, *workers):
    a = _matrix()
    plain = await c.persist(da.from_array(a, chunks=(100, 60)))
    slow = next(w for w in workers if any(str(k[0]).startswith("array") for k in w.data))
    await _setup(c, s, slow)
    start = time.monotonic()
    result = await c.compute(da.dot(plain, np.ones(60)))
    # A lower bound the injected sleep guarantees, however loaded the machine.
    assert time.monotonic() - start > SLOW_SECONDS * 0.9
    assert relative_error(result, a.sum(axis=1)) < 1e-12


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_hundreds_of_groups_at_once(c, s, *workers):
    a, b = _matrix(200, 40), _matrix(40, 300, seed=1)
    plugin = await _setup(c, s, workers[0])
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(50, 40))))
    result = await c.compute(
        dask_coded.dot(coded, da.from_array(b, chunks=(40, 2)))
    )  # 150 groups, 600 outputs
    assert relative_error(result, a @ b) < 1e-10
    assert plugin.counters["decodes_early"] >= 150


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_two_sided_codes_and_dask_compute_paths(c, s, *workers):
    await dask_coded.register(c)
    a, b = _matrix(60, 40), _matrix(40, 30, seed=1)
    for code in ["mds", "replication", "polynomial", "matdot"]:
        y = dask_coded.dot(da.from_array(a, chunks=(20, 20)), da.from_array(b, chunks=(20, 15)), code=code)
        assert relative_error(await c.compute(y), a @ b) < 1e-10
        persisted = c.persist(y)
        assert relative_error(await c.compute(persisted), a @ b) < 1e-10
        del persisted
    await async_poll_for(lambda: not _coded_keys(s.tasks), timeout=30)


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_client_cancels_the_computation(c, s, *workers):
    a = _matrix()
    await _setup(c, s, workers[0])
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(100, 60))))
    future = c.compute(dask_coded.dot(coded, np.ones(60)))
    # Cancel while the computation runs (the slow worker's product takes seconds).
    await async_poll_for(
        lambda: any(str(k[0]).startswith(PRODUCT) and ts.state == "processing" for k, ts in s.tasks.items()),
        timeout=30,
        period=0.001,
    )
    await c.cancel(future)
    await async_poll_for(lambda: not _coded_keys(s.tasks), timeout=30)
    # Another vector, so other keys: the scheduler's "cancelled-keys" reply to the cancel may still be
    # on its way, and distributed cancels whatever future of the client holds a key it names, even
    # one submitted after the cancel (plain Dask has the same race).
    result = await c.compute(dask_coded.dot(coded, np.full(60, 2.0)))
    assert relative_error(result, 2 * a.sum(axis=1)) < 1e-10


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_worker_dies_while_its_group_is_open(c, s, *workers):
    a = _matrix()
    await dask_coded.register(c)
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(100, 60))))
    doomed = workers[0]
    model = FaultModel(delay_shift=1.0, tasks="products", kill_workers=(doomed.address,), kill_after=0.2)
    await c.register_plugin(FaultInjector(model), name="faults")
    y = dask_coded.dot(coded, np.ones(60))
    result = await c.compute(y)
    assert relative_error(result, a.sum(axis=1)) < 1e-10
    assert doomed.address not in s.workers
    # Every product takes 1 s, so a recomputed lost product could only finish a second after the
    # surviving ones: the decode did not wait for it, and it never reached memory.
    (lost,) = _products_run_on(doomed, y)
    assert s.plugins[NAME].counters["decodes_early"] >= 1
    assert not [entry for entry in s.transition_log if entry[0] == lost and entry[2] == "memory"]


@gen_cluster(
    client=True,
    nthreads=SIX_WORKERS,
    config={**VALIDATE, "distributed.scheduler.work-stealing": True},
    timeout=TIMEOUT,
)
async def test_work_stealing_with_uneven_load(c, s, *workers):
    await dask_coded.register(c)
    await c.register_plugin(
        FaultInjector(FaultModel(delay="shifted-exponential", delay_scale=0.05, seed=3)), name="faults"
    )
    a = _matrix(600, 30)
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(50, 30)), code=MDSCode(12, 15)))
    results = await c.gather([c.compute(dask_coded.dot(coded, np.full(30, float(i)))) for i in range(5)])
    for i, result in enumerate(results):
        assert relative_error(result, a.sum(axis=1) * i) < 1e-10 if i else np.allclose(result, 0)


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_without_the_plugin_the_graph_waits_and_is_correct(c, s, *workers):
    a = _matrix()
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(100, 60))))
    model = FaultModel(delay_shift=0.05, slow_workers=(workers[0].address,), slow_factor=10, tasks="products")
    await c.register_plugin(FaultInjector(model), name="faults")
    result = await c.compute(dask_coded.dot(coded, np.ones(60)))
    assert relative_error(result, a.sum(axis=1)) < 1e-10
    assert NAME not in s.plugins


def test_plugin_stats_needs_the_plugin(client):
    with pytest.raises(RuntimeError, match="not registered"):
        dask_coded.plugin_stats(client)
    dask_coded.register(client)
    assert dask_coded.plugin_stats(client)["decodes_early"] == 0
    y = dask_coded.dot(dask_coded.encode(da.ones((8, 4), chunks=(2, 4))), np.ones(4))
    np.testing.assert_allclose(y.compute(), np.full(8, 4.0))
    # Registered before the graph arrived, the plugin spread the encoded blocks over the workers.
    assert dask_coded.plugin_stats(client)["placements"] >= 1
    with dask.config.set({"coded.parity": 1}):
        np.testing.assert_allclose(dask_coded.dot(np.ones((6, 3)), np.ones(3)).compute(), np.full(6, 3.0))


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_the_same_product_requested_again_while_cancelled(c, s, *workers):
    """Identical computes back to back: a product cancelled in one is wanted again by the next.

    The cancelled kernel stops by raising ``distributed.Reschedule``, so a key the scheduler
    wants again is recomputed instead of erring.
    """
    a = _matrix(rows=4 * 2048, cols=100)
    await _setup(c, s, workers[0])
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(2048, 100))))
    x = np.ones(100)
    for _ in range(8):
        result = await c.compute(dask_coded.dot(coded, x))
        assert relative_error(result, a.sum(axis=1)) < 1e-10
    assert not [ts for ts in s.tasks.values() if ts.state == "erred"]


#: When the second client submits the same graph, relative to the first client's computation.
_STAGGER_POINTS = ("at-once", "first-product", "first-early-decode", "first-result", "released")


def _reached(s, point, first):
    """Whether the first client's computation has reached ``point`` (scheduler state only)."""
    tasks = list(s.tasks.values())
    if point == "first-product":
        return any(str(ts.key[0]).startswith(PRODUCT) and ts.state == "memory" for ts in tasks)
    if point == "first-early-decode":
        return s.plugins[NAME].counters["decodes_early"] > first
    return True


@pytest.mark.slow
@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 4, config=VALIDATE, timeout=240)
async def test_two_clients_resubmitting_the_same_keys_never_hang(c, s, *workers):
    """Two clients, the same keys, submitted at every stage of each other's computation.

    The rewritten decode must stay consistent with its dependencies whatever is resubmitted,
    released or cancelled: no hang, no key collision, the right answer every time.
    """
    from distributed import Client
    from distributed.utils_test import captured_logger

    await dask_coded.register(c)
    a = _matrix(rows=800, cols=50)
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(200, 50))))  # k=4, n=6
    await c.register_plugin(
        FaultInjector(FaultModel.slow_machine(workers=(workers[1].address,), factor=15, latency=0.01)),
        name="faults",
    )
    plugin = s.plugins[NAME]
    async with Client(s.address, asynchronous=True) as c2:
        with captured_logger("distributed.scheduler") as log:
            for round_ in range(60):
                x = np.full(50, float(round_ % 3 + 1))  # few distinct keys, so rounds collide
                point = _STAGGER_POINTS[round_ % len(_STAGGER_POINTS)]
                y = dask_coded.dot(coded, x)
                first = plugin.counters["decodes_early"]
                f1 = c.compute(y)
                if point == "first-result":
                    await asyncio.wait_for(f1, timeout=30)
                elif point == "released":
                    r1 = await asyncio.wait_for(f1, timeout=30)
                    del f1
                    f1 = None
                else:
                    await async_poll_for(lambda p=point, n=first: _reached(s, p, n), timeout=30, period=0.001)
                f2 = c2.compute(y)
                results = [await asyncio.wait_for(f, timeout=30) for f in (f1, f2) if f is not None]
                if point == "released":
                    results.append(r1)
                for result in results:
                    assert relative_error(result, a @ x) < 1e-10, (round_, point)
                del f1, f2
        assert "Detected different `run_spec`" not in log.getvalue()
    assert not [ts for ts in s.tasks.values() if ts.state in ("erred", "no-worker")]


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE)
async def test_parities_holding_nan_are_not_used_for_a_slow_finite_block(c, s, *workers):
    """Block 0 holds a NaN, so every parity does; block 1 straggles but is finite.

    Decoding output 1 from blocks 0, 2, 3 and a parity would spread the NaN into it.
    The scheduler knows which products are not finite (their result type), so output 1
    waits for its own product, and the result has NumPy's NaN positions.
    """
    a = _matrix()
    a[30, 7] = np.nan  # row 30 of data block 0
    await dask_coded.register(c)
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(100, 60))))  # MDS k=4, n=6
    (holder,) = s.tasks[(coded.name, 1, 0)].who_has
    model = FaultModel(delay_shift=0.05, slow_workers=(holder.address,), slow_factor=10, tasks="products")
    await c.register_plugin(FaultInjector(model), name="faults")

    # The mechanism: a NaN product's type name reaches the scheduler's TaskState.
    marked = c.submit(product_block, [a[:100]], [np.ones(60)], pure=False)
    await wait(marked)
    assert s.tasks[marked.key].type in UNMIXABLE_TYPENAMES
    assert np.isnan(await marked).sum() == 1
    del marked

    x = np.arange(60.0)
    result = await c.compute(dask_coded.dot(coded, x))
    expected = a @ x
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(result[finite], expected[finite], rtol=1e-10)
    assert s.plugins[NAME].counters["decodes_early"] >= 1


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 3, config=VALIDATE, timeout=TIMEOUT)
async def test_registering_again_keeps_what_was_learned_of_the_workers(c, s, *workers):
    """A worker found wrong, or slow, is not trusted again because the plugin's options changed."""
    await dask_coded.register(c)
    faulty, slow = workers[0].address, workers[1].address
    old = s.plugins[NAME]
    old.corrections_by_worker[faulty] = 1
    for worker in [faulty, workers[2].address] * 4:
        old.task_times.record("product", worker, 0.01)
    old.task_times.record_late(slow, chance=0.001)  # late in a group of a thousand: slow
    await dask_coded.register(c, backup="spark")
    new = s.plugins[NAME]
    assert new is not old and new._untrusted() == {faulty, slow}
    assert new.stats()["slow_workers"] == [slow] and new.counters["decodes_early"] == 0
    assert s.get_metadata(_compat.DURATION_RATIOS_METADATA) is new.duration_ratios  # what clients read


@pytest.mark.parametrize("code", [dask_coded.PolynomialCode(2, 2, 8), dask_coded.MatDotCode(4, 8)], ids=repr)
@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 8, config=VALIDATE, timeout=TIMEOUT)
async def test_uncoded_two_sided_products_outlast_a_stuck_worker_term_by_term(c, s, *workers, code):
    """A NaN in A: every product is one term, computed uncoded, and members past the terms repeat them.

    The plugin reads the products' type and waits for one copy of each term of an output, not for
    a recovery set: the worker stuck at products (one member per worker, each term twice) computes
    nothing the answer waits for.
    """
    a = _matrix(rows=80, cols=40)
    a[5, 7] = np.nan
    b = np.random.default_rng(1).standard_normal((40, 6))
    plugin = await _setup(c, s, workers[0], factor=STUCK_FACTOR)
    A = await c.persist(da.from_array(a, chunks=(40, 20)))
    B = await c.persist(da.from_array(b, chunks=(20, 3)))
    y = dask_coded.dot(A, B, code=code)
    result = await c.compute(y)
    assert _products_run_on(workers[0], y)
    expected = a @ b
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(result[finite], expected[finite], rtol=1e-12)
    assert plugin.counters["decodes_early"] >= 1


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_a_zero_block_behind_a_stuck_worker_is_exactly_zero(c, s, *workers):
    """Measured bug: decoded through parities, an all-zero block came back as round-off, not zeros.

    Its chunks are equilibrated by a task gathering every chunk's magnitude (two column chunks), and
    that task's zeros travel with the parities to the decode.
    """
    a = _matrix()
    a[100:200] = 0.0  # data block 1
    await dask_coded.register(c)
    plain = await c.persist(da.from_array(a, chunks=(100, 30)))
    coded = await c.persist(dask_coded.encode(plain))  # MDS k=4, n=6
    (holder,) = s.tasks[(coded.name, 1, 0)].who_has
    model = FaultModel(delay_shift=0.05, slow_workers=(holder.address,), slow_factor=STUCK_FACTOR)
    await c.register_plugin(FaultInjector(model), name="faults")
    plugin = s.plugins[NAME]
    x = np.random.default_rng(1).standard_normal((60, 2))
    result = await c.compute(dask_coded.dot(coded, x))
    np.testing.assert_array_equal(result[100:200], 0.0)
    np.testing.assert_allclose(result, a @ x, rtol=1e-12, atol=1e-12 * np.abs(a @ x).max())
    assert plugin.counters["decodes_early"] >= 1


@pytest.mark.parametrize("code", ["mds", "replication"])
@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_masks_found_when_computed_reach_the_result_under_a_slow_worker(c, s, *workers, code):
    """Blocks masked behind a plain meta: parities cannot carry masks, so each output is its own product.

    The scheduler sees a masked product's type, as it sees a NaN's; the parities mixed from masked
    blocks are NaN. The slow worker is waited for, as da.dot waits for it. A replication's copies
    carry the masks (measured: np.copy dropped them, and a copy standing in for its slow original
    summed masked entries into 15 of 40 outputs, silently).
    """
    a = _matrix()
    await dask_coded.register(c)
    masked = da.from_array(a, chunks=(100, 60)).map_blocks(
        lambda b: np.ma.masked_greater(b, 1.5), meta=np.empty((0, 0))
    )
    model = FaultModel(delay_shift=0.05, slow_workers=1, slow_factor=10, tasks="products", seed=3)
    await c.register_plugin(FaultInjector(model), name="faults")
    x = np.arange(60.0)
    for operand in [masked, await c.persist(dask_coded.encode(masked, code=code))]:
        expected = await c.compute(da.dot(masked, x))
        result = await c.compute(dask_coded.dot(operand, x, code=code if operand is masked else None))
        assert type(result) is type(expected) is np.ma.MaskedArray
        np.testing.assert_array_equal(np.ma.getmaskarray(result), np.ma.getmaskarray(expected))
        np.testing.assert_allclose(result.filled(0), expected.filled(0), rtol=1e-12)


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_chunks_narrower_than_their_array_are_encoded_at_its_precision(c, s, *workers):
    """float32 chunks behind a float64 meta (from_delayed): da.dot computes their products in float64.

    Measured (hostile review): parities mixed in float32 solved the slow worker's block to 2.7e-6.
    """
    blocks = [np.random.default_rng(i).standard_normal((100, 60)).astype(np.float32) for i in range(4)]
    narrow = da.concatenate(
        [da.from_delayed(dask.delayed(lambda b: b)(b), b.shape, dtype=np.float64) for b in blocks]
    )
    a = np.concatenate(blocks).astype(np.float64)
    coded = await c.persist(dask_coded.encode(narrow))
    await _setup(c, s, next(w for w in workers if (coded.name, 1, 0) in w.data), factor=STUCK_FACTOR)
    x = np.random.default_rng(9).standard_normal(60)
    for operand in [coded, narrow]:
        result = await c.compute(dask_coded.dot(operand, x))
        assert result.dtype == np.float64
        for rows in range(0, 400, 100):
            expected = a[rows : rows + 100] @ x
            tolerance = 1e-12 * np.abs(expected).max()
            np.testing.assert_allclose(result[rows : rows + 100], expected, atol=tolerance)
    assert s.plugins[NAME].counters["decodes_early"] >= 1


#: Work stealing every 2 ms instead of 100 ms: a chance to steal a decode whenever there is one.
#: A decode restricted only loosely away from the slow machine was stolen onto it when that machine
#: was the only idle worker (its late members just released) while another worker had two decodes
#: queued: about one run in ten with the default interval, most runs with this one.
EAGER_STEALING = {**VALIDATE, "distributed.scheduler.work-stealing-interval": "2ms"}


@pytest.mark.slow
@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 4, config=EAGER_STEALING, timeout=120)
async def test_a_slow_machine_computes_nothing_a_coded_call_waits_for(c, s, *workers):
    """A slow machine slows every task it runs (operands, encodes, products, decodes), not only products.

    Whether the coded array is persisted or encoded on the fly from a persisted plain array, and
    with a NumPy x (which travels inside the product tasks, not as a task of its own), no task the
    answer needs completes on the slow machine: its members are dropped and decodes run elsewhere,
    and work stealing cannot move them back (see EAGER_STEALING).
    """
    await dask_coded.register(c)
    a = _matrix(rows=800, cols=50)
    plain = await c.persist(da.from_array(a, chunks=(200, 50)))
    coded = await c.persist(dask_coded.encode(plain))  # k=4, n=6: a coded block on every worker
    # The slow machine holds a block of the plain array too, so the on-the-fly encode needs it.
    slow = min(ws.address for ws in s.tasks[plain.__dask_keys__()[0][0]].who_has)
    model = FaultModel.slow_machine(workers=(slow,), factor=1000, latency=0.01)  # 10 s a task there
    await c.register_plugin(FaultInjector(model), name="faults")
    plugin = s.plugins[NAME]
    for label, build in [
        ("persisted", lambda x: dask_coded.dot(coded, x)),
        ("on the fly", lambda x: dask_coded.dot(plain, x)),
    ]:
        for seed in range(3):
            x = np.random.default_rng(seed).standard_normal(50)
            dropped = plugin.dropped_by_worker.get(slow, 0)
            # The scheduler's own task-stream record (the same on every supported version).
            before = len(s.get_task_stream())
            result = await c.compute(build(x))
            np.testing.assert_allclose(result, a @ x, rtol=1e-10, atol=1e-10 * np.abs(a @ x).max())
            on_slow = [r["key"] for r in s.get_task_stream()[before:] if r["worker"] == slow]
            assert not on_slow, (label, seed, on_slow)
            # Started or not (on the fly, its data member waits for a copy of its block made there).
            assert plugin.dropped_by_worker.get(slow, 0) > dropped, "the slow machine had members to drop"


@pytest.mark.slow
@pytest.mark.parametrize("operand", ["computed-beside-its-data", "from-numpy-in-the-graph"])
@gen_cluster(client=True, nthreads=SIX_WORKERS, config=EAGER_STEALING, timeout=120)
async def test_a_slow_machine_never_timed_is_found_late_and_computes_no_operand(c, s, *workers, operand):
    """Its members are always dropped, so it finishes nothing to be timed; its lateness finds it.

    Once found, the tasks every member reads (the operand x, and what x is computed from) are kept
    off it too: ``y * 1.0`` with ``y`` held by the slow machine would run there (beside its data),
    and every product, of every group, would wait for it.
    """
    await dask_coded.register(c)
    a = _matrix(rows=800, cols=50)
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(200, 50))))
    assert coded.code == MDSCode(4, 6)  # one member per worker
    slow = sorted(s.workers)[1]  # data block 1's: late in every call, once in 4 by chance
    model = FaultModel.slow_machine(workers=(slow,), factor=1000, latency=0.01)  # 10 s a task there
    await c.register_plugin(FaultInjector(model), name="faults")
    plugin = s.plugins[NAME]
    for seed in range(20):  # 100 to 1 takes 4 late groups in a row; a call a group
        if slow in plugin.stats()["slow_workers"]:
            break
        x = np.random.default_rng(seed).standard_normal(50)
        result = await c.compute(dask_coded.dot(coded, x))
        np.testing.assert_allclose(result, a @ x, rtol=1e-10, atol=1e-10 * np.abs(a @ x).max())
    # Found by its lateness (never timed: slow by an unknown factor). Not `== [slow]`: on a loaded
    # machine a pause of the test's one process can stretch an honest worker's few timed tasks 8x
    # (seen in CI), a measurement the plugin is right to act on.
    assert slow in plugin.stats()["slow_workers"]
    assert plugin.duration_ratios[slow] == float("inf")
    x = np.random.default_rng(10).standard_normal(50)
    if operand == "computed-beside-its-data":
        y = await c.persist(da.from_array(x, chunks=25), workers=[slow])
        operand_x = y * 1.0
    else:
        operand_x = da.from_array(x, chunks=25) * 1.0
    before = len(s.get_task_stream())
    result = await c.compute(dask_coded.dot(coded, operand_x))
    np.testing.assert_allclose(result, a @ x, rtol=1e-10, atol=1e-10 * np.abs(a @ x).max())
    on_slow = [r["key"] for r in s.get_task_stream()[before:] if r["worker"] == slow]
    assert not on_slow


@pytest.mark.slow
@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=120)
async def test_every_group_of_a_grouped_code_outlasts_a_slow_machine(c, s, *workers):
    """12 chunks on 6 workers: groups of 4 data blocks and 2 parities, one member of each per worker.

    The slow machine holds a member of every group, so every group decodes without it, and no
    task the answer needs completes there.
    """
    await dask_coded.register(c)
    a = _matrix(rows=1200, cols=30)
    plain = await c.persist(da.from_array(a, chunks=(100, 30)))
    coded = await c.persist(dask_coded.encode(plain))
    assert coded.code == GroupedMDSCode(12, group_size=4, parity=2)
    for group in coded.code.groups:
        holders = [ws.address for i in group.members for ws in s.tasks[(coded.name, i, 0)].who_has]
        assert len(holders) == len(set(holders)) == len(group.members), (group, holders)
    slow = min(ws.address for ws in s.tasks[(coded.name, 0, 0)].who_has)
    model = FaultModel.slow_machine(workers=(slow,), factor=1000, latency=0.01)  # 10 s a task there
    await c.register_plugin(FaultInjector(model), name="faults")
    for label, operand in [("persisted", coded), ("on the fly", plain)]:
        x = np.random.default_rng(len(label)).standard_normal(30)
        before = len(s.get_task_stream())
        result = await c.compute(dask_coded.dot(operand, x))
        np.testing.assert_allclose(result, a @ x, rtol=1e-10, atol=1e-10 * np.abs(a @ x).max())
        on_slow = [r["key"] for r in s.get_task_stream()[before:] if r["worker"] == slow]
        assert not on_slow, (label, on_slow)


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_data_blocks_moved_to_their_workers_are_aligned(c, s, *workers):
    """A block that travelled may start at any byte (distributed reads it into its message's buffer),
    and NumPy multiplies it without BLAS; the persisted data blocks, spread from one worker, are not so."""
    await dask_coded.register(c)
    a = _matrix(rows=4000, cols=500)
    plain = await c.persist(da.from_array(a, chunks=(1000, 500)), workers=[workers[0].address])
    coded = await c.persist(dask_coded.encode(plain, code=MDSCode(4, 6)))
    stored = {
        key: (worker.address, value)
        for worker in workers
        for key, value in worker.data.items()
        if isinstance(key, tuple) and key[0] == coded.name and key[1] < 4
    }
    assert {holder for holder, _ in stored.values()} - {workers[0].address}, "no data block travelled"
    assert all(value.flags.aligned for _, value in stored.values())
    for (_, index, _), (_, value) in stored.items():
        np.testing.assert_array_equal(value, a[1000 * index : 1000 * (index + 1)])


def _wait_for_go():
    Event("go").wait()
    return np.arange(60.0)


@pytest.mark.parametrize("on_the_fly", [False, True])
@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_parity_members_run_last_on_a_worker_of_their_own(c, s, *workers, on_the_fly):
    """With nothing late a group decodes from its data products: parities (and their encodes) go last.

    Every member is pinned strictly to a worker no other member of its group has: work stealing
    would otherwise move the queued parities to a slow worker that looks idle once its late
    member is released (seen on a loaded machine), and the group would wait for it after all.
    """
    await dask_coded.register(c)
    a = _matrix(rows=1200, cols=60)
    plain = await c.persist(da.from_array(a, chunks=(100, 60)))  # 12 chunks: 3 groups of 4 + 2
    operand = plain if on_the_fly else await c.persist(dask_coded.encode(plain))
    go = Event("go", client=c)
    x = da.from_delayed(dask.delayed(_wait_for_go)(), shape=(60,), dtype=float)
    result = c.compute(dask_coded.dot(operand, x))
    await async_poll_for(
        lambda: any(str(k[0]).startswith(DECODE) for k in s.tasks if isinstance(k, tuple)), 10
    )
    decodes = [ts for ts in s.tasks.values() if str(ts.key[0]).startswith(DECODE)]
    assert len(decodes) == 12
    for ts in decodes:
        spec = ts.run_spec.args[0]
        members = [s.tasks[_compat.reference_key(r)] for r in ts.run_spec.args[1:]]
        data, parities = members[: spec.code.k], members[spec.code.k :]
        assert len(parities) == 2
        assert max(m.priority for m in data) < min(m.priority for m in parities), ts.key
        pinned = [m.worker_restrictions for m in members]
        assert all(len(w) == 1 for w in pinned) and not any(m.loose_restrictions for m in members)
        assert len(set().union(*pinned)) == len(members), (ts.key, pinned)
        for member in parities:
            encodes = [d for d in member.dependencies if str(d.key[0]).startswith(ENCODE)]
            assert all(d.priority > max(m.priority for m in data) for d in encodes if d.state != "memory")
            assert encodes and (on_the_fly or all(d.state == "memory" for d in encodes))
            if on_the_fly:  # stolen, a parity encode would delay its parity product just the same
                assert all(d.worker_restrictions == member.worker_restrictions for d in encodes)
                assert not any(d.loose_restrictions for d in encodes)
        for member in data if on_the_fly else ():
            # Measured: a data block's encode, loosely spread, was stolen by a faulty worker (idle, as
            # nothing else was given it) and came out wrong under its member's worker's name.
            encodes = [d for d in member.dependencies if str(d.key[0]).startswith(ENCODE)]
            assert encodes and all(d.worker_restrictions == member.worker_restrictions for d in encodes)
            assert not any(d.loose_restrictions for d in encodes)
    await go.set()
    expected = a @ np.arange(60.0)
    np.testing.assert_allclose(await result, expected, atol=1e-10 * np.abs(expected).max())


#: The memory monitor would resume a worker the test paused (its memory is below the threshold).
NO_MEMORY_PAUSE = {**VALIDATE, "distributed.worker.memory.pause": False}


@pytest.mark.parametrize("operand", ["persisted-on-the-slow-worker", "computed-beside-its-data"])
@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 3, config=NO_MEMORY_PAUSE, timeout=TIMEOUT)
async def test_work_kept_off_a_slow_worker_runs_there_once_the_others_have_left(c, s, slow, b, d, operand):
    """Decodes, and the tasks the products read, are kept off a slow worker strictly; when every
    allowed worker has gone, that lifts. An operand the user placed on the slow worker stays there.
    """
    await dask_coded.register(c)
    plugin = s.plugins[NAME]
    a = _matrix()
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(100, 60))))
    plugin.duration_ratios.update({slow.address: 10.0, b.address: 1.0, d.address: 1.0})  # as measured
    # Hold the call back: x needs data only the slow worker may make, and it is paused for now.
    slow.status = Status.paused
    await async_poll_for(lambda: s.workers[slow.address].status == Status.paused, timeout=30)
    if operand == "persisted-on-the-slow-worker":
        x = c.persist(da.arange(60.0, chunks=60), workers=[slow.address])
        operand_keys = []
    else:
        x = c.persist(da.arange(60.0, chunks=30), workers=[slow.address]) * 1.0  # computed beside its data
        operand_keys = [key for key in x.__dask_graph__() if key[0] == x.name]
    future = c.compute(dask_coded.dot(coded, x))
    await async_poll_for(lambda: [k for k in s.tasks if str(k[0]).startswith(DECODE)], timeout=30)
    decodes = [ts for ts in s.tasks.values() if str(ts.key[0]).startswith(DECODE)]
    for ts in decodes + [s.tasks[key] for key in operand_keys]:
        assert ts.worker_restrictions == {b.address, d.address}
        assert not ts.loose_restrictions
    # The allowed workers leave; only the slow one can finish the call (without hanging).
    await b.close()
    await d.close()
    slow.status = Status.running
    result = await future
    assert relative_error(result, a @ np.arange(60.0)) < 1e-10


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 4, config=NO_MEMORY_PAUSE, timeout=TIMEOUT)
async def test_members_pinned_to_paused_workers_run_elsewhere(c, s, *workers):
    """Two of a group's three workers pause (memory) before its products start: the pins lift.

    Plain Dask would run them elsewhere; strict pins would otherwise wait for the pause to end,
    here forever (the test's time limit).
    """
    await dask_coded.register(c)
    a = _matrix(rows=200, cols=60)
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(100, 60)), code=MDSCode(2, 3)))
    go = Event("go", client=c)
    x = da.from_delayed(dask.delayed(_wait_for_go)(), shape=(60,), dtype=float)  # holds the products
    result = c.compute(dask_coded.dot(coded, x))
    await async_poll_for(lambda: any(str(k[0]).startswith(PRODUCT) for k in _coded_keys(s.tasks)), 10)
    members = [ts for ts in s.tasks.values() if str(ts.key[0]).startswith(PRODUCT)]
    assert len(members) == 3 and all(len(ts.worker_restrictions) == 1 for ts in members)
    pinned = sorted(next(iter(ts.worker_restrictions)) for ts in members)
    assert len(set(pinned)) == 3
    paused = [w for w in workers if w.address in pinned[:2]]
    for worker in paused:
        worker.status = Status.paused
    await async_poll_for(lambda: all(s.workers[w.address].status == Status.paused for w in paused), 30)
    await go.set()
    expected = a @ np.arange(60.0)
    np.testing.assert_allclose(await result, expected, atol=1e-10 * np.abs(expected).max())


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 2, config=VALIDATE, timeout=TIMEOUT)
async def test_the_running_versions_have_what_early_decoding_needs(c, s, a, b):
    # CI runs this on the oldest and the newest supported dask/distributed.
    assert _compat.missing_internals(s) == []


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_registering_again_replaces_the_plugin_and_keeps_it_working(c, s, *workers):
    """register() twice (a notebook cell run again, a benchmark changing options) must not disable it."""
    a = _matrix()
    for backup in ("off", "spark", "off"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "lacks ..." warning, nor distributed's "overwriting"
            await dask_coded.register(c, backup=backup)
        plugin = s.plugins[NAME]
        assert plugin.scheduler is s and _compat.missing_internals(s) == []
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(100, 60))))
    (holder,) = s.tasks[(coded.name, 0, 0)].who_has
    model = FaultModel(delay_shift=0.05, slow_workers=(holder.address,), slow_factor=100, tasks="products")
    await c.register_plugin(FaultInjector(model), name="faults")
    result = await c.compute(dask_coded.dot(coded, np.ones(60)))
    np.testing.assert_allclose(result, a.sum(axis=1), atol=1e-10 * np.abs(a.sum(axis=1)).max())
    assert s.plugins[NAME].counters["decodes_early"] >= 1


async def _unregister_by_hand(c):
    await c.unregister_scheduler_plugin(NAME)


@pytest.mark.parametrize(
    "replace, register_after_the_loss",
    [
        (dask_coded.register, False),
        (dask_coded.unregister, False),
        (_unregister_by_hand, False),
        (_unregister_by_hand, True),
    ],
    ids=["registered-again", "unregistered", "by-hand-then-registered", "by-hand-lost-then-registered"],
)
@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 4, config=VALIDATE, timeout=TIMEOUT)
async def test_pins_are_lifted_when_their_worker_leaves_after_the_plugin_changed(
    c, s, *workers, replace, register_after_the_loss
):
    """Found by hostile reviews: the new plugin did not know the old one's pins, and lifted none.

    A persisted product's tasks stay pinned strictly to their workers; when one of those leaves,
    its tasks must run elsewhere, not wait for it forever ("no-worker"). distributed tells a
    removed plugin nothing: unregister() lifts the pins first; a plugin registered after
    ``unregister_scheduler_plugin`` takes them over, and lifts those to workers that left meanwhile.
    """
    await dask_coded.register(c)
    a = _matrix(rows=4000, cols=100)
    y = c.persist(dask_coded.dot(da.from_array(a, chunks=(500, 100)), np.ones(100)))
    await wait(y)
    await replace(c)
    if replace is _unregister_by_hand and not register_after_the_loss:
        await dask_coded.register(c)
    (holder,) = s.tasks[y.__dask_keys__()[0]].who_has
    await next(w for w in workers if w.address == holder.address).close()
    if register_after_the_loss:
        await async_poll_for(lambda: holder.address not in s.workers, timeout=30)
        await dask_coded.register(c)
    expected = a.sum(axis=1)  # accurate relative to the output, not to each entry (a parity decode)
    np.testing.assert_allclose(await c.compute(y), expected, atol=1e-10 * np.abs(expected).max())


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 4, config=VALIDATE, timeout=TIMEOUT)
async def test_a_plugin_registered_after_one_was_unregistered_keeps_its_rewrites(c, s, *workers):
    """Found by a hostile review: the rewritten decodes were forgotten, so the same graph sent again
    was a key collision, and the late members it re-created stayed on the scheduler for good."""
    await dask_coded.register(c)
    a = _matrix(rows=4000, cols=80)
    A = da.from_array(a, chunks=(500, 80))
    model = FaultModel.slow_machine(workers=(workers[1].address,), factor=20, latency=0.02)
    await c.register_plugin(FaultInjector(model), name="faults")
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal(80)
        y = dask_coded.dot(A, x)
        held = c.persist(y)
        await wait(held)
        await c.unregister_scheduler_plugin(NAME)
        await dask_coded.register(c)
        # Accurate relative to the output, not to each entry (CI: an entry 1e4 times smaller, 1.4e-10).
        np.testing.assert_allclose(await c.compute(y), a @ x, atol=1e-10 * np.abs(a @ x).max())
        del held, y
        await async_poll_for(lambda: not _coded_keys(s.tasks), timeout=30)


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], config=VALIDATE, timeout=TIMEOUT)
async def test_unregister_without_the_plugin_says_so(c, s, a):
    with pytest.raises(ValueError, match="dask-coded plugin is not registered"):
        await dask_coded.unregister(c)


def test_a_graph_form_the_plugin_cannot_read_is_detected(monkeypatch):
    # Before dask-coded read Alias references, dask 2025.1's graphs gave the plugin no members
    # to count: it registered and silently never decoded early. The start-up check now sees that.
    monkeypatch.setattr(_compat, "reference_key", lambda node: None)
    missing = _compat.missing_internals(object())
    assert "dask._task_spec references readable as TaskRef or Alias" in missing


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=VALIDATE, timeout=TIMEOUT)
async def test_without_the_internals_it_warns_clients_once_and_stays_out_of_the_way(c, s, *workers):
    a = _matrix()
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(100, 60))))
    with mock.patch.object(_compat, "missing_internals", return_value=["TaskState.run_spec"]):
        with pytest.warns(DaskCodedWarning) as record:
            await dask_coded.register(c)
            # The warning travels from the scheduler to the client as an event.
            await async_poll_for(lambda: len(record) > 0, timeout=30)
            result = await c.compute(dask_coded.dot(coded, np.ones(60)))
    ours = [w for w in record if issubclass(w.category, DaskCodedWarning)]
    assert len(ours) == 1
    assert "TaskState.run_spec" in str(ours[0].message) and "no early decoding" in str(ours[0].message)
    assert relative_error(result, a.sum(axis=1)) < 1e-10
    # Out of the way: no hook did anything.
    plugin = s.plugins[NAME]
    assert plugin.scheduler is None
    assert not any(plugin.stats()[name] for name in ("decodes_early", "members_dropped", "placements"))


@pytest.mark.slow
def test_data_blocks_follow_the_evidence_of_delays(client_of):
    """coded.data-blocks auto: one coded block per worker, fewer data blocks the longer the tail."""
    client = client_of(6)
    dask_coded.register(client)
    a = _matrix(rows=600, cols=10)
    A = da.from_array(a, chunks=(100, 10))  # 6 chunks on 6 workers
    workers = sorted(client.nthreads())

    def encode_auto():
        with dask.config.set({"coded.data-blocks": "auto"}):
            return dask_coded.encode(A)

    def run_everywhere(model, phase):
        # 32 tasks a worker refill every worker's window of samples; named keys draw seeded delays.
        with dask_coded.faults.inject(client, model):
            keys = [(w, f"{phase}-{w}-{i}") for w in workers for i in range(32)]
            client.gather([client.submit(np.ones, 10, key=key, workers=[w]) for w, key in keys])

    coded = encode_auto()
    assert coded.code == MDSCode(4, 6) and coded.chunks[0] == (150,) * 4  # no evidence: 2 parities
    x = np.arange(10.0)
    np.testing.assert_allclose(dask_coded.dot(coded, x).compute(), a @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(coded.compute(), a)
    run_everywhere(FaultModel(delay="none", delay_shift=0.05), "quiet")  # every task alike: no tail
    assert encode_auto().code == MDSCode(5, 6)
    run_everywhere(FaultModel(delay="shifted-exponential", delay_scale=0.05), "tail")
    assert encode_auto().code == MDSCode(3, 6)  # at most twice the work
    assert dask_coded.encode(A).code == MDSCode(3, 6)  # auto is the default
    with dask.config.set({"coded.data-blocks": "keep"}):
        assert dask_coded.encode(A).chunks == A.chunks  # A's own chunks
    with dask.config.set({"coded.max-errors": 1}):
        assert encode_auto().chunks == A.chunks  # a code sized for corrections, not from the delays


@pytest.mark.slow
def test_parity_follows_the_evidence_of_slow_workers(client_of):
    """coded.parity auto: one parity per group while nothing straggles, one more per slow worker."""
    client = client_of(6)
    dask_coded.register(client)
    A = da.ones((1200, 10), chunks=(100, 10))  # 12 chunks
    assert dask_coded.encode(A).code == GroupedMDSCode(12, group_size=4, parity=2)  # no evidence yet
    workers = sorted(client.nthreads())

    def measured(count):
        return lambda: len(dask_coded.plugin_stats(client)["duration_ratios"]) >= count

    # Every worker runs tasks of 20 ms (kinds under 1 ms are timer noise, not evidence): nothing
    # straggles. A task is compared with the 3 of its kind before it, so 4 a worker give each a ratio.
    work = [client.submit(time.sleep, 0.02, pure=False, workers=[w]) for w in workers for _ in range(4)]
    client.gather(work)
    poll_for(measured(6), timeout=30)
    assert dask_coded.encode(A).code == GroupedMDSCode(12, group_size=5, parity=1)
    # One worker is slow at everything: one more parity per group.
    model = FaultModel.slow_machine(workers=(workers[0],), factor=20, latency=0.01)
    with dask_coded.faults.inject(client, model):
        for _ in range(30):  # until the recent ratios show it
            client.gather([client.submit(np.ones, 1000, pure=False, workers=[w]) for w in workers])
            if dask_coded.plugin_stats(client)["slow_workers"]:
                break
    assert dask_coded.plugin_stats(client)["slow_workers"] == [workers[0]]
    assert dask_coded.encode(A).code == GroupedMDSCode(12, group_size=4, parity=2)
    with dask.config.set({"coded.parity": 3}):
        assert dask_coded.encode(A).code == MDSCode(12, 15)  # a number is used as it is
