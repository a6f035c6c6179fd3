"""The short examples run as a user runs them (the long SGD and MLP ones run in the benchmarks' stead)."""

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).parents[1] / "examples"


@pytest.mark.parametrize(
    "script, expected",
    [
        ("codes_quickstart.py", "wrong block located: (2,)"),
        ("xarray_dot.py", "coded-decode"),
        pytest.param("drop_in_pipeline.py", "same results", marks=pytest.mark.slow),
        pytest.param("iterative_solver.py", "error vs lstsq", marks=pytest.mark.slow),
        pytest.param("custom_code.py", "wrong products corrected", marks=pytest.mark.slow),
    ],
)
def test_example_runs(script, expected, tmp_path):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout
