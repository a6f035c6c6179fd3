import dask.array as da
import numpy as np
import pytest
import xarray as xr

import dask_coded  # noqa: F401  (registers DataArray.coded)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    a = xr.DataArray(
        rng.standard_normal((12, 5)), dims=("time", "x"), coords={"time": np.arange(12), "x": list("abcde")}
    ).chunk({"time": 4})
    b = xr.DataArray(rng.standard_normal((5, 3)), dims=("x", "y"), coords={"y": [10, 20, 30]})
    v = xr.DataArray(rng.standard_normal(5), dims="x")
    return a, b, v


@pytest.mark.parametrize("code", ["mds", "replication", "polynomial", "matdot"])
@pytest.mark.parametrize("pair", ["matmat", "matvec", "vecmat", "reversed"])
def test_coded_dot_matches_xr_dot(arrays, code, pair):
    a, b, v = arrays
    left, right = {"matmat": (a, b), "matvec": (a, v), "vecmat": (v, b), "reversed": (b, a)}[pair]
    result = left.coded.dot(right, dim="x", code=code)
    expected = xr.dot(left, right, dim="x")
    assert isinstance(result.data, da.Array)
    assert result.dims == expected.dims
    xr.testing.assert_allclose(
        result.compute(), expected.compute(), rtol=0, atol=1e-10 * float(abs(expected).max())
    )
    for name, coordinate in expected.coords.items():
        xr.testing.assert_equal(result.coords[name], coordinate)


def test_default_dim_is_the_shared_one(arrays):
    a, b, _ = arrays
    xr.testing.assert_allclose(a.coded.dot(b).compute(), xr.dot(a, b).compute())
    # xr.dot's dim=... (every dimension): one for two vectors; a review found it named Ellipsis.
    v = xr.DataArray(np.arange(5.0), dims="x")
    xr.testing.assert_allclose(v.coded.dot(v, dim=...).compute(), xr.dot(v, v, dim=...).compute())
    with pytest.raises(ValueError, match=r"exactly one dimension, got \['time', 'x', 'y'\]"):
        a.coded.dot(b, dim=...)


def test_bad_dims(arrays):
    a, b, v = arrays
    with pytest.raises(ValueError, match="not in both arrays"):
        a.coded.dot(b, dim="time")
    with pytest.raises(ValueError, match="exactly one dimension"):
        a.coded.dot(a.rename(time="t"), dim=["x", "time"])
    with pytest.raises(ValueError, match="one dimension besides"):
        a.coded.dot(a, dim="x")
    with pytest.raises(TypeError, match="takes a DataArray"):
        a.coded.dot(np.ones(5), dim="x")


@pytest.mark.parametrize("labels", [list("edcba"), list("cdefg")], ids=["reordered", "overlapping"])
@pytest.mark.parametrize("pair", ["matvec", "matmat"])
def test_coordinates_are_aligned_as_xr_dot_aligns_them(arrays, labels, pair):
    """xr.dot joins the contracted coordinates (inner); exact alignment raised AlignmentError here."""
    a, b, _ = arrays
    other = b if pair == "matmat" else b.isel(y=0, drop=True)
    other = other.isel(x=slice(0, len(labels))).assign_coords(x=labels)
    result = a.coded.dot(other, dim="x")
    expected = xr.dot(a, other, dim="x")
    assert result.dims == expected.dims
    xr.testing.assert_allclose(result.compute(), expected.compute(), rtol=1e-12, atol=1e-12)
    with xr.set_options(arithmetic_join="exact"), pytest.raises(ValueError, match="exact"):
        a.coded.dot(other, dim="x")
