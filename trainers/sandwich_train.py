"""Training of the JPEG sandwich through the proxy, evaluation with the real codec, and the
search's :class:`SandwichEvaluator`.

Training (:func:`train`): the pre and post U-Nets are trained end to end through the
differentiable JPEG proxy (:mod:`layernas.trainers.jpeg_proxy`) with
``loss = lmbda * 255^2 * MSE + bpp_proxy`` on random crops of the training photos. The data
helpers, the recipe (:func:`~layernas.trainers.codec_train.codec_recipe`) and the proxy recipe
are the hyperprior's, from :mod:`layernas.trainers.codec_train`; so is the
photo split (the last 8 photos are held out) and the rule that Kodak is never trained on.

Evaluation (:func:`evaluate_real`) uses the **real** codec: ``pre(x)`` is clipped and rounded
to uint8, compressed by Pillow's JPEG (4:4:4, the config's quality), decoded, and restored by
``post``; PSNR and MS-SSIM are computed on the 8-bit result, and the bpp from the length of the
whole JPEG file (header included, ~620 bytes).

Example:
    >>> cfg = codec_recipe(steps=2, batch_size=2, crop_size=64)                      # doctest: +SKIP
    >>> params, ema, log = train(SandwichConfig((8, 8, 8), (8, 8, 8), 50), cfg, images)  # doctest: +SKIP
    >>> evaluate_real(SandwichConfig((8, 8, 8), (8, 8, 8), 50), ema, val, 0.013)      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from layernas.trainers.codec_train import PhotoTrainedEvaluator, fit_photos, photo_crop_batches, stream_plan
from layernas.trainers.image_quality import MS_SSIM_MIN_SIDE, ms_ssim, psnr
from layernas.trainers.jpeg_proxy import jpeg_decode, jpeg_encode, payload_bytes, quant_tables
from layernas.trainers.loop import Plan, Recipe
from layernas.trainers.sandwich_model import Sandwich, SandwichConfig, init_params, sandwich_loss

# The quality is a traced argument of the compiled functions (its tables), so the cache key
# replaces it with this constant: architectures that differ only in quality share one compile.
_KEY_QUALITY = 75


def _shape_key(config: SandwichConfig) -> SandwichConfig:
    return dataclasses.replace(config, quality=_KEY_QUALITY)


@dataclasses.dataclass(frozen=True, eq=False)
class SandwichTask:
    """The JPEG sandwich for :func:`layernas.trainers.loop.fit`: parameters from
    :func:`~layernas.trainers.sandwich_model.init_params`, the proxy RD loss, and the
    codec's random photo crops (:func:`~layernas.trainers.codec_train.photo_crop_batches`).
    The quality's tables and ``lmbda`` are traced constants, so architectures that differ
    only in quality share one compile.

    Args:
      config: the architecture (U-Net widths and JPEG quality).
      images: HxWx3 uint8 training images (never Kodak).
    """

    config: SandwichConfig
    images: Sequence[np.ndarray] = ()

    @property
    def cache_key(self):
        return ("sandwich", _shape_key(self.config))

    @functools.cached_property
    def model(self) -> Sandwich:
        return Sandwich(_shape_key(self.config))

    def init(self, seed: int):
        return {"params": init_params(self.config, seed)}

    def plan(self, recipe: Recipe, num_devices: int) -> Plan:
        return stream_plan(recipe)

    def batches(self, recipe: Recipe, plan: Plan, seed: int):
        return photo_crop_batches(self.images, recipe, plan, seed)

    def consts(self, recipe: Recipe):
        return {"tables": jnp.asarray(quant_tables(self.config.quality)), "lmbda": jnp.float32(recipe.lmbda)}

    def divergence_limit(self, recipe: Recipe):
        return None

    def loss(self, params, model_state, batch, key, consts):
        x = batch["x"]
        loss, metrics = sandwich_loss(self.model.apply({"params": params}, x, train=True, tables=consts["tables"]),
                                      x, consts["lmbda"])
        return loss, (model_state, metrics)


def train(config: SandwichConfig, cfg: Recipe, images: list[np.ndarray], log_every: int = 0,
          initial_params=None):
    """Train a sandwich through the JPEG proxy on random crops of ``images``
    (:class:`SandwichTask` through the training loop).

    Args:
      config: the architecture (U-Net widths and JPEG quality).
      cfg: the recipe (:func:`~layernas.trainers.codec_train.codec_recipe`); ``cfg.seed``
        seeds the init (``jax.random.key``) and the crops.
      images: HxWx3 uint8 training images (never Kodak).
      log_every: print metrics every this many steps (0: silent).
      initial_params: start from these parameters (copied; the step donates its state)
        instead of ``init_params(config, cfg.seed)``.
    Returns:
      ``(params, ema_params, history)``: history is a list of per-step metric dicts.
    Raises:
      FloatingPointError: the loss became NaN or infinite.
    """
    return fit_photos(SandwichTask(config, list(images)), cfg, log_every, initial_params=initial_params)


@functools.lru_cache(maxsize=32)
def _apply_fns(config: SandwichConfig):
    model = Sandwich(config)
    pre = jax.jit(lambda p, x: model.apply({"params": p}, x, method="preprocess"))
    post = jax.jit(lambda p, x: model.apply({"params": p}, x, method="postprocess"))
    proxy = jax.jit(lambda p, x, t, lmbda: sandwich_loss(model.apply({"params": p}, x, tables=t), x, lmbda)[1])
    return pre, post, proxy


def _to_uint8(x) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float64) * 255.0), 0, 255).astype(np.uint8)


def evaluate_real(config: SandwichConfig, params, images: np.ndarray, lmbda: float) -> dict:
    """Rate-distortion of the sandwich with the real JPEG codec, averaged over images.

    ``pre(x)`` -> uint8 -> Pillow JPEG bytes (4:4:4, ``config.quality``) -> decode -> ``post``
    -> uint8. Per image: ``mse`` on [0, 1], ``bpp`` = 8 * file bytes / pixels (header
    included), ``bpp_payload`` (entropy-coded bytes only), ``psnr``, ``ms_ssim`` (NaN when a
    side is under 161 pixels), ``loss = lmbda*255^2*mse + bpp``; plus the same numbers for
    plain JPEG at that quality (``jpeg_*``) and the proxy's own hard-rounded ``proxy_bpp``
    and ``proxy_psnr`` on the same images.

    Args:
      config: the architecture.
      params: its parameters (``{"pre": ..., "post": ...}``).
      images: float (N, H, W, 3) in [0, 1] on the 8-bit grid (e.g. ``center_crops``); H and W
        multiples of ``config.size_multiple``.
      lmbda: the rate-distortion trade-off.
    Returns:
      a dict of the per-image means.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images of shape {images.shape}: expected (N, H, W, 3) floats in [0, 1]")
    key = _shape_key(config)
    pre, post, proxy = _apply_fns(key)
    tables = jnp.asarray(quant_tables(config.quality))
    originals = _to_uint8(images)
    bottleneck = _to_uint8(pre(params, jnp.asarray(images)))
    files = [jpeg_encode(b, config.quality) for b in bottleneck]
    decoded = np.stack([jpeg_decode(f) for f in files]).astype(np.float32) / 255.0
    restored = _to_uint8(post(params, jnp.asarray(decoded)))
    plain = [jpeg_encode(o, config.quality) for o in originals]
    pixels = images.shape[1] * images.shape[2]
    rows = []
    for i, (o, r) in enumerate(zip(originals, restored)):
        mse = float(np.mean((o.astype(np.float64) - r) ** 2)) / 255.0 ** 2
        bpp = 8.0 * len(files[i]) / pixels
        plain_dec = jpeg_decode(plain[i])
        plain_mse = float(np.mean((o.astype(np.float64) - plain_dec) ** 2)) / 255.0 ** 2
        plain_bpp = 8.0 * len(plain[i]) / pixels
        small = min(o.shape[:2]) < MS_SSIM_MIN_SIDE
        m = proxy(params, jnp.asarray(images[i:i + 1]), tables, jnp.float32(lmbda))
        rows.append({
            "loss": lmbda * 255.0 ** 2 * mse + bpp, "mse": mse, "bpp": bpp,
            "bpp_payload": 8.0 * payload_bytes(files[i]) / pixels, "psnr": psnr(o, r),
            "ms_ssim": float("nan") if small else ms_ssim(o, r),
            "jpeg_bpp": plain_bpp, "jpeg_psnr": psnr(o, plain_dec), "jpeg_loss": lmbda * 255.0 ** 2 * plain_mse + plain_bpp,
            "proxy_bpp": float(m["bpp"]), "proxy_psnr": float(m["psnr"]),
        })
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


class SandwichEvaluator(PhotoTrainedEvaluator):
    """Evaluator protocol: train one sandwich architecture through the proxy; reward =
    -(lmbda * 255^2 * MSE + bpp) with the **real** JPEG on held-out photo centre crops,
    higher is better. ``cost_seconds`` is the measured wall time. The seed policy is
    :class:`~layernas.trainers.codec_train.PhotoTrainedEvaluator`'s (common random numbers by
    default: every trial sees the same crops and the same init seed), and so are the
    arguments (validation crops: 192x192, as MS-SSIM needs at least 161 pixels a side); the
    costs reported are always those of the real, unscaled architecture.
    """

    default_val_crop = 192  # MS-SSIM needs at least MS_SSIM_MIN_SIDE (161) pixels a side

    def proxy_config(self, arch) -> SandwichConfig:
        return self.space.config(arch).scaled(self.width_scale)

    def train_proxy(self, config, cfg: Recipe):
        return train(config, cfg, self.train_images)

    def validate(self, config, params) -> tuple[float, dict]:
        val = evaluate_real(config, params, self.val_images, self.lmbda)
        info = {f"val_{k}": v for k, v in val.items() if k != "loss"}
        return val["loss"], {**info, "quality": config.quality}


def make_sandwich_evaluator(space, lmbda: float = 0.0130, photos_dir: str | Path | None = None,
                            width_scale: float = 0.5, steps: int | None = None, seed: int = 0,
                            valid_dir: str | Path | None = None) -> SandwichEvaluator:
    """The evaluator the CLI's ``--space codec-sandwich`` uses:
    :meth:`~layernas.trainers.codec_train.PhotoTrainedEvaluator.for_search` (same arguments)
    with the U-Nets at width scale 0.5 by default (widths are kept >= 4)."""
    return SandwichEvaluator.for_search(space, lmbda, photos_dir, width_scale, steps, seed, valid_dir)
