"""What the scheduler plugin costs a graph with nothing coded in it: a 10,000-task graph with and without it.

Interleaved runs of the same graph (``(x + i).sum()`` over 3,000 one-element
chunks) on one cluster, with the plugin registered and removed in turn, and
the time spent inside the plugin's scheduler hooks measured directly (the
wall-clock difference is within the noise of a shared machine; the hook time
is not).

Run: python -m benchmarks.bench_overhead [--quick] [--scheduler ADDRESS]
"""

from __future__ import annotations

import time
from typing import Any

import dask.array as da
import numpy as np
from distributed import Client

import dask_coded
from benchmarks.common import cluster_arguments, on_cluster, save


def _hook_time(dask_scheduler: Any) -> float:
    plugin = dask_scheduler.plugins.get("dask-coded")
    return getattr(plugin, "_hook_seconds", 0.0)


def _instrument(dask_scheduler: Any) -> None:
    """Time the plugin's per-task hooks from inside the scheduler (no effect on what they do)."""
    plugin = dask_scheduler.plugins["dask-coded"]
    plugin._hook_seconds = 0.0
    for name in ("transition", "update_graph"):
        hook = getattr(plugin, name)

        def timed(*args: Any, _hook: Any = hook, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                plugin._hook_seconds += time.perf_counter() - start

        setattr(plugin, name, timed)


def _remove(dask_scheduler: Any) -> None:
    dask_scheduler.plugins.pop("dask-coded", None)


def run(client: Client, chunks: int, repeats: int) -> list[dict[str, Any]]:
    x = da.ones((chunks,), chunks=1)
    plain_times, plugin_times, hook_times = [], [], []
    (x + 0).sum().compute()  # warm up
    for i in range(repeats):
        for with_plugin in (False, True):
            if with_plugin:
                dask_coded.register(client)
                client.run_on_scheduler(_instrument)
            else:
                client.run_on_scheduler(_remove)
            start = time.perf_counter()
            total = (x + i + 1).sum().compute()
            elapsed = time.perf_counter() - start
            assert total == chunks * (i + 2)
            (plugin_times if with_plugin else plain_times).append(elapsed)
            if with_plugin:
                hook_times.append(client.run_on_scheduler(_hook_time))
    tasks = len((x + 1).sum().__dask_graph__())
    row = {
        "tasks": tasks,
        "repeats": repeats,
        "plain_p50": float(np.median(plain_times)),
        "plugin_p50": float(np.median(plugin_times)),
        "wall_ratio_p50": float(np.median(plugin_times) / np.median(plain_times)),
        "hook_seconds_p50": float(np.median(hook_times)),
        "hook_fraction_of_wall": float(np.median(np.array(hook_times) / np.array(plugin_times))),
    }
    print(
        f"{tasks} tasks: plain {row['plain_p50']:.2f}s, with the plugin {row['plugin_p50']:.2f}s "
        f"(ratio {row['wall_ratio_p50']:.3f}); inside the plugin's hooks {row['hook_seconds_p50']:.3f}s "
        f"= {100 * row['hook_fraction_of_wall']:.2f}% of the wall time",
        flush=True,
    )
    dask_coded.register(client)
    return [row]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = cluster_arguments(__doc__.splitlines()[0], workers=4)
    args = parser.parse_args(argv)
    chunks, repeats = (1000, 2) if args.quick else (3000, 5)  # 3000 chunks: about 10,000 tasks
    results = on_cluster(args.scheduler, args.workers, lambda client: run(client, chunks, repeats))
    save("overhead", results, args.out)
    return results


if __name__ == "__main__":
    main()
