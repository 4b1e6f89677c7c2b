"""The learned codec: MAC counting, bitstream round trip, training, the search space."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layernas.evaluator import Evaluator, Trial
from layernas.search_spaces.codec import CodecConfig, CodecHyperpriorSpace
from layernas.target import Target
from layernas.space import SpaceError
from layernas.trainers.codec_bitstream import BitstreamCodec, bitstream_bpp, scale_indexes, scale_table
from layernas.trainers.codec_model import (
    GDN, HyperpriorCodec, bits, init_params, nonneg, nonneg_init, pad_to_multiple, rd_loss)
from layernas.trainers.codec_train import CodecEvaluator, evaluate, scale_widths, train
from layernas.trainers.codec_train import codec_recipe as TrainConfig

SPACE = CodecHyperpriorSpace()
TINY = CodecConfig.small(width=8, latent=8)
TINY_RECIPE = TrainConfig(steps=12, batch_size=2, crop_size=64, learning_rate=3e-3, warmup_steps=2, ema_decay=0.0)


def synthetic_images(n: int, size: int = 96, seed: int = 0) -> list[np.ndarray]:
    """Smooth colour gradients with a few rectangles: compressible, like photos."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a = rng.uniform(0, 1, (3, 3))
        im = np.stack([a[c, 0] * xx + a[c, 1] * yy + a[c, 2] * 0.3 for c in range(3)], -1)
        for _ in range(3):
            t, l = rng.integers(0, size - 16, 2)
            im[t:t + 16, l:l + 16] = rng.uniform(0, 1, 3)
        out.append((np.clip(im, 0, 1) * 255).astype(np.uint8))
    return out


# ----------------------------------------------------------------------------- costs
def test_default_decoder_macs_match_design():
    """Ballé hyperprior N=128, M=192: 43.5k MAC/pixel, transposed convs per input pixel."""
    n, m = 128, 192
    # g_s: 4 transposed 5x5 convs at 1/16, 1/8, 1/4, 1/2 resolution (input side), 3 IGDNs
    gs = 25 * m * n / 256 + 25 * n * n / 64 + 25 * n * n / 16 + 25 * n * 3 / 4
    igdn = n * n / 64 + n * n / 16 + n * n / 4
    # h_s: 2 transposed 5x5 convs from 1/64 and 1/32, then a 3x3 conv N->M at 1/16
    hs = 25 * n * n / 4096 + 25 * n * n / 1024 + 9 * n * m / 256
    costs = SPACE.cost(SPACE.default_arch())
    assert costs["decoder_madds"] == gs + igdn + hs
    assert costs["decoder_madds"] == pytest.approx(43.5e3, rel=0.002)
    assert costs["decoder_gmacs"] == pytest.approx(costs["decoder_madds"] * 768 * 512 / 1e9)
    assert costs["encoder_madds"] > 0


def test_default_arch_is_balle_hyperprior():
    assert SPACE.config(SPACE.default_arch()) == CodecConfig()
    params = init_params(TINY, 0)
    assert "entropy_bottleneck" in params and "g_s" in params


@pytest.mark.parametrize("layer", ["gs0_width", "gs1_up", "gs2_act", "hs0_kernel", "M"])
def test_cheaper_options_cost_less(layer):
    i = [l.name for l in SPACE.layers].index(layer)
    costs = []
    for o in range(len(SPACE.layers[i].options)):
        a = list(SPACE.default_arch())
        a[i] = o
        costs.append(SPACE.cost(tuple(a))["decoder_madds"])
    assert len(set(costs)) > 1
    if layer.endswith("_up"):  # a transposed conv (per input pixel) is the cheapest upsampler
        assert costs[0] < costs[1] and costs[1] == costs[2]  # subpixel == resize+conv
    else:
        assert min(costs) < costs[SPACE.layers[i].default]


def test_cost_bounds_and_gmacs_budget():
    """Bounds contain every sampled completion and are attained; Target prunes on them."""
    rng = np.random.default_rng(0)
    for _ in range(10):
        k = int(rng.integers(0, SPACE.num_layers))
        prefix = SPACE.random_arch(rng)[:k]
        lo, hi = SPACE.cost_bounds(prefix, "decoder_gmacs")
        samples = [SPACE.cost(prefix + SPACE.random_arch(rng)[k:])["decoder_gmacs"] for _ in range(20)]
        assert lo <= min(samples) + 1e-9 and max(samples) <= hi + 1e-9
        assert Target("decoder_gmacs", max=lo).reachable(SPACE, prefix)
        assert not Target("decoder_gmacs", max=lo * 0.999).reachable(SPACE, prefix)
    budget = Target("decoder_gmacs", max=5.0)
    assert not budget.feasible(SPACE.cost(SPACE.default_arch()))  # 17.1 GMACs at 768x512
    feasible = [a for a in (SPACE.random_arch(rng) for _ in range(200)) if budget.feasible(SPACE.cost(a))]
    assert feasible and all(SPACE.cost(a)["decoder_gmacs"] <= 5.0 for a in feasible)


def test_arch_strings_round_trip_and_errors():
    rng = np.random.default_rng(1)
    for _ in range(5):
        a = SPACE.random_arch(rng)
        assert SPACE.str_to_arch(SPACE.arch_to_str(a)) == a
    with pytest.raises(SpaceError, match="M"):
        SPACE.str_to_arch(SPACE.arch_to_str(SPACE.default_arch()).replace("M=192", "M=191"))


# ----------------------------------------------------------------------------- model pieces
def test_gdn_parameters_stay_non_negative():
    raw = jnp.array([-3.0, -1e-3, 0.0, 0.5])
    assert bool(jnp.all(nonneg(raw) >= 0)) and bool(jnp.all(nonneg(raw, 1e-6) >= 1e-6 - 1e-12))
    # below the bound the gradient flows only when it would push the value up
    g_down = jax.grad(lambda r: jnp.sum(nonneg(r)))(raw)
    g_up = jax.grad(lambda r: -jnp.sum(nonneg(r)))(raw)
    assert bool(jnp.all(g_down[:3] == 0.0)) and bool(jnp.all(g_up[:3] < 0.0)) and float(g_down[3]) > 0
    gdn = GDN(inverse=False)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 4, 4, 6)), jnp.float32)
    params = gdn.init(jax.random.key(0), x)["params"]
    params = jax.tree_util.tree_map(lambda p: -jnp.abs(p) - 1.0, params)  # raw params all negative
    y = gdn.apply({"params": params}, x)
    assert bool(jnp.all(jnp.isfinite(y)))
    np.testing.assert_allclose(nonneg_init(np.array([0.25])) ** 2, 0.25, rtol=1e-5)


def test_noise_in_training_rounding_at_eval():
    params = init_params(TINY, 0)
    x = jnp.asarray(np.stack(synthetic_images(1, 64)) / 255.0, jnp.float32)
    out = HyperpriorCodec(TINY).apply({"params": params}, x, train=False)
    assert bool(jnp.all(out["y_hat"] == jnp.round(out["y_hat"])))
    noisy = HyperpriorCodec(TINY).apply({"params": params}, x, train=True, rng=jax.random.key(0))
    assert not bool(jnp.all(noisy["y_hat"] == jnp.round(noisy["y_hat"])))
    _, m = rd_loss(out, x, 0.01)
    assert m["bpp"] == pytest.approx(float((bits(out["lik_y"]) + bits(out["lik_z"])) / (64 * 64)))


# ----------------------------------------------------------------------------- bitstream
@pytest.mark.parametrize("boost", [1.0, 300.0])
def test_bitstream_round_trip_is_bit_exact(boost):
    """Real bytes through constriction decode to exactly the encoder's reconstruction,
    also when latents overflow the tables (escape coding; boost scales the last convs)."""
    params = jax.tree_util.tree_map(np.asarray, init_params(TINY, 0))
    params["g_a"]["conv3"]["kernel"] = params["g_a"]["conv3"]["kernel"] * boost
    params["h_a"]["conv2"]["kernel"] = params["h_a"]["conv2"]["kernel"] * boost
    image = synthetic_images(1, 96)[0][:70, :90]  # not a multiple of 64: padded inside
    coder = BitstreamCodec(TINY, params, z_range=4)
    data, x_hat = coder.compress(image)
    assert isinstance(data, bytes) and len(data) > 4
    decoded = coder.decompress(data)
    assert decoded.shape == (70, 90, 3) and np.array_equal(decoded, x_hat)
    # and the decoded latents are the encoder's rounded latents
    x = pad_to_multiple(image.astype(np.float32) / 255.0)[None]
    y, _ = HyperpriorCodec(TINY).apply({"params": params}, jnp.asarray(x), method="encode_latents")
    ref = np.asarray(HyperpriorCodec(TINY).apply({"params": params}, jnp.round(y), method="decode"))[0, :70, :90]
    assert np.array_equal(decoded, ref)
    assert bitstream_bpp(data) == 8 * len(data) / (70 * 90)


def test_scale_indexes_pick_the_smallest_table_scale_above():
    table = scale_table()
    s = np.array([0.01, table[0], table[0] * 1.001, table[10], 1e6])
    idx = scale_indexes(s, table)
    assert list(idx) == [0, 0, 1, 10, len(table) - 1]


# ----------------------------------------------------------------------------- training
def test_training_lowers_the_rd_loss():
    images = synthetic_images(6, 96)
    held_out = np.stack([im[:64, :64] for im in synthetic_images(2, 96, seed=9)]).astype(np.float32) / 255.0
    before = evaluate(TINY, init_params(TINY, 0), held_out, 0.01)
    params, _, history = train(TINY, dataclasses.replace(TINY_RECIPE, lmbda=0.01), images)
    after = evaluate(TINY, params, held_out, 0.01)
    assert np.mean([h["loss"] for h in history[-3:]]) < np.mean([h["loss"] for h in history[:3]])
    assert after["loss"] < 0.9 * before["loss"]


def test_fine_tuning_starts_from_the_given_parameters():
    images = synthetic_images(6, 96)
    held_out = np.stack([im[:64, :64] for im in synthetic_images(2, 96, seed=9)]).astype(np.float32) / 255.0
    trained, _, _ = train(TINY, dataclasses.replace(TINY_RECIPE, lmbda=0.01), images)
    # one step at a tiny learning rate barely moves the weights: a fine-tune starts where the
    # given model is, far below a fresh initialization
    step = dataclasses.replace(TINY_RECIPE, lmbda=0.005, steps=1, learning_rate=1e-7)
    tuned, _, _ = train(TINY, step, images, initial_params=trained)
    fresh, _, _ = train(TINY, step, images)
    loss = lambda p: evaluate(TINY, p, held_out, 0.005)["loss"]  # noqa: E731
    assert loss(tuned) == pytest.approx(loss(trained), rel=1e-3)
    assert loss(tuned) < 0.9 * loss(fresh)
    # the given parameters are not consumed (the train step donates its state)
    assert np.isfinite(loss(trained))


@pytest.mark.parametrize("field, value, match", [("lmbda", 0.0, "lmbda 0.0"), ("lmbda", float("nan"), "lmbda nan"),
                                                 ("learning_rate", -1.0, "learning_rate -1.0"),
                                                 ("ema_decay", 1.0, "ema_decay 1.0"),
                                                 ("crop_size", 100, "crop_size 100")])
def test_train_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TINY_RECIPE, **{field: value})


def test_codec_evaluator_protocol():
    space = CodecHyperpriorSpace(analysis_width=8)
    images = synthetic_images(4, 96)
    val = np.stack([im[:64, :64] for im in images[:2]]).astype(np.float32) / 255.0
    # width 128/16 = 8 everywhere: the same shapes (and compiled step) as TINY
    ev = CodecEvaluator(space, lmbda=0.01, recipe=TINY_RECIPE, width_scale=1 / 16,
                        train_images=images, val_images=val)
    assert isinstance(ev, Evaluator)
    cheap = list(space.default_arch())
    cheap[0] = 0  # M = 64 -> 8 after scaling
    r = ev.evaluate(Trial(0, tuple(cheap), 123))
    assert r.ok and np.isfinite(r.reward) and r.reward < 0 and r.cost_seconds > 0
    assert r.costs["decoder_madds"] == space.cost(tuple(cheap))["decoder_madds"]
    assert scale_widths(space.config(tuple(cheap)), 1 / 16) == TINY
