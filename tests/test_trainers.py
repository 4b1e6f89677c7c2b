"""Models, training and the TrainerEvaluator (tiny shapes)."""

from __future__ import annotations

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layernas.evaluator import Trial
from layernas.trainers import data, evaluator as ev_lib, nats_models, train

TSS_ARCH0 = ("avg_pool_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_1x1", "skip_connect", "skip_connect")
TINY = train.Recipe(name="tiny", epochs=3, batch_size=32, learning_rate=0.05, weight_decay=0.0,
                    nesterov=False, check_every=4, eval_batch_size=64)


class TinyNet(nn.Module):
    """Conv-BN-ReLU-GAP-Dense: compiles in a fraction of a NATS net's time."""

    width: int = 4
    num_classes: int = 4

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(self.width, (3, 3), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        return nn.Dense(self.num_classes)(jnp.mean(x, (1, 2)))


def n_params(model, size=32):
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


# Public NATS-Bench numbers (get_cost_info of the official benchmark files, github.com/D-X-Y/NATS-Bench;
# arch 0 of each fixture): parameter counts in
# millions, which only match if the skeleton (stem, cells, reductions, head) is exact.
@pytest.mark.parametrize("model, expected_m, tol", [
    (nats_models.build_tss(TSS_ARCH0, 10), 0.129306, 1e-6),
    (nats_models.build_sss((8, 8, 8, 8, 8), 10), 0.011714, 1e-6),
    (nats_models.build_sss((8, 8, 40, 32, 40), 10), 0.1448, 1e-4),
], ids=["tss-arch0", "sss-8:8:8:8:8", "sss-8:8:40:32:40"])
def test_param_counts_match_nats_fixture(model, expected_m, tol):
    assert abs(n_params(model) / 1e6 - expected_m) <= tol


def test_tss_builder_shapes():
    model = nats_models.build_tss(("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none", "nor_conv_3x3"),
                                  num_classes=7, C=4, N=2)
    x = jnp.zeros((2, 16, 16, 3))
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    assert jax.eval_shape(lambda v: model.apply(v, x, train=False), v).shape == (2, 7)
    cells = [k for k in v["params"] if k.endswith("_cell")]
    assert len(cells) == 6 and v["params"]["classifier"]["kernel"].shape == (16, 7)


def test_sss_builder_shapes():
    model = nats_models.build_sss((8, 16, 8, 24, 16), num_classes=7)
    x = jnp.zeros((2, 8, 8, 3))
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    assert jax.eval_shape(lambda v: model.apply(v, x, train=False), v).shape == (2, 7)
    p = v["params"]
    assert p["stem_conv"]["kernel"].shape == (3, 3, 3, 8)
    assert p["layer_1_reduce"]["Conv_0"]["kernel"].shape == (1, 1, 8, 16)  # shortcut 1x1 conv
    assert p["layer_4_cell"]["edge_1_0"]["ReLUConvBN_0"]["Conv_0"]["kernel"].shape == (3, 3, 24, 16)
    # skip_connect 3<-0 changes width 24 -> 16: a 1x1 conv + BN, as NATS's FactorizedReduce at stride 1
    assert p["layer_4_cell"]["edge_3_0"]["Conv_0"]["kernel"].shape == (1, 1, 24, 16)
    assert "edge_3_0" not in p["layer_0_cell"]  # same width: identity, no parameters
    assert p["classifier"]["kernel"].shape == (16, 7)


def test_tss_cell_wiring():
    """Node 3 is the output: 'none' on its three inputs gives zeros whatever else the cell
    has; a lone skip 3<-0 passes the input through."""
    x = jax.random.normal(jax.random.key(1), (1, 4, 4, 4))
    cut = nats_models.Cell(("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "none", "none", "none"), 4)
    v = train.init_variables(cut, x.shape, seed=0)
    assert float(jnp.abs(cut.apply(v, x, train=False)).max()) == 0.0
    skip = nats_models.Cell(("nor_conv_3x3", "none", "none", "skip_connect", "none", "none"), 4)
    v = train.init_variables(skip, x.shape, seed=0)
    np.testing.assert_array_equal(skip.apply(v, x, train=False), x)
    pool = nats_models.Cell(("none", "none", "none", "avg_pool_3x3", "none", "none"), 4)
    y = pool.apply({}, jnp.ones((1, 4, 4, 4)), train=False)
    np.testing.assert_allclose(y, 1.0)  # padding is not counted in the average


@pytest.mark.parametrize("ops, same_as", [
    # node 2 is zero (all its inputs are "none"): the pool 3<-2 out of it adds nothing
    (("none", "none", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3"),
     ("none", "none", "none", "nor_conv_3x3", "nor_conv_1x1", "none")),
    # node 1 is zero: so are the skip 2<-1 and the pools out of it, and node 2 is then zero too
    (("none", "none", "skip_connect", "nor_conv_3x3", "avg_pool_3x3", "avg_pool_3x3"),
     ("none", "none", "none", "nor_conv_3x3", "none", "none")),
])
def test_edges_out_of_a_zero_node_are_left_out_but_not_their_effect(ops, same_as):
    """A skip or pool out of a node that is zero whatever the input is left out of the
    program (XLA would constant-fold a batch-sized pool of zeros, for minutes) with the
    same outputs and parameters as the cell written with "none" there; a conv out of a
    zero node is still computed (its BatchNorm bias is not zero)."""
    x = jax.random.normal(jax.random.key(2), (3, 8, 8, 4))
    model, plain = nats_models.Cell(ops, 4), nats_models.Cell(same_as, 4)
    v = train.init_variables(model, x.shape, seed=0)
    assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(train.init_variables(plain, x.shape, 0))
    for mode in (False, True):
        got = model.apply(v, x, train=mode, mutable=["batch_stats"] if mode else False)
        want = plain.apply(v, x, train=mode, mutable=["batch_stats"] if mode else False)
        np.testing.assert_array_equal(got[0] if mode else got, want[0] if mode else want)
    hlo = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(v, x).as_text()
    assert "reduce_window" not in hlo
    conv_from_zero = nats_models.Cell(("none", "none", "nor_conv_3x3", "none", "none", "skip_connect"), 4)
    w = train.init_variables(conv_from_zero, x.shape, seed=0)
    assert "edge_2_1" in w["params"]  # the conv out of zero node 1 keeps its parameters
    w = jax.tree_util.tree_map(lambda a: a + 0.5, w)
    assert float(jnp.abs(conv_from_zero.apply(w, x, train=False)).max()) > 0.0


@pytest.mark.parametrize("call, msg", [
    (lambda: nats_models.build_tss(["nor_conv_3x3"] * 5, 10), "expected 6"),
    (lambda: nats_models.build_tss(["conv_5x5"] * 6, 10), "unknown cell op"),
    (lambda: nats_models.build_sss((8, 8, 8, 8), 10), "5 positive widths"),
    (lambda: nats_models.build_sss((8, 8, 0, 8, 8), 10), "5 positive widths"),
    (lambda: train.Recipe(optimizer="lamb"), "optimizer"),
    (lambda: train.Recipe(schedule="step"), "schedule"),
])
def test_bad_input_raises_one_line(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()


def test_numpy_init_is_seeded_and_fast_path():
    model = nats_models.build_sss((4, 4, 4, 4, 4), 5)
    a = train.init_variables(model, (1, 8, 8, 3), seed=3)
    b = train.init_variables(model, (1, 8, 8, 3), seed=3)
    c = train.init_variables(model, (1, 8, 8, 3), seed=4)
    same = jax.tree.map(np.array_equal, a, b)
    assert all(jax.tree.leaves(same))
    k_a = a["params"]["stem_conv"]["kernel"]
    assert not np.array_equal(k_a, c["params"]["stem_conv"]["kernel"])
    # He-normal over fan-out: std ~ sqrt(2 / (3*3*4))
    assert 0.5 < k_a.std() / math.sqrt(2 / 36) < 1.5


def _learn(tr, va, model, recipe, seed=0):
    res = train.train_model(model, tr, va, recipe, seed)
    assert res.ok, res.error
    first, last = res.history[0]["train_loss"], res.history[-1]["train_loss"]
    assert last < first, res.history
    assert 0.0 <= res.valid_accuracy <= 100.0 and math.isfinite(res.valid_loss)
    return res


def test_train_reduces_loss_on_real_cifar10(cifar10_dir):
    ds = data.load_image_folder(cifar10_dir, "train", per_class=32)  # 320 real images
    tr, va = data.split_validation(ds, per_class=6, seed=0)
    model = nats_models.build_sss((8, 8, 8, 8, 8), ds.num_classes)
    res = _learn(tr, va, model, TINY.replace(epochs=3, learning_rate=0.1))
    assert res.steps == 3 * (len(tr) // 32)
    # BatchNorm running statistics were updated by training
    assert float(np.abs(res.variables["batch_stats"]["stem_bn"]["mean"]).max()) > 0


@pytest.mark.slow
def test_tss_trains_on_synthetic():
    ds = data.synthetic_dataset(num_classes=4, per_class=40, size=16)
    tr, va = data.split_validation(ds, per_class=8, seed=0)
    model = nats_models.build_tss(("nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "none", "nor_conv_3x3"),
                                  4, C=4, N=1)
    res = _learn(tr, va, model, TINY)
    assert res.valid_accuracy > 40.0


def test_train_reduces_loss_on_synthetic_and_step_is_cached():
    ds = data.synthetic_dataset(num_classes=4, per_class=40, size=16)
    tr, va = data.split_validation(ds, per_class=8, seed=0)
    model, recipe = TinyNet(8, 4), TINY.replace(epochs=4, learning_rate=0.2)
    res = _learn(tr, va, model, recipe)
    assert res.valid_accuracy > 40.0  # chance is 25%; colours are easy
    steps_per_epoch = len(tr) // recipe.batch_size
    n_cached = len(train._STEP_CACHE)
    a = train.compiled_steps(model, recipe, 4, recipe.epochs * steps_per_epoch, steps_per_epoch)
    b = train.compiled_steps(model, recipe, 4, recipe.epochs * steps_per_epoch, steps_per_epoch)
    assert a is b and len(train._STEP_CACHE) == n_cached  # the training run's compiled step was reused
    # same seed -> same result (deterministic shuffle, augmentation and init)
    again = train.train_model(model, tr, va, recipe, 0)
    assert again.history == res.history and again.valid_accuracy == res.valid_accuracy


def test_compiled_steps_are_evicted_while_the_process_maps_too_many_regions(monkeypatch):
    """XLA:CPU maps every compiled kernel's code into regions of its own; a long search in
    one process must not reach vm.max_map_count (LLVM aborts there). Over the threshold the
    step cache keeps only the newest shape, and the evicted executables' regions are freed."""
    from layernas.trainers import loop

    if loop.memory_map_usage() is None:
        pytest.skip("this system has no /proc/self/maps")
    ds = data.synthetic_dataset(num_classes=4, per_class=16, size=16)
    recipe = TINY.replace(epochs=1, batch_size=16)
    monkeypatch.setattr(loop, "MAP_COUNT_FRACTION", 0.0)  # always over the threshold
    regions = []
    for width in (3, 5, 6, 7):  # four shapes: four compiles
        model = TinyNet(width, 4)
        steps = train.compiled_steps(model, recipe, 4, 4, 4)
        assert len(train._STEP_CACHE) == 1 and next(reversed(train._STEP_CACHE.values())) is steps
        task = train.ClassifierTask.for_recipe(model, ds, recipe)
        state = loop.initial_state(task.init(0), steps.tx, 0.0, loop.Placer(None))
        batch = {"images": jnp.asarray(ds.images[:16]), "labels": jnp.asarray(ds.labels[:16])}
        state, metrics = steps.train_step(state, batch, jax.random.key(0), task.consts(recipe))
        jax.block_until_ready(metrics)
        del steps, state, metrics
        regions.append(loop.memory_map_usage()[0])
    grown = regions[1] - regions[0]
    assert regions[-1] - regions[1] < max(2 * grown, 200), regions  # flat, not growing with every shape
    monkeypatch.setattr(loop, "MAP_COUNT_FRACTION", 0.5)
    train.compiled_steps(TinyNet(9, 4), recipe, 4, 4, 4)
    assert len(train._STEP_CACHE) == 2  # under the threshold nothing more is evicted


def test_huge_learning_rate_fails_with_reason():
    recipe = TINY.replace(learning_rate=1e5)
    ds = data.synthetic_dataset(num_classes=4, per_class=24, size=8)
    tr, va = data.split_validation(ds, per_class=4, seed=0)
    res = train.train_model(TinyNet(), tr, va, recipe, 0)
    assert res.status == "failed"
    assert "non-finite" in res.error or "diverged" in res.error


class _TinySpace:
    """A stand-in space: arch = (width index,) into widths (4, 8)."""

    name = "tiny"

    def build(self, arch, num_classes=10):
        return TinyNet((4, 8)[arch[0]], num_classes)


def test_evaluator_records_and_resumes_without_retraining(tmp_path, monkeypatch):
    ds = data.synthetic_dataset(num_classes=4, per_class=24, size=8)
    pair = data.split_validation(ds, per_class=4, seed=0)
    recipe = TINY.replace(epochs=1)
    ev = ev_lib.TrainerEvaluator(_TinySpace(), pair, recipe, work_dir=tmp_path)
    trial = Trial(3, (1,), seed=11)
    r1 = ev.evaluate(trial)
    assert r1.ok and r1.cost_seconds > 0 and 0 <= r1.reward <= 100 and r1.info["recipe"] == "tiny"
    child = ev.child_dir(trial)
    assert json.loads((child / "result.json").read_text())["reward"] == r1.reward
    restored = ev_lib.load_variables(child / "variables")
    assert restored["params"]["Conv_0"]["kernel"].shape == (3, 3, 3, 8)

    # a fresh evaluator (a resumed search) must not train again
    def boom(*a, **k):
        raise AssertionError("retrained a finished child")

    monkeypatch.setattr(train, "train_model", boom)
    ev2 = ev_lib.TrainerEvaluator(_TinySpace(), pair, recipe, work_dir=tmp_path)
    r2 = ev2.evaluate(Trial(7, trial.arch, seed=11))
    assert r2.reward == r1.reward and r2.trial_id == 7 and r2.info["cached"] is True


def test_evaluator_marks_nan_failed_and_goes_on(tmp_path):
    ds = data.synthetic_dataset(num_classes=4, per_class=24, size=8)
    pair = data.split_validation(ds, per_class=4, seed=0)
    ev = ev_lib.TrainerEvaluator(_TinySpace(), pair, TINY.replace(epochs=1, optimizer="adamw", learning_rate=1e4), work_dir=tmp_path)
    r = ev.evaluate(Trial(0, (0,), seed=1))
    assert r.status == "failed" and not r.ok and ("non-finite" in r.error or "diverged" in r.error)
    assert math.isnan(r.reward)
    bad = ev.evaluate(Trial(1, (5,), seed=1))  # a build error is a failed trial, not a crash
    assert bad.status == "failed" and "IndexError" in bad.error


def test_configure_compilation_cache_caches_short_compiles(tmp_path):
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    before = {n: getattr(jax.config, n) for n in names}
    try:
        train.configure_compilation_cache(tmp_path / "jaxcache")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jaxcache")
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
        assert jax.config.jax_persistent_cache_min_entry_size_bytes == -1
    finally:
        for n, v in before.items():
            jax.config.update(n, v)


def test_recipes_are_named_and_proxy_is_short():
    assert set(train.RECIPES) == {"proxy", "trained-search", "nats-12", "nats-200"}
    assert all(name == recipe.name for name, recipe in train.RECIPES.items())
    assert train.TRAINED_SEARCH.epochs < train.PROXY.epochs and train.TRAINED_SEARCH.schedule == "constant"
    assert set(train.RECIPE_NETWORKS) <= set(train.RECIPES)
    assert train.PROXY.epochs == 5 and train.PROXY.valid_per_class and train.PROXY.train_per_class
    assert train.NATS_200.epochs == 200 and train.NATS_200.batch_size == 256


@pytest.mark.parametrize("space_name, archs", [
    ("nats-tss", [(3,) * 6, (0, 1, 2, 3, 4, 0), (4, 2, 1, 2, 1, 1)]),
    ("nats-sss", [(0,) * 5, (7,) * 5, (0, 0, 4, 3, 4), (7, 0, 3, 1, 5)]),
])
def test_models_match_space_param_counts(space_name, archs):
    """The built flax nets have exactly the parameters the space's NATS cost model counts."""
    from layernas.registry import make_space

    space = make_space(space_name, "cifar10")
    for arch in archs:
        model = nats_models.build_for_nats_space(space, arch, 10)
        assert n_params(model) / 1e6 == pytest.approx(space.cost(arch)["params"], abs=1e-6), arch
    with pytest.raises(ValueError, match="not a NATS space"):
        nats_models.build_for_nats_space(type("S", (), {"name": "other", "layers": space.layers})(), archs[0], 10)
