"""`layernas search --trainer ... --store` and the trained-search benchmark's smoke mode (real CIFAR-10)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from benchmark_modules import load_benchmark
from layernas.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


TINY = ["--trainer", "proxy", "--epochs", "1", "--train-per-class", "12", "--valid-per-class", "4",
        "--batch-size", "32"]


def test_cli_store_reuses_children_across_runs(tmp_path, capsys, cifar10_dir):
    store = tmp_path / "store"
    args = ["search", "--space", "nats-tss", "--flops-fraction", "0.5", "--searcher", "random",
            "--data", str(cifar10_dir), *TINY, "--budget-evals", "2", "--quiet", "--store", str(store)]
    code, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "a"))
    assert code == 0, err
    code, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "b"))
    assert code == 0, err
    a, b = (pd.read_csv(tmp_path / d / "history.csv") for d in "ab")
    assert list(a.child) == ["trained", "trained"] and list(b.child) == ["reused", "reused"]
    assert list(a.reward) == list(b.reward) and list(a.training_seed) == list(b.training_seed)
    settings = json.loads((tmp_path / "a" / "result.json").read_text())["settings"]
    assert settings["store"] == {"store": str(store), "training_seeds": 3, "warm_start_epochs": None}


def test_cli_store_flags_are_checked(capsys, tmp_path):
    code, _, err = run_cli(capsys, "search", "--space", "nats-tss", "--store", str(tmp_path), "--quiet",
                           "--out", str(tmp_path / "r"))
    assert code == 2 and "keeps trained children: it needs --trainer" in err
    code, _, err = run_cli(capsys, "search", "--space", "nats-tss", "--warm-start-epochs", "1", "--quiet",
                           "--out", str(tmp_path / "r2"))
    assert code == 2 and "needs --store" in err and "Traceback" not in err


@pytest.mark.slow
def test_trained_search_quick_writes_every_file(tmp_path, cifar10_dir, nats_tss_csv):
    # 130 s on the shared 2-core machine at load ~15 (each new cell compiles its own train step)
    mod = load_benchmark("trained_search")
    out = tmp_path / "ts"
    assert mod.main(["--quick", "--out", str(out), "--store", str(tmp_path / "store")]) == 0
    answers = pd.read_csv(out / "answers.csv")
    assert list(answers.columns[:9]) == ["algorithm", "seed", "arch_str", "flops", "children_trained",
                                         "proxy_reward", "table_valid_mean", "table_test_mean", "wall_s"]
    assert set(answers.algorithm) == {"layernas", "rea", "random"}
    study = pd.read_csv(out / "proxy_study.csv")
    assert list(study.columns[:7]) == ["variant", "seconds_per_child", "n", "kendall_all", "spearman_all",
                                       "kendall_top", "spearman_top"]
    assert {"base", "synflow", "warm-1ep"} <= set(study.variant)
    assert (out / "answer_curves.png").exists() and "QUICK" in (out / "summary.md").read_text()
    # resumable from the store: a second run trains nothing
    before = len(pd.read_csv(out / "study_runs.csv"))
    assert mod.main(["--quick", "--out", str(out), "--store", str(tmp_path / "store")]) == 0
    assert len(pd.read_csv(out / "study_runs.csv")) == before
    # the final-pick parts: a rescore of every feasible child, SynFlow picks, finalists with every seed
    assert mod.main(["--quick", "--out", str(out), "--store", str(tmp_path / "store"),
                     "--parts", "rescore", "synflow-pick", "finalists", "--finalists", "2"]) == 0
    rescore = pd.read_csv(out / "rescore.csv")
    assert len(rescore) and (rescore.held_out_images == 10 * 500).all()  # disjoint from the proxy's images
    picks = pd.read_csv(out / "synflow_picks.csv")
    assert set(picks.algorithm) == {"layernas", "rea", "random"}
    finalists = pd.read_csv(out / "finalists.csv")
    assert (finalists.finalists <= 2).all() and set(finalists.algorithm) == {"layernas", "rea", "random"}
    text = (out / "summary.md").read_text()
    assert "Picking the answer by SynFlow" in text and "finalists trained with every seed" in text


def test_trained_search_recipe_trains_the_reduced_tss_network(tmp_path, cifar10_dir):
    """`--trainer trained-search` on nats-tss trains C=8, N=1 (the benchmark's base proxy,
    field for field, so its store entries are the CLI's); other spaces keep their network."""
    from layernas.search_spaces.nats_sss import NatsSss
    from layernas.search_spaces.nats_tss import NatsTss
    from layernas.trainers import train
    from layernas.trainers.evaluator import make_trainer_evaluator

    bench = load_benchmark("trained_search")
    settings = bench.settings(type("Args", (), {"quick": False})())
    assert bench.base_recipe(settings) == train.TRAINED_SEARCH
    assert {"C": settings["C"], "N": settings["N"]} == train.RECIPE_NETWORKS["trained-search"]

    ev = make_trainer_evaluator(NatsTss("cifar10"), cifar10_dir, "trained-search", devices="single",
                                compilation_cache=None, store=tmp_path / "store")
    assert ev.recipe == train.TRAINED_SEARCH and ev.model_kwargs == {"C": 8, "N": 1}
    ev = make_trainer_evaluator(NatsTss("cifar10"), cifar10_dir, "trained-search", devices="single",
                                compilation_cache=None, model_kwargs={"C": 16, "N": 5})
    assert ev.model_kwargs == {"C": 16, "N": 5}
    ev = make_trainer_evaluator(NatsSss("cifar10"), cifar10_dir, "trained-search", devices="single",
                                compilation_cache=None)
    assert ev.model_kwargs == {}


def test_simulated_proxy_is_the_line_plus_noise_fixed_per_architecture_and_training_seed():
    from layernas.evaluator import Trial
    from layernas.search_spaces.nats_tss import NatsTss
    from layernas.table_evaluator import seed_index

    sim = load_benchmark("proxy_noise_sim")
    space = NatsTss("cifar10")
    archs = [space.default_arch(), (0,) * 6, (1, 2, 3, 4, 0, 1)]
    table = pd.DataFrame({"arch_str": [space.arch_to_str(a) for a in archs], sim.REFERENCE: [90.0, 10.0, 60.0],
                          "cifar10_test_mean": [93.0, 10.0, 65.0]})
    line = lambda v: 15.0 + 0.15 * v  # noqa: E731
    mean, test = sim.table_maps(space, table, line)
    exact = sim.SimulatedProxy(mean, test, 0.0, noise_seed=0)
    for i, a in enumerate(archs):
        r = exact.evaluate(Trial(i, a, 1234))
        assert r.reward == pytest.approx(line(table[sim.REFERENCE][i])) and r.test == table.cifar10_test_mean[i]
    noisy, again, other = (sim.SimulatedProxy(mean, test, 1.0, noise_seed=s) for s in (0, 0, 1))
    # the training seed a query reads: one of three, from the trial seed
    seeds = {k: next(s for s in range(100) if seed_index(s, sim.SEEDS_PER_QUERY) == k) for k in range(3)}
    a = archs[0]
    rewards = [noisy.evaluate(Trial(0, a, seeds[k])).reward for k in range(3)]
    assert len(set(rewards)) == 3                                       # each training seed has its own noise
    assert [again.evaluate(Trial(5, a, seeds[k])).reward for k in range(3)] == rewards   # fixed per (arch, seed)
    assert other.evaluate(Trial(0, a, seeds[0])).reward != rewards[0]   # another simulation, other noise


def test_noise_sim_calibrates_from_the_committed_study():
    cal = load_benchmark("proxy_noise_sim").calibrate(REPO / "results" / "trained_search")
    assert cal["study_cells"] >= 60 and cal["rescore_cells"] >= 10
    assert 0 < cal["top_slope"] < cal["slope"]     # the proxy flattens among the best cells
    assert cal["seed_spread"] > 1.0                # seeds of one cell differ by points, not tenths


def test_noise_sim_compares_with_the_committed_answers():
    means = load_benchmark("proxy_noise_sim").measured_means(REPO / "results" / "trained_search")
    answers = pd.read_csv(REPO / "results" / "trained_search" / "answers.csv")
    assert set(means) == {"layernas", "rea", "random"}
    assert means["layernas"] == pytest.approx(answers[answers.algorithm == "layernas"].table_test_mean.mean())
