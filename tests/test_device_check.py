"""benchmarks/device_check.py runs end to end (its tiny --quick mode, on whatever device JAX has)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark_modules import load_benchmark

REPO = Path(__file__).resolve().parents[1]


def _load():
    return load_benchmark("device_check")


def test_device_check_quick_writes_every_section(tmp_path):
    assert _load().main(["--quick", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "device_check.csv")
    assert set(df.section) == {"classifier train step", "mobilenet train step", "codec train step",
                               "children per hour", "vmap over K children"}
    mb = df[df.section == "mobilenet train step"]
    assert sorted(mb.config.str.split("depthwise=").str[1]) == ["lax", "shifted"]
    timed = df[df.section != "children per hour"]
    assert (timed.seconds_per_step > 0).all() and np.isfinite(timed.seconds_per_step).all()
    assert (df.items_per_second > 0).all()
    vm = df[df.section == "vmap over K children"]
    assert sorted(vm.config.str.split(",").str[0]) == ["jax.vmap", "sequential"]
    seq = vm[vm.config.str.startswith("sequential")].iloc[0]
    assert seq.speedup == 1.0
    md = (tmp_path / "summary.md").read_text()
    assert "Device: **cpu" in md and "Quick mode" in md
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["device"].startswith("cpu") and prov["quick"] is True


def test_device_check_rejects_a_bad_budget(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        _load().main(["--budget-s", "0"])
    assert e.value.code == 2
    assert "--budget-s 0.0: expected a positive number of seconds" in capsys.readouterr().err
