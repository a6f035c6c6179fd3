"""Encode and decode cost of the codes, against the block product they protect.

For k data blocks of shape (b, b) multiplied by a (b, b) matrix, times:
the product of one block (what a worker does), encoding all parities, and
decoding when every data block but the parities' worth is missing (the
worst case). Also the worst decoding condition number (sampled above 2000
recovery sets).

Run: python benchmarks/bench_codes.py [--quick]
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import numpy as np

from benchmarks.common import best_time, save
from dask_coded import ConditioningWarning
from dask_coded.codes import MDSCode

CONFIGS = [(4, 6), (8, 10), (16, 20), (10, 20)]


def measure(block: int, k: int, n: int, rng: np.random.Generator) -> dict[str, float]:
    code = MDSCode(k, n)
    blocks = [rng.standard_normal((block, block)) for _ in range(k)]
    right = rng.standard_normal((block, block))
    product = best_time(lambda: blocks[0] @ right)
    encode = best_time(lambda: code.encode(blocks), repeat=2)
    coded = code.encode(blocks)
    lost = min(n - k, k)
    survivors = list(range(lost, n))[:k]
    results = {i: coded[i] @ right for i in survivors}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditioningWarning)
        decode = best_time(lambda: code.decode(results))
        error = max(
            np.abs(d - b @ right).max() / np.abs(b @ right).max()
            for d, b in zip(code.decode(results), blocks)
        )
    return {
        "block": block,
        "k": k,
        "n": n,
        "product_s": product,
        "encode_s": encode,
        "decode_s": decode,
        "encode_over_product": encode / product,
        "decode_over_product": decode / product,
        "worst_condition": code.condition_number(samples=2000),
        "relative_error": float(error),
        "data_blocks_lost": lost,
    }


def plot(rows: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for ax, what in zip(axes, ("encode", "decode")):
        for k, n in sorted({(r["k"], r["n"]) for r in rows}):
            mine = [r for r in rows if (r["k"], r["n"]) == (k, n)]
            ax.loglog(
                [r["block"] for r in mine],
                [r[f"{what}_over_product"] for r in mine],
                "o-",
                label=f"k={k} n={n}",
            )
        ax.axhline(1.0, color="k", linestyle=":", linewidth=1)
        ax.set_xlabel("block size b (b x b blocks)")
        ax.set_title(f"{what} time / one block product")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--out", default=None, help="folder for codes.json")
    args = parser.parse_args(argv)
    sizes = [128, 256] if args.quick else [256, 1024, 4096]
    rng = np.random.default_rng(0)
    rows = []
    for block in sizes:
        for k, n in CONFIGS:
            if block * block * 8 * (k + n) > 6e9:  # keep well inside 24 GiB
                continue
            row = measure(block, k, n, rng)
            rows.append(row)
            print(
                f"b={block:5d} k={k:2d} n={n:2d}  encode/product {row['encode_over_product']:7.3f}  "
                f"decode/product {row['decode_over_product']:7.3f}  cond {row['worst_condition']:9.3g}  "
                f"err {row['relative_error']:.1e}",
                flush=True,
            )
    save("codes", rows, args.out, plot)
    return rows


if __name__ == "__main__":
    main()
