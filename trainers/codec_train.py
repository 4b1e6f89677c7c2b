"""Training and evaluation of the hyperprior codec, and the search's :class:`CodecEvaluator`.

Data: random crops (with flips) of ``../shared/data/photos`` for training; the last
``VALIDATION_PHOTOS`` photos (sorted by name) are held out, and their centre crops are
the search's validation set. Kodak is only ever used for the final, reported evaluation.

Recipes (:class:`TrainConfig`):

* :data:`SMALL_CPU_RECIPE`: what this shared 2-core CPU machine can afford per model
  (the full N=128 model takes ~1.6 s per step here): 64x64 crops, batch 4, 100 Adam steps at a high learning rate with a linear warm-up
  and cosine decay, gradient clipping, and an EMA of the parameters for evaluation.
* :data:`PROXY_RECIPE`: the search's per-trial proxy (fewer steps; the evaluator can also
  scale every width down).
* :data:`FULL_GPU_RECIPE`: the published-style recipe (256x256 crops, batch 16, lr 1e-4,
  1M steps), kept as a config for a GPU; never run here.

Ranking stability: the evaluator uses *common random numbers*: every architecture of a
search sees the same crops, the same quantization noise stream and the same init seed
(``seed_policy="fixed"``), so reward differences come from the architecture, not from
the draw; plus LR warm-up and the EMA. ``benchmarks/codec_rd.py --stability`` measures
the Spearman correlation of the ranking across seeds.

Example:
    >>> from layernas.trainers.codec_model import CodecConfig
    >>> cfg = TrainConfig(steps=2, batch_size=2, crop_size=64)       # doctest: +SKIP
    >>> state, log = train(CodecConfig.small(16, 16), cfg, images)    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from layernas.evaluator import EvalResult, Trial
from layernas.progress import report_child_progress
from layernas.trainers.codec_model import (
    CodecConfig, HyperpriorCodec, count_params, init_params, rd_loss)

VALIDATION_PHOTOS = 8
# CompressAI's lambdas for qualities 1..8 (MSE models).
COMPRESSAI_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one codec is trained.

    Args:
      lmbda: the rate-distortion trade-off (loss = lmbda * 255^2 * MSE + bpp).
      steps: optimizer steps.
      batch_size: crops per step.
      crop_size: crop side in pixels (a multiple of 64).
      learning_rate: peak Adam learning rate.
      warmup_steps: linear warm-up from 0 to the peak.
      final_lr_fraction: cosine decay ends at this fraction of the peak.
      grad_clip: global-norm clip.
      ema_decay: decay of the parameter EMA used for evaluation (0 = no EMA).
      seed: init, crops and noise seed.
    """

    lmbda: float = 0.0130
    steps: int = 100
    batch_size: int = 4
    crop_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 10
    final_lr_fraction: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.9
    seed: int = 0

    def __post_init__(self):
        if self.crop_size % 64:
            raise ValueError(f"crop_size {self.crop_size} must be a multiple of 64")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps {self.steps} and batch_size {self.batch_size} must be >= 1")
        if not (self.lmbda > 0 and math.isfinite(self.lmbda)):
            raise ValueError(f"lmbda {self.lmbda}: expected a positive number")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate {self.learning_rate}: expected a positive number")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay {self.ema_decay}: expected a number in [0, 1)")


SMALL_CPU_RECIPE = TrainConfig()
# The RD-curve recipe for this CPU: batch 8 (split over 2 host devices), 64x64 crops, a
# slower EMA.  ``benchmarks/codec_rd.py`` trains the highest lambda from scratch with it and
# fine-tunes each lower lambda from the previous one with ``CPU_RD_FINETUNE``.
CPU_RD_RECIPE = TrainConfig(lmbda=0.0483, steps=1600, batch_size=8, crop_size=64, learning_rate=1e-3,
                            warmup_steps=50, final_lr_fraction=0.05, ema_decay=0.99)
CPU_RD_FINETUNE = dataclasses.replace(CPU_RD_RECIPE, steps=500, learning_rate=3e-4, warmup_steps=20)
PROXY_RECIPE = TrainConfig(steps=60, batch_size=4, warmup_steps=10, ema_decay=0.9)
FULL_GPU_RECIPE = TrainConfig(steps=1_000_000, batch_size=16, crop_size=256, learning_rate=1e-4,
                              warmup_steps=1000, final_lr_fraction=0.1, ema_decay=0.999)


# ----------------------------------------------------------------------------- data
def load_images(directory: str | Path, names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Every ``*.png`` in a directory (sorted by name) as HxWx3 uint8 arrays."""
    directory = Path(directory)
    paths = sorted(directory.glob("*.png"))
    if names is not None:
        paths = [p for p in paths if p.name in set(names)]
    if not paths:
        raise ValueError(f"no .png images in {directory}")
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def split_photos(images: list[np.ndarray], n_val: int = VALIDATION_PHOTOS):
    """(train, validation): the last ``n_val`` images are held out."""
    if len(images) <= n_val:
        raise ValueError(f"need more than {n_val} images to hold {n_val} out, got {len(images)}")
    return images[:-n_val], images[-n_val:]


def center_crops(images: list[np.ndarray], size: int) -> np.ndarray:
    """Centre ``size`` x ``size`` crops as a float32 batch in [0, 1]."""
    out = []
    for im in images:
        h, w = im.shape[:2]
        if h < size or w < size:
            raise ValueError(f"image {h}x{w} is smaller than the crop {size}")
        t, l = (h - size) // 2, (w - size) // 2
        out.append(im[t:t + size, l:l + size])
    return np.stack(out).astype(np.float32) / 255.0


def random_crops(images: list[np.ndarray], rng: np.random.Generator, batch: int, size: int) -> np.ndarray:
    """A float32 batch of random crops with random horizontal flips."""
    out = []
    for _ in range(batch):
        im = images[int(rng.integers(len(images)))]
        h, w = im.shape[:2]
        t, l = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        crop = im[t:t + size, l:l + size]
        out.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    return np.stack(out).astype(np.float32) / 255.0


# ----------------------------------------------------------------------------- training
def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, max(cfg.warmup_steps, 1), max(cfg.steps, cfg.warmup_steps + 1),
        cfg.learning_rate * cfg.final_lr_fraction)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(schedule))


def _train_step(config: CodecConfig, cfg: TrainConfig):
    # lmbda and seed are traced/unused by the step, so one compile serves every lambda
    return _train_step_cached(config, dataclasses.replace(cfg, lmbda=1.0, seed=0))


@functools.lru_cache(maxsize=32)
def _train_step_cached(config: CodecConfig, cfg: TrainConfig):
    """One jitted step per (architecture, recipe shape); state is donated."""
    model = HyperpriorCodec(config)
    opt = make_optimizer(cfg)

    def loss_fn(params, x, rng, lmbda):
        out = model.apply({"params": params}, x, train=True, rng=rng)
        return rd_loss(out, x, lmbda)

    return jax.jit(ema_train_step(loss_fn, opt, cfg.ema_decay), donate_argnums=0), opt


def ema_train_step(loss_fn, opt: optax.GradientTransformation, ema_decay: float):
    """``step(state, *batch) -> (state, metrics)`` for ``state = (params, opt_state, ema)``:
    one optimizer update on ``loss_fn(params, *batch) -> (loss, metrics)``, then the
    parameter EMA (``ema_decay`` 0: the EMA is the parameters). Jit it with the state donated.
    """

    def step(state, *batch):
        params, opt_state, ema = state
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        d = ema_decay
        ema = jax.tree_util.tree_map(lambda e, p: d * e + (1 - d) * p, ema, params) if d > 0 else params
        return (params, opt_state, ema), metrics

    return step


def initial_train_state(params, opt: optax.GradientTransformation):
    """``(params, opt_state, ema)`` to start training from; the params and the EMA are
    fresh copies, because the train step donates its state and the caller keeps ``params``."""
    params = jax.tree_util.tree_map(lambda p: jnp.array(p, copy=True), params)
    return params, opt.init(params), jax.tree_util.tree_map(jnp.copy, params)


def record_step(history: list, metrics: dict, step: int, steps: int, log_every: int = 0) -> None:
    """Append one step's metrics (as floats) to ``history``; print every ``log_every`` steps.

    Raises:
      FloatingPointError: the loss is NaN or infinite.
    """
    metrics = {k: float(v) for k, v in metrics.items()}
    if not math.isfinite(metrics["loss"]):
        raise FloatingPointError(f"loss became {metrics['loss']} at step {step}")
    history.append(metrics)
    report_child_progress(step=step + 1, steps=steps)  # the search's progress bar, if any
    if log_every and (step % log_every == 0 or step == steps - 1):
        print(f"step {step:5d} loss {metrics['loss']:.4f} bpp {metrics['bpp']:.3f} psnr {metrics['psnr']:.2f}",
              flush=True)


@functools.lru_cache(maxsize=32)
def _eval_fn(config: CodecConfig):
    model = HyperpriorCodec(config)

    def evaluate(params, x, lmbda):
        out = model.apply({"params": params}, x, train=False)
        return rd_loss(out, x, lmbda)[1]

    return jax.jit(evaluate)


def train(config: CodecConfig, cfg: TrainConfig, images: list[np.ndarray], log_every: int = 0,
          data_parallel: int = 1, initial_params=None):
    """Train a codec on random crops of ``images``.

    Args:
      config / cfg: the architecture and the recipe.
      images: HxWx3 uint8 training images.
      log_every: print metrics every this many steps (0: silent).
      data_parallel: split each batch over this many local devices (jit + NamedSharding;
        on CPU start Python with ``--xla_force_host_platform_device_count=2``: one XLA:CPU
        device does not keep 2 cores busy). The batch must divide evenly.
      initial_params: start from these parameters (fine-tuning, e.g. from a model trained
        at another lambda) instead of a fresh ``init_params(config, cfg.seed)``.
    Returns:
      (params, ema_params, history): history is a list of per-step metric dicts.
    """
    step, opt = _train_step(config, cfg)
    state = initial_train_state(init_params(config, cfg.seed) if initial_params is None else initial_params, opt)
    batch_sharding = None
    if data_parallel > 1:
        if len(jax.devices()) < data_parallel or cfg.batch_size % data_parallel:
            raise ValueError(f"data_parallel={data_parallel} needs that many devices (have "
                             f"{len(jax.devices())}) and must divide batch_size={cfg.batch_size}")
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:data_parallel]), ("data",))
        P = jax.sharding.PartitionSpec
        state = jax.device_put(state, jax.sharding.NamedSharding(mesh, P()))
        batch_sharding = jax.sharding.NamedSharding(mesh, P("data"))
    data_rng = np.random.default_rng([cfg.seed, 1])
    key = jax.random.key(cfg.seed + 1)
    history = []
    for i in range(cfg.steps):
        x = random_crops(images, data_rng, cfg.batch_size, cfg.crop_size)
        x = jax.device_put(x, batch_sharding) if batch_sharding is not None else jnp.asarray(x)
        state, metrics = step(state, x, jax.random.fold_in(key, i), jnp.float32(cfg.lmbda))
        record_step(history, metrics, i, cfg.steps, log_every)
    params, _, ema = state
    return params, ema, history


def evaluate(config: CodecConfig, params, images: np.ndarray, lmbda: float) -> dict:
    """RD metrics with hard rounding on a float batch (N, H, W, 3); averages the loss,
    bpp and MSE over images (PSNR from the mean MSE of each image, then averaged)."""
    fn = _eval_fn(config)
    rows = []
    for i in range(images.shape[0]):
        m = fn(params, jnp.asarray(images[i:i + 1]), jnp.float32(lmbda))
        rows.append({k: float(v) for k, v in m.items()})
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def scale_widths(config: CodecConfig, scale: float, minimum: int = 8) -> CodecConfig:
    """Every hidden width (and M) multiplied by ``scale`` (the search's cheap proxy)."""
    if scale == 1.0:
        return config
    s = lambda c: max(minimum, int(round(c * scale)))  # noqa: E731
    blocks = lambda bs, last_fixed: tuple(  # noqa: E731
        dataclasses.replace(b, width=b.width if (last_fixed and j == len(bs) - 1) else s(b.width))
        for j, b in enumerate(bs))
    return dataclasses.replace(
        config, latent_channels=s(config.latent_channels), analysis_width=s(config.analysis_width),
        hyper_channels=s(config.hyper_channels), synthesis=blocks(config.synthesis, True),
        hyper_synthesis=blocks(config.hyper_synthesis, False))


# ----------------------------------------------------------------------------- evaluator
class PhotoTrainedEvaluator:
    """What every codec evaluator shares: the checked settings, the photo split, the
    per-trial recipe and ``evaluate(trial)`` (train, score, time, report). Subclasses supply
    the model family's ``proxy_config``, ``train_proxy`` and ``validate``.

    Args:
      space: the search space.
      lmbda: the fixed rate-distortion trade-off of the search (> 0).
      recipe: the proxy :class:`TrainConfig` (its ``lmbda`` and ``seed`` are replaced).
      photos_dir: training/validation photos (never Kodak); the last
        ``VALIDATION_PHOTOS`` are held out and their centre crops score the reward.
      width_scale: train a width-scaled proxy, in (0, 1] (1.0 = the real architecture).
      val_crop: side of the validation centre crops.
      seed_policy: "fixed" (common random numbers: every trial uses ``seed``) or "trial"
        (each trial uses its own ``trial.seed``).
      seed: the seed for ``seed_policy="fixed"``.
      train_images / val_images: pass arrays directly instead of ``photos_dir`` (tests).
    """

    default_val_crop = 128

    def __init__(self, space, lmbda: float = 0.0130, recipe: TrainConfig = PROXY_RECIPE,
                 photos_dir: str | Path | None = None, width_scale: float = 1.0, val_crop: int | None = None,
                 seed_policy: str = "fixed", seed: int = 0, train_images=None, val_images=None):
        if seed_policy not in ("fixed", "trial"):
            raise ValueError(f"seed_policy {seed_policy!r} is not 'fixed' or 'trial'")
        if not 0 < width_scale <= 1:
            raise ValueError(f"width_scale {width_scale}: expected a number in (0, 1]")
        if not (lmbda > 0 and math.isfinite(lmbda)):
            raise ValueError(f"lmbda {lmbda}: expected a positive number")
        if train_images is None:
            if photos_dir is None:
                raise ValueError("give photos_dir or train_images/val_images")
            train_images, val_list = split_photos(load_images(photos_dir))
            val_images = center_crops(val_list, self.default_val_crop if val_crop is None else val_crop)
        self.space, self.lmbda, self.recipe = space, float(lmbda), recipe
        self.width_scale, self.seed_policy, self.seed = float(width_scale), seed_policy, int(seed)
        self.train_images, self.val_images = list(train_images), np.asarray(val_images, np.float32)

    @classmethod
    def for_search(cls, space, lmbda: float = 0.0130, photos_dir: str | Path | None = None,
                   width_scale: float = 1.0, steps: int | None = None, seed: int = 0):
        """The evaluator a search uses: ``PROXY_RECIPE`` (with ``steps`` if given) on the
        photos in ``photos_dir`` (default :func:`default_photos_dir`), one fixed seed.

        Args:
          space: the search space.
          lmbda: ``--lambda``, the fixed RD trade-off of the search.
          photos_dir: training photos (default ``$LAYERNAS_SHARED/data/photos`` or
            ``../shared/data/photos`` beside the repository).
          width_scale: proxy width multiplier (``--width-scale``); 1.0 trains the real model.
          steps: proxy optimizer steps (``--proxy-steps``; default ``PROXY_RECIPE.steps``).
          seed: the common-random-numbers seed of every trial.
        Returns:
          an instance of ``cls``.
        """
        recipe = PROXY_RECIPE if steps is None else dataclasses.replace(PROXY_RECIPE, steps=int(steps))
        return cls(space, lmbda=lmbda, recipe=recipe, photos_dir=default_photos_dir() if photos_dir is None
                   else photos_dir, width_scale=width_scale, seed=seed)

    def trial_recipe(self, trial: Trial) -> TrainConfig:
        """The recipe one trial trains with: the search's lambda and the policy's seed."""
        seed = self.seed if self.seed_policy == "fixed" else int(trial.seed) % (2 ** 31)
        return dataclasses.replace(self.recipe, lmbda=self.lmbda, seed=seed)

    def evaluate(self, trial: Trial) -> EvalResult:
        """Train the trial's proxy, score it on the held-out crops; a diverged training is a
        failed result. Subclasses supply ``proxy_config(arch)``, ``train_proxy(config, cfg)
        -> (params, ema, history)`` and ``validate(config, params) -> (rd_loss, info)``."""
        start = time.time()
        config = self.proxy_config(trial.arch)
        cfg = self.trial_recipe(trial)
        try:
            _, ema, history = self.train_proxy(config, cfg)
        except FloatingPointError as e:
            return EvalResult.failed(trial, str(e), time.time() - start)
        loss, info = self.validate(config, ema)
        seconds = time.time() - start
        info.update({"train_loss_last": float(np.mean([h["loss"] for h in history[-20:]])), "steps": cfg.steps,
                     "seed": cfg.seed, "width_scale": self.width_scale, "proxy_params": count_params(ema),
                     "lmbda": self.lmbda})
        return EvalResult(trial.trial_id, tuple(trial.arch), -loss, seconds, None, self.space.cost(trial.arch),
                          info=info)


class CodecEvaluator(PhotoTrainedEvaluator):
    """Evaluator protocol: train one codec architecture, reward = -RD loss (hard rounding)
    on held-out photos, higher is better. ``cost_seconds`` is the measured wall time.
    The arguments are :class:`PhotoTrainedEvaluator`'s (validation crops: 128x128); the
    costs reported are always those of the real, unscaled architecture.
    """

    def proxy_config(self, arch):
        return scale_widths(self.space.config(arch), self.width_scale)

    def train_proxy(self, config, cfg: TrainConfig):
        return train(config, cfg, self.train_images)

    def validate(self, config, params) -> tuple[float, dict]:
        val = evaluate(config, params, self.val_images, self.lmbda)
        return val["loss"], {"val_bpp": val["bpp"], "val_psnr": val["psnr"], "val_mse": val["mse"]}


def default_photos_dir() -> Path:
    """``$LAYERNAS_SHARED/data/photos``, else ``../shared/data/photos`` beside the repository."""
    import os

    shared = Path(os.environ.get("LAYERNAS_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    return shared / "data" / "photos"


def make_codec_evaluator(space, lmbda: float = 0.0130, photos_dir: str | Path | None = None,
                         width_scale: float = 0.25, steps: int | None = None, seed: int = 0) -> CodecEvaluator:
    """The evaluator the CLI's ``--space codec-hyperprior`` uses: :meth:`CodecEvaluator.for_search`
    (same arguments) with the proxy at width scale 0.25 by default."""
    return CodecEvaluator.for_search(space, lmbda, photos_dir, width_scale, steps, seed)
