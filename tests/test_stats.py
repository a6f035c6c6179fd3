import math

import dask.array as da
import numpy as np
import pytest
from dask.utils import key_split
from hypothesis import given, settings
from hypothesis import strategies as st

import dask_coded
from dask_coded.codes.sizing import slow_workers
from dask_coded.stats import TaskTimes, task_kind

WORKERS = [f"w{i}" for i in range(8)]


def _calls(times, count, duration_of, kind="product"):
    """``count`` calls of one task per worker, the slow ones finishing last, as they would."""
    for call in range(count):
        for worker in sorted(WORKERS, key=lambda w: duration_of(w, call)):
            times.record(kind, worker, duration_of(worker, call))


@pytest.mark.parametrize("factor", [4, 10, 100])
def test_a_slow_machine_shows_its_factor_and_is_flagged_after_one_call(factor):
    """Its task is the last of its kind in each call: left out of the reference, its ratio is not capped."""
    times = TaskTimes()
    _calls(times, 1, lambda w, call: 0.02 * (factor if w == "w0" else 1))
    np.testing.assert_allclose(times.ratios["w0"], factor, rtol=1e-12)
    assert slow_workers(times.ratios) == {"w0"}
    _calls(times, 3, lambda w, call: 0.02 * (factor if w == "w0" else 1))
    np.testing.assert_allclose(times.ratios["w0"], factor, rtol=1e-12)
    assert all(times.ratios[w] == pytest.approx(1.0) for w in WORKERS[1:])


def test_one_task_held_up_once_does_not_make_a_worker_slow():
    times = TaskTimes()
    _calls(times, 5, lambda w, call: 0.02 * (50 if (w, call) == ("w3", 4) else 1))
    assert times.samples["w3"][-1] == pytest.approx(50.0)  # the fit still sees the tail
    assert slow_workers(times.ratios) == set()


def test_a_machine_that_turns_slow_is_flagged_within_a_few_calls():
    times = TaskTimes()
    _calls(times, 10, lambda w, call: 0.02)
    _calls(times, 5, lambda w, call: 0.02 * (10 if w == "w5" else 1))
    assert slow_workers(times.ratios) == {"w5"}


def test_kinds_compare_with_their_own_kind_only():
    """A worker running only long tasks of a kind is not slow next to workers running short ones."""
    times = TaskTimes()
    for _ in range(4):
        for worker in WORKERS[:4]:
            times.record("short", worker, 0.002)
        for worker in WORKERS[4:]:
            times.record("long", worker, 0.2)
    assert slow_workers(times.ratios) == set()
    assert set(times.ratios) == set(WORKERS)


def test_a_kind_one_worker_runs_alone_does_not_hide_that_it_is_slow():
    """The slow worker also computes the operand x every call: compared with itself, those tasks
    gave it ratios of 1, and the median of its ratios, half products and half x, hid its products'."""
    times = TaskTimes()
    for _ in range(6):
        _calls(times, 1, lambda w, call: 0.02 * (10 if w == "w0" else 1))
        times.record("operand", "w0", 0.2)
        times.record("operand", "w0", 0.2)
    assert times.ratios["w0"] == pytest.approx(10.0)
    assert slow_workers(times.ratios) == {"w0"}


def test_tasks_under_a_millisecond_are_not_compared():
    """A 10 µs task that a busy process holds up for 1 ms is noise, not a slow machine."""
    times = TaskTimes()
    _calls(times, 3, lambda w, call: 1e-5 * (100 if w == "w0" else 1), kind="getitem")
    assert times.ratios == {} and times.samples == {}


@pytest.mark.parametrize("duration", [float("nan"), float("inf"), -0.01, 0.0])
def test_durations_that_are_not_positive_and_finite_are_ignored(duration):
    times = TaskTimes()
    _calls(times, 2, lambda w, call: 0.01)
    before = dict(times.ratios)
    for worker in WORKERS:
        times.record("product", worker, duration)
    assert times.ratios == before and all(np.isfinite(r) for r in times.ratios.values())


def test_kinds_are_remembered_up_to_a_bound():
    times = TaskTimes()
    for kind in range(3000):
        times.record(f"kind-{kind}", "w0", 0.01)
    assert len(times._durations_by_kind) <= 1000
    _calls(times, 2, lambda w, call: 0.01)  # a new kind is compared as usual
    assert set(times.ratios) == set(WORKERS)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([1e-4, 9e-4, 1e-3, 0.02])), max_size=60
    )
)
def test_quick_kinds_skip_the_median_and_time_the_same(calls):
    """Counting a kind's long durations lets the quick ones skip the median, with the same ratios."""
    times, naive = TaskTimes(), {}
    for worker, duration in calls:
        kept = naive.setdefault("kind", [])
        others = [d for w, d in kept if w != worker]
        reference = float(np.median(others)) if len(others) >= 3 else 0.0
        before = dict(times.ratios)
        times.record("kind", worker, duration)
        kept[:] = (kept + [(worker, duration)])[-15:]
        assert times._long_by_kind["kind"] == sum(d >= 1e-3 for _, d in kept)
        if reference < 1e-3:
            assert times.ratios == before
        else:
            assert worker in times.ratios


def test_a_kind_is_compared_only_once_it_has_a_reference():
    times = TaskTimes()
    for worker in WORKERS[:3]:
        times.record("product", worker, 0.01)
    assert times.ratios == {} and times.samples == {}
    times.record("product", "w3", 0.03)
    assert times.ratios == {"w3": pytest.approx(3.0)}


def test_forget_drops_a_worker_that_left():
    times = TaskTimes()
    _calls(times, 2, lambda w, call: 0.01)
    ratios, samples = times.ratios, times.samples
    times.forget("w1")
    assert "w1" not in times.ratios and "w1" not in times.samples
    assert times.ratios is ratios and times.samples is samples  # published references stay current


@settings(max_examples=50, deadline=None)
@given(
    durations=st.lists(
        st.tuples(st.sampled_from(WORKERS), st.floats(1e-3, 10.0, allow_nan=False)), min_size=1, max_size=60
    ),
    scale=st.floats(1.0, 1e3),
)
def test_ratios_do_not_depend_on_the_unit_of_time(durations, scale):
    """Property: a cluster that runs every task ``scale`` times longer has the same ratios.

    (Above the millisecond under which kinds are not compared, on both clocks.)
    """
    times, scaled = TaskTimes(), TaskTimes()
    for worker, duration in durations:
        times.record("product", worker, duration)
        scaled.record("product", worker, duration * scale)
    assert times.ratios.keys() == scaled.ratios.keys()
    for worker, ratio in times.ratios.items():
        np.testing.assert_allclose(scaled.ratios[worker], ratio, rtol=1e-9)
        assert ratio > 0


def test_an_encodings_copies_and_parities_are_different_kinds():
    """Data blocks that moved are copied (a few ms), parities mix k blocks: one prefix, different work.

    Compared with each other, the workers computing parities would look slow on a quiet cluster.
    """
    coded = dask_coded.encode(da.ones((400, 50), chunks=(100, 50)), code=dask_coded.MDSCode(4, 6))
    graph = coded.__dask_graph__()
    kinds = {key[1]: task_kind(key_split(key), graph[key]) for key in graph if key[0] == coded.name}
    assert len({kinds[i] for i in range(4)}) == 1 and len({kinds[i] for i in (4, 5)}) == 1
    assert kinds[0] != kinds[4] and kinds[0].startswith("coded-encode-rows")
    # One call encoding 4 column blocks: a copy of each data chunk (5 ms), then each parity chunk (17 ms).
    data = [("a", 0, 0.005), ("b", 1, 0.005), ("c", 2, 0.005), ("d", 3, 0.005)]
    records = [*data, ("e", 4, 0.017), ("f", 5, 0.017)] * 4

    def ratios(kind_of):
        times = TaskTimes()
        for worker, index, duration in records:
            times.record(kind_of(index), worker, duration)
        return times.ratios

    assert slow_workers(ratios(lambda index: "coded-encode-rows-mds")) == {"e", "f"}  # one kind: wrong
    assert not slow_workers(ratios(kinds.get))


@pytest.mark.parametrize("chance", [1 / 8, 1 / 4, 1 / 2])
def test_a_worker_late_in_every_group_is_slow_once_chance_is_100_to_1_against(chance):
    """A slow machine whose members are always dropped finishes nothing to be timed."""
    times = TaskTimes()
    _calls(times, 3, lambda w, call: 0.02)
    needed = math.ceil(math.log(100) / math.log(1 / chance))
    for _ in range(needed - 1):
        times.record_late("w2", chance)
    assert slow_workers(times.ratios) == set()
    times.record_late("w2", chance)
    assert times.ratios["w2"] == math.inf and slow_workers(times.ratios) == {"w2"}
    times.record_on_time("w2")  # a member of it finished: its lateness was chance after all
    assert times.ratios["w2"] == pytest.approx(1.0) and slow_workers(times.ratios) == set()


def test_lateness_that_chance_explains_never_makes_a_worker_slow():
    """Late in half the groups (k = W/2), with a member on time in between: no evidence builds up."""
    times = TaskTimes()
    for group in range(200):
        if group % 7 == 6:
            times.record_on_time("w1")
        else:
            times.record_late("w1", 1 / 2)  # 6 late in a row: 64 to 1, short of 100
    assert "w1" not in times.ratios


def test_a_timed_task_replaces_the_evidence_of_lateness():
    times = TaskTimes()
    _calls(times, 3, lambda w, call: 0.02)
    for _ in range(3):
        times.record_late("w0", 1 / 8)
    assert times.ratios["w0"] == math.inf
    times.record("product", "w0", 0.02)
    assert times.ratios["w0"] == pytest.approx(1.0)
    times.record_late("w0", 1 / 8)  # the count starts over
    assert times.ratios["w0"] == pytest.approx(1.0)
    times.forget("w0")
    for _ in range(2):
        times.record_late("w0", 1 / 8)
    assert "w0" not in times.ratios
