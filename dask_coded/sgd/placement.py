"""Which worker holds which shard of the training data: pure functions of indices, no cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["balance_shards", "coded_copies"]


def balance_shards(holders: Sequence[Sequence[int]], workers: int) -> list[int]:
    """The worker of each shard: one holding it already if possible, each worker ``S // P`` or one more.

    Moving a shard copies it from worker to worker, so shards stay where
    they are unless a worker would hold more than its share while another
    holds less.

    Parameters
    ----------
    holders
        For each of the S shards, the indices of the workers holding it now
        (empty when none of ``range(workers)`` does).
    workers
        P, the number of workers.

    Returns
    -------
    list of int
        The worker index of each shard.

    Examples
    --------
    >>> balance_shards([[0], [1], [2]], 3)  # one each already: nothing moves
    [0, 1, 2]
    >>> balance_shards([[0], [0], [1], []], 3)  # worker 2 gets the shard nobody holds
    [0, 0, 1, 2]
    >>> balance_shards([[0], [0], [0]], 3)  # the scheduler put them all on worker 0
    [0, 1, 2]
    """
    if workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    share, extras = divmod(len(holders), workers)
    count = [0] * workers
    owner: list[int | None] = [None] * len(holders)

    def keep(shard: int, limit: int) -> bool:
        for worker in sorted((h for h in holders[shard] if 0 <= h < workers), key=lambda h: (count[h], h)):
            if count[worker] < limit:
                owner[shard], count[worker] = worker, count[worker] + 1
                return True
        return False

    for shard in range(len(holders)):  # first, up to the share each where the shards are
        keep(shard, share)
    for shard in range(len(holders)):  # then one extra each, while extras remain
        if owner[shard] is None and extras and keep(shard, share + 1):
            extras -= 1
    for shard in range(len(holders)):  # the rest move to the least loaded workers
        if owner[shard] is None:
            worker = min(range(workers), key=lambda w: (count[w], w))
            extras -= count[worker] == share
            owner[shard], count[worker] = worker, count[worker] + 1
    return [int(w) for w in owner]  # type: ignore[arg-type]


def coded_copies(assignments: Sequence[Mapping[int, float]]) -> dict[int, list[int]]:
    """Worker ``i`` holds partition ``i``; which workers need a copy of each partition for gradient coding.

    Each partition ends up on ``s + 1`` workers (its own and the copies'),
    never on all of them unless ``s + 1 = P``.

    Examples
    --------
    >>> from dask_coded.codes import GradientCode
    >>> code = GradientCode(4, 1, "cyclic")
    >>> coded_copies([code.assignment(i) for i in range(4)])
    {0: [3], 1: [0], 2: [1], 3: [2]}
    """
    copies: dict[int, list[int]] = {j: [] for j in range(len(assignments))}
    for worker, assignment in enumerate(assignments):
        for partition in assignment:
            if partition != worker:
                copies[partition].append(worker)
    return copies
