"""Wrong block products, end to end: located and corrected in the graph, counted per worker, never silent."""

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from distributed.utils_test import async_poll_for, gen_cluster

import dask_coded
from dask_coded import DecodingError, MDSCode
from dask_coded.blocks import decode_block
from dask_coded.faults import FaultInjector, FaultModel
from dask_coded.keys import DECODE, PRODUCT
from dask_coded.policy import coded_block_index
from dask_coded.testing import relative_error

pytestmark = pytest.mark.filterwarnings("ignore:Sending large graph:UserWarning")

SIX_WORKERS = [("127.0.0.1", 1)] * 6
#: gen_cluster's time limit: a guard against hangs, not a speed limit (on a loaded 2-core machine
#: a plugin test took 31 s and hit the default 30 s).
TIMEOUT = 120
#: k = 4 data blocks, no straggler parity, 2 * max_errors = 2 extra blocks: one coded block per worker.
CONFIG = {"distributed.scheduler.validate": True, "coded.parity": 0}


async def _setup(c, faulty, kind, spread=True):
    """Register the plugin and make the ``faulty`` workers return garbage for every product."""
    await c.register_plugin(
        dask_coded.plugin.CodedSchedulerPlugin(spread=spread), name=dask_coded.plugin.NAME
    )
    model = FaultModel(error_workers=tuple(w.address for w in faulty), error_kind=kind, tasks="products")
    await c.register_plugin(FaultInjector(model), name="faults")


@pytest.mark.parametrize("kind", ["noise", "nan", "bitflip"])
@gen_cluster(client=True, nthreads=SIX_WORKERS, config=CONFIG, timeout=TIMEOUT)
async def test_one_faulty_worker_is_corrected_and_named(c, s, *workers, kind):
    data = np.random.default_rng(0).standard_normal((400, 50))
    x = np.random.default_rng(1).standard_normal(50)
    with dask.config.set(CONFIG):
        plain = await c.persist(da.from_array(data, chunks=(100, 50)))
        (faulty,) = s.tasks[plain.__dask_keys__()[0][0]].who_has
        coded = await c.persist(dask_coded.encode(plain, code=dask_coded.MDSCode(4, 6)))
        assert coded.code.n == 6
        await _setup(c, [faulty], kind)

        # Pinned, because where plain Dask runs a product is the scheduler's choice, not the data's.
        wrong = await c.compute(da.dot(plain, x), workers=faulty.address, allow_other_workers=False)
        before = len(s.get_task_stream())
        right = await c.compute(dask_coded.dot(coded, x, max_errors=1))
        ran_on_faulty = [r["key"] for r in s.get_task_stream()[before:] if r["worker"] == faulty.address]

    # Plain Dask under the same faults is wrong: the faults are real.
    expected = data @ x
    assert np.isnan(wrong).any() or relative_error(wrong, expected) > 1e-6
    assert relative_error(right, expected) < 1e-10
    stats = await dask_coded.plugin_stats(c)
    assert stats["corrections"] >= 1
    assert set(stats["corrections_by_worker"]) == {faulty.address}
    # One member per worker, pinned: every correction is of the one member the faulty worker computed.
    (faulty_block,) = [key[1] for key in ran_on_faulty if str(key[0]).startswith(PRODUCT)]
    assert stats["corrections_by_block"] == {faulty_block: stats["corrections"]}


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=CONFIG, timeout=TIMEOUT)
async def test_a_worker_found_wrong_computes_no_decode_and_no_operand_again(c, s, *workers):
    """Measured: a worker wrong at every task it ran decodes too, silently, after its products were caught.

    max_errors checks products; a decode, or an operand chunk encoded into data blocks and parities
    alike, is checked by nothing. Once a worker's products have been corrected, decodes, what the
    members read and what their coded blocks are encoded from are kept off it; it computes its own
    members only (their encodes pinned beside them), whose errors the code corrects.
    """
    data = np.random.default_rng(0).standard_normal((400, 50))
    with dask.config.set(CONFIG):
        plain = await c.persist(da.from_array(data, chunks=(100, 50)))
        (faulty,) = s.tasks[plain.__dask_keys__()[0][0]].who_has
        coded = await c.persist(dask_coded.encode(plain, code=dask_coded.MDSCode(4, 6)))
        await _setup(c, [faulty], "noise")  # wrong at products only: found out
        x = np.random.default_rng(1).standard_normal(50)
        assert relative_error(await c.compute(dask_coded.dot(coded, x, max_errors=1)), data @ x) < 1e-10
        plugin = s.plugins[dask_coded.plugin.NAME]
        await async_poll_for(lambda: faulty.address in plugin.corrections_by_worker, timeout=30)
        # Now wrong at everything it computes: decodes, the operand x, what else it is given.
        model = FaultModel(error_workers=(faulty.address,), error_kind="noise", tasks="all")
        await c.register_plugin(FaultInjector(model), name="faults")
        before = len(s.get_task_stream())
        for seed in range(6):
            vector = np.random.default_rng(seed + 2).standard_normal(50)
            x = da.from_array(vector, chunks=25) * 1.0  # computed on some worker, read by every product
            # Encoded on the fly from chunks computed in the same graph: a wrong chunk would be encoded
            # into the parities too, and no check could see it.
            operand = coded if seed % 2 else da.from_array(data, chunks=(100, 50)) * 1.0
            result = await c.compute(dask_coded.dot(operand, x, max_errors=1))
            assert relative_error(result, data @ vector) < 1e-10, seed
    # Its own members (their encodes and products, checked) only: no decode, no operand chunk.
    ran_on_faulty = [r["key"] for r in s.get_task_stream()[before:] if r["worker"] == faulty.address]
    unchecked = [k for k in ran_on_faulty if not k[0].startswith(PRODUCT) and coded_block_index(k) is None]
    assert not unchecked, ran_on_faulty


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=CONFIG, timeout=TIMEOUT)
async def test_a_faulty_worker_keeps_its_own_members_and_is_corrected_every_call(c, s, *workers):
    """Measured: with the faulty worker dropped from the spread, 6 members on 5 workers could not locate it.

    Its persisted block was encoded while it was wrong at everything: read by an honest worker, that
    one was blamed too, and every call after the first raised DecodingError.
    """
    data = np.random.default_rng(0).standard_normal((400, 50))
    with dask.config.set(CONFIG):
        plain = await c.persist(da.from_array(data, chunks=(100, 50)))
        (faulty,) = s.tasks[plain.__dask_keys__()[0][0]].who_has
        await dask_coded.register(c)
        model = FaultModel(error_workers=(faulty.address,), error_kind="noise", tasks="all")
        await c.register_plugin(FaultInjector(model), name="faults")
        coded = await c.persist(dask_coded.encode(plain, code=dask_coded.MDSCode(4, 6)))
        plugin = s.plugins[dask_coded.plugin.NAME]
        for call in range(4):
            vector = np.random.default_rng(call).standard_normal(50)
            result = await c.compute(dask_coded.dot(coded, vector, max_errors=1))
            if call:  # the first runs before any evidence: its decodes may land on the faulty worker
                assert relative_error(result, data @ vector) < 1e-10, call
            await async_poll_for(lambda: faulty.address in plugin.corrections_by_worker, timeout=30)
    assert set(plugin.corrections_by_worker) == {faulty.address}


@pytest.mark.parametrize("faulty", [0, 1])
@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 4, config=CONFIG, timeout=TIMEOUT)
async def test_replication_outvotes_a_faulty_worker_with_as_many_blocks_as_workers(c, s, *workers, faulty):
    """Three copies of each of 4 blocks on 4 workers: never two copies of one block on one worker.

    Copy i used to go to worker i mod 4, so the copies of a block were one suspect: DecodingError
    even with no faulty worker, where da.dot works.
    """
    a = np.random.default_rng(0).standard_normal((400, 50))
    b = np.random.default_rng(1).standard_normal((50, 30))
    await _setup(c, workers[:faulty], "noise")
    with dask.config.set(CONFIG):
        left, right = da.from_array(a, chunks=(100, 25)), da.from_array(b, chunks=(25, 15))
        result = await c.compute(dask_coded.dot(left, right, code="replication", max_errors=1))
    np.testing.assert_allclose(result, a @ b, rtol=1e-10, atol=1e-10 * np.abs(a @ b).max())
    stats = await dask_coded.plugin_stats(c)
    assert set(stats["corrections_by_worker"]) == {w.address for w in workers[:faulty]}


def _cancelling(rows, seed=0):
    """Rows of +1e8 and -1e8 that sum to about 10: products far smaller than ``|A| |x|``."""
    rng = np.random.default_rng(seed)
    half = rng.standard_normal((rows, 25)) * 1e8
    return np.concatenate([half, -half + rng.standard_normal((rows, 25))], axis=1)


def _ignored_column(rows, seed=0):
    """float32 rows with a column of timestamps (1.7e9) that x weights 0, and that x."""
    rng = np.random.default_rng(seed)
    data = np.column_stack([np.full(rows, 1.7e9), rng.standard_normal((rows, 49))]).astype(np.float32)
    return data, np.r_[0.0, rng.standard_normal(49)].astype(np.float32)


@pytest.mark.parametrize("kind", ["noise", "nan", "bitflip"])
@pytest.mark.parametrize("data", ["cancelling", "ignored column"])
@gen_cluster(client=True, nthreads=SIX_WORKERS, config=CONFIG, timeout=TIMEOUT)
async def test_a_faulty_worker_is_corrected_where_a_is_far_larger_than_a_x(c, s, *workers, kind, data):
    """Round-off is of the size of ``|A| |x|`` where A's rows cancel; ``||A|| ||x||`` is far larger still
    where x ignores A's largest column, and an allowance sized from it let a worker's noise through.
    """
    a, x = (_cancelling(400), np.ones(50)) if data == "cancelling" else _ignored_column(400)
    with dask.config.set(CONFIG):
        plain = await c.persist(da.from_array(a, chunks=(100, 50)))
        (faulty,) = s.tasks[plain.__dask_keys__()[0][0]].who_has
        coded = await c.persist(dask_coded.encode(plain, code=MDSCode(4, 6)))
        await _setup(c, [faulty], kind)
        result = await c.compute(dask_coded.dot(coded, x, max_errors=1))
    # Accurate relative to |A| |x| (as da.dot is): solved through parities, a cancelling row is no
    # more accurate than that.
    magnitude = np.abs(a.astype(np.float64)) @ np.abs(x.astype(np.float64))
    eps = np.finfo(a.dtype).eps
    np.testing.assert_array_less(np.abs(result - a.astype(np.float64) @ x), 100 * eps * magnitude + 1e-300)
    stats = await dask_coded.plugin_stats(c)
    assert set(stats["corrections_by_worker"]) == {faulty.address}


@pytest.mark.parametrize(
    "data,x",
    [
        (_cancelling(80), np.ones(50)),
        (np.random.default_rng(4).integers(-(2**25), 2**25, (80, 30)), np.full(30, 2**31 - 1)),  # past 2**53
        (np.random.default_rng(5).integers(0, 2**6, (80, 30)).astype(np.float32), np.ones(30, np.float32)),
        _ignored_column(80),
        # ||A|| ||x|| overflows where |A| |x| does not.
        (np.column_stack([np.full(80, 1e200), np.ones(80)]), np.array([1e-200, 1e200])),
        # Products that underflow: what is lost is of the subnormal spacing, not of eps |A| |x|.
        (np.full((80, 10), 1e-300), np.full(10, 1e-20)),
        (np.full((80, 10), 1e-200), np.full(10, 1e-200)),
        (np.full((80, 50), 1e-22, np.float32), np.full(50, 1e-22, np.float32)),
    ],
)
def test_max_errors_returns_what_da_dot_does_with_no_fault(data, x):
    """Products that cancel, pass 2**53 or underflow used to raise DecodingError with no fault at all."""
    a = da.from_array(data, chunks=(20, data.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either: every product here can be checked
        result = dask_coded.dot(a, x, max_errors=1).compute(scheduler="threads")
    assert result.dtype == da.dot(a, x).dtype
    np.testing.assert_array_equal(result, da.dot(a, x).compute(scheduler="threads"))


@pytest.mark.parametrize("blocks", ["all", "one"])
@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_max_errors_says_when_integer_products_may_have_wrapped(blocks, dtype):
    """Like da.dot, the products wrap; the float64 parities cannot check them, and the user is told.

    With one such block, the check used to call it wrong and the decode raised (an integer block
    cannot be solved through parities).
    """
    rng = np.random.default_rng(6)
    data = rng.integers(0, 10, (80, 30)).astype(dtype)
    data[: 80 if blocks == "all" else 20] += dtype(2**40)
    x = np.full(30, 2**23 + 1, dtype=dtype)
    a = da.from_array(data, chunks=(20, 30))
    with pytest.warns(dask_coded.DaskCodedWarning, match="wrapped"):
        result = dask_coded.dot(a, x, max_errors=1).compute(scheduler="sync")
    np.testing.assert_array_equal(result, data @ x)


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=CONFIG, timeout=TIMEOUT)
async def test_too_many_faulty_workers_raise_instead_of_returning(c, s, *workers):
    data = np.random.default_rng(0).standard_normal((400, 50))
    with dask.config.set(CONFIG):
        await _setup(c, workers[:2], "noise")
        coded = await c.persist(
            dask_coded.encode(da.from_array(data, chunks=(100, 50)), code=dask_coded.MDSCode(4, 6))
        )
        with pytest.raises(DecodingError, match="wrong result"):
            await c.compute(dask_coded.dot(coded, np.ones(50), max_errors=1))


def _decode_max_errors(y):
    graph = dict(y.__dask_graph__())
    return {t.args[0].max_errors for k, t in graph.items() if str(k[0]).startswith(DECODE)}


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=CONFIG, timeout=TIMEOUT)
async def test_a_coded_array_encoded_for_max_errors_corrects_outside_that_config(c, s, *workers):
    """A review found it did not: encoded under coded.max-errors: 1, ``C @ x`` after it returned
    a faulty worker's garbage (300 of 400 entries wrong), although the code had the redundancy."""
    data = np.random.default_rng(4).standard_normal((400, 50))
    x = np.random.default_rng(5).standard_normal(50)
    with dask.config.set({**CONFIG, "coded.max-errors": 1}):
        coded = await c.persist(dask_coded.encode(da.from_array(data, chunks=(100, 50))))
    assert coded.max_errors == 1 and coded.T.max_errors == 1
    (faulty,) = s.tasks[(coded.name, 0, 0)].who_has
    await _setup(c, [faulty], "noise")
    assert _decode_max_errors(coded @ x) == {1}
    assert relative_error(await c.compute(coded @ x), data @ x) < 1e-10
    assert (await dask_coded.plugin_stats(c))["corrections"] >= 1
    # An explicit number still wins, and a code that cannot correct keeps none.
    assert _decode_max_errors(dask_coded.dot(coded, x, max_errors=0)) == {0}
    with dask.config.set({"coded.max-errors": 1}):
        assert dask_coded.encode(da.from_array(data, chunks=(100, 50)), MDSCode(4, 5)).max_errors == 0


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=CONFIG, timeout=TIMEOUT)
async def test_named_codes_get_redundancy_for_max_errors(c, s, *workers):
    data = np.random.default_rng(2).standard_normal((200, 30))
    with dask.config.set(CONFIG):
        await _setup(c, workers[:1], "noise")
        matrix = da.from_array(data, chunks=(50, 30))
        for code in ["mds", "replication", "polynomial", "matdot"]:
            other = (
                da.from_array(np.eye(30), chunks=(15, 30))
                if code in ("polynomial", "matdot")
                else np.ones(30)
            )
            result = await c.compute(dask_coded.dot(matrix, other, code=code, max_errors=1))
            expected = data @ (np.eye(30) if code in ("polynomial", "matdot") else np.ones(30))
            assert relative_error(result, expected) < 1e-10, code


def test_max_errors_on_a_local_scheduler():
    data = np.random.default_rng(3).standard_normal((80, 10))
    result = dask_coded.dot(da.from_array(data, chunks=(20, 10)), np.ones(10), max_errors=2)
    assert relative_error(result.compute(scheduler="threads"), data.sum(axis=1)) < 1e-10
    graph = dict(result.__dask_graph__())
    specs = [t.args[0] for k, t in graph.items() if isinstance(k, tuple) and str(k[0]).startswith(DECODE)]
    assert {(s.code.k, s.code.n, s.max_errors) for s in specs} == {(4, 10, 2)}


@gen_cluster(client=True, nthreads=SIX_WORKERS, config=CONFIG, timeout=TIMEOUT)
async def test_a_pinned_member_runs_elsewhere_when_its_worker_dies(c, s, *workers):
    """Members of a max_errors group are pinned to distinct workers; a dead worker's member is freed."""
    data = np.random.default_rng(4).standard_normal((400, 50))
    doomed = workers[0]
    with dask.config.set(CONFIG):
        await dask_coded.register(c)
        coded = await c.persist(dask_coded.encode(da.from_array(data, chunks=(100, 50)), code=MDSCode(4, 6)))
        model = FaultModel(delay_shift=0.5, tasks="products", kill_workers=(doomed.address,), kill_after=0.1)
        await c.register_plugin(FaultInjector(model), name="faults")
        result = await c.compute(dask_coded.dot(coded, np.ones(50), max_errors=1))
    # Checking one wrong result needs all k + 2 = 6 products, so the lost one really was recomputed.
    assert relative_error(result, data.sum(axis=1)) < 1e-10
    assert doomed.address not in s.workers
    assert not (await dask_coded.plugin_stats(c))["corrections"]


def test_a_code_without_enough_redundancy_is_refused_at_graph_build_time():
    coded = dask_coded.encode(np.ones((8, 3)), code=MDSCode(4, 5))
    with pytest.raises(ValueError, match="cannot correct max_errors=1"):
        dask_coded.dot(coded, np.ones(3), max_errors=1)
    with pytest.raises(ValueError, match="cannot correct max_errors=1"):
        dask_coded.dot(np.ones((8, 4)), np.ones((4, 4)), code=dask_coded.codes.MatDotCode(2, 4), max_errors=1)


@pytest.mark.slow
@pytest.mark.parametrize("n_workers", [3, 4, 5])
@pytest.mark.parametrize("kind", ["noise", "nan"])
def test_one_faulty_worker_is_corrected_with_default_settings(client_of, n_workers, kind):
    """Defaults, any cluster size: more members than workers, and a faulty worker spoils all of its own."""
    client = client_of(n_workers)
    dask_coded.register(client)
    data = np.random.default_rng(0).standard_normal((600, 30))
    x = np.random.default_rng(1).standard_normal(30)
    faulty = sorted(client.nthreads())[1]
    client.register_plugin(
        FaultInjector(FaultModel(error_workers=(faulty,), error_kind=kind, tasks="products")), name="faults"
    )
    A = da.from_array(data, chunks=(100, 30))  # 6 chunks: more than any of these clusters has workers
    y = dask_coded.dot(A, x, max_errors=1)
    graph = y.__dask_graph__().values()
    (code,) = {t.args[0].code for t in graph if getattr(t, "func", None) is decode_block}
    assert code.n > n_workers  # several members share each worker
    for _ in range(2):
        np.testing.assert_allclose(y.compute(), data @ x, rtol=1e-10, atol=1e-10 * np.abs(data @ x).max())
    stats = dask_coded.plugin_stats(client)
    assert stats["corrections"] >= 1 and set(stats["corrections_by_worker"]) == {faulty}


@pytest.mark.slow
def test_max_errors_refused_on_a_cluster_too_small_to_outvote(client_of):
    client = client_of(2)
    with pytest.raises(ValueError, match="needs at least 3 workers"):
        dask_coded.dot(da.ones((8, 4), chunks=(2, 4)), np.ones(4), max_errors=1)
    client.close()


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 3, config=CONFIG)
async def test_a_code_the_cluster_cannot_support_is_reported_at_submission(c, s, *workers):
    """Built without knowing the cluster, MDS(4, 6) with max_errors=1 puts 2 members on a worker of 3."""
    await dask_coded.register(c)
    coded = dask_coded.encode(da.ones((8, 4), chunks=(2, 4)), code=MDSCode(4, 6))
    with pytest.warns(dask_coded.DaskCodedWarning, match="cannot correct max_errors=1 faulty workers"):
        result = await c.compute(dask_coded.dot(coded, np.ones(4), max_errors=1))
        await async_poll_for(lambda: s.plugins["dask-coded"]._warned, timeout=5)
    np.testing.assert_allclose(result, np.full(8, 4.0))


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 4, config=CONFIG)
async def test_a_code_the_cluster_cannot_check_by_worker_checks_each_member(c, s, *workers):
    """Hostile review: MDS(16, 18) on 4 workers with max_errors=1 raised DecodingError with no fault.

    Counted by worker (4-5 members each) two parities leave too few checks, so every decode raised;
    each member now counts on its own, as without the plugin. A faulty worker still raises, loudly.
    """
    await dask_coded.register(c)
    a = np.random.default_rng(0).random((800, 40))
    x = np.random.default_rng(1).random(40)
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(50, 40)), code=MDSCode(16, 18)))
    with pytest.warns(dask_coded.DaskCodedWarning, match="Each member is checked on its own"):
        result = await c.compute(dask_coded.dot(coded, x, max_errors=1))
        await async_poll_for(lambda: s.plugins["dask-coded"]._warned, timeout=5)
    np.testing.assert_allclose(result, a @ x, atol=1e-10 * np.abs(a @ x).max())
    model = FaultModel(error_workers=(workers[1].address,), error_kind="noise", tasks="products")
    await c.register_plugin(FaultInjector(model), name="faults")
    with pytest.raises(dask_coded.DecodingError):
        await c.compute(dask_coded.dot(coded, x, max_errors=1))


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 4, config=CONFIG)
async def test_a_two_sided_code_longer_than_the_cluster_is_reported_with_its_remedy(c, s, *workers):
    """MatDot(m=3) with max_errors=1 has more members than the 4 workers: client-side sizing cannot help."""
    await dask_coded.register(c)
    a, b = np.ones((6, 6)), np.ones((6, 4))
    left, right = da.from_array(a, chunks=(6, 2)), da.from_array(b, chunks=(2, 4))
    with pytest.warns(dask_coded.DaskCodedWarning, match="two-sided codes are not sized for the cluster"):
        result = await c.compute(dask_coded.dot(left, right, code="matdot", max_errors=1))
        await async_poll_for(lambda: s.plugins["dask-coded"]._warned, timeout=5)
    np.testing.assert_allclose(result, a @ b)
