"""Many chunks: graph size and threaded time of dask_coded.dot against da.dot, as the chunk count grows.

``A`` (``chunks`` row chunks of 128 x 256 float64) times a vector, with the
threaded scheduler (no cluster, so the default groups are 16 data blocks and
2 parities). Next to the default grouped code, the same product with one
MDS code over every chunk (``coded.group-size`` = chunks), whose encodes
and decodes read every block: its graph grows as chunks squared.

Recorded: tasks, dependency edges, and the best of three threaded runs for
each, as ratios to ``da.dot``.

Run: python -m benchmarks.bench_scale [--quick]
"""

from __future__ import annotations

import argparse
from typing import Any

import dask
import dask.array as da
import numpy as np

import dask_coded
from benchmarks.common import best_time, save

ROWS, COLS = 128, 256


def _graph_size(array: da.Array) -> tuple[int, int]:
    graph = dict(array.__dask_graph__())
    edges = sum(len(getattr(task, "dependencies", ())) for task in graph.values())
    return len(graph), edges


def measure(chunks: int, one_code: bool, repeat: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((chunks * ROWS, COLS))
    x = rng.standard_normal(COLS)
    A = da.from_array(a, chunks=(ROWS, COLS))
    expected = a @ x
    row: dict[str, Any] = {"chunks": chunks}
    variants = {"plain": lambda: da.dot(A, x), "grouped": lambda: dask_coded.dot(A, x)}
    if one_code:
        variants["one code"] = lambda: dask_coded.dot(A, x)
    for label, build in variants.items():
        setting = chunks if label == "one code" else "auto"
        with dask.config.set({"coded.group-size": setting, "scheduler": "threads"}):
            product = build()
            tasks, edges = _graph_size(product)
            np.testing.assert_allclose(
                product.compute(), expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max()
            )
            seconds = best_time(product.compute, repeat)
        row[label] = {"tasks": tasks, "edges": edges, "seconds": seconds}
    for label in variants:
        if label != "plain":
            for what in ("tasks", "edges", "seconds"):
                row[label][f"{what}_ratio"] = row[label][what] / row["plain"][what]
    summary = ", ".join(
        f"{label}: {row[label]['tasks_ratio']:.2f}x tasks, {row[label]['seconds_ratio']:.2f}x time"
        for label in variants
        if label != "plain"
    )
    print(f"{chunks} chunks ({row['plain']['tasks']} plain tasks): {summary}", flush=True)
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer chunks and repeats (a smoke test)")
    parser.add_argument("--scheduler", default=None, help="ignored: this suite runs on threads")
    parser.add_argument("--out", default=None, help="results folder")
    args = parser.parse_args(argv)
    sizes, repeat = ((16, 64), 1) if args.quick else ((64, 256, 1024, 4096), 3)
    results = [measure(chunks, one_code=chunks <= 256, repeat=repeat) for chunks in sizes]
    save("scale", results, args.out)
    return results


if __name__ == "__main__":
    main()
