"""The drop-in contract: dask_coded.dot/matmul/matvec return what da.dot/da.matmul return.

Same values (integers exactly, floats to a relative tolerance per output block), dtype, mask,
shape and chunks; where a product cannot be coded, da.dot's own graph and one FallbackWarning.
"""

import pickle
import warnings

import cloudpickle
import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import dask_coded
from dask_coded import FallbackWarning
from dask_coded._compat import reference_key
from dask_coded.fallback import fallback_reason
from dask_coded.keys import ENCODE, EXPONENTS, PRODUCT
from dask_coded.operands import Operand

#: Relative error allowed per output block; 0 means exactly equal.
RTOL = {"f": {4: 1e-4, 8: 1e-10}, "c": {8: 1e-4, 16: 1e-10}}

NUMERIC = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
NUMERIC += ["float16", "float32", "float64", "longdouble", "complex64", "complex128", "clongdouble", "bool"]
#: dtypes da.dot multiplies and sums in the same dtype, which the coded graph reproduces.
CODED_DTYPES = {"int64", "uint64", "float32", "float64", "complex64", "complex128"}


def _rtol(dtype):
    return RTOL.get(dtype.kind, {}).get(dtype.itemsize, 0)


def _data(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        # Wide enough that narrow integer products overflow, as they may in the wild.
        return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, endpoint=True).astype(
            dtype
        )
    out = rng.standard_normal(shape)
    if dtype.kind == "c":
        out = out + 1j * rng.standard_normal(shape)
    return out.astype(dtype)


def _blocks(array, chunks):
    for index in np.ndindex(*(len(c) for c in chunks)):
        starts = [sum(c[:i]) for c, i in zip(chunks, index)]
        yield array[tuple(slice(s, s + c[i]) for s, c, i in zip(starts, chunks, index))]


def assert_like_dask(result, reference):
    """``result`` is ``reference`` (a da.dot / da.matmul graph) in dtype, shape, chunks, mask and values."""
    assert isinstance(result, da.Array)
    assert result.dtype == reference.dtype, f"dtype {result.dtype} != {reference.dtype}"
    # str(): nan (unknown) chunk sizes compare equal as text, not as floats.
    assert str(result.shape) == str(reference.shape), f"shape {result.shape} != {reference.shape}"
    assert str(result.chunks) == str(reference.chunks), f"chunks {result.chunks} != {reference.chunks}"
    assert type(result._meta) is type(reference._meta)
    actual, expected = dask.compute(result, reference, scheduler="sync")
    assert type(actual) is type(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if isinstance(expected, np.ma.MaskedArray):
        np.testing.assert_array_equal(np.ma.getmaskarray(actual), np.ma.getmaskarray(expected))
        actual, expected = actual.filled(0), expected.filled(0)
    rtol = _rtol(expected.dtype)
    if rtol == 0:
        np.testing.assert_array_equal(actual, expected)
        return
    # NaN and inf where da.dot has them, and finite values to rtol of their block's largest.
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    infinite = np.isinf(expected)
    np.testing.assert_array_equal(actual[infinite], expected[infinite])
    chunks = reference.chunks if not np.isnan(reference.shape).any() else tuple((n,) for n in expected.shape)
    for got, want in zip(_blocks(actual, chunks), _blocks(expected, chunks)):
        finite = np.isfinite(want)
        scale = np.abs(want[finite]).max() if finite.any() else 0.0
        np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=rtol * scale)


def _unknown_rows(array):
    """``array`` with the same values but unknown (nan) row chunks."""
    return array[da.ones(array.shape[0], chunks=array.chunks[0], dtype=bool)]


def _masked():
    return da.ma.masked_greater(da.from_array(np.arange(20.0).reshape(4, 5), chunks=(2, 5)), 10)


class _ChunkedStore:
    """What dask reads from an h5py dataset or a zarr array: ``chunks`` a tuple of ints (h5py: None)."""

    def __init__(self, data, chunks):
        self._data, self.chunks = data, chunks
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, item):
        return self._data[item]


# name -> (operation, a, b, fallback reason matched in the warning, or None when coded)
CASES = {
    "masked (measured bug)": ("dot", _masked(), da.ones(5, chunks=5), "masked arrays"),
    "masked numpy input": (
        "dot",
        np.ma.masked_greater(np.arange(12.0).reshape(3, 4), 6),
        np.ones(4),
        "masked",
    ),
    "masked right operand": ("dot", np.ones((2, 5)), _masked().T.rechunk((5, 2)), "masked"),
    "unknown row chunks": (
        "dot",
        _unknown_rows(da.from_array(_data((6, 4), "float64", 0), chunks=(3, 2))),
        np.ones(4),
        "unknown",
    ),
    "unknown inner chunks": (
        "dot",
        _unknown_rows(da.from_array(_data((6, 4), "float64", 0), chunks=(3, 2))).T,
        _unknown_rows(da.from_array(_data((6, 3), "float64", 1), chunks=(3, 3))),
        "unknown",
    ),
    "3-D dot": ("dot", _data((2, 3, 4), "float64", 0), _data((5, 4, 6), "float64", 1), "3-D operands"),
    "2-D . 3-D dot": (
        "dot",
        da.from_array(_data((3, 4), "float64", 0), chunks=2),
        da.from_array(_data((2, 4, 5), "float64", 1), chunks=2),
        "3-D",
    ),
    "stack @ matrix": (
        "matmul",
        da.from_array(_data((40, 4, 4), "float64", 0), chunks=(10, 4, 4)),
        _data((4, 4), "float64", 1),
        "stacks",
    ),
    "vector @ stack": ("matmul", _data(4, "float64", 0), _data((3, 4, 5), "float64", 1), "stacks"),
    "stack @ stack": (
        "matmul",
        da.from_array(_data((6, 3, 4), "float64", 0), chunks=(2, 3, 2)),
        da.from_array(_data((6, 4, 5), "float64", 1), chunks=(3, 2, 5)),
        "stacks",
    ),
    "empty inner": ("dot", da.ones((4, 0), chunks=2), da.ones((0, 5), chunks=2), "empty"),
    "empty rows": ("dot", np.ones((0, 3)), np.ones(3), "empty"),
    "empty columns": ("dot", np.ones(3), da.ones((3, 0), chunks=2), "empty"),
    "empty vectors": ("dot", np.ones(0), np.ones(0), "empty"),
    "object dtype": (
        "dot",
        da.ones((3, 3), chunks=2, dtype=object),
        da.ones(3, chunks=2, dtype=object),
        "object",
    ),
    "uneven chunks": (
        "dot",
        da.from_array(_data((37, 23), "float64", 0), chunks=(10, 7)),
        da.from_array(_data((23, 11), "float64", 1), chunks=(7, 4)),
        None,
    ),
    "uneven, numpy right": (
        "dot",
        da.from_array(_data((9, 7), "float64", 0), chunks=(4, 3)),
        _data(7, "float64", 1),
        None,
    ),
    "matrix . vector": (
        "dot",
        da.from_array(_data((8, 6), "float64", 0), chunks=(3, 4)),
        _data(6, "float64", 1),
        None,
    ),
    "vector . matrix": (
        "dot",
        _data(8, "float64", 0),
        da.from_array(_data((8, 6), "float64", 1), chunks=(5, 4)),
        None,
    ),
    "vector . vector": ("dot", da.from_array(_data(9, "float64", 0), chunks=4), _data(9, "float64", 1), None),
    "numpy . numpy": ("dot", _data((5, 4), "float64", 0), _data((4, 3), "float64", 1), None),
    "matmul 2-D": (
        "matmul",
        da.from_array(_data((8, 6), "float64", 0), chunks=(3, 4)),
        da.from_array(_data((6, 5), "float64", 1), chunks=(4, 2)),
        None,
    ),
    "matmul vector @ matrix": (
        "matmul",
        _data(6, "float64", 0),
        da.from_array(_data((6, 5), "float64", 1), chunks=3),
        None,
    ),
    "matmul vector @ vector": (
        "matmul",
        _data(6, "float64", 0),
        da.from_array(_data(6, "float64", 1), chunks=3),
        None,
    ),
    "complex": (
        "dot",
        da.from_array(_data((8, 6), "complex128", 0), chunks=(3, 4)),
        _data((6, 2), "complex128", 1),
        None,
    ),
    "int64 exact": (
        "dot",
        da.from_array(_data((8, 6), "int64", 0), chunks=(3, 4)),
        da.from_array(_data((6, 3), "int64", 1), chunks=(4, 2)),
        None,
    ),
    # Measured bug: array-likes whose chunks are not Dask's (None, or a tuple of ints) crashed.
    "xarray DataArray of NumPy data": ("dot", xr.DataArray(_data((6, 4), "float64", 0)), np.ones(4), None),
    "zarr-like store": ("dot", _ChunkedStore(_data((6, 4), "float64", 0), (2, 4)), np.ones(4), None),
    "h5py-like contiguous store": ("dot", _ChunkedStore(_data((6, 4), "float64", 0), None), np.ones(4), None),
    "an empty inner chunk (measured bug under max_errors)": (
        "dot",
        da.from_array(_data((4, 6), "float64", 0), chunks=((2, 2), (0, 3, 3))),
        da.from_array(_data(6, "float64", 1), chunks=((0, 3, 3),)),
        None,
    ),
}


def _call(operation, a, b, **kwargs):
    return getattr(dask_coded, operation)(a, b, **kwargs)


def _plain(operation, a, b):
    def plain(x):
        return dask_coded.array.data_array(x) if isinstance(x, dask_coded.CodedArray) else x

    return getattr(da, operation)(plain(a), plain(b))


def _check(operation, a, b, reason, **kwargs):
    reference = _plain(operation, a, b)
    if reason is None:
        result = _call(operation, a, b, **kwargs)  # warnings are errors: a coded call must not warn
    else:
        with pytest.warns(FallbackWarning, match=reason) as record:
            result = _call(operation, a, b, **kwargs)
        assert len(record) == 1, [str(w.message) for w in record]
        assert result.name == reference.name, "a fallback must be da.dot's own graph"
    assert_like_dask(result, reference)
    return result


#: A CodedArray's parities hold its own dtype's digits (integers: float64's).
ENCODED_CASES = {
    "float32 CodedArray . float32": (
        "dot",
        dask_coded.encode(da.from_array(_data((8, 6), "float32", 0), chunks=(2, 6))),
        _data(6, "float32", 1),
        None,
    ),
    "float32 CodedArray . float64": (
        "dot",
        dask_coded.encode(da.from_array(_data((8, 6), "float32", 0), chunks=(2, 6))),
        _data(6, "float64", 1),
        "too few digits",
    ),
    "float64 . complex64 CodedArray": (
        "dot",
        _data((3, 8), "complex128", 0),
        dask_coded.encode(da.from_array(_data((8, 6), "complex64", 1), chunks=(8, 2)), axis=1),
        "too few digits",
    ),
    "int64 CodedArray . float64": (
        "dot",
        dask_coded.encode(da.from_array(_data((8, 6), "int64", 0), chunks=(2, 6))),
        _data(6, "float64", 1),
        None,
    ),
}


def _encoded(shape, axis, seed=0):
    return dask_coded.encode(da.from_array(_data(shape, "float64", seed), chunks=2), axis=axis)


#: CodedArrays summed over their coded axis: no block of the product is a combination of parities.
SUMMED_OVER_CODED_AXIS = {
    "matrix . 1-D CodedArray": (lambda: _data((3, 8), "float64", 1), lambda: _encoded(8, 0)),
    "1-D CodedArray . 1-D": (lambda: _encoded(8, 0), lambda: _data(8, "float64", 1)),
    "1-D CodedArray . matrix": (lambda: _encoded(8, 0), lambda: _data((8, 3), "float64", 1)),
    "CodedArray along axis 1 . x": (lambda: _encoded((4, 8), 1), lambda: _data(8, "float64", 1)),
    "x . CodedArray along axis 0": (lambda: _data((3, 8), "float64", 1), lambda: _encoded((8, 4), 0)),
    "both summed": (lambda: _encoded((4, 8), 1), lambda: _encoded((8, 4), 0, seed=1)),
}


@pytest.mark.parametrize("operation", ["dot", "matmul"])
@pytest.mark.parametrize("case", sorted(SUMMED_OVER_CODED_AXIS))
def test_a_coded_array_summed_over_its_coded_axis_falls_back(case, operation):
    """Measured bug: a ValueError where da.dot on the encoded data works."""
    a, b = (make() for make in SUMMED_OVER_CODED_AXIS[case])
    _check(operation, a, b, "summed over its coded axis")


@pytest.mark.parametrize(
    "a,b",
    [
        (lambda: _encoded((8, 4), 0), lambda: _encoded((4, 6), 1, seed=1)),  # both code the output
        (lambda: _encoded((8, 4), 1), lambda: _encoded((4, 6), 1, seed=1)),  # the right one does
        (lambda: _encoded((8, 4), 0), lambda: _encoded((4, 6), 0, seed=1)),  # the left one does
    ],
)
def test_two_coded_arrays_are_coded_by_one_that_codes_the_output(a, b):
    """Measured bug: "only one operand may be a CodedArray", where da.dot works."""
    result = _check("dot", a(), b(), None)
    assert any(str(key[0]).startswith(PRODUCT) for key in result.__dask_graph__())


@pytest.mark.parametrize("case", sorted(ENCODED_CASES))
def test_a_coded_array_codes_only_products_its_parities_are_precise_enough_for(case):
    operation, a, b, reason = ENCODED_CASES[case]
    _check(operation, a, b, reason, max_errors=1)


@pytest.mark.parametrize("max_errors", [0, 1])
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_result_as_dask(case, max_errors):
    operation, a, b, reason = CASES[case]
    if reason is None and not max_errors and np.result_type(a.dtype, b.dtype).kind in "iu":
        reason = "never decoded through parities"  # the default code would only add work
    _check(operation, a, b, reason, max_errors=max_errors)


@pytest.mark.parametrize("max_errors", [0, 1])
@pytest.mark.parametrize("code", ["mds", "replication", "polynomial", "matdot"])
@pytest.mark.parametrize("case", [c for c in sorted(CASES) if CASES[c][3] is None])
def test_every_code_keeps_the_contract(case, code, max_errors):
    operation, a, b, _ = CASES[case]
    integer = np.result_type(a.dtype, b.dtype).kind in "iu"
    if integer and code in ("polynomial", "matdot"):
        # No systematic blocks: integers would be solved in floating point, so a systematic code is used.
        with pytest.warns(dask_coded.DaskCodedWarning, match="cannot decode integer products exactly"):
            _check(operation, a, b, None, code=code, max_errors=max_errors)
    else:
        _check(operation, a, b, None, code=code, max_errors=max_errors)


@pytest.mark.parametrize("max_errors", [0, 1])
@pytest.mark.parametrize("group_size, rows", [("auto", (1,) * 16 + (0,) * 16 + (1,)), (1, (2, 0, 1))])
def test_a_group_of_empty_chunks_is_coded(group_size, rows, max_errors):
    """Measured bug: a group whose data blocks are all empty (as a filter and compute_chunk_sizes()
    leave them; without a cluster a group has 16 blocks) crashed the parity's equilibration."""
    a = da.from_array(_data((sum(rows), 2), "float64", 0), chunks=(rows, 2))
    with dask.config.set({"coded.group-size": group_size}):
        _check("dot", a, _data(2, "float64", 1), None, max_errors=max_errors)
        _check("dot", dask_coded.encode(a), _data(2, "float64", 1), None, max_errors=max_errors)


def _hidden_masks(array, chunks, where):
    """``array``'s blocks masked ``where`` it says, behind a plain ``ndarray`` meta (dask cannot tell)."""
    meta = np.empty((0,) * array.ndim, dtype=array.dtype)
    return da.from_array(array, chunks=chunks).map_blocks(
        lambda b: np.ma.masked_where(where(b), b), meta=meta
    )


def _with_nan_under_masks(shape):
    a = _data(shape, "float64", 0)
    a[a > 1.0] = np.nan  # masked_invalid's usual input: what is under the masks is not a number
    return a


HIDDEN_MASKS = {
    "some entries of A": lambda: (
        _hidden_masks(_data((6, 4), "float64", 0), (2, 4), lambda b: b > 0.5),
        np.ones(4),
    ),
    "a whole row of A (masked output)": lambda: (
        _hidden_masks(_data((6, 4), "float64", 0), (2, 4), lambda b: np.arange(b.size).reshape(b.shape) < 4),
        _data(4, "float64", 1),
    ),
    "NaN under A's masks": lambda: (
        _hidden_masks(_with_nan_under_masks((6, 4)), (2, 4), np.isnan),
        np.ones(4),
    ),
    "integer A": lambda: (
        _hidden_masks(_data((6, 4), "int64", 0), (2, 4), lambda b: b % 3 == 0),
        np.ones(4, int),
    ),
    "some entries of x": lambda: (
        da.from_array(_data((6, 4), "float64", 0), chunks=(2, 4)),
        _hidden_masks(_data(4, "float64", 1), 2, lambda b: b > 0),
    ),
    "all of x (masked output)": lambda: (
        da.from_array(_data((6, 4), "float64", 0), chunks=(2, 4)),
        _hidden_masks(_data(4, "float64", 1), 2, lambda b: b == b),
    ),
}


@pytest.mark.parametrize(
    "code", [None, "replication", dask_coded.MDSCode(2, 4), "encoded", "polynomial", "matdot"]
)
@pytest.mark.parametrize("case", sorted(HIDDEN_MASKS))
def test_masks_dask_cannot_see_coming_are_kept_as_da_dot_keeps_them(case, code):
    """Masked blocks behind a plain meta (map_blocks, from_delayed): measured bug, masked data summed in.

    A block found masked is multiplied as da.dot multiplies it; no parity decode can carry masks, so
    every output is its own product. Two-sided codes (measured: a TypeError) compute uncoded.
    """
    a, x = HIDDEN_MASKS[case]()
    if code == "encoded":
        a, code = dask_coded.encode(a), None
    if a.dtype.kind == "i" and code in ("polynomial", "matdot"):
        with pytest.warns(dask_coded.DaskCodedWarning, match="cannot decode integer products exactly"):
            _check("dot", a, x, None, code=code)
        return
    integer_default = a.dtype.kind == "i" and code is None and not isinstance(a, dask_coded.CodedArray)
    _check("dot", a, x, "never decoded through parities" if integer_default else None, code=code)


@pytest.mark.parametrize(
    "options, match",
    [
        ({}, "masked block products"),
        ({"code": "polynomial"}, "hold NaN, inf or masks"),
        ({"code": "matdot"}, "hold NaN, inf or masks"),
    ],
)
def test_masks_found_too_late_for_max_errors_are_refused(options, match):
    """Under max_errors a check reads every product, and none can check a masked one.

    A clear error where a silent mask-less (or NaN) answer was given.
    """
    a, x = HIDDEN_MASKS["some entries of A"]()
    with pytest.raises(dask_coded.DecodingError, match=match):
        dask_coded.dot(a, x, max_errors=1, **options).compute(scheduler="sync")


def _poisoned(where, value):
    """A (8, 6) @ B (6, 4) with ``value`` at ``where`` ("a" or "b"), in blocks of (4, 3) and (3, 2)."""
    a, b = _data((8, 6), "float64", 0), _data((6, 4), "float64", 1)
    if where == "a":
        a[1, 2] = value
    else:
        b[3, 1] = value
    return a, b


NONFINITE = {
    "NaN in A": lambda: _poisoned("a", np.nan),
    "inf in B": lambda: _poisoned("b", np.inf),
    "inf in A meets a zero of B": lambda: (_poisoned("a", np.inf)[0], np.zeros((6, 4))),  # inf * 0: NaN
    "+inf and -inf in one sum": lambda: (
        np.where(np.arange(6) < 3, np.inf, -np.inf) * np.ones((8, 1)),  # row blocks +inf then -inf
        np.ones((6, 4)),
    ),
}


@pytest.mark.parametrize("vector", [False, True], ids=["matrix", "vector"])
@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("code", ["mds", "replication", "polynomial", "matdot"])
@pytest.mark.parametrize("case", sorted(NONFINITE))
def test_nan_and_inf_land_where_da_dot_puts_them(case, code, as_dask, vector):
    """Measured bug: polynomial and MatDot codes raised DecodingError on NaN or inf, where da.dot works.

    Every product of a two-sided code mixes every block, so it would hold the NaN; the scaling task
    that reads each block's magnitude sees it first, and the products are then computed uncoded.
    """
    a, b = NONFINITE[case]()
    if vector:
        b = b[:, 1]
    if as_dask:
        a, b = da.from_array(a, chunks=(4, 3)), da.from_array(b, chunks=(3, 2) if b.ndim == 2 else 3)
    with np.errstate(invalid="ignore"):
        _check("dot", a, b, None, code=code)


def _never_meet(big):
    """Huge entries of A meet only zeros of B, and B's only zeros of A: A @ B is [[7, 10], [15, 22]]."""
    a = np.array([[big, 0, 1, 2], [big, 0, 3, 4]])
    b = np.array([[0, 0], [big, big], [1, 2], [3, 4]])
    return da.from_array(a, chunks=(1, 2)), da.from_array(b, chunks=(2, 1))


def _timestamps():
    """A column of timestamps (ns) that B weights 0, as real feature matrices have."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 8))
    a[:, 0] = 1.7e18 + rng.integers(0, 10**9, 6)
    b = rng.standard_normal((8, 3))
    b[0] = 0.0
    return da.from_array(a, chunks=(3, 4)), da.from_array(b, chunks=(4, 3))


def _scaled_lines(seed, span):
    """Rows and columns of both operands scaled up to 10**span apart."""
    rng = np.random.default_rng(seed)

    def scaled(rows, cols):
        scales = 10.0 ** rng.uniform(-span, span, (rows, 1)) * 10.0 ** rng.uniform(-span, span, (1, cols))
        return rng.standard_normal((rows, cols)) * scales

    return da.from_array(scaled(9, 12), chunks=(3, 4)), da.from_array(scaled(12, 10), chunks=(4, 5))


def _a_chunk_beside_its_cross_terms():
    """Row chunk 0's output is about 1 beside a 1e8 cross term of its own; row chunk 1's is 1e8."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 4)), rng.standard_normal((4, 3))
    a[0:2, 0:2] *= 1e8  # meets B's zero rows 0-1 only in A_0 B_0; in the cross term A_0 B_1, it counts
    b[0:2] = 0.0
    a[2:4, 2:4] *= 1e8
    return da.from_array(a, chunks=(2, 2)), da.from_array(b, chunks=(2, 3))


#: Finite operands that two-sided codes once decoded wrong (silently, on a cluster) or failed on.
HOSTILE_FINITE = {
    # MatDot, measured 1.2e-8 relative error: the gate judged all row chunks together.
    "a chunk small beside its own cross terms": _a_chunk_beside_its_cross_terms,
    "huge entries that never meet, 1e50": lambda: _never_meet(1e50),  # MatDot: 4.5e33 relative error
    "huge entries that never meet, 1e200": lambda: _never_meet(1e200),  # polynomial: all zeros
    "a product past the largest float": lambda: (  # MatDot: DecodingError; da.dot: NaN and inf
        da.from_array(np.array([[1e200, 1e200], [1.0, 2.0]]), chunks=1),
        da.from_array(np.array([[1e200, 1.0], [-1e200, 1.0]]), chunks=1),
    ),
    "timestamps B ignores": _timestamps,  # MatDot: 1.6e-7 relative error
    "rows and columns 1e12 apart": lambda: _scaled_lines(1, 12),
    "rows and columns 1e30 apart": lambda: _scaled_lines(2, 30),  # MatDot: 0.77 relative error
    "outputs in the subnormal range": lambda: (  # da.dot loses digits there: 1e-4 relative difference
        da.from_array(np.random.default_rng(3).standard_normal((8, 6)) * 1e-160, chunks=(4, 3)),
        da.from_array(np.random.default_rng(4).standard_normal((6, 4)) * 1e-155, chunks=(3, 2)),
    ),
}


@pytest.mark.parametrize("code", ["polynomial", "matdot"])
@pytest.mark.parametrize("case", sorted(HOSTILE_FINITE))
def test_two_sided_codes_give_da_dots_accuracy_on_hostile_finite_data(case, code):
    """Where a decode cannot cancel the products' terms to da.dot's accuracy, the code computes uncoded.

    The scaling task reads each chunk's largest magnitude per line of the inner axis, which bound
    every entry of |A_j| |B_l|: enough to tell, before anything is encoded, whether every output
    stands out of the terms a decode cancels, and whether anything overflows.
    """
    a, b = HOSTILE_FINITE[case]()
    with np.errstate(over="ignore", invalid="ignore"):
        _check("dot", a, b, None, code=code)


@pytest.mark.parametrize(
    "code",
    [
        dask_coded.PolynomialCode(2, 1, 4),
        dask_coded.PolynomialCode(3, 1, 5),
        dask_coded.PolynomialCode(2, 2, 6),
    ],
    ids=repr,
)
@pytest.mark.parametrize("tiny", [1e-16, 0.0])
def test_a_tiny_chunk_re_split_into_a_block_with_larger_ones_keeps_its_accuracy(code, tiny):
    """A code with other blocks than chunks (hostile review: 2.1 relative error, sync, no fault).

    Rows 0-1 (one of da.dot's output chunks) share a re-split block with rows 1e16 larger: solved to
    the block's accuracy they were garbage. The scaling reads each chunk's segment of a block apart.
    """
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((8, 6)), rng.standard_normal((6, 4))
    a[:2] *= tiny
    b[:, :1] *= tiny
    _check("dot", da.from_array(a, chunks=(2, 6)), da.from_array(b, chunks=(6, 1)), None, code=code)


@pytest.mark.parametrize(
    "code, a_chunks",
    [
        (dask_coded.PolynomialCode(2, 1, 4), (2, 6)),
        (dask_coded.PolynomialCode(2, 2, 6), (2, 6)),
        (dask_coded.PolynomialCode(2, 2, 6), ((3, 0, 3, 2), 6)),  # an empty chunk has nothing to judge
        ("matdot", ((3, 0, 3, 2), 3)),
        ("matdot", (2, 3)),  # with a zero row chunk: its products are exact zeros, so is its decode
    ],
    ids=repr,
)
def test_re_split_blocks_and_zero_chunks_of_ordinary_data_stay_coded(code, a_chunks):
    """Measured (hostile review): a zero or empty chunk made the code compute uncoded."""
    a = _data((8, 6), "float64", 0)
    if a_chunks == (2, 3):
        a[:2] = 0.0
    a, b = da.from_array(a, chunks=a_chunks), da.from_array(_data((6, 4), "float64", 1), chunks=(6, 1))
    y = _check("dot", a, b, None, code=code)
    graph = dict(y.__dask_graph__())
    (scaling,) = dask.get(graph, [k for k in graph if str(k[0]).startswith(EXPONENTS)])
    assert not scaling.uncoded
    if a_chunks == (2, 3):
        np.testing.assert_array_equal(y.compute(scheduler="sync")[:2], 0.0)


@pytest.mark.parametrize(
    "a, b, code",
    [
        (np.ones(6), np.ones(6), dask_coded.MDSCode(3, 5)),  # a 1 x 6 row split into 3 blocks
        (np.ones((2, 6)), np.ones(6), dask_coded.MDSCode(3, 5)),
        (np.ones(6), np.ones((6, 2)), dask_coded.MDSCode(3, 5)),  # B's 2 columns
        (np.ones(6), np.ones((6, 8)), dask_coded.PolynomialCode(2, 1, 4)),  # the row vector's 1 row
        (np.ones((8, 6)), np.ones(6), dask_coded.PolynomialCode(2, 2, 6)),  # a vector in 2 column blocks
        (np.ones((8, 1)), np.ones((1, 3)), dask_coded.MatDotCode(2, 4)),
    ],
    ids=["vector.vector", "2 rows", "2 columns", "polynomial row", "polynomial vector", "matdot inner"],
)
def test_a_code_object_with_more_blocks_than_the_operand_falls_back(a, b, code):
    """Measured (hostile review): a ValueError when the graph was built, where da.dot works."""
    _check("dot", da.from_array(a), da.from_array(b), "splits the .* blocks, but it", code=code)


@pytest.mark.parametrize("code", ["polynomial", "matdot"])
def test_two_sided_codes_with_nan_refuse_max_errors_clearly(code):
    """Under max_errors, NaN in the data cannot be told from wrong results: one-sided codes say so too."""
    a, b = (da.from_array(x, chunks=c) for x, c in zip(_poisoned("a", np.nan), [(4, 3), (3, 2)]))
    y = dask_coded.dot(a, b, code=code, max_errors=1)
    with pytest.raises(dask_coded.DecodingError, match="hold NaN, inf or masks.*cannot be located"):
        y.compute(scheduler="sync")


def test_stacked_matmul_keeps_da_matmul_graph():
    a = da.ones((400, 4, 4), chunks=(100, 4, 4))
    with pytest.warns(FallbackWarning, match="stacks"):
        result = dask_coded.matmul(a, da.ones((4, 4), chunks=4))
    assert len(result.__dask_graph__()) == len(da.matmul(a, da.ones((4, 4), chunks=4)).__dask_graph__())


@pytest.mark.parametrize("max_errors", [0, 1])
@pytest.mark.parametrize("left", NUMERIC)
@pytest.mark.parametrize("right", ["same", "float64", "int64"])
def test_every_dtype(left, right, max_errors):
    right = left if right == "same" else right
    a = da.from_array(_data((6, 5), left, 0), chunks=(4, 3))
    b = da.from_array(_data((5, 3), right, 1), chunks=(3, 2))
    coded = "bool" not in (left, right) and np.promote_types(left, right).name in CODED_DTYPES
    integer = coded and np.promote_types(left, right).kind in "iu" and not max_errors
    reason = "never decoded through parities" if integer else None if coded else "not coded|cannot reproduce"
    _check("dot", a, b, reason, max_errors=max_errors)


def test_narrow_integers_keep_da_dot_wrapping():
    # da.dot multiplies int8 blocks in int8 (wrapping) and sums the blocks in int64.
    a = da.from_array(np.full((1, 4), 100, np.int8), chunks=(1, 2))
    b = da.from_array(np.full(4, 100, np.int8), chunks=2)
    with pytest.warns(FallbackWarning, match="wrap"):
        result = dask_coded.dot(a, b)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result.compute(scheduler="sync"), da.dot(a, b).compute(scheduler="sync"))


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("other", ["numpy", "dask", "vector"])
def test_coded_array_operands(axis, other):
    A = da.from_array(
        _data((12, 8) if axis == 0 else (8, 12), "float64", 0), chunks=(4, 8) if axis == 0 else (8, 4)
    )
    coded = dask_coded.encode(A, axis=axis)
    shape = {
        "numpy": (8, 3) if axis == 0 else (3, 8),
        "dask": (8, 3) if axis == 0 else (3, 8),
        "vector": (8,),
    }[other]
    x = _data(shape, "float64", 1)
    if other == "dask":
        x = da.from_array(x, chunks=2)
    a, b = (coded, x) if axis == 0 else (x, coded)
    for operation in ("dot", "matmul"):
        _check(operation, a, b, None)


def test_coded_array_in_a_stack_falls_back():
    coded = dask_coded.encode(da.from_array(_data((4, 4), "float64", 0), chunks=2))
    _check("matmul", _data((3, 2, 4), "float64", 1), coded, "stacks")


def test_matvec_keeps_the_contract():
    A = da.from_array(_data((9, 5), "float64", 0), chunks=(4, 5))
    x = _data(5, "float64", 1)
    assert_like_dask(dask_coded.matvec(A, x), da.dot(A, x))
    with pytest.warns(FallbackWarning, match="dask_coded.dot: masked"):
        dask_coded.matvec(_masked(), np.ones(5))


@pytest.mark.parametrize(
    "a,b,error",
    [
        (lambda: _masked(), lambda: np.ones(5), TypeError),
        (lambda: np.ones((2, 3, 4)), lambda: np.ones((4, 2)), ValueError),
        (lambda: np.ones((3, 0)), lambda: np.ones((0, 2)), ValueError),
        (lambda: np.ones((3, 3), dtype="int8"), lambda: np.ones(3, dtype="int8"), TypeError),
    ],
)
def test_fallback_can_be_an_error(a, b, error):
    with dask.config.set({"coded.fallback": "raise"}), pytest.raises(error, match="dask_coded.dot: "):
        dask_coded.dot(a(), b())


def test_bad_fallback_setting():
    with dask.config.set({"coded.fallback": "ignore"}), pytest.raises(ValueError, match="coded.fallback"):
        dask_coded.dot(_masked(), np.ones(5))


def test_scalars_are_refused_like_dask():
    with pytest.raises(ValueError, match="scalars are not allowed"):
        dask_coded.dot(np.float64(2.0), np.ones(3))
    with pytest.raises(ValueError, match="scalars are not allowed"):
        dask_coded.matmul(np.ones(3), da.from_array(np.array(2.0)))


def test_code_and_max_errors_are_keyword_only():
    with pytest.raises(TypeError):
        dask_coded.dot(np.ones((2, 2)), np.ones(2), "mds")  # type: ignore[misc]


def test_nep18_refuses_out_like_dask():
    coded = dask_coded.encode(da.from_array(_data((6, 4), "float64", 0), chunks=(2, 4)))
    x = _data(4, "float64", 1)
    assert_like_dask(np.dot(coded, x), da.dot(dask_coded.array.data_array(coded), x))
    assert_like_dask(np.matmul(coded, x), da.matmul(dask_coded.array.data_array(coded), x))
    with pytest.raises(TypeError, match="out="):
        np.dot(coded, x, np.empty(6))
    with pytest.raises(TypeError, match="out="):
        np.dot(coded, x, out=np.empty(6))
    with pytest.raises(TypeError, match="out="):
        np.matmul(coded, x, out=np.empty(6))
    # np.dot on plain Dask arrays refuses out= too.
    with pytest.raises(TypeError):
        np.dot(da.from_array(_data((6, 4), "float64", 0)), x, np.empty(6))


def _dependencies(task):
    return {dep for dep in task.dependencies}


@pytest.mark.parametrize("code", ["mds", "replication", "polynomial", "matdot"])
def test_numpy_operands_travel_inside_the_tasks(code):
    A = da.from_array(_data((8, 6), "float64", 0), chunks=(2, 6))
    for a, b in [(A, _data(6, "float64", 1)), (_data((8, 6), "float64", 0), _data((6, 3), "float64", 1))]:
        graph = dict(dask_coded.dot(a, b, code=code).__dask_graph__())
        keys_of_a = {k for k in graph if isinstance(a, da.Array) and k[0] == a.name}
        for key, task in graph.items():
            if str(key[0]).startswith((PRODUCT, ENCODE)):
                # Every task that reads a NumPy operand holds its blocks; none waits on an operand task.
                assert _dependencies(task) <= {k for k in graph if str(k[0]).startswith("coded-")} | keys_of_a
        # No task holds a whole NumPy operand (da.asarray would have made an array- task).
        assert all(not str(k[0]).startswith("array-") or k in keys_of_a for k in graph)


def test_numpy_operands_keep_deterministic_keys_and_pickle():
    A = da.from_array(_data((8, 6), "float64", 0), chunks=(2, 6))
    x = _data(6, "float64", 1)
    first, second = dask_coded.dot(A, x), dask_coded.dot(A, x.copy())
    assert first.name == second.name
    assert dask_coded.dot(A, x + 1).name != first.name
    graph = dict(first.__dask_graph__())
    for dumps, loads in [(pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)]:
        restored = loads(dumps(graph))
        assert set(restored) == set(graph)
    products = [t for k, t in graph.items() if str(k[0]).startswith(PRODUCT)]
    assert all(reference_key(arg) is None for t in products for arg in t.args[1].args)  # x's blocks
    np.testing.assert_allclose(first.compute(scheduler="sync"), A.compute() @ x, rtol=1e-12)


def test_numpy_operand_chunks_are_from_array_chunks():
    big = np.empty((6000, 4000))  # 190 MB, never touched: only its shape and dtype matter here
    assert Operand(big).chunks == da.from_array(big, name=False).chunks
    assert len(Operand(big).chunks[0]) > 1


def test_fallback_reason_is_a_pure_function_of_metadata():
    a = da.ones((4, 3), chunks=2)
    assert fallback_reason("dot", a, np.ones(3), da.dot(a, np.ones(3))) is None
    assert "masked" in str(fallback_reason("dot", _masked(), np.ones(5), da.dot(_masked(), np.ones(5))))
    stack = np.ones((2, 4, 3))
    assert "stacks" in str(fallback_reason("matmul", stack, a.T, da.matmul(stack, a.T)))


_DTYPES = st.sampled_from(["float64", "float32", "int64", "complex128", "int8"])


@st.composite
def _chunked(draw, length):
    """Chunks of an axis of ``length``: a random split into non-empty pieces."""
    cuts = draw(st.lists(st.integers(1, length - 1), max_size=3, unique=True)) if length > 1 else []
    bounds = [0, *sorted(cuts), length]
    return tuple(hi - lo for lo, hi in zip(bounds, bounds[1:]))


@st.composite
def _operand(draw, shape, dtype, seed):
    array = _data(shape, dtype, seed)
    if draw(st.booleans()):
        return array
    return da.from_array(array, chunks=tuple(draw(_chunked(n)) for n in shape))


@settings(max_examples=40, deadline=None)
@given(data=st.data(), m=st.integers(1, 9), k=st.integers(1, 9), n=st.integers(1, 5))
def test_property_dot_is_da_dot(data, m, k, n):
    a_vector, b_vector = data.draw(st.booleans()), data.draw(st.booleans())
    a_dtype, b_dtype = data.draw(_DTYPES), data.draw(_DTYPES)
    a = data.draw(_operand((k,) if a_vector else (m, k), a_dtype, 0))
    b = data.draw(_operand((k,) if b_vector else (k, n), b_dtype, 1))
    code = data.draw(st.sampled_from([None, "replication", "polynomial", "matdot"]))
    max_errors = data.draw(st.integers(0, 1))
    reference = da.dot(a, b)
    reason = fallback_reason("dot", a, b, reference, code=code, max_errors=max_errors)
    integer = np.result_type(reference.dtype).kind in "iu"
    if reason is None and integer and code in ("polynomial", "matdot"):
        with pytest.warns(dask_coded.DaskCodedWarning, match="cannot decode integer products exactly"):
            result = dask_coded.dot(a, b, code=code, max_errors=max_errors)
    elif reason is None:
        result = dask_coded.dot(a, b, code=code, max_errors=max_errors)
    else:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            result = dask_coded.dot(a, b, code=code, max_errors=max_errors)
        assert [type(w.message) for w in record] == [FallbackWarning]
    with warnings.catch_warnings():
        if code in ("polynomial", "matdot"):
            # Decoding through evaluation points can amplify float32 round-off past float32's accuracy
            # target, and the decode says so (ConditioningWarning); the values are still checked.
            warnings.simplefilter("ignore", dask_coded.ConditioningWarning)
        assert_like_dask(result, reference)
