"""The codes: encode blocks, decode from any recovery set, locate wrong results.

Pure NumPy; nothing here imports Dask. Codes are also available by short
name through a small registry (:func:`make_code`, :func:`register_code`).
A product code registers its kind (:data:`ONE_SIDED` or :data:`TWO_SIDED`)
and a factory that builds it from the operands' chunking (:class:`Chunking`,
plain numbers), which is how ``dask_coded.dot`` and ``dask_coded.encode``
choose a code by name, the user's own codes included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .base import ONE_SIDED, TWO_SIDED, Code, DecodingPlan
from .gradient import GradientCode
from .grouped import GroupedMDSCode, group_size_for
from .matdot import MatDotCode
from .mds import MDSCode
from .polynomial import PolynomialCode
from .replication import ReplicationCode
from .sizing import auto_or_count, coded_block_count, count_option, data_blocks_for

__all__ = [
    "ONE_SIDED",
    "TWO_SIDED",
    "Chunking",
    "Code",
    "DecodingPlan",
    "GradientCode",
    "GroupedMDSCode",
    "MDSCode",
    "MatDotCode",
    "PolynomialCode",
    "ReplicationCode",
    "build_code",
    "code_kind",
    "make_code",
    "register_code",
    "registered_codes",
]


@dataclass(frozen=True)
class Chunking:
    """What a product code is built for: the operands' blocks and the options, as plain numbers.

    ``dask_coded.dot(a, b)`` and ``dask_coded.encode`` fill it in from the
    Dask chunks and ``dask.config``; a factory registered with
    :func:`register_code` reads what it needs.

    Attributes
    ----------
    row_blocks
        Blocks of ``a`` along its rows (1 when ``a`` is a vector, or unknown
        because only the right operand is being encoded).
    col_blocks
        Blocks of ``b`` along its columns (1 when ``b`` is a vector, or
        unknown because only the left operand is being encoded).
    inner_blocks
        Blocks along the contracted dimension.
    blocks
        Blocks of the operand a one-sided code splits: ``row_blocks`` when
        it encodes ``a``, ``col_blocks`` when it encodes ``b``. That many
        data blocks (``k``) keep the operand's own chunks.
    parity
        ``coded.parity`` as a number (``auto`` resolved from the scheduler
        plugin's evidence): blocks of redundancy against stragglers.
    max_errors
        Wrong block products each group must locate and correct (2 more
        blocks of redundancy each).
    workers
        The cluster's number of workers, when a client is connected: groups
        put one member on each worker, and a faulty worker computes all its
        members wrong.
    resplit
        Whether the caller may re-split the operand into another number of
        data blocks than ``blocks`` (``dask_coded.encode`` does, under
        ``coded.data-blocks: auto``; ``dask_coded.dot`` keeps the chunks).
    delays
        ``(shift, scale)`` of the shifted exponential the cluster's task
        times fit (:func:`~dask_coded.codes.sizing.delays_from_evidence`),
        None without evidence or with ``coded.parity`` a number.
    slow
        Workers the evidence calls slow (0 without evidence): ``parity``
        holds one parity for each, plus one.
    options
        Every ``coded.*`` option (``generator``, ``seed``, ``replicas``,
        and any key of the user's own).
    """

    row_blocks: int
    col_blocks: int
    inner_blocks: int
    blocks: int
    parity: int = 2
    max_errors: int = 0
    workers: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    resplit: bool = False
    delays: tuple[float, float] | None = None
    slow: int = 0


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Code]
    kind: str | None
    from_chunking: Callable[[Chunking], Code] | None


_REGISTRY: dict[str, _Entry] = {}
_KINDS = (ONE_SIDED, TWO_SIDED)


def register_code(
    name: str,
    factory: Callable[..., Code],
    *,
    kind: str | None = None,
    from_chunking: Callable[[Chunking], Code] | None = None,
) -> None:
    """Make ``make_code(name, ...)`` build codes with ``factory(...)``, and ``dot(..., code=name)`` use them.

    Parameters
    ----------
    name
        The code's name; a name can be registered once.
    factory
        Builds the code from keyword parameters (:func:`make_code`).
    kind
        :data:`ONE_SIDED` (the code splits one operand into ``k`` blocks
        and must be systematic: its first ``k`` coded blocks are the data
        blocks) or :data:`TWO_SIDED` (it encodes both operands, see
        :attr:`Code.splits`); None for codes that are not product codes.
    from_chunking
        Builds the code for a product from a :class:`Chunking`; required
        with ``kind``. A one-sided code must have ``k == chunking.blocks``.

    Examples
    --------
    >>> register_code("mds", MDSCode)
    Traceback (most recent call last):
    ...
    ValueError: a code named 'mds' is already registered
    >>> register_code("half", MDSCode, kind="one-sided")
    Traceback (most recent call last):
    ...
    ValueError: a one-sided code needs from_chunking, a factory taking a Chunking
    """
    if name in _REGISTRY:
        raise ValueError(f"a code named {name!r} is already registered")
    if kind is not None and kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS} or None, got {kind!r}")
    if kind is not None and from_chunking is None:
        raise ValueError(f"a {kind} code needs from_chunking, a factory taking a Chunking")
    _REGISTRY[name] = _Entry(factory, kind, from_chunking)


def make_code(name: str, **params: Any) -> Code:
    """Build the code registered as ``name`` with keyword ``params``.

    Examples
    --------
    >>> make_code("mds", k=4, n=6)
    MDSCode(k=4, n=6, generator='gaussian', seed=0)
    """
    return _entry(name).factory(**params)


def build_code(name: str, chunking: Chunking) -> Code:
    """Build the product code registered as ``name`` for operands chunked as ``chunking``.

    Examples
    --------
    >>> build_code("mds", Chunking(row_blocks=4, col_blocks=1, inner_blocks=1, blocks=4, parity=2))
    MDSCode(k=4, n=6, generator='gaussian', seed=0)
    >>> build_code("matdot", Chunking(row_blocks=1, col_blocks=1, inner_blocks=3, blocks=1, parity=1))
    MatDotCode(m=3, n=6)
    """
    entry = _entry(name)
    if entry.from_chunking is None:
        raise ValueError(f"code {name!r} is not a product code (it was registered without a kind)")
    code = entry.from_chunking(chunking)
    if not isinstance(code, Code):
        raise TypeError(f"the factory of code {name!r} returned {type(code).__name__}, not a Code")
    if entry.kind == ONE_SIDED and code.k != chunking.blocks and not chunking.resplit:
        raise ValueError(f"code {name!r} built k={code.k} data blocks for an operand in {chunking.blocks}")
    return code


def code_kind(code: Code | str) -> str | None:
    """:data:`ONE_SIDED`, :data:`TWO_SIDED` or None, for a code object or a registered name.

    A code object says its own kind (:attr:`Code.kind`); a name has the
    kind it was registered with. None: not a product code, or no code of
    that name.

    Examples
    --------
    >>> code_kind("polynomial"), code_kind(MDSCode(2, 3)), code_kind("gradient"), code_kind("nope")
    ('two-sided', 'one-sided', None, None)
    """
    if isinstance(code, Code):
        return type(code).kind
    entry = _REGISTRY.get(code)
    return entry.kind if entry is not None else None


def registered_codes(kind: str | None = None) -> list[str]:
    """The names :func:`make_code` accepts; with ``kind``, only the product codes of that kind.

    Examples
    --------
    >>> [name for name in registered_codes(ONE_SIDED) if name in ("mds", "replication")]
    ['mds', 'replication']
    """
    return sorted(name for name, entry in _REGISTRY.items() if kind is None or entry.kind == kind)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown code {name!r}; registered codes: {sorted(_REGISTRY)}") from None


def _mds_for(chunking: Chunking) -> Code:
    chunking = _one_member_per_worker(chunking)
    k, options = chunking.blocks, chunking.options
    generator, seed = (
        options.get("generator", "gaussian"),
        count_option("coded.seed", options.get("seed", 0), 0),
    )
    if (
        chunking.resplit
        and chunking.workers is not None
        and k <= chunking.workers
        and not chunking.max_errors
        and options.get("group-size", "auto") == "auto"
    ):
        # One coded block per worker, k chosen from the cluster's delays: the caller re-splits.
        data_blocks = data_blocks_for(chunking.workers, chunking.parity, chunking.delays)
        if data_blocks is not None:
            return MDSCode(data_blocks, chunking.workers, generator=generator, seed=seed)
    group_size = _group_size(chunking)
    if k <= group_size:
        n = coded_block_count(k, chunking.parity, chunking.max_errors, chunking.workers)
        return MDSCode(k, n, generator=generator, seed=seed)
    parity = (
        coded_block_count(group_size, chunking.parity, chunking.max_errors, chunking.workers) - group_size
    )
    return GroupedMDSCode(k, group_size, parity, generator=generator, seed=seed)


def _one_member_per_worker(chunking: Chunking) -> Chunking:
    """``chunking`` with the parity against a passing straggler dropped where groups need it.

    On a cluster too small for groups of one member per worker with this
    parity (:func:`~dask_coded.codes.grouped.group_size_for`), groups would
    hold several members on each worker, and a slow machine's several
    members of a group would outnumber its parities: the call waits for it
    (4 workers, 128 chunks, groups of 16 + 2: slower than ``da.dot`` in a
    reviewer's reproducer). A parity per slow worker, one member per
    worker, is worth more than the margin.

    Examples
    --------
    >>> _one_member_per_worker(Chunking(4, 1, 1, 4, parity=2, workers=4, slow=1)).parity
    1
    >>> _one_member_per_worker(Chunking(4, 1, 1, 4, parity=2, workers=8, slow=1)).parity  # room for both
    2
    """
    workers, errors = chunking.workers, 2 * chunking.max_errors
    if (
        workers is None
        or not 0 < chunking.slow < chunking.parity
        or chunking.options.get("group-size", "auto") != "auto"
        or workers >= 3 * (chunking.parity + errors)
        or workers < 3 * (chunking.slow + errors)
    ):
        return chunking
    return dataclasses.replace(chunking, parity=chunking.slow)


def _group_size(chunking: Chunking) -> int:
    """``coded.group-size``: a number, or ``auto`` (:func:`~dask_coded.codes.grouped.group_size_for`)."""
    setting = auto_or_count("coded.group-size", chunking.options.get("group-size", "auto"), minimum=1)
    if setting == "auto":
        return group_size_for(chunking.workers, chunking.parity + 2 * chunking.max_errors)
    return setting


def _replication_for(chunking: Chunking) -> Code:
    # Outvoting t wrong copies of a block needs 2t + 1 of them.
    replicas = count_option("coded.replicas", chunking.options.get("replicas", 2), minimum=1)
    replicas = max(replicas, 2 * chunking.max_errors + 1)
    return ReplicationCode(chunking.blocks, r=replicas)


def _polynomial_for(chunking: Chunking) -> Code:
    m, p = chunking.row_blocks, chunking.col_blocks
    return PolynomialCode(m, p, n=m * p + chunking.parity + 2 * chunking.max_errors)


def _matdot_for(chunking: Chunking) -> Code:
    m = chunking.inner_blocks
    return MatDotCode(m, n=2 * m - 1 + chunking.parity + 2 * chunking.max_errors)


register_code("replication", ReplicationCode, kind=ONE_SIDED, from_chunking=_replication_for)
register_code("mds", MDSCode, kind=ONE_SIDED, from_chunking=_mds_for)
register_code("polynomial", PolynomialCode, kind=TWO_SIDED, from_chunking=_polynomial_for)
register_code("matdot", MatDotCode, kind=TWO_SIDED, from_chunking=_matdot_for)
register_code("gradient", GradientCode)
