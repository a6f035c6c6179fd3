"""The scaling of two-sided codes' operands: line maxima, exponents, and when a code computes uncoded."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_coded.blocks import ScaledBlock, UncodedBlock
from dask_coded.codes import MatDotCode, PolynomialCode
from dask_coded.two_sided import inner_max_abs, matdot_scaling, operand_block, polynomial_scaling


@pytest.mark.parametrize("dtype", ["int8", "int64", "uint16", "float32", "float64", "complex128"])
def test_inner_max_abs_is_the_largest_magnitude_of_each_inner_line(dtype):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    block = np.arange(-6, 6).reshape(3, 4).astype(dtype)
    if info is not None and info.min < 0:
        block[0, 0] = info.min  # its absolute value does not fit the dtype
    expected = np.abs(block.astype(np.complex128 if block.dtype.kind == "c" else np.float64))
    np.testing.assert_array_equal(inner_max_abs(block, 0), expected.max(axis=0))  # per column of A
    np.testing.assert_array_equal(inner_max_abs(block, 1), expected.max(axis=1))  # per row of B
    assert inner_max_abs(block, 0).dtype == np.float64


def test_inner_max_abs_of_vectors_empty_and_masked_blocks():
    np.testing.assert_array_equal(inner_max_abs(np.array([-3.0, 2.0]), 1), [3.0, 2.0])
    np.testing.assert_array_equal(inner_max_abs(np.zeros((0, 3)), 0), np.zeros(3))
    assert np.isnan(inner_max_abs(np.ma.masked_array(np.ones((2, 2)), [[1, 0], [0, 0]]), 0)).all()
    assert np.isnan(inner_max_abs(np.array([[1.0, np.nan]]), 0)[1])


def test_inner_max_abs_by_segment_of_a_re_split_block():
    block = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(inner_max_abs(block, 0, cuts=(0, 1, 3)), [block[0], block[2]])
    np.testing.assert_array_equal(inner_max_abs(block, 1, cuts=(0, 2, 4)), block[:, [1, 3]].T)


def test_matdot_scaling_judges_each_output_chunk_by_its_own_cross_terms():
    """Row chunk 0's output (about 1) beside its own 1e8 cross term; row chunk 1's output is 1e8."""
    lines = [  # A_0, A_1 of row chunks 0 and 1 (block by block), then B_0, B_1 (one column chunk)
        np.array([1e8, 1e8]),
        np.array([1.0, 1.0]),
        np.array([1.0, 1.0]),
        np.array([1e8, 1e8]),
        np.array([0.0, 0.0]),
        np.array([1.0, 1.0]),
    ]
    condition = MatDotCode(2, 4).condition_number()
    assert matdot_scaling(2, 2, *lines, dtype=np.float64, condition=condition).uncoded
    lines[0] = np.array([1.0, 1.0])  # no large cross term left in row chunk 0
    assert not matdot_scaling(2, 2, *lines, dtype=np.float64, condition=condition).uncoded


def _lines(blocks, side):
    return [inner_max_abs(b, side) for b in blocks]


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(-30, 30))
def test_scaled_bounds_never_underestimate_a_block_product(seed, log_scale):
    """|A_j B_l| <= sum_k a[k] b[k] entry by entry: the gate reads an upper bound, whatever the scales."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((6, 5)) * 10.0 ** rng.uniform(-abs(log_scale), abs(log_scale), (1, 5))
    b = rng.standard_normal((5, 4)) * 10.0 ** rng.uniform(-abs(log_scale), abs(log_scale), (5, 1))
    bound = inner_max_abs(a, 0) @ inner_max_abs(b, 1)
    assert np.abs(a @ b).max() <= bound * (1 + 1e-12)


def test_polynomial_scaling_codes_ordinary_data_and_not_what_it_cannot_decode():
    rng = np.random.default_rng(0)
    a_blocks = [rng.standard_normal((4, 6)) * scale for scale in (1e8, 1e-8)]  # A_0, A_1 (one inner chunk)
    b_blocks = [rng.standard_normal((6, 3)) * scale for scale in (1e-5, 1e5)]
    condition = PolynomialCode(2, 2, 6).condition_number()
    lines = [*_lines(a_blocks, 0), *_lines(b_blocks, 1)]
    assert not polynomial_scaling(2, 2, *lines, dtype=np.float64, condition=condition).uncoded
    a_blocks[0][:, 0] = 1e200  # meets only a zero row of every B_l
    for b in b_blocks:
        b[0] = 0.0
    lines = [*_lines(a_blocks, 0), *_lines(b_blocks, 1)]
    assert polynomial_scaling(2, 2, *lines, dtype=np.float64, condition=condition).uncoded
    lines[0] = lines[0] * np.nan
    assert polynomial_scaling(2, 2, *lines, dtype=np.float64, condition=condition).uncoded


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matdot_scaling_refuses_cross_terms_a_decode_cannot_cancel(dtype):
    rng = np.random.default_rng(1)
    a_blocks = [rng.standard_normal((4, 3)).astype(dtype) for _ in range(2)]  # A_0, A_1 (inner blocks)
    b_blocks = [rng.standard_normal((3, 5)).astype(dtype) for _ in range(2)]
    condition = MatDotCode(2, 4).condition_number()
    lines = [*_lines(a_blocks, 0), *_lines(b_blocks, 1)]
    assert not matdot_scaling(2, 1, *lines, dtype=dtype, condition=condition).uncoded
    a_blocks[0][:, 0] *= 1e30 if dtype == np.float64 else 1e12  # ignored by B_0, not by B_1
    b_blocks[0][0] = 0.0
    lines = [*_lines(a_blocks, 0), *_lines(b_blocks, 1)]
    assert matdot_scaling(2, 1, *lines, dtype=dtype, condition=condition).uncoded


def test_operand_block_is_a_data_block_itself_when_uncoded():
    code = PolynomialCode(2, 1, 3)
    blocks = [np.ones((2, 2)), np.full((2, 2), 2.0)]
    lines = [*_lines(blocks, 0), inner_max_abs(np.ones((2, 1)), 1)]
    coded = polynomial_scaling(2, 1, *lines, dtype=np.float64)
    weights = code.operand_weights[0]
    assert isinstance(operand_block(weights[2], coded, 0, *blocks, dtype=np.float64), ScaledBlock)
    uncoded = polynomial_scaling(2, 1, *lines[:1], lines[1] * np.nan, lines[2], dtype=np.float64)
    block = operand_block(weights[2], uncoded, 0, *blocks, dtype=np.float64, uncoded=1)
    assert isinstance(block, UncodedBlock)
    np.testing.assert_array_equal(block.values, blocks[1])
    masked = np.ma.masked_array(blocks[1], [[1, 0], [0, 0]])
    block = operand_block(weights[0], uncoded, 0, blocks[0], masked, dtype=np.float64, uncoded=1)
    assert isinstance(block.values, np.ma.MaskedArray) and block.values.mask[0, 0]
