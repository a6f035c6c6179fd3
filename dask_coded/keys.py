"""The names of the keys dask-coded puts in graphs, in one place.

The scheduler plugin recognises coded blocks by them, fault models select
tasks by them, and the dashboard, tests and benchmarks find tasks by them.
Every key is ``(PREFIX + tokenize(...), *block index)``, as in dask.array.
"""

from __future__ import annotations

__all__ = [
    "BACKUP",
    "DECODE",
    "ENCODE",
    "ENCODE_COLUMNS",
    "ENCODE_ROWS",
    "ENCODE_TWO_SIDED",
    "EXPONENTS",
    "MAX_ABS",
    "PRODUCT",
    "SGD",
    "SGD_GRADIENT",
    "SGD_SHARD",
    "TRANSPOSE",
    "key_name",
]

#: Encoded blocks: a CodedArray's row or column encoding (the axis is in the name, so the
#: plugin can read a block's coded index from its key), and the two sides of a two-sided code.
ENCODE = "coded-encode-"
ENCODE_ROWS = ENCODE + "rows-"
ENCODE_COLUMNS = ENCODE + "cols-"
ENCODE_TWO_SIDED = (ENCODE + "a-", ENCODE + "b-")
#: Equilibration of an encoding: each chunk's largest magnitude, and the exponents from them.
MAX_ABS = "coded-maxabs-"
EXPONENTS = "coded-exponents-"
#: A CodedArray's transpose.
TRANSPOSE = "coded-transpose-"
#: The coded block products of a group, and the decode of each output block.
PRODUCT = "coded-product-"
DECODE = "coded-decode-"
#: Backup copies of late tasks (speculative execution).
BACKUP = "coded-backup-"
#: The SGD trainers' tasks: gradients, and copies of shards placed for gradient coding.
SGD = "sgd-"
SGD_GRADIENT = SGD + "gradient-"
SGD_SHARD = SGD + "shard-"


def key_name(key: object) -> str:
    """The name part of a key: ``key[0]`` for a tuple key, the key itself for a string.

    Examples
    --------
    >>> key_name(("coded-product-abc", 3, 0)), key_name("finalize-abc")
    ('coded-product-abc', 'finalize-abc')
    """
    return str(key[0]) if isinstance(key, tuple) and key else str(key)
