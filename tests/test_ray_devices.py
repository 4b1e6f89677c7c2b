"""A Ray worker that holds several devices trains each child data-parallel over all of them.

``layernas search --backend ray --devices auto`` on a machine with two local devices (two
CPU devices here, ``XLA_FLAGS=--xla_force_host_platform_device_count=2``, in a subprocess
so this process's JAX keeps one): the trainer factory builds a candidate-parallel
executor there, and the worker must turn it into an evaluator that uses both devices
instead of failing with "has no evaluate(trial)".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install -e .[ray])")

TINY_RECIPE = ["--trainer", "proxy", "--epochs", "1", "--train-per-class", "12", "--valid-per-class", "4"]


def test_ray_worker_with_two_devices_and_devices_auto(tmp_path, cifar10_dir):
    out = tmp_path / "run"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="disabled", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "layernas.cli", "search", "--space", "nats-sss", "--data", str(cifar10_dir),
           *TINY_RECIPE, "--budget-evals", "2", "--backend", "ray", "--address", "local", "--max-concurrent", "1",
           "--devices", "auto", "--quiet", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((out / "checkpoint.json").read_text())["history"]
    assert [h["status"] for h in history] == ["ok", "ok"], [h["error"] for h in history]
    assert all(h["info"]["devices"] == 2 for h in history), [h["info"] for h in history]
    assert all(0 <= h["reward"] <= 100 for h in history)
