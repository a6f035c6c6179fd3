"""What every benchmark records next to its numbers: machine, versions, time."""

from __future__ import annotations

import argparse
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


def cluster_arguments(description: str, workers: int | None = 8) -> argparse.ArgumentParser:
    """The options every cluster suite takes: --quick, --scheduler, --workers, --seed, --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke run)")
    parser.add_argument("--scheduler", default=None, help="address of an existing cluster")
    if workers is not None:
        parser.add_argument("--workers", type=int, default=workers, help=f"local workers (default {workers})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for the JSON and PNG results")
    return parser


def on_cluster(scheduler: str | None, workers: int, run: Callable[[Any], Any]) -> Any:
    """``run(client)`` on the cluster at ``scheduler``, or on a fresh local one of ``workers`` workers."""
    from distributed import Client

    cluster = None if scheduler else local_cluster(workers)
    try:
        with Client(scheduler or cluster) as client:
            client.wait_for_workers(1 if scheduler else workers)
            return run(client)
    finally:
        if cluster is not None:
            cluster.close()


def save(
    name: str, rows: list[dict[str, Any]], out_dir: Any, plot: Callable[..., None] | None = None
) -> None:
    """Write ``name``.json (with the machine) and, when matplotlib is installed, ``name``.png."""
    path = write(name, {"suite": name, "rows": rows}, out_dir)
    if plot is not None:
        try:
            plot(rows, path.with_suffix(".png"))
        except ImportError:
            print("matplotlib not installed: no plot (pip install dask-coded[plot])")
    print(f"wrote {path}")
