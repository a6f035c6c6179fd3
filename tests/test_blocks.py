"""The worker kernels with the plugin's decisions: every straggler pattern, no cluster.

For each output block and each set of finished members, the decode runs as the scheduler
plugin would run it: with the plan of ``policy.plan_decode`` (only the needed members, the
others ``MISSING``), or, when there is no plan yet, once every member is in (no rewrite).
"""

import dataclasses
import itertools
import math
import pickle

import numpy as np
import pytest
from dask.utils import typename
from distributed.protocol import deserialize, serialize

from dask_coded import DecodingError
from dask_coded.blocks import (
    MISSING,
    UNCODED_TYPENAME,
    UNMIXABLE_TYPENAMES,
    CheckedProduct,
    DecodeSpec,
    Equilibration,
    NonFiniteProduct,
    NonFiniteScaledBlock,
    ScaledBlock,
    UncodedBlock,
    block_equilibration,
    checked_product_block,
    chunk_cuts,
    decode_block,
    product_block,
    scaled_parity_block,
    segment_bounds,
    segment_equilibration,
    segment_max_abs,
    segment_parity_block,
    transpose_block,
)
from dask_coded.codes import MDSCode, PolynomialCode, ReplicationCode
from dask_coded.policy import plan_decode

CODES = [MDSCode(3, 5), MDSCode(4, 6, generator="cauchy"), ReplicationCode(3, 2)]


def _coded_blocks(code, blocks):
    if isinstance(code, ReplicationCode):
        return [blocks[i % code.k] for i in range(code.n)]
    parities = [scaled_parity_block(code.generator[i], None, *blocks) for i in range(code.k, code.n)]
    return list(blocks) + parities


def _products(code, blocks, x):
    return [product_block([c], [x]) for c in _coded_blocks(code, blocks)]


def _nonfinite(products):
    return [i for i, p in enumerate(products) if isinstance(p, (NonFiniteProduct, NonFiniteScaledBlock))]


def _decode_as_scheduled(code, output, finished, products, shape, dtype):
    """What the decode task returns when ``finished`` are the members in memory at planning time."""
    nonfinite = [i for i in _nonfinite(products) if i in finished]
    plan = plan_decode(code, output, finished, dtype=dtype, nonfinite=nonfinite)
    if plan is None:  # no rewrite: the decode waits for every member
        return decode_block(DecodeSpec(code, output, shape, np.dtype(dtype)), *products), plan
    args = [p if i in plan.needed else MISSING for i, p in enumerate(products)]
    spec = DecodeSpec(code, output, shape, np.dtype(dtype), recovery_set=plan.recovery_set)
    return decode_block(spec, *args), plan


def _finished_sets(code):
    """Every set of members that could be in memory when a decode is planned (non-empty)."""
    for size in range(1, code.n + 1):
        yield from itertools.combinations(range(code.n), size)


# -- exactness -------------------------------------------------------------------


@pytest.mark.parametrize("code", CODES, ids=repr)
@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.int32])
def test_integers_are_exact_with_every_straggler_pattern(code, dtype):
    big = 2**60 + 7 if np.dtype(dtype).itemsize == 8 else 2**30 + 7
    rng = np.random.default_rng(0)
    blocks = [(big - rng.integers(0, 1000, size=(2, 3))).astype(dtype) for _ in range(code.k)]
    x = np.array([1, 0, 1], dtype=dtype)  # products stay representable
    products = _products(code, blocks, x)
    for output, block in enumerate(blocks):
        expected = block @ x
        for finished in _finished_sets(code):
            out, plan = _decode_as_scheduled(code, output, finished, products, expected.shape, dtype)
            assert out.dtype == dtype
            np.testing.assert_array_equal(out, expected)
            # Integer groups are never decoded from parities: a plan only ever selects one block.
            assert plan is None or plan.needed == plan.recovery_set and len(plan.needed) == 1


def test_selected_block_is_returned_untouched():
    code = MDSCode(3, 5)
    products = [np.array([2**60 + 7, -(2**62) + 1]) for _ in range(5)]
    out = decode_block(DecodeSpec(code, 1, (2,), np.dtype(np.int64)), *products)
    assert out is products[1]
    wide = decode_block(
        DecodeSpec(code, 1, (2,), np.dtype(np.int64)), *[p.astype(np.int32) for p in products]
    )
    assert wide.dtype == np.int64  # only a lossless cast to the output dtype


def test_integer_output_refuses_a_parity_decode():
    code = MDSCode(2, 3)
    products = [np.array([1, 2]), MISSING, np.array([3.0, 4.0])]
    with pytest.raises(DecodingError, match="integer dtype int64.*not exact"):
        decode_block(DecodeSpec(code, 1, (2,), np.dtype(np.int64)), *products)


# -- non-finite data -------------------------------------------------------------

NONFINITE = {
    "nan-in-block": lambda blocks, x: (_poison(blocks, 1, np.nan), x),
    "inf-in-block": lambda blocks, x: (_poison(blocks, 0, np.inf), x),
    "nan-and-inf": lambda blocks, x: (_poison(_poison(blocks, 2, -np.inf), 0, np.nan), x),
    "inf-in-x": lambda blocks, x: (blocks, np.where(np.arange(x.size) == 2, np.inf, x)),
}


def _poison(blocks, j, value):
    out = [b.copy() for b in blocks]
    out[j][1, 2] = value
    return out


@pytest.mark.parametrize("code", CODES, ids=repr)
@pytest.mark.parametrize("case", sorted(NONFINITE))
def test_nonfinite_values_stay_where_numpy_puts_them(code, case):
    rng = np.random.default_rng(1)
    blocks = [rng.standard_normal((3, 4)) for _ in range(code.k)]
    blocks, x = NONFINITE[case](blocks, rng.standard_normal(4))
    products = _products(code, blocks, x)
    with np.errstate(invalid="ignore"):
        expected_blocks = [b @ x for b in blocks]
    for output, expected in enumerate(expected_blocks):
        finite = np.isfinite(expected)
        for finished in _finished_sets(code):
            with np.errstate(invalid="ignore"):
                out, _ = _decode_as_scheduled(code, output, finished, products, expected.shape, np.float64)
            assert type(out) is np.ndarray
            np.testing.assert_array_equal(np.isnan(out), np.isnan(expected), err_msg=f"{output} {finished}")
            np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
            np.testing.assert_array_equal(out[np.isinf(expected)], expected[np.isinf(expected)])
            np.testing.assert_allclose(out[finite], expected[finite], rtol=1e-10)


def test_products_with_nan_or_inf_are_marked_for_the_scheduler():
    finite = product_block([np.ones((2, 2))], [np.ones(2)])
    assert type(finite) is np.ndarray
    marked = product_block([np.array([[1.0, np.nan], [1.0, 1.0]])], [np.ones(2)])
    assert isinstance(marked, NonFiniteProduct)
    assert "dask_coded.blocks.NonFiniteProduct" in UNMIXABLE_TYPENAMES
    # A parity's product keeps its exponents: a window of it without the NaN can still be decoded.
    parity = ScaledBlock(np.array([[1.0, np.nan], [1.0, 1.0]]), np.array([3, -2]), (0, 1, 2), 0)
    scaled = product_block([parity], [np.ones(2)])
    assert type(scaled) is NonFiniteScaledBlock
    assert "dask_coded.blocks.NonFiniteScaledBlock" in UNMIXABLE_TYPENAMES
    assert (scaled.exponents.tolist(), scaled.bounds) == ([3, -2], (0, 1, 2))
    # Through pickle and distributed's serialization it arrives intact (as an ndarray or the subclass).
    for copy in (pickle.loads(pickle.dumps(marked)), deserialize(*serialize(marked))):
        np.testing.assert_array_equal(np.isnan(copy), [True, False])
    assert type(product_block([np.ones((2, 2), dtype=int)], [np.ones(2, dtype=int)])) is np.ndarray


@pytest.mark.parametrize(
    "dtype,reference", [(np.float32, np.float64), (np.complex64, np.complex128), (np.float64, np.longdouble)]
)
@pytest.mark.parametrize("data", ["normal", "positive", "cancelling"])
def test_a_checked_product_bounds_its_own_roundoff(dtype, reference, data):
    rng = np.random.default_rng(0)
    left = [rng.standard_normal((30, 400)) for _ in range(2)]
    if data == "positive":
        left = [np.abs(a) for a in left]
    elif data == "cancelling":
        left = [np.concatenate([a[:, :200] * 1e8, -a[:, :200] * 1e8 + a[:, 200:]], axis=1) for a in left]
    right = [np.abs(rng.standard_normal(400)) for _ in range(2)]
    left = [
        (a + 1j * a[::-1]).astype(dtype) if np.dtype(dtype).kind == "c" else a.astype(dtype) for a in left
    ]
    right = [b.astype(dtype) for b in right]
    checked = checked_product_block(left, right)
    assert type(checked) is CheckedProduct
    np.testing.assert_array_equal(checked.product, product_block(left, right))
    exact = sum(a.astype(reference) @ b.astype(reference) for a, b in zip(left, right))
    error = float(np.linalg.norm((checked.product - exact).astype(np.complex128)))
    assert 0 < error <= checked.roundoff
    # Bounded through |A| |x|, not ||A|| ||x||: A's columns differ in scale by 1e8 where they cancel.
    magnitude = sum(np.abs(a.astype(reference)) @ np.abs(b.astype(reference)) for a, b in zip(left, right))
    assert checked.roundoff >= np.finfo(dtype).eps * np.linalg.norm(magnitude)
    assert checked.roundoff <= 2 * np.finfo(dtype).eps * np.sqrt(400) * np.linalg.norm(magnitude)


def test_checked_products_keep_what_the_scheduler_and_decoder_read():
    # Non-finite: returned bare, so the scheduler sees its type.
    assert type(checked_product_block([np.array([[np.nan, 1.0]])], [np.ones(2)])) is NonFiniteProduct
    # A parity's product keeps its exponents inside.
    parity = ScaledBlock(np.ones((2, 2)), np.array([3, -2]))
    checked = checked_product_block([parity], [np.ones(2)])
    assert type(checked.product) is ScaledBlock and checked.product.exponents.tolist() == [3, -2]
    # Integer products are exact until they may wrap: then no bound can be given.
    small = checked_product_block([np.full((2, 2), 2**40)], [np.full(2, 2**20)])
    assert small.product.tolist() == [2**61, 2**61] and 0 < small.roundoff < 2**61
    huge = checked_product_block([np.full((2, 2), 2**40)], [np.full(2, 2**22)])
    assert huge.roundoff == math.inf
    # Entries whose squares overflow still give a finite bound.
    assert 0 < checked_product_block([np.full((2, 2), 1e200)], [np.full(2, 1e-200)]).roundoff < 1
    for copy in (pickle.loads(pickle.dumps(checked)), deserialize(*serialize(checked))):
        assert copy.roundoff == checked.roundoff
        np.testing.assert_array_equal(copy.product.values, checked.product.values)


def test_decode_checks_products_against_their_own_roundoff():
    """A decode under max_errors reads each product's bound: products that cancel are not wrong."""
    rng = np.random.default_rng(1)
    code = MDSCode(3, 5)
    blocks = [
        np.concatenate([h * 1e8, -h * 1e8 + rng.standard_normal((4, 6))], axis=1)
        for h in rng.standard_normal((3, 4, 6))
    ]
    products = [checked_product_block([c], [np.ones(12)]) for c in code.encode(blocks)]
    spec = DecodeSpec(code, 0, (4,), np.dtype(np.float64), max_errors=1)
    with pytest.raises(DecodingError):  # sized from the products alone, their round-off looks wrong
        decode_block(spec, *[p.product for p in products])
    products[4] = dataclasses.replace(products[4], product=products[4].product + 1.0)
    for output, block in enumerate(blocks):
        spec = DecodeSpec(code, output, (4,), np.dtype(np.float64), max_errors=1)
        np.testing.assert_array_equal(decode_block(spec, *products), block @ np.ones(12))


def test_uncoded_products_keep_their_mark_through_distributed_and_never_interpolate():
    """A mark the decode relies on: an ndarray subclass arrives as a plain ndarray on another worker."""
    a, b = np.arange(6.0).reshape(2, 3), np.array([[1.0, np.nan], [0.0, 1.0], [2.0, 1.0]])
    product = product_block([UncodedBlock(a)], [UncodedBlock(b)])
    assert typename(type(product)) == UNCODED_TYPENAME
    for copy in (pickle.loads(pickle.dumps(product)), deserialize(*serialize(product))):
        assert type(copy) is UncodedBlock
        np.testing.assert_array_equal(copy.values, a @ b)
    code = PolynomialCode(1, 1, 3)  # members: A @ B itself, three times
    spec = DecodeSpec(code, 0, (2, 2), np.dtype(np.float64))
    np.testing.assert_array_equal(decode_block(spec, MISSING, product, MISSING), a @ b)
    with pytest.raises(DecodingError, match="miss a term"):
        split = DecodeSpec(PolynomialCode(2, 1, 3), 1, (1, 2), np.dtype(np.float64))
        decode_block(split, product, MISSING, MISSING)  # A_0 @ B only: no copy of A_1 @ B
    with pytest.raises(DecodingError, match="wrong ones cannot be located"):
        decode_block(dataclasses.replace(spec, max_errors=1), product, product, product)


def test_decode_refuses_to_mix_a_nonfinite_parity():
    """Defence in depth: a plan that would mix NaN into another output raises, never spreads."""
    code = MDSCode(2, 3)
    blocks = [np.array([[1.0, np.nan]]), np.array([[1.0, 2.0]])]
    products = _products(code, blocks, np.ones(2))
    spec = DecodeSpec(code, 1, (1,), np.dtype(np.float64), recovery_set=(0, 2))
    with pytest.raises(DecodingError, match="non-finite"):
        decode_block(spec, products[0], MISSING, products[2])


# -- scale -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", [MDSCode(3, 5), MDSCode(4, 7, generator="chebyshev"), MDSCode(2, 4)], ids=repr
)
@pytest.mark.parametrize("scales", [(1e12, 1e-3), (1e-3, 1e12), (1e150, 1e-150), (1.0, 1e-300)])
def test_each_block_keeps_its_own_relative_accuracy(code, scales):
    rng = np.random.default_rng(2)
    sizes = [scales[j % 2] for j in range(code.k)]
    blocks = [s * rng.standard_normal((5, 4)) for s in sizes]
    x = rng.standard_normal(4)
    products = _products(code, blocks, x)
    for output, block in enumerate(blocks):
        expected = block @ x
        for finished in itertools.combinations(range(code.n), code.k):
            out, _ = _decode_as_scheduled(code, output, finished, products, expected.shape, np.float64)
            scale = np.abs(expected).max()
            assert np.abs(out - expected).max() <= 1e-10 * scale, (output, finished)


@pytest.mark.parametrize("code", [MDSCode(3, 5), MDSCode(4, 6, generator="cauchy")], ids=repr)
@pytest.mark.parametrize("zero", [0, 1])
def test_an_all_zero_block_decodes_to_exact_zeros(code, zero):
    """Measured bug: through parities it came back as round-off (1e-16), not the 0 da.dot gives."""
    rng = np.random.default_rng(4)
    blocks = [rng.standard_normal((5, 4)) * 10.0**j for j in range(code.k)]
    blocks[zero] = np.zeros((5, 4))
    x = rng.standard_normal((4, 3))
    products = _products(code, blocks, x)
    assert products[code.k].zeros.tolist() == [j == zero for j in range(code.k)]
    for finished in itertools.combinations(range(code.n), code.k):
        for output, block in enumerate(blocks):
            out, _ = _decode_as_scheduled(code, output, finished, products, (5, 3), np.float64)
            if output == zero:
                np.testing.assert_array_equal(out, np.zeros((5, 3)))
            else:
                np.testing.assert_allclose(out, block @ x, rtol=1e-10)


@pytest.mark.parametrize("axis", [0, 1])
def test_a_zero_chunk_inside_a_resplit_block_decodes_to_exact_zeros(axis):
    """Block 0 holds rows of a zero chunk then of a nonzero one: only the zero chunk's rows are exact."""
    rng = np.random.default_rng(6)
    chunks, source = (5, 4), (3, 6)
    bounds = segment_bounds(chunks, source, (0, 1))
    whole = rng.standard_normal((9, 3))
    whole[:3] = 0.0
    blocks = [whole[:5], whole[5:]] if axis == 0 else [whole[:5].T, whole[5:].T]
    code = MDSCode(2, 3)
    parity = segment_parity_block(code.generator[2], None, (axis, bounds, None), *blocks)
    assert parity.zeros.tolist() == [[True, False], [False, False]]
    x = rng.standard_normal(3)
    products = [product_block([b], [x]) if axis == 0 else product_block([x], [b]) for b in [*blocks, parity]]
    expected = whole[:5] @ x
    for window in [None, (0, 1, 4)]:
        spec = DecodeSpec(code, 0, (5,) if window is None else (3,), np.dtype(np.float64), window=window)
        out = decode_block(spec, MISSING, *products[1:])
        wanted = expected if window is None else expected[1:4]
        zero_rows = 3 if window is None else 2
        np.testing.assert_array_equal(out[:zero_rows], 0.0)
        np.testing.assert_allclose(out[zero_rows:], wanted[zero_rows:], rtol=1e-12)


def test_parity_chunks_share_their_data_blocks_exponents():
    chunks = [[np.full((2, 2), 1e12), np.full((2, 2), 3.0)], [np.full((2, 2), 1e-3), np.zeros((2, 2))]]
    equilibration = block_equilibration(2, *[float(np.abs(c).max()) for row in chunks for c in row])
    assert equilibration.exponents.tolist() == [40, -9]
    code = MDSCode(2, 3)
    parity = [
        scaled_parity_block(code.generator[2], equilibration, chunks[0][c], chunks[1][c]) for c in range(2)
    ]
    product = product_block(parity, [np.ones(2), np.ones(2)])
    assert isinstance(product, ScaledBlock) and product.exponents.tolist() == [40, -9]
    assert transpose_block(parity[0]).exponents is parity[0].exponents
    copy = deserialize(*serialize(product))
    np.testing.assert_array_equal(copy.values, product.values)
    with pytest.raises(ValueError, match="different exponents"):
        product_block([parity[0], ScaledBlock(parity[1].values, np.array([0, 0]))], [np.ones(2)] * 2)


def test_the_segments_of_one_chunk_share_its_exponent():
    """Block 1 is all of chunk 1, but block 0's chunk boundary cuts it in two segments.

    Each segment took its own largest magnitude, so its rows got two exponents and every decode of
    a window of chunk 1 scaled row by row; by chunk, one power of two scales the whole window.
    """
    chunks, source = (5, 4), (3, 6)
    bounds = segment_bounds(chunks, source, (0, 1))
    cuts = [chunk_cuts(chunks, source, j) for j in (0, 1)]
    assert bounds == (0, 3, 5) and cuts == [(0, 3, 5), (0, 4)]
    blocks = [np.ones((5, 2)), np.array([[4.0], [4.0], [4.0], [0.25]]) * np.ones(2)]
    by_segment = segment_equilibration(2, *[segment_max_abs(0, bounds, b) for b in blocks]).exponents
    by_chunk = segment_equilibration(
        2, *[segment_max_abs(0, bounds, b, c) for b, c in zip(blocks, cuts)]
    ).exponents
    assert by_segment[1].tolist() == [3, -1] and by_chunk[1].tolist() == [3, 3]
    parity = segment_parity_block(MDSCode(2, 3).generator[2], None, (0, bounds, tuple(cuts)), *blocks)
    np.testing.assert_array_equal(parity.exponents, by_chunk)


@pytest.mark.parametrize("axis", [0, 1])
def test_a_segmented_parity_equilibrates_each_segment_on_its_own(axis):
    """Block 0 holds rows of a 1e12 chunk then a 1e-3 one; block 1 is shorter (zero-padded)."""
    rng = np.random.default_rng(5)
    chunks, source = (5, 4), (3, 6)  # rows 0:3 | 3:9 of the array re-split into 0:5 | 5:9
    bounds = segment_bounds(chunks, source, (0, 1))
    assert bounds == (0, 3, 5)
    whole = rng.standard_normal((9, 3)) * np.repeat([1e12, 1e-3], source)[:, None]
    blocks = [whole[:5], whole[5:]]
    if axis:
        blocks = [b.T for b in blocks]
    code = MDSCode(2, 3)
    magnitudes = [segment_max_abs(axis, bounds, b) for b in blocks]
    assert [m.shape for m in magnitudes] == [(2,), (2,)]
    exponents = segment_equilibration(2, *magnitudes).exponents
    parity = segment_parity_block(code.generator[2], None, (axis, bounds, None), *blocks)
    np.testing.assert_array_equal(parity.exponents, exponents)
    assert (parity.bounds, parity.axis) == (bounds, axis)
    # Each segment is the equilibrated mix of that segment's rows.
    padded = [blocks[0], np.pad(blocks[1], [(0, 1) if a == axis else (0, 0) for a in (0, 1)])]
    for p, (start, stop) in enumerate(zip(bounds, bounds[1:])):
        rows = [np.take(b, range(start, stop), axis=axis) for b in padded]
        mixed = sum(w * np.ldexp(r, -int(e)) for w, r, e in zip(code.generator[2], rows, exponents[:, p]))
        np.testing.assert_allclose(np.take(parity.values, range(start, stop), axis=axis), mixed, rtol=1e-15)
    # Windows and transposes keep the segments that the rows they keep belong to.
    product = product_block([parity], [np.ones(3)]) if axis == 0 else product_block([np.ones(3)], [parity])
    assert (product.bounds, product.axis) == (bounds, 0)
    flipped = transpose_block(parity)
    assert (flipped.bounds, flipped.axis) == (bounds, 1 - axis)
    # Decoded from the parity and block 1, block 0's 1e-3 rows keep their own accuracy.
    x = rng.standard_normal(3)
    products = [product_block([b], [x]) if axis == 0 else product_block([x], [b]) for b in [*blocks, parity]]
    spec = DecodeSpec(code, 0, (3,), np.dtype(np.float64), window=(0, 2, 5))
    out = decode_block(spec, MISSING, *products[1:])
    expected = (whole[:5] @ x)[2:]
    np.testing.assert_allclose(out[:1], expected[:1], rtol=1e-12)
    np.testing.assert_allclose(out[1:], expected[1:], rtol=1e-10)


def test_a_planned_spec_is_a_value_like_any_other():
    """The plan holds an array: specs still compare and hash by what they decode."""
    code = MDSCode(4, 6)
    spec = DecodeSpec(code, 0, (3,), np.dtype("f8"), recovery_set=(1, 2, 3, 4))
    planned = dataclasses.replace(spec, plan=code.decoding_plan([0], (1, 2, 3, 4)))
    copy = pickle.loads(pickle.dumps(planned))
    assert copy == planned == spec and hash(copy) == hash(spec)
    np.testing.assert_array_equal(copy.plan.weights, planned.plan.weights)


def test_decode_block_takes_equal_exponents_of_another_integer_dtype_and_checked_products_anywhere():
    """What the decode reads is values: exponents of one parity in int32, a CheckedProduct without
    max_errors (a review found both refused after decode tasks were made cheaper)."""
    code, rng = MDSCode(3, 5), np.random.default_rng(5)
    data, x, exponents = (
        [rng.standard_normal((6, 2)) for _ in range(3)],
        rng.standard_normal(2),
        np.array([1, 2, 3]),
    )
    parities = [
        product_block(
            [scaled_parity_block(code.generator[i], Equilibration(exponents, exponents == 0), *data)], [x]
        )
        for i in (3, 4)
    ]
    narrow = ScaledBlock(parities[0].values, parities[0].exponents.astype(np.int32))
    spec = DecodeSpec(code, 1, (6,), np.dtype(np.float64))
    planned = dataclasses.replace(spec, recovery_set=(0, 3, 4), plan=code.decoding_plan([1], (0, 3, 4)))
    decoded = decode_block(planned, data[0] @ x, MISSING, MISSING, narrow, parities[1])
    np.testing.assert_allclose(decoded, data[1] @ x, rtol=1e-12)
    checked = [checked_product_block([block], [x]) for block in data]
    np.testing.assert_array_equal(decode_block(spec, *checked, MISSING, MISSING), data[1] @ x)
