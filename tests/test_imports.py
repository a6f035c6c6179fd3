"""What ``import dask_coded`` costs a worker: every worker that unpickles a coded task imports it."""

import subprocess
import sys
import textwrap


def _run(code):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_does_not_import_xarray_or_pandas():
    # Newer dask.array imports xarray itself when it is installed; dask-coded must add neither.
    _run(
        """
        import sys
        import dask.array
        before = {name for name in ("xarray", "pandas") if name in sys.modules}
        import dask_coded
        after = {name for name in ("xarray", "pandas") if name in sys.modules}
        assert after == before, f"import dask_coded imported {sorted(after - before)}"
        """
    )


def test_accessor_is_there_once_xarray_is_imported():
    for order in ("import dask_coded; import xarray as xr", "import xarray as xr; import dask_coded"):
        out = _run(
            f"""
            {order}
            import numpy as np
            a = xr.DataArray(np.ones((4, 3)), dims=("t", "x"))
            b = xr.DataArray(np.arange(3.0), dims="x")
            print(a.coded.dot(b, dim="x").values.tolist())
            """
        )
        assert out.strip() == "[3.0, 3.0, 3.0, 3.0]", (order, out)


def test_submodules_are_reachable_as_attributes():
    # README: dask_coded.faults.inject(...) right after `import dask_coded`.
    _run(
        """
        import sys
        import dask_coded
        assert "dask_coded.faults" not in sys.modules and "dask_coded.sgd" not in sys.modules
        assert callable(dask_coded.faults.inject) and callable(dask_coded.sgd.SyncSGD)
        """
    )


def test_when_imported_calls_back_after_the_module_is_complete(tmp_path):
    (tmp_path / "late_module.py").write_text("VALUE = 42\n")
    out = _run(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from dask_coded._imports import when_imported
        seen = []
        when_imported("late_module", lambda: seen.append(sys.modules["late_module"].VALUE))
        assert seen == []
        import late_module
        import late_module  # only once
        print(seen)
        """
    )
    assert out.strip() == "[42]"
