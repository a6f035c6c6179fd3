"""What every benchmark records next to its numbers: machine, versions, time."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

RESULTS = pathlib.Path(__file__).with_name("results")


def machine() -> dict[str, Any]:
    import dask
    import distributed
    import scipy

    import dask_coded

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "dask_coded": dask_coded.__version__,
    }


def best_time(function: Callable[[], Any], repeat: int = 3) -> float:
    """The fastest of ``repeat`` runs, in seconds (the least disturbed by noise)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def write(name: str, payload: dict[str, Any], out_dir: pathlib.Path | None = None) -> pathlib.Path:
    out_dir = pathlib.Path(out_dir or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {f"p{q}": float(np.percentile(array, q)) for q in (50, 95, 99)} | {"mean": float(array.mean())}


def local_cluster(n_workers: int, processes: bool = True) -> Any:
    """The benchmark cluster: ``n_workers`` single-threaded workers on 127.0.0.1."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=processes,
        host="127.0.0.1",
        dashboard_address=":0",
        silence_logs=40,
    )
