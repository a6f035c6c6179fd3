"""Backup tasks (speculative execution) on a real cluster, for graphs that have nothing coded."""

import dask.array as da
import numpy as np
import pytest
from distributed import Client
from distributed.utils_test import BlockedGatherDep, async_poll_for, captured_logger, gen_cluster

import dask_coded
from dask_coded import _compat
from dask_coded.backup import BACKUP_PREFIX
from dask_coded.faults import FaultInjector, FaultModel
from dask_coded.plugin import NAME, CodedSchedulerPlugin
from dask_coded.policy import BACKUP_PRESETS, BackupRule, should_launch_backup

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


@gen_cluster(client=True, nthreads=FOUR_WORKERS, config=VALIDATE, timeout=60)
async def test_no_backups_when_nothing_is_late(c, s, *workers):
    await c.register_plugin(
        CodedSchedulerPlugin(backup=BackupRule(slow_factor=1000.0, min_tasks=2)), name=NAME
    )
    a = np.random.default_rng(0).standard_normal((800, 40))
    result = await c.compute(da.dot(da.from_array(a, chunks=(100, 40)), np.ones(40)))
    np.testing.assert_allclose(result, a.sum(axis=1), rtol=1e-12)
    assert (await dask_coded.plugin_stats(c))["backups_launched"] == 0


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
