"""The CLI: a real search on the packaged table, resume by arguments, and one-line errors
with exit code 2 for every kind of bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from layernas.cli import main
from tests.conftest import shared_path


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_search_on_default_table_then_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["search", "--space", "nats-tss", "--dataset", "cifar10", "--flops-fraction", "0.5",
            "--budget-evals", "120", "--quiet"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    result = json.loads((runs[0] / "result.json").read_text())
    provenance = json.loads((runs[0] / "provenance.json").read_text())
    assert provenance["command"] == "layernas " + " ".join(args)
    assert provenance["args"]["budget_evals"] == 120 and provenance["machine"]["cpu_count"] >= 1
    max_flops = 220.11969
    assert result["best"]["costs"]["flops"] <= 0.5 * max_flops + 1e-9
    assert result["evaluations"] == 120
    # same arguments without --resume refuse to overwrite; with --resume and a larger
    # budget they continue in the same folder
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "--resume" in err
    code, out, err = run_cli(capsys, *args[:-3], "--budget-evals", "140", "--quiet", "--resume")
    assert code == 0, err
    assert json.loads((runs[0] / "result.json").read_text())["evaluations"] == 140


@pytest.mark.parametrize("argv, needle", [
    (["search", "--space", "nats-xyz"], "unknown space 'nats-xyz'"),
    (["search", "--space", "nats-tss", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["search", "--space", "nats-tss", "--flops-fraction", "0"], "--flops-fraction must be in (0, 1]"),
    (["search", "--space", "nats-tss", "--flops-fraction", "-0.5"], "--flops-fraction"),
    (["search", "--space", "nats-tss", "--budget-evals", "0"], "budget evaluations must be a positive integer"),
    (["search", "--space", "nats-tss", "--budget-evals", "-4"], "budget evaluations"),
    (["search", "--space", "nats-tss", "--budget-seconds", "-1"], "budget seconds"),
    (["search", "--space", "nats-tss", "--target-flops", "1"], "impossible"),
    (["search", "--space", "nats-tss", "--metric", "madds"], "unknown metric 'madds'"),
    (["search", "--space", "nats-tss", "--table", "/nonexistent/table.parquet"], "/nonexistent/table.parquet"),
    (["search", "--space", "nats-tss", "--budget-evals", "ten"], "invalid int value: 'ten'"),
    (["describe", "--space", "nats-tss", "--arch", "|conv~0|"], "|conv~0|"),
    (["frobnicate"], "invalid choice"),
    (["search", "--space", "mobilenetv2"], "--trainer proxy --data DIR"),
    (["search", "--space", "mobilenetv2", "--trainer", "proxy"], "--trainer needs --data"),
    (["search", "--space", "nats-tss", "--coordinator", "localhost"], "--coordinator 'localhost': expected HOST:PORT"),
    (["search", "--space", "nats-tss", "--coordinator", "h:99999"], "port in 1..65535"),
    (["search", "--space", "nats-tss", "--distributed", "--num-processes", "0"], "--num-processes 0"),
    (["search", "--space", "nats-tss", "--num-processes", "2", "--process-id", "2"], "--process-id 2: expected 0..1"),
    (["search", "--space", "nats-tss", "--process-id", "-1"], "--process-id -1"),
    (["search", "--space", "nats-tss", "--distributed", "--backend", "ray"], "choose one"),
    (["search", "--space", "nats-tss", "--max-in-flight", "0"], "--max-in-flight 0"),
    (["search", "--space", "nats-tss", "--epochs", "1"], "--epochs sets the training recipe; it needs --trainer"),
    (["search", "--space", "nats-sss", "--trainer", "proxy", "--data", ".", "--epochs", "0"], "--epochs 0"),
    (["search", "--space", "nats-sss", "--trainer", "proxy", "--data", ".", "--train-per-class", "5",
      "--valid-per-class", "5"], "--valid-per-class 5 must be below --train-per-class 5"),
    (["search", "--space", "nats-tss", "--lambda", "0.01"], "--lambda applies to --space codec-hyperprior"),
    (["search", "--space", "codec-hyperprior", "--lambda", "0"], "--lambda 0.0: expected a positive number"),
    (["search", "--space", "codec-hyperprior", "--lambda", "nan"], "--lambda nan"),
    (["search", "--space", "codec-hyperprior", "--width-scale", "1.5"], "--width-scale 1.5: expected a number in (0, 1]"),
    (["search", "--space", "codec-hyperprior", "--proxy-steps", "0"], "--proxy-steps 0"),
    (["search", "--space", "codec-hyperprior", "--epochs", "3"], "--epochs sets the image-classifier recipe"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv, *(["--quiet"] if argv[0] == "search" and len(argv) > 2 else []))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("layernas: error:"), err
    assert needle in lines[0]
    assert "Traceback" not in err


def test_corrupt_table_checkpoint_and_changed_settings(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("this,is\nnot,a table\n")
    code, _, err = run_cli(capsys, "search", "--space", "nats-tss", "--table", str(bad), "--quiet")
    assert code == 2 and str(bad) in err and len(err.strip().splitlines()) == 1
    out = tmp_path / "run"
    base = ["search", "--space", "nats-tss", "--budget-evals", "10", "--quiet", "--out", str(out)]
    assert run_cli(capsys, *base)[0] == 0
    code, _, err = run_cli(capsys, *base, "--resume", "--seed", "4")
    assert code == 2 and "settings differ" in err and "seed" in err
    (out / "checkpoint.json").write_text("garbage")
    code, _, err = run_cli(capsys, *base, "--resume")
    assert code == 2 and "cannot read checkpoint" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("space, target", [("codec-hyperprior", "16.5"), ("codec-sandwich", "5"),
                                           ("nats-sss", None)])
def test_dry_run_works_for_spaces_without_madds(space, target, tmp_path, capsys):
    argv = ["search", "--space", space, "--evaluator", "dry-run", "--budget-evals", "6", "--quiet", "--json",
            "--out", str(tmp_path / "run")]
    code, out, err = run_cli(capsys, *argv, *(["--target-decoder-gmacs", target] if target else []))
    assert code == 0, err
    best = json.loads(out)["best"]
    rows = json.loads((tmp_path / "run" / "checkpoint.json").read_text())["history"]
    assert len(rows) == 6 and all(r["info"]["evaluator"].startswith("proxy-score") for r in rows)
    if target:
        assert best["costs"]["decoder_gmacs"] <= float(target)


def test_describe_and_spaces(capsys):
    code, out, _ = run_cli(capsys, "describe", "--space", "nats-tss")
    assert code == 0 and "flops" in out and "nor_conv_3x3" in out
    code, out, _ = run_cli(capsys, "spaces")
    assert code == 0 and "nats-tss" in out and "nats-sss" in out


def test_console_script_is_installed(tmp_path):
    exe = shutil.which("layernas") or os.path.join(os.path.dirname(sys.executable), "layernas")
    proc = subprocess.run([exe, "search", "--space", "nope"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "layernas: error: unknown space 'nope'; expected one of " + \
        ", ".join(__import__("layernas.registry", fromlist=["SPACES"]).SPACES)


def test_mobilenet_dry_run_search_respects_madds_and_params(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "search", "--space", "mobilenetv3-small", "--target-madds", "60M",
                             "--cap", "params=2.6M", "--evaluator", "dry-run", "--budget-evals", "30",
                             "--quiet", "--out", "r", "--json")
    assert code == 0, err
    best = json.loads(out)["best"]
    assert best["costs"]["madds"] <= 60e6 and best["costs"]["params"] <= 2.6e6


# ------------------------------------------------------------------ --trainer end to end
# Real CIFAR-10 from ../shared, a tiny recipe: 12 images per class (4 held out for
# validation: 40 validation images, so every accuracy is a multiple of 2.5 %), 1 epoch.
TINY_RECIPE = ["--trainer", "proxy", "--epochs", "1", "--train-per-class", "12", "--valid-per-class", "4",
               "--batch-size", "32"]


def test_trainer_search_on_cifar10_interrupted_then_resumed_without_retraining(
        tmp_path, capsys, monkeypatch, cifar10_dir):
    from layernas.trainers import evaluator as evaluator_lib
    from layernas.trainers import train as train_lib

    out = tmp_path / "run"
    args = ["search", "--space", "nats-sss", "--data", str(cifar10_dir), *TINY_RECIPE, "--budget-evals", "2",
            "--quiet", "--out", str(out)]
    record = evaluator_lib.TrainerEvaluator._record

    def record_then_interrupt(self, trial, result, variables):
        record(self, trial, result, variables)
        if trial.trial_id == 1:  # the child is recorded, the run's checkpoint not yet
            raise KeyboardInterrupt

    monkeypatch.setattr(evaluator_lib.TrainerEvaluator, "_record", record_then_interrupt)
    code, _, err = run_cli(capsys, *args)
    assert code == 130 and "--resume" in err
    checkpoint = json.loads((out / "checkpoint.json").read_text())
    assert len(checkpoint["history"]) == 1 and [t["trial_id"] for t in checkpoint["in_flight"]] == [1]
    children = sorted((out / "trainer" / "children").iterdir())
    assert len(children) == 2 and all((c / "variables").is_dir() and (c / "result.json").exists()
                                      for c in children)
    recorded = {json.loads((c / "result.json").read_text())["trial_id"]: json.loads((c / "result.json").read_text())
                for c in children}

    # resume: trial 1 was in flight; its orbax-recorded child is reused, nothing trains
    monkeypatch.undo()

    def no_training(*a, **k):
        raise AssertionError("a finished child was trained again")

    monkeypatch.setattr(train_lib, "train_model", no_training)
    code, out_text, err = run_cli(capsys, *args, "--resume")
    assert code == 0, err
    rows = json.loads((out / "checkpoint.json").read_text())["history"]
    assert [r["trial_id"] for r in rows] == [0, 1] and all(r["status"] == "ok" for r in rows)
    assert rows[1]["info"]["cached"] is True and rows[1]["reward"] == recorded[1]["reward"]
    for r in rows:  # trained rewards: validation accuracy (%) on the 40 held-out images
        assert r["info"]["recipe"] == "proxy" and r["info"]["epochs_done"] == 1 and r["info"]["steps"] == 2
        assert 0 <= r["reward"] <= 100 and (r["reward"] * 40 / 100) == round(r["reward"] * 40 / 100)
    history = (out / "history.csv").read_text().splitlines()
    # the default preset's warm start: the first model is seed 0's first random draw inside the budget
    assert len(history) == 3 and "56:48:40:24:24" in history[1]
    result = json.loads((out / "result.json").read_text())
    assert result["settings"]["recipe_overrides"] == {"epochs": 1, "batch_size": 32, "train_per_class": 12,
                                                      "valid_per_class": 4}
    # a resume with another recipe is a different run
    code, _, err = run_cli(capsys, *[a if a != "32" else "16" for a in args], "--resume")
    assert code == 2 and "settings differ" in err and "recipe_overrides" in err


@pytest.mark.slow
def test_mobilenet_cifar_trainer_search(tmp_path, capsys, cifar10_dir):
    # 17 s with a cold compilation cache, 11 s warm, on the 2-core CPU VM when idle (XLA
    # compile dominates); slow because other jobs on the machine can make it two or three
    # times longer. The nats-sss test above covers the CLI trainer path in the default suite.
    code, out, err = run_cli(capsys, "search", "--space", "mobilenetv2-cifar", "--target-madds", "100M",
                             "--data", str(cifar10_dir), *TINY_RECIPE, "--budget-evals", "1", "--quiet",
                             "--out", str(tmp_path / "run"), "--json")
    assert code == 0, err
    best = json.loads(out)["best"]
    assert best is not None and best["costs"]["madds"] <= 100e6
    assert 0 <= best["reward"] <= 100 and best["test"] is None
    assert len(list((tmp_path / "run" / "trainer" / "children").glob("*/variables"))) == 1


def test_codec_search_on_real_photos_respects_the_gmacs_budget_and_resumes(tmp_path, capsys):
    # LayerNAS with the codec trainer end to end: tiny proxies (widths / 16, 3 steps) on crops
    # of ../shared/data/photos; the reward is -RD loss with hard rounding on held-out photos.
    photos = shared_path("data", "photos")
    out = tmp_path / "run"
    args = ["search", "--space", "codec-hyperprior", "--data", str(photos), "--target-decoder-gmacs", "16.5",
            "--lambda", "0.0067",
            "--width-scale", "0.0625", "--proxy-steps", "3", "--budget-evals", "3", "--quiet", "--out", str(out)]
    code, _, err = run_cli(capsys, *args, "--json")
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["settings"]["codec"] == {"lmbda": 0.0067, "width_scale": 0.0625, "proxy_steps": 3}
    rows = json.loads((out / "checkpoint.json").read_text())["history"]
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert r["info"]["lmbda"] == 0.0067 and r["info"]["steps"] == 3 and r["reward"] < 0
        assert r["reward"] == pytest.approx(-(0.0067 * 255 ** 2 * r["info"]["val_mse"] + r["info"]["val_bpp"]),
                                            rel=1e-4)
    assert result["best"]["costs"]["decoder_gmacs"] <= 16.5
    # a resume with another lambda is another search
    code, _, err = run_cli(capsys, *[a if a != "0.0067" else "0.013" for a in args], "--resume")
    assert code == 2 and "settings differ" in err and "codec" in err
