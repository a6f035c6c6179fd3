"""The names of the keys dask-coded puts in graphs, in one place.

The scheduler plugin recognises coded blocks by them, fault models select
tasks by them, and the dashboard, tests and benchmarks find tasks by them.
Every key is ``(PREFIX + tokenize(...), *block index)``, as in dask.array.
"""

from __future__ import annotations

import re

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
    "RECHUNK",
    "SGD",
    "SGD_GRADIENT",
    "SGD_SHARD",
    "TRANSPOSE",
    "group_layout",
    "grouped_name",
    "is_decode",
    "key_name",
    "replica_layout",
    "replicated_name",
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
#: Decoded blocks cut into the chunks ``da.dot`` gives, when the code split an operand its own way.
RECHUNK = "coded-rechunk-"
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


def is_decode(key: object) -> bool:
    """Whether a key is a decode task's: cheap, before looking a task up on a hot path.

    Examples
    --------
    >>> is_decode((DECODE + "abc", 0, 0)), is_decode(PRODUCT + "abc")
    (True, False)
    """
    return key_name(key).startswith(DECODE)


_LAYOUT = re.compile(r"k(\d+)g(\d+)p(\d+)-")


def grouped_name(prefix: str, k: int, group_size: int, parity: int, token: str) -> str:
    """The name of a grouped encoding: ``k`` data blocks, ``group_size`` a group, ``parity`` parities each.

    The plugin places each group's members on distinct workers from the
    key alone, even for an encoding persisted long before any product.

    Examples
    --------
    >>> grouped_name(ENCODE_ROWS, 10, 4, 2, "abc")
    'coded-encode-rows-k10g4p2-abc'
    >>> group_layout(grouped_name(ENCODE_ROWS, 10, 4, 2, "abc")), group_layout("coded-encode-rows-abc")
    ((10, 4, 2), None)
    """
    return f"{prefix}k{k}g{group_size}p{parity}-{token}"


def group_layout(name: str) -> tuple[int, int, int] | None:
    """``(k, group_size, parity)`` of a name built by :func:`grouped_name`, or None."""
    for prefix in (ENCODE_ROWS, ENCODE_COLUMNS):
        if name.startswith(prefix):
            match = _LAYOUT.match(name, len(prefix))
            if match is None:
                return None
            k, group_size, parity = map(int, match.groups())
            return k, group_size, parity
    return None


_REPLICAS = re.compile(r"k(\d+)r-")


def replicated_name(prefix: str, k: int, token: str) -> str:
    """The name of a replicated encoding of ``k`` blocks: coded block ``i`` copies block ``i % k``.

    The plugin keeps the copies of a block on distinct workers from the key
    alone (:func:`~dask_coded.policy.spread_position`).

    Examples
    --------
    >>> replicated_name(ENCODE_ROWS, 4, "abc")
    'coded-encode-rows-k4r-abc'
    >>> replica_layout(replicated_name(ENCODE_ROWS, 4, "abc")), replica_layout("coded-encode-rows-abc")
    (4, None)
    """
    return f"{prefix}k{k}r-{token}"


def replica_layout(name: str) -> int | None:
    """``k`` of a name built by :func:`replicated_name`, or None."""
    for prefix in (ENCODE_ROWS, ENCODE_COLUMNS, *ENCODE_TWO_SIDED):
        if name.startswith(prefix):
            match = _REPLICAS.match(name, len(prefix))
            return None if match is None else int(match.group(1))
    return None
