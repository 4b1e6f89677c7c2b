"""The registry: lazy references that resolve, and the evaluator each config asks for."""

from __future__ import annotations

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
