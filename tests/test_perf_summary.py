"""benchmarks/perf_summary.py: its peak helpers, and (slow) the whole --quick run."""

import os
from pathlib import Path

import pandas as pd
import pytest

from benchmark_modules import load_benchmark

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LAYERNAS_SHARED", REPO.parent / "shared"))


def _load():
    return load_benchmark("perf_summary")


def test_theoretical_fma_peak_from_cpuinfo():
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo on this platform")
    peak = _load().theoretical_fma_peak()
    assert peak["lanes"] in (4, 8, 16) and peak["cores"] == os.cpu_count()
    assert peak["gflops"] == pytest.approx(peak["cores"] * peak["mhz"] / 1e3 * 2 * peak["lanes"] * peak["pipes"])
    assert peak["gflops"] > 0


def test_numpy_gemm_runs_in_a_subprocess_without_openblas_coretype(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "NO_SUCH_CORE")  # would make OpenBLAS warn or fall back
    mod = _load()
    assert mod.numpy_gemm_gflops((128,), 1, unset_coretype=True) > 0


def test_skipped_groups_keep_their_previous_rows():
    mod = _load()
    row = lambda measure, ours, notes="n": {"measure": measure, "ours": ours, "baseline": 1.0, "unit": "s",  # noqa: E731
                                           "ratio": 1.0, "notes": notes}
    previous = pd.DataFrame([row("classifier train step (x)", 1.0), row("codec train step (y)", 2.0),
                             row("table comparison, 2400 runs", 3.0), row("children per hour, small", 4.0)])
    measured = pd.DataFrame([row("codec train step (y)", 2.5), row("children per hour, small", 4.5)],
                            columns=mod.COLUMNS)
    out = mod.with_skipped_rows(measured, previous, ["table", "classifier"])
    assert list(out.measure) == list(previous.measure)        # the previous order
    assert list(out.ours) == [1.0, 2.5, 3.0, 4.5]              # measured rows replace, skipped ones stay
    assert out.notes.iloc[0].endswith("kept from the previous run (--skip)") and out.notes.iloc[1] == "n"
    assert mod.with_skipped_rows(measured, previous, []).equals(measured)   # nothing skipped: this run only
    assert mod.with_skipped_rows(measured, None, ["table"]).equals(measured)


@pytest.mark.slow  # ~4 min on the shared 2-core machine
def test_perf_summary_quick(tmp_path):
    if not (SHARED / "data" / "cifar10").is_dir() or not (SHARED / "data" / "photos").is_dir():
        pytest.skip(f"needs CIFAR-10 and photos under {SHARED / 'data'}")
    assert _load().main(["--quick", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "summary.csv")
    assert list(df.columns) == ["measure", "ours", "baseline", "unit", "ratio", "notes"]
    measures = " ".join(df.measure)
    for what in ("classifier train step", "vs PyTorch", "vs the old JAX formulation", "achievable GEMM peak",
                 "fraction of the achievable peak", "children per hour", "table comparison"):
        assert what in measures
    assert (df.ours > 0).all()
    assert "Quick mode" in (tmp_path / "summary.md").read_text()
