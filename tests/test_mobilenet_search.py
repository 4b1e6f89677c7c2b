"""benchmarks/mobilenet_search.py: searches stay under their MAdds target, and every model
of models.csv has the MAdds its architecture recomputes to."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark_modules import load_benchmark

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "mobilenet_search" / "models.csv"


def _load():
    return load_benchmark("mobilenet_search")


ms = _load()


@pytest.fixture(params=sorted(ms.FAMILIES))
def family(request, monkeypatch):
    """Each space the benchmark searches (``--space``), set as the run's."""
    monkeypatch.setattr(ms, "FAMILY", ms.FAMILIES[request.param])
    return ms.FAMILY


def check_models_csv(path: Path) -> pd.DataFrame:
    models = pd.read_csv(path)
    assert list(models.columns[:len(ms.MODEL_COLUMNS)]) == ms.MODEL_COLUMNS
    assert len(models)
    for r in models.itertuples():
        assert ms.recompute_madds(r.arch, r.width) == pytest.approx(r.madds, rel=1e-12), r
        assert r.madds <= r.target_madds * (1 + 1e-12), r
        assert r.target_madds == pytest.approx(ms.target_madds(r.target_fraction))
    return models


@pytest.mark.parametrize("frac", [0.25, 0.5])
def test_scaled_baseline_is_under_and_near_the_target(frac, family):
    target = ms.target_madds(frac)
    width, arch, madds = ms.scaled_baseline(target)
    assert madds == ms.make_space(width).cost(arch)["madds"] <= target
    # the next width step up (same depth choice) is over the target: the widest that fits
    wider = ms.make_space(round(width + 0.01, 2))
    up = arch if arch == ms.make_space(width).default_arch() else ms.shallower(wider, wider.default_arch())
    assert wider.cost(up)["madds"] > target
    assert madds > 0.85 * target


@pytest.mark.parametrize("algo", ["layernas", "random"])
def test_search_stays_under_its_madds_target(tmp_path, algo, family):
    """The script's searches (LayerNAS with its H and bucket edges; the reachable-option
    random search), with a training-free evaluator."""
    from layernas.dry_run import ProxyScoreEvaluator

    args = argparse.Namespace(out=tmp_path, seed=0, store=tmp_path / "store")
    s = {**ms.settings(argparse.Namespace(quick=True)), "children": [12], "num_buckets": 2}
    space = ms.make_space()
    row = ms.run_search(args, algo, 0.25, s, evaluator=ProxyScoreEvaluator(space))
    hist = pd.read_csv(tmp_path / "runs" / f"{algo}-0.25" / "history.csv")
    assert row["children"] == len(hist) == 12
    assert row["madds"] <= ms.target_madds(0.25)
    assert ms.recompute_madds(row["arch"]) == row["madds"]
    assert hist.feasible.all() and (hist.cost_madds <= ms.target_madds(0.25)).all()
    assert hist.arch_str.nunique() == len(hist)
    # a search without its searches.csv row is reported as in progress, with its best child so far
    (running,) = ms.in_progress(args).itertuples()
    assert (running.algorithm, running.children, running.feasible) == (algo, 12, 12)
    assert running.proxy_reward == hist.reward.max() and running.arch in set(hist.arch_str)


def test_default_child_budgets_are_one_dry_run_round_through_the_layers(family):
    """The default budgets are what a training-free dry run of the H=1 search needs to
    decide every layer once (so they follow the searcher, not a guess)."""
    for frac, children in family.children.items():
        assert ms.first_round_children(frac) == children, (family.space, frac)


def test_proxy_and_final_recipes_per_family(family):
    """MobileNetV3's slow BatchNorm momentum gets precise BatchNorm in both recipes; the
    MobileNetV2 recipes are the ones its stored children were trained with (same keys)."""
    s = ms.settings(argparse.Namespace(quick=False, children=[57], targets=[0.5], num_buckets=1,
                                       final_train_per_class=1000, final_epochs=4))
    proxy, final = ms.proxy_recipe(s), ms.final_recipe(s)
    want = 32 if family.space.startswith("mobilenetv3") else 0
    assert proxy.bn_recalibration_batches == final.bn_recalibration_batches == want
    assert ("bn_recalibration_batches" in proxy.identity()) == bool(want)


def test_goal_lines_judge_each_target_from_models_csv():
    row = lambda kind, frac, acc, madds: {"kind": kind, "target_fraction": frac, "target_madds": frac * 88e6,  # noqa: E731
                                         "test_acc_mean": acc, "madds": madds}
    models = pd.DataFrame([row("layernas", 0.25, 52.6, 21.2e6), row("scaled", 0.25, 50.8, 21.0e6),
                           row("random", 0.25, 45.3, 21.9e6), row("layernas", 0.5, 48.9, 35e6),
                           row("scaled", 0.5, 48.4, 43.9e6)])
    text = "\n".join(ms.goal_lines(models, 2))
    lines = {line.split(" |")[0]: line for line in text.splitlines() if line.startswith("| 0.")}
    assert "+1.80" in lines["| 0.25x"] and lines["| 0.25x"].count("yes") == 2
    assert "+0.50" in lines["| 0.5x"] and "NO" in lines["| 0.5x"] and "not finished" in lines["| 0.5x"]
    assert "*less* accurate" in text      # the 0.5x best is below the 0.25x best
    over = models.copy()
    over.loc[0, "madds"] = 23e6          # over its target: not a win, however accurate
    assert "| 0.25x | +1.80" in "\n".join(ms.goal_lines(over, 2))
    assert "NO" in [line for line in ms.goal_lines(over, 2) if line.startswith("| 0.25x")][0]


def test_children_per_target():
    assert ms.default_children([0.5]) == [57] and ms.default_children([0.25, 0.5]) == [38, 57]
    with pytest.raises(ValueError, match="give --children"):
        ms.default_children([0.3])
    assert ms.children_for({"children": [50, 32]}, [0.25, 0.5], 0.5) == 32
    assert ms.children_for({"children": [7]}, [0.25, 0.5], 0.5) == 7
    with pytest.raises(ValueError, match="one per target"):
        ms.children_for({"children": [1, 2, 3]}, [0.25, 0.5], 0.5)


@pytest.mark.skipif(not RESULTS.exists(), reason=f"{RESULTS} not written yet")
def test_results_models_csv_madds_recompute():
    check_models_csv(RESULTS)


@pytest.mark.slow
def test_quick_run_writes_every_output(tmp_path):
    """The --quick smoke run on real CIFAR-10 (about 30 min on a loaded 2-core CPU, mostly compiles)."""
    if not (ms.CIFAR10 / "train").is_dir():
        pytest.skip(f"needs CIFAR-10 at {ms.CIFAR10}")
    out = tmp_path / "out"
    assert ms.main(["--quick", "--out", str(out), "--store", str(tmp_path / "store"), "--targets", "0.25"]) == 0
    for name in ("searches.csv", "models.csv", "final_runs.csv", "summary.md", "provenance.json",
                 "accuracy_vs_madds.png", "lut.json"):
        assert (out / name).exists(), name
    models = check_models_csv(out / "models.csv")
    assert set(models.kind) == set(ms.KINDS)
    assert (models.seeds >= 2).all() and models.test_acc_mean.between(0, 100).all()
    searches = pd.read_csv(out / "searches.csv")
    assert (searches.madds <= searches.target_madds).all()
    assert searches.children.nunique() == 1  # random search got as many children as LayerNAS
    assert "QUICK" in (out / "summary.md").read_text()
    exported = json.loads((out / "export" / "layernas-0.25" / "model.json").read_text())
    assert exported["arch_str"] == searches[searches.algorithm == "layernas"].arch.iloc[0]
    assert exported["onnx_check"]["max_abs_diff"] < 1e-4
    assert "## Export" in (out / "summary.md").read_text()
    # the LayerNAS answer's run directory is exportable as `layernas export` reads it
    from layernas.trainers.export import export_run

    meta = export_run(out / "runs" / "layernas-0.25", tmp_path / "exported", onnx=False)
    assert meta["arch_str"] == searches[searches.algorithm == "layernas"].arch.iloc[0]
    assert np.isfinite(meta["costs"]["madds"])


def test_an_interrupt_without_a_deadline_still_writes_the_partial_summary(tmp_path, monkeypatch, cifar10_dir):
    """Ctrl-C or SIGTERM (no --minutes): the summary says the run was interrupted, no traceback."""
    from layernas.run import Terminated

    def interrupted(*args, **kwargs):
        raise Terminated("terminated (SIGTERM)")

    monkeypatch.setattr(ms, "CIFAR10", cifar10_dir)
    monkeypatch.setattr(ms, "run_all", interrupted)
    assert ms.main(["--quick", "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store")]) == 0
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "The run was stopped by an interrupt" in summary and "Partial results" in summary


def test_proxy_check_needs_the_models_table(tmp_path, capsys):
    check = load_benchmark("mobilenet_proxy_check")
    assert check.main(["--store", str(tmp_path / "store"), "--out", str(tmp_path)]) == 2
    assert "models.csv does not exist" in capsys.readouterr().err


def test_summary_lists_the_proxy_check_when_it_has_run(tmp_path):
    assert ms.proxy_check_lines(tmp_path / "proxy_check.csv") == []
    pd.DataFrame([{"kind": "scaled", "target_fraction": 0.5, "madds": 43.9e6, "proxy_valid_mean": 28.8,
                   "proxy_valid_std": 1.2, "proxy_valid_per_seed": "30.00;27.60;28.80", "final_test_mean": 48.85,
                   "machine": "cpu", "script_wall_s": 366.4}]).to_csv(tmp_path / "proxy_check.csv", index=False)
    text = "\n".join(ms.proxy_check_lines(tmp_path / "proxy_check.csv"))
    assert "| 0.5x | scaled | 43.90 | 28.80 ± 1.20 | 30.00, 27.60, 28.80 | 48.85 |" in text
