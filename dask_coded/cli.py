"""The ``dask-coded`` command: ``demo`` (plain vs coded under stragglers) and ``bench`` (the benchmarks)."""

from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["main"]


def _progress(done: int, total: int, label: str, width: int = 30) -> None:
    filled = int(width * done / total)
    end = "\n" if done == total else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label}", end=end, flush=True)


def demo(args: argparse.Namespace) -> dict[str, Any]:
    """Plain ``da.dot`` and ``dask_coded.dot`` side by side on a LocalCluster with a slow worker."""
    import dask.array as da
    from distributed import Client, LocalCluster

    import dask_coded
    from dask_coded.dashboard import page_link
    from dask_coded.faults import inject
    from dask_coded.testing import one_block_per_worker

    workers, parity = args.workers, args.parity
    model = _straggler_model(args)
    print(f"dask-coded demo: {workers} single-threaded workers; {_describe(args)} (seed {args.seed})")
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0", silence_logs=40
        ) as cluster,
        Client(cluster) as client,
    ):
        print(f"dashboard: {client.dashboard_link}")
        dask_coded.register(client)
        page = page_link(client)
        print(f"coded page: {page or 'none (the dashboard needs bokeh: pip install bokeh)'}")
        plain = one_block_per_worker(client, args.rows, args.cols, seed=args.seed)
        code = dask_coded.make_code(args.code, **_code_params(args.code, workers, parity))
        coded = client.persist(dask_coded.encode(plain, code=code))
        reference = plain.compute()
        rng = np.random.default_rng(args.seed)
        plain_times, coded_times, errors = [], [], []
        with inject(client, tasks="products", seed=args.seed, **model):
            for rep in range(args.repeats):
                x = rng.standard_normal(args.cols)
                expected = reference @ x
                start = time.perf_counter()
                da.dot(plain, x).compute()
                plain_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                result = dask_coded.dot(coded, x).compute()
                coded_times.append(time.perf_counter() - start)
                errors.append(float(np.abs(result - expected).max() / np.abs(expected).max()))
                _progress(
                    rep + 1,
                    args.repeats,
                    f"matvecs (plain {plain_times[-1]:.2f} s, coded {coded_times[-1]:.2f} s)",
                )
        stats = dask_coded.plugin_stats(client)
    summary = _summarise(plain_times, coded_times, errors, stats, args, code)
    if not args.no_plot:
        _plot(plain_times, coded_times, args)
    return summary


#: The demo's straggler models (all seeded, applied to block products only).
MODELS = ("slow-worker", "shifted-exponential", "pareto")


def _straggler_model(args: argparse.Namespace) -> dict[str, Any]:
    if args.model == "slow-worker":
        return {"delay_shift": args.delay, "slow_workers": 1, "slow_factor": args.slow_factor}
    if args.model == "shifted-exponential":
        return {"delay": "shifted-exponential", "delay_shift": args.delay, "delay_scale": 2 * args.delay}
    return {"delay": "pareto", "delay_shift": args.delay, "delay_scale": args.delay, "pareto_shape": 1.5}


def _describe(args: argparse.Namespace) -> str:
    if args.model == "slow-worker":
        return f"every block product takes {args.delay:g} s more, 1 worker is {args.slow_factor:g}x slow"
    if args.model == "shifted-exponential":
        return f"block products take {args.delay:g} s + Exp(mean {2 * args.delay:g} s) more"
    return f"block products take {args.delay:g} s + {args.delay:g} s x Pareto(1.5) more"


def _code_params(name: str, workers: int, parity: int) -> dict[str, int]:
    if name == "replication":
        return {"k": workers // 2, "r": 2}
    return {"k": workers - parity, "n": workers}


def _summarise(
    plain: list[float], coded: list[float], errors: list[float], stats: dict[str, Any], args: Any, code: Any
) -> dict[str, Any]:
    rows = []
    for name, times in (("plain da.dot", plain), ("dask_coded.dot", coded)):
        rows.append((name, np.percentile(times, 50), np.percentile(times, 95), np.mean(times)))
    print(f"\nA: {args.rows} x {args.cols} float64, {args.repeats} back-to-back matvecs; coded with {code!r}")
    print(f"{'':16s} {'p50 (s)':>9s} {'p95 (s)':>9s} {'mean (s)':>9s}")
    for name, p50, p95, mean in rows:
        print(f"{name:16s} {p50:9.3f} {p95:9.3f} {mean:9.3f}")
    speedup = rows[0][1] / rows[1][1]
    print(f"speedup at p50: {speedup:.2f}x   max relative error vs NumPy: {max(errors):.1e}")
    print(
        f"plugin: {stats['decodes_early']} blocks decoded early, {stats['members_dropped']} late products "
        f"dropped ({stats['members_cancelled']} cancelled while running)"
    )
    return {"speedup_p50": speedup, "max_error": max(errors), "stats": stats}


def _plot(plain: list[float], coded: list[float], args: Any) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is not installed (pip install 'dask-coded[plot]')")
        return
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(plain, "o-", label="plain da.dot")
    ax.plot(coded, "s-", label="dask_coded.dot")
    ax.set_xlabel("matvec (back to back)")
    ax.set_ylabel("latency (s)")
    ax.set_title(f"{args.workers} workers: {args.model}")
    ax.legend()
    fig.tight_layout()
    path = out / "demo.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path.resolve()}")


#: Suites that run in this process, on no cluster.
_LOCAL_SUITES = frozenset({"codes", "decode", "detection"})


def bench(args: argparse.Namespace) -> None:
    """Run the benchmark suite of a source checkout (``benchmarks/``)."""
    root = _checkout_root()
    sys.path.insert(0, str(root))
    forwarded = ["--quick"] if args.quick else []
    if args.out:
        forwarded += ["--out", args.out]
    for suite in args.suites.split(","):
        module = importlib.import_module(f"benchmarks.bench_{suite}")
        extra = ["--scheduler", args.scheduler] if args.scheduler and suite not in _LOCAL_SUITES else []
        print(f"== {suite} ==", flush=True)
        module.main(forwarded + extra)
    print(f"done: {args.suites}; JSON and PNG results in {args.out or root / 'benchmarks' / 'results'}")


def _checkout_root() -> pathlib.Path:
    for candidate in (pathlib.Path(__file__).resolve().parents[1], pathlib.Path.cwd()):
        if (candidate / "benchmarks" / "bench_codes.py").exists():
            return candidate
    raise SystemExit(
        "dask-coded bench runs the suite in a source checkout's benchmarks/ folder; "
        "clone the repository and run it from there (pip install -e .)"
    )


#: Every suite in benchmarks/ (bench_<suite>.py), in the order ``dask-coded bench`` runs them.
SUITES = (
    "codes",
    "decode",
    "detection",
    "dot",
    "overhead",
    "scale",
    "stragglers",
    "strategies",
    "sgd",
    "sgd_sharded",
    "soft_errors",
)


def _at_least(minimum: float, kind: type = int) -> Any:
    """An argparse type: a ``kind`` (int or float) of at least ``minimum``, or a usage error."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        return value

    return parse


def _suites(text: str) -> str:
    unknown = [suite for suite in text.split(",") if suite not in SUITES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown suites {unknown}; choose from {', '.join(SUITES)}")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dask-coded", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser(
        "demo", help="plain da.dot vs dask_coded.dot on a LocalCluster with a slow worker"
    )
    run_demo.add_argument("--rows", type=_at_least(1), default=16000, help="rows of A (default 16000)")
    run_demo.add_argument("--cols", type=_at_least(1), default=1000, help="columns of A (default 1000)")
    run_demo.add_argument(
        "--workers", type=_at_least(1), default=8, help="single-threaded workers (default 8)"
    )
    run_demo.add_argument("--parity", type=_at_least(0), default=2, help="parity blocks (default 2)")
    run_demo.add_argument("--code", choices=["mds", "replication"], default="mds")
    run_demo.add_argument(
        "--slow-factor", type=_at_least(1, float), default=10.0, help="how much slower the slow worker is"
    )
    run_demo.add_argument(
        "--model", choices=MODELS, default="slow-worker", help="straggler model (default slow-worker)"
    )
    run_demo.add_argument(
        "--delay", type=_at_least(0, float), default=0.05, help="seconds every block product takes extra"
    )
    run_demo.add_argument(
        "--repeats", type=_at_least(1), default=20, help="back-to-back matvecs (default 20)"
    )
    run_demo.add_argument("--seed", type=int, default=0)
    run_demo.add_argument("--out", default="dask-coded-demo", help="folder for demo.png")
    run_demo.add_argument("--no-plot", action="store_true", help="do not write demo.png")
    run_bench = commands.add_parser("bench", help="run the benchmark suite against plain Dask")
    run_bench.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke run)")
    run_bench.add_argument("--scheduler", default=None, help="tcp://HOST:PORT of an existing cluster")
    run_bench.add_argument(
        "--suites",
        type=_suites,
        default=",".join(SUITES),
        help=f"comma-separated suites ({', '.join(SUITES)})",
    )
    run_bench.add_argument("--out", default=None, help="folder for JSON and PNG results")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dask-coded`` console script.

    Examples
    --------
    >>> main(["demo", "--help"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    SystemExit: 0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.workers - args.parity < 1:
            parser.error(
                f"--parity {args.parity} must leave at least one data block of --workers {args.workers}"
            )
        if args.rows < args.workers:
            parser.error(f"--rows {args.rows} must be at least --workers {args.workers}: a block per worker")
        demo(args)
    else:
        bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
