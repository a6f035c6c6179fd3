"""What a decode task costs in CPU: under a model that delays tasks with work, a second straggler stage.

Issue 12's model delays every task with at least 0.5 ms of CPU work of its
own; a decode over that waits a delay of its own after the products, and
the call waits for the slowest decode. This suite builds the graph of
``encode(A) @ x`` (A re-split into k data blocks of n = 8 coded ones, the
products returned in A's 8 chunks, as the default settings do), computes
its block products, and runs every decode task's function on them as the
scheduler plugin plans it (:func:`dask_coded.policy.plan_decode`) when the
first n - k data products are late: a copy (its own product is in) or a
combination of k products, over one window of a decoded block or two.

It reports the CPU time of the thread per decode, hot (the same decode
again and again) and cold (a pass over 64 MB between calls evicts the
caches, as the other processes on a busy worker do: the cold time is
close to what the workers of ``bench_strategies`` measure). Every decode is
checked against NumPy.

Run: python -m benchmarks.bench_decode [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np

import dask_coded
from benchmarks.common import save
from dask_coded.blocks import MISSING, decode_block
from dask_coded.policy import DecodePlan, plan_decode

WORKERS = 8


def planned_decodes(k: int, rows: int, cols: int, seed: int) -> list[dict[str, Any]]:
    """Each decode task of ``encode(A) @ x`` as the plugin runs it with data products ``0 .. 7 - k`` late."""
    rng = np.random.default_rng(seed)
    matrix, x = rng.standard_normal((rows, cols)), rng.standard_normal(cols)
    coded = dask_coded.encode(
        da.from_array(matrix, chunks=(-(-rows // WORKERS), cols)), code=dask_coded.MDSCode(k, WORKERS)
    ).persist(scheduler="sync")
    result = dask_coded.dot(coded, x)
    graph = dict(result.__dask_graph__())
    expected = np.split(matrix @ x, np.cumsum(result.chunks[0])[:-1])
    tasks = [graph[(result.name, index)] for index in range(len(result.chunks[0]))]
    members = sorted({r.key for task in tasks for r in task.args[1:]})
    computed = dict(zip(members, dask.get(graph, members)))
    finished = range(WORKERS - k, WORKERS)
    out = []
    for task, block in zip(tasks, expected):
        spec, references = task.args[0], task.args[1:]
        values = [computed[r.key] for r in references]
        parts = spec.parts or (spec,)
        plans = [_plan(part, finished) for part in parts]
        needed = {i for plan in plans for i in plan.needed}
        out.append(
            {
                "spec": spec.planned(plans),
                "products": [v if i in needed else MISSING for i, v in enumerate(values)],
                "kind": "copy" if all(plan.weights is None for plan in plans) else "combination",
                "parts": len(parts),
                "expected": block,
            }
        )
    return out


def _plan(part: Any, finished: range) -> DecodePlan:
    plan = plan_decode(part.code, part.output, finished, dtype=part.dtype)
    if plan is None:
        raise RuntimeError(f"{part.code!r} cannot decode output {part.output} from {list(finished)}")
    return plan


def cpu_time(function: Callable[[], Any], calls: int, evict: np.ndarray | None = None) -> float:
    """Median CPU time of the thread per call, in seconds; with ``evict``, a pass over it before each."""
    times = []
    for _ in range(calls):
        if evict is not None:
            evict.sum()
        start = time.thread_time()
        function()
        times.append(time.thread_time() - start)
    return float(np.median(times))


def run(rows: int, cols: int, calls: int, seed: int) -> list[dict[str, Any]]:
    evict = np.ones(8 * 2**20)  # 64 MB, past any cache of this machine
    results = []
    for k in (4, 5, 6):
        by_kind: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for decode in planned_decodes(k, rows, cols, seed):

            def call(decode: dict[str, Any] = decode) -> np.ndarray:
                return decode_block(decode["spec"], *decode["products"])

            error = float(np.max(np.abs(call() - decode["expected"])) / np.max(np.abs(decode["expected"])))
            hot, cold = cpu_time(call, calls), cpu_time(call, calls, evict)
            by_kind.setdefault((decode["kind"], decode["parts"]), []).append((hot, cold, error))
        for (kind, parts), measured in sorted(by_kind.items()):
            hot, cold, error = (float(np.median(column)) for column in zip(*measured))
            row = {
                "code": f"MDSCode({k}, {WORKERS})",
                "rows": rows,
                "cols": cols,
                "decode": kind,
                "windows": parts,
                "tasks": len(measured),
                "hot_ms": hot * 1e3,
                "cold_ms": cold * 1e3,
                "max_relative_error": max(m[2] for m in measured),
            }
            results.append(row)
            print(
                f"{row['code']:14s} {kind:11s} {parts} window(s) x{len(measured)}: "
                f"hot {row['hot_ms']:.3f} ms, cold {row['cold_ms']:.3f} ms, "
                f"error {row['max_relative_error']:.0e}",
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few calls (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for the JSON results")
    args = parser.parse_args(argv)
    rows, cols, calls = (2000, 100, 20) if args.quick else (16000, 1000, 300)
    results = run(rows, cols, calls, args.seed)
    save("decode", results, args.out)
    return results


if __name__ == "__main__":
    main()
