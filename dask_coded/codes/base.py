"""The interface every code implements, and the linear decoder they share.

Every code here is linear. Worker ``i`` computes a coded product that is a
known linear combination, row ``i`` of :attr:`Code.generator`, of ``K``
unknown products (for a row-split ``A @ B`` these are the ``A_j @ B``). What
the caller wants back, the *targets*, are other known combinations of the
unknowns (:attr:`Code.targets`): the unknowns themselves for MDS and
polynomial codes, their sum for MatDot and gradient codes. Decoding from a set
``S`` of finished blocks is then one small linear solve, ``targets @
generator[S]^-1`` (a pseudo-inverse for sets larger than needed), applied to
the block results.

Error location (CodeNet, ABFT) works on *sketches*: a few random projections
``u^T R v`` of each block result. A set of results is consistent with the code
when its sketches lie in the column space of the generator rows; the smallest
set of blocks whose removal makes the rest consistent is the set of wrong
blocks. Gaussian projections miss a nonzero error with probability zero, and
the search runs on a handful of numbers per block instead of whole blocks.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np

from ..errors import ConditioningWarning, DaskCodedWarning, DecodingError
from .arithmetic import (
    _all_finite,
    _combine_rows,
    _common_shape,
    _mixed_sizes,
    _pad_to,
    _range_of,
    _selected_block,
    _working_dtype,
    combine,
    equilibrated_combine,
    frobenius_norm,
    max_abs,
    scale_by_power_of_two,
)

__all__ = [
    "ONE_SIDED",
    "TWO_SIDED",
    "Code",
    "CodeGroup",
    "DecodingPlan",
]

#: A product code that splits one operand into ``k`` blocks (a systematic code: its first ``k``
#: coded blocks are the data blocks), like MDS codes and replication.
ONE_SIDED = "one-sided"
#: A product code that encodes both operands (see :attr:`Code.splits`), like polynomial and MatDot codes.
TWO_SIDED = "two-sided"

#: How many random projections of each block the error search compares.
_SKETCHES = 3
#: Round-off allowance of the consistency check, in units of ``eps * cond`` times the results' size.
_NOISE_FACTOR = 1e4
#: The same in units of the products' own bounds on their round-off, ``eps || |A_i| |x| ||`` (or of
#: the projections' own rounding, where larger). Honest MDS products left residuals of at most 3.9
#: such bounds times ``cond * sqrt(k)`` (float16 to float64, 10 to 16000 inner terms, random,
#: positive and cancelling data, parities included), and 1.2 with identical blocks or one column
#: dominating every block.
_ROUNDOFF_FACTOR = 1e2
#: Projections this far above the median block's cannot be compared (their squares overflow): wrong.
_COMPARABLE = 2.0**400
#: Relative accuracy a decode promises, by the byte size of the dtype's real part.
_ACCURACY = {2: 1e-2, 4: 1e-4, 8: 1e-10}


def accuracy_target(dtype: np.dtype) -> float:
    """The relative error a well-conditioned decode in ``dtype`` stays below."""
    real = np.finfo(dtype)
    return _ACCURACY.get(real.dtype.itemsize, 1e-10)


@functools.cache
def _accuracy(dtype: np.dtype) -> tuple[float, float]:
    """``dtype``'s epsilon and :func:`accuracy_target` (np.finfo costs more than a small decode's sums)."""
    return float(np.finfo(dtype).eps), accuracy_target(dtype)


def _check_dtype(array: np.ndarray, what: str, index: int | None = None) -> None:
    if array.dtype.kind not in "iufc":
        what = what if index is None else f"{what} {index}"
        raise TypeError(
            f"{what} has dtype {array.dtype}; coded computation needs numbers (integer, floating or complex)"
        )


class CodeGroup(NamedTuple):
    """A part of a one-sided code that encodes and decodes on its own (see :attr:`Code.groups`).

    Coded block ``members[i]`` of the whole code is coded block ``i`` of
    ``code``: the group's data blocks first, then its parities.
    """

    code: Code
    members: tuple[int, ...]


class Code:
    """A linear code over block products: ``n`` coded blocks, ``K`` unknowns.

    Subclasses set :attr:`k`, :attr:`n`, :attr:`generator` and
    :attr:`targets`, and say which index sets can be decoded
    (:meth:`redundancy`) and which one to use (:meth:`choose_recovery_set`).
    Codes are immutable values: equal parameters give equal, hashable codes
    with equal Dask tokens.
    """

    k: int
    n: int
    #: ``(n, K)``: coded block ``i`` computes ``generator[i] @ unknowns``.
    generator: np.ndarray
    #: ``(q, K)``: decode returns ``targets @ unknowns``.
    targets: np.ndarray
    #: whether ``max_errors`` may be used with this code
    supports_error_correction: bool = True
    #: How ``dask_coded.dot`` uses the code: :data:`ONE_SIDED`, :data:`TWO_SIDED`, or None (not a
    #: product code, e.g. gradient codes).
    kind: ClassVar[str | None] = None
    #: Two-sided codes: how ``a`` and ``b`` are split, ``("rows", "cols")`` (coded product ``i`` is
    #: ``(sum_j a_w[i, j] A_j) @ (sum_l b_w[i, l] B_l)`` over row blocks of A and column blocks of B;
    #: target ``j * p + l`` is ``A_j @ B_l``) or ``("inner", "inner")`` (both along the inner
    #: dimension; the one target is ``A @ B``). ``a_w, b_w`` are :attr:`operand_weights`.
    splits: ClassVar[tuple[str, str] | None] = None

    @property
    def operand_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Two-sided codes: weights ``(a_w, b_w)`` encoding each operand's blocks (see :attr:`splits`)."""
        raise NotImplementedError(f"{type(self).__name__} is not a two-sided code")

    @property
    def uncoded_terms(self) -> int:
        """Two-sided codes: how many block products ``A_j @ B_l`` the targets are made of.

        Computed uncoded (:meth:`uncoded_operands`), members past these terms
        repeat them, like a replication's copies.

        Examples
        --------
        >>> from dask_coded.codes import MatDotCode, PolynomialCode
        >>> PolynomialCode(m=2, p=3, n=8).uncoded_terms, MatDotCode(m=2, n=4).uncoded_terms
        (6, 2)
        """
        a_weights, b_weights = self.operand_weights
        if self.splits == ("inner", "inner"):
            return int(a_weights.shape[1])
        return int(a_weights.shape[1] * b_weights.shape[1])

    def uncoded_operands(self, member: int) -> tuple[int, int]:
        """Two-sided codes: the blocks of A and B that ``member`` multiplies when it is not coded.

        Where coding cannot give ``da.dot``'s answer (NaN, inf or masks in
        the operands, which coded operands would spread into every product,
        or values no decode could cancel accurately), ``dask_coded.dot`` has
        member ``i`` multiply the data blocks of term ``i % terms``
        itself (term ``j * p + l`` is ``A_j @ B_l`` for ``("rows", "cols")``
        splits, term ``j`` is ``A_j @ B_j`` for ``("inner", "inner")``): the
        first members compute every term once, the rest repeat them.

        Examples
        --------
        >>> from dask_coded.codes import MatDotCode, PolynomialCode
        >>> [PolynomialCode(m=2, p=2, n=5).uncoded_operands(i) for i in range(5)]
        [(0, 0), (0, 1), (1, 0), (1, 1), (0, 0)]
        >>> [MatDotCode(m=2, n=3).uncoded_operands(i) for i in range(3)]
        [(0, 0), (1, 1), (0, 0)]
        """
        term = member % self.uncoded_terms
        if self.splits == ("inner", "inner"):
            return term, term
        columns = self.operand_weights[1].shape[1]
        return divmod(term, columns)

    def uncoded_members(self, output: int, indices: Iterable[int]) -> tuple[int, ...] | None:
        """Two-sided codes: uncoded members among ``indices`` whose products sum to ``output``, or None.

        One member per term of the output (:meth:`uncoded_operands`), the
        first of each in ``indices``; None while a term has none.

        Examples
        --------
        >>> from dask_coded.codes import MatDotCode, PolynomialCode
        >>> PolynomialCode(m=2, p=2, n=5).uncoded_members(0, [4, 1])
        (4,)
        >>> MatDotCode(m=2, n=3).uncoded_members(0, [2, 1])
        (2, 1)
        >>> MatDotCode(m=2, n=3).uncoded_members(0, [0, 2]) is None
        True
        """
        terms = self.uncoded_terms
        wanted = range(terms) if self.splits == ("inner", "inner") else (output,)
        first: dict[int, int] = {}
        for i in self._validate_indices(indices):
            first.setdefault(i % terms, i)
        if any(term not in first for term in wanted):
            return None
        return tuple(first[term] for term in wanted)

    @property
    def systematic(self) -> bool:
        """Whether coded blocks ``0..k-1`` are the ``k`` unknowns themselves, which are the targets.

        One-sided codes must be: a :class:`~dask_coded.CodedArray` keeps its
        data blocks as they are and appends the parities.

        Examples
        --------
        >>> from dask_coded.codes import MDSCode, PolynomialCode
        >>> MDSCode(3, 5).systematic, PolynomialCode(2, 1, 3).systematic
        (True, False)
        """
        eye = np.eye(self.k)
        return (
            self.generator.shape[1] == self.k
            and np.array_equal(self.generator[: self.k], eye)
            and np.array_equal(self.targets, eye)
        )

    @property
    def groups(self) -> tuple[CodeGroup, ...]:
        """The independent parts of a one-sided code: one for most codes.

        Each group's parities mix only its own data blocks, so a graph
        encodes and decodes group by group and every decode reads the
        members of its group only (:class:`~dask_coded.GroupedMDSCode`).

        Examples
        --------
        >>> from dask_coded.codes import MDSCode
        >>> MDSCode(k=2, n=3).groups
        (CodeGroup(code=MDSCode(k=2, n=3, generator='gaussian', seed=0), members=(0, 1, 2)),)
        """
        return (CodeGroup(self, tuple(range(self.n))),)

    @property
    def group_layout(self) -> tuple[int, int] | None:
        """``(group_size, parity)`` of groups laid out as :class:`~dask_coded.GroupedMDSCode` does, else None.

        That is: :attr:`groups` are runs of ``group_size`` data blocks (the
        last may be smaller), each with ``parity`` parities appended in group
        order. The plugin places such groups from their keys alone
        (:func:`~dask_coded.keys.grouped_name`).
        """
        return None

    def copied_block(self, i: int) -> int | None:
        """The unknown that coded block ``i`` is an unchanged copy of, or None when it mixes several.

        Examples
        --------
        >>> from dask_coded.codes import MDSCode, ReplicationCode
        >>> ReplicationCode(2, r=2).copied_block(3), MDSCode(2, 3).copied_block(2)
        (1, None)
        """
        return _copied_unknowns(self)[i]

    # -- what subclasses provide ---------------------------------------------

    @property
    def recovery_threshold(self) -> int:
        """The number of finished blocks that always suffices to decode."""
        raise NotImplementedError

    def _params(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def redundancy(self, indices: Iterable[int]) -> int:
        """How many of ``indices`` could be lost with the rest still decodable.

        Negative when ``indices`` is not a recovery set. A set with redundancy
        ``r`` can detect ``r`` wrong results, or locate and correct ``r // 2``.
        """
        raise NotImplementedError

    def choose_recovery_set(self, indices: Iterable[int]) -> tuple[int, ...]:
        """A minimal recovery set within ``indices``, data blocks first."""
        raise NotImplementedError

    def minimal_recovery_sets(self) -> Iterator[tuple[int, ...]]:
        """Every minimal recovery set (may be very many; see condition_number)."""
        return itertools.combinations(range(self.n), self.recovery_threshold)

    # -- shared machinery ----------------------------------------------------

    def is_recovery_set(
        self, indices: Iterable[int], max_errors: int = 0, suspects: Mapping[int, Hashable] | None = None
    ) -> bool:
        """Whether results at ``indices`` decode with up to ``max_errors`` wrong ones.

        ``suspects`` maps a block to what computed it (a worker): the blocks
        of one suspect count as one error, because a faulty worker gets every
        block it computes wrong. Without it every block is its own suspect.

        Examples
        --------
        >>> from dask_coded.codes import MDSCode
        >>> code = MDSCode(k=4, n=6)
        >>> code.is_recovery_set([0, 2, 4, 5])
        True
        >>> code.is_recovery_set([0, 1, 2])
        False
        >>> code.is_recovery_set(range(6), max_errors=1)
        True
        >>> # Two workers computed two blocks each: one faulty worker is two wrong blocks.
        >>> code.is_recovery_set(range(6), max_errors=1, suspects={0: "a", 1: "a", 2: "b", 3: "b"})
        False
        """
        indices = self._validate_indices(indices)
        max_errors = check_max_errors(max_errors)
        return self._tolerates(_units(indices, suspects), 2 * max_errors)

    def _tolerates(self, units: Sequence[tuple[int, ...]], lost: int) -> bool:
        """Whether the blocks of ``units`` still decode after losing any ``lost`` of the units."""
        blocks = [i for unit in units for i in unit]
        if all(len(unit) == 1 for unit in units):
            return self.redundancy(blocks) >= lost  # the common case, without enumerating
        if lost >= len(units):
            return lost == 0 and self.redundancy(blocks) >= 0
        return all(
            self.redundancy([i for j, unit in enumerate(units) if j not in gone for i in unit]) >= 0
            for gone in map(set, itertools.combinations(range(len(units)), lost))
        )

    def _validate_indices(self, indices: Iterable[int]) -> tuple[int, ...]:
        out = tuple(sorted({int(i) for i in indices}))
        if out and (out[0] < 0 or out[-1] >= self.n):
            raise ValueError(f"block indices must be in [0, {self.n}) for {self!r}, got {list(out)}")
        return out

    def _require_recovery_set(self, indices: tuple[int, ...]) -> None:
        if self.redundancy(indices) < 0:
            raise DecodingError(
                f"blocks {list(indices)} are not a recovery set of {self!r}: {self._threshold_phrase()}"
            )

    def _threshold_phrase(self) -> str:
        return f"any {self.recovery_threshold} of the {self.n} blocks are needed"

    def decoding_weights(self, indices: Iterable[int]) -> np.ndarray:
        """``W`` with ``targets = W @ generator[indices]``: decode is ``W @ results``.

        Read-only: cached, and for codes of at most 64 blocks shared by equal codes.

        Examples
        --------
        >>> from dask_coded.codes import MDSCode
        >>> MDSCode(k=2, n=3).decoding_weights([0, 1])
        array([[1., 0.],
               [0., 1.]])
        """
        return _weights_and_bound(self, self._validate_indices(indices))[0]

    def output_recovery_set(self, output: int, indices: Iterable[int]) -> tuple[int, ...] | None:
        """The smallest set within ``indices`` that decodes target ``output``, or None.

        A block that computes the target directly (a finished data block of a
        systematic code, any replica) is enough on its own; otherwise a
        recovery set of all targets is chosen.

        Examples
        --------
        >>> from dask_coded.codes import MDSCode
        >>> code = MDSCode(k=3, n=5)
        >>> code.output_recovery_set(1, [1, 4])
        (1,)
        >>> code.output_recovery_set(0, [1, 4]) is None
        True
        >>> code.output_recovery_set(0, [1, 2, 4])
        (1, 2, 4)
        """
        indices = self._validate_indices(indices)
        direct = self.direct_block(output, indices)
        if direct is not None:
            return (direct,)
        return self.choose_recovery_set(indices) if self.redundancy(indices) >= 0 else None

    def output_weights(self, outputs: Sequence[int], recovery_set: Iterable[int]) -> np.ndarray:
        """``W`` with ``targets[outputs] = W @ generator[recovery_set]``.

        Unlike :meth:`decoding_weights`, a single block that computes every
        requested output directly is accepted as the recovery set.
        """
        chosen = self._validate_indices(recovery_set)
        rows = [self.targets[o] for o in outputs]
        if len(chosen) == 1 and all(np.array_equal(self.generator[chosen[0]], r) for r in rows):
            return np.ones((len(rows), 1))
        return self.decoding_weights(chosen)[list(outputs)]

    def decoding_plan(self, outputs: Sequence[int], recovery_set: Iterable[int]) -> DecodingPlan:
        """The weights of a decode of ``outputs`` from ``recovery_set``, for :meth:`decode` (``plan=``).

        Cached by value for codes of at most 64 blocks. A plan made in one
        process (the scheduler) and used in another (a worker) saves that
        process the solve.

        Examples
        --------
        >>> import numpy as np
        >>> from dask_coded.codes import MDSCode
        >>> code = MDSCode(k=2, n=3)
        >>> plan = code.decoding_plan([0], [1, 2])
        >>> plan.used
        (1, 2)
        >>> blocks = code.encode([np.ones(2), np.arange(2.0)])
        >>> np.allclose(code.decode({1: blocks[1], 2: blocks[2]}, outputs=[0], plan=plan)[0], 1.0)
        True
        """
        outputs = tuple(int(o) for o in outputs)
        if any(not 0 <= o < self.targets.shape[0] for o in outputs):
            raise ValueError(
                f"outputs must be in [0, {self.targets.shape[0]}) for {self!r}, got {list(outputs)}"
            )
        return _decode_plan(self, self._validate_indices(recovery_set), outputs)

    def decoding_condition(self, indices: Iterable[int]) -> float:
        """The condition number of the decode from ``indices`` (a recovery set)."""
        return _cached_condition(self, self._validate_indices(indices))

    def condition_number(self, samples: int | None = 2000, seed: int = 0) -> float:
        """Worst condition number over the minimal recovery sets.

        All of them are checked when there are at most ``samples`` (or always,
        with ``samples=None``); otherwise a seeded random sample of
        ``samples`` sets is, and the result is a lower bound on the worst case.

        Examples
        --------
        >>> from dask_coded.codes import MDSCode
        >>> MDSCode(k=4, n=6).condition_number() < 1e3
        True
        """
        sets = self._sample_recovery_sets(samples, seed)
        return max(self.decoding_condition(s) for s in sets)

    def _sample_recovery_sets(self, samples: int | None, seed: int) -> list[tuple[int, ...]]:
        threshold = self.recovery_threshold
        total = math.comb(self.n, threshold)
        if samples is None or total <= samples:
            return list(self.minimal_recovery_sets())
        rng = np.random.default_rng(seed)
        sets: set[tuple[int, ...]] = set()
        while len(sets) < samples:
            candidate = tuple(sorted(rng.choice(self.n, threshold, replace=False).tolist()))
            if self.redundancy(candidate) >= 0:
                sets.add(self.choose_recovery_set(candidate))
        return sorted(sets)

    def _encode_with(
        self,
        matrix: np.ndarray,
        blocks: Sequence[np.ndarray],
        what: str,
        exponents: Sequence[int] | np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """Coded blocks ``matrix @ blocks``; rows that copy a block return it as is.

        With ``exponents``, the other rows mix ``2**-exponents[j] * blocks[j]``.
        """
        blocks = [np.asarray(b) for b in blocks]
        if len(blocks) != matrix.shape[1]:
            raise ValueError(f"{self!r} encodes {matrix.shape[1]} {what}, got {len(blocks)}")
        for b in blocks:
            _check_dtype(b, what)
        scales = self._check_exponents(exponents)
        dtype = _working_dtype(np.result_type(*blocks))
        if scales is not None:
            return equilibrated_combine(matrix, blocks, scales, dtype)
        return combine(matrix, blocks, dtype)

    def _check_exponents(self, exponents: Sequence[int] | np.ndarray | None) -> np.ndarray | None:
        """Validate per-unknown exponents (codes whose targets are the unknowns themselves only)."""
        if exponents is None:
            return None
        out = np.asarray(exponents)
        unknowns = self.generator.shape[1]
        if out.shape != (unknowns,) or out.dtype.kind not in "iu":
            raise ValueError(
                f"{self!r} takes {unknowns} integer exponents, one per data block, got {exponents!r}"
            )
        if target_unknowns(self) is None:
            raise ValueError(f"{self!r} decodes combinations of blocks; per-block exponents do not apply")
        return out.astype(np.int64)

    def direct_block(self, output: int, indices: Iterable[int]) -> int | None:
        """A block among ``indices`` that computes target ``output`` itself (a data block, a replica).

        Its result *is* the output, bit for bit; no decoding arithmetic is involved.

        Examples
        --------
        >>> from dask_coded.codes import MDSCode
        >>> MDSCode(k=3, n=5).direct_block(1, [1, 4]), MDSCode(k=3, n=5).direct_block(0, [1, 4])
        (1, None)
        """
        copies = _copies_of_targets(self)[output]
        return next((i for i in self._validate_indices(indices) if i in copies), None)

    def decode(
        self,
        results: Mapping[int, Any],
        *,
        max_errors: int = 0,
        shapes: Sequence[tuple[int, ...]] | None = None,
        outputs: Sequence[int] | None = None,
        recovery_set: Iterable[int] | None = None,
        exponents: Sequence[int] | np.ndarray | None = None,
        suspects: Mapping[int, Hashable] | None = None,
        plan: DecodingPlan | None = None,
        inaccurate: Literal["warn", "raise"] = "warn",
        roundoff: Mapping[int, float] | None = None,
    ) -> list[np.ndarray]:
        """Decode the targets from the block products in ``results``.

        A target that one of the results computes directly (a data block of a
        systematic code, a replica) is that result, unchanged: no arithmetic,
        no change of dtype. The other targets are solved for from a recovery
        set of *finite* results, so NaN or inf in one block never spreads into
        another block's output.

        Parameters
        ----------
        results
            Coded-block index -> the product computed for that block. Any
            recovery set (or more) will do.
        max_errors
            Up to this many results may be wrong (garbage, NaN, inf); they are
            located and left out. Needs a set with redundancy ``2 *
            max_errors`` to correct and ``max_errors`` to detect. With 0 (the
            default) nothing is checked.
        shapes
            The true shape of each returned target when blocks were split
            unevenly; targets are cut to it from the zero-padded decode.
        outputs
            Indices of the targets to return (default: all). A decode task
            that produces one output block asks for just that one.
        recovery_set
            Decode from exactly these blocks (for the requested ``outputs``;
            see :meth:`output_recovery_set`). ``results`` then only needs the
            blocks whose decoding weight is nonzero. Chosen by the scheduler
            plugin, which ships only those blocks to the decode task.
        exponents
            The per-data-block exponents the blocks were encoded with
            (``encode(..., exponents=...)``, see
            :func:`equilibration_exponents`), or None.
        suspects
            What computed each block (a worker), for ``max_errors``: the
            blocks of one suspect count as one error (see
            :meth:`locate_errors`).
        plan
            The weights for ``outputs`` and ``recovery_set`` made beforehand
            by :meth:`decoding_plan` (possibly in another process), in place
            of solving for them here.
        inaccurate
            When a solved target may miss the dtype's accuracy: ``"warn"``
            (a :class:`ConditioningWarning`) or ``"raise"`` (a
            :class:`DecodingError` with ``relative_error`` set).
        roundoff
            For ``max_errors``: each result's bound on its own round-off,
            about ``eps * || |A_i| |x| ||`` (see :meth:`locate_errors`). Without
            it, round-off is judged from the results' size, which calls a
            product that cancels wrong.

        Returns
        -------
        list of numpy.ndarray
            The requested targets, in the order of ``outputs``. Targets
            solved from several results of integer dtype are float64.

        Raises
        ------
        DecodingError
            If ``results`` is not a recovery set, if the finite results are
            not one, or wrong results were found that cannot be corrected.

        Examples
        --------
        >>> import numpy as np
        >>> from dask_coded.codes import MDSCode
        >>> code = MDSCode(k=2, n=4)
        >>> A, x = np.arange(8.0).reshape(4, 2), np.ones(2)
        >>> coded = code.encode([A[:2], A[2:]])
        >>> products = {i: coded[i] @ x for i in (1, 3)}  # blocks 0 and 2 straggle
        >>> np.allclose(np.concatenate(code.decode(products)), A @ x)
        True
        """
        max_errors = check_max_errors(max_errors)
        if inaccurate not in ("warn", "raise"):
            raise ValueError(f"inaccurate must be 'warn' or 'raise', got {inaccurate!r}")
        if not isinstance(results, Mapping) or not results:
            raise DecodingError(f"decode needs a non-empty mapping of block index -> result, got {results!r}")
        if max_errors and not self.supports_error_correction:
            raise ValueError(f"{type(self).__name__} does not support max_errors")
        outputs = list(range(self.targets.shape[0])) if outputs is None else list(outputs)
        chosen = None if recovery_set is None else self._validate_indices(recovery_set)
        if plan is not None and (
            plan.code != self or plan.outputs != tuple(outputs) or chosen not in (None, plan.chosen)
        ):
            asked = f"outputs {outputs}" + ("" if chosen is None else f" from blocks {list(chosen)}")
            raise ValueError(
                f"the plan decodes outputs {list(plan.outputs)} of {plan.code!r} from blocks "
                f"{list(plan.chosen)}; this decode asks for {asked} of {self!r}"
            )
        if (chosen is not None or plan is not None) and max_errors:
            raise ValueError(
                "a recovery_set or plan and max_errors cannot be combined: checking needs every result"
            )
        if plan is None and chosen is not None:
            plan = _decode_plan(self, chosen, tuple(outputs))
        # With a plan, only the blocks it reads are looked at (a decode task is given only those).
        wanted = results if plan is None else {i: results[i] for i in plan.used if i in results}
        arrays = {i: np.asarray(r) for i, r in wanted.items()}
        indices = self._validate_indices(arrays)  # a plan is a public tuple: its blocks are checked too
        for i in indices:
            _check_dtype(arrays[i], "result of block", i)
        _common_shape(arrays.values(), "block results")
        scales = self._check_exponents(exponents)
        decoded: dict[int, np.ndarray] = {}
        if plan is not None:
            if plan.copies is not None:
                for o, copied in zip(outputs, plan.copies):
                    decoded[o] = self._result(arrays, copied)
            else:
                decoded.update(self._solve(arrays, plan, outputs, scales, inaccurate))
        else:
            if max_errors:
                wrong = self.locate_errors(
                    arrays, max_errors=max_errors, exponents=scales, suspects=suspects, roundoff=roundoff
                )
                indices = tuple(i for i in indices if i not in wrong)
            rest = []
            for o in outputs:
                direct = self.direct_block(o, indices)
                if direct is None:
                    rest.append(o)
                else:
                    decoded[o] = arrays[direct]
            if rest:
                chosen = self._finite_recovery_set(arrays, indices, rest)
                plan = _decode_plan(self, chosen, tuple(rest))
                decoded.update(self._solve(arrays, plan, rest, scales, inaccurate))
        out = [decoded[o] for o in outputs]
        if shapes is not None:
            if len(shapes) != len(out):
                raise ValueError(f"{self!r} decodes {len(out)} targets, got {len(shapes)} shapes")
            out = [
                o if o.shape == tuple(shape) else o[tuple(slice(0, s) for s in shape)]
                for o, shape in zip(out, shapes)
            ]
        return out

    def _result(self, arrays: Mapping[int, np.ndarray], index: int) -> np.ndarray:
        if index not in arrays:
            raise DecodingError(f"the decode of {self!r} needs the result of block {index}")
        return arrays[index]

    def _finite_recovery_set(
        self, arrays: Mapping[int, np.ndarray], indices: tuple[int, ...], outputs: Sequence[int]
    ) -> tuple[int, ...]:
        """A recovery set for ``outputs`` whose used results are all finite."""
        if self.redundancy(indices) >= 0:
            chosen = self.choose_recovery_set(indices)
            weights = self.decoding_weights(chosen)[list(outputs)]
            used = [chosen[c] for c in range(len(chosen)) if weights[:, c].any()]
            if all(_all_finite(arrays[i]) for i in used):
                return chosen
        finite = tuple(i for i in indices if _all_finite(arrays[i]))
        if self.redundancy(finite) < 0:
            nonfinite = tuple(i for i in indices if i not in finite)
            if not nonfinite:
                self._require_recovery_set(indices)
            raise DecodingError(
                f"cannot decode output(s) {list(outputs)} of {self!r}: the results of blocks "
                f"{list(nonfinite)} are not finite (NaN or inf), and mixing them in would spread NaN/inf "
                f"to other blocks; the finite results {list(finite)} are not a recovery set "
                f"({self._threshold_phrase()})",
                suspects=nonfinite,
            )
        return self.choose_recovery_set(finite)

    def _solve(
        self,
        arrays: Mapping[int, np.ndarray],
        plan: DecodingPlan,
        outputs: Sequence[int],
        scales: np.ndarray | None,
        inaccurate: str = "warn",
    ) -> dict[int, np.ndarray]:
        """Targets ``outputs`` as ``plan.weights @ results[plan.used]``, un-equilibrated and checked.

        With ``scales`` (an equilibrated encoding), parities computed
        ``generator[i] @ (2**-e * unknowns)`` while data blocks (rows that copy
        one unknown) computed the unknown itself: the solve is for the scaled
        unknowns, so each data block's weight is scaled by ``2**-e`` and each
        output's row by its own ``2**e``. Powers of two make that exact: the
        same numbers as scaling the blocks and the outputs, without copies of
        them (see :func:`_folded_weights` for when it cannot be done so).
        """
        absent = [i for i in plan.used if i not in arrays]
        if absent:
            raise DecodingError(
                f"the decode of {self!r} from {list(plan.chosen)} needs the results of blocks {absent}"
            )
        blocks = [arrays[i] for i in plan.used]
        dtype = _working_dtype(np.result_type(*blocks))
        # One pass over each block, allocating nothing: its magnitude says whether it is finite, and
        # how much round-off it brings into the outputs.
        sizes = [max_abs(b) for b in blocks]
        bad = tuple(i for i, size in zip(plan.used, sizes) if not math.isfinite(size))
        if bad:  # only mixing decodes get here: a copy's own NaN is its own
            raise DecodingError(
                f"decoding output(s) {list(outputs)} of {self!r} from blocks {list(plan.chosen)} would mix "
                f"the non-finite (NaN or inf) results of blocks {list(bad)} into them and spread NaN/inf to "
                "blocks that have none; decode from finite results or wait for the outputs' own blocks",
                suspects=bad,
            )
        weights = plan.weights
        if scales is not None:
            folded = _folded_weights(self, plan, scales, dtype)
            if folded is None:
                return self._solve_scaled(blocks, plan, outputs, scales, inaccurate)
            weights = folded
        mixed = _mixed_sizes(weights, sizes)
        if scales is not None and max(mixed) >= _range_of(dtype)[1] / 2:  # a weighted sum might overflow
            return self._solve_scaled(blocks, plan, outputs, scales, inaccurate)
        # A row that copies a block returns it unchanged: with scales, a copy is the output's own
        # data block, whose 2**-e and 2**e cancel.
        out = _combine_rows(weights, plan.selected, blocks, dtype)
        if plan.copies is None:
            self._warn_if_inaccurate(plan, mixed, out, outputs, dtype, inaccurate)
        return dict(zip(outputs, out))

    def _solve_scaled(
        self,
        blocks: Sequence[np.ndarray],
        plan: DecodingPlan,
        outputs: Sequence[int],
        scales: np.ndarray,
        inaccurate: str = "warn",
    ) -> dict[int, np.ndarray]:
        """An equilibrated decode on scaled copies of the blocks, the outputs scaled back after."""
        copied = _copied_unknowns(self)
        unknowns = [copied[i] for i in plan.used]
        scaled = [
            b if j is None or not scales[j] else scale_by_power_of_two(b, -int(scales[j]))
            for j, b in zip(unknowns, blocks)
        ]
        dtype = _working_dtype(np.result_type(*scaled))
        sizes = [max_abs(b) for b in scaled]
        out = _combine_rows(plan.weights, plan.selected, scaled, dtype)
        if plan.copies is None:
            self._warn_if_inaccurate(plan, _mixed_sizes(plan.weights, sizes), out, outputs, dtype, inaccurate)
        targets = [target_unknowns(self)[o] for o in outputs]  # type: ignore[index]
        # A row that copies a block is that block itself: scaled there and back, its small entries
        # would underflow.
        out = [
            blocks[copied] if copied is not None else scale_by_power_of_two(o, int(scales[t]))  # type: ignore[index]
            for o, t, copied in zip(out, targets, plan.selected)
        ]
        return dict(zip(outputs, out))

    def _warn_if_inaccurate(
        self,
        plan: DecodingPlan,
        mixed: Sequence[float],
        out: Sequence[np.ndarray],
        outputs: Sequence[int],
        dtype: np.dtype,
        inaccurate: str = "warn",
    ) -> None:
        """ConditioningWarning (or DecodingError) when a decoded block may miss the dtype's accuracy.

        Two estimates: the decode's condition number times epsilon, and, per
        output block, the round-off of the combined results (``mixed``, from
        :func:`_mixed_sizes`) relative to that block's own size (large when a
        small block is decoded through parities that carry much larger ones
        without equilibration).
        """
        eps, target = _accuracy(dtype)
        condition = plan.condition_bound
        if condition * eps > target:
            condition = self.decoding_condition(plan.chosen)
        worst, where = condition * eps, None
        for o, carried, block in zip(outputs, mixed, out):
            size = max_abs(block)
            if not math.isfinite(size) or not carried:
                continue
            # A block that cancelled to exact zeros from nonzero ones has lost every digit.
            estimate = eps * carried / size if size > 0 else math.inf
            if estimate > worst:
                worst, where = estimate, o
        if worst > target:
            what = f"output block {where}" if where is not None else "the decode"
            condition = self.decoding_condition(plan.chosen)
            message = (
                f"decoding {self!r} from blocks {list(plan.chosen)} (condition number {condition:.3g}): "
                f"the relative error of {what} may reach {worst:.2g}, more than {target:g}, the accuracy "
                f"dask-coded promises for {dtype}; encode with equilibration_exponents, decode in a "
                "wider dtype or use a better-conditioned code"
            )
            if inaccurate == "raise":
                raise DecodingError(message, relative_error=worst)
            warnings.warn(message, ConditioningWarning, stacklevel=4)

    def locate_errors(
        self,
        results: Mapping[int, Any],
        max_errors: int,
        exponents: Sequence[int] | np.ndarray | None = None,
        suspects: Mapping[int, Hashable] | None = None,
        roundoff: Mapping[int, float] | None = None,
    ) -> tuple[int, ...]:
        """The blocks whose results disagree with the code (non-finite ones included).

        ``exponents`` are those of an equilibrated encoding (see :meth:`decode`).
        ``suspects`` maps a block to what computed it (a worker); up to
        ``max_errors`` suspects may be wrong, each in every block it
        computed, and all of a wrong suspect's blocks are returned. Raises
        :class:`DecodingError` when wrong results are detected that cannot be
        located, or when the results are too few to check ``max_errors`` of
        them.

        ``roundoff`` maps each block to a bound on the Frobenius norm of its
        rounding errors, about ``eps * || |A_i| |x| ||`` for a product
        (see :class:`~dask_coded.blocks.CheckedProduct`). Disagreement within
        ``1e2 * condition * sqrt(k)`` times such a bound is round-off; the
        bound of the ``max_errors + 1``-th largest suspect is used, so a wrong
        result cannot widen the allowance by claiming a large bound. An
        infinite bound (an integer product that may have wrapped) makes the
        results uncheckable: a :class:`~dask_coded.DaskCodedWarning`, and only
        non-finite blocks are returned (a wrong result that claims one is
        not found, but not silently); a NaN or negative bound is wrong, as a
        non-finite result is. Without ``roundoff``, the allowance
        is ``1e4 * eps * condition * sqrt(k)`` times the blocks' median size,
        which calls a product that cancels wrong.

        Examples
        --------
        >>> import numpy as np
        >>> from dask_coded.codes import MDSCode
        >>> code = MDSCode(k=3, n=5)
        >>> coded = code.encode([np.eye(3)[i] for i in range(3)])
        >>> results = {i: c * 2.0 for i, c in enumerate(coded)}
        >>> results[1] = results[1] + 5.0  # a worker returns garbage
        >>> code.locate_errors(results, max_errors=1)
        (1,)
        """
        max_errors = check_max_errors(max_errors)
        arrays = {int(i): np.asarray(r) for i, r in results.items()}
        indices = self._validate_indices(arrays)
        scales = self._check_exponents(exponents)
        bounds = None if roundoff is None else {int(i): float(r) for i, r in roundoff.items()}
        if scales is not None:
            # Back to the scaled unknowns the parities mix: data rows hold the unknowns unscaled.
            for i in indices:
                j = _selected_block(self.generator[i])
                if j is not None and scales[j]:
                    arrays[i] = scale_by_power_of_two(arrays[i], -int(scales[j]))
                    if bounds is not None and i in bounds:
                        bounds[i] = float(scale_by_power_of_two(bounds[i], -int(scales[j])))
        units = _units(indices, suspects)
        finite_blocks = [i for i in indices if _all_finite(arrays[i])]
        sketches_of, scale = _sketch({i: arrays[i] for i in finite_blocks}) if finite_blocks else ({}, 1.0)
        # A suspect with one non-finite block is wrong in all of them; so is one whose projections are
        # too far above the others' to be compared in floating point (an exponent bit flipped).
        beyond = {i for i, sketch in sketches_of.items() if not np.abs(sketch).max() <= _COMPARABLE * scale}
        # So is one that claims a round-off bound no product has (NaN, or below zero).
        if bounds is not None:
            beyond.update(i for i in sketches_of if i in bounds and not bounds[i] >= 0)
        bad_units = [u for u in units if any(i not in sketches_of or i in beyond for i in u)]
        nonfinite = tuple(sorted(i for u in bad_units for i in u))
        finite_units = [u for u in units if u not in bad_units]
        finite = tuple(sorted(i for u in finite_units for i in u))
        budget = max_errors - len(bad_units)
        wrong_outright = "not finite (or 2**400 times the others, or claim no possible round-off)"
        if budget < 0:
            raise DecodingError(
                f"blocks {list(nonfinite)} of {self!r} are {wrong_outright}: "
                f"more than max_errors={max_errors} wrong results",
                suspects=nonfinite,
            )
        if not self._tolerates(finite_units, budget):
            raise DecodingError(
                f"cannot check {max_errors} wrong results of {self!r}: blocks {list(nonfinite)} are "
                f"{wrong_outright} and the rest {list(finite)} leave too few checks "
                f"({self._threshold_phrase()})",
                suspects=nonfinite,
            )
        if budget == 0:
            return nonfinite
        sketches = np.array([sketches_of[i] for i in finite])
        if bounds is not None and all(i in bounds for i in finite):
            # The budget largest claims may be the wrong results' own: the next one is an honest block's.
            claims = sorted((max(bounds[i] for i in u) for u in finite_units), reverse=True)
            unbounded = [i for i in finite if not bounds[i] < math.inf]
            if unbounded:
                warnings.warn(
                    f"max_errors cannot check the results of {self!r}: blocks {unbounded} have no "
                    "finite bound on their round-off (integer products that may have wrapped past "
                    "their dtype's range, as in da.dot, or |A| |x| past the largest float)",
                    DaskCodedWarning,
                    stacklevel=3,
                )
                return nonfinite
            # The projections' own float64 sums round too, by about eps sqrt(entries) times their size.
            entries = max(arrays[i].size for i in finite)
            sketching = float(np.finfo(np.float64).eps) * math.sqrt(entries) * scale
            tolerance = _ROUNDOFF_FACTOR * self._amplification(finite) * max(claims[budget], sketching)
        else:
            # The least precise result sets the round-off allowed: an int8 block times a float32 x is
            # a float32 product, while the parities' products are float64.
            dtype = max((_working_dtype(arrays[i].dtype) for i in finite), key=lambda d: np.finfo(d).eps)
            tolerance = _NOISE_FACTOR * float(np.finfo(dtype).eps) * self._amplification(finite) * scale
        for size in range(budget + 1):
            consistent = [
                tuple(sorted(i for u in wrong for i in u))
                for wrong in itertools.combinations(finite_units, size)
                if self._consistent(finite, tuple(i for u in wrong for i in u), sketches, tolerance)
            ]
            if not consistent:
                continue
            if size == 0:
                return nonfinite
            if len(consistent) == 1 and self._tolerates(finite_units, 2 * size):
                return tuple(sorted(nonfinite + consistent[0]))
            blamed = tuple(sorted(set(nonfinite).union(*consistent)))
            raise DecodingError(
                f"{size} wrong result(s) of {self!r} detected among blocks {list(finite)} "
                f"but not located: suspects {list(blamed)}; more finished blocks are "
                "needed to correct them",
                suspects=blamed,
            )
        residuals = self._residuals(finite, sketches)
        blamed = tuple(sorted(nonfinite + tuple(i for i, r in zip(finite, residuals) if r > tolerance)))
        raise DecodingError(
            f"more than {max_errors} wrong result(s) of {self!r} detected; suspects {list(blamed)}",
            suspects=blamed,
        )

    def _amplification(self, finite: tuple[int, ...]) -> float:
        """How much the results' round-off may grow in the consistency check's residuals."""
        condition = _condition(self.generator[list(finite)])
        return float(max(condition, 1.0) * math.sqrt(self.generator.shape[1]))

    def _residuals(self, kept: tuple[int, ...], sketches_of: np.ndarray) -> np.ndarray:
        rows = self.generator[list(kept)]
        solution = np.linalg.lstsq(rows, sketches_of, rcond=None)[0]
        return np.abs(rows @ solution - sketches_of).max(axis=1)

    def _consistent(
        self, finite: tuple[int, ...], wrong: tuple[int, ...], sketches: np.ndarray, tolerance: float
    ) -> bool:
        kept = tuple(i for i in finite if i not in wrong)
        if self.redundancy(kept) < 0:
            return False
        positions = [finite.index(i) for i in kept]
        return bool(self._residuals(kept, sketches[positions]).max() <= tolerance)

    # -- value semantics -----------------------------------------------------

    def __repr__(self) -> str:
        names = self._param_names()
        args = ", ".join(f"{name}={value!r}" for name, value in zip(names, self._params()))
        return f"{type(self).__name__}({args})"

    def _param_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._params() == self._params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._params()))

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return (type(self).__name__, self._params())

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_weights_memo", None)  # rebuilt on the worker, on demand
        return state


#: Codes of at most this many blocks have their decoding weights cached: each entry is at most
#: ``n x n`` numbers (32 KiB), so the cache stays under 16 MiB; bigger codes' inverses cost
#: little next to their blocks' arithmetic.
_CACHED_CODE_SIZE = 64


@functools.lru_cache(maxsize=256)
def target_unknowns(code: Code) -> tuple[int, ...] | None:
    """The unknown each target is, or None when a target combines unknowns (cached by code value).

    Per-block exponents apply to codes whose targets are the unknowns themselves.
    """
    selected = [_selected_block(target) for target in code.targets]
    return None if any(s is None for s in selected) else tuple(s for s in selected if s is not None)


@functools.lru_cache(maxsize=256)
def _copies_of_targets(code: Code) -> tuple[frozenset[int], ...]:
    """For each target, the coded blocks that compute it directly (cached by code value)."""
    return tuple(
        frozenset(np.flatnonzero((code.generator == target).all(axis=1)).tolist()) for target in code.targets
    )


def _weights_and_bound(code: Code, indices: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """The decoding weights from recovery set ``indices``, and a bound on the decode's condition number.

    Cached by value across code objects for small codes: every decode task
    deserializes its own copy of the code, and solving for the weights per
    task costs more than the decode's arithmetic on small blocks.
    """
    if code.n <= _CACHED_CODE_SIZE:
        return _cached_weights_and_bound(code, indices)
    # A big code: once per code object, as the decodes of one graph share it (not pickled).
    memo = code.__dict__.setdefault("_weights_memo", {})
    if indices not in memo:
        memo[indices] = _read_only(*_decoding_weights(code, indices))
    return memo[indices]


@functools.lru_cache(maxsize=512)
def _cached_weights_and_bound(code: Code, indices: tuple[int, ...]) -> tuple[np.ndarray, float]:
    return _read_only(*_decoding_weights(code, indices))


@functools.lru_cache(maxsize=512)
def _cached_condition(code: Code, indices: tuple[int, ...]) -> float:
    code._require_recovery_set(indices)
    return _condition(code.generator[list(indices)])


class DecodingPlan(NamedTuple):
    """What a decode of ``outputs`` from recovery set ``chosen`` needs besides the results.

    Made by :meth:`Code.decoding_plan` and passed to :meth:`Code.decode`
    (``plan=``): the scheduler plugin makes it once, where it chooses the
    recovery set, so a decode task on a worker does only the arithmetic.
    """

    #: The code whose weights these are: a plan is refused by any other.
    code: Code
    outputs: tuple[int, ...]
    chosen: tuple[int, ...]
    #: The blocks with a nonzero weight, and the weights of the outputs on them.
    used: tuple[int, ...]
    weights: np.ndarray
    #: The block each output copies unchanged, when every output copies one; else None.
    copies: tuple[int, ...] | None
    #: For each output, the position in ``used`` of the block it copies, or None.
    selected: tuple[int | None, ...]
    #: At least the decode's condition number (1.0 for copies): the exact one costs an SVD, which
    #: is only worth it when the bound comes near what the dtype can afford.
    condition_bound: float


def _decode_plan(code: Code, chosen: tuple[int, ...], outputs: tuple[int, ...]) -> DecodingPlan:
    """The plan of a decode, cached by value like the weights.

    With it, a decode task of a small block costs little more than the arithmetic on its blocks,
    and a task with less work is less exposed to the stragglers the code hedges against.
    """
    if code.n <= _CACHED_CODE_SIZE:
        return _cached_decode_plan(code, chosen, outputs)
    return _build_decode_plan(code, chosen, outputs)


def _build_decode_plan(code: Code, chosen: tuple[int, ...], outputs: tuple[int, ...]) -> DecodingPlan:
    weights = code.output_weights(outputs, chosen)
    columns = np.flatnonzero(weights.any(axis=0))
    used = tuple(chosen[c] for c in columns)
    weights = weights[:, columns]
    selected = tuple(_selected_block(row) for row in weights)
    if all(c is not None for c in selected):
        copies = tuple(used[c] for c in selected)  # type: ignore[index]
        return DecodingPlan(code, outputs, chosen, used, weights, copies, selected, 1.0)
    bound = _weights_and_bound(code, chosen)[1]
    return DecodingPlan(code, outputs, chosen, used, weights, None, selected, bound)


@functools.lru_cache(maxsize=1024)
def _cached_decode_plan(code: Code, chosen: tuple[int, ...], outputs: tuple[int, ...]) -> DecodingPlan:
    plan = _build_decode_plan(code, chosen, outputs)
    plan.weights.flags.writeable = False
    return plan


def _folded_weights(
    code: Code, plan: DecodingPlan, exponents: np.ndarray, dtype: np.dtype
) -> np.ndarray | None:
    """The weights of a decode of an equilibrated encoding, or None where they cannot be exact.

    The solve is for the scaled unknowns ``2**-e * unknowns``: each data
    block's weight is scaled by ``2**-e`` of its unknown and each output's
    row by its own ``2**e``, which gives bit for bit what scaling the blocks
    and the outputs would, while every weight stays a normal number of
    ``dtype``. Exponents far apart (blocks whose sizes differ by ``2**1000``)
    can push a weight out of range: those decodes scale the blocks instead.
    """
    return _folded_rows(
        code,
        plan.used,
        plan.outputs,
        plan.weights.dtype,  # complex weights equal to real ones (1 + 0j == 1.0) must not share an entry
        tuple(map(tuple, plan.weights.tolist())),
        tuple(exponents.tolist()),
        np.dtype(dtype),
    )


@functools.lru_cache(maxsize=1024)
def _folded_rows(
    code: Code,
    used: tuple[int, ...],
    outputs: tuple[int, ...],
    weights_dtype: np.dtype,
    weights: tuple[tuple[float, ...], ...],
    shifts: tuple[int, ...],
    dtype: np.dtype,
) -> np.ndarray | None:
    """:func:`_folded_weights`, cached by everything it reads (a decode task of every call asks again).

    In Python floats, a handful of them: NumPy calls on a matrix this small
    cost more than a decode's arithmetic on a worker whose caches other
    processes keep cold.
    """
    copied, unknowns = _copied_unknowns(code), target_unknowns(code)
    tiny, largest, span, _ = _range_of(dtype)
    columns = [-shifts[j] if (j := copied[i]) is not None else 0 for i in used]
    rows = []
    for output, row_weights in zip(outputs, weights):
        own = shifts[unknowns[output]]  # type: ignore[index]
        if any(abs(own + column) >= span for column in columns):
            return None
        try:
            row = [math.ldexp(w, own + column) for w, column in zip(row_weights, columns)]
        except OverflowError:
            return None
        if any(w and not tiny <= abs(folded) <= largest for w, folded in zip(row_weights, row)):
            return None  # a weight under- or overflowed
        rows.append(row)
    folded = np.array(rows)
    folded.flags.writeable = False  # shared by every decode that reads the cache
    return folded


@functools.lru_cache(maxsize=256)
def _copied_unknowns(code: Code) -> tuple[int | None, ...]:
    """:meth:`Code.copied_block` of every coded block (cached by code value: decode tasks ask per block)."""
    return tuple(_selected_block(row) for row in code.generator)


def _read_only(weights: np.ndarray, bound: float) -> tuple[np.ndarray, float]:
    weights.flags.writeable = False  # shared by every decode that reads the cache
    return weights, bound


def _decoding_weights(code: Code, indices: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """``targets @ generator[indices]^+`` and an upper bound on ``cond(generator[indices])``."""
    code._require_recovery_set(indices)
    rows = code.generator[list(indices)]
    inverse = _inverse(rows, code.targets)
    if inverse is not None:
        # A minimal recovery set: an LU inverse costs a fraction of pinv's SVD, and its 1-norm
        # condition bounds the 2-norm one (cond_2 <= n * cond_1) without another SVD.
        weights = code.targets @ inverse
        bound = len(rows) * np.linalg.norm(rows, 1) * np.linalg.norm(inverse, 1)
    else:
        # More rows than unknowns, or rows that are singular but still span the targets (a sum). The
        # singular values _condition counts as zero are left out of the inverse too: inverted, a
        # rounding error's direction would be amplified into the weights (a cyclic gradient code of
        # 10 blocks lost 0.6% that way, with no warning).
        weights = code.targets @ np.linalg.pinv(rows, rtol=_NEGLIGIBLE_SINGULAR_VALUE)
        bound = _condition(rows)
        if not _reproduces(weights @ rows, code.targets):  # they were not negligible: every one counts
            weights = code.targets @ np.linalg.pinv(rows)
            bound = _condition(rows, rtol=0.0)
    # A target that one finished block computes directly (a data block of a
    # systematic code, a replica) is taken exactly, so those decodes cost
    # nothing and lose nothing.
    for r, copies in enumerate(_copies_of_targets(code)):
        same = [c for c, i in enumerate(indices) if i in copies]
        if same:
            weights[r] = 0.0
            weights[r, same[0]] = 1.0
    return weights, float(bound)


def _inverse(rows: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
    """The LU inverse of square ``rows``, if it gives ``targets`` back; else None.

    Rows that are singular yet span the targets (a cyclic gradient code's) can
    leave LU a pivot of rounding error instead of an error, and an inverse that
    means nothing: the check catches it.
    """
    if rows.shape[0] != rows.shape[1]:
        return None
    try:
        inverse = np.linalg.inv(rows)
    except np.linalg.LinAlgError:
        return None
    return inverse if _reproduces(targets @ inverse @ rows, targets) else None


#: Singular values of a decode's rows below this fraction of the largest are rounding errors of zero.
_NEGLIGIBLE_SINGULAR_VALUE = 1e-12


def _condition(rows: np.ndarray, rtol: float = _NEGLIGIBLE_SINGULAR_VALUE) -> float:
    singular = np.linalg.svd(rows, compute_uv=False)
    nonzero = singular[singular > singular[0] * rtol] if singular.size else singular
    return float(nonzero[0] / nonzero[-1]) if nonzero.size else math.inf


def _reproduces(found: np.ndarray, targets: np.ndarray) -> bool:
    """Whether decoding weights give the targets back from the rows, to rounding."""
    scale = max(1.0, float(np.abs(targets).max(initial=0.0)))
    return float(np.abs(found - targets).max(initial=0.0)) <= 1e-9 * scale


def _units(indices: Sequence[int], suspects: Mapping[int, Hashable] | None) -> list[tuple[int, ...]]:
    """``indices`` grouped by suspect, in order; a block without a suspect is a unit of its own."""
    if not suspects:
        return [(i,) for i in indices]
    groups: dict[Any, list[int]] = {}
    for i in indices:
        suspect = suspects.get(i)
        groups.setdefault(("block", i) if suspect is None else ("suspect", suspect), []).append(i)
    return [tuple(group) for group in groups.values()]


def check_max_errors(max_errors: int) -> int:
    if isinstance(max_errors, bool) or not isinstance(max_errors, (int, np.integer)) or max_errors < 0:
        raise ValueError(f"max_errors must be a non-negative integer, got {max_errors!r}")
    return int(max_errors)


def _sketch(arrays: Mapping[int, np.ndarray]) -> tuple[dict[int, np.ndarray], float]:
    """Each block's ``_SKETCHES`` Gaussian projections ``u^T R v``, and a robust scale of them.

    The projections use a fixed seed: they only need to be independent of the
    errors, and a fixed seed keeps decodes reproducible.
    """
    shape = _common_shape(arrays.values(), "block results")
    rows = shape[0] if shape else 1
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    rng = np.random.default_rng(20170613)
    left = rng.standard_normal((rows, _SKETCHES))
    right = rng.standard_normal((cols, _SKETCHES))
    sketches = []
    for block in arrays.values():
        matrix = _pad_to(block, shape).reshape(rows, cols)
        with np.errstate(over="ignore", invalid="ignore"):  # a wrong block's may overflow: told apart later
            sketches.append(np.einsum("rs,rc,cs->s", left, matrix, right))
    # The median block scale ignores the few wrong blocks, however large (their squares may overflow).
    # Exactly zero products (a block-diagonal A, an x nonzero on a few blocks) are left out of it: a
    # median of zero would call every other block, parities included, inconsistent.
    norms = [norm for norm in map(frobenius_norm, sketches) if norm]
    scale = float(np.median(norms)) if norms else float(np.finfo(np.float64).tiny)
    return dict(zip(arrays, sketches)), scale
