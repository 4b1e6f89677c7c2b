"""The NATS comparison driver: oracle vs brute force, budget and constraint, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import layernas
from layernas import comparison as nc
from layernas.run import Budget


@pytest.fixture(scope="module")
def ctx(request):
    from tests.conftest import shared_path

    path = shared_path("data", "nats_tss", "nats_tss_200ep.csv")
    return path, nc.context(path, "cifar10")


@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_oracle_matches_brute_force(ctx, fraction):
    path, (space, evaluator) = ctx
    frame = pd.read_csv(path)
    flops = [space.cost(space.str_to_arch(s))["flops"] for s in frame.arch_str]
    limit = fraction * max(flops)
    ok = frame[np.array(flops) <= limit]
    got = nc.oracle(evaluator, nc.flops_target(space, fraction))
    assert got["test"] == ok.cifar10_test_mean.max()
    assert got["feasible"] == len(ok)
    assert got["arch_str"] in set(ok[ok.cifar10_test_mean == ok.cifar10_test_mean.max()].arch_str)


@pytest.mark.parametrize("algorithm", nc.ALGORITHMS)
def test_driver_respects_budget_and_constraint(ctx, algorithm):
    _, (space, evaluator) = ctx
    target = nc.flops_target(space, 0.25)
    trace = nc.run_search(algorithm, space, evaluator, target, seed=1, max_seconds=5000, max_evaluations=30)
    n = len(trace["rows"])
    assert n >= 30 or trace["finished"]
    assert trace["cum_seconds"][-2] < 5000 or n - 1 < 30  # stops once both limits are reached
    flops = evaluator.arrays.flops[trace["rows"]]
    assert np.array_equal(trace["feasible"], flops <= target.max)
    if algorithm != "layernas":
        assert trace["feasible"].all()
    # the running answer is always a feasible row evaluated so far
    for i in range(n):
        if np.isfinite(trace["best_test"][i]):
            rows = trace["rows"][: i + 1][trace["feasible"][: i + 1]]
            assert trace["best_test"][i] in evaluator.arrays.test_mean[rows]
    setting = nc.Setting("cifar10", 0.25, 5000.0, 30)
    for p in nc.budget_points(trace, setting):
        if p["kind"] == "seconds":
            assert p["sim_seconds"] <= p["point"]
        else:
            assert p["evaluations"] <= p["point"]


@pytest.mark.parametrize("algorithm", nc.ALGORITHMS)
def test_driver_deterministic_and_equal_to_the_run_loop(ctx, algorithm):
    _, (space, evaluator) = ctx
    target = nc.flops_target(space, 0.5)
    a = nc.run_search(algorithm, space, evaluator, target, seed=7, max_seconds=1500, max_evaluations=15)
    b = nc.run_search(algorithm, space, evaluator, target, seed=7, max_seconds=1500, max_evaluations=15)
    for key in ("rows", "cum_seconds", "best_test"):
        assert np.array_equal(a[key], b[key], equal_nan=True)
    c = nc.run_search(algorithm, space, evaluator, target, seed=8, max_seconds=1500, max_evaluations=15)
    if algorithm != "layernas":
        assert not np.array_equal(a["rows"], c["rows"])
    # the direct driver gives the same trace as the checkpointed library run loop
    n = len(a["rows"])
    result = layernas.search(space, evaluator, Budget(evaluations=n), target, seed=7, searcher=algorithm)
    rows = [evaluator.row(space.str_to_arch(s)) for s in result.history.arch_str]
    assert rows == a["rows"].tolist()
    np.testing.assert_allclose(result.history.best_test.to_numpy(float), a["best_test"], equal_nan=True)


def test_run_comparison_small(ctx):
    path, _ = ctx
    points, runs, timing = nc.run_comparison(path, seeds=2, datasets=["cifar10"], fractions=[0.5],
                                             processes=1, max_evaluations=20,
                                             time_budgets={"cifar10": 2000.0})
    assert set(runs.algorithm) == set(nc.ALGORITHMS) and len(runs) == 8
    assert (runs.evaluations_run >= 20).sum() + runs.finished.sum() >= 8
    final = nc.final_table(points, runs, nc.oracle_table(path, ["cifar10"], [0.5]))
    # no answer yet (LayerNAS's first models keep the expensive default ops) is NaN, counted
    assert ((final["mean"] <= final.oracle) | (final.no_answer == 2)).all()
    assert (final.set_index("algorithm").loc[["random", "rea", "reinforce"], "no_answer"] == 0).all()


def test_run_benchmark_writes_the_tables_and_rejects_bad_options(ctx, tmp_path, capsys):
    import argparse

    path, _ = ctx
    parser = nc.add_benchmark_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--table", str(path), "--seeds", "1", "--processes", "1", "--datasets", "cifar10",
                              "--fractions", "0.5", "--out", str(tmp_path / "nats")])
    assert nc.run_benchmark(args) == 0
    for name in ("points.parquet", "runs.csv", "oracle.csv", "final.csv", "provenance.json"):
        assert (tmp_path / "nats" / name).exists()
    assert len(pd.read_csv(tmp_path / "nats" / "runs.csv")) == 4
    assert "wrote" in capsys.readouterr().out
    for bad, match in ((["--seeds", "0"], "--seeds 0"), (["--datasets", "mnist"], "--datasets 'mnist'"),
                       (["--algorithms", "bogus"], "--algorithms 'bogus'"), (["--fractions", "1.5"], "--fractions"),
                       (["--table", str(tmp_path / "missing.csv")], "no such file")):
        args = parser.parse_args(["--table", str(path), *bad])
        with pytest.raises(ValueError, match=match):
            nc.run_benchmark(args)


def test_the_comparison_module_imports_no_matplotlib_and_no_jax():
    import subprocess
    import sys

    code = ("import sys, layernas.comparison; "
            "assert not {'matplotlib', 'jax', 'flax'} & set(sys.modules), sorted({'matplotlib', 'jax'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True)
