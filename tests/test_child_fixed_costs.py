"""benchmarks/child_fixed_costs.py: the report is rebuilt from a run's CSV and run record."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "child_fixed_costs.py"
RESULTS = REPO / "results" / "perf"


def test_report_rebuilds_from_the_committed_run(tmp_path):
    for name in ("child_fixed_costs.csv", "child_fixed_costs_run.json"):
        shutil.copy(RESULTS / name, tmp_path / name)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--report-only", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(tmp_path / "child_fixed_costs.csv")
    assert set(df.scenario) == {"cold", "warm"} and set(df.recipe) == {"small-proxy", "PROXY"}
    # the same-shape child in the same process compiles nothing: its fixed cost is init only
    shared = df[df.child == "A'"]
    assert (shared.compile_s == 0).all() and (shared.fixed_s < 1).all()
    text = (tmp_path / "child_fixed_costs.md").read_text()
    assert text == (RESULTS / "child_fixed_costs.md").read_text()
