"""Backup tasks (speculative execution) on a real cluster, for graphs that have nothing coded."""

import asyncio
import time

import dask
import dask.array as da
import numpy as np
import pytest
from dask._task_spec import DataNode, Dict, List, Tuple
from distributed import Client, Event, Worker, wait
from distributed.utils_test import BlockedGatherDep, async_poll_for, captured_logger, gen_cluster
from distributed.worker import thread_state

import dask_coded
from dask_coded import MDSCode, _compat, keys
from dask_coded._compat import Task
from dask_coded.backup import BACKUP_PREFIX
from dask_coded.blocks import CodedTask
from dask_coded.faults import FaultInjector, FaultModel
from dask_coded.plugin import _BACKUP_CALLBACKS, NAME, CodedSchedulerPlugin
from dask_coded.policy import BACKUP_PRESETS, BackupRule, should_launch_backup
from dask_coded.testing import assert_eq

VALIDATE = {"distributed.scheduler.validate": True}
FOUR_WORKERS = [("127.0.0.1", 1)] * 4


@pytest.mark.parametrize("preset", sorted(BACKUP_PRESETS))
def test_presets_wait_for_their_completed_fraction(preset):
    rule = BACKUP_PRESETS[preset]
    done = int(np.ceil(rule.min_completed_fraction * 20))
    assert should_launch_backup(10.0, [0.1] * done, 20, rule)
    assert not should_launch_backup(10.0, [0.1] * (done - 1), 20, rule)


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="slow_factor"):
        BackupRule(slow_factor=0.5)
    with pytest.raises(ValueError, match="unknown backup rule 'hadoop'"):
        CodedSchedulerPlugin(backup="hadoop")


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"rule": "spark", "slow-factor": "3"}, "coded.backup.slow-factor must be a number"),
        ({"rule": "cubed", "interval": "1s"}, "coded.backup.interval must be a number"),
        ({"rule": "cubed", "min-tasks": True}, "coded.backup.min-tasks must be a number"),
        ({"rule": "spark", "typo": 1}, "unknown option coded.backup.typo"),
        (3, "coded.backup must be 'off', a preset name or a mapping"),
        (None, "coded.backup must be 'off', a preset name or a mapping"),
    ],
)
def test_bad_backup_settings_name_the_option(setting, match):
    """A review found raw Python errors ('<' not supported between 'str' and 'int') instead."""
    with dask.config.set({"coded.backup": setting}):
        with pytest.raises(ValueError, match=match):
            CodedSchedulerPlugin()


def test_an_unquoted_off_in_yaml_is_off():
    """YAML reads `rule: off` (unquoted) as False: the user meant off."""
    for setting in (False, {"rule": False}):
        with dask.config.set({"coded.backup": setting}):
            assert CodedSchedulerPlugin().backup_rule is None


async def _slow_plain_product(c, s, workers, factor=200):
    """A plain array, one block per worker, and a slow machine holding one of its blocks."""
    a = np.random.default_rng(0).standard_normal((800, 40))
    plain = await c.persist(da.from_array(a, chunks=(50, 40)))  # 16 blocks: cubed judges >= 10
    slow = min(ws.address for ws in s.tasks[plain.__dask_keys__()[0][0]].who_has)
    model = FaultModel.slow_machine(workers=(slow,), factor=factor, latency=0.01)
    await c.register_plugin(FaultInjector(model), name="faults")
    return a, plain, slow


@gen_cluster(client=True, nthreads=FOUR_WORKERS, config=VALIDATE, timeout=60)
async def test_a_backup_wins_against_a_slow_machine(c, s, *workers):
    await c.register_plugin(CodedSchedulerPlugin(backup="cubed"), name=NAME)
    a, plain, slow = await _slow_plain_product(c, s, workers)
    x = np.ones(40)
    for _ in range(2):  # the second round resubmits keys the first one aliased
        result = await c.compute(da.dot(plain, x))
        np.testing.assert_allclose(result, a @ x, rtol=1e-12)
    stats = await dask_coded.plugin_stats(c)
    assert stats["backups_won"] >= 1, stats
    await async_poll_for(lambda: not [k for k in s.tasks if str(k[0]).startswith(BACKUP_PREFIX)], timeout=10)
    stats = await dask_coded.plugin_stats(c)
    outcomes = sum(stats.get(f"backups_{outcome}", 0) for outcome in ("won", "cancelled", "failed"))
    assert stats["backups_launched"] == outcomes, stats


@gen_cluster(client=True, nthreads=FOUR_WORKERS, config=VALIDATE, timeout=60)
async def test_no_backups_when_nothing_is_late(c, s, *workers):
    await c.register_plugin(
        CodedSchedulerPlugin(backup=BackupRule(slow_factor=1000.0, min_tasks=2)), name=NAME
    )
    a = np.random.default_rng(0).standard_normal((800, 40))
    result = await c.compute(da.dot(da.from_array(a, chunks=(100, 40)), np.ones(40)))
    np.testing.assert_allclose(result, a.sum(axis=1), rtol=1e-12)
    assert (await dask_coded.plugin_stats(c))["backups_launched"] == 0


def _nap(i):
    time.sleep(0.02)
    return i


@gen_cluster(
    client=True,
    nthreads=[("127.0.0.1", 1)] * 2,
    config={**VALIDATE, "distributed.scheduler.worker-saturation": float("inf")},
    timeout=60,
)
async def test_tasks_waiting_in_a_workers_queue_are_not_late(c, s, a, b):
    """Judged from when they were sent, the last of 100 tasks queued on a worker would wait 2 s.

    Each runs 20 ms: only a scheduler stalled for a second could take one for late.
    """
    rule = BackupRule(min_tasks=10, min_completed_fraction=0.5, slow_factor=10.0, min_runtime=1.0)
    await c.register_plugin(CodedSchedulerPlugin(backup=rule), name=NAME)
    futures = c.map(_nap, range(200))
    await async_poll_for(lambda: len(a.state.ready) + len(b.state.ready) > 50, timeout=10)  # queued
    assert await c.gather(futures) == list(range(200))
    assert s.plugins[NAME]._backups.counters["backups_launched"] == 0


def _held_unless_a_copy(i, event, fails=False):
    """Task 0 waits for ``event`` unless it runs as a copy; with ``fails`` it then raises (copies at once)."""
    if i == 0:
        if not str(thread_state.key).startswith(BACKUP_PREFIX):
            Event(event).wait()
        if fails:
            raise ValueError("bad input 0")
    return i


@pytest.mark.parametrize("preset", sorted(BACKUP_PRESETS))
@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 3, config=VALIDATE, timeout=90)
async def test_a_winning_copy_of_a_root_task_is_handed_on_where_it_ran(c, s, *workers, preset):
    """A review found a won race saving no time for c.map: the alias of a root-ish task went back to
    the worker still running the original, which ran the key once more only after that one ended."""
    await c.register_plugin(CodedSchedulerPlugin(backup=preset), name=NAME)
    futures = c.map(_held_unless_a_copy, range(12), event="root-held", pure=False)
    # Task 0's original is held until the end: the results come from its copy, or never.
    assert await asyncio.wait_for(c.gather(futures), 60) == list(range(12))
    assert s.plugins[NAME]._backups.counters["backups_won"] >= 1
    await Event("root-held").set()
    await async_poll_for(lambda: not any(w.state.executing for w in workers), timeout=30)


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 3, config=VALIDATE, timeout=90)
async def test_a_copy_that_raises_is_not_made_again(c, s, *workers):
    """A review found 43 copies of a late task whose copies raised, one every check."""
    await c.register_plugin(CodedSchedulerPlugin(backup="cubed"), name=NAME)
    futures = c.map(_held_unless_a_copy, range(12), event="fails-held", fails=True, pure=False)
    assert await c.gather(futures[1:]) == list(range(1, 12))
    backups = s.plugins[NAME]._backups
    await async_poll_for(lambda: backups.counters["backups_failed"] == 1, timeout=30)
    for _ in range(5):  # the checks that made copy after copy, while the original still runs
        backups.check()
    assert backups.counters["backups_launched"] == 1
    await Event("fails-held").set()
    with pytest.raises(ValueError, match="bad input 0"):  # the original's error, as without backups
        await futures[0]


def _waits_for_the_producer(i):
    if i == 0:
        Event("produced").wait()
    return i


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 2, config=VALIDATE, timeout=90)
async def test_a_copy_never_takes_the_thread_a_waiting_task_needs(c, s, a, b):
    """A review found c.map never finishing: a copy of a task that blocks took the only thread the
    task queued behind it could be stolen to. Copies take spare threads only."""
    await c.register_plugin(CodedSchedulerPlugin(backup="cubed"), name=NAME)
    futures = c.map(_waits_for_the_producer, range(20), pure=False)
    assert await asyncio.wait_for(c.gather(futures[1:]), 60) == list(range(1, 20))
    await Event("produced").set()
    assert await c.gather(futures) == list(range(20))


def _total(small, large):
    return small.sum() + large.sum()


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], config=VALIDATE, timeout=60)
async def test_a_task_fetching_its_inputs_is_not_late(c, s, b):
    """A task starts once its worker holds its inputs: a long fetch is not a late task.

    A copy would fetch the same inputs; decodes reading products from other workers of a busy
    machine were copied for fetches longer than the decode rule's 20 ms.
    """
    rule = BackupRule(min_tasks=1, min_completed_fraction=0.0, min_runtime=0.05, interval=0.01)
    await c.register_plugin(CodedSchedulerPlugin(backup=rule), name=NAME)
    async with BlockedGatherDep(s.address, nthreads=1) as x:
        small = c.submit(np.ones, 10, workers=[b.address], key="small")
        large = c.submit(np.ones, 100_000, workers=[x.address], key="large")
        await wait([small, large])
        total = c.submit(_total, small, large, key="total")  # unrestricted: goes to the larger input
        await x.in_gather_dep.wait()
        assert s.tasks["total"].processing_on is s.workers[x.address]
        watch, since = s.plugins[NAME]._backups._others, time.monotonic()
        await async_poll_for(lambda: watch.checked > since + 5 * rule.min_runtime, timeout=10)
        assert s.plugins[NAME]._backups.counters["backups_launched"] == 0
        x.block_gather_dep.set()
        assert await total == 100_010.0


@pytest.mark.slow
@gen_cluster(client=True, nthreads=FOUR_WORKERS, config=VALIDATE, timeout=120)
async def test_backups_survive_resubmission_from_two_clients(c, s, *workers):
    await c.register_plugin(CodedSchedulerPlugin(backup="cubed"), name=NAME)
    a, plain, slow = await _slow_plain_product(c, s, workers, factor=50)
    async with Client(s.address, asynchronous=True) as c2:
        with captured_logger("distributed.scheduler") as log:
            for round_ in range(10):
                y = da.dot(plain, np.full(40, float(round_ % 2 + 1)))
                f1 = c.compute(y)
                if round_ % 2:
                    await async_poll_for(
                        lambda: s.plugins[NAME]._backups.counters["backups_launched"], timeout=10
                    )
                f2 = c2.compute(y)
                for f in (f1, f2):
                    np.testing.assert_allclose(await f, a @ np.full(40, float(round_ % 2 + 1)), rtol=1e-12)
                del f1, f2
        assert "Detected different `run_spec`" not in log.getvalue()


def _times_ten(i):
    return i * 10


@pytest.mark.parametrize("preset", sorted(BACKUP_PRESETS))
@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 2, config=VALIDATE, timeout=60)
async def test_results_of_won_races_are_recomputed_after_their_workers_are_gone(c, s, slow, fast, preset):
    """A winning copy was kept off the original's worker; should its result be lost, it runs anywhere."""
    await c.register_plugin(CodedSchedulerPlugin(backup=preset), name=NAME)
    model = FaultModel.slow_machine(workers=(slow.address,), factor=40, latency=0.01)
    await c.register_plugin(FaultInjector(model), name="faults")
    futures = c.map(_times_ten, range(20), key=[f"times-ten-{i}" for i in range(20)])
    assert await c.gather(futures) == [i * 10 for i in range(20)]
    assert s.plugins[NAME]._backups.counters["backups_won"] >= 1  # aliases of copies run on `fast`
    await fast.close()
    async with Worker(s.address, nthreads=1):
        assert await c.gather(futures) == [i * 10 for i in range(20)]


@gen_cluster(client=True, nthreads=FOUR_WORKERS, config=VALIDATE, timeout=60)
async def test_decodes_of_won_races_are_recomputed_after_their_workers_are_gone(c, s, *workers):
    a = np.random.default_rng(7).standard_normal((400, 30))
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(200, 30)), code=MDSCode(2, 4)))
    await c.register_plugin(CodedSchedulerPlugin(), name=NAME)
    await c.register_plugin(_StuckDecodes(), name="faults")
    x = np.arange(30.0)
    y = c.persist(dask_coded.dot(coded, x))
    assert_eq(await c.compute(y), a @ x)
    assert s.plugins[NAME]._backups.counters["decode_backups_won"] == 2
    await c.unregister_worker_plugin("faults")
    copies = [ts for ts in s.tasks.values() if keys.key_name(ts.key).startswith(BACKUP_PREFIX)]
    holders = {ws.address for key in y.__dask_keys__() for ws in s.tasks[key].who_has}
    gone = set().union(holders, *(ts.worker_restrictions for ts in copies))
    for worker in workers:
        if worker.address in gone:
            await worker.close()
    async with Worker(s.address, nthreads=1), Worker(s.address, nthreads=1):
        assert_eq(await c.compute(y), a @ x)


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 2, config=VALIDATE, timeout=60)
async def test_keys_named_like_copies_are_left_alone(c, s, slow, fast):
    """A copy's key is ``coded-backup-<key>``: should a user's key have that name, no copy is made."""
    await c.register_plugin(CodedSchedulerPlugin(backup="spark"), name=NAME)
    mine = c.map(_times_ten, range(1000, 1020), key=[f"{BACKUP_PREFIX}t-{i}" for i in range(20)])
    assert await c.gather(mine) == [i * 10 for i in range(1000, 1020)]
    model = FaultModel.slow_machine(workers=(slow.address,), factor=40, latency=0.01)
    await c.register_plugin(FaultInjector(model), name="faults")
    futures = c.map(_times_ten, range(20), key=[f"t-{i}" for i in range(20)])
    assert await c.gather(futures) == [i * 10 for i in range(20)]
    assert await c.gather(mine) == [i * 10 for i in range(1000, 1020)]
    assert s.plugins[NAME]._backups.counters["backups_launched"] == 0


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)] * 2, config=VALIDATE, timeout=60)
async def test_registering_again_keeps_the_rewrites_of_won_races(c, s, slow, fast):
    """The scheduler still holds the aliases: resubmitted, their keys must not change run_spec."""
    await dask_coded.register(c, backup="spark")
    model = FaultModel.slow_machine(workers=(slow.address,), factor=40, latency=0.01)
    await c.register_plugin(FaultInjector(model), name="faults")
    keys_ = [f"t-{i}" for i in range(20)]
    futures = c.map(_times_ten, range(20), key=keys_)
    assert await c.gather(futures) == [i * 10 for i in range(20)]
    assert s.plugins[NAME]._backups.counters["backups_won"] >= 1
    await dask_coded.register(c, backup="spark")
    with captured_logger("distributed.scheduler") as log:
        again = c.map(_times_ten, range(20), key=keys_)
        assert await c.gather(again) == [i * 10 for i in range(20)]
    assert "Detected different `run_spec`" not in log.getvalue()


def test_which_tasks_are_copied_and_what_a_copy_computes():
    """``dask.delayed([...])`` and friends are tasks of their own classes, which take no key."""
    inner = Task("inner", abs, -2)
    for container in (List(inner, 3), Tuple(inner, 3), Dict({"a": inner, "b": 3}), Task("t", max, 2, 3)):
        copy = _compat.rekeyed(container, "copy")
        assert copy.key == "copy" and copy() == container() and copy.dependencies == container.dependencies
    assert _compat.rekeyed(DataNode("d", 3), "copy") is None  # data, not work: nothing to copy
    coded = CodedTask("decode", max, 2, 3)
    assert type(_compat.rekeyed(coded, "copy")) is CodedTask

    class Barrier(Task):  # like distributed's P2PBarrierTask: more than its function
        __slots__ = ("spec",)

    assert _compat.rekeyed(Barrier("barrier", max, 2, 3), "copy") is None


@gen_cluster(client=True, nthreads=FOUR_WORKERS, config=VALIDATE, timeout=60)
async def test_late_container_tasks_are_backed_up(c, s, *workers):
    await c.register_plugin(CodedSchedulerPlugin(backup="cubed"), name=NAME)
    slow = (workers[0].address,)
    model = FaultModel(delay_shift=0.02, slow_workers=slow, slow_factor=100, prefixes=("list",))
    await c.register_plugin(FaultInjector(model), name="faults")
    lists = [dask.delayed([dask.delayed(abs)(-i), i]) for i in range(40)]
    with captured_logger("tornado.application") as log:  # where an error in a periodic check goes
        assert await c.gather(c.compute(lists)) == [[i, i] for i in range(40)]
    assert not log.getvalue()
    assert s.plugins[NAME]._backups.counters["backups_won"] >= 1


@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], config=VALIDATE)
async def test_a_lost_race_leaves_no_fetch_behind_on_the_losing_worker(c, s, b):
    """The original of a won race may still be fetching a dependency; its worker stops needing it."""
    async with BlockedGatherDep(s.address, nthreads=1) as x:
        d = c.submit(np.ones, 10, workers=[b.address], key="d")
        await d
        original = c.submit(np.sum, d, workers=[x.address], key="original")
        await x.in_gather_dep.wait()
        loser, fetching = s.workers[x.address], s.tasks["d"]
        assert s.tasks["original"].processing_on is loser and fetching in loser.needs_what
        winner = c.submit(np.sum, d, workers=[b.address], key="winner")
        await winner
        # What the backup manager does when the backup (here "winner") finishes first; a task it
        # backs up has no worker restrictions.
        s.tasks["original"].worker_restrictions = None
        orphans = _compat.make_alias(s.tasks["original"], s.tasks["winner"])
        s.transitions({"original": "released"}, stimulus_id="test-won")
        _compat.release_unneeded(s, orphans, "test-orphans")
        assert not loser.processing and fetching not in loser.needs_what and loser.occupancy == 0
        assert await original == 10.0
        x.block_gather_dep.set()


class _StuckDecodes(FaultInjector):
    """Every decode task waits ten minutes; not its copy (``coded-backup-...``), nor the alias to it.

    The alias that hands a winning copy's result on under the decode's key does no work: on the
    machine that just ran the copy, it takes no time.
    """

    def __init__(self):
        super().__init__(FaultModel(delay_shift=600.0, prefixes=(keys.DECODE,)))

    def _affects(self, key, spec):
        return isinstance(spec, Task) and super()._affects(key, spec)


@pytest.mark.parametrize("backup", ["off", "spark"])
@gen_cluster(client=True, nthreads=FOUR_WORKERS, config=VALIDATE, timeout=60)
async def test_a_stuck_decode_is_copied_and_the_copy_wins(c, s, *workers, backup):
    """A decode on a worker gone slow would hold the whole call; a copy on an idle worker finishes it."""
    await c.register_plugin(CodedSchedulerPlugin(backup=backup), name=NAME)
    a = np.random.default_rng(1).standard_normal((400, 30))
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(200, 30)), code=MDSCode(2, 4)))
    await c.register_plugin(_StuckDecodes(), name="faults")
    x = np.arange(30.0)
    y = dask_coded.dot(coded, x)
    with captured_logger("distributed.scheduler") as log:
        first = c.compute(y)
        assert_eq(await first, a @ x)
        again = c.compute(y)  # the aliased keys resubmitted while held
        assert_eq(await again, a @ x)
    assert "Detected different `run_spec`" not in log.getvalue()
    stats = await dask_coded.plugin_stats(c)
    assert stats["decode_backups_won"] == 2, stats  # one per output block, none for anything else
    assert stats.get("backups_launched", 0) == 0, stats
    del first, again
    # The stuck originals were cancelled where they ran, and nothing of the races is left behind.
    await async_poll_for(lambda: all(not ws.processing for ws in s.workers.values()), timeout=10)
    await async_poll_for(lambda: not [k for k in s.tasks if str(k[0]).startswith(BACKUP_PREFIX)], timeout=10)


@pytest.mark.slow
@gen_cluster(client=True, nthreads=FOUR_WORKERS, config=VALIDATE, timeout=120)
async def test_stuck_decodes_survive_resubmission_from_two_clients(c, s, *workers):
    """Decodes racing their copies, the same graphs from two clients.

    Three decodes on four workers: one stays idle for the copies, which run only on idle workers
    (with every worker stuck, nothing could help).
    """
    await c.register_plugin(CodedSchedulerPlugin(), name=NAME)
    a = np.random.default_rng(4).standard_normal((600, 30))
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(200, 30)), code=MDSCode(3, 4)))
    await c.register_plugin(_StuckDecodes(), name="faults")
    async with Client(s.address, asynchronous=True) as c2:
        with captured_logger("distributed.scheduler") as log:
            for round_ in range(6):
                x = np.full(30, float(round_ % 2 + 1))
                y = dask_coded.dot(coded, x)
                futures = [c.compute(y), c2.compute(y)]
                for future in futures:
                    assert_eq(await future, a @ x)
                del futures
        assert "Detected different `run_spec`" not in log.getvalue()
    assert (await dask_coded.plugin_stats(c))["decode_backups_won"] >= 3


@gen_cluster(client=True, nthreads=FOUR_WORKERS, config=VALIDATE, timeout=60)
async def test_decodes_that_locate_errors_are_not_copied(c, s, *workers):
    """A copy would count the wrong products it locates a second time."""
    await c.register_plugin(CodedSchedulerPlugin(), name=NAME)
    a = np.random.default_rng(2).standard_normal((400, 30))
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(200, 30)), code=MDSCode(2, 4)))
    model = FaultModel(delay_shift=0.5, prefixes=(keys.DECODE,))
    await c.register_plugin(FaultInjector(model), name="faults")
    result = await c.compute(dask_coded.dot(coded, np.ones(30), max_errors=1))
    np.testing.assert_allclose(result, a.sum(axis=1), rtol=1e-10, atol=1e-12)  # solved through parities
    assert (await dask_coded.plugin_stats(c))["decode_backups_launched"] == 0


class _SlowDecodes(_StuckDecodes):
    """Every decode, and every copy of one, waits as long (a tenth of a second unless told)."""

    def __init__(self, delay=0.1):
        FaultInjector.__init__(self, FaultModel(delay_shift=delay, prefixes=(keys.DECODE, BACKUP_PREFIX)))


@gen_cluster(client=True, nthreads=FOUR_WORKERS, config=VALIDATE, timeout=60)
async def test_decodes_are_not_copied_where_they_usually_take_long(c, s, a_worker, *workers):
    """Where decodes usually wait, the cluster is busy: a copy would wait as long (and its alias)."""
    await c.register_plugin(CodedSchedulerPlugin(), name=NAME)
    a = np.random.default_rng(5).standard_normal((400, 30))
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(200, 30)), code=MDSCode(2, 4)))
    await c.register_plugin(_SlowDecodes(delay=0.05), name="faults")
    # Placed on one worker, the first decodes have nowhere to be copied to: their times are recorded.
    placed = await c.compute(dask_coded.dot(coded, np.ones(30)), workers=[a_worker.address])
    assert_eq(placed, a.sum(axis=1))
    # Late by any measure (20 times the usual), and still not copied.
    await c.register_plugin(_SlowDecodes(delay=1.0), name="faults")
    x = np.arange(30.0)
    assert_eq(await c.compute(dask_coded.dot(coded, x)), a @ x)
    assert (await dask_coded.plugin_stats(c))["decode_backups_launched"] == 0


@gen_cluster(client=True, nthreads=FOUR_WORKERS, config={**VALIDATE, "coded.decode-backup-after": 0.04})
async def test_each_backup_rule_is_checked_at_its_own_interval(c, s, *workers):
    await c.register_plugin(CodedSchedulerPlugin(backup="spark"), name=NAME)
    intervals = {name: s.periodic_callbacks[name].callback_time for name in _BACKUP_CALLBACKS}
    assert intervals == {"dask-coded-backup": 100, "dask-coded-decode-backup": 20}
    # Replaced, a plugin stops its checks, and leaves its successor's alone.
    first = s.plugins[NAME]
    await dask_coded.register(c)
    second = s.plugins[NAME]
    await async_poll_for(lambda: not first._callbacks, timeout=10)
    assert {name: s.periodic_callbacks[name] for name in _BACKUP_CALLBACKS[1:]} == second._callbacks
    await c.unregister_scheduler_plugin(NAME)
    await async_poll_for(lambda: not set(_BACKUP_CALLBACKS) & set(s.periodic_callbacks), timeout=10)


@gen_cluster(client=True, nthreads=FOUR_WORKERS, config=VALIDATE, timeout=60)
async def test_an_unregistered_plugin_releases_the_copies_still_racing(c, s, *workers):
    await c.register_plugin(CodedSchedulerPlugin(), name=NAME)
    a = np.random.default_rng(6).standard_normal((400, 30))
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(200, 30)), code=MDSCode(2, 4)))
    await c.register_plugin(_SlowDecodes(delay=2.0), name="faults")
    backups = s.plugins[NAME]._backups
    y = c.compute(dask_coded.dot(coded, np.ones(30)))
    await async_poll_for(lambda: backups.counters["decode_backups_launched"] == 2, timeout=10)
    await c.unregister_scheduler_plugin(NAME)
    assert_eq(await y, a.sum(axis=1))  # from the originals
    assert backups.counters["decode_backups_won"] == 0
    await async_poll_for(lambda: not [k for k in s.tasks if str(k[0]).startswith(BACKUP_PREFIX)], timeout=10)


@gen_cluster(client=True, nthreads=FOUR_WORKERS, config={**VALIDATE, "coded.decode-backup-after": None})
async def test_decode_backups_can_be_turned_off(c, s, *workers):
    await c.register_plugin(CodedSchedulerPlugin(), name=NAME)
    a = np.random.default_rng(3).standard_normal((400, 30))
    coded = await c.persist(dask_coded.encode(da.from_array(a, chunks=(200, 30)), code=MDSCode(2, 4)))
    assert_eq(await c.compute(dask_coded.dot(coded, np.ones(30))), a.sum(axis=1))
    stats = await dask_coded.plugin_stats(c)
    assert "decode_backups_launched" not in stats and s.plugins[NAME]._backups is None
    assert not set(_BACKUP_CALLBACKS) & set(s.periodic_callbacks)


@pytest.mark.parametrize("after", [-0.1, "soon", True, [0.02]])
def test_bad_decode_backup_settings_are_refused(after):
    with dask.config.set({"coded.decode-backup-after": after}):
        with pytest.raises(ValueError, match="coded.decode-backup-after"):
            CodedSchedulerPlugin()
