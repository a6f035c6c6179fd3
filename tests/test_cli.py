import json
import re

import pytest

from dask_coded.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:Sending large graph:UserWarning")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["slow-worker", "pareto"])
def test_demo_runs_and_reports(tmp_path, capsys, model):
    argv = ["demo", "--rows", "600", "--cols", "30", "--workers", "4", "--parity", "1", "--repeats", "3"]
    assert main([*argv, "--delay", "0.02", "--model", model, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ("Pareto" in out) == (model == "pareto")
    assert "dashboard: http://127.0.0.1" in out
    assert "coded page: " in out  # its link where the scheduler has Bokeh, else how to get it
    assert re.search(r"plain da\.dot\s+[\d.]+", out) and re.search(r"dask_coded\.dot\s+[\d.]+", out)
    error = float(re.search(r"max relative error vs NumPy: ([\d.e+-]+)", out).group(1))
    assert error < 1e-10
    assert "3/3 matvecs" in out
    assert (tmp_path / "demo.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "2", "--parity", "2"], "must leave at least one data block"),
        (["--workers", "0"], "--workers: must be at least 1"),
        (["--parity", "-1"], "--parity: must be at least 0"),
        (["--repeats", "0"], "--repeats: must be at least 1"),
        (["--rows", "0"], "--rows: must be at least 1"),
        (["--cols", "0"], "--cols: must be at least 1"),
        (["--rows", "1", "--workers", "2", "--parity", "1"], "a block per worker"),
        (["--slow-factor", "0"], "--slow-factor: must be at least 1"),
        (["--delay", "-1"], "--delay: must be at least 0"),
        (["--rows", "many"], "'many' is not an integer"),
    ],
)
def test_demo_rejects_bad_arguments_with_a_usage_error(argv, message, capsys):
    """A review found tracebacks (IndexError, AxisError), and --cols 0 printing an error of nan."""
    with pytest.raises(SystemExit) as info:
        main(["demo", *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_bench_names_the_suites_it_has(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "--suites", "codes,nope"])
    assert info.value.code == 2 and "unknown suites ['nope']; choose from codes" in capsys.readouterr().err


def test_help_and_unknown_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_bench_codes_quick_writes_json(tmp_path):
    assert main(["bench", "--quick", "--suites", "codes,scale,detection,decode", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "codes.json").read_text())
    assert result["machine"]["cpus"] >= 1 and result["rows"]
    assert all(row["relative_error"] < 1e-10 for row in result["rows"])
    detection = json.loads((tmp_path / "detection.json").read_text())["rows"]
    # With the products' own bounds: no false alarm, and a 10% error in Gaussian products always located.
    assert all("false alarm" not in row["outcomes"]["own bounds"] for row in detection)
    assert all(
        row["outcomes"]["own bounds"] == {"located": row["trials"]}
        for row in detection
        if row["data"] == "gaussian" and row["relative_error"] == 0.1
    )
    decode = json.loads((tmp_path / "decode.json").read_text())["rows"]
    # The first 8 - k data products are late: with k = 4 every output combines parities, with 5 and 6
    # some copy their own product. All decoded right.
    assert {(row["code"], row["decode"]) for row in decode} == {
        ("MDSCode(4, 8)", "combination"),
        *((f"MDSCode({k}, 8)", kind) for k in (5, 6) for kind in ("copy", "combination")),
    }
    assert all(row["max_relative_error"] < 1e-12 and row["cold_ms"] > 0 for row in decode)
    scale = json.loads((tmp_path / "scale.json").read_text())["rows"]
    # Graph size, not time: grouped codes stay linear in the chunks, one code over all of them does not.
    assert all(row["grouped"]["edges"] <= 25 * row["chunks"] for row in scale)
    assert scale[-1]["one code"]["edges"] > scale[-1]["chunks"] ** 2


@pytest.mark.slow
def test_bench_cluster_suites_quick(tmp_path):
    assert main(["bench", "--quick", "--suites", "dot,stragglers", "--out", str(tmp_path)]) == 0
    stragglers = json.loads((tmp_path / "stragglers.json").read_text())
    assert {row["model"] for row in stragglers["rows"]} == {
        "slow-worker-10x",
        "shifted-exponential",
        "pareto",
    }
    assert all(row["max_relative_error"] < 1e-10 for row in stragglers["rows"])
    assert (tmp_path / "stragglers.png").exists()
    assert json.loads((tmp_path / "dot.json").read_text())["rows"]


@pytest.mark.slow
def test_bench_strategies_runs_and_models(tmp_path, capsys):
    from benchmarks import bench_strategies

    argv = ["--quick", "--workers", "4", "--models", "no-stragglers", "--runs", "2", "--out", str(tmp_path)]
    rows = bench_strategies.main(argv)
    assert {(row["model"], row["run"]) for row in rows} == {("no-stragglers", 0), ("no-stragglers", 1)}
    assert len({row["strategy"] for row in rows}) == 8
    work = {row["strategy"]: row["work_over_plain"] for row in rows}
    assert work["plain"] == 1.0 and work["replication"] == 2.0 and work["mds-one-parity"] == 4 / 3
    assert all(row["max_relative_error"] < 1e-10 for row in rows)
    assert "least / median / most" in capsys.readouterr().out
    assert (tmp_path / "strategies.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "argv, message", [(["--models", "calm"], "unknown fault models"), (["--runs", "0"], "at least 1")]
)
def test_bench_strategies_rejects_bad_options(argv, capsys, message):
    from benchmarks import bench_strategies

    with pytest.raises(SystemExit):
        bench_strategies.main(argv)
    assert message in capsys.readouterr().err
