"""Pytest hooks for the whole repository (the tests and the package's doctests)."""

import re

import pytest
from _pytest.doctest import DoctestItem

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
