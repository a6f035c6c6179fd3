import contextlib
import dataclasses
import itertools
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dask_coded
from dask_coded import (
    ConditioningWarning,
    GroupedMDSCode,
    MatDotCode,
    MDSCode,
    PolynomialCode,
    ReplicationCode,
)
from dask_coded._compat import reference_key
from dask_coded.blocks import CheckedProduct, DecodeSpec, ScaledBlock, decode_block
from dask_coded.errors import DaskCodedWarning
from dask_coded.keys import DECODE, ENCODE, PRODUCT
from dask_coded.linalg import _in_chunks
from dask_coded.testing import assert_eq

RTOL = {"float64": 1e-10, "complex128": 1e-10, "float32": 1e-4, "int64": 0}

# name -> (a shape, a chunks, b shape, b chunks)
CASES = {
    "square": ((40, 40), (10, 20), (40, 40), (20, 15)),
    "tall": ((90, 12), (25, 12), (12, 5), (12, 5)),
    "wide": ((6, 80), (3, 40), (80, 30), (40, 10)),
    "matvec": ((40, 30), (10, 10), (30,), (10,)),
    "vecmat": ((40,), (10,), (40, 30), (10, 8)),
    "uneven": ((37, 23), (10, 7), (23, 11), (7, 4)),
    "vecvec": ((30,), (15,), (30,), (15,)),
}
CODES = ["mds", "replication", "polynomial", "matdot"]


def _data(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if dtype == "int64":
        return rng.integers(-5, 6, size=shape).astype(dtype)
    out = rng.standard_normal(shape)
    if dtype == "complex128":
        out = out + 1j * rng.standard_normal(shape)
    return out.astype(dtype)


def _operands(case, dtype, kind, code):
    a_shape, a_chunks, b_shape, b_chunks = CASES[case]
    a_np, b_np = _data(a_shape, dtype, 0), _data(b_shape, dtype, 1)
    a_da, b_da = da.from_array(a_np, chunks=a_chunks), da.from_array(b_np, chunks=b_chunks)
    if kind == "numpy":
        return a_np, b_np, a_np, b_np, da.dot(a_np, b_np)
    if kind == "coded":
        if a_da.ndim == 2:
            return dask_coded.encode(a_da, code), b_da, a_np, b_np, da.dot(a_da, b_da)
        return a_da, dask_coded.encode(b_da, code, axis=1), a_np, b_np, da.dot(a_da, b_da)
    return a_da, b_da, a_np, b_np, da.dot(a_da, b_da)


# A CodedArray carries a one-sided code of a 2-D operand.
OPERANDS = [
    (case, code, kind)
    for case in sorted(CASES)
    for code in CODES
    for kind in ["numpy", "dask", "coded"]
    if kind != "coded" or (code in ("mds", "replication") and case != "vecvec")
]


@pytest.mark.parametrize("case,code,kind", OPERANDS)
@pytest.mark.parametrize("dtype", sorted(RTOL))
def test_dot_equals_numpy_with_da_dot_chunks(case, code, dtype, kind):
    a, b, a_np, b_np, like = _operands(case, dtype, kind, code)
    inexact = dtype == "int64" and code in ("polynomial", "matdot")
    with pytest.warns(DaskCodedWarning, match="integer") if inexact else contextlib.nullcontext():
        result = dask_coded.dot(a, b, code=None if kind == "coded" else code)
    assert_eq(result, np.dot(a_np, b_np), RTOL[dtype], like=like, scheduler="sync")


@pytest.mark.parametrize("code", CODES)
def test_every_local_scheduler(code, local_scheduler):
    a, b, a_np, b_np, like = _operands("uneven", "float64", "dask", code)
    assert_eq(dask_coded.dot(a, b, code=code), a_np @ b_np, like=like, scheduler=local_scheduler)


@pytest.mark.parametrize("code", CODES)
def test_on_a_local_cluster(client, code):
    a, b, a_np, b_np, like = _operands("square", "float64", "dask", code)
    result = dask_coded.dot(a, b, code=code)
    assert_eq(result, a_np @ b_np, like=like)  # the client is the default scheduler
    assert_eq(client.compute(result).result(), a_np @ b_np)
    persisted = client.persist(result)
    assert_eq(persisted, a_np @ b_np)


@pytest.mark.parametrize(
    "code",
    [MDSCode(4, 7), ReplicationCode(3, 2), PolynomialCode(2, 3, 8), MatDotCode(3, 6)],
    ids=repr,
)
def test_code_objects_rechunk_to_fit(code):
    a, b, a_np, b_np, like = _operands("square", "float64", "dask", None)
    result = dask_coded.dot(a, b, code=code)
    # The code splits the operands its own way; the result still has da.dot's chunks.
    assert_eq(result, a_np @ b_np, scheduler="sync", like=like)
    specs = [t.args[0] for t in _decode_tasks(dict(result.__dask_graph__())).values()]
    assert {spec.code for spec in specs} == {code}


def test_a_re_split_coded_array_gives_the_chunks_of_the_array_it_encoded():
    """``encode(A) @ x`` is a drop-in for ``A @ x``: encode's own data blocks do not leak out."""
    rng = np.random.default_rng(1)
    a_np, x_np = rng.standard_normal((11, 7)), rng.standard_normal((7, 5))
    plain = da.from_array(a_np, chunks=(3, 7))
    coded = dask_coded.encode(plain, MDSCode(2, 4))
    assert coded.chunks == ((6, 5), (7,))  # re-split into the code's 2 data blocks
    assert_eq(coded @ x_np, a_np @ x_np, scheduler="sync", like=da.matmul(plain, x_np))
    # The transpose is coded along axis 1: the right operand.
    assert_eq(x_np.T @ coded.T, x_np.T @ a_np.T, scheduler="sync", like=da.matmul(x_np.T, plain.T))
    # One decode per output block, fused from windows of the decoded blocks it overlaps: no second
    # layer of tasks to straggle.
    result = coded @ x_np
    (products,) = result.dask.dependencies[result.name]
    assert result.name.startswith(DECODE) and products.startswith(PRODUCT)
    specs = [t.args[0] for t in _decode_tasks(dict(result.__dask_graph__())).values()]
    windows = [[(part.output, part.window) for part in spec.parts] for spec in specs]
    assert windows == [[(0, (0, 0, 3))], [(0, (0, 3, 6))], [(1, (0, 0, 3))], [(1, (0, 3, 5))]]
    # An output block across two decoded blocks takes a window of each.
    straddling = dask_coded.encode(da.from_array(a_np, chunks=(4, 7)), MDSCode(2, 4)) @ x_np
    assert straddling.chunks == ((4, 4, 3), (5,))
    specs = [t.args[0] for t in _decode_tasks(dict(straddling.__dask_graph__())).values()]
    assert [(part.output, part.window) for part in specs[1].parts] == [(0, (0, 4, 6)), (1, (0, 0, 2))]
    assert_eq(
        straddling, a_np @ x_np, scheduler="sync", like=da.matmul(da.from_array(a_np, chunks=(4, 7)), x_np)
    )


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_a_fused_decode_is_exact_whichever_members_are_missing(data):
    """Any chunks of any magnitudes, any re-split, any erasures the code tolerates: a fused decode
    returns its rows of A @ x to their own accuracy (each chunk's parities are equilibrated apart)."""
    rows = data.draw(st.integers(4, 24))
    chunks = tuple(c for c in _chunking(data.draw, rows) if c) or (rows,)
    k = data.draw(st.integers(2, min(rows, 5)))
    left = data.draw(st.booleans())
    a_np = np.random.default_rng(rows).standard_normal((rows, 3))
    magnitudes = data.draw(st.lists(st.integers(-250, 250), min_size=len(chunks), max_size=len(chunks)))
    a_np *= np.repeat(np.ldexp(1.0, magnitudes), chunks)[:, None]
    x_np = np.random.default_rng(k).standard_normal((3, 2))
    plain = da.from_array(a_np, chunks=(chunks, 3))
    coded = dask_coded.encode(plain if left else plain.T, MDSCode(k, k + 2), axis=0 if left else 1)
    result = coded @ x_np if left else x_np.T @ coded
    expected = a_np @ x_np if left else x_np.T @ a_np.T
    assert result.chunks == (da.matmul(plain, x_np) if left else da.matmul(x_np.T, plain.T)).chunks
    graph = dict(result.__dask_graph__())
    decodes = _decode_tasks(graph)
    members = sorted({reference_key(r) for t in decodes.values() for r in t.args[1:]} - {None})
    products = dict(zip(members, dask.get(graph, members)))
    late = set(data.draw(st.lists(st.integers(0, k + 1), max_size=2)))
    for key, task in decodes.items():
        spec, refs = task.args[0], task.args[1:]
        args = [None if i in late else products[reference_key(r)] for i, r in enumerate(refs)]
        where = tuple(slice(sum(c[:i]), sum(c[: i + 1])) for c, i in zip(result.chunks, key[1:]))
        size = np.abs(expected[where]).max(initial=0.0)
        np.testing.assert_allclose(decode_block(spec, *args), expected[where], rtol=1e-10, atol=1e-11 * size)


def _chunking(draw, size):
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=4)))
    return tuple(b - a for a, b in zip([0, *cuts], [*cuts, size]))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_decoded_blocks_are_cut_into_any_chunks(data):
    shape = tuple(data.draw(st.lists(st.integers(0, 9), min_size=1, max_size=2)))
    old = tuple(_chunking(data.draw, n) for n in shape)
    new = tuple(_chunking(data.draw, n) for n in shape)
    x = np.arange(float(np.prod(shape))).reshape(shape)
    result = _in_chunks(da.from_array(x, chunks=old), new)
    assert result.chunks == new
    np.testing.assert_array_equal(result.compute(scheduler="sync"), x)


def test_named_codes_take_their_size_from_config():
    a, b, _, _, _ = _operands("square", "float64", "dask", None)
    with dask.config.set({"coded.parity": 3}):
        graph = dict(dask_coded.dot(a, b).__dask_graph__())
    specs = [t.args[0] for k, t in graph.items() if isinstance(k, tuple) and str(k[0]).startswith(DECODE)]
    assert {s.code for s in specs} == {MDSCode(4, 7)}


def test_matmul_stacks_fall_back_and_broadcast():
    a, b = _data((3, 2, 10, 6), "float64", 0), _data((6, 4), "float64", 1)
    with pytest.warns(dask_coded.FallbackWarning, match="stacks of matrices are not coded"):
        assert_eq(dask_coded.matmul(a, b), np.matmul(a, b), scheduler="sync")
        assert_eq(dask_coded.matmul(a, b[:, 0]), np.matmul(a, b[:, 0]), scheduler="sync")
        assert_eq(
            dask_coded.matmul(b[:, 0], _data((3, 6, 5), "float64", 2)),
            np.matmul(b[:, 0], _data((3, 6, 5), "float64", 2)),
            scheduler="sync",
        )
    with pytest.raises(ValueError, match="scalars are not allowed"):
        dask_coded.matmul(np.float64(2.0), b)


def test_matvec_and_operators_and_nep18():
    a_np, x = _data((20, 8), "float64", 0), _data(8, "float64", 1)
    coded = dask_coded.encode(da.from_array(a_np, chunks=(5, 8)))
    for result in (dask_coded.matvec(coded, x), coded @ x, np.dot(coded, x), np.matmul(coded, x)):
        assert isinstance(result, da.Array)
        assert_eq(result, a_np @ x, scheduler="sync")
    left = _data((2, 8), "float64", 4)
    for result in (left @ coded.T, np.matmul(left, coded.T), da.from_array(left) @ coded.T):
        assert isinstance(result, da.Array)
        assert_eq(result, left @ a_np.T, scheduler="sync")
    with pytest.raises(ValueError, match="1-D vector"):
        dask_coded.matvec(coded, np.ones((8, 2)))


def test_drop_in_pipeline_gives_the_same_result():
    def pipeline(dot):
        rng = da.random.default_rng(42)
        X = rng.standard_normal((600, 40), chunks=(100, 40))
        X = (X - X.mean(axis=0)) / X.std(axis=0)
        W = rng.standard_normal((40, 6), chunks=(40, 3))
        H = da.tanh(dot(X, W))
        return dask.compute(H.sum(axis=0), (H**2).mean(), dot(H.T, H), scheduler="threads")

    for plain, coded in zip(pipeline(da.dot), pipeline(dask_coded.dot)):
        assert_eq(coded, plain)


def _decode_tasks(graph):
    return {k: t for k, t in graph.items() if isinstance(k, tuple) and str(k[0]).startswith(DECODE)}


@pytest.mark.parametrize("code", CODES)
def test_groups_survive_graph_optimisation(code):
    a, b, _, _, _ = _operands("square", "float64", "dask", code)
    expression = (dask_coded.dot(a, b, code=code) + 1).sum()
    (optimised,) = dask.optimize(expression)
    graph = dict(optimised.__dask_graph__())
    decodes = _decode_tasks(graph)
    assert decodes, "decode tasks were fused away"
    for task in decodes.values():
        assert task.func is decode_block
        spec = task.args[0]
        assert isinstance(spec, DecodeSpec)
        members = [reference_key(arg) for arg in task.args[1:] if reference_key(arg) is not None]
        assert len(members) == spec.code.n == len(set(members))
        assert all(str(m[0]).startswith(PRODUCT) and m in graph for m in members)
    assert dask.compute(expression, scheduler="sync")[0] == pytest.approx(
        dask.compute(expression, optimize_graph=False, scheduler="sync")[0], rel=1e-12
    )


def test_systematic_decode_returns_the_data_product_itself():
    code = MDSCode(3, 5)
    products = [np.full((2, 2), float(i)) for i in range(5)]
    out = decode_block(DecodeSpec(code, 1, (2, 2), np.dtype("float64")), *products)
    assert out is products[1]


@pytest.mark.parametrize(
    "a,b,kwargs,error,match",
    [
        (np.ones((3, 4)), np.ones((5, 2)), {}, ValueError, "not aligned"),
        (np.ones(()), np.ones(2), {}, ValueError, "scalars are not allowed"),
        (np.array([["a", "b"]]), np.ones((2, 2)), {}, TypeError, "needs numbers"),
        (np.ones((4, 4)), np.ones(4), {"code": "lt-code"}, ValueError, "unknown code .lt-code."),
        (np.ones((4, 4)), np.ones(4), {"code": dask_coded.GradientCode(4, 1)}, ValueError, "does not split"),
        (np.ones((4, 4)), np.ones(4), {"max_errors": -1}, ValueError, "max_errors"),
    ],
)
def test_bad_input_raises_at_graph_build_time(a, b, kwargs, error, match):
    # A code object with more blocks than the operand has is not bad input: da.dot works, so the call
    # falls back (test_contract), and raises only under coded.fallback: raise.
    with pytest.raises(error, match=match):
        dask_coded.dot(a, b, **kwargs)


def test_a_code_object_too_long_for_the_operand_raises_only_when_asked_to():
    with dask.config.set({"coded.fallback": "raise"}), pytest.raises(ValueError, match="into 3 blocks, but"):
        dask_coded.dot(np.ones((2, 4)), np.ones(4), code=MDSCode(3, 5))


def test_a_coded_array_keeps_its_code():
    coded = dask_coded.encode(np.ones((4, 4)))
    with pytest.raises(ValueError, match="already encoded"):
        dask_coded.dot(coded, np.ones(4), code=MDSCode(2, 3))


GROUPED_OPERANDS = [
    (case, kind)
    for case in sorted(CASES)
    for kind in ["numpy", "dask", "coded"]
    if (case, kind) != ("vecvec", "coded")
]


@pytest.mark.parametrize("case,kind", GROUPED_OPERANDS)
@pytest.mark.parametrize("group_size", [1, 2, 3])
@pytest.mark.parametrize("dtype", ["float64", "int64"])
def test_grouped_codes_equal_numpy(case, kind, group_size, dtype):
    with dask.config.set({"coded.group-size": group_size}):
        a, b, a_np, b_np, like = _operands(case, dtype, kind, "mds")
        result = dask_coded.dot(a, b, code=None if kind == "coded" else "mds")
    specs = [t.args[0] for t in _decode_tasks(dict(result.__dask_graph__())).values()]
    assert {spec.code.k for spec in specs} <= set(range(1, group_size + 1))  # decoded group by group
    assert_eq(result, np.dot(a_np, b_np), RTOL[dtype], like=like, scheduler="sync")


@pytest.mark.parametrize(
    "code,largest_group",
    [
        (None, dask_coded.codes.grouped.UNKNOWN_CLUSTER_GROUP_SIZE + 2),
        # Measured before replication was grouped: 2,048 products in every decode, 5.9 s threaded.
        ("replication", 2 * dask_coded.codes.replication.REPLICATION_GROUP_SIZE),
    ],
)
def test_a_thousand_chunks_give_a_graph_linear_in_the_chunks(code, largest_group):
    """1,024 row chunks: every parity reads one group, every decode one group's products."""
    a = _data((4096, 8), "float64", 0)
    x = _data(8, "float64", 1)
    A = da.from_array(a, chunks=(4, 8))
    y, plain = dask_coded.dot(A, x, code=code), da.dot(A, x)
    graph = dict(y.__dask_graph__())
    assert len(graph) <= 4 * len(dict(plain.__dask_graph__()))
    decodes = _decode_tasks(graph)
    group_sizes = {task.args[0].code.n for task in decodes.values()}
    assert len(decodes) == 1024 and max(group_sizes) <= largest_group
    fan_in = max(len(task.dependencies) for task in graph.values() if hasattr(task, "dependencies"))
    assert fan_in <= max(group_sizes)
    np.testing.assert_allclose(y.compute(scheduler="threads"), a @ x, rtol=1e-10)


def _scaled_blocks(rows=40, cols=6, scales=(1e12, 1e-3, 1.0, 1e6)):
    rng = np.random.default_rng(3)
    return np.concatenate([s * rng.standard_normal((rows // len(scales), cols)) for s in scales])


@pytest.mark.parametrize(
    "code", [MDSCode(4, 6), MDSCode(7, 9), GroupedMDSCode(4, group_size=2, parity=2)], ids=repr
)
@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_a_re_split_array_keeps_each_chunks_accuracy_whichever_member_straggles(as_dask, code):
    """Data blocks cut across chunks of scales 1e12 to 1e-9: every row keeps its chunk's accuracy.

    A NumPy A gets da.dot's automatic chunks, six of 10 rows at this chunk size.
    """
    a = _scaled_blocks(rows=60, scales=(1e12, 1e-3, 1.0, 1e6, 1e-9, 1e3))
    x = np.random.default_rng(4).standard_normal((6, 2))
    A = da.from_array(a, chunks=(10, 3)) if as_dask else a
    with dask.config.set({"array.chunk-size": "480B"}):
        y = dask_coded.dot(A, x, code=code)
    assert y.chunks == ((10,) * 6, (2,))
    graph = dict(y.__dask_graph__())
    decodes = {k: t for k, t in graph.items() if getattr(t, "func", None) is decode_block}
    assert all(t.args[0].parts for t in decodes.values())  # fused from windows of re-split blocks
    members = sorted({reference_key(r) for t in decodes.values() for r in t.args[1:]} - {None})
    products = dict(zip(members, dask.get(graph, members)))
    expected = a @ x
    for key, task in decodes.items():
        spec, refs = task.args[0], task.args[1:]
        rows = slice(10 * key[1], 10 * key[1] + 10)
        scale = np.abs(expected[rows]).max()
        for late in itertools.combinations(range(len(refs)), 2):
            args = [None if i in late else products[reference_key(r)] for i, r in enumerate(refs)]
            np.testing.assert_allclose(decode_block(spec, *args), expected[rows], atol=1e-11 * scale)


@pytest.mark.parametrize("group_size", ["auto", 2])
@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("column_chunks", [1, 2])
def test_every_block_keeps_its_accuracy_whichever_member_straggles(as_dask, column_chunks, group_size):
    """The graph dot builds, decoded with each member missing in turn: per-block error 1e-10.

    Blocks of very different scales: a 1e-3 block decoded through a parity that also carries a
    1e12 block must keep its own relative accuracy, whether A arrives as NumPy or Dask.
    """
    a = _scaled_blocks()
    x = np.random.default_rng(4).standard_normal(6)
    A = da.from_array(a, chunks=(10, 6 // column_chunks)) if as_dask else a
    # NumPy operands get da.dot's automatic chunks (one block here): a code object splits them.
    code = MDSCode(4, 6) if group_size == "auto" else GroupedMDSCode(4, group_size=group_size, parity=2)
    with dask.config.set({"coded.group-size": group_size}):
        y = dask_coded.dot(A, x) if as_dask else dask_coded.dot(A, x, code=code)
    graph = dict(y.__dask_graph__())
    decodes = {k: t for k, t in graph.items() if getattr(t, "func", None) is decode_block}
    members = sorted({reference_key(r) for t in decodes.values() for r in t.args[1:]} - {None})
    products = dict(zip(members, dask.get(graph, members)))
    expected = a @ x
    # Each row's own scale: that of the 10-row block of A it comes from.
    scale = np.repeat([np.abs(block).max() for block in np.split(expected, 4)], 10)
    # The decode layer's blocks: y's own (fused), or those y is cut from.
    sizes = [decodes[key].args[0].shape[0] for key in sorted(decodes)]
    starts = np.cumsum((0, *sizes))
    for key, task in decodes.items():
        spec, refs = task.args[0], task.args[1:]
        rows = slice(starts[key[1]], starts[key[1] + 1])
        for missing in range(len(refs)):
            args = [None if i == missing else products[reference_key(r)] for i, r in enumerate(refs)]
            error = np.abs(decode_block(spec, *args) - expected[rows])
            assert (error <= 1e-10 * scale[rows]).all(), (key, missing)


# -- codes a user registers are chosen by name, through the registry ------------------------------


class _ParityMatrixCode(MDSCode):
    """A user's systematic one-sided code with a chosen parity matrix (as in examples/custom_code.py)."""

    def __init__(self, parity):
        self.parity = np.asarray(parity, dtype=float)
        self.k, self.n = self.parity.shape[1], sum(self.parity.shape)
        self.generator = np.vstack([np.eye(self.k), self.parity])
        self.targets = np.eye(self.k)
        self.generator_name, self.seed = "user", 0

    def _params(self):
        return (tuple(map(tuple, self.parity.tolist())),)

    def _param_names(self):
        return ("parity",)


class _ShiftedPolynomialCode(PolynomialCode):
    """A user's two-sided code: a polynomial code under another name, built with one extra block."""


def _register_user_codes():
    if "test-parity" not in dask_coded.codes.registered_codes():
        dask_coded.codes.register_code(
            "test-parity",
            _ParityMatrixCode,
            kind=dask_coded.codes.ONE_SIDED,
            from_chunking=lambda c: _ParityMatrixCode(
                np.arange(1, c.blocks + 1)[None, :] ** np.arange(c.parity + 2 * c.max_errors)[:, None]
            ),
        )
        dask_coded.codes.register_code(
            "test-poly",
            _ShiftedPolynomialCode,
            kind=dask_coded.codes.TWO_SIDED,
            from_chunking=lambda c: _ShiftedPolynomialCode(
                c.row_blocks, c.col_blocks, c.row_blocks * c.col_blocks + 1
            ),
        )


def _decode_codes(result):
    return {
        type(task.args[0].code)
        for task in result.dask.values()
        if getattr(task, "func", None) is decode_block
    }


@pytest.mark.parametrize("numpy_operand", [False, True])
def test_a_registered_one_sided_code_is_used_by_name(numpy_operand):
    _register_user_codes()
    a = np.random.default_rng(0).standard_normal((40, 12))
    A = a if numpy_operand else da.from_array(a, chunks=(10, 12))
    x = np.arange(12.0)
    y = dask_coded.dot(A, x, code="test-parity", max_errors=1)
    assert _decode_codes(y) == {_ParityMatrixCode}
    code = next(t.args[0].code for t in y.dask.values() if getattr(t, "func", None) is decode_block)
    assert code.k == len(dask_coded.linalg.Operand(A).chunks[0])  # the operand's own row blocks
    assert code.n - code.k == 4  # coded.parity 2 + 2 * max_errors
    assert_eq(y, a @ x)
    with dask.config.set({"coded.code": "test-parity"}):
        assert _decode_codes(dask_coded.dot(A, x)) == {_ParityMatrixCode}
    coded = dask_coded.encode(A, code="test-parity")
    assert isinstance(coded.code, _ParityMatrixCode)
    assert_eq(coded @ x, a @ x)


def test_a_registered_two_sided_code_is_used_by_name():
    _register_user_codes()
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((30, 8)), rng.standard_normal((8, 20))
    y = dask_coded.dot(da.from_array(a, chunks=(10, 8)), da.from_array(b, chunks=(8, 10)), code="test-poly")
    assert _decode_codes(y) == {_ShiftedPolynomialCode}
    assert_eq(y, a @ b)
    with pytest.raises(ValueError, match="cannot encode one array"):
        dask_coded.encode(a, code="test-poly")


def test_a_one_sided_code_must_be_systematic():
    code = _ParityMatrixCode([[1.0, 1.0]])
    code.generator = code.generator[::-1].copy()  # the data blocks are no longer first
    with pytest.raises(ValueError, match="not systematic"):
        dask_coded.dot(np.ones((4, 3)), np.ones(3), code=code)


@pytest.mark.parametrize("code", ["polynomial", "matdot"])
def test_a_float32_operand_of_a_float64_product_keeps_float64_accuracy(code):
    # Found by hypothesis: the float32 operand was encoded in float32 before the float64 product.
    a = np.random.default_rng(0).standard_normal((20, 12))
    b = np.random.default_rng(1).standard_normal((12, 6)).astype(np.float32)
    y = dask_coded.dot(da.from_array(a, chunks=(10, 6)), b, code=code)
    expected = a @ b.astype(np.float64)
    np.testing.assert_allclose(
        y.compute(scheduler="sync"), expected, rtol=0, atol=1e-12 * np.abs(expected).max()
    )


def test_subnormal_blocks_are_coded_and_corrected_like_any_others():
    """Their parities once overflowed to NaN/inf, and a max_errors product raised where da.dot works."""
    a = np.random.default_rng(0).standard_normal((12, 4))
    a[4:8] *= 1e-310
    x = np.random.default_rng(1).standard_normal(4)
    A = da.from_array(a, chunks=(4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditioningWarning)
        y = dask_coded.dot(A, x, max_errors=1).compute(scheduler="sync")
    np.testing.assert_array_equal(y, da.dot(A, x).compute(scheduler="sync"))


@pytest.mark.parametrize("tiny", [1e-315, 1e-320])
def test_a_normal_chunk_beside_a_subnormal_one_keeps_its_accuracy_through_the_parities(tiny):
    """The subnormal chunk's products have few digits: their rounding must not reach the normal chunk."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20, 4))
    a[10:] *= tiny
    x = rng.standard_normal(4)
    y = dask_coded.encode(da.from_array(a, chunks=(10, 4)), MDSCode(2, 4)) @ x
    for late in itertools.combinations(range(4), 2):
        if 0 not in late:
            continue  # the normal chunk's own product returns it exactly
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            decoded = _decoded_window(y, (y.name, 0), late)
        np.testing.assert_allclose(decoded, (a @ x)[:10], rtol=1e-13)


def test_encode_sizes_its_code_for_the_configured_max_errors():
    A = da.from_array(np.arange(48.0).reshape(12, 4), chunks=(3, 4))
    with dask.config.set({"coded.max-errors": 1, "coded.parity": 1}):
        assert_eq(dask_coded.encode(A) @ np.ones(4), np.arange(48.0).reshape(12, 4) @ np.ones(4))


def _scaled_two_sided(code):
    """Operands whose blocks differ in scale: each output mixes products 1e16 (or 1e300) apart."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((8, 6)), rng.standard_normal((6, 4))
    if isinstance(code, PolynomialCode):  # row blocks of A, column blocks of B
        a[:4], a[4:], b[:, :2], b[:, 2:] = a[:4] * 1e150, a[4:] * 1e-150, b[:, :2] * 1e8, b[:, 2:] * 1e-8
        return a, b, (4, 6), (6, 2)
    # MatDot: A_0 B_0 and A_1 B_1 are about 1, but its decode cancels A_0 B_1, about 1e16.
    a[:, :3], a[:, 3:], b[:3], b[3:] = a[:, :3] * 1e8, a[:, 3:] * 1e-8, b[:3] * 1e-8, b[3:] * 1e8
    return a, b, (4, 3), (3, 4)


@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("code", [PolynomialCode(2, 2, 6), MatDotCode(2, 5)], ids=repr)
def test_two_sided_codes_keep_each_output_accurate_whatever_the_scales_of_the_blocks(code, as_dask):
    """Measured bug: unscaled, outputs came back 1e285 (polynomial) or 3 (MatDot) times off, with a warning.

    Each block of both operands is scaled by a power of two first (MatDot: A_j against B_j), and
    every output is decoded to its own accuracy, from every set of products a decode may get.
    """
    a, b, a_chunks, b_chunks = _scaled_two_sided(code)
    A, B = (da.from_array(a, chunks=a_chunks), da.from_array(b, chunks=b_chunks)) if as_dask else (a, b)
    y = dask_coded.dot(A, B, code=code)
    expected = a @ b
    np.testing.assert_allclose(y.compute(scheduler="sync"), expected, rtol=1e-12)
    if not as_dask:  # NumPy operands: scaled at graph-build time; da.dot's chunks are assembled after
        return
    threshold = code.recovery_threshold
    for index in itertools.product(*(range(len(c)) for c in y.chunks)):
        want = expected[tuple(slice(sum(c[:i]), sum(c[: i + 1])) for c, i in zip(y.chunks, index))]
        for late in itertools.combinations(range(code.n), code.n - threshold):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                decoded = _decoded_window(y, (y.name, *index), late)
            np.testing.assert_allclose(decoded, want, rtol=1e-11, err_msg=f"{index} without {late}")


@pytest.mark.parametrize(
    "code",
    [
        PolynomialCode(2, 2, 6),
        PolynomialCode(3, 3, 10),
        PolynomialCode(4, 4, 17),
        MatDotCode(3, 6),
        MatDotCode(8, 16),
    ],
    ids=repr,
)
def test_two_sided_codes_stay_coded_on_ordinary_data(code):
    """The accuracy check that makes a code compute uncoded must not fire on data a code can decode."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((40, 48)) * 1e6, rng.standard_normal((48, 36)) * 1e-9
    graph = dict(dask_coded.dot(a, b, code=code).__dask_graph__())
    scalings = {id(task.args[1]): task.args[1] for key, task in graph.items() if key[0].startswith(ENCODE)}
    assert scalings and not any(scaling.uncoded for scaling in scalings.values())


@pytest.mark.parametrize("max_errors", [0, 1])
def test_a_polynomial_output_of_a_zero_block_is_exactly_zero(max_errors):
    """Interpolated, A_0 B_l came back as round-off (and a ConditioningWarning), not da.dot's zeros."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((8, 6)), rng.standard_normal((6, 4))
    a[:4] = 0.0  # row block 0 of A
    b[:, 2:] = 0.0  # column block 1 of B
    code = PolynomialCode(2, 2, 6 + 2 * max_errors)
    y = dask_coded.dot(da.from_array(a, chunks=(4, 3)), da.from_array(b, chunks=(3, 2)), code=code)
    expected = a @ b
    for index in itertools.product(range(2), range(2)):
        want = expected[4 * index[0] : 4 * index[0] + 4, 2 * index[1] : 2 * index[1] + 2]
        for late in itertools.combinations(range(code.n), code.n - code.recovery_threshold):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                decoded = _decoded_window(y, (y.name, *index), late)
            if index[0] == 0 or index[1] == 1:
                np.testing.assert_array_equal(decoded, 0.0)
            else:
                np.testing.assert_allclose(decoded, want, rtol=1e-12)


def _re_split_with_a_tiny_chunk(side="left"):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 8))
    a[:20] *= 1e12
    a[20:] *= 1e-3
    x = rng.standard_normal(8)
    if side == "left":
        coded = dask_coded.encode(da.from_array(a, chunks=(20, 8)), MDSCode(3, 5))
        return a, x, coded, coded @ x
    coded = dask_coded.encode(da.from_array(a.T, chunks=(8, 20)), MDSCode(3, 5), axis=1)
    return a, x, coded, x @ coded


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("late", [(), (0,), (1,), (2,), (1, 2), (0, 2)])
def test_a_re_split_window_keeps_its_own_accuracy_through_the_parities(side, late):
    """Rows 1e15 times smaller than the rest of their data block come back to their own accuracy.

    Data block 1 holds rows 14-26: six of the 1e12 chunk, seven of the 1e-3 one. Its parities are
    equilibrated segment by segment of the chunks its rows come from.
    """
    a, x, coded, y = _re_split_with_a_tiny_chunk(side)
    graph = dict(y.__dask_graph__())
    for index, rows in (((y.name, 0), slice(0, 20)), ((y.name, 1), slice(20, 40))):
        spec, refs = graph[index].args[0], graph[index].args[1:]
        products = dask.get(graph, [reference_key(r) for r in refs])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # not even a ConditioningWarning
            decoded = decode_block(spec, *[None if i in late else p for i, p in enumerate(products)])
        expected = a[rows] @ x
        np.testing.assert_allclose(decoded, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


def _decoded_window(y, index, late, change=None):
    """Output block ``index`` of ``y``, decoded with members ``late`` missing (``change`` edits products)."""
    graph = dict(y.__dask_graph__())
    spec, refs = graph[index].args[0], graph[index].args[1:]
    products = list(dask.get(graph, [reference_key(r) for r in refs]))
    if change is not None:
        # Under max_errors products carry their round-off bounds: edit the values, keep the bounds.
        values = [p.product if isinstance(p, CheckedProduct) else p for p in products]
        change(values)
        products = [
            dataclasses.replace(p, product=v) if isinstance(p, CheckedProduct) else v
            for p, v in zip(products, values)
        ]
    return decode_block(spec, *[None if i in late else p for i, p in enumerate(products)])


@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize(("data", "product"), [("float32", "float64"), ("complex64", "complex128")])
def test_a_less_precise_operand_is_decoded_to_the_products_accuracy(as_dask, data, product):
    """float32 A times float64 x is a float64 product: decoded through parities, it keeps float64's digits."""
    a, x = _data((8, 4), data, 0), _data(4, product, 1)
    A = da.from_array(a, chunks=(2, 4)) if as_dask else a
    y = dask_coded.dot(A, x, code=None if as_dask else MDSCode(4, 6))
    assert y.dtype == np.dtype(product)
    expected = a.astype(product) @ x
    graph = dict(y.__dask_graph__())
    for task in _decode_tasks(graph).values():
        spec, refs = task.args[0], task.args[1:]
        products = dask.get(graph, [reference_key(r) for r in refs])
        rows = slice(2 * spec.output, 2 * spec.output + 2) if not spec.parts else slice(None)
        for late in itertools.combinations(range(len(refs)), 2):
            decoded = decode_block(spec, *[None if i in late else p for i, p in enumerate(products)])
            np.testing.assert_allclose(decoded, expected[rows], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("data", ["int8", "uint8", "int16"])
@pytest.mark.parametrize("vector", ["float32", "complex64"])
def test_max_errors_allows_the_rounding_of_the_least_precise_product(data, vector):
    """int8 blocks times a float32 x are float32 products, the parities' products float64: not errors."""
    a = (np.arange(48).reshape(8, 6) % 7).astype(data)
    x = np.linspace(-1, 1, 6).astype(vector)
    A = da.from_array(a, chunks=2)
    assert_eq(dask_coded.dot(A, x, max_errors=1), a @ x, 1e-5, scheduler="sync", like=da.dot(A, x))


def test_a_re_split_array_with_an_empty_chunk():
    a, x = np.arange(18.0).reshape(6, 3), np.ones((3, 2))
    A = da.from_array(a, chunks=((2, 0, 4), 3))
    y = dask_coded.encode(A, MDSCode(2, 3)) @ x
    assert_eq(y, a @ x, scheduler="sync", like=da.matmul(A, x))
    for late in [(0,), (1,), (2,)]:
        np.testing.assert_array_equal(_decoded_window(y, (y.name, 1, 0), late), np.zeros((0, 2)))
        np.testing.assert_allclose(_decoded_window(y, (y.name, 2, 0), late), (a @ x)[2:], rtol=1e-12)


def test_a_nan_in_one_chunk_leaves_the_finite_rows_of_a_parity_product_usable():
    """The product of a parity that holds a NaN keeps its exponents: its other rows decode exactly."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 4)) * np.repeat([1e100, 1.0, 1e-100], 10)[:, None]
    a[13, 2] = np.nan  # in chunk 1, data block 0 (rows 0-14)
    x = rng.standard_normal((4, 2))
    y = dask_coded.encode(da.from_array(a, chunks=(10, 4)), MDSCode(2, 4)) @ x
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = _decoded_window(y, (y.name, 0, 0), late=(0,))  # rows 0-9: finite, through the parities
    np.testing.assert_allclose(decoded, (a @ x)[:10], rtol=1e-12)


def test_a_chunk_of_zeros_decodes_to_round_off_at_the_smallest_chunks_scale():
    """A zero chunk's exponent is the smallest of the others', not 0 (which meant round-off of size 1)."""
    rng = np.random.default_rng(1)
    a = 1e-20 * rng.standard_normal((30, 4))
    a[10:20] = 0.0
    x = rng.standard_normal(4)
    scale = np.abs(a @ x).max()
    y = dask_coded.encode(da.from_array(a, chunks=(10, 4)), MDSCode(2, 4)) @ x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditioningWarning)  # zeros come back as round-off: it says so
        decoded = _decoded_window(y, (y.name, 1), late=(0, 1))
    assert np.abs(decoded).max() <= 1e-12 * scale

    def wrong_in_the_zero_rows(products):
        products[1] = np.array(products[1])  # data block 1: rows 15-29, of which 15-19 are zeros
        products[1][:5] += scale

    y = dask_coded.dot(dask_coded.encode(da.from_array(a, chunks=(10, 4)), MDSCode(2, 4)), x, max_errors=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditioningWarning)
        decoded = _decoded_window(y, (y.name, 1), late=(), change=wrong_in_the_zero_rows)
    assert np.abs(decoded).max() <= 1e-12 * scale


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("member", [0, 1, 2, 3, 4])
def test_max_errors_checks_each_column_of_x_at_its_own_scale(side, member):
    """X's second column is 1e-8 its first's size: a 1e-12 error in it is 1e-4 of it.

    Checked as one block, the first column's round-off allowance hid it (an error of 7e-4 relative
    to |A| |X| came back); lines of very different scale are checked apart.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 20))
    x = rng.standard_normal((20, 2)) * np.array([1.0, 1e-8])
    if side == "left":
        coded = dask_coded.encode(da.from_array(a, chunks=(10, 20)), MDSCode(3, 5))
        y, expected, line = (
            dask_coded.dot(coded, da.from_array(x, chunks=(20, 2)), max_errors=1),
            a @ x,
            (0, 1),
        )
    else:
        coded = dask_coded.encode(da.from_array(a.T, chunks=(20, 10)), MDSCode(3, 5), axis=1)
        y, expected, line = (
            dask_coded.dot(da.from_array(x.T, chunks=(2, 20)), coded, max_errors=1),
            x.T @ a.T,
            (1, 0),
        )

    def wrong_in_the_small_line(products):
        values = products[member].values if isinstance(products[member], ScaledBlock) else products[member]
        values = np.array(values)
        values[line] += 1e-12
        if isinstance(products[member], ScaledBlock):
            values = dataclasses.replace(products[member], values=values)
        products[member] = values

    decoded = _decoded_window(y, (y.name, 0, 0), late=(), change=wrong_in_the_small_line)
    rows = slice(0, 10)
    reference = expected[rows] if side == "left" else expected[:, rows]
    np.testing.assert_allclose(decoded, reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_max_errors_checks_each_chunk_of_a_re_split_block_at_its_own_scale(side):
    """Data blocks of 20 rows hold chunks of 1e12 and of 1e-3 rows, alternately (5 rows a chunk).

    A product wrong by 1e-9 in one 1e-3 chunk is wrong by 1e-6 relative to it. Bounded over the
    whole block, every data product's round-off is of size eps * 1e12 and hides that error; each
    product bounds its round-off chunk by chunk, and the decode of that chunk reads its own bound.
    """
    rng = np.random.default_rng(3)
    a = rng.standard_normal((60, 8)) * np.repeat([1e12, 1e-3] * 6, 5)[:, None]
    x = rng.standard_normal(8)
    if side == "left":
        y = dask_coded.dot(dask_coded.encode(da.from_array(a, chunks=(5, 8)), MDSCode(3, 5)), x, max_errors=1)
    else:
        coded = dask_coded.encode(da.from_array(a.T, chunks=(8, 5)), MDSCode(3, 5), axis=1)
        y = dask_coded.dot(x, coded, max_errors=1)
    assert y.chunks == ((5,) * 12,)

    def wrong_in_a_small_chunk(products):  # data block 1: rows 20-39; rows 25-29 are a 1e-3 chunk
        values = products[1].values if isinstance(products[1], ScaledBlock) else products[1]
        values = np.array(values)
        values[5:10] += 1e-9
        products[1] = (
            dataclasses.replace(products[1], values=values)
            if isinstance(products[1], ScaledBlock)
            else values
        )

    decoded = _decoded_window(y, (y.name, 5), late=(), change=wrong_in_a_small_chunk)
    np.testing.assert_allclose(decoded, a[25:30] @ x, rtol=1e-12)


@pytest.mark.parametrize("block", [1, 2])
def test_max_errors_finds_a_wrong_product_of_small_rows_in_a_re_split_block(block):
    """A product wrong only in the 1e-3 rows of a block that also holds 1e12 rows is found and skipped.

    Output block 1 is rows 20-39: rows of data blocks 1 and 2, whose own products it would return.
    """
    a, x, coded, _ = _re_split_with_a_tiny_chunk()
    y = dask_coded.dot(coded, x, max_errors=1)
    graph = dict(y.__dask_graph__())
    spec, refs = graph[(y.name, 1)].args[0], graph[(y.name, 1)].args[1:]
    products = list(dask.get(graph, [reference_key(r) for r in refs]))
    checked = products[block]
    assert isinstance(checked, CheckedProduct)  # with a bound on its round-off, per chunk
    wrong = checked.product
    values = np.array(wrong.values if isinstance(wrong, ScaledBlock) else wrong)
    values[-3:] += 1e-6 * np.abs(values[-3:]).max() + 1e-9  # the last rows, in the small chunk
    wrong = dataclasses.replace(wrong, values=values) if isinstance(wrong, ScaledBlock) else values
    products[block] = dataclasses.replace(checked, product=wrong)
    expected = a[20:] @ x
    np.testing.assert_allclose(decode_block(spec, *products), expected, atol=1e-12 * np.abs(expected).max())
