"""Every straggler strategy a Dask user can pick, under every fault model, on one cluster, back to back.

Strategies (the same matvec ``A @ x``, A persisted before timing):
plain ``da.dot`` (one row block per worker), backup tasks with Spark 4's rule
on that same array and with cubed's (which judges only groups of 10 tasks or
more) on two blocks per worker, replication (k = W/2, 2 copies),
a fixed MDS code (k = W - 2, n = W, one coded block per worker), the same
with one parity (k = W - 1: the least extra work a code can do), and what
``dask_coded.encode`` gives on a plain array like it (its own copy) with default settings and
with ``coded.data-blocks: keep`` (the array's own chunks as data blocks),
once the scheduler plugin has seen the cluster at work under the fault
model (a few plain calls: the evidence its code is chosen from).

Fault models, injected at the worker into every task (operands, encodes,
products, decodes, the final assembly), seeded: none (what each strategy
costs when nothing straggles), a slow machine (one worker 10x slow at
everything), a shifted exponential on every task with 0.5 ms of work
(issue 12's model) and on every task, Pareto, and a trace-driven model
replaying per-worker Gamma latencies with Markov slow episodes from
``benchmarks/traces/gamma_markov.json``.

For each: latency percentiles, the ratio to plain, block products started per
call, the work they amount to over plain's (a product's share of A's rows
times the products started: replication's and MDS's extra work, and the
backups'), and for coded strategies the oracle (the k-th fastest
product plus the decode, over when the last decode finished). One plot: the
latency CDF of each strategy, one panel per model.

With ``--runs N``, N whole runs back to back on the same cluster (each with its own seed), and the
least, median and most p50 speed-up of each strategy over them: one run's ratios move by up to 2x.
``--models`` picks fault models by name.

Run: python -m benchmarks.bench_strategies [--quick] [--runs N] [--models NAME,...] [--scheduler ADDRESS]
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import dask
import dask.array as da
import numpy as np
from distributed import Client, get_task_stream, wait

import dask_coded
from benchmarks.bench_stragglers import _oracle
from benchmarks.common import cluster_arguments, on_cluster, percentiles, save
from dask_coded.faults import FaultModel, inject, load_trace
from dask_coded.testing import one_block_per_worker, relative_error

TRACE = pathlib.Path(__file__).with_name("traces") / "gamma_markov.json"


def models(seed: int) -> dict[str, FaultModel]:
    return {
        # Nothing injected: what the strategies cost when nothing straggles (issue 12: at most 1.15x).
        "no-stragglers": FaultModel(seed=seed),
        "slow-machine": FaultModel.slow_machine(workers=1, factor=10, latency=0.02, seed=seed),
        # Issue 12's model: every task with at least 0.5 ms of work of its own waits; then every task.
        "shifted-exponential": FaultModel(
            delay="shifted-exponential", delay_shift=0.05, delay_scale=0.1, min_run_time=0.0005, seed=seed
        ),
        "shifted-exponential-every-task": FaultModel(
            delay="shifted-exponential", delay_shift=0.05, delay_scale=0.1, seed=seed
        ),
        "pareto": FaultModel(delay="pareto", delay_shift=0.02, delay_scale=0.04, pareto_shape=1.5, seed=seed),
        "trace": FaultModel(delay="trace", trace=load_trace(TRACE), seed=seed),
    }


def _strategies(client: Client, rows: int, cols: int, seed: int) -> dict[str, dict[str, Any]]:
    workers = len(client.nthreads())
    plain = one_block_per_worker(client, rows, cols, seed=seed)  # plain Dask's best layout
    # cubed judges only groups of at least 10 tasks: give it two blocks per worker.
    plain_twice = one_block_per_worker(client, rows, cols, blocks=2 * workers, seed=seed)
    mds_data = one_block_per_worker(client, rows, cols, blocks=workers - 2, seed=seed)
    one_parity_data = one_block_per_worker(client, rows, cols, blocks=workers - 1, seed=seed)
    replicated_data = one_block_per_worker(client, rows, cols, blocks=workers // 2, seed=seed)

    def fresh(copy: int) -> Any:  # plain's layout under other keys (and other values)
        return one_block_per_worker(client, rows, cols, seed=seed + copy)

    dask_coded.register(client)
    mds = client.persist(dask_coded.encode(mds_data, code=dask_coded.MDSCode(workers - 2, workers)))
    one_parity = client.persist(
        dask_coded.encode(one_parity_data, code=dask_coded.MDSCode(workers - 1, workers))
    )
    replicated = client.persist(
        dask_coded.encode(replicated_data, code=dask_coded.ReplicationCode(workers // 2, 2))
    )
    return {
        "plain": {"backup": "off", "data": plain, "call": lambda x: da.dot(plain, x)},
        "backup-spark": {"backup": "spark", "data": plain, "call": lambda x: da.dot(plain, x)},
        "backup-cubed": {"backup": "cubed", "data": plain_twice, "call": lambda x: da.dot(plain_twice, x)},
        "replication": {
            "backup": "off",
            "data": replicated_data,
            "call": lambda x: dask_coded.dot(replicated, x),
            "code": replicated.code,
        },
        "mds-fixed": {
            "backup": "off",
            "data": mds_data,
            "call": lambda x: dask_coded.dot(mds, x),
            "code": mds.code,
        },
        "mds-one-parity": {
            "backup": "off",
            "data": one_parity_data,
            "call": lambda x: dask_coded.dot(one_parity, x),
            "code": one_parity.code,
        },
        # Each on its own copy of plain's data: backup tasks leave copies of a late block on other
        # workers, and the evidence calls would run the slow worker's block there.
        "coded-default": {"backup": "off", "data": fresh(1), "encode_with": {}},
        "coded-keep-chunks": {
            "backup": "off",
            "data": fresh(2),
            "encode_with": {"coded.data-blocks": "keep"},
        },
    }


#: Plain calls the plugin sees before the default encoding is chosen from its evidence.
EVIDENCE_CALLS = 4


def _encode_after_evidence(
    client: Client, data: Any, model: FaultModel, x: np.ndarray, settings: dict[str, Any]
) -> dict[str, Any]:
    """What ``dask_coded.encode`` gives a user on this cluster once the plugin has seen it at work."""
    with inject(client, model):
        for _ in range(EVIDENCE_CALLS):
            da.dot(data, x).compute()
        with dask.config.set(settings):
            coded = client.persist(dask_coded.encode(data))
        wait(coded)
    return {"call": lambda x: dask_coded.dot(coded, x), "code": coded.code}


def run(
    client: Client, rows: int, cols: int, repeats: int, seed: int, only: list[str] | None = None
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    results = []
    for index, (model_name, model) in enumerate(models(seed).items()):
        if only is not None and model_name not in only:
            continue
        # Fresh arrays for every model: an encode reads plain's blocks on other workers, and the copies
        # it leaves let plain Dask run a slow worker's block elsewhere, which a user's plain array,
        # one block per worker, cannot.
        strategies = _strategies(client, rows, cols, seed + 1000 * index)
        matrices = {name: strategy["data"].compute() for name, strategy in strategies.items()}
        for name, strategy in strategies.items():
            dask_coded.register(client, backup=strategy["backup"])
            x = rng.standard_normal(cols)
            if "encode_with" in strategy:
                settings = strategy["encode_with"]
                strategy.update(_encode_after_evidence(client, strategy["data"], model, x, settings))
            strategy["call"](x).compute()  # warm up: imports and deserialisation on every worker
            times, oracles, decoded, started, work, errors = [], [], [], [], [], []
            blocks = len(strategy["data"].chunks[0])
            with inject(client, model):
                for _ in range(repeats):
                    x = rng.standard_normal(cols)
                    launched = dask_coded.plugin_stats(client).get("backups_launched", 0)
                    with get_task_stream(client) as stream:
                        wall, start = time.time(), time.perf_counter()
                        result = strategy["call"](x).compute()
                        times.append(time.perf_counter() - start)
                    code = strategy.get("code")
                    if code is not None:
                        oracle, last = _oracle(stream.data, wall, code)
                        oracles.append(oracle)
                        decoded.append(last)
                    products = code.n if code is not None else blocks
                    backups = dask_coded.plugin_stats(client).get("backups_launched", 0) - launched
                    started.append(products + backups)
                    # Every product (and backup) covers 1/k of A's rows: k data blocks, or plain's blocks.
                    work.append((products + backups) / (code.k if code is not None else blocks))
                    errors.append(relative_error(result, matrices[name] @ x))
            row = {
                "model": model_name,
                "fault_model": {k: v for k, v in model.__dict__.items() if k != "trace"},
                "strategy": name,
                "code": repr(strategy.get("code")),
                "rows": rows,
                "cols": cols,
                "repeats": repeats,
                "latency": percentiles(times),
                "times": times,
                "products_started_per_call": float(np.mean(started)),
                "work_over_plain": float(np.mean(work)),
                "max_relative_error": max(errors),
            }
            if oracles:
                row["fraction_of_oracle_p50"] = float(
                    np.nanpercentile(oracles, 50) / np.percentile(decoded, 50)
                )
            results.append(row)
            latency = row["latency"]
            print(
                f"{model_name:20s} {name:14s} p50 {latency['p50']:.3f}s p95 {latency['p95']:.3f}s "
                f"products/call {row['products_started_per_call']:.1f} work {row['work_over_plain']:.2f}x "
                f"err {max(errors):.0e}"
                + (f" oracle {row['fraction_of_oracle_p50']:.2f}" if oracles else ""),
                flush=True,
            )
    dask_coded.register(client)
    plain_of = {r["model"]: r["latency"] for r in results if r["strategy"] == "plain"}
    for row in results:
        row["speedup_over_plain"] = {q: plain_of[row["model"]][q] / row["latency"][q] for q in ("p50", "p95")}
    return results


def plot(rows: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model_names = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(model_names), figsize=(4.2 * len(model_names), 3.4))
    for ax, model_name in zip(np.atleast_1d(axes), model_names):
        of_model = [r for r in rows if r["model"] == model_name]
        for name in dict.fromkeys(r["strategy"] for r in of_model):  # every run's calls together
            times = np.sort(np.concatenate([r["times"] for r in of_model if r["strategy"] == name]))
            ax.step(times, np.arange(1, len(times) + 1) / len(times), where="post", label=name)
        ax.set_xscale("log")
        ax.set_title(model_name)
        ax.set_xlabel("latency of one matvec (s)")
        ax.set_ylabel("fraction of calls")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    count = len({r.get("run", 0) for r in rows})
    fig.suptitle(
        f"A {rows[0]['rows']}x{rows[0]['cols']}, {rows[0]['repeats']} back-to-back calls per strategy"
        + (f" in each of {count} runs" if count > 1 else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: Seeds of consecutive runs this far apart: each model's arrays take seeds ``seed + 1000 * model + copy``.
RUN_SEED_STEP = 7919


def runs(
    client: Client, rows: int, cols: int, repeats: int, seed: int, count: int, only: list[str] | None
) -> list[dict[str, Any]]:
    """``count`` runs back to back on one cluster, each with its own seed; rows carry their ``run``."""
    results = []
    for number in range(count):
        for row in run(client, rows, cols, repeats, seed + RUN_SEED_STEP * number, only):
            results.append({**row, "run": number})
    if count > 1:
        print("p50 speed-up over plain, least / median / most of the runs:")
        for model_name, name in dict.fromkeys((r["model"], r["strategy"]) for r in results):
            ratios = [
                r["speedup_over_plain"]["p50"]
                for r in results
                if (r["model"], r["strategy"]) == (model_name, name)
            ]
            print(
                f"{model_name:30s} {name:18s} "
                f"{min(ratios):.2f}x / {np.median(ratios):.2f}x / {max(ratios):.2f}x"
            )
    return results


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = cluster_arguments(__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="whole runs back to back, to see their spread")
    parser.add_argument(
        "--models", default=None, help=f"comma-separated fault models (default all: {', '.join(models(0))})"
    )
    args = parser.parse_args(argv)
    only = None if args.models is None else args.models.split(",")
    unknown = sorted(set(only or ()) - set(models(0)))
    if unknown:
        parser.error(f"unknown fault models {unknown}; choose from {list(models(0))}")
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    rows, cols, repeats = (2000, 200, 4) if args.quick else (16000, 1000, 25)
    results = on_cluster(
        args.scheduler,
        args.workers,
        lambda client: runs(client, rows, cols, repeats, args.seed, args.runs, only),
    )
    save("strategies", results, args.out, plot)
    return results


if __name__ == "__main__":
    main()
