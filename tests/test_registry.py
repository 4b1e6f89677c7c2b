"""The registry: lazy references that resolve, and the evaluator each config asks for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from layernas import registry
from layernas.config import SearchConfig


def test_importing_the_registry_and_config_imports_no_space_or_trainer():
    code = ("import sys, layernas.cli, layernas.registry, layernas.config; "
            "bad = [m for m in sys.modules if m.startswith(('layernas.search_spaces', 'layernas.trainers', 'jax', "
            "'flax'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", list(registry.SPACES))
def test_every_reference_resolves(name):
    entry = registry.SPACES[name]
    assert callable(registry.resolve(entry.space))
    for kind, reference in entry.evaluators.items():
        assert callable(registry.resolve(reference)), (kind, reference)
    assert entry.default_metric in entry.units
    assert entry.default_evaluator is None or entry.default_evaluator in entry.evaluators


def test_unknown_reference_is_an_import_error():
    with pytest.raises(ImportError, match="no 'nope'"):
        registry.resolve("layernas.registry:nope")


def test_a_dry_run_and_a_table_config_build_their_evaluators():
    space = registry.make_space("mobilenetv3-small-cifar")
    ev = registry.build_evaluator(SearchConfig(space="mobilenetv3-small-cifar", evaluator="dry-run"), space)
    assert ev.metric == "madds"
    ev = registry.build_evaluator(SearchConfig(space="nats-tss", dataset="cifar100"))
    assert ev.dataset == "cifar100" and not hasattr(ev, "submit")


def test_a_ray_worker_with_two_devices_gets_an_evaluator_not_an_executor(tmp_path):
    (tmp_path / "train").mkdir()  # the images are read on first use only
    # --devices auto over two local devices: candidate-parallel executor locally, but one
    # evaluator training data-parallel inside a Ray worker (which trains one trial at a time)
    code = f"""
import json
from layernas import registry
from layernas.config import SearchConfig
out = {{}}
for backend in ("local", "ray"):
    config = SearchConfig(space="nats-sss", trainer="proxy", data={str(tmp_path)!r}, backend=backend,
                          out={str(tmp_path / "run")!r})
    ev = registry.build_evaluator(config)
    out[backend] = [type(ev).__name__, hasattr(ev, "submit"), getattr(ev, "placement", None) is not None]
print(json.dumps(out))
"""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["local"][1] is True
    assert got["ray"] == ["TrainerEvaluator", False, True]
