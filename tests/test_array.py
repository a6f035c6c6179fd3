import pickle

import dask
import dask.array as da
import numpy as np
import pytest

import dask_coded
from dask_coded import CodedArray, MDSCode, ReplicationCode, encode
from dask_coded.blocks import ScaledBlock
from dask_coded.codes.arithmetic import equilibration_exponents
from dask_coded.keys import DECODE, ENCODE, PRODUCT
from dask_coded.testing import assert_eq


@pytest.fixture
def matrix():
    return np.random.default_rng(0).standard_normal((11, 6))


@pytest.mark.parametrize("code", [None, "mds", "replication", MDSCode(3, 5), ReplicationCode(2, 3)], ids=repr)
@pytest.mark.parametrize("axis", [0, 1])
def test_encode_computes_to_the_original(matrix, code, axis):
    coded = encode(da.from_array(matrix, chunks=(4, 2)), code=code, axis=axis)
    assert isinstance(coded, CodedArray)
    assert coded.shape == matrix.shape and coded.dtype == matrix.dtype and coded.axis == axis
    assert len(coded.chunks[axis]) == coded.code.k
    assert len(coded.coded_chunks[axis]) == coded.code.n
    np.testing.assert_array_equal(coded.compute(), matrix)
    np.testing.assert_array_equal(np.asarray(coded), matrix)


def test_encode_follows_chunks_and_config(matrix):
    coded = encode(da.from_array(matrix, chunks=(3, 6)))
    assert coded.code == MDSCode(4, 6)
    assert coded.chunks == ((3, 3, 3, 2), (6,))
    assert coded.coded_chunks == ((3, 3, 3, 2, 3, 3), (6,))
    # A copy is as large as its block, and so is the block it computes to (each is the block itself).
    replicated = encode(da.from_array(matrix, chunks=(3, 6)), code="replication")
    assert replicated.coded_chunks == ((3, 3, 3, 2) * 2, (6,))
    blocks = dask.get(
        dict(replicated.__dask_graph__()), [key for row in replicated.__dask_keys__() for key in row]
    )
    assert tuple(block.shape[0] for block in blocks) == replicated.coded_chunks[0]
    with dask.config.set({"coded.parity": 3, "coded.generator": "cauchy"}):
        assert encode(matrix).code == MDSCode(1, 4, generator="cauchy")


def test_code_object_rechunks_into_k_even_blocks(matrix):
    coded = encode(da.from_array(matrix, chunks=(11, 6)), code=MDSCode(4, 6))
    assert coded.chunks == ((3, 3, 3, 2), (6,))


def test_parity_blocks_are_in_the_graph(matrix):
    coded = encode(da.from_array(matrix, chunks=(4, 6)), code=MDSCode(3, 5))
    graph = dict(coded.__dask_graph__())
    values = dask.get(graph, [(coded.name, i, 0) for i in range(5)])
    padded = [np.vstack([b, np.zeros((4 - len(b), 6))]) for b in np.array_split(matrix, [4, 8])]
    exponents = equilibration_exponents(padded)
    for i in range(3, 5):
        # Parities are equilibrated: each data block is scaled by a power of two before mixing.
        assert isinstance(values[i], ScaledBlock)
        np.testing.assert_array_equal(values[i].exponents, exponents)
        expected = sum(w * 2.0**-e * b for w, e, b in zip(coded.code.generator[i], exponents, padded))
        np.testing.assert_allclose(values[i].values, expected, rtol=1e-12)
    # The encode layer holds exactly the n coded blocks, under the coded-encode- name.
    assert coded.name.startswith(ENCODE)
    assert {k for k in graph if isinstance(k, tuple) and k[0] == coded.name} == {
        (coded.name, i, 0) for i in range(5)
    }


def test_persist_keeps_parities_and_is_reused(matrix):
    coded = encode(da.from_array(matrix, chunks=(4, 6))).persist(scheduler="sync")
    graph = coded.__dask_graph__()
    assert len(graph) == coded.code.n  # only the computed blocks remain
    x = np.arange(6.0)
    assert_eq(dask_coded.dot(coded, x), matrix @ x)
    assert_eq(coded @ x, matrix @ x)


def test_collection_protocol(matrix):
    coded = encode(da.from_array(matrix, chunks=(4, 3)))
    keys = coded.__dask_keys__()
    assert len(keys) == coded.code.n and len(keys[0]) == 2
    assert coded.__dask_layers__() == (coded.name,)
    assert dask.base.tokenize(coded) == dask.base.tokenize(encode(da.from_array(matrix, chunks=(4, 3))))
    assert coded.name.startswith(ENCODE)
    assert "CodedArray" in repr(coded) and "recovery threshold" in coded._repr_html_()
    (computed,) = dask.compute(coded)
    np.testing.assert_array_equal(computed, matrix)
    assert dask.is_dask_collection(coded)
    clone = pickle.loads(pickle.dumps(coded))
    np.testing.assert_array_equal(clone.compute(), matrix)


#: What a user does with an array besides multiplying it: each sees the encoded array's values.
NON_PRODUCTS = {
    "da.asarray": lambda a: da.asarray(a),
    "da.sum": lambda a: da.sum(a, axis=0),
    "np.sum": lambda a: np.sum(a, axis=1),
    "ufuncs": lambda a: np.sqrt(np.abs(a)),
    "np.add with a scalar": lambda a: np.add(a, 1.0),
    "da.concatenate": lambda a: da.concatenate([a, a]),
    "np.concatenate": lambda a: np.concatenate([a, a], axis=1),
    "slicing": lambda a: a[2:7, ::2],
    "encode again": lambda a: encode(a),
}


@pytest.mark.parametrize("operation", sorted(NON_PRODUCTS))
def test_dask_and_numpy_functions_see_the_encoded_array(matrix, operation):
    """A review found them failing at compute ('CodedArray' object is not subscriptable), or lazy."""
    coded = encode(da.from_array(matrix, chunks=(4, 3)))
    result = NON_PRODUCTS[operation](coded)
    expected = NON_PRODUCTS[operation](matrix)
    assert dask.is_dask_collection(result)
    np.testing.assert_allclose(dask.compute(result)[0], expected, rtol=1e-15)


def test_an_xarray_dataarray_wrapping_a_coded_array_reduces_and_indexes(matrix):
    import xarray as xr

    wrapped = xr.DataArray(encode(da.from_array(matrix, chunks=(4, 3))), dims=("t", "x"))
    np.testing.assert_allclose(wrapped.sum("t").values, matrix.sum(axis=0), rtol=1e-14)
    np.testing.assert_array_equal(wrapped.isel(t=3).values, matrix[3])


def test_transpose(matrix):
    coded = encode(da.from_array(matrix, chunks=(4, 3)))
    assert coded.T.axis == 1 and coded.T.shape == (6, 11)
    np.testing.assert_array_equal(coded.T.compute(), matrix.T)
    y = np.arange(6.0)
    assert_eq(y @ coded.T, y @ matrix.T)
    assert_eq(np.ones((2, 6)) @ coded.T, np.ones((2, 6)) @ matrix.T)


def test_layers_have_readable_names(matrix):
    coded = encode(da.from_array(matrix, chunks=(4, 6)))
    y = dask_coded.dot(coded, np.ones(6))
    layers = set(y.__dask_graph__().layers)
    assert any(n.startswith(ENCODE) for n in layers)
    assert any(n.startswith(PRODUCT) for n in layers)
    assert any(n.startswith(DECODE) for n in layers)


@pytest.mark.parametrize(
    "array,kwargs,error,match",
    [
        (np.ones((2, 2, 2)), {}, ValueError, "1-D or 2-D"),
        (np.array([["a"]]), {}, TypeError, "numbers"),
        (np.ones((4, 4)), {"axis": 2}, ValueError, "out of bounds"),
        (np.ones((4, 4)), {"axis": -3}, ValueError, "axis -3 is out of bounds"),
        (np.array([[1, None]], dtype=object), {}, TypeError, "numbers, got dtype object"),
        (np.ones((2, 4)), {"code": MDSCode(3, 5)}, ValueError, "into 3 non-empty blocks"),
        (np.ones((4, 4)), {"code": "polynomial"}, ValueError, "cannot encode one array"),
        (np.ones((4, 4)), {"code": dask_coded.MatDotCode(2, 3)}, ValueError, "does not split one operand"),
        (np.ones((4, 4)), {"code": "nonsense"}, ValueError, "unknown code .nonsense.; registered codes"),
    ],
)
def test_encode_bad_input(array, kwargs, error, match):
    with pytest.raises(error, match=match):
        encode(array, **kwargs)


def test_encode_refuses_masked_arrays():
    masked = da.ma.masked_greater(da.from_array(np.arange(20.0).reshape(4, 5), chunks=(2, 5)), 10)
    with pytest.raises(TypeError, match="encode needs NumPy blocks, got numpy.ma.MaskedArray"):
        dask_coded.encode(masked)
