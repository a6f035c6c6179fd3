import os
import subprocess
import sys

import dask
import dask.array as da
import pytest

from dask_coded import config, encode


def test_packaged_defaults_and_user_settings():
    assert config.get("data-blocks") == "auto" and "data-blocks" in config.option_names()
    with dask.config.set({"coded.parity": 4, "coded.my-option": 1}):
        assert config.get("parity") == 4 and "my-option" in config.option_names()


def test_settings_spelled_with_underscores_are_the_hyphenated_options():
    """dask.config reads DASK_CODED__MAX_ERRORS as coded.max_errors: the same option as max-errors."""
    with dask.config.set({"coded": {"max_errors": 1, "data_blocks": "keep"}}):
        assert config.get("max-errors") == 1 and config.get("data_blocks") == "keep"
        assert "max_errors" not in config.option_names() and "max-errors" in config.option_names()


def test_environment_variables_configure_a_coded_product():
    script = (
        "import dask.array as da, numpy as np, dask_coded\n"
        "y = dask_coded.dot(da.ones((6, 4), chunks=(2, 4)), np.ones(4))\n"
        "print(sorted({t.args[0].code.n for t in y.dask.values() if hasattr(t, 'args') and t.args "
        "and hasattr(t.args[0], 'code')}), y.compute().tolist())\n"
    )
    env = {**os.environ, "DASK_CODED__PARITY": "3", "DASK_CODED__MAX_ERRORS": "0"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[6]", "[4.0,", "4.0,", "4.0,", "4.0,", "4.0,", "4.0]"]


@pytest.mark.parametrize("setting", ["yes", 3, None])
def test_bad_data_blocks_setting_is_named(setting):
    with dask.config.set({"coded.data-blocks": setting}):
        with pytest.raises(ValueError, match="coded.data-blocks"):
            encode(da.ones((4, 4), chunks=2))


@pytest.mark.parametrize(
    ("option", "setting"),
    [("parity", -1), ("parity", "many"), ("parity", True), ("parity", 1.5)]
    + [("group-size", 0), ("group-size", "big")],
)
def test_bad_count_setting_is_named(option, setting):
    with dask.config.set({f"coded.{option}": setting}):
        with pytest.raises(ValueError, match=f"coded.{option} must be 'auto' or an integer"):
            encode(da.ones((8, 4), chunks=(2, 4)))


@pytest.mark.parametrize(
    ("option", "setting", "code"),
    [("replicas", 0, "replication"), ("replicas", -1, "replication"), ("replicas", 1.5, "replication")]
    + [
        ("replicas", True, "replication"),
        ("replicas", "two", "replication"),
        ("replicas", None, "replication"),
    ]
    + [("seed", -1, "mds"), ("seed", "abc", "mds"), ("seed", 1.5, "mds"), ("seed", None, "mds")],
)
def test_bad_code_options_are_named_not_clamped(option, setting, code):
    """A review found coded.replicas: 0 silently clamped to one copy (no redundancy), 1.5 rounded."""
    with dask.config.set({f"coded.{option}": setting}):
        with pytest.raises(ValueError, match=f"coded.{option} must be an integer of at least"):
            encode(da.ones((8, 4), chunks=(2, 4)), code=code)
