"""How many coded blocks a group needs to outlast slow and faulty workers."""

from __future__ import annotations

__all__ = ["coded_block_count"]


def coded_block_count(k: int, stragglers: int, max_errors: int = 0, workers: int | None = None) -> int:
    """``n`` for a ``k``-of-``n`` code that survives slow and faulty *workers*, not only blocks.

    Member ``i`` of a group runs on worker ``i mod W``, so with ``n > W`` a
    worker computes up to ``ceil(n / W)`` members, and a faulty one gets them
    all wrong. Correcting ``max_errors`` faulty workers while ``stragglers``
    others are late needs ``n - (stragglers + 2 * max_errors) * ceil(n / W)
    >= k``. Without ``max_errors``, or when ``W`` is unknown, that is
    ``k + stragglers + 2 * max_errors``. Where the cluster has too few
    workers for ``stragglers`` too, fewer stragglers are tolerated; with
    ``W <= 2 * max_errors`` no code can tell a faulty worker apart.

    Examples
    --------
    >>> coded_block_count(4, stragglers=2)
    6
    >>> coded_block_count(4, stragglers=0, max_errors=1, workers=4)  # 2 members a worker
    8
    >>> coded_block_count(4, stragglers=2, max_errors=1, workers=3)  # 3 workers: 1 per data block
    12
    >>> coded_block_count(4, stragglers=2, max_errors=1, workers=2)
    Traceback (most recent call last):
    ...
    ValueError: max_errors=1 needs at least 3 workers to outvote a faulty one; the cluster has 2
    """
    if not max_errors or workers is None:
        return k + stragglers + 2 * max_errors
    if workers <= 2 * max_errors:
        raise ValueError(
            f"max_errors={max_errors} needs at least {2 * max_errors + 1} workers to outvote a "
            f"faulty one; the cluster has {workers}"
        )
    lost = min(stragglers, workers - 2 * max_errors - 1) + 2 * max_errors
    n = k + lost
    while n - lost * -(-n // workers) < k:
        n += 1
    return n
