"""The second codec space, ``codec-sandwich``: the JPEG proxy against Pillow's real JPEG,
exact MAC counts, training through the proxy, the real-codec evaluator, a tiny search and
the CLI."""

from __future__ import annotations

import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

import layernas
from layernas.cli import main
from layernas.evaluator import Evaluator, Trial
from layernas.search_spaces.sandwich import SandwichConfig, SandwichSpace, unet_cost
from layernas.target import Target
from layernas.space import SpaceError
from layernas.trainers import jpeg_proxy as jp
from layernas.trainers.codec_model import count_params
from layernas.trainers.codec_train import center_crops, load_images
from layernas.trainers.codec_train import codec_recipe as TrainConfig
from layernas.trainers.image_quality import psnr
from layernas.trainers.sandwich_model import Sandwich, init_params, sandwich_loss
from layernas.trainers.sandwich_train import SandwichEvaluator, evaluate_real, train
from tests.conftest import shared_path
from tests.test_codec import synthetic_images

SPACE = SandwichSpace()
TINY = SandwichConfig((4, 4, 4), (4, 4, 4), 50)
# the same recipe shape everywhere below, so the train step compiles once for TINY
TINY_RECIPE = TrainConfig(lmbda=0.01, steps=80, batch_size=2, crop_size=64, learning_rate=3e-3, warmup_steps=2,
                          ema_decay=0.0)
# widths 4 and 8 both scale to 4 (the minimum) at width_scale 0.5: every arch trains as TINY
TINY_SPACE = SandwichSpace(widths=(4, 8), qualities=(25, 50))


def as_batch(image: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(image[None].astype(np.float32) / 255.0)


def proxy_psnr(image: np.ndarray, quality: int) -> tuple[float, float]:
    x_hat, bits = jax.jit(jp.jpeg_proxy)(as_batch(image), jp.quant_tables(quality))
    return psnr(image, np.round(np.asarray(x_hat[0]) * 255)), float(bits[0])


@pytest.fixture(scope="module")
def photo_crop() -> np.ndarray:
    """A 128x128 centre crop of a training photo (never Kodak)."""
    photos = shared_path("data", "photos")
    return (center_crops(load_images(photos, ["001.png"]), 128)[0] * 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------- the JPEG proxy
@pytest.mark.parametrize("quality", [1, 10, 50, 75, 90, 100])
def test_quant_tables_are_the_ones_pillow_writes(quality):
    data = jp.jpeg_encode(synthetic_images(1, 32)[0], quality)
    written = Image.open(io.BytesIO(data)).quantization
    np.testing.assert_array_equal(jp.quant_tables(quality)[0].ravel(), written[0])
    np.testing.assert_array_equal(jp.quant_tables(quality)[1].ravel(), written[1])
    assert jp.quality_scale(quality) == (5000 // quality if quality < 50 else 200 - 2 * quality)


@pytest.mark.parametrize("quality", [0, 101, 50.5, True, "75"])
def test_bad_quality_is_a_one_line_value_error(quality):
    with pytest.raises(ValueError, match=f"quality {quality!r}: expected an integer in 1..100"):
        jp.quant_tables(quality)
    with pytest.raises(ValueError, match="quality"):
        SandwichConfig(quality=quality)


def test_dct_is_orthonormal_and_quality_100_is_near_lossless():
    d = jp.dct_matrix()
    np.testing.assert_allclose(d @ d.T, np.eye(8), atol=1e-6)
    image = synthetic_images(1, 64, seed=3)[0][:60, :52]  # not a multiple of 8: edge-padded
    value, _ = proxy_psnr(image, 100)
    assert value > 45.0
    x_hat, _ = jp.jpeg_proxy(as_batch(image), jp.quant_tables(100))
    assert x_hat.shape == (1, 60, 52, 3)


def test_straight_through_rounding_keeps_the_forward_pass_and_passes_gradients():
    x = as_batch(synthetic_images(1, 32, seed=1)[0])
    tables = jp.quant_tables(30)
    hard, hard_bits = jp.jpeg_proxy(x, tables, train=False)
    soft, soft_bits = jp.jpeg_proxy(x, tables, train=True)
    np.testing.assert_array_equal(np.asarray(hard), np.asarray(soft))
    np.testing.assert_array_equal(np.asarray(hard_bits), np.asarray(soft_bits))
    loss = lambda x, train: jnp.sum(jp.jpeg_proxy(x, tables, train)[0]) + jnp.sum(jp.jpeg_proxy(x, tables, train)[1])  # noqa: E731
    assert float(jnp.abs(jax.grad(loss)(x, True)).sum()) > 0
    assert float(jnp.abs(jax.grad(loss)(x, False)).sum()) == 0  # hard rounding: no gradient
    with pytest.raises(ValueError, match=r"shape \(32, 32, 3\): expected \(N, H, W, 3\)"):
        jp.jpeg_proxy(x[0], tables)


def test_proxy_tracks_real_jpeg_on_a_photo(photo_crop):
    qualities = [5, 10, 25, 50, 75, 90, 95]
    proxy, real, bits, sizes = [], [], [], []
    for q in qualities:
        p, b = proxy_psnr(photo_crop, q)
        data = jp.jpeg_encode(photo_crop, q)
        proxy.append(p), bits.append(b), sizes.append(len(data))
        real.append(psnr(photo_crop, jp.jpeg_decode(data)))
    assert np.all(np.diff(proxy) > 0) and np.all(np.diff(bits) > 0)  # both fall as quality falls
    assert np.max(np.abs(np.array(proxy) - real)) < 1.0  # dB; measured max 0.09 dB on 256x256 crops
    assert spearmanr(bits, sizes).statistic > 0.9
    np.testing.assert_allclose(bits, [8 * jp.payload_bytes(jp.jpeg_encode(photo_crop, q)) for q in qualities],
                               rtol=0.15)  # the fitted rate proxy, against the entropy-coded bytes
    assert proxy_psnr(photo_crop, 100)[0] > 45.0


# ----------------------------------------------------------------------------- the space
def test_exact_macs_of_one_config():
    """pre (8, 16, 32), post (16, 32, 48), by hand: one 3x3 conv per level and side, 1x1 out."""
    arch = SPACE.str_to_arch("post_w0=16-post_w1=32-post_w2=48-quality=50-pre_w0=8-pre_w1=16-pre_w2=32")

    def per_pixel(w0, w1, w2):
        return (9 * 3 * w0 + 9 * w0 * w1 / 4 + 9 * w1 * w2 / 16  # encoder at 1, 1/2, 1/4 resolution
                + 9 * (w2 + w1) * w1 / 4 + 9 * (w1 + w0) * w0  # decoder: upsampled + skip channels
                + w0 * 3)  # 1x1 to RGB

    costs = SPACE.cost(arch)
    assert costs["decoder_madds"] == per_pixel(16, 32, 48) == 15_168
    assert costs["encoder_madds"] == per_pixel(8, 16, 32) == 4_272
    assert costs["decoder_gmacs"] == 15_168 * 768 * 512 / 1e9
    assert unet_cost((16, 32, 48)).madds == 15_168 * 768 * 512
    params = jax.eval_shape(lambda: init_params(SPACE.config(arch), 0))  # shapes only: nothing compiled
    assert costs["decoder_params"] == count_params(params["post"])
    assert costs["params"] == count_params(params)
    assert SPACE.cost(SPACE.default_arch())["decoder_madds"] == per_pixel(48, 48, 48)


def test_space_defaults_bounds_strings_and_errors():
    assert SPACE.config(SPACE.default_arch()) == SandwichConfig()  # widest U-Nets, quality 75
    lo, hi = SPACE.cost_bounds((), "decoder_gmacs")
    assert lo == pytest.approx(1860 * 768 * 512 / 1e9) and hi == SPACE.cost(SPACE.default_arch())["decoder_gmacs"]
    prefix = SPACE.str_to_arch("post_w0=8-post_w1=48-post_w2=48-quality=10-pre_w0=8-pre_w1=8-pre_w2=8")[:1]
    lo, hi = SPACE.cost_bounds(prefix, "decoder_madds")
    assert lo == SPACE.cost(prefix + (0, 0, 0, 0, 0, 0))["decoder_madds"]
    assert hi == SPACE.cost(prefix + (3, 3, 0, 0, 0, 0))["decoder_madds"]
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = SPACE.random_arch(rng)
        assert SPACE.str_to_arch(SPACE.arch_to_str(a)) == a
    with pytest.raises(SpaceError, match="'12' is not an option of 'post_w2'"):
        SPACE.str_to_arch(SPACE.arch_to_str(SPACE.default_arch()).replace("post_w2=48", "post_w2=12"))
    with pytest.raises(ValueError, match=r"widths \(16, 8\): expected distinct positive integers"):
        SandwichSpace(widths=(16, 8))
    with pytest.raises(ValueError, match="pre_widths"):
        SandwichConfig(pre_widths=(8, 0))
    with pytest.raises(ValueError, match="width scale 0"):
        SandwichConfig().scaled(0)
    assert SandwichConfig().scaled(0.25).pre_widths == (12, 12, 12)


def test_identity_at_init():
    """Zero-initialized residual outputs: the untrained sandwich is plain JPEG."""
    x = as_batch(synthetic_images(1, 32, seed=2)[0])
    out = Sandwich(TINY).apply({"params": init_params(TINY, 0)}, x)
    np.testing.assert_array_equal(np.asarray(out["bottleneck"]), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(out["x_hat"]), np.asarray(jp.jpeg_proxy(x, jp.quant_tables(50))[0]))


# ----------------------------------------------------------------------------- training and evaluation
def test_training_through_the_proxy_lowers_the_loss():
    image = synthetic_images(1, 64, seed=5)  # one 64x64 image: every crop is the same (up to a flip)
    x = as_batch(image[0])
    loss = lambda params: float(sandwich_loss(Sandwich(TINY).apply({"params": params}, x), x, 0.01)[0])  # noqa: E731
    before = loss(init_params(TINY, TINY_RECIPE.seed))  # plain JPEG: the residual branches start at zero
    params, _, history = train(TINY, TINY_RECIPE, image)
    assert len(history) == TINY_RECIPE.steps and all(np.isfinite(h["loss"]) for h in history)
    assert loss(params) < 0.98 * before  # measured 0.962 (80 steps, widths 4)


def test_evaluator_trains_and_scores_with_real_jpeg_bytes():
    images = synthetic_images(4, 96)
    val = np.stack([im[:64, :64] for im in images[:2]]).astype(np.float32) / 255.0
    ev = SandwichEvaluator(TINY_SPACE, lmbda=0.01, recipe=TINY_RECIPE, width_scale=0.5, train_images=images,
                           val_images=val)
    assert isinstance(ev, Evaluator)
    arch = TINY_SPACE.str_to_arch("post_w0=4-post_w1=8-post_w2=8-quality=50-pre_w0=8-pre_w1=8-pre_w2=4")
    r = ev.evaluate(Trial(0, arch, 123))
    assert r.ok and np.isfinite(r.reward) and r.reward < 0 and r.cost_seconds > 0
    info = r.info
    assert info["quality"] == 50 and info["proxy_params"] == count_params(init_params(TINY, 0))
    # the bpp is real: 8 * bytes of a Pillow JPEG file (header included) per pixel
    assert info["val_bpp"] > info["val_bpp_payload"] > 0 and info["val_bpp"] * 64 * 64 / 8 > 600
    assert r.reward == pytest.approx(-(0.01 * 255 ** 2 * info["val_mse"] + info["val_bpp"]))
    assert np.isnan(info["val_ms_ssim"])  # 64x64 crops are too small for 5-scale MS-SSIM
    assert r.costs == TINY_SPACE.cost(arch)
    # evaluate_real of an untrained sandwich is plain JPEG, byte for byte
    plain = evaluate_real(TINY, init_params(TINY, 0), val, 0.01)
    assert plain["bpp"] == plain["jpeg_bpp"] and plain["psnr"] == plain["jpeg_psnr"]


def test_tiny_layernas_search_stays_under_the_gmacs_budget(tmp_path):
    images = synthetic_images(4, 96)
    val = np.stack([im[:64, :64] for im in images[:2]]).astype(np.float32) / 255.0
    ev = SandwichEvaluator(TINY_SPACE, lmbda=0.01, recipe=TINY_RECIPE,
                           width_scale=0.5, train_images=images, val_images=val)
    lo, hi = TINY_SPACE.cost_bounds((), "decoder_gmacs")
    budget = (lo + hi) / 2
    result = layernas.search(TINY_SPACE, ev, budget=4, target=Target("decoder_gmacs", max=budget), seed=0,
                             searcher_options={"num_buckets": 4}, out_dir=tmp_path / "run")
    assert result.best is not None and result.best["costs"]["decoder_gmacs"] <= budget
    rows = json.loads((tmp_path / "run" / "checkpoint.json").read_text())["history"]
    assert len(rows) == 4 and all(r["status"] == "ok" and r["reward"] < 0 for r in rows)


# ----------------------------------------------------------------------------- the CLI
def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, needle", [
    (["--space", "nats-tss", "--lambda", "0.01"],
     "--lambda applies to --space codec-hyperprior or codec-sandwich, not --space nats-tss"),
    (["--space", "codec-sandwich", "--lambda", "-1"], "--lambda -1.0: expected a positive number"),
    (["--space", "codec-sandwich", "--width-scale", "0"], "--width-scale 0.0: expected a number in (0, 1]"),
    (["--space", "codec-sandwich", "--proxy-steps", "0"], "--proxy-steps 0: expected an integer >= 1"),
    (["--space", "codec-sandwich", "--epochs", "2"], "--epochs sets the image-classifier recipe"),
    (["--space", "codec-sandwich", "--data", ".", "--metric", "flops"],
     "unknown metric 'flops' for space 'codec-sandwich'"),
])
def test_cli_codec_sandwich_errors_are_one_line(capsys, argv, needle):
    code, _, err = run_cli(capsys, "search", *argv)
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_cli_codec_sandwich_search_on_real_photos(tmp_path, capsys):
    photos = shared_path("data", "photos")
    out = tmp_path / "run"
    # width_scale 1/16: every width becomes 4, so all trials share one compiled step
    code, _, err = run_cli(capsys, "search", "--space", "codec-sandwich", "--data", str(photos),
                           "--target-decoder-gmacs", "12",
                           "--lambda", "0.0067", "--width-scale", "0.0625", "--proxy-steps", "2",
                           "--budget-evals", "2", "--quiet", "--out", str(out))
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["settings"]["codec"] == {"lmbda": 0.0067, "width_scale": 0.0625, "proxy_steps": 2}
    assert result["best"]["costs"]["decoder_gmacs"] <= 12
    rows = json.loads((out / "checkpoint.json").read_text())["history"]
    assert len(rows) == 2 and all(r["status"] == "ok" and r["reward"] < 0 and r["info"]["val_bpp"] > 0 for r in rows)
