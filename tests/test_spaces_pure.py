"""Search spaces are pure data plus cost; the trainers build their models by space type.

* every module of ``layernas.search_spaces`` (and the pure latency table) imports, in a
  fresh interpreter, without loading jax or flax;
* ``layernas.trainers.models.build_model`` builds the default architecture of every
  registered space (shapes only), chosen by the space's class, never by its name.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import layernas.search_spaces
from layernas import registry
from layernas.search_spaces.layerwise import LayerwiseSpace
from layernas.search_spaces.nats_tss import NatsTss
from layernas.space import SearchSpace
from layernas.trainers import models

SPACE_MODULES = sorted(f"layernas.search_spaces.{m.name}" for m in pkgutil.iter_modules(layernas.search_spaces.__path__))
PROBE = "import sys, {module}; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax'))))"


def loaded_accelerator_modules(statement: str) -> list[str]:
    """The jax/flax modules in ``sys.modules`` after running ``statement`` in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", "import json\n" + statement], check=True, capture_output=True,
                         text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_space_module_is_listed():
    names = {m.rsplit(".", 1)[1] for m in SPACE_MODULES}
    assert {"nats_tss", "nats_sss", "layerwise", "mbconv", "mobilenet_v2", "mobilenet_v3", "mnasnet", "codec",
            "sandwich"} <= names


@pytest.mark.parametrize("module", SPACE_MODULES + ["layernas.latency"])
def test_space_module_imports_without_jax_or_flax(module):
    assert loaded_accelerator_modules(PROBE.format(module=module)) == []


def test_every_registered_space_costs_and_reads_a_latency_table_without_jax(tmp_path):
    """Build every CLI space, cost its default arch, and cap a layerwise space's latency from a
    recorded table: all in one interpreter that never loads jax or flax."""
    lut = tmp_path / "lut.json"
    script = textwrap.dedent(f"""
        from layernas.latency import LatencyTable, table_key
        from layernas.registry import SPACES, make_space
        from layernas.search_spaces.mobilenet_v3 import mobilenet_v3_small_cifar
        for name in SPACES:
            space = make_space(name)
            assert space.cost(space.default_arch()), name
        space = mobilenet_v3_small_cifar()
        units = space.latency_units(space.default_arch())
        key = table_key("recorded:device", 1)
        table = LatencyTable(key, {str(lut)!r})
        table.entries = {{u.key: 0.5 for u in space.all_units()}}
        table.save()
        timed = space.with_latency(LatencyTable(key, {str(lut)!r}))
        assert timed.cost(timed.default_arch())["latency"] == 0.5 * len(units)
        assert timed.cost_bounds((), "latency")[0] > 0
        import sys
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax'))))
    """)
    assert loaded_accelerator_modules(script) == []


def test_a_latency_table_without_a_timer_names_the_missing_unit():
    from layernas.latency import LatencyTable, TimedUnit

    unit = TimedUnit.stem(32, 3, 16, 1, "relu6")
    with pytest.raises(KeyError, match="not in the LUT"):
        LatencyTable("cpu:cpu|bs=1").latency_ms(unit)
    with pytest.raises(KeyError, match="cannot time units"):
        LatencyTable("cpu:cpu|bs=1", measure_missing=True).latency_ms(unit)


def tiny_input(model) -> jnp.ndarray:
    """A small input for a built model: codecs need sides that are multiples of 64."""
    side = 64 if type(model).__name__ == "HyperpriorCodec" else 32
    return jnp.zeros((1, side, side, 3), jnp.float32)


def test_build_model_builds_every_registered_space():
    spaces = {name: registry.make_space(name) for name in registry.SPACES}
    built = set()
    for name, space in spaces.items():
        builder = models.model_builder(space)
        assert builder is not None, f"no model builder registered for space {name!r} ({type(space).__name__})"
        model = models.build_model(space, space.default_arch())
        x = tiny_input(model)
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
        assert jax.tree_util.tree_leaves(variables["params"]), name
        built.add(type(space))
    assert built <= set(models.registered_space_classes())


def n_params(model, x) -> int:
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(shapes["params"]))


def test_dispatch_is_by_type_not_by_name():
    tss = NatsTss("cifar10")
    arch = tss.default_arch()
    x = jnp.zeros((1, 32, 32, 3))
    expected = n_params(models.build_model(tss, arch, num_classes=10), x)
    assert expected / 1e6 == pytest.approx(tss.cost(arch)["params"], abs=1e-6)
    # a renamed NATS space is still a NATS space
    tss.name = "renamed"
    assert n_params(models.build_model(tss, arch, num_classes=10), x) == expected

    # a subclass inherits its base's builder
    class WiderTss(NatsTss):
        pass

    assert n_params(models.build_model(WiderTss("cifar10"), arch, num_classes=10), x) == expected

    # a space that only borrows a NATS name is not built as one
    class Impostor(SearchSpace):
        name = "nats-tss/cifar10"
        layers = tss.layers

    with pytest.raises(TypeError, match="no model builder for space 'nats-tss/cifar10'"):
        models.build_model(Impostor(), arch, num_classes=10)


def test_a_space_with_its_own_build_is_built_by_it():
    class Own:
        name = "own"

        def build(self, arch, num_classes=10):
            return ("own model", tuple(arch), num_classes)

    assert models.build_model(Own(), (1,), num_classes=3) == ("own model", (1,), 3)


def test_layerwise_model_refuses_more_classes_than_its_classifier():
    space = registry.make_space("mobilenetv3-small-cifar")
    assert isinstance(space, LayerwiseSpace) and models.model_builder(space).__name__ == "build_layerwise"
    assert models.build_model(space, space.default_arch(), num_classes=4) == models.build_model(
        space, space.default_arch())
    with pytest.raises(ValueError, match="the data has 100 classes but space 'mobilenetv3-small-cifar' classifies 10"):
        models.build_model(space, space.default_arch(), num_classes=100)


def test_register_model_needs_a_class():
    with pytest.raises(TypeError, match="needs a space class"):
        models.register_model("nats-tss")


def test_trainer_evaluator_has_no_name_or_typeerror_dispatch():
    """The trainer evaluator builds through build_model: no ``name.startswith`` and no
    ``except TypeError`` fallback."""
    root = Path(models.__file__).parent
    for path in (root / "evaluator.py", root / "models.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                assert "TypeError" not in ast.unparse(node.type), f"{path.name}:{node.lineno}"
            if isinstance(node, ast.Attribute) and node.attr == "startswith":
                pytest.fail(f"{path.name}:{node.lineno} dispatches on a name prefix")


def test_layer_options_reach_the_nats_builder():
    """The size-space builder reads the widths the architecture picks."""
    from layernas.search_spaces.nats_sss import NatsSss

    sss = NatsSss("cifar10")
    narrow = tuple(0 for _ in sss.layers)
    wide = tuple(len(layer.options) - 1 for layer in sss.layers)
    x = jnp.zeros((1, 32, 32, 3))
    assert n_params(models.build_model(sss, narrow), x) < n_params(models.build_model(sss, wide), x)
