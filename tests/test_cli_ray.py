"""``layernas search --backend ray`` on a real local Ray head: the workers build their
evaluator from the pickled search config, and the search equals a local one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("ray")

from tests import test_ray_backend  # noqa: E402

cluster = test_ray_backend.cluster  # the module-scoped Ray head fixture


def run(argv, cwd):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    return subprocess.run([sys.executable, "-m", "layernas.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_ray_search_equals_a_local_search(cluster, tmp_path):
    common = ["search", "--space", "nats-tss", "--budget-evals", "10", "--seed", "2",
              "--quiet", "--json"]
    ray_run = run([*common, "--backend", "ray", "--address", cluster, "--max-concurrent", "2",
                   "--out", str(tmp_path / "ray")], tmp_path)
    assert ray_run.returncode == 0, ray_run.stderr
    local = run([*common, "--max-in-flight", "2", "--out", str(tmp_path / "local")], tmp_path)
    assert local.returncode == 0, local.stderr
    got, want = json.loads(ray_run.stdout), json.loads(local.stdout)
    assert got["evaluations"] == want["evaluations"] == 10
    rows = [json.loads((tmp_path / name / "checkpoint.json").read_text())["history"] for name in ("ray", "local")]
    assert [(r["arch_str"], r["reward"]) for r in rows[0]] == [(r["arch_str"], r["reward"]) for r in rows[1]]
    assert got["best"]["arch_str"] == want["best"]["arch_str"]
