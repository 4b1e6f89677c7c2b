"""A table search and ``describe`` need neither JAX nor flax.

Each command runs in a subprocess whose ``PYTHONPATH`` starts with a folder holding a
``jax`` and a ``flax`` package that raise ImportError on import, so any import of either,
direct or through a dependency, fails the command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from layernas import registry
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def blocked(tmp_path_factory):
    root = tmp_path_factory.mktemp("blocked")
    for name in ("jax", "flax"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    return root


def run_blocked(blocked, tmp_path, *argv):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "layernas.cli", *argv], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)


def test_the_block_works(blocked, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(blocked)}
    proc = subprocess.run([sys.executable, "-c", "import jax"], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "jax is blocked" in proc.stderr


def test_table_search_without_jax(blocked, tmp_path):
    table = shared_path("data", "nats_tss", "nats_tss_200ep.csv")
    out = tmp_path / "run"
    proc = run_blocked(blocked, tmp_path, "search", "--space", "nats-tss", "--dataset", "cifar10",
                       "--flops-fraction", "0.5", "--table", str(table), "--budget-evals", "100", "--quiet",
                       "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["evaluations"] == 100 and result["best"]["costs"]["flops"] <= 0.5 * 220.11969
    assert "backend" not in json.loads((out / "provenance.json").read_text())["machine"]


@pytest.mark.parametrize("space", list(registry.SPACES))
def test_describe_without_jax(blocked, tmp_path, space):
    proc = run_blocked(blocked, tmp_path, "describe", "--space", space)
    assert proc.returncode == 0, proc.stderr
    assert "costs:" in proc.stdout and "units:" in proc.stdout


def test_spaces_and_help_without_jax(blocked, tmp_path):
    for argv in (["spaces"], ["--help"], ["search", "--help"]):
        proc = run_blocked(blocked, tmp_path, *argv)
        assert proc.returncode == 0, proc.stderr
