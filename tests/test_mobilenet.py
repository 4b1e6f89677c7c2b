"""MobileNetV2/V3 and MnasNet layerwise spaces: reference counts, build, forward, JSON, bounds."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layernas.target import Target
from layernas.search_spaces import layerwise
from layernas.search_spaces.mbconv import make_divisible
from layernas.search_spaces.mnasnet import mnasnet_a1
from layernas.search_spaces.mobilenet_v2 import SPACES as V2
from layernas.search_spaces.mobilenet_v3 import SPACES as V3
from layernas.space import SpaceError
from layernas.trainers.mbconv_model import count_params, init_variables, network_from_json
from layernas.trainers.models import build_model

ALL = {**V2, **V3}
CIFAR = [n for n in ALL if n.endswith("-cifar")]

# Reference numbers (224x224): MAdds (millions, within 1%), exact params where given. Sources: MobileNetV2
# (arXiv:1801.04381), MobileNetV3 (arXiv:1905.02244), MnasNet (arXiv:1807.11626), torchvision.models params.
REFERENCE = {
    "mobilenetv2": (300.8, 3_504_872),
    "mobilenetv2-1.4": (582.0, None),
    "mobilenetv3-large": (216.6, 5_483_032),
    "mobilenetv3-small": (56.5, 2_542_856),
}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_default_arch_is_the_published_model(name):
    space = ALL[name]()
    net = space.network_cost(space.default_arch())
    madds, params = REFERENCE[name]
    assert net.madds / 1e6 == pytest.approx(madds, rel=0.01)
    if params is not None:
        assert net.params == params
    c = space.cost(space.default_arch())
    assert c["madds"] == net.madds and c["params"] == net.params


def test_mbv2_140_and_mnasnet():
    assert mnasnet_a1().cost(mnasnet_a1().default_arch())["madds"] == pytest.approx(311.6e6, rel=0.01)
    assert mnasnet_a1().cost(mnasnet_a1().default_arch())["params"] == pytest.approx(3.89e6, rel=0.01)
    assert ALL["mobilenetv2-1.4"]().cost(ALL["mobilenetv2-1.4"]().default_arch())["params"] == pytest.approx(6.1e6, rel=0.01)


def test_make_divisible_matches_reference_rounding():
    assert [make_divisible(c * 1.4) for c in (16, 24, 32, 64, 96, 160, 320)] == [24, 32, 48, 88, 136, 224, 448]
    assert make_divisible(72 / 4) == 24  # SE of V3-Large block 2: never >10% below


@pytest.mark.parametrize("name", list(ALL) + ["mnasnet-a1"])
def test_random_archs_cost_agrees_with_per_layer_table(name):
    space = mnasnet_a1() if name == "mnasnet-a1" else ALL[name]()
    rng = np.random.default_rng(0)
    for _ in range(5):
        arch = space.random_arch(rng)
        net = space.network_cost(arch)
        c = space.cost(arch)
        assert c["madds"] == net.madds and c["params"] == net.params
        lo, hi = space.cost_bounds((), "madds")
        assert lo <= c["madds"] <= hi


@pytest.mark.parametrize("name", list(ALL))
def test_flax_param_count_equals_cost_model(name):
    """Shapes only (jax.eval_shape): the default arch at full resolution, every space."""
    space = ALL[name]()
    for arch in (space.default_arch(),):
        module = build_model(space, arch)
        res = space.spec.resolution
        shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, res, res, 3))))
        n = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(shapes["params"]))
        assert n == space.network_cost(arch).params
        out = jax.eval_shape(lambda v: module.apply(v, jnp.zeros((2, res, res, 3))), shapes)
        assert out.shape == (2, space.spec.num_classes)


# Default suite: two real forward passes per family; the rest under -m slow (about 4 s each).
FORWARD_CASES = [
    ("mobilenetv2-cifar", "random"),
    ("mobilenetv3-small-cifar", "default"),
    ("mobilenetv3-large-cifar", "random"),
] + [pytest.param(n, w, marks=pytest.mark.slow) for n in CIFAR for w in ("default", "random")
     if (n, w) not in {("mobilenetv2-cifar", "random"), ("mobilenetv3-small-cifar", "default"),
                       ("mobilenetv3-large-cifar", "random")}]


@pytest.mark.parametrize("name,which", FORWARD_CASES)
def test_cifar_forward_pass(name, which):
    space = ALL[name]()
    assert space.spec.resolution == 32 and space.spec.num_classes == 10
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    arch = space.default_arch() if which == "default" else space.random_arch(np.random.default_rng(2))
    for arch in (arch,):
        model = build_model(space, arch)
        variables = init_variables(model, x.shape)
        logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
        assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
        assert count_params(variables) == space.network_cost(arch).params


def test_train_mode_updates_batch_stats():
    space = ALL["mobilenetv3-small-cifar"]()
    model = build_model(space, space.default_arch())
    x = jnp.ones((2, 32, 32, 3))
    variables = init_variables(model, x.shape)
    logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    assert logits.shape == (2, 10)
    before = jax.tree_util.tree_leaves(variables["batch_stats"])
    after = jax.tree_util.tree_leaves(updates["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_cifar_strides_end_at_4x4():
    for name in CIFAR:
        space = ALL[name]()
        net = space.network_cost(space.default_arch())
        assert [l for l in net.layers if l.name == "head.conv"][0].in_shape[:2] == (4, 4)


def test_json_round_trip_to_flax():
    space = ALL["mobilenetv3-small-cifar"]()
    arch = space.random_arch(np.random.default_rng(3))
    space2 = layerwise.space_from_json(space.to_json())
    assert space2.num_options == space.num_options and space2.cost(arch) == space.cost(arch)
    text = space.arch_to_json(arch)
    assert json.loads(text)["arch"] == list(arch)
    module = network_from_json(text)
    assert module == build_model(space, arch)
    assert space.str_to_arch(space.arch_to_str(arch)) == arch


def test_bad_arch_is_a_one_line_space_error():
    space = ALL["mobilenetv2"]()
    with pytest.raises(SpaceError, match="option 9 at layer 1"):
        space.cost((1, 9) + space.default_arch()[2:])


def _reduced_space():
    spec = layerwise.BackboneSpec(
        name="reduced", resolution=32, num_classes=10, stem_channels=16, stem_stride=1,
        blocks=(
            layerwise.BlockSpec(16, 1, 1, expansion=(1.0,), depth_options=(1,), expansion_options=(1.0, 3.0), filter_options=(0.5, 1.0),
                                kernel_options=(3, 5)),
            layerwise.BlockSpec(24, 2, 2, expansion=(4.0, 3.0), expansion_options=(0.5, 1.0),
                                filter_options=(0.5, 1.0, 1.25), kernel_options=(3, 7), se_options=(False, True)),
            layerwise.BlockSpec(40, 2, 2, kernel=5, se=True, expansion_options=(0.5, 1.0), filter_options=(0.75, 1.0),
                                kernel_options=None, se_options=(False, True)),
        ),
        head_channels=64, fc_channels=(32,),
    )
    return layerwise.LayerwiseSpace(spec)


def test_cost_bounds_equal_brute_force_on_reduced_space():
    space = _reduced_space()
    assert space.size <= 20000
    rng = np.random.default_rng(4)
    for metric in space.cost_metrics:
        for k in (0, 1, 3, 5, 8, space.num_layers - 2):
            prefix = space.random_arch(rng)[:k]
            assert space.cost_bounds(prefix, metric) == pytest.approx(
                layerwise.brute_force_bounds(space, prefix, metric), rel=1e-12)


def test_targets_on_mobilenet_spaces():
    """Bucket on MAdds and cap params (plain counts, as the CLI's 300M parses): reachable/feasible/check."""
    space = ALL["mobilenetv2"]()
    default = space.default_arch()
    lo, hi = space.cost_bounds((), "madds")
    assert lo < 300.8e6 < hi
    target = Target("madds", max=300e6, caps={"params": 3.5e6})
    assert not target.feasible(space.cost(default))  # 300.8M > 300M
    assert target.reachable(space, default[:3])
    target.check(space)
    # a prefix whose cheapest completion is already over the cap is pruned
    dearest_prefix = tuple(len(l.options) - 1 for l in space.layers[:12])
    tight = Target("madds", max=space.cost_bounds(dearest_prefix, "madds")[0] - 1e6)
    assert not tight.reachable(space, dearest_prefix)
    assert tight.reachable(space, ())
    with pytest.raises(ValueError, match="impossible"):
        Target("madds", max=lo - 1e6).check(space)


def test_describe_has_per_layer_table():
    space = ALL["mobilenetv3-large"]()
    assert space.str_to_arch("default") == space.default_arch()
    text = space.describe(space.default_arch())
    assert "b5.2 " in text and "5,483,032" in text and "112x112x16" in text and "se240" in text
    assert "b5.2.se" in space.describe(space.default_arch(), detail=True)


def test_proxy_score_evaluator_is_deterministic_and_labelled():
    from layernas.dry_run import PROXY_LABEL, ProxyScoreEvaluator
    from layernas.evaluator import Trial

    space = ALL["mobilenetv3-small"]()
    ev = ProxyScoreEvaluator(space, noise_std=0.0)
    small = tuple(0 for _ in space.layers)
    big = tuple(len(l.options) - 1 for l in space.layers)
    r_small, r_big = ev.evaluate(Trial(0, small, 1)), ev.evaluate(Trial(1, big, 2))
    assert r_big.reward > r_small.reward  # monotone in MAdds without noise
    assert r_small.test is None and r_small.info["evaluator"] == PROXY_LABEL
    noisy = ProxyScoreEvaluator(space, noise_seed=3)
    assert noisy.evaluate(Trial(5, big, 9)).reward == noisy.evaluate(Trial(6, big, 10)).reward
    with pytest.raises(ValueError, match="latency"):
        ProxyScoreEvaluator(space, metric="latency")


def test_dry_run_layernas_search_respects_madds_target_and_params_cap():
    import layernas
    from layernas.dry_run import ProxyScoreEvaluator

    space = ALL["mobilenetv3-small"]()
    target = Target("madds", max=60e6, caps={"params": 2.6e6})
    result = layernas.search(space, ProxyScoreEvaluator(space), budget=120, target=target, seed=0)
    assert result.best is not None
    costs = space.cost(tuple(result.best["arch"]))
    assert costs["madds"] <= 60e6 and costs["params"] <= 2.6e6
    assert len(result.history) <= 120


def test_mobilenet_v3_width_scales_channels_as_torchvision_width_mult():
    from layernas.search_spaces.mobilenet_v3 import mobilenet_v3_small_cifar, mobilenet_v3_spec

    base = mobilenet_v3_spec("small", 32, 10, cifar=True)
    assert mobilenet_v3_spec("small", 32, 10, cifar=True, width=1.0) == base
    half = mobilenet_v3_spec("small", 32, 10, cifar=True, width=0.5)
    assert half.stem_channels == make_divisible(16 * 0.5) == 8
    assert [b.filters for b in half.blocks] == [make_divisible(b.filters * 0.5) for b in base.blocks] == [8, 16, 24, 24, 48]
    assert half.head_channels == 6 * half.blocks[-1].filters and half.fc_channels == (512,)
    # expanded channels: make_divisible(expanded * width), as ratios of each layer's (scaled) input
    second = half.blocks[1]
    inputs = [half.blocks[0].filters, second.filters]
    assert [round(r * c) for r, c in zip(second.expansion, inputs)] == [make_divisible(72 * 0.5), make_divisible(88 * 0.5)]
    madds = [mobilenet_v3_small_cifar(width=w).cost(mobilenet_v3_small_cifar(width=w).default_arch())["madds"]
             for w in (0.5, 0.75, 1.0, 1.25)]
    assert madds == sorted(madds) and len(set(madds)) == 4
    with pytest.raises(ValueError, match="width -1 is not a positive number"):
        mobilenet_v3_spec("small", width=-1)
