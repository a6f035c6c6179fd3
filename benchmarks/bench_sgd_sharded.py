"""SGD on data sharded across the workers: K-sync's bias, gradient coding, adaptive K and the client's memory.

Least squares ``y = X w + N(0, noise^2)``, one worker slow by a factor, and
every gradient task a fixed extra delay (times the factor on the slow
worker). Three parts, on the same cluster:

- sharded: X generated on the workers with ``da.random`` in one row chunk
  per worker and never sent anywhere; full-batch gradients of each worker's
  shard. Sync (first and last, as the load drifts), fixed K (the best is
  reported), adaptive K from 1 and from P/2, and gradient coding (s = 1),
  with the client's resident memory sampled during ``fit``.
- bias: K-sync with K = P - m against m slow workers, after it has
  converged: the error floor, next to the one predicted from the optimum of
  the fast workers' rows (normal equations per chunk, on the workers), and
  gradient coding with s = m.
- replicated: a NumPy X on the client, a replica on every worker,
  mini-batches drawn from all rows (Dutta et al. 2018); adaptive K's ratio
  to the best fixed K as above.

Run: python -m benchmarks.bench_sgd_sharded [--quick] [--scheduler ADDRESS] [--seeds 0 1 2]

``--seeds`` repeats the sharded and replicated comparisons with other data and
another slow worker (the bias part runs for the first seed); every seed's
strategies run one after the other in the same run, so their ratios compare
like with like while the machine's load changes between seeds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dask.array as da
import numpy as np
from distributed import Client

from benchmarks.common import cluster_arguments, on_cluster, save
from dask_coded import keys
from dask_coded.faults import inject
from dask_coded.sgd import AdaptiveKSyncSGD, GradientCodedSGD, KSyncSGD, SyncSGD

PREFIXES = (keys.SGD_GRADIENT,)
TARGETS = (1e-2, 1e-3, 1e-4, 1e-6)


class _PeakMemory:
    """The client process's resident memory, sampled every 5 ms while the block runs."""

    def __enter__(self) -> _PeakMemory:
        import psutil

        self._process = psutil.Process()
        self.before = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / 2**20


def _stragglers(p: dict[str, Any]) -> dict[str, Any]:
    return {"delay_shift": p["delay"], "slow_factor": 10.0, "prefixes": PREFIXES}


def _row(trainer: Any, history: Any, layout: str, memory: _PeakMemory | None = None) -> dict[str, Any]:
    keep = np.unique(np.r_[np.linspace(0, len(history.time) - 1, 400).astype(int), len(history.time) - 1])
    row = {
        "layout": layout,
        "method": trainer.method,
        "k": getattr(trainer, "k", None),
        "k_schedule": getattr(trainer, "k_schedule_", None),
        "updates": int(history.iteration[-1]),
        "seconds_per_update": history.mean_iteration_time(),
        "final_error": float(history.error[-1]),
        "client_memory_growth_mb": memory.growth_mb if memory else None,
        "curve": {"time": history.time[keep].tolist(), "error": history.error[keep].tolist()},
    }
    row.update({f"time_to_{t:g}": history.time_to(t) for t in TARGETS})
    times = "  ".join(f"{t:g}: {row[f'time_to_{t:g}']:6.2f} s" for t in TARGETS)
    mem = f"  client +{row['client_memory_growth_mb']:.0f} MB" if memory else ""
    print(
        f"{layout:10s} {trainer.method:16s} K={row['k']!s:4s} {times}  final {row['final_error']:.1e}  "
        f"{row['seconds_per_update'] * 1e3:6.0f} ms/update{mem}",
        flush=True,
    )
    return row


def _data(rows: int, cols: int, workers: int, noise: float, seed: int) -> tuple[Any, Any]:
    """X and y generated on the workers, one row chunk per worker."""
    chunk = -(-rows // workers)
    X = da.random.default_rng(seed).standard_normal((rows, cols), chunks=(chunk, cols))
    w = np.random.default_rng(seed).standard_normal(cols)
    y = X @ w + noise * da.random.default_rng(seed + 1).standard_normal(rows, chunks=chunk)
    return X, y


def _best(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The fastest to ``target``; if none reached it, the one that got closest."""
    return min(rows, key=lambda r: (r[f"time_to_{target:g}"], r["final_error"]))


def _speedups(rows: list[dict[str, Any]], max_time: float) -> None:
    """Adaptive K's speed-up over the best fixed K (sync included; the fastest run of each) at each target.

    None where adaptive K never got there; where no fixed K did within ``max_time``, the ratio is
    infinite and the lower bound is ``max_time`` over adaptive K's time.
    """
    fixed = [r for r in rows if r["method"] in ("sync", "k-sync")]
    for adaptive in [r for r in rows if r["method"] == "adaptive-k-sync"]:
        for target in TARGETS:
            best, reached = _best(fixed, target), adaptive[f"time_to_{target:g}"]
            if np.isinf(reached):
                ratio = bound = None
            else:
                ratio = best[f"time_to_{target:g}"] / reached
                bound = max_time / reached if np.isinf(ratio) else ratio
            adaptive[f"speedup_vs_best_fixed_k_at_{target:g}"] = ratio
            adaptive[f"speedup_lower_bound_at_{target:g}"] = bound
            shown = "not reached" if ratio is None else f"{ratio:.2f}x"
            if ratio is not None and np.isinf(ratio):
                shown = f"at least {bound:.2f}x (no fixed K got there in {max_time:g} s)"
            print(
                f"{adaptive['layout']}: adaptive K from {adaptive['k']} vs best fixed K "
                f"({best['method']} K={best['k']}) at {target:g}: {shown}"
            )


def _warm_up(client: Client, X: Any, y: Any) -> None:
    """An untimed fit without faults: the first gradient task on a worker imports and unpickles the trainer's
    code, which a slow worker would otherwise multiply into the first update of the first method."""
    SyncSGD(max_iterations=2, batch_size=64).fit(X, y, optimum=np.ones(X.shape[1]))


def run_sharded(client: Client, p: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    workers = len(client.nthreads())
    X, y = _data(p["rows"], p["cols"], workers, p["noise"], seed)
    X, y = client.persist(X), client.persist(y)
    _warm_up(client, X, y)
    options = dict(learning_rate=0.5, batch_size=None, max_time=p["max_time"], target_error=1e-7)
    # Sync runs first and last: the load on a shared machine drifts during the runs, and at each target
    # the faster of the two is the baseline adaptive K is compared with (the one least in its favour).
    trainers = [SyncSGD(max_iterations=200, **options)]
    trainers += [KSyncSGD(k, max_iterations=p["k_sync_updates"], **options) for k in p["ks"]]
    trainers += [AdaptiveKSyncSGD(k, max_iterations=400, **options) for k in (1, workers // 2)]
    trainers += [GradientCodedSGD(1, max_iterations=200, **options)]
    trainers += [SyncSGD(max_iterations=200, **options)]
    out = []
    with inject(client, seed=seed, slow_workers=1, **_stragglers(p)):
        for order, trainer in enumerate(trainers):
            with _PeakMemory() as memory:
                history = trainer.fit(X, y).history_
            out.append({**_row(trainer, history, "sharded", memory), "order": order})
    _speedups(out, p["max_time"])
    return out


def run_bias(client: Client, p: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """The error floor of K-sync with K = P - m against m slow workers, and gradient coding with s = m."""
    workers = sorted(client.nthreads())
    X, y = _data(p["rows"], p["cols"], len(workers), p["noise"], seed)
    X, y = client.persist(X), client.persist(y)
    # Normal equations of each chunk, computed where the chunk is: the floors to expect.
    blocks = [(X.blocks[i].T @ X.blocks[i], X.blocks[i].T @ y.blocks[i]) for i in range(X.numblocks[0])]
    grams = client.compute(blocks, sync=True)
    optimum = np.linalg.solve(sum(g for g, _ in grams), sum(b for _, b in grams))
    options = dict(learning_rate=0.5, batch_size=None, max_iterations=p["bias_updates"])
    out = []
    for m in p["slow_counts"]:
        with inject(client, seed=seed, slow_workers=m, **_stragglers(p)) as model:
            k_sync = KSyncSGD(len(workers) - m, **options)
            k_history = k_sync.fit(X, y, optimum=optimum).history_
            coded = GradientCodedSGD(m, **options)
            coded_history = coded.fit(X, y, optimum=optimum).history_
        fast = [i for i, w in enumerate(k_sync.shard_workers_) if w not in model.slow_workers]
        others = np.linalg.solve(sum(grams[i][0] for i in fast), sum(grams[i][1] for i in fast))
        row = {
            "layout": "bias",
            "slow_workers": m,
            "k": len(workers) - m,
            "k_sync_floor": float(np.median(k_history.error[-10:])),
            "predicted_floor": float(np.linalg.norm(others - optimum) / np.linalg.norm(optimum)),
            "gradient_coded_final_error": float(coded_history.error[-1]),
        }
        print(
            f"bias       {m} slow, K={row['k']}: K-sync floor {row['k_sync_floor']:.2e} "
            f"(predicted {row['predicted_floor']:.2e}), gradient-coded s={m}: "
            f"{row['gradient_coded_final_error']:.1e}",
            flush=True,
        )
        out.append(row)
    return out


def run_replicated(client: Client, p: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((p["replicated_rows"], p["cols"]))
    y = X @ rng.standard_normal(p["cols"]) + p["noise"] * rng.standard_normal(len(X))
    options = dict(
        learning_rate=0.2, batch_size=512, max_iterations=100_000, max_time=p["replicated_max_time"]
    )
    workers = len(client.nthreads())
    trainers = [SyncSGD(**options)] + [KSyncSGD(k, **options) for k in p["ks"]]
    trainers += [AdaptiveKSyncSGD(k, **options) for k in (1, workers // 2)]
    trainers += [GradientCodedSGD(1, **{**options, "batch_size": None, "learning_rate": 0.5})]
    out = []
    _warm_up(client, X, y)
    with inject(client, seed=seed, slow_workers=1, **_stragglers(p)):
        for trainer in trainers:
            out.append(_row(trainer, trainer.fit(X, y).history_, "replicated"))
    _speedups(out, p["replicated_max_time"])
    return out


def plot(rows: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    seeds = sorted({r["seed"] for r in rows if "seed" in r})
    for ax, layout in zip(axes, ("replicated", "sharded")):
        runs = [r for r in rows if r["layout"] == layout and r.get("seed") == seeds[0]]
        fixed = [r for r in runs if r["method"] == "k-sync"]
        target = 1e-4 if layout == "sharded" else 1e-2
        shown = [r for r in runs if r["method"] != "k-sync"] + ([_best(fixed, target)] if fixed else [])
        for r in shown:
            label = r["method"] + {
                "k-sync": f" (K={r['k']}, best fixed)",
                "adaptive-k-sync": f" (K from {r['k']})",
                "sync": f" (run {r['order'] + 1} of {len(runs)})" if "order" in r else "",
            }.get(r["method"], "")
            ax.semilogy(r["curve"]["time"], r["curve"]["error"], label=label)
        ax.set_title(f"{layout} data, seed {seeds[0]}", fontsize=10)
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("|w - w*| / |w*|")
        ax.legend(fontsize=8)
    bias = [r for r in rows if r["layout"] == "bias"]
    ax = axes[2]
    m = [r["slow_workers"] for r in bias]
    coded = [max(r["gradient_coded_final_error"], 1e-17) for r in bias]
    ax.semilogy(m, [r["k_sync_floor"] for r in bias], "o-", label="K-sync floor, K = P - m (measured)")
    ax.semilogy(m, [r["predicted_floor"] for r in bias], "x--", label="optimum of the fast shards")
    ax.semilogy(m, coded, "s-", label="gradient-coded, s = m")
    ax.set_xlabel("slow workers m")
    ax.set_ylabel("final |w - w*| / |w*|")
    ax.set_xticks(m)
    ax.set_title("bias under sharding", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[3]
    adaptive = [r for r in rows if r["layout"] == "sharded" and r["method"] == "adaptive-k-sync"]
    for start, color in zip(sorted({r["k"] for r in adaptive}), ("C0", "C1")):
        mine = [r for r in adaptive if r["k"] == start]
        # A filled marker is a ratio; a triangle, a lower bound (no fixed K got there in the time allowed).
        for bound, marker in ((False, "o"), (True, "^")):
            shown = [r for r in mine if (r["speedup_vs_best_fixed_k_at_0.0001"] == np.inf) is bound]
            ax.plot(
                [r["seed"] for r in shown],
                [r["speedup_lower_bound_at_0.0001"] or 0.0 for r in shown],
                marker,
                color=color,
                label=f"adaptive K from {start}" + (" (at least)" if bound else ""),
            )
    ax.axhline(1.5, color="grey", linestyle=":", label="goal: 1.5x")
    ax.axhline(1.0, color="black", linewidth=0.5)
    ax.set_xticks(seeds)
    ax.set_xlabel("seed (data and slow worker)")
    ax.set_ylabel("time to 1e-4: best fixed K / adaptive K (0: never)")
    ax.set_ylim(bottom=0)
    ax.set_title("sharded data: adaptive K's speed-up per seed", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(rows: list[dict[str, Any]]) -> None:
    """Adaptive K's speed-up over the best fixed K, per seed and layout, at every target."""
    print("layout      seed  adaptive K from   " + "".join(f"{t:>12g}" for t in TARGETS))
    for r in rows:
        if r.get("method") != "adaptive-k-sync":
            continue
        cells = []
        for t in TARGETS:
            ratio, bound = r[f"speedup_vs_best_fixed_k_at_{t:g}"], r[f"speedup_lower_bound_at_{t:g}"]
            cells.append(
                "never" if ratio is None else f">={bound:.2f}x" if np.isinf(ratio) else f"{ratio:.2f}x"
            )
        print(f"{r['layout']:10s} {r['seed']:5d}  {r['k']:>15d}   " + "".join(f"{c:>12s}" for c in cells))


FULL = dict(
    rows=2_000_000,
    cols=20,
    noise=1.0,
    delay=0.05,
    max_time=60.0,
    ks=(4, 6, 7),
    k_sync_updates=30,
    bias_updates=30,
    slow_counts=(1, 2, 3),
    replicated_rows=100_000,
    replicated_max_time=20.0,
)
QUICK = dict(
    FULL,
    rows=80_000,
    delay=0.02,
    max_time=3.0,
    ks=(7,),
    bias_updates=15,
    slow_counts=(1,),
    replicated_rows=8_000,
    replicated_max_time=3.0,
)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = cluster_arguments(__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="repeat the sharded and replicated comparisons (default: --seed)"
    )
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    seeds = args.seeds or [args.seed]

    def run(client: Client) -> list[dict[str, Any]]:
        started = time.perf_counter()
        rows = []
        for seed in seeds:
            print(f"-- seed {seed}", flush=True)
            runs = run_sharded(client, params, seed)
            if seed == seeds[0]:
                runs += run_bias(client, params, seed)
            runs += run_replicated(client, params, seed)
            rows += [{**row, "seed": seed} for row in runs]
        for row in rows:
            row.update(params=dict(params), workers=len(client.nthreads()))
        summary(rows)
        print(f"{time.perf_counter() - started:.0f} s in all")
        return rows

    results = on_cluster(args.scheduler, args.workers, run)
    save("sgd_sharded", results, args.out, plot)
    return results


if __name__ == "__main__":
    main()
