"""A property test of ``layernas search``: whatever the flags and values, the CLI exits 0 or
2, never prints a traceback, and on error prints exactly one line.

Runs in-process (``layernas.cli.main``) with tiny budgets and fast evaluators (table
lookups, dry runs); a hypothesis example that would start real training, Ray or a
multi-host join is steered to the cases that fail fast. The default profile runs 60
examples (about 30 s on two cores); ``pytest -m slow`` runs 600.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layernas.cli import main
from tests.conftest import shared_dir

NUMBERS = ["0", "1", "3", "-1", "0.5", "2.5", "1e400", "nan", "inf", "-inf", "", "abc", "300M", "1e9",
           "1000000000", " 7", "0x10", "1.0", "100"]
CHOICES = {
    "--dataset": ["cifar10", "cifar100", "ImageNet16-120", "imagenet", "mnist", ""],
    "--searcher": ["layernas", "random", "rea", "reinforce", "grid", ""],
    "--metric": ["flops", "params", "madds", "latency", "", "decoder_gmacs"],
    "--evaluator": ["auto", "dry-run", "oracle"],
    "--trainer": ["proxy", "nats-12", "huge", ""],
    "--devices": ["auto", "data", "single", "gpu"],
    "--backend": ["local", "ray", "spark"],
    "--address": ["127.0.0.1:1", "nowhere", ""],
    "--cap": ["params=1", "params=0", "flops=50", "madds=3", "=3", "params", "params=1e400", "params=abc"],
}
NUMERIC = ["--flops-fraction", "--target-max", "--target-min", "--target-flops", "--target-params",
           "--target-madds", "--target-latency", "--target-decoder-gmacs", "--budget-seconds", "--num-buckets",
           "--per-bucket", "--seed", "--max-in-flight", "--epochs", "--batch-size", "--train-per-class",
           "--valid-per-class", "--lambda", "--width-scale", "--proxy-steps", "--max-concurrent",
           "--gpus-per-trial", "--cpus-per-trial", "--max-retries"]
SWITCHES = ["--resume", "--json"]
SPACES = ["nats-tss", "nats-sss", "mobilenetv3-small-cifar", "codec-hyperprior", "codec-sandwich", "nope"]


def table_values(tmp: str) -> list[str]:
    bad = os.path.join(tmp, "bad.csv")
    with open(bad, "w") as f:
        f.write("not,a\ntable,at all\n")
    real = shared_dir() / "data" / "nats_tss" / "nats_tss_200ep.csv"
    return [bad, "", "/dev/null", os.path.join(tmp, "missing.parquet"), os.path.join(tmp, "x.txt")] + (
        [str(real)] if real.exists() else [])


@st.composite
def argvs(draw):
    """(argv without --out/--table paths filled in, the chosen table index, the out choice)."""
    space = draw(st.sampled_from(SPACES))
    argv = ["search", "--space", space, "--quiet"]
    flags = draw(st.lists(st.sampled_from(sorted(CHOICES) + NUMERIC + SWITCHES + ["--table", "--data", "--out"]),
                          max_size=5, unique=True))
    for name in flags:
        if name in CHOICES:
            argv += [name, draw(st.sampled_from(CHOICES[name]))]
        elif name in NUMERIC:
            argv += [name, draw(st.sampled_from(NUMBERS))]
        elif name in SWITCHES:
            argv.append(name)
        else:
            argv += [name, f"<{name}:{draw(st.integers(0, 6))}>"]
    argv += ["--budget-evals", draw(st.sampled_from(["1", "3", "5", "0", "-2", "x"]))]
    return argv


def concrete(argv: list[str], tmp: str) -> list[str]:
    """Fill in the paths and steer away from slow or global work (training, Ray, jax.distributed)."""
    tables = table_values(tmp)
    outs = ["", os.path.join(tmp, "run2"), os.path.join(tmp, "bad.csv"), os.path.join(tmp, "run")]
    data = ["", tmp, os.path.join(tmp, "nodata")]
    out = []
    for a in argv:
        if a.startswith("<--table:"):
            a = tables[int(a[9:-1]) % len(tables)]
        elif a.startswith("<--out:"):
            a = outs[int(a[7:-1]) % len(outs)]
        elif a.startswith("<--data:"):
            a = data[int(a[8:-1]) % len(data)]
        out.append(a)
    if "--out" not in out:
        out += ["--out", os.path.join(tmp, "run")]
    space = out[2]
    if space.startswith("codec") or space.startswith("mobilenet"):
        out += ["--evaluator", "dry-run"]  # codec proxies and MobileNets would train for minutes
    if "--backend" in out and out[out.index("--backend") + 1] == "ray":
        out += ["--address", "127.0.0.1:1"]  # never start or join a real Ray cluster
    if "--trainer" in out:
        out += ["--data", os.path.join(tmp, "nodata")]  # fails before any training
    return out


def check(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        full = concrete(argv, tmp)
        out, err = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(full)
        finally:
            os.chdir(cwd)
        stderr = err.getvalue()
        assert code in (0, 2), (full, code, stderr)
        assert "Traceback" not in stderr, (full, stderr)
        if code == 2:
            lines = stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("layernas: error: "), (full, stderr)
        else:
            assert stderr == "", (full, stderr)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(argvs())
def test_cli_search_fuzz(argv):
    check(argv)


@pytest.mark.slow
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argvs())
def test_cli_search_fuzz_long(argv):
    check(argv)
