"""Where shards go, as plain indices: no cluster."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dask_coded.codes import GradientCode
from dask_coded.sgd.placement import balance_shards, coded_copies


@given(
    workers=st.integers(1, 8),
    holders=st.lists(st.lists(st.integers(-1, 9), max_size=3), max_size=20),
)
def test_every_worker_gets_its_share_and_shards_stay_where_they_can(workers, holders):
    owner = balance_shards(holders, workers)
    counts = np.bincount(owner, minlength=workers)
    assert len(owner) == len(holders)
    assert counts.max() - counts.min() <= 1 if holders else counts.sum() == 0
    # A shard only moves away from its holders when all of them already hold their share.
    share = len(holders) // workers
    for shard, worker in enumerate(owner):
        valid = [h for h in holders[shard] if 0 <= h < workers]
        if valid and worker not in valid:
            assert all(counts[h] >= share for h in valid)


def test_a_balanced_layout_is_kept():
    holders = [[i % 4] for i in range(8)]
    assert balance_shards(holders, 4) == [i % 4 for i in range(8)]


@pytest.mark.parametrize("n, s", [(4, 1), (8, 1), (8, 3), (5, 2)])
def test_coded_copies_put_each_partition_on_s_plus_1_workers(n, s):
    code = GradientCode(n, s, "cyclic")
    copies = coded_copies([code.assignment(i) for i in range(n)])
    assert sorted(copies) == list(range(n))
    for partition, receivers in copies.items():
        assert len(receivers) == s and partition not in receivers
