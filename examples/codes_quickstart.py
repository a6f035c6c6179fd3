"""Decode A @ x from whichever blocks finish first, and catch a wrong one.

Run: python examples/codes_quickstart.py
"""

import numpy as np

from dask_coded.codes import MDSCode

rng = np.random.default_rng(0)
A = rng.standard_normal((6000, 500))
x = rng.standard_normal(500)

code = MDSCode(k=4, n=6)  # 4 data blocks + 2 parity blocks
coded_blocks = code.encode(np.array_split(A, 4))
products = {i: block @ x for i, block in enumerate(coded_blocks)}

# Blocks 0 and 3 straggle: any 4 of the 6 products are enough.
finished = {i: products[i] for i in (1, 2, 4, 5)}
shapes = [b.shape[:1] for b in np.array_split(A, 4)]
y = np.concatenate(code.decode(finished, shapes=shapes))
print(f"decoded from blocks {sorted(finished)}: max error vs NumPy {np.abs(y - A @ x).max():.2e}")

# A worker returns garbage: with all 6 results, one wrong block is located and ignored.
products[2] = products[2] + 1e3
print("wrong block located:", code.locate_errors(products, max_errors=1))
y = np.concatenate(code.decode(products, max_errors=1, shapes=shapes))
print(f"decoded around it: max error vs NumPy {np.abs(y - A @ x).max():.2e}")
print(f"worst decoding condition number of {code}: {code.condition_number():.1f}")
