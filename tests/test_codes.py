import itertools
import math
import pickle
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_coded import ConditioningWarning, DaskCodedWarning, DecodingError
from dask_coded.codes import (
    Chunking,
    Code,
    GradientCode,
    GroupedMDSCode,
    MatDotCode,
    MDSCode,
    PolynomialCode,
    ReplicationCode,
    arithmetic,
    base,
    build_code,
    code_kind,
    make_code,
    register_code,
    registered_codes,
)
from dask_coded.codes.arithmetic import equilibration_exponents, frobenius_norm, line_norms
from dask_coded.codes.base import ONE_SIDED as KIND_ONE
from dask_coded.codes.base import TWO_SIDED as KIND_TWO
from dask_coded.codes.base import _decode_plan
from dask_coded.codes.replication import REPLICATION_GROUP_SIZE
from dask_coded.codes.sizing import (
    MIN_DELAY_SAMPLES,
    data_blocks_for,
    delays_from_evidence,
    expected_latency,
    fit_shifted_exponential,
    parity_from_evidence,
    slow_workers,
)

RTOL = {np.float64: 1e-10, np.complex128: 1e-10, np.float32: 1e-4}

ONE_SIDED = [
    ReplicationCode(3, 2),
    ReplicationCode(2, 3),
    MDSCode(3, 5),
    MDSCode(4, 8),
    MDSCode(5, 6, generator="cauchy"),
    MDSCode(4, 7, generator="chebyshev"),
    MDSCode(6, 8, generator="gaussian", seed=3),
    GroupedMDSCode(5, group_size=2, parity=1),
    GroupedMDSCode(4, group_size=3, parity=2, generator="cauchy"),
]
LARGE_ONE_SIDED = [
    MDSCode(16, 20),
    MDSCode(10, 20),
    MDSCode(18, 20, generator="cauchy"),
    GroupedMDSCode(12, group_size=5, parity=2),
]


def _random(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    out = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        out = out + 1j * rng.standard_normal(shape)
    return out.astype(dtype)


def _recovery_sets(code, samples=300):
    if math.comb(code.n, code.recovery_threshold) <= 2000 and code.n <= 8:
        return list(code.minimal_recovery_sets())
    return code._sample_recovery_sets(samples, seed=1)


def _assert_close(actual, expected, dtype):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=RTOL[dtype] * scale)


def _decode_accurately_or_warn(code, results, shapes, dtype):
    """Decode; the result meets the dtype's target unless a ConditioningWarning said otherwise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConditioningWarning)
        decoded = code.decode(results, shapes=shapes)
    warned = any(issubclass(w.category, ConditioningWarning) for w in caught)
    condition = code.decoding_condition(code.choose_recovery_set(results))
    rtol = 100 * condition * np.finfo(dtype).eps if warned else RTOL[dtype]
    return decoded, rtol


def _row_product(code, dtype, rows=(5, 4), cols=3, vector=False):
    """Split A unevenly by rows, encode, multiply every coded block by B."""
    a = _random((sum(rows) * code.k // 2 + 1, 6), dtype)
    blocks = np.array_split(a, code.k)
    b = _random((6,) if vector else (6, cols), dtype, seed=1)
    coded = code.encode(blocks)
    products = {i: block @ b for i, block in enumerate(coded)}
    shapes = [(block @ b).shape for block in blocks]
    return a @ b, products, shapes


@pytest.mark.parametrize("code", ONE_SIDED + LARGE_ONE_SIDED, ids=repr)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
@pytest.mark.parametrize("vector", [False, True], ids=["matmat", "matvec"])
def test_one_sided_decodes_from_every_recovery_set(code, dtype, vector):
    expected, products, shapes = _row_product(code, dtype, vector=vector)
    for subset in _recovery_sets(code):
        decoded, rtol = _decode_accurately_or_warn(code, {i: products[i] for i in subset}, shapes, dtype)
        np.testing.assert_allclose(
            np.concatenate(decoded), expected, rtol=0, atol=rtol * np.abs(expected).max()
        )
        assert decoded[0].dtype == dtype


@pytest.mark.parametrize("code", ONE_SIDED, ids=repr)
def test_systematic_decode_from_data_blocks_returns_them_unchanged(code):
    blocks = [_random((3, 2), np.float64, seed=i) for i in range(code.k)]
    decoded = code.decode({i: b for i, b in enumerate(code.encode(blocks))})
    assert all(d is b for d, b in zip(decoded, blocks))


TWO_SIDED = [
    PolynomialCode(2, 2, 4),
    PolynomialCode(2, 2, 6),
    PolynomialCode(2, 3, 8),
    PolynomialCode(1, 3, 5),
    PolynomialCode(3, 3, 12),
    PolynomialCode(4, 4, 20),
    MatDotCode(1, 2),
    MatDotCode(2, 4),
    MatDotCode(3, 7),
    MatDotCode(4, 8),
    MatDotCode(8, 20),
]


def _two_sided_product(code, dtype):
    a, b = _random((7, 9), dtype), _random((9, 5), dtype, seed=1)
    if isinstance(code, PolynomialCode):
        a_blocks, b_blocks = np.array_split(a, code.m), np.array_split(b, code.p, axis=1)
        shapes = [(x.shape[0], y.shape[1]) for x in a_blocks for y in b_blocks]
    else:
        a_blocks, b_blocks = np.array_split(a, code.m, axis=1), np.array_split(b, code.m)
        shapes = [(7, 5)]
    coded_a, coded_b = code.encode(a_blocks, b_blocks)
    return a @ b, {i: x @ y for i, (x, y) in enumerate(zip(coded_a, coded_b))}, shapes


def _assemble(code, decoded):
    if isinstance(code, PolynomialCode):
        return np.block([decoded[j * code.p : (j + 1) * code.p] for j in range(code.m)])
    return decoded[0]


@pytest.mark.parametrize("code", TWO_SIDED, ids=repr)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_two_sided_decodes_from_every_recovery_set(code, dtype):
    expected, products, shapes = _two_sided_product(code, dtype)
    for subset in _recovery_sets(code):
        decoded, rtol = _decode_accurately_or_warn(code, {i: products[i] for i in subset}, shapes, dtype)
        np.testing.assert_allclose(
            _assemble(code, decoded), expected, rtol=0, atol=rtol * np.abs(expected).max()
        )


GRADIENT = [
    GradientCode(4, 1, "fractional"),
    GradientCode(6, 2, "fractional"),
    GradientCode(6, 0, "fractional"),
    GradientCode(5, 1, "cyclic"),
    GradientCode(7, 2, "cyclic"),
    GradientCode(8, 3, "cyclic"),
]


@pytest.mark.parametrize("code", GRADIENT, ids=repr)
def test_gradient_code_sums_all_partitions_from_any_n_minus_s(code):
    gradients = [_random(4, np.float64, seed=j) for j in range(code.n)]
    coded = code.encode(gradients)
    for subset in itertools.combinations(range(code.n), code.n - code.s):
        (total,) = code.decode({i: coded[i] for i in subset})
        _assert_close(total, np.sum(gradients, axis=0), np.float64)
    for worker in range(code.n):
        assert len(code.assignment(worker)) == code.s + 1


ALL_CODES = ONE_SIDED + TWO_SIDED[:6] + GRADIENT


@pytest.mark.parametrize("code", [c for c in ALL_CODES if c.n <= 8], ids=repr)
def test_is_recovery_set_agrees_with_linear_algebra(code):
    """The closed-form rule equals "targets lie in the row space of the finished rows"."""
    for size in range(code.n + 1):
        for subset in itertools.combinations(range(code.n), size):
            rows = code.generator[list(subset)]
            if size:
                solution = np.linalg.lstsq(rows.T, code.targets.T, rcond=None)[0]
                spans = np.allclose(rows.T @ solution, code.targets.T, atol=1e-8)
            else:
                spans = False
            assert code.is_recovery_set(subset) == spans, subset
            if size >= code.recovery_threshold:
                assert code.is_recovery_set(subset), subset


@pytest.mark.parametrize("code", [c for c in ALL_CODES if c.n <= 8], ids=repr)
def test_too_few_results_are_rejected(code):
    short = list(range(code.recovery_threshold - 1))
    while code.is_recovery_set(short) and short:
        short.pop()
    block = np.ones((2, 2))
    with pytest.raises(DecodingError, match="not a recovery set"):
        code.decode(dict.fromkeys(short, block) or {0: block} if short else {})


@pytest.mark.parametrize(
    "code,threshold",
    [
        (ReplicationCode(3, 2), 5),
        (MDSCode(4, 7), 4),
        (GroupedMDSCode(5, group_size=2, parity=1), 7),
        (PolynomialCode(2, 3, 9), 6),
        (MatDotCode(4, 9), 7),
        (GradientCode(9, 2, "cyclic"), 7),
        (GradientCode(9, 2, "fractional"), 7),
    ],
    ids=repr,
)
def test_recovery_threshold_is_tight(code, threshold):
    assert code.recovery_threshold == threshold
    worst_sets = [
        s for s in itertools.combinations(range(code.n), threshold - 1) if not code.is_recovery_set(s)
    ]
    assert worst_sets, "some set one below the threshold must fail"


# -- error correction --------------------------------------------------------

CORRUPTIONS = {
    "noise": lambda r, rng: r + 1e3 * rng.standard_normal(r.shape),
    "small-noise": lambda r, rng: r + 1e-6 * np.abs(r).max() * rng.standard_normal(r.shape),
    "nan": lambda r, rng: np.where(rng.random(r.shape) < 0.5, np.nan, r),
    "inf": lambda r, rng: np.full_like(r, np.inf),
    "bitflip": lambda r, rng: _flip_exponent_bit(r, rng),
    "one-entry": lambda r, rng: _bump_one_entry(r, rng),
}


def _flip_exponent_bit(r, rng):
    out = r.copy()
    flat = out.reshape(-1).view(np.uint64)
    flat[rng.integers(flat.size)] ^= np.uint64(1) << np.uint64(rng.integers(52, 62))
    return out


def _bump_one_entry(r, rng):
    out = r.copy()
    out.reshape(-1)[rng.integers(out.size)] += 0.5
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
@pytest.mark.parametrize("wrong", [None, 0, 3, 9])
def test_products_mostly_exactly_zero_are_checked_against_the_nonzero_ones(dtype, wrong):
    """A block-diagonal A times an x nonzero on one block: 7 of the 12 products are exactly 0.

    Their median sketch was 0, so every nonzero product, parities included, looked inconsistent
    and a fault-free decode raised DecodingError.
    """
    rng = np.random.default_rng(0)
    code = MDSCode(8, 12)
    blocks = [np.zeros((4, 32), dtype=dtype) for _ in range(8)]
    for j, block in enumerate(blocks):
        block[:, 4 * j : 4 * j + 4] = rng.standard_normal((4, 4))
    x = np.zeros(32, dtype=dtype)
    x[:4] = rng.standard_normal(4)
    products = {i: block @ x for i, block in enumerate(code.encode(blocks))}
    if wrong is not None:
        products[wrong] = products[wrong] + 1.0
    assert code.locate_errors(products, max_errors=1) == (() if wrong is None else (wrong,))
    # A zero block solved through parities comes back as round-off, which the decode warns about.
    warns = pytest.warns(ConditioningWarning) if wrong == 3 else warnings.catch_warnings()
    with warns:
        decoded = code.decode(products, max_errors=1)
    tolerance = RTOL.get(dtype, 1e-10)
    for block_decoded, block in zip(decoded, blocks):
        np.testing.assert_allclose(block_decoded, block @ x, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128", "int64", "bool"])
@pytest.mark.parametrize("scale", [1.0, 1e200, 1e-200, 1e30, 1e-30])
def test_norms_match_numpy_without_overflow_or_underflow(dtype, scale):
    """Squares of 1e200 overflow and of 1e-200 underflow (to zero, which is no zero block)."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((7, 5)) + (1j * rng.standard_normal((7, 5)) if "complex" in dtype else 0)
    base[2] = 0.0  # a zero row and a zero column stay zero
    base[:, 3] = 0.0
    kind = np.dtype(dtype).kind
    if kind not in "fc" or not float(np.finfo(dtype).tiny) < scale < float(np.finfo(dtype).max):
        scale = 1.0
    block = (np.abs(base) * 10).astype(dtype) if kind in "iub" else (base * scale).astype(dtype)
    exact = block.astype(np.complex128) / scale  # the norms, where they cannot overflow
    np.testing.assert_allclose(frobenius_norm(block) / scale, np.linalg.norm(exact), rtol=1e-5)
    for axis, numpy_axis in ((0, 1), (1, 0)):
        norms = line_norms(block, axis) / scale
        np.testing.assert_allclose(norms, np.linalg.norm(exact, axis=numpy_axis), rtol=1e-5)


@pytest.mark.parametrize("block,axis", [(np.ones(3), 0), (np.ones((2, 2, 2)), 0), (np.ones((2, 2)), 2)])
def test_line_norms_refuses_what_has_no_rows_and_columns(block, axis):
    with pytest.raises(ValueError, match="2-D block and axis 0 or 1"):
        line_norms(block, axis)


def _cancelling_products(code, rng):
    """Products whose rows of +1e8 and -1e8 sum to about 10, and their round-off bounds."""
    blocks = []
    for _ in range(code.k):
        half = rng.standard_normal((40, 30)) * 1e8
        blocks.append(np.concatenate([half, -half + rng.standard_normal((40, 30))], axis=1))
    x = np.ones(60)
    coded = code.encode(blocks)
    products = {i: block @ x for i, block in enumerate(coded)}
    eps = np.finfo(np.float64).eps
    roundoff = {i: eps * np.linalg.norm(block) * np.linalg.norm(x) for i, block in enumerate(coded)}
    return products, roundoff


@pytest.mark.parametrize("code", [MDSCode(4, 6), MDSCode(4, 8, generator="cauchy"), ReplicationCode(2, 3)])
@pytest.mark.parametrize("wrong", [None, 1, 5])
def test_products_that_cancel_are_checked_against_their_own_roundoff(code, wrong):
    """Their round-off is of the size of ``|A| |x|``, far above their own size.

    An allowance sized from the products called such products wrong with no fault at all, where
    da.dot works; each product's bound on its round-off (``roundoff``) tells round-off from a
    wrong result.
    """
    products, roundoff = _cancelling_products(code, np.random.default_rng(0))
    if wrong is not None:
        products[wrong] = products[wrong] + 1.0
    assert code.locate_errors(products, max_errors=1, roundoff=roundoff) == (
        () if wrong is None else (wrong,)
    )


@pytest.mark.parametrize("code", [MDSCode(4, 8), GroupedMDSCode(8, group_size=4, parity=4)])
def test_decode_takes_the_results_roundoff_bounds(code):
    products, roundoff = _cancelling_products(code, np.random.default_rng(3))
    products[1] = products[1] + 1.0
    with pytest.raises(DecodingError):  # judged from their size, every product that cancels looks wrong
        code.decode(products, max_errors=1)
    kept = [i for i in range(code.n) if i != 1]
    expected = code.decode({i: products[i] for i in kept})
    for decoded, right in zip(code.decode(products, max_errors=1, roundoff=roundoff), expected):
        np.testing.assert_allclose(decoded, right, rtol=0, atol=1e-6)


def test_a_wrong_result_cannot_widen_the_allowance_with_its_own_roundoff():
    code = MDSCode(4, 8)
    products, roundoff = _cancelling_products(code, np.random.default_rng(1))
    products[2] = products[2] + 1e3
    roundoff[2] = 1e300  # a faulty worker's claim
    assert code.locate_errors(products, max_errors=1, roundoff=roundoff) == (2,)
    products[5] = products[5] - 1e3
    roundoff[5] = 1e300
    assert code.locate_errors(products, max_errors=2, roundoff=roundoff) == (2, 5)


@pytest.mark.parametrize("claim", [float("nan"), -1.0])
def test_a_result_claiming_an_impossible_roundoff_bound_is_wrong(claim):
    code = MDSCode(4, 8)
    products, roundoff = _cancelling_products(code, np.random.default_rng(4))
    roundoff[6] = claim
    assert code.locate_errors(products, max_errors=1, roundoff=roundoff) == (6,)


def test_results_that_may_have_wrapped_are_not_checked_and_say_so():
    code = MDSCode(4, 8)
    products, roundoff = _cancelling_products(code, np.random.default_rng(2))
    roundoff = dict.fromkeys(roundoff, math.inf)
    products[0] = products[0] + 1.0  # not found: nothing can be
    with pytest.warns(DaskCodedWarning, match="wrapped"):
        assert code.locate_errors(products, max_errors=1, roundoff=roundoff) == ()
    products[3] = np.full_like(products[3], np.nan)  # non-finite results are wrong all the same
    with pytest.warns(DaskCodedWarning, match="wrapped"):
        assert code.locate_errors(products, max_errors=2, roundoff=roundoff) == (3,)


@pytest.mark.parametrize(
    "dtype,value",
    [
        (np.float64, 1e307),
        (np.float64, -1.24e308),
        (np.complex128, 1e307),
        (np.complex128, -1.24e308),
        (np.complex128, complex(0, 1.7e308)),
    ],
)
@pytest.mark.parametrize("victim", [1, 5])
def test_a_wrong_value_near_the_largest_float_is_located(dtype, value, victim):
    """An exponent bit flipped: the block's projections overflow where the others' do not.

    Complex blocks used to make the residual solve overflow, and the error was detected but not
    located (DecodingError with no suspects) where 7 good products of 8 were there to correct it.
    """
    rng = np.random.default_rng(0)
    code = MDSCode(4, 8)
    blocks = [rng.standard_normal((50, 25)).astype(dtype) for _ in range(4)]
    x = rng.standard_normal((25, 10)).astype(dtype)
    products = {i: block @ x for i, block in enumerate(code.encode(blocks))}
    products[victim] = products[victim].copy()
    products[victim][3, 3] = value
    assert code.locate_errors(products, max_errors=1) == (victim,)
    for decoded, block in zip(code.decode(products, max_errors=1), blocks):
        np.testing.assert_allclose(decoded, block @ x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "code,t",
    [
        (MDSCode(4, 6), 1),
        (MDSCode(4, 8), 2),
        (MDSCode(10, 16), 3),
        (GroupedMDSCode(6, group_size=3, parity=2), 1),
        (ReplicationCode(2, 3), 1),
        (PolynomialCode(2, 2, 7), 1),
        (MatDotCode(2, 6), 1),
    ],
    ids=repr,
)
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("seed", range(3))
def test_corrects_t_wrong_results_at_random_positions(code, t, corruption, seed):
    rng = np.random.default_rng(seed)
    if isinstance(code, (PolynomialCode, MatDotCode)):
        expected, products, shapes = _two_sided_product(code, np.float64)
    else:
        expected, products, shapes = _row_product(code, np.float64)
    wrong = tuple(sorted(rng.choice(code.n, t, replace=False).tolist()))
    for i in wrong:
        products[i] = CORRUPTIONS[corruption](products[i], rng)
    if isinstance(code, ReplicationCode):
        present = products  # every copy: 3 per block corrects 1
    else:
        keep = sorted(set(rng.permutation(code.n)[: code.recovery_threshold + 2 * t].tolist()) | set(wrong))
        present = {i: products[i] for i in keep}
    assert code.locate_errors(present, max_errors=t) == wrong
    decoded = code.decode(present, max_errors=t, shapes=shapes)
    _assert_close(
        _assemble(code, decoded)
        if len(decoded) != code.k or isinstance(code, PolynomialCode)
        else np.concatenate(decoded),
        expected,
        np.float64,
    )


@pytest.mark.parametrize("code,t", [(MDSCode(4, 8), 2), (MDSCode(6, 9), 3), (MatDotCode(3, 8), 2)], ids=repr)
def test_detects_but_cannot_correct_with_only_k_plus_t(code, t):
    if isinstance(code, MatDotCode):
        _, products, _ = _two_sided_product(code, np.float64)
    else:
        _, products, _ = _row_product(code, np.float64)
    present = {i: products[i] for i in range(code.recovery_threshold + t)}
    assert code.decode(present, max_errors=t)  # clean results pass the check
    wrong = set(range(1, 1 + t))
    for i in wrong:
        present[i] = present[i] + 1.0
    with pytest.raises(DecodingError, match="but not located") as info:
        code.decode(present, max_errors=t)
    assert wrong <= set(info.value.suspects)


def test_more_errors_than_max_errors_raise_not_return():
    code = MDSCode(4, 8)
    _, products, _ = _row_product(code, np.float64)
    for i in (0, 3, 6):
        products[i] = products[i] + 10.0
    with pytest.raises(DecodingError, match="wrong result"):
        code.decode(products, max_errors=1)


def test_max_errors_zero_does_no_checking():
    code = MDSCode(2, 4)
    wrong = {0: np.ones(2), 1: np.ones(2), 2: np.full(2, 99.0)}
    np.testing.assert_array_equal(np.concatenate(code.decode(wrong)), np.ones(4))


def test_nan_in_inputs_cannot_be_corrected():
    code = MDSCode(3, 6)
    results = {i: np.full(3, np.nan) for i in range(6)}
    with pytest.raises(DecodingError, match="not finite"):
        code.decode(results, max_errors=1)


def test_gradient_codes_refuse_max_errors():
    with pytest.raises(ValueError, match="max_errors"):
        GradientCode(4, 1).decode({i: np.ones(2) for i in range(4)}, max_errors=1)


# -- numerics ------------------------------------------------------------------


@pytest.mark.parametrize(
    "code,bound",
    [
        (MDSCode(4, 6), 1e3),
        (MDSCode(16, 20), 1e6),
        (PolynomialCode(2, 2, 6), 1e3),
        (MatDotCode(4, 8), 1e3),
        (ReplicationCode(3, 3), 1.0),
    ],
    ids=repr,
)
def test_condition_number_is_reported_and_small(code, bound):
    condition = code.condition_number()
    assert 1.0 <= condition <= bound


def test_ill_conditioned_decode_warns():
    code = MDSCode(10, 20, generator="chebyshev")
    assert code.condition_number(samples=200) > 1e4
    products = {i: np.ones(3, dtype=np.float32) for i in range(10, 20)}
    with pytest.warns(ConditioningWarning, match="accuracy dask-coded promises for float32"):
        code.decode(products)


def test_a_decode_computes_the_exact_condition_number_only_when_its_bound_nears_the_limit():
    """A plan a worker has not seen bounds the condition from its LU inverse; the SVD is for warnings."""
    base._cached_condition.cache_clear()
    code = MDSCode(5, 7)
    blocks = [np.full(4, float(j + 1)) for j in range(5)]
    results = {i: b for i, b in enumerate(code.encode(blocks)) if i != 0 and i != 3}
    np.testing.assert_allclose(np.concatenate(code.decode(results)), np.concatenate(blocks), rtol=1e-12)
    assert base._cached_condition.cache_info().currsize == 0
    ill = MDSCode(10, 20, generator="chebyshev")
    chosen = tuple(range(10, 20))
    products = {i: np.ones(3, dtype=np.float32) for i in chosen}
    exact = re.escape(f"condition number {ill.decoding_condition(chosen):.3g}")
    with pytest.warns(ConditioningWarning, match=exact):
        ill.decode(products)


def test_a_square_singular_set_that_spans_the_targets_still_decodes():
    """Fractional-repetition gradient rows repeat: all n of them are square and singular, yet give the sum."""
    code = GradientCode(4, 1, "fractional")
    weights = code.decoding_weights(range(4))
    np.testing.assert_allclose(weights @ code.generator, code.targets, rtol=0, atol=1e-12)
    gradients = [np.full(3, float(j + 1)) for j in range(4)]
    results = dict(enumerate(code.encode(gradients)))
    np.testing.assert_allclose(code.decode(results)[0], np.sum(gradients, axis=0), rtol=1e-12)


@pytest.mark.parametrize("n, stragglers", [(8, 3), (6, 2), (5, 1), (12, 5), (10, 9), (12, 11), (16, 15)])
def test_a_numerically_singular_square_set_decodes_through_the_pseudo_inverse(n, stragglers):
    """Cyclic gradient rows are singular, yet rounding gives LU a tiny pivot rather than an error.

    pinv must drop the singular values that are rounding errors of zero (n - 1 stragglers of 10
    once lost 0.6% without a warning).
    """
    code = GradientCode(n, stragglers, "cyclic")
    weights = code.decoding_weights(range(n))
    np.testing.assert_allclose(weights @ code.generator, code.targets, rtol=0, atol=1e-10)
    rng = np.random.default_rng(0)
    gradients = [rng.standard_normal(4) for _ in range(n)]
    coded = code.encode(gradients)
    (total,) = code.decode({i: coded[i] for i in range(n)}, recovery_set=range(n))
    np.testing.assert_allclose(total, np.sum(gradients, axis=0), rtol=1e-10, atol=1e-12)


def test_integer_blocks_that_are_in_come_back_bit_for_bit():
    code = MDSCode(3, 5)
    blocks = [np.array([2**60 + 7, -(2**62) + 3]) + j for j in range(3)]
    coded = code.encode(blocks)
    assert all(c is b for c, b in zip(coded, blocks))
    decoded = code.decode({0: coded[0], 1: coded[1], 2: coded[2], 4: coded[4]})
    assert all(d is b for d, b in zip(decoded, blocks))
    # Only the missing block goes through float64.
    partial = code.decode({0: coded[0], 2: coded[2], 3: coded[3]})
    assert partial[0] is blocks[0] and partial[1].dtype == np.float64


def test_integers_are_decoded_in_float64():
    code = MDSCode(2, 3)
    coded = code.encode([np.array([1, 2]), np.array([3, 4])])
    assert coded[2].dtype == np.float64
    decoded = code.decode({1: coded[1], 2: coded[2]})
    assert decoded[0].dtype == np.float64
    np.testing.assert_allclose(decoded[0], [1, 2], rtol=1e-12)


SCALES = [(1e12, 1e-3), (1e-3, 1e12), (1e200, 1e-200), (1.0, 1.0)]


@pytest.mark.parametrize("code", [MDSCode(3, 5), MDSCode(4, 8), MDSCode(5, 6, generator="cauchy")], ids=repr)
@pytest.mark.parametrize("scales", SCALES)
def test_equilibrated_blocks_decode_to_their_own_relative_accuracy(code, scales):
    rng = np.random.default_rng(0)
    blocks = [scales[j % 2] * rng.standard_normal((4, 3)) for j in range(code.k)]
    exponents = equilibration_exponents(blocks)
    coded = code.encode(blocks, exponents=exponents)
    for subset in _recovery_sets(code):
        decoded = code.decode({i: coded[i] for i in subset}, exponents=exponents)
        for d, b in zip(decoded, blocks):
            assert np.abs(d - b).max() <= 1e-10 * np.abs(b).max(), subset


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_equilibrated_decodes_fold_the_exponents_into_the_weights_exactly(dtype):
    """Scaling weights instead of blocks by powers of two gives the same numbers, bit for bit."""
    code = MDSCode(4, 7)
    rng = np.random.default_rng(3)
    blocks = [(10.0 ** rng.integers(-8, 9)) * rng.standard_normal((5, 3)).astype(dtype) for _ in range(4)]
    exponents = equilibration_exponents(blocks)
    coded = code.encode(blocks, exponents=exponents)
    outputs = [0, 1, 2, 3]
    for chosen in itertools.combinations(range(code.n), code.k):
        plan = _decode_plan(code, chosen, tuple(outputs))
        arrays = {i: coded[i] for i in chosen}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConditioningWarning)
            folded = code._solve(arrays, plan, outputs, exponents)
            scaled = code._solve_scaled([arrays[i] for i in plan.used], plan, outputs, exponents)
        for o in outputs:
            np.testing.assert_array_equal(folded[o], scaled[o])


def test_unequilibrated_scale_mismatch_warns_per_block():
    code = MDSCode(2, 3)
    blocks = [np.full(3, 1e12), np.array([1e-3, 2e-3, 3e-3])]
    coded = code.encode(blocks)
    with pytest.warns(ConditioningWarning, match="relative error of output block 1 may reach"):
        code.decode({0: coded[0], 2: coded[2]})
    exponents = equilibration_exponents(blocks)
    coded = code.encode(blocks, exponents=exponents)
    small = code.decode({0: coded[0], 2: coded[2]}, exponents=exponents)[1]  # no warning
    np.testing.assert_allclose(small, blocks[1], rtol=1e-12)


def test_exponents_are_checked():
    with pytest.raises(ValueError, match="3 integer exponents"):
        MDSCode(3, 4).encode([np.ones(2)] * 3, exponents=[1, 2])
    with pytest.raises(ValueError, match="per-block exponents do not apply"):
        GradientCode(3, 1, "cyclic").decode({i: np.ones(2) for i in range(3)}, exponents=[0, 0, 0])


@pytest.mark.parametrize(
    "code", [MDSCode(3, 5), MDSCode(4, 6, generator="cauchy"), ReplicationCode(3, 2)], ids=repr
)
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_results_never_spread_to_other_blocks(code, value):
    rng = np.random.default_rng(1)
    blocks = [rng.standard_normal((3, 2)) for _ in range(code.k)]
    blocks[1][2, 0] = value
    coded = code.encode(blocks)
    for size in range(1, code.n + 1):
        for subset in itertools.combinations(range(code.n), size):
            for output in range(code.k):
                try:
                    (out,) = code.decode({i: coded[i] for i in subset}, outputs=[output])
                except DecodingError as error:
                    assert "not finite" in str(error) or "not a recovery set" in str(error)
                    continue
                np.testing.assert_array_equal(out, blocks[output])  # NaN positions included


@pytest.mark.parametrize("code", [PolynomialCode(2, 2, 6), MatDotCode(2, 4)], ids=repr)
def test_two_sided_codes_refuse_nonfinite_data(code):
    expected, products, shapes = _two_sided_product(code, np.float64)
    a_blocks_nan = {
        i: np.where(np.arange(p.size).reshape(p.shape) == 0, np.nan, p) for i, p in products.items()
    }
    with pytest.raises(DecodingError, match="not finite"):
        code.decode(a_blocks_nan, shapes=shapes)
    one_bad = dict(products)
    one_bad[0] = a_blocks_nan[0]  # a soft error in one product: decoded from the finite others
    decoded = code.decode(one_bad, shapes=shapes)
    _assert_close(_assemble(code, decoded), expected, np.float64)


@pytest.mark.parametrize("code", [c for c in TWO_SIDED if c.n <= 8], ids=repr)
def test_uncoded_members_sum_to_each_output_whenever_each_term_has_one(code):
    """What dask_coded.dot computes when the operands hold NaN: each member one term, uncoded."""
    a, b = _random((7, 9), np.float64), _random((9, 5), np.float64, seed=1)
    if isinstance(code, PolynomialCode):
        a_blocks, b_blocks = np.array_split(a, code.m), np.array_split(b, code.p, axis=1)
        outputs, terms = [x @ y for x in a_blocks for y in b_blocks], code.m * code.p
        terms_of = [{output} for output in range(terms)]
    else:
        a_blocks, b_blocks = np.array_split(a, code.m, axis=1), np.array_split(b, code.m)
        outputs, terms = [a @ b], code.m
        terms_of = [set(range(terms))]
    products = []
    for member in range(code.n):
        left, right = code.uncoded_operands(member)
        products.append(a_blocks[left] @ b_blocks[right])
    for size in range(code.n + 1):
        for finished in itertools.combinations(range(code.n), size):
            covered = {i % terms for i in finished}
            for output, expected in enumerate(outputs):
                members = code.uncoded_members(output, finished)
                assert (members is None) == (not terms_of[output] <= covered)
                if members is not None:
                    assert len(members) == len(terms_of[output]) and set(members) <= set(finished)
                    np.testing.assert_allclose(sum(products[i] for i in members), expected, rtol=1e-12)


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    "factory,match",
    [
        (lambda: MDSCode(5, 3), "n >= k"),
        (lambda: MDSCode(0, 3), "k must be a positive integer"),
        (lambda: MDSCode(2, 3, generator="vandermonde"), "unknown MDS generator"),
        (lambda: PolynomialCode(2, 2, 3), "n >= m \\* p"),
        (lambda: MatDotCode(3, 4), "n >= 2m - 1"),
        (lambda: GradientCode(5, 1, "fractional"), "divide n"),
        (lambda: GradientCode(4, 4), "s must be"),
        (lambda: GradientCode(4, 1, "magic"), "unknown gradient-code scheme"),
        (lambda: make_code("lt", k=2), "unknown code 'lt'"),
    ],
)
def test_bad_parameters_raise(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_bad_blocks_raise():
    code = MDSCode(2, 3)
    with pytest.raises(ValueError, match="encodes 2 blocks, got 3"):
        code.encode([np.ones(2)] * 3)
    with pytest.raises(TypeError, match="dtype <U1"):
        code.encode([np.array(["a"]), np.array(["b"])])
    with pytest.raises(TypeError, match="needs numbers"):
        code.decode({0: np.array([object()]), 1: np.ones(1)})
    with pytest.raises(ValueError, match="different numbers of dimensions"):
        code.encode([np.ones(2), np.ones((2, 2))])
    with pytest.raises(ValueError, match=r"block indices must be in \[0, 3\)"):
        code.decode({0: np.ones(2), 7: np.ones(2)})
    with pytest.raises(ValueError, match="max_errors must be"):
        code.decode({0: np.ones(2), 1: np.ones(2)}, max_errors=-1)
    with pytest.raises(DecodingError, match="non-empty mapping"):
        code.decode({})


def test_codes_are_values_that_pickle_and_tokenize():
    from dask.base import tokenize

    code = MDSCode(4, 6)
    code.decode({i: np.ones(1) for i in range(4)})  # fills the weights cache
    clone = pickle.loads(pickle.dumps(code))
    assert clone == code and hash(clone) == hash(code)
    assert tokenize(clone) == tokenize(MDSCode(4, 6)) != tokenize(MDSCode(4, 6, seed=1))
    assert "_weights_cache" not in clone.__dict__


def test_registry():
    assert {"mds", "replication", "polynomial", "matdot", "gradient"} <= set(registered_codes())
    assert make_code("replication", k=2, r=3) == ReplicationCode(2, 3)
    with pytest.raises(ValueError, match="already registered"):
        register_code("mds", MDSCode)


def test_registry_knows_each_codes_kind_and_builds_it_from_chunking():
    assert code_kind("mds") == code_kind(MDSCode(2, 3)) == KIND_ONE
    assert code_kind("matdot") == code_kind(PolynomialCode(1, 1, 2)) == KIND_TWO
    assert code_kind("gradient") is None and code_kind("no-such-code") is None
    assert {"mds", "replication"} <= set(registered_codes(KIND_ONE))
    assert {"polynomial", "matdot"} == set(registered_codes(KIND_TWO)) & {"polynomial", "matdot", "mds"}
    chunks = Chunking(row_blocks=3, col_blocks=2, inner_blocks=4, blocks=3, parity=1, max_errors=1)
    assert build_code("mds", chunks) == MDSCode(3, 6)
    assert build_code("replication", chunks) == ReplicationCode(3, 3)
    assert build_code("polynomial", chunks) == PolynomialCode(3, 2, 9)
    assert build_code("matdot", chunks) == MatDotCode(4, 10)
    with pytest.raises(ValueError, match="not a product code"):
        build_code("gradient", chunks)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "sideways", "from_chunking": lambda c: MDSCode(c.blocks, c.blocks)}, "kind must be one of"),
        ({"kind": KIND_ONE}, "needs from_chunking"),
    ],
)
def test_register_code_checks_kind_and_factory(kwargs, message):
    with pytest.raises(ValueError, match=message):
        register_code("test-bad-registration", MDSCode, **kwargs)
    assert "test-bad-registration" not in registered_codes()


def test_uncoded_terms_are_for_two_sided_codes_only():
    for ask in (
        lambda c: c.uncoded_terms,
        lambda c: c.uncoded_operands(0),
        lambda c: c.uncoded_members(0, [0]),
    ):
        with pytest.raises(NotImplementedError, match="MDSCode is not a two-sided code"):
            ask(MDSCode(2, 3))


@pytest.mark.parametrize(
    "workers, max_errors, options, expected",
    [
        (4, 0, {}, GroupedMDSCode(128, group_size=3, parity=1)),  # was 16 + 2: 4-5 members per worker
        (5, 0, {}, GroupedMDSCode(128, group_size=4, parity=1)),
        (8, 0, {}, None),  # room for the margin parity too: groups of 6 + 2 either way
        (2, 0, {}, None),  # too small either way
        (4, 1, {}, None),  # correcting an error needs its 2t blocks of redundancy
        (4, 0, {"group-size": 8}, None),  # the user's groups
    ],
)
def test_small_clusters_with_a_slow_machine_get_one_member_per_worker(workers, max_errors, options, expected):
    """Measured: 4 workers, 128 chunks, groups of 16 + 2: the slow machine's 4-5 members of each
    group outnumbered its parities, and calls took 3-10x da.dot's time (22.9 s against 2.7-7.5 s;
    groups of 3 + 1: 1.6 s). ``expected`` None: the code is the one built without the evidence."""

    def chunks(slow):  # one parity per slow worker plus one, as parity_from_evidence gives
        return Chunking(128, 1, 1, 128, 2, max_errors, workers, options, slow=slow)

    assert build_code("mds", chunks(1)) == (expected or build_code("mds", chunks(0)))


def test_build_code_checks_what_the_factory_returns():
    for name, factory in [
        ("test-wrong-k", lambda c: MDSCode(c.blocks + 1, c.blocks + 2)),
        ("test-not-a-code", lambda c: "mds"),
    ]:
        if name not in registered_codes():
            register_code(name, MDSCode, kind=KIND_ONE, from_chunking=factory)
    chunks = Chunking(row_blocks=2, col_blocks=1, inner_blocks=1, blocks=2)
    with pytest.raises(ValueError, match="built k=3 data blocks for an operand in 2"):
        build_code("test-wrong-k", chunks)
    with pytest.raises(TypeError, match="returned str, not a Code"):
        build_code("test-not-a-code", chunks)


# -- property: encode, erase any n - threshold blocks, decode ------------------


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 8),
    parity=st.integers(0, 6),
    rows=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_property_erase_up_to_n_minus_k_then_decode(k, parity, rows, seed, data):
    code = MDSCode(k, k + parity)
    a = _random((k * rows + data.draw(st.integers(0, k - 1)), 3), np.float64, seed=seed)
    blocks = np.array_split(a, k)
    coded = code.encode(blocks)
    survivors = data.draw(st.sets(st.integers(0, code.n - 1), min_size=k, max_size=code.n))
    decoded = code.decode({i: coded[i] for i in survivors}, shapes=[b.shape for b in blocks])
    np.testing.assert_allclose(np.concatenate(decoded), a, rtol=0, atol=1e-10 * np.abs(a).max())


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 6),
    parity=st.integers(0, 4),
    magnitudes=st.lists(st.integers(-250, 250), min_size=6, max_size=6),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_property_equilibrated_erase_then_decode_across_scales(k, parity, magnitudes, seed, data):
    code = MDSCode(k, k + parity)
    rng = np.random.default_rng(seed)
    blocks = [10.0 ** magnitudes[j] * rng.standard_normal((3, 2)) for j in range(k)]
    exponents = equilibration_exponents(blocks)
    coded = code.encode(blocks, exponents=exponents)
    survivors = data.draw(st.sets(st.integers(0, code.n - 1), min_size=k, max_size=code.n))
    decoded = code.decode({i: coded[i] for i in survivors}, exponents=exponents)
    for d, b in zip(decoded, blocks):
        assert np.abs(d - b).max() <= 1e-10 * np.abs(b).max()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 9), seed=st.integers(0, 2**16), data=st.data())
def test_property_gradient_code_any_n_minus_s(n, seed, data):
    s = data.draw(st.integers(0, n - 1))
    code = GradientCode(n, s, "cyclic", seed=seed % 7)
    gradients = [_random(2, np.float64, seed=seed + j) for j in range(n)]
    coded = code.encode(gradients)
    survivors = data.draw(st.sets(st.integers(0, n - 1), min_size=n - s, max_size=n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditioningWarning)
        (total,) = code.decode({i: coded[i] for i in survivors})
    np.testing.assert_allclose(total, np.sum(gradients, axis=0), rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 5),
    workers=st.integers(3, 8),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_property_a_faulty_worker_is_located_however_many_members_it_computed(k, workers, seed, data):
    """Members i run on worker i mod W; one worker returns garbage for all of its members."""
    from dask_coded.policy import coded_block_count

    stragglers = data.draw(st.integers(0, 2))
    code = MDSCode(k, coded_block_count(k, stragglers, max_errors=1, workers=workers))
    suspects = {i: i % workers for i in range(code.n)}
    rng = np.random.default_rng(seed)
    blocks = [rng.standard_normal((3, 2)) for _ in range(k)]
    results = dict(enumerate(code.encode(blocks)))
    late = data.draw(st.sets(st.integers(0, workers - 1), max_size=min(stragglers, workers - 3)))
    faulty = data.draw(st.integers(0, workers - 1).filter(lambda w: w not in late))
    kind = data.draw(st.sampled_from(sorted(CORRUPTIONS)))
    results = {i: np.asarray(r) for i, r in results.items() if suspects[i] not in late}
    members = [i for i in results if suspects[i] == faulty]
    changed = False
    for i in members:
        wrong_result = CORRUPTIONS[kind](results[i], rng)
        changed |= not np.array_equal(wrong_result, results[i])
        results[i] = wrong_result
    wrong = code.locate_errors(results, max_errors=1, suspects=suspects)
    # A suspect is wrong as a whole: all of the faulty worker's members, if any came back changed.
    assert set(wrong) == (set(members) if changed else set())
    decoded = code.decode(results, max_errors=1, suspects=suspects)
    for d, b in zip(decoded, blocks):
        np.testing.assert_allclose(d, b, rtol=0, atol=1e-10 * np.abs(b).max())


# -- grouped codes -----------------------------------------------------------


@pytest.mark.parametrize("k,group_size,parity", [(1, 1, 0), (7, 3, 2), (10, 5, 1), (4, 8, 2), (1024, 6, 2)])
def test_grouped_code_layout(k, group_size, parity):
    code = GroupedMDSCode(k, group_size=group_size, parity=parity)
    groups = code.groups
    assert len(groups) == math.ceil(k / group_size)
    assert code.n == k + parity * len(groups)
    # Every coded block is in exactly one group: data blocks in order, then the parities.
    members = [i for group in groups for i in group.members]
    assert sorted(members) == list(range(code.n))
    for q, group in enumerate(groups):
        data = group.members[: group.code.k]
        assert data == tuple(range(q * group_size, min(k, (q + 1) * group_size)))
        assert group.code == MDSCode(len(data), len(data) + parity)
        assert all(code.group_of(i) == q for i in group.members)
    assert code.recovery_threshold == code.n - parity


@pytest.mark.parametrize("k,r", [(1, 2), (64, 2), (65, 2), (200, 3)])
def test_replication_groups_are_runs_of_blocks_with_their_copies(k, r):
    code = ReplicationCode(k, r)
    size = REPLICATION_GROUP_SIZE
    assert len(code.groups) == math.ceil(k / size)
    assert sorted(i for group in code.groups for i in group.members) == list(range(code.n))
    for group in code.groups:
        # Member i of the group is a copy of its block i % k, as coded block members[i] is of the whole's.
        for local, i in enumerate(group.members):
            assert group.members[group.code.copied_block(local)] == code.copied_block(i)
    # Any one copy of each block decodes, group by group.
    rng = np.random.default_rng(k)
    blocks = [rng.standard_normal(2) for _ in range(k)]
    coded = code.encode(blocks)
    finished = {i: coded[i] for i in rng.permutation(code.n)[: code.n - r + 1]}
    for group in code.groups:
        local = {m: finished[i] for m, i in enumerate(group.members) if i in finished}
        for d, j in zip(group.code.decode(local), group.members[: group.code.k]):
            np.testing.assert_array_equal(d, blocks[j])


def test_grouped_code_generator_is_block_diagonal_with_each_groups_code():
    code = GroupedMDSCode(7, group_size=3, parity=2)
    for group in code.groups:
        data, parities = list(group.members[: group.code.k]), list(group.members[group.code.k :])
        np.testing.assert_array_equal(
            code.generator[np.ix_(parities, data)], group.code.generator[group.code.k :]
        )
        others = [j for j in range(code.k) if j not in data]
        assert not code.generator[np.ix_(parities, others)].any()
    assert code.systematic


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 12),
    group_size=st.integers(1, 6),
    parity=st.integers(0, 3),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_property_grouped_code_decodes_when_each_group_lost_at_most_parity(k, group_size, parity, seed, data):
    code = GroupedMDSCode(k, group_size=group_size, parity=parity)
    rng = np.random.default_rng(seed)
    blocks = [rng.standard_normal((2, 3)) for _ in range(k)]
    x = rng.standard_normal(3)
    products = {i: block @ x for i, block in enumerate(code.encode(blocks))}
    lost = set()
    for group in code.groups:
        lost |= set(data.draw(st.lists(st.sampled_from(group.members), max_size=parity, unique=True)))
    finished = {i: p for i, p in products.items() if i not in lost}
    assert code.is_recovery_set(finished)
    decoded = code.decode(finished)
    np.testing.assert_allclose(
        np.concatenate(decoded), np.concatenate([b @ x for b in blocks]), rtol=1e-9, atol=1e-12
    )
    # The grouped decode agrees with the generic decode through the whole (block-diagonal) generator.
    generic = Code.decode(code, finished)
    np.testing.assert_allclose(np.concatenate(decoded), np.concatenate(generic), rtol=1e-9, atol=1e-12)
    if parity and len(finished) < code.n:
        group = code.groups[data.draw(st.integers(0, len(code.groups) - 1))]
        short = {i: p for i, p in finished.items() if i not in group.members[: parity + 1]}
        assert not code.is_recovery_set(short)
        with pytest.raises(DecodingError, match="not a recovery set"):
            code.decode(short)


def test_grouped_code_decodes_the_outputs_asked_for_with_exponents():
    code = GroupedMDSCode(5, group_size=2, parity=1)
    blocks = [
        np.array([1e12, 2e12]),
        np.array([1e-3, 3e-3]),
        np.array([5.0, 6.0]),
        np.array([7.0, 8.0]),
        np.array([9.0]),
    ]
    exponents = equilibration_exponents(blocks)
    coded = code.encode(blocks, exponents=exponents)
    results = {i: coded[i] for i in range(code.n) if i not in (1, 3)}  # one late block in two groups
    decoded = code.decode(results, outputs=[3, 1], exponents=exponents, shapes=[(2,), (2,)])
    np.testing.assert_allclose(decoded[0], blocks[3], rtol=1e-12)
    np.testing.assert_allclose(decoded[1], blocks[1], rtol=1e-12)  # the small block keeps its digits
    with pytest.raises(ValueError, match="integer exponents"):
        code.encode(blocks, exponents=[0, 0])


@pytest.mark.parametrize(
    "workers,parity,max_errors,blocks,expected",
    [
        (8, 2, 0, 6, MDSCode(6, 8)),  # fits one group: the plain MDS code
        (8, 2, 0, 20, GroupedMDSCode(20, group_size=6, parity=2)),  # one member of a group per worker
        (12, 2, 1, 20, GroupedMDSCode(20, group_size=8, parity=4)),  # 2 more per group to outvote one
        (5, 2, 1, 6, MDSCode(6, 30)),  # members share workers: sized as before
        (4, 2, 0, 9, MDSCode(9, 11)),  # small cluster: one member per worker would double the work
        (6, 2, 0, 9, GroupedMDSCode(9, group_size=4, parity=2)),  # 50% extra buys one per worker
        (None, 2, 0, 40, GroupedMDSCode(40, group_size=16, parity=2)),  # no cluster known
        (1000, 2, 0, 200, GroupedMDSCode(200, group_size=64, parity=2)),  # bounded decode fan-in
    ],
    ids=repr,
)
def test_mds_factory_groups_by_the_cluster_size(workers, parity, max_errors, blocks, expected):
    chunking = Chunking(blocks, 1, 1, blocks, parity, max_errors, workers, {"group-size": "auto"})
    assert build_code("mds", chunking) == expected


def test_group_size_option():
    chunking = Chunking(10, 1, 1, 10, 2, 0, 8, {"group-size": 4})
    assert build_code("mds", chunking) == GroupedMDSCode(10, group_size=4, parity=2)
    for bad in (0, -1, "big", 2.5, True):
        with pytest.raises(ValueError, match="coded.group-size"):
            build_code("mds", Chunking(10, 1, 1, 10, 2, 0, 8, {"group-size": bad}))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"k": 0, "group_size": 2, "parity": 1}, "k must be"),
        ({"k": 4, "group_size": 0, "parity": 1}, "group_size must be"),
        ({"k": 4, "group_size": 2, "parity": -1}, "parity must be"),
        ({"k": 4, "group_size": 2, "parity": 1, "generator": "vandermonde"}, "unknown MDS generator"),
    ],
)
def test_grouped_code_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GroupedMDSCode(**kwargs)


def test_grouped_code_is_a_value_and_pickles_without_its_generator():
    code = GroupedMDSCode(30, group_size=4, parity=2)
    code.generator  # noqa: B018 - builds and caches the whole generator
    state = pickle.dumps(code)
    assert len(state) < 2_000
    assert pickle.loads(state) == code and hash(pickle.loads(state)) == hash(code)
    assert code != GroupedMDSCode(30, group_size=5, parity=2)


@pytest.mark.parametrize(
    "ratios,workers,expected",
    [
        ({"a": 1.0, "b": 1.2, "c": 0.9, "d": 1.0, "e": 1.1, "f": 1.0}, 6, 1),  # nothing straggles
        ({"a": 1.0, "b": 1.2, "c": 0.9, "d": 1.0, "e": 1.1, "f": 9.0}, 6, 2),  # a slow machine
        ({"a": 1.0, "b": 8.0, "c": 0.9, "d": 1.0, "e": 1.1, "f": 9.0}, 6, 3),
        ({"a": 1.0, "b": 1.0}, 6, 2),  # too little evidence: the fallback
        ({}, 4, 2),
        (None, None, 2),
        ({"a": 1.0, "b": 9.0}, 2, 1),  # never all the workers
    ],
)
def test_parity_from_evidence(ratios, workers, expected):
    assert parity_from_evidence(ratios, workers) == expected


def test_slow_workers_compare_with_the_median():
    assert slow_workers({"a": 1.0, "b": 0.9, "c": 1.1, "d": 8.0}) == {"d"}
    assert slow_workers({"a": 1.0, "b": 2.9}) == set()
    assert slow_workers({"a": 1.0}) == set()


@pytest.mark.parametrize("shift,scale", [(1.0, 0.0), (0.5, 2.0), (0.0, 1.0), (3.0, 0.3)])
def test_fit_shifted_exponential_recovers_the_parameters(shift, scale):
    samples = shift + np.random.default_rng(1).exponential(scale, 50_000) if scale else [shift] * 100
    fitted_shift, fitted_scale = fit_shifted_exponential(samples)
    np.testing.assert_allclose([fitted_shift, fitted_scale], [shift, scale], atol=0.03 * (shift + scale))


def test_fit_shifted_exponential_shrugs_off_a_few_extreme_samples():
    quiet = list(1.0 + np.random.default_rng(2).uniform(-0.01, 0.01, 60))
    shift, scale = fit_shifted_exponential(quiet + [50.0, 80.0, float("inf"), float("nan")])
    assert scale < 0.05 and abs(shift - 1.0) < 0.05
    assert fit_shifted_exponential([1.0] * (MIN_DELAY_SAMPLES - 1)) is None


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_expected_latency_matches_a_simulation(n):
    """Lee et al.'s model: each of n workers takes (0.5 + Exp(2)) / k for 1/k of the work."""
    whole_work = np.sort(0.5 + np.random.default_rng(n).exponential(2.0, (100_000, n)), axis=1)
    for k in range(1, n + 1):
        simulated = whole_work[:, k - 1].mean() / k  # the k-th fastest worker
        np.testing.assert_allclose(expected_latency(k, n, 0.5, 2.0), simulated, rtol=0.02)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        expected_latency(n + 1, n, 1.0, 1.0)


@given(
    workers=st.integers(1, 64),
    parity=st.integers(1, 8),
    delays=st.none() | st.tuples(st.floats(0, 10), st.floats(0, 10)),
)
@settings(deadline=None)
def test_data_blocks_one_per_worker_at_most_twice_the_work(workers, parity, delays):
    k = data_blocks_for(workers, parity, delays)
    if k is None:
        assert workers - parity < max(-(-workers // 2), 1)
        return
    assert -(-workers // 2) <= k <= workers - parity  # n = workers: n / k <= 2, and `parity` spare
    if delays is None or delays[1] == 0:
        assert k == workers - parity  # no tail to hedge against: the smallest blocks


def test_data_blocks_shrink_as_the_tail_grows():
    chosen = [data_blocks_for(8, 1, (1.0, scale)) for scale in (0.0, 0.1, 0.2, 0.5, 2.0, 10.0)]
    assert chosen == sorted(chosen, reverse=True) and chosen[0] == 7 and chosen[-1] == 4
    assert data_blocks_for(8, 3, (1.0, 0.0)) == 5  # two slow workers measured: their blocks are lost
    assert data_blocks_for(8, 0, (1.0, 0.05)) == 7  # no parity asked: still no more than W workers
    for delays in [(float("inf"), 1.0), (1.0, float("nan")), (-1.0, 1.0)]:
        with pytest.raises(ValueError, match="finite, non-negative delays"):
            data_blocks_for(8, 1, delays)


@pytest.mark.parametrize("delays", [(1.0, 0.1), (1.0, 0.5), (0.43, 0.82), (0.2, 3.0)])
def test_data_blocks_hedge_between_delays_that_scale_with_work_and_delays_that_do_not(delays):
    """Simulated, not from the formula: the chosen k is never far from the best k of either reading."""
    workers, parity = 8, 1
    draws = delays[0] + np.random.default_rng(0).exponential(delays[1], (20_000, workers))
    kth_fastest = np.sort(draws, axis=1)  # the k-th fastest worker's delay, for every k
    choices = range(4, workers - parity + 1)
    scaling = {k: kth_fastest[:, k - 1].mean() / k for k in choices}  # delays grow with 1/k of the work
    fixed = {k: kth_fastest[:, k - 1].mean() for k in choices}  # delays that do not
    k = data_blocks_for(workers, parity, delays)
    worst = max(scaling[k] / min(scaling.values()), fixed[k] / min(fixed.values()))
    for other in choices:
        other_worst = max(scaling[other] / min(scaling.values()), fixed[other] / min(fixed.values()))
        assert worst <= other_worst * 1.01, (k, other)
    # Lee et al.'s rule alone takes the k best under delays that scale: the hedge never keeps fewer
    # spare blocks, and under the strategies benchmark's tail (in units of the median task) more.
    lee = min(choices, key=scaling.get)
    assert k <= lee
    if delays == (0.43, 0.82):
        assert k == 4 < lee


def test_delays_from_evidence_leaves_slow_workers_out():
    quiet = {w: [1.0] * 8 for w in "abcde"}
    ratios = {**dict.fromkeys("abcde", 1.0), "f": 20.0}
    assert delays_from_evidence({**quiet, "f": [20.0] * 8}, ratios, workers=6) == (1.0, 0.0)
    assert delays_from_evidence(quiet, dict.fromkeys("abcde", 1.0), workers=12) is None  # under half
    assert delays_from_evidence(None, None, 6) is None and delays_from_evidence(quiet, None, None) is None


def test_decoding_weights_are_cached_by_code_value_and_read_only():
    """Every decode task deserializes its own code: equal codes must share the solved weights."""
    first, second = MDSCode(4, 6), MDSCode(4, 6)
    weights = first.decoding_weights([0, 2, 4, 5])
    assert second.decoding_weights([5, 4, 2, 0]) is weights
    with pytest.raises(ValueError, match="read-only"):
        weights[0, 0] = 2.0
    assert first.decoding_condition([0, 2, 4, 5]) == second.decoding_condition([0, 2, 4, 5])
    # Big codes are cached per object only (their n x n weights would crowd a worker's memory).
    big = MDSCode(70, 72)
    recovery = list(range(2, 72))
    assert big.decoding_weights(recovery) is big.decoding_weights(recovery)
    assert big.decoding_weights(recovery) is not MDSCode(70, 72).decoding_weights(recovery)
    assert "_weights_memo" not in pickle.loads(pickle.dumps(big)).__dict__
    decoded = big.decoding_weights(recovery) @ big.generator[recovery]
    np.testing.assert_allclose(decoded, np.eye(70), atol=1e-8)


def test_decode_plans_are_cached_by_code_value():
    """A decode from the plugin's recovery set looks its weights and condition up once per worker."""
    plan = _decode_plan(MDSCode(4, 6), (0, 2, 4, 5), (1,))
    assert _decode_plan(MDSCode(4, 6), (0, 2, 4, 5), (1,)) is plan
    assert plan.copies is None and plan.used == (0, 2, 4, 5) and not plan.weights.flags.writeable
    condition = MDSCode(4, 6).decoding_condition([0, 2, 4, 5])
    assert condition <= plan.condition_bound <= 4 * 4 * condition  # cond_2 <= n cond_1 <= n^2 cond_2
    assert _decode_plan(MDSCode(4, 6), (0, 2, 4, 5), (2,)).copies == (2,)
    blocks = [np.full(3, float(j + 1)) for j in range(4)]
    results = {i: b for i, b in enumerate(MDSCode(4, 6).encode(blocks)) if i in plan.used}
    (solved,) = MDSCode(4, 6).decode(results, outputs=[1], recovery_set=(0, 2, 4, 5))
    np.testing.assert_allclose(solved, blocks[1], rtol=1e-12)


PLANNED = [MDSCode(4, 6), MDSCode(5, 8, generator="cauchy"), ReplicationCode(3, 2), PolynomialCode(2, 2, 6)]


@pytest.mark.parametrize("code", PLANNED, ids=repr)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_a_plan_made_in_another_process_decodes_the_same_bits(code, dtype):
    """The plugin makes a decode's plan on the scheduler: the worker must get what solving there gives."""
    rng = np.random.default_rng(3)
    unknowns = code.generator.shape[1]
    blocks = [(rng.standard_normal((5, 2)) * 4.0 ** (j - 2)).astype(dtype) for j in range(unknowns)]
    exponents = equilibration_exponents(blocks) if isinstance(code, MDSCode) else None
    # The coded block products, as the workers would compute them.
    coded = (
        code.encode(blocks, exponents=exponents)
        if exponents is not None
        else arithmetic.combine(code.generator, blocks)
    )
    for chosen in _recovery_sets(code, samples=40):
        for output in range(code.targets.shape[0]):
            plan = pickle.loads(pickle.dumps(code.decoding_plan([output], chosen)))
            results = {i: coded[i] for i in chosen}
            with warnings.catch_warnings(record=True) as planned_warnings:
                warnings.simplefilter("always")
                (planned,) = code.decode(results, outputs=[output], plan=plan, exponents=exponents)
            with warnings.catch_warnings(record=True) as solved_warnings:
                warnings.simplefilter("always")
                (solved,) = code.decode(results, outputs=[output], recovery_set=chosen, exponents=exponents)
            np.testing.assert_array_equal(planned, solved)
            assert planned.dtype == solved.dtype
            assert [str(w.message) for w in planned_warnings] == [str(w.message) for w in solved_warnings]


def test_a_plan_is_checked_against_the_decode_it_is_used_for():
    code = MDSCode(4, 6)
    blocks = code.encode([np.full(3, float(j + 1)) for j in range(4)])
    plan = code.decoding_plan([1], [0, 2, 4, 5])
    results = {i: blocks[i] for i in (0, 2, 4, 5)}
    with pytest.raises(
        ValueError, match=r"the plan decodes outputs \[1\] of MDSCode.* from blocks \[0, 2, 4, 5\]"
    ):
        code.decode(results, outputs=[3], plan=plan)
    with pytest.raises(ValueError, match="cauchy"):  # another code's weights would decode garbage
        MDSCode(4, 6, generator="cauchy").decode(results, outputs=[1], plan=plan)
    with pytest.raises(ValueError, match="from blocks"):
        code.decode(results, outputs=[1], recovery_set=[0, 2, 3, 4], plan=plan)
    with pytest.raises(ValueError, match="cannot be combined"):
        code.decode(results, outputs=[1], plan=plan, max_errors=1)
    with pytest.raises(ValueError, match="outputs must be in"):
        code.decoding_plan([4], [0, 1, 2, 3])
    with pytest.raises(DecodingError, match=r"needs the results of blocks \[5\]"):
        code.decode({i: blocks[i] for i in (0, 2, 4)}, outputs=[1], plan=plan)
    nan = {**results, 4: np.full(3, np.nan)}
    with pytest.raises(DecodingError, match="non-finite") as caught:
        code.decode(nan, outputs=[1], plan=plan)
    assert caught.value.suspects == (4,)
    # Blocks the plan does not read are not looked at (the plugin passes only the ones it reads).
    (decoded,) = code.decode({**results, 1: "late"}, outputs=[1], plan=plan)
    np.testing.assert_allclose(decoded, 2.0, rtol=1e-12)


def test_a_hand_built_plan_and_its_results_are_checked_like_any_others():
    """A DecodingPlan is a public tuple: a fast path that trusted it took blocks 9 and -1 (a review)."""
    code = MDSCode(3, 5)
    results = {i: block @ np.ones(3) for i, block in enumerate(code.encode([np.eye(3)] * 3))}
    plan = code.decoding_plan([1], (0, 3, 4))
    for used in ((0, 3, 9), (0, 3, -1)):
        with pytest.raises(ValueError, match=r"block indices must be in \[0, 5\)"):
            code.decode(
                {**results, 9: results[4], -1: results[4]}, outputs=[1], plan=plan._replace(used=used)
            )
    copies = code.decoding_plan([0, 1], (0, 1, 3))  # both outputs copy their own block
    mixed = {0: np.ones((4, 1)), 1: np.ones(4), 3: np.ones(4)}
    for how in ({"plan": copies}, {"recovery_set": (0, 1, 3)}):
        with pytest.raises(ValueError, match="different numbers of dimensions"):
            code.decode(mixed, outputs=[0, 1], **how)


@pytest.mark.parametrize("warm", [False, True])
def test_a_complex_plan_is_not_served_the_equal_real_plans_cached_weights(warm):
    # 1 + 0j == 1.0: keyed on values alone, the cache gave a complex plan the real one's folded weights,
    # and the outcome depended on what was decoded before (a review).
    code, exponents = MDSCode(3, 5), np.array([3, -2, 7])
    blocks = code.encode([np.arange(3.0) + j for j in range(3)], exponents=exponents)
    plan = code.decoding_plan([1], (0, 3, 4))
    results = {i: blocks[i] @ np.ones(3) for i in plan.used}
    if warm:
        code.decode(results, outputs=[1], plan=plan, exponents=exponents)
    complex_plan = plan._replace(weights=plan.weights.astype(np.complex128))
    with pytest.raises(TypeError, match="complex"):
        code.decode(results, outputs=[1], plan=complex_plan, exponents=exponents)


def test_a_grouped_code_decodes_from_a_plan_of_its_own():
    code = GroupedMDSCode(5, 2, parity=2)
    blocks = [np.full(2, float(j + 1)) for j in range(5)]
    coded = code.encode(blocks)
    finished = [i for i in range(code.n) if i not in (1, 4)]  # a data block of two groups is late
    plan = code.decoding_plan([1, 4], finished)
    decoded = code.decode({i: coded[i] for i in finished}, outputs=[1, 4], plan=plan)
    np.testing.assert_allclose(decoded, [blocks[1], blocks[4]], rtol=1e-12)


def test_a_grouped_code_refuses_a_plan_with_max_errors():
    code = GroupedMDSCode(4, 4, 4)
    results = dict(enumerate(code.encode([np.full(3, float(j)) for j in range(4)])))
    plan = code.decoding_plan([0], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="cannot be combined"):
        code.decode(results, outputs=[0], plan=plan, max_errors=1)


@pytest.mark.parametrize("dtype, tiny", [(np.float64, 1e-310), (np.float32, 1e-40)])
def test_subnormal_blocks_are_equilibrated_without_overflowing_their_parities(dtype, tiny):
    """A subnormal block is scaled up to the smallest normal's exponent, exactly, and no further.

    Folded into the weights, 2**-e of its own exponent made every parity NaN/inf (dot with max_errors
    raised); scaled further than the normal range, the rounding of its products spread into the other
    blocks through the parities (a review found both).
    """
    blocks = [
        np.array([1.0, -2.0], dtype),
        np.array([1.0, -3.0], dtype) * dtype(tiny),
        np.array([4.0, 1.0], dtype),
    ]
    exponents = equilibration_exponents(blocks)
    assert exponents[1] == np.finfo(dtype).minexp + 1
    code = MDSCode(3, 5)
    coded = code.encode(blocks, exponents=exponents)
    assert all(np.isfinite(c).all() for c in coded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditioningWarning)  # it has fewer digits than the dtype
        decoded = code.decode({i: coded[i] for i in (0, 2, 3)}, exponents=exponents)
    # To a few units of the subnormal spacing: as close as its own arithmetic gets.
    spacing = np.finfo(dtype).smallest_subnormal
    np.testing.assert_allclose(decoded[1], blocks[1], rtol=0, atol=8 * spacing)


def test_a_copied_output_stays_bit_for_bit_when_the_others_are_solved_on_scaled_blocks():
    code = MDSCode(2, 3)
    blocks = [np.array([1e300, 3e-20, 1.2345678901234567e-300]), np.array([1e-300, 2e-300, 3e-300])]
    exponents = equilibration_exponents(blocks)
    coded = code.encode(blocks, exponents=exponents)
    results = {0: coded[0], 2: coded[2]}
    plan = code.decoding_plan([0, 1], [0, 2])
    for decoded in (
        code.decode(results, recovery_set=[0, 2], exponents=exponents),
        code.decode(results, plan=plan, exponents=exponents),
    ):
        assert decoded[0] is blocks[0]


def test_a_block_that_cancels_to_zero_warns():
    """Solved to exact zeros from much larger blocks: no digit of it is left, so say so."""
    code = MDSCode(2, 3, generator="cauchy")
    blocks = [np.full(3, 1e10), np.full(3, 1e-10)]
    coded = code.encode(blocks)  # not equilibrated: the parity carries block 1 below round-off
    with pytest.warns(ConditioningWarning, match="output block 1"):
        (decoded,) = code.decode({0: coded[0], 2: coded[2]}, outputs=[1])
    assert (decoded == 0).all()  # every digit cancelled: the case the warning is for


def test_an_inaccurate_decode_can_raise_instead_of_warning():
    code = MDSCode(2, 3, generator="cauchy")
    blocks = [np.full(3, 1e10), np.full(3, 1e-10)]
    coded = code.encode(blocks)  # not equilibrated: block 1 is lost under block 0 in the parity
    with pytest.raises(DecodingError, match="may reach") as caught:
        code.decode({0: coded[0], 2: coded[2]}, outputs=[1], inaccurate="raise")
    assert caught.value.relative_error > 1e-10
    with pytest.raises(ValueError, match="'warn' or 'raise'"):
        code.decode({0: coded[0], 2: coded[2]}, inaccurate="ignore")
