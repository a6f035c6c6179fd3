"""The adaptive-K rule as plain numbers: no cluster."""

import numpy as np
import pytest

from dask_coded.sgd.schedule import loss_stalled, next_k


def _geometric(start, ratio, updates, floor=0.0):
    return [floor + start * ratio**t for t in range(updates)]


@pytest.mark.parametrize(
    "losses, stalled",
    [
        (_geometric(1.0, 0.5, 10), False),  # halving every update: far from stalled
        (_geometric(1.0, 0.5, 60, floor=1.0), True),  # at its floor to round-off
        ([1.0] * 10, True),
        (list(np.linspace(2.0, 1.0, 10)), False),  # a straight, noise-free decline
        (list(1.0 + 0.1 * np.random.default_rng(0).standard_normal(10)), True),  # noise around a floor
        (list(np.linspace(10.0, 1.0, 10) + 0.1 * np.random.default_rng(1).standard_normal(10)), False),
        ([5.0, 4.0, 3.0], False),  # fewer than two windows
        (list(np.linspace(1.0, 2.0, 10)), True),  # rising: not falling is stalled
    ],
    ids=["falling", "floor", "flat", "linear", "noise", "noisy-decline", "too-few", "rising"],
)
def test_loss_stalled(losses, stalled):
    assert loss_stalled(losses, window=5) is stalled


def test_a_noisy_decline_needs_the_significance_it_is_given():
    rng = np.random.default_rng(2)
    losses = list(np.linspace(1.1, 1.0, 10) + 0.02 * rng.standard_normal(10))
    assert loss_stalled(losses, window=5, significance=10.0)
    assert not loss_stalled(losses, window=5, significance=0.0)


@pytest.mark.parametrize(
    "k, workers, growth, expected",
    [(1, 8, 2.0, 2), (2, 8, 2.0, 4), (4, 8, 2.0, 8), (6, 8, 2.0, 8), (8, 8, 2.0, 8), (3, 8, 1.1, 4)],
)
def test_next_k_grows_by_the_factor_up_to_p(k, workers, growth, expected):
    assert next_k(k, workers, [1.0] * 10, growth=growth) == expected


def test_next_k_keeps_k_while_the_loss_falls():
    assert next_k(2, 8, _geometric(1.0, 0.7, 30)) == 2


def test_a_schedule_driven_by_the_rule_ends_at_p():
    """Feed the rule losses that stall at a floor falling with K (as the noise floor of K-sync does)."""
    k, workers, losses, ks = 1, 8, [], []
    for update in range(200):
        losses.append(1.0 / k + 0.5**update)
        new = next_k(k, workers, losses)
        if new != k:
            k, losses = new, []
        ks.append(k)
    assert ks[-1] == workers
    assert np.all(np.diff(ks) >= 0)
    assert sorted(set(ks)) == [1, 2, 4, 8]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: next_k(0, 8, []), "k must be in"),
        (lambda: next_k(9, 8, []), "k must be in"),
        (lambda: next_k(1, 8, [], growth=1.0), "growth must exceed 1"),
        (lambda: loss_stalled([1.0], window=0), "window"),
    ],
)
def test_bad_options_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
