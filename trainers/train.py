"""Training one classifier child: recipes, the classifier task, and :func:`train_model`.

* :class:`~layernas.trainers.loop.Recipe` (re-exported here) is the whole training config.
  :data:`PROXY` is the named CPU-feasible proxy; :data:`NATS_200` and :data:`NATS_12` are
  the NATS-Bench schedules for accelerators.
* :class:`ClassifierTask` is what the one training loop (:mod:`layernas.trainers.loop`)
  needs to train an image classifier: fast NumPy init, cross-entropy with optional label
  smoothing, on-device augmentation, the epoch batches of a dataset, and the masked
  evaluation step.
* :func:`train_model` trains and evaluates, returning a :class:`TrainResult`; a NaN or a
  diverging loss ends training early with ``status="failed"`` and the reason.

Example:
    >>> from layernas.trainers import data, nats_models, train
    >>> ds = data.synthetic_dataset(num_classes=4, per_class=32, size=16)
    >>> tr, va = data.split_validation(ds, per_class=8, seed=0)
    >>> model = nats_models.build_sss((4, 4, 4, 4, 4), num_classes=4)
    >>> recipe = train.Recipe(name="tiny", epochs=1, batch_size=32, learning_rate=0.05)
    >>> result = train.train_model(model, tr, va, recipe, seed=0)
    >>> result.status
    'ok'
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layernas.trainers import data as data_lib
from layernas.trainers import loop
from layernas.trainers.loop import (
    DEFAULT_COMPILATION_CACHE, Plan, Recipe, configure_compilation_cache, init_variables, make_optimizer)

__all__ = ["DEFAULT_COMPILATION_CACHE", "NATS_12", "NATS_200", "PROXY", "RECIPES", "RECIPE_NETWORKS", "TRAINED_SEARCH",
           "ClassifierTask", "Recipe",
           "TrainResult", "compiled_steps", "configure_compilation_cache", "evaluate_model", "init_variables",
           "make_optimizer", "prepare_data", "recalibrate_batch_norm", "train_model"]

# The compiled-step cache of the training loop (shared by every task).
_STEP_CACHE = loop._STEP_CACHE

# The proxy used for search on a CPU-only machine. The LayerNAS paper trains each child for
# about 5 epochs; NATS-Bench trains with SGD-Nesterov lr 0.1, wd 5e-4, cosine, batch 256.
# We keep NATS's optimizer and 5 epochs, but train on a class-balanced subset of 500 images
# per class from the training split, of which 100 per class are held out for validation
# (never the test split): 4,000 training images, 31 steps of batch 128 per epoch. On the 2-core CPU machine
# a full-size tss child (C=16, N=5) takes ~17 min but a reduced one (C=8, N=1) ~1 min; see docs/trainers.md for the
# measured numbers. For an accelerator, use NATS_12 or NATS_200 (full data).
PROXY = Recipe(name="proxy", epochs=5, batch_size=128, learning_rate=0.1, weight_decay=5e-4,
               train_per_class=500, valid_per_class=100)

# NATS-Bench's 12-epoch schedule (the search signal of the NATS papers): full CIFAR-10 train
# split, half held out as validation as in cifar10-valid (25k / 25k).
NATS_12 = Recipe(name="nats-12", epochs=12, batch_size=256, learning_rate=0.1, weight_decay=5e-4,
                 valid_per_class=2500)

# NATS-Bench's 200-epoch tss schedule (GPU/TPU), same data split as NATS_12.
NATS_200 = NATS_12.replace(name="nats-200", epochs=200)

# The trained-search proxy: the cheapest proxy that ranks cells within a FLOPs bucket
# best in the trained-search proxy study on NATS tss (results/trained_search/, see
# docs/trained_search.md for the cost/fidelity front). 3 epochs at a constant lr 0.1 on
# 200 training images per class (100 more held out for validation), batch 64; on NATS tss
# it trains the reduced network of TRAINED_SEARCH_NETWORK (about 20 s per child on the
# 2-core CPU machine, 5 s of it compiling).
TRAINED_SEARCH = PROXY.replace(name="trained-search", epochs=3, batch_size=64, schedule="constant",
                               train_per_class=300, valid_per_class=100)

# The reduced NATS network each recipe trains (builder overrides; the full C=16, N=5 skeleton
# for a recipe not listed). They are part of a child's store key.
TRAINED_SEARCH_NETWORK = {"C": 8, "N": 1}
RECIPE_NETWORKS = {"trained-search": TRAINED_SEARCH_NETWORK}

RECIPES = {r.name: r for r in (PROXY, TRAINED_SEARCH, NATS_12, NATS_200)}


@dataclasses.dataclass
class TrainResult:
    """Outcome of :func:`train_model`.

    ``valid_accuracy`` is in percent. ``variables`` holds the final params and batch stats
    (host NumPy arrays) when training finished.
    """

    status: str
    error: str = ""
    valid_accuracy: float = float("nan")
    valid_loss: float = float("nan")
    train_loss: float = float("nan")
    train_accuracy: float = float("nan")
    epochs_done: int = 0
    steps: int = 0
    seconds: float = 0.0
    init_seconds: float = 0.0
    compile_seconds: float = 0.0
    eval_seconds: float = 0.0
    eval_compile_seconds: float = 0.0
    images_per_second: float = 0.0
    history: list = dataclasses.field(default_factory=list)
    variables: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("variables")
        return d


# ------------------------------------------------------------------------------- the task
@dataclasses.dataclass(frozen=True, eq=False)
class ClassifierTask:
    """An image classifier for :func:`layernas.trainers.loop.fit`.

    Args:
      model: a flax module called as ``model.apply(variables, x, train=bool)``; BatchNorm
        statistics (any non-param collections) are updated in training mode.
      train: the training set (uint8 images; normalised with its channel stats). None for
        a task that only compiles (:func:`compiled_steps`).
      num_classes: default ``train.num_classes``.
      label_smoothing, augment: the recipe's (they change the compiled step).
      init_method: "numpy" (fast) or "flax" (see :func:`~layernas.trainers.loop.init_variables`).
    """

    model: Any
    train: data_lib.ImageDataset | None = None
    num_classes: int | None = None
    label_smoothing: float = 0.0
    augment: bool = True
    init_method: str = "numpy"

    @classmethod
    def for_recipe(cls, model, train, recipe: Recipe, **kw) -> "ClassifierTask":
        return cls(model, train, label_smoothing=recipe.label_smoothing, augment=recipe.augment, **kw)

    @property
    def classes(self) -> int:
        return self.num_classes if self.num_classes is not None else self.train.num_classes

    @property
    def cache_key(self):
        return ("classifier", self.model, self.classes, self.label_smoothing, self.augment)

    def init(self, seed: int):
        return init_variables(self.model, self.train.images.shape, seed, self.init_method)

    def plan(self, recipe: Recipe, num_devices: int) -> Plan:
        batch = min(recipe.batch_size, (len(self.train) // num_devices) * num_devices)
        if batch < 1:
            raise ValueError(f"training set of {len(self.train)} images is too small for {num_devices} devices")
        return Plan(batch, len(self.train) // batch, recipe.epochs)

    def batches(self, recipe: Recipe, plan: Plan, seed: int):
        for epoch in range(plan.epochs):
            for idx in data_lib.epoch_batches(len(self.train), plan.batch, seed, epoch):
                yield epoch, {"images": self.train.images[idx], "labels": self.train.labels[idx]}

    def consts(self, recipe: Recipe):
        return self.train.channel_stats()

    def divergence_limit(self, recipe: Recipe) -> float:
        return recipe.divergence_factor * math.log(max(self.classes, 2))

    def loss(self, params, model_state, batch, key, consts):
        images = data_lib.random_crop_flip(key, batch["images"]) if self.augment else batch["images"]
        x = data_lib.normalize(images, *consts)
        logits, updates = self.model.apply({"params": params, **model_state}, x, train=True,
                                           mutable=list(model_state))
        targets = jax.nn.one_hot(batch["labels"], self.classes)
        if self.label_smoothing:
            targets = optax.smooth_labels(targets, self.label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        acc = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
        return loss, (dict(updates), {"loss": loss, "accuracy": acc})

    def batch_statistics(self, variables, batch, consts):
        """The BatchNorm statistics of one unaugmented batch, in training mode: the tree of
        ``variables["batch_stats"]``, each entry that batch's mean or variance.

        flax's update is ``new = m * old + (1 - m) * batch`` with the layer's momentum
        ``m``; from ``old = 0`` it gives ``(1 - m) * batch`` and from ``old = 1`` it gives
        ``m + (1 - m) * batch``, so both together give ``batch`` for any momentum (the two
        forward passes are the same computation, which XLA computes once).
        """
        x = data_lib.normalize(batch["images"], *consts)

        def updated(start):
            _, new = self.model.apply({**variables, "batch_stats": start}, x, train=True, mutable=["batch_stats"])
            return new["batch_stats"]

        stats = variables["batch_stats"]
        from_zero = updated(jax.tree_util.tree_map(jnp.zeros_like, stats))
        from_one = updated(jax.tree_util.tree_map(jnp.ones_like, stats))
        return jax.tree_util.tree_map(lambda z, o: z / (1.0 - (o - z)), from_zero, from_one)

    def eval_metrics(self, variables, batch, consts):
        """``(loss_sum, correct_sum)`` over the batch's unmasked images."""
        logits = self.model.apply(variables, data_lib.normalize(batch["images"], *consts), train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        correct = jnp.argmax(logits, -1) == batch["labels"]
        return jnp.sum(loss * batch["mask"]), jnp.sum(correct * batch["mask"])


def compiled_steps(model, recipe: Recipe, num_classes: int, total_steps: int, steps_per_epoch: int,
                   placement=None) -> loop.CompiledSteps:
    """``(tx, train_step, eval_step, batch_statistics)`` of a classifier of this shape, cached (the ones
    :func:`train_model` uses; see :func:`layernas.trainers.loop.compiled_steps`).

    ``train_step(state, {"images": uint8, "labels"}, key, (mean, std)) -> (state, metrics)``
    is jitted with ``state`` donated; it augments on device.
    ``eval_step(variables, {"images", "labels", "mask"}, (mean, std)) -> (loss_sum, correct_sum)``.

    Args:
      placement: None (default device), a ``jax.Device`` (candidate-parallel), or a
        ``jax.sharding.Mesh`` with a ``"data"`` axis (data-parallel; state replicated).
    """
    task = ClassifierTask.for_recipe(model, None, recipe, num_classes=num_classes)
    return loop.compiled_steps(task, recipe, total_steps, steps_per_epoch, placement)


# ------------------------------------------------------------------------------- training
def recalibrate_batch_norm(batch_statistics, images: np.ndarray, variables, consts, batches: int, batch_size: int,
                           seed: int, epoch: int, placer: loop.Placer):
    """``variables`` with BatchNorm's running statistics replaced by the mean of the
    per-batch statistics over ``batches`` unaugmented training batches (at most one pass
    over ``images``, in the shuffled order of ``(seed, epoch)``): "precise BatchNorm".

    Args:
      batch_statistics: the jitted :meth:`ClassifierTask.batch_statistics` (the
        ``batch_statistics`` of :func:`compiled_steps`).
      images: the training images (uint8 NHWC).
      variables: the trained ``{"params", "batch_stats", ...}``; returned unchanged if it
        has no ``batch_stats``.
      consts: the task's normalisation statistics (on the placement).
      batches, batch_size: how many batches of what size.
      seed, epoch: the batch order (training uses epochs ``0 .. epochs - 1``; pass
        ``epochs`` for an order training has not seen).
      placer: where the batches go (as in training).

    Returns:
      the variables, with new ``batch_stats``.
    """
    if "batch_stats" not in variables or batches < 1:
        return variables
    total, n = None, 0
    for idx in data_lib.epoch_batches(len(images), batch_size, seed, epoch):
        if n == batches:
            break
        stats = batch_statistics(variables, placer.put_batch({"images": images[idx]}), consts)
        total = stats if total is None else jax.tree_util.tree_map(jnp.add, total, stats)
        n += 1
    if n == 0:
        return variables
    return {**variables, "batch_stats": jax.tree_util.tree_map(lambda s: s / n, total)}


def evaluate_model(eval_step, variables, ds: data_lib.ImageDataset, consts, batch_size: int,
                   placer: loop.Placer, timings: dict | None = None) -> tuple[float, float]:
    """(accuracy in percent, mean loss) of ``variables`` on ``ds``. The last batch is padded
    and masked, so one compiled shape serves every batch.

    Args:
      timings: if given, gets ``first_batch_seconds`` (the first batch, synchronised: it
        includes the compile when the shape is new) and ``seconds`` (all batches).
    """
    t0 = time.perf_counter()
    bs = max(placer.size, (min(batch_size, len(ds)) // placer.size) * placer.size)
    loss_sum, correct = 0.0, 0.0
    pending = []
    for start in range(0, len(ds), bs):
        idx = np.arange(start, min(start + bs, len(ds)))
        mask = np.zeros(bs, np.float32)
        mask[: len(idx)] = 1.0
        idx = np.pad(idx, (0, bs - len(idx)), mode="edge")
        batch = placer.put_batch({"images": ds.images[idx], "labels": ds.labels[idx], "mask": mask})
        pending.append(eval_step(variables, batch, consts))
        if timings is not None and start == 0:
            jax.block_until_ready(pending[0])
            timings["first_batch_seconds"] = time.perf_counter() - t0
    for l, c in pending:
        loss_sum += float(l)
        correct += float(c)
    if timings is not None:
        timings["seconds"] = time.perf_counter() - t0
    return 100.0 * correct / len(ds), loss_sum / len(ds)


def train_model(model, train: data_lib.ImageDataset, valid: data_lib.ImageDataset, recipe: Recipe, seed: int,
                *, placement=None, init_method: str = "numpy", keep_variables: bool = True,
                initial_variables=None) -> TrainResult:
    """Train ``model`` on ``train`` with ``recipe``; evaluate on ``valid``.

    Args:
      model: a flax module called as ``model.apply(variables, x, train=bool)``; BatchNorm
        statistics (any non-param collections) are updated in training mode.
      train, valid: datasets (uint8 images). Normalisation uses the train split's stats.
      recipe: the training config. ``recipe.train_per_class``/``valid_per_class`` are
        applied by the caller (see :func:`prepare_data`), not here.
      seed: init and shuffle/augmentation seed.
      placement: None, a device, or a Mesh with a "data" axis (see :func:`compiled_steps`).
      init_method: "numpy" (fast) or "flax".
      keep_variables: return the final variables (host arrays) in the result.
      initial_variables: start from these variables instead of a fresh init (a warm
        start, see :mod:`layernas.trainers.warm_start`).

    Returns:
      a :class:`TrainResult`; ``status="failed"`` with the reason on NaN or divergence.
      With ``recipe.ema_decay`` the EMA parameters are evaluated.
    """
    t0 = time.perf_counter()
    task = ClassifierTask.for_recipe(model, train, recipe, init_method=init_method)
    out = loop.fit(task, recipe, seed, placement=placement, initial_variables=initial_variables)
    res = TrainResult(status=out.status, error=out.error, epochs_done=out.epochs_done, steps=out.steps,
                      init_seconds=out.init_seconds, compile_seconds=out.compile_seconds,
                      history=[{"epoch": e, "train_loss": m["loss"], "train_accuracy": 100.0 * m["accuracy"]}
                               for e, m in enumerate(out.epoch_metrics)])
    if res.history:
        res.train_loss, res.train_accuracy = res.history[-1]["train_loss"], res.history[-1]["train_accuracy"]
    if not out.ok:
        res.seconds = time.perf_counter() - t0
        return res
    variables = out.variables if not recipe.ema_decay else {**out.variables, "params": out.ema}
    if recipe.bn_recalibration_batches:
        plan = task.plan(recipe, out.placer.size)
        variables = recalibrate_batch_norm(out.compiled.batch_statistics, train.images, variables, out.consts,
                                           recipe.bn_recalibration_batches, plan.batch, seed, plan.epochs, out.placer)
    timings: dict = {}
    acc, loss = evaluate_model(out.compiled.eval_step, variables, valid, out.consts, recipe.eval_batch_size,
                               out.placer, timings)
    res.valid_accuracy, res.valid_loss = acc, loss
    res.eval_seconds, res.eval_compile_seconds = timings["seconds"], timings["first_batch_seconds"]
    res.seconds = time.perf_counter() - t0
    res.images_per_second = out.examples_seen / max(out.train_seconds - out.compile_seconds, 1e-9)
    if not math.isfinite(loss):
        res.status, res.error = "failed", f"validation loss is {loss} after training"
    if keep_variables:
        res.variables = jax.device_get(variables)
    return res


def prepare_data(root, recipe: Recipe, *, split: str = "train", seed: int = 0, cache_dir=data_lib.DEFAULT_CACHE_DIR):
    """Load ``root/split`` and hold out the recipe's validation split.

    The training subset (``recipe.train_per_class``) counts the held-out images too: with
    ``train_per_class=500, valid_per_class=100`` each class gives 400 training and 100
    validation images. The subset and split are deterministic in ``seed``.

    Returns:
      (train, valid) :class:`~layernas.trainers.data.ImageDataset` s.
    """
    ds = data_lib.load_image_folder(root, split, per_class=recipe.train_per_class,
                                    subsample_seed=None if recipe.train_per_class is None else seed,
                                    cache_dir=cache_dir)
    if recipe.valid_per_class is None:
        raise ValueError(f"recipe {recipe.name!r} has valid_per_class=None; a held-out validation split is required")
    return data_lib.split_validation(ds, per_class=recipe.valid_per_class, seed=seed)
