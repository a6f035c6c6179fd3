import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_coded import GroupedMDSCode
from dask_coded.codes import MatDotCode, MDSCode, PolynomialCode, ReplicationCode
from dask_coded.keys import ENCODE_ROWS, ENCODE_TWO_SIDED, grouped_name, replicated_name
from dask_coded.policy import (
    DecodePlan,
    coded_block_index,
    decode_workers,
    dropped_members,
    late_members,
    member_positions,
    member_workers,
    plan_decode,
    spread_position,
    spread_worker,
    time_saved,
)


@pytest.mark.parametrize("output", range(4))
def test_systematic_output_needs_only_its_own_block(output):
    code = MDSCode(4, 6)
    assert plan_decode(code, output, [output]) == DecodePlan((output,), (output,))
    others = [i for i in range(4) if i != output]
    assert plan_decode(code, output, others + [4]).recovery_set == tuple(sorted(others + [4]))
    assert plan_decode(code, output, others) is None


def test_missing_output_reads_only_blocks_with_weight():
    code = MDSCode(4, 6)
    plan = plan_decode(code, 0, [1, 2, 3, 5])
    assert plan.recovery_set == (1, 2, 3, 5)
    assert set(plan.needed) <= {1, 2, 3, 5} and 5 in plan.needed
    # The weights travel with the decode task, so the worker does not solve for them again.
    assert plan.weights is not None and plan.weights.used == plan.needed
    rows = code.generator[list(plan.needed)]
    np.testing.assert_allclose(plan.weights.weights @ rows, code.targets[[0]], rtol=0, atol=1e-12)
    assert plan_decode(code, 0, [0, 4]).weights is None  # a copy needs none


def test_replication_takes_any_copy():
    code = ReplicationCode(3, 2)
    assert plan_decode(code, 1, [4]) == DecodePlan((4,), (4,))
    assert plan_decode(code, 1, [0, 2, 3, 5]) is None


@pytest.mark.parametrize("code", [PolynomialCode(2, 2, 6), MatDotCode(2, 5)], ids=repr)
def test_non_systematic_codes_wait_for_the_threshold(code):
    threshold = code.recovery_threshold
    assert plan_decode(code, 0, range(threshold - 1)) is None
    plan = plan_decode(code, 0, range(threshold))
    assert plan is not None and plan.recovery_set == tuple(range(threshold))


@pytest.mark.parametrize("max_errors", [0, 1])
def test_uncoded_products_wait_for_each_term_not_for_the_threshold(max_errors):
    """Products of operands holding NaN are one term each (member i: term i % 4), not coded blocks."""
    code = PolynomialCode(2, 2, 6)
    everything_but_term_3 = [0, 1, 2, 4, 5]  # past the threshold, yet no A_1 @ B_1
    assert plan_decode(code, 3, everything_but_term_3, max_errors, uncoded=everything_but_term_3) is None
    assert plan_decode(code, 3, [3], max_errors, uncoded=[3]) == DecodePlan((3,), (3,))
    assert plan_decode(code, 1, [2, 5], max_errors, uncoded=[2, 5]) == DecodePlan((5,), (5,))


def test_error_correction_waits_for_twice_the_redundancy():
    code = MDSCode(4, 8)
    assert plan_decode(code, 0, [0, 1, 2, 3, 4, 5], max_errors=2) is None
    plan = plan_decode(code, 0, range(8), max_errors=2)
    assert plan == DecodePlan(tuple(range(8)), None)


def test_coded_block_index():
    assert coded_block_index(("coded-encode-rows-x", 3, 1)) == 3
    assert coded_block_index(("coded-encode-cols-x", 1, 3)) == 3
    assert coded_block_index(("coded-encode-rows-x", 2)) == 2
    assert coded_block_index(("coded-product-x", 2, 0)) is None
    assert coded_block_index("coded-encode-rows-x") is None


def test_spread_is_round_robin_over_sorted_workers():
    workers = ["tcp://c", "tcp://a", "tcp://b"]
    assert [spread_worker(i, workers) for i in range(5)] == [
        "tcp://a",
        "tcp://b",
        "tcp://c",
        "tcp://a",
        "tcp://b",
    ]
    assert spread_worker(0, []) is None


def test_members_not_computed_yet_take_the_round_robin():
    workers = ["c", "a", "b", "d"]
    assert member_workers([2, 3, 4], [set()] * 3, workers) == ["c", "d", "a"]
    assert member_workers(range(6), [set()] * 6, workers) == ["a", "b", "c", "d", "a", "b"]  # more than W
    assert member_workers([0], [set()], []) == []


def test_persisted_members_stay_beside_their_blocks_unless_another_member_is_there():
    workers = ["a", "b", "c", "d"]
    # Blocks persisted on a cluster that has changed since: each stays where it is.
    assert member_workers([0, 1, 2], [{"b"}, {"c"}, {"d"}], workers) == ["b", "c", "d"]
    # Two blocks on "b": the one whose round-robin worker it is stays; the other moves to a free one.
    assert member_workers([0, 1, 2], [{"b"}, {"b"}, set()], workers) == ["a", "b", "c"]
    # A replicated block prefers its round-robin worker among its holders.
    assert member_workers([0, 1], [{"a", "c"}, {"c"}], workers) == ["a", "c"]


@settings(max_examples=200, deadline=None)
@given(
    workers=st.integers(1, 8),
    first=st.integers(0, 20),
    holders=st.lists(st.sets(st.integers(0, 7), max_size=3), min_size=1, max_size=10),
)
def test_a_group_never_shares_a_worker_it_could_avoid(workers, first, holders):
    names = [f"w{i}" for i in range(workers)]
    held = [{f"w{i}" for i in h if i < workers} for h in holders]
    homes = member_workers([first + i for i in range(len(held))], held, names)
    assert len(homes) == len(held) and set(homes) <= set(names)
    assert len(set(homes)) == min(len(held), workers)
    for index, (home, own) in enumerate(zip(homes, held)):
        # A block on its round-robin worker never moves.
        round_robin = spread_worker(first + index, names)
        if round_robin in own:
            assert home == round_robin


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 6, 8, 16])
@pytest.mark.parametrize("copies", [2, 3, 4])
def test_the_copies_of_a_block_are_on_distinct_workers_and_the_load_is_even(workers, k, copies):
    """In index order, copy t of block j (index t * k + j) shares block j's worker when W divides k."""
    code = ReplicationCode(k, r=copies)
    names = [f"w{i}" for i in range(workers)]
    homes = member_workers(member_positions(code, 0, workers), [set()] * code.n, names)
    for block in range(k):
        copies_at = [homes[t * k + block] for t in range(copies)]
        assert len(set(copies_at)) == min(copies, workers), (block, copies_at)
    load = [homes.count(name) for name in names]
    assert max(load) - min(load) <= 1
    # The encoding's blocks are spread the same way, so every member is beside its block.
    name = replicated_name(ENCODE_ROWS, k, "abc")
    spread = [spread_worker(spread_position((name, i, 0), workers), names) for i in range(code.n)]
    assert spread == homes


@pytest.mark.parametrize("workers", [3, 4, 8])
@pytest.mark.parametrize("k", [65, 130])
def test_each_group_of_a_replication_puts_the_copies_of_a_block_on_distinct_workers(workers, k):
    code = ReplicationCode(k, r=2)
    names = [f"w{i}" for i in range(workers)]
    assert len(code.groups) > 1
    for group in code.groups:
        positions = member_positions(group.code, group.members[0], workers)
        homes = member_workers(positions, [set()] * group.code.n, names)
        blocks = group.code.k
        assert all(homes[j] != homes[j + blocks] for j in range(blocks)), homes


@pytest.mark.parametrize("workers", [3, 4, 6, 8])
@pytest.mark.parametrize(
    "code", [PolynomialCode(2, 2, 6), PolynomialCode(2, 3, 8), MatDotCode(2, 5)], ids=repr
)
def test_two_sided_members_repeating_a_term_are_on_another_worker(code, workers):
    """Measured: with 4 workers, member 4 of PolynomialCode(2, 2, 6) shared member 0's worker.

    Computed uncoded (operands holding NaN), member i is term i % terms: its repeat hedged nothing.
    """
    names = [f"w{i}" for i in range(workers)]
    homes = member_workers(member_positions(code, 0, workers), [set()] * code.n, names)
    terms = code.uncoded_terms
    for term in range(terms):
        copies_at = [homes[i] for i in range(term, code.n, terms)]
        assert len(set(copies_at)) == min(len(copies_at), workers), (term, copies_at)
    if code.n <= workers:
        assert len(set(homes)) == code.n  # coded, one member per worker
    name = replicated_name(ENCODE_TWO_SIDED[0], terms, "abc")
    assert [spread_worker(spread_position((name, i, 0), workers), names) for i in range(code.n)] == homes


@pytest.mark.parametrize(
    "code,unfinished,counted,chance",
    [
        (MDSCode(4, 6), [2, 4, 5], [2], 1 / 4),  # parities run last: never evidence
        (MDSCode(4, 6), [4, 5], [], 0.0),
        (ReplicationCode(2, r=3), [1, 3, 5], [1], 1 / 2),
        (GroupedMDSCode(6, group_size=3, parity=1).groups[0].code, [0, 1, 3], [0, 1], 2 / 3),
        (MatDotCode(2, 5), [0, 4], [0, 4], 2 / 5),  # no systematic blocks, nothing runs last
    ],
    ids=repr,
)
def test_only_members_that_run_in_their_turn_are_evidence_of_lateness(code, unfinished, counted, chance):
    assert late_members(code, unfinished) == (counted, pytest.approx(chance))


def test_decode_avoids_workers_running_late_members_and_slow_ones():
    # An exclusion: every other worker is allowed (the scheduler prefers the holders among them).
    assert decode_workers({"a", "b", "c"}, busy={"b"}, holders={"a", "b"}) == {"a", "c"}
    assert decode_workers({"a", "b", "c"}, slow={"c"}, busy={"b"}) == {"a"}
    # Nothing to avoid, or nothing else: no restriction.
    assert decode_workers({"a", "b"}) is None
    assert decode_workers({"a"}, busy={"a"}, holders={"a"}) is None
    assert decode_workers({"a", "b"}, slow={"a", "b"}) is None


def test_when_every_worker_runs_a_late_member_the_decode_stays_with_its_inputs():
    # The first members are in while every worker runs another: a worker that finished none
    # of them may be a slow machine nobody has measured yet.
    assert decode_workers({"a", "b", "c", "d"}, busy={"a", "b", "c", "d"}, holders={"b"}) == {"b"}
    # ...unless the holder is measured slow; then anywhere but the slow ones.
    assert decode_workers({"a", "b", "c"}, slow={"b"}, busy={"a", "c"}, holders={"b"}) == {"a", "c"}


def test_dropped_members_and_time_saved():
    assert dropped_members(["m0", None, "m2", "m3"], needed=[2]) == [0, 3]
    assert time_saved(1.0, 0.25) == 0.75
    assert time_saved(1.0, 5.0) == 0.0
    assert time_saved(float("nan"), 1.0) == 0.0


def test_nonfinite_members_are_erasures_except_for_their_own_output():
    code = MDSCode(3, 5)
    # Block 0 holds NaN, so do both parities: output 1 must wait for its own block.
    assert plan_decode(code, 1, [0, 2, 3, 4], nonfinite=[0, 3, 4]) is None
    assert plan_decode(code, 1, [0, 1, 3, 4], nonfinite=[0, 3, 4]) == DecodePlan((1,), (1,))
    assert plan_decode(code, 0, [0, 3], nonfinite=[0, 3]) == DecodePlan((0,), (0,))
    # A NaN parity (a soft error) is skipped when finite members suffice.
    plan = plan_decode(code, 1, [0, 2, 3, 4], nonfinite=[3])
    assert plan.recovery_set == (0, 2, 4) and 3 not in plan.needed


@pytest.mark.parametrize("dtype", ["int64", "int8", "uint32", "bool"])
def test_integer_groups_are_never_planned_through_parities(dtype):
    code = MDSCode(3, 5)
    for output in range(3):
        others = [i for i in range(5) if i != output]
        assert plan_decode(code, output, others, dtype=dtype) is None
        assert plan_decode(code, output, [output], dtype=dtype) == DecodePlan((output,), (output,))
    assert plan_decode(ReplicationCode(2, 2), 0, [2], dtype=dtype) == DecodePlan((2,), (2,))
    assert plan_decode(PolynomialCode(2, 2, 6), 0, range(6), dtype=dtype) is None
    assert plan_decode(code, 2, [0, 1, 3], dtype="float64") is not None


@pytest.mark.parametrize("k,group_size,parity", [(20, 6, 2), (7, 3, 1), (10, 4, 4), (5, 5, 2), (9, 2, 0)])
@pytest.mark.parametrize("workers", [4, 8, 13])
def test_spread_puts_each_group_on_distinct_workers(k, group_size, parity, workers):
    code = GroupedMDSCode(k, group_size=group_size, parity=parity)
    name = grouped_name(ENCODE_ROWS, k, group_size, parity, "abc")
    addresses = [f"tcp://w{i:02d}:1" for i in range(workers)]
    for group in code.groups:
        placed = [spread_worker(spread_position((name, i, 0)), addresses) for i in group.members]
        if len(group.members) <= workers:
            assert len(set(placed)) == len(placed), (group, placed)
    # Data block j keeps position j, so plain round robin spreads the data as before.
    assert [spread_position((name, j, 0)) for j in range(k)] == list(range(k))
    # The plugin's pins (DecodeSpec.first_position + member) agree with the spread of the encoding.
    for group in code.groups:
        for local, i in enumerate(group.members):
            assert spread_position((name, i, 0)) == group.members[0] + local


def test_spread_position_without_a_group_layout_is_the_index():
    assert spread_position(("coded-encode-rows-abc", 5, 0)) == 5
    assert spread_position(("coded-encode-cols-abc", 0, 7)) == 7
    assert spread_position(("coded-product-abc", 5, 0)) is None
