"""xarray: DataArray.coded.dot, with xr.dot's semantics and names.

Run: python examples/xarray_dot.py
"""

import dask.array as da
import numpy as np
import xarray as xr

import dask_coded  # noqa: F401  (registers the .coded accessor)

temperature = xr.DataArray(
    da.random.default_rng(0).standard_normal((1000, 24), chunks=(250, 24)),
    dims=("station", "hour"),
    coords={"station": np.arange(1000), "hour": np.arange(24)},
)
weights = xr.DataArray(np.full(24, 1 / 24), dims="hour")

daily = temperature.coded.dot(weights, dim="hour")  # lazy, Dask-backed, coded along "station"
expected = xr.dot(temperature, weights, dim="hour")
xr.testing.assert_allclose(daily.compute(), expected.compute())
print(daily)
