"""How small a wrong block product ``max_errors`` finds, with and without the products' own round-off bounds.

MDS(k, k + 2) codes (max_errors=1) over blocks of shape (rows, inner) times
a vector. One product, chosen in turn, gets an error of a given size
relative to its Frobenius norm (Gaussian, spread over its entries). Each
trial ends one of three ways: located (the wrong block named), detected
(``DecodingError``: wrong results found, not located) or missed (passed as
round-off). Two allowances: the products' own bounds (``eps || |A_i| |x| ||``,
what ``dask_coded.dot`` uses) and the results' size (what ``code.decode``
uses on bare arrays). Data: nonnegative, Gaussian, and rows that cancel.
Fault-free trials must come back clean: a false alarm is a crash where
``da.dot`` works.

Run: python -m benchmarks.bench_detection [--quick]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from benchmarks.common import save
from dask_coded import DecodingError
from dask_coded.blocks import checked_product_block
from dask_coded.codes import MDSCode

ERRORS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
DATA = ("nonnegative", "gaussian", "cancelling")


def _operands(data: str, k: int, rows: int, inner: int, dtype: Any, rng: np.random.Generator) -> Any:
    if data == "nonnegative":
        blocks, x = [rng.random((rows, inner)) for _ in range(k)], rng.random(inner)
    elif data == "gaussian":
        blocks, x = [rng.standard_normal((rows, inner)) for _ in range(k)], rng.standard_normal(inner)
    else:  # rows of +1e4 and -1e4 that sum to about 1
        half = inner // 2
        blocks = []
        for _ in range(k):
            big = rng.standard_normal((rows, half)) * 1e4
            blocks.append(np.concatenate([big, -big + rng.standard_normal((rows, inner - half))], axis=1))
        x = np.ones(inner)
    return [b.astype(dtype) for b in blocks], x.astype(dtype)


def trial(
    code: MDSCode, data: str, size: float, rows: int, inner: int, dtype: Any, seed: int
) -> dict[str, str]:
    """One wrong product of relative size ``size`` (or none): the outcome under each allowance."""
    rng = np.random.default_rng(seed)
    blocks, x = _operands(data, code.k, rows, inner, dtype, rng)
    checked = [checked_product_block([c.astype(dtype)], [x]) for c in code.encode(blocks)]
    products = {i: p.product for i, p in enumerate(checked)}
    victim = seed % code.n
    if size:
        error = rng.standard_normal(products[victim].shape)
        error *= size * np.linalg.norm(products[victim]) / np.linalg.norm(error)
        products[victim] = products[victim] + error.astype(products[victim].dtype)
    outcomes = {}
    for allowance, roundoff in (
        ("own bounds", {i: p.roundoff for i, p in enumerate(checked)}),
        ("size", None),
    ):
        try:
            found = code.locate_errors(products, max_errors=1, roundoff=roundoff)
        except DecodingError:
            outcomes[allowance] = "detected" if size else "false alarm"
            continue
        if found == (victim,) and size:
            outcomes[allowance] = "located"
        elif not found:
            outcomes[allowance] = "missed" if size else "clean"
        else:
            outcomes[allowance] = "wrong block named"
    return outcomes


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few trials (a smoke run)")
    parser.add_argument("--out", default=None, help="folder for detection.json")
    args = parser.parse_args(argv)
    trials, shapes = (6, [(100, 100)]) if args.quick else (48, [(100, 100), (100, 1000)])
    rows = []
    for dtype in (np.float32, np.float64):
        for k in (4, 6):
            code = MDSCode(k, k + 2)
            for (block_rows, inner), data, size in ((s, d, e) for s in shapes for d in DATA for e in ERRORS):
                counts: dict[str, dict[str, int]] = {"own bounds": {}, "size": {}}
                for seed in range(trials):
                    for allowance, outcome in trial(code, data, size, block_rows, inner, dtype, seed).items():
                        counts[allowance][outcome] = counts[allowance].get(outcome, 0) + 1
                row = {
                    "dtype": np.dtype(dtype).name,
                    "k": k,
                    "n": k + 2,
                    "rows": block_rows,
                    "inner": inner,
                    "data": data,
                    "relative_error": size,
                    "trials": trials,
                    "outcomes": counts,
                }
                rows.append(row)
                print(
                    f"{row['dtype']:7s} MDS({k},{k + 2}) {block_rows}x{inner} {data:11s} error {size:6.0e}  "
                    + "  ".join(f"{a}: {dict(sorted(c.items()))}" for a, c in counts.items()),
                    flush=True,
                )
    save("detection", rows, args.out)
    return rows


if __name__ == "__main__":
    main()
