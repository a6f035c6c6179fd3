"""Pytest hooks for the whole repository (the tests and the package's doctests)."""

import os
import re

import pytest
from _pytest.doctest import DoctestItem
from hypothesis import settings

# Property tests draw the same examples on every run, as Hypothesis does on CI, so the suite passes or
# fails the same way each time it is run; HYPOTHESIS_PROFILE=explore draws new ones to hunt for bugs.
settings.register_profile("repeatable", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

#: A doctest that starts a cluster takes seconds and threads; the fast selection skips it.
_STARTS_A_CLUSTER = re.compile(r"\bLocalCluster\(|\bClient\(\s*\)")


def pytest_collection_modifyitems(config, items):
    """Mark doctests that start a LocalCluster as slow, so ``pytest -m "not slow"`` skips them.

    What they show is tested by the test suite too (tests/test_plugin.py, test_faults.py,
    test_sgd.py); the full ``pytest`` still runs them as documentation checks.
    """
    for item in items:
        if isinstance(item, DoctestItem) and any(
            _STARTS_A_CLUSTER.search(example.source) for example in item.dtest.examples
        ):
            item.add_marker(pytest.mark.slow)
