"""Training one child with optax: recipes, fast init, one cached jitted step per shape.

* :class:`Recipe` is the whole training config (optimizer, schedule, regularisation, data
  subset, batch, epochs). :data:`PROXY` is the named CPU-feasible proxy; :data:`NATS_200`
  and :data:`NATS_12` are the NATS-Bench schedules for accelerators.
* :func:`init_variables` builds a model's variables from ``jax.eval_shape`` plus NumPy
  draws: no per-shape RNG compile (flax ``init`` costs seconds per new shape on CPU).
* :func:`compiled_steps` jits exactly one train step (state donated) and one eval step per
  (model, optimizer config, batch shape, placement) and caches them.
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

import collections
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layernas.trainers import data as data_lib

DEFAULT_COMPILATION_CACHE = Path(os.environ.get("LAYERNAS_CACHE", Path.home() / ".cache" / "layernas")) / "jax"


def configure_compilation_cache(path: str | Path | None = DEFAULT_COMPILATION_CACHE) -> None:
    """Turn on JAX's persistent compilation cache for every compile, however short.

    JAX's defaults skip compiles under 1 s, which on CPU is all of them; a warm cache cuts
    a train-step compile from ~0.7 s to ~0.02 s (DESIGN.md). ``None`` leaves JAX alone.
    """
    if path is None:
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train one child.

    Attributes:
      name: a label recorded with results.
      epochs: passes over the training subset.
      batch_size: global batch (split across devices when data-parallel).
      optimizer: "sgd" (momentum, coupled L2 weight decay as in PyTorch/NATS) or "adamw".
      learning_rate: peak learning rate.
      momentum, nesterov: SGD momentum settings.
      weight_decay: L2 (sgd) or decoupled (adamw) weight decay, on every parameter as NATS.
      label_smoothing: 0 disables.
      schedule: "cosine" (decay to 0 over all steps) or "constant".
      warmup_epochs: linear warm-up before the cosine decay (may be fractional).
      augment: random crop (4 px padding) + horizontal flip, on device.
      train_per_class: images per class taken from the training split before holding out
        validation (None: all).
      valid_per_class: images per class held out from train as the validation split.
      eval_batch_size: batch for evaluation.
      check_every: steps between NaN/divergence checks (each one syncs with the device).
      divergence_factor: a training loss above ``factor * ln(num_classes)`` (chance level
        times this) counts as divergence.
    """

    name: str = "custom"
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    augment: bool = True
    train_per_class: int | None = None
    valid_per_class: int | None = None
    eval_batch_size: int = 500
    check_every: int = 20
    divergence_factor: float = 10.0

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer={self.optimizer!r}; expected 'sgd' or 'adamw'")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule={self.schedule!r}; expected 'cosine' or 'constant'")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs={self.epochs}, batch_size={self.batch_size}; expected positive integers")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing}; expected a value in [0, 1)")

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)


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

RECIPES = {r.name: r for r in (PROXY, NATS_12, NATS_200)}


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


# ------------------------------------------------------------------------------- init
def _leaf_name(path) -> str:
    last = path[-1]
    return str(getattr(last, "key", getattr(last, "name", last)))


def init_variables(model, input_shape: tuple[int, ...], seed: int, method: str = "numpy"):
    """The model's variables, initialised from ``seed``.

    ``method="numpy"`` evaluates the variable shapes with ``jax.eval_shape`` (no compile)
    and draws them with NumPy: conv kernels He-normal over fan-out, dense kernels uniform
    in +-1/sqrt(fan_in) (PyTorch's Linear), biases 0, BatchNorm scale 1 / mean 0 / var 1.
    Variables with other names fall back to flax's own ``init``. ``method="flax"`` always
    uses ``model.init``.
    """
    x = jnp.zeros((1,) + tuple(input_shape[1:]), jnp.float32)
    if method == "flax":
        return jax.device_get(model.init(jax.random.key(seed), x, train=False))
    if method != "numpy":
        raise ValueError(f"init method {method!r}; expected 'numpy' or 'flax'")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    rng = np.random.default_rng(seed)
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    out = []
    for path, leaf in flat:
        name, shape = _leaf_name(path), tuple(leaf.shape)
        if name == "kernel" and len(shape) >= 3:
            fan_out = int(np.prod(shape[:-2])) * shape[-1]
            v = rng.standard_normal(shape) * math.sqrt(2.0 / fan_out)
        elif name == "kernel" and len(shape) == 2:
            bound = 1.0 / math.sqrt(shape[0])
            v = rng.uniform(-bound, bound, shape)
        elif name in ("bias", "mean"):
            v = np.zeros(shape)
        elif name in ("scale", "var"):
            v = np.ones(shape)
        else:
            return init_variables(model, input_shape, seed, method="flax")
        out.append(np.asarray(v, dtype=leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


# --------------------------------------------------------------------- optimiser / steps
def make_optimizer(recipe: Recipe, total_steps: int, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optax transformation of a recipe, with its learning-rate schedule."""
    warm = int(round(recipe.warmup_epochs * steps_per_epoch))
    if recipe.schedule == "cosine":
        if warm:
            lr = optax.warmup_cosine_decay_schedule(0.0, recipe.learning_rate, warm, max(total_steps, warm + 1))
        else:
            lr = optax.cosine_decay_schedule(recipe.learning_rate, max(total_steps, 1))
    else:
        lr = recipe.learning_rate if not warm else optax.linear_schedule(0.0, recipe.learning_rate, warm)
    if recipe.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=recipe.weight_decay)
    parts = [optax.add_decayed_weights(recipe.weight_decay)] if recipe.weight_decay else []
    parts.append(optax.sgd(lr, momentum=recipe.momentum or None, nesterov=recipe.nesterov))
    return optax.chain(*parts)


def _optimizer_key(recipe: Recipe) -> tuple:
    return (recipe.optimizer, recipe.learning_rate, recipe.momentum, recipe.nesterov, recipe.weight_decay,
            recipe.schedule, recipe.warmup_epochs, recipe.label_smoothing, recipe.augment)


# Compiled steps by shape, least recently used first. A search trains each architecture
# once, so only a few entries are ever reused; the bound keeps memory flat over long runs.
MAX_CACHED_SHAPES = 64
_STEP_CACHE: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()


def compiled_steps(model, recipe: Recipe, num_classes: int, total_steps: int, steps_per_epoch: int,
                   placement=None):
    """``(tx, train_step, eval_step)`` for this model shape, cached.

    ``train_step(state, images_u8, labels, key, mean, std) -> (state, metrics)`` is jitted
    with ``state`` donated; it augments on device, so images arrive as uint8.
    ``eval_step(variables, images_u8, labels, mask, mean, std) -> (loss_sum, correct_sum)``.

    Args:
      placement: None (default device), a ``jax.Device`` (candidate-parallel), or a
        ``jax.sharding.Mesh`` with a ``"data"`` axis (data-parallel; state replicated).
    """
    key = (model, _optimizer_key(recipe), num_classes, total_steps, steps_per_epoch, _placement_key(placement))
    if key in _STEP_CACHE:
        _STEP_CACHE.move_to_end(key)
        return _STEP_CACHE[key]
    tx = make_optimizer(recipe, total_steps, steps_per_epoch)
    smoothing = recipe.label_smoothing

    def loss_and_logits(params, rest, x, labels):
        out, updates = model.apply({"params": params, **rest}, x, train=True, mutable=list(rest))
        targets = jax.nn.one_hot(labels, num_classes)
        if smoothing:
            targets = optax.smooth_labels(targets, smoothing)
        return optax.softmax_cross_entropy(out, targets).mean(), (updates, out)

    def train_step(state, images, labels, key, mean, std):
        key = jax.random.fold_in(key, state["step"])
        if recipe.augment:
            images = data_lib.random_crop_flip(key, images)
        x = data_lib.normalize(images, mean, std)
        rest = state["model_state"]
        (loss, (updates, logits)), grads = jax.value_and_grad(loss_and_logits, has_aux=True)(
            state["params"], rest, x, labels)
        upd, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], upd)
        acc = jnp.mean(jnp.argmax(logits, -1) == labels)
        new = {"params": params, "model_state": dict(updates), "opt_state": opt_state, "step": state["step"] + 1}
        return new, {"loss": loss, "accuracy": acc}

    def eval_step(variables, images, labels, mask, mean, std):
        x = data_lib.normalize(images, mean, std)
        logits = model.apply(variables, x, train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = (jnp.argmax(logits, -1) == labels)
        return jnp.sum(loss * mask), jnp.sum(correct * mask)

    if isinstance(placement, jax.sharding.Mesh):
        repl = jax.sharding.NamedSharding(placement, jax.sharding.PartitionSpec())
        train_jit = jax.jit(train_step, donate_argnums=0, out_shardings=(repl, repl))
        eval_jit = jax.jit(eval_step, out_shardings=(repl, repl))
    else:
        train_jit = jax.jit(train_step, donate_argnums=0)
        eval_jit = jax.jit(eval_step)
    _STEP_CACHE[key] = entry = (tx, train_jit, eval_jit)
    while len(_STEP_CACHE) > MAX_CACHED_SHAPES:
        _STEP_CACHE.popitem(last=False)
    return entry


def _placement_key(placement):
    if placement is None:
        return None
    if isinstance(placement, jax.sharding.Mesh):
        return ("mesh", tuple(d.id for d in placement.devices.flat), placement.axis_names)
    return ("device", placement.id)


class _Placer:
    """Puts state (replicated) and batches (split on 'data') where the placement says."""

    def __init__(self, placement):
        self.placement = placement
        if isinstance(placement, jax.sharding.Mesh):
            if "data" not in placement.axis_names:
                raise ValueError(f"mesh axes {placement.axis_names}; expected a 'data' axis")
            self.state = jax.sharding.NamedSharding(placement, jax.sharding.PartitionSpec())
            self.batch = jax.sharding.NamedSharding(placement, jax.sharding.PartitionSpec("data"))
            self.size = placement.shape["data"]
        else:
            self.state = self.batch = placement
            self.size = 1

    def put_state(self, tree):
        return jax.device_put(tree, self.state) if self.state is not None else jax.device_put(tree)

    def put_batch(self, tree):
        return jax.device_put(tree, self.batch) if self.batch is not None else jax.device_put(tree)


# ------------------------------------------------------------------------------- training
def evaluate_model(eval_step, variables, ds: data_lib.ImageDataset, mean, std, batch_size: int,
                   placer: _Placer) -> tuple[float, float]:
    """(accuracy in percent, mean loss) of ``variables`` on ``ds``. The last batch is padded
    and masked, so one compiled shape serves every batch."""
    bs = max(placer.size, (min(batch_size, len(ds)) // placer.size) * placer.size)
    loss_sum, correct = 0.0, 0.0
    pending = []
    for start in range(0, len(ds), bs):
        idx = np.arange(start, min(start + bs, len(ds)))
        mask = np.zeros(bs, np.float32)
        mask[: len(idx)] = 1.0
        idx = np.pad(idx, (0, bs - len(idx)), mode="edge")
        batch = placer.put_batch((ds.images[idx], ds.labels[idx], mask))
        pending.append(eval_step(variables, *batch, mean, std))
    for l, c in pending:
        loss_sum += float(l)
        correct += float(c)
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
    """
    t0 = time.perf_counter()
    placer = _Placer(placement)
    if recipe.batch_size % placer.size:
        raise ValueError(f"batch_size={recipe.batch_size} does not split over {placer.size} devices")
    batch = min(recipe.batch_size, (len(train) // placer.size) * placer.size)
    if batch < 1:
        raise ValueError(f"training set of {len(train)} images is too small for {placer.size} devices")
    steps_per_epoch = len(train) // batch
    total = steps_per_epoch * recipe.epochs
    num_classes = train.num_classes
    mean, std = train.channel_stats()
    mean, std = placer.put_state((mean, std))

    variables = (init_variables(model, train.images.shape, seed, init_method) if initial_variables is None
                 else initial_variables)
    t_init = time.perf_counter()
    tx, train_step, eval_step = compiled_steps(model, recipe, num_classes, total, steps_per_epoch, placement)
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}
    state = placer.put_state({"params": params, "model_state": rest, "opt_state": tx.init(params),
                              "step": jnp.zeros((), jnp.int32)})
    key = placer.put_state(jax.random.key_data(jax.random.key(seed)))
    key = jax.random.wrap_key_data(key)
    limit = recipe.divergence_factor * math.log(max(num_classes, 2))
    res = TrainResult(status="ok", init_seconds=t_init - t0)

    compile_s = 0.0
    images_seen = 0
    pending: list = []
    for epoch in range(recipe.epochs):
        epoch_losses, epoch_accs = [], []
        for i, idx in enumerate(data_lib.epoch_batches(len(train), batch, seed, epoch)):
            b = placer.put_batch((train.images[idx], train.labels[idx]))
            ts = time.perf_counter()
            state, metrics = train_step(state, *b, key, mean, std)
            if res.steps == 0:
                jax.block_until_ready(metrics)
                compile_s = time.perf_counter() - ts
            res.steps += 1
            images_seen += batch
            pending.append(metrics)
            if res.steps % recipe.check_every == 0 or i == steps_per_epoch - 1:
                losses = np.asarray([float(m["loss"]) for m in pending])
                epoch_losses += list(losses)
                epoch_accs += [float(m["accuracy"]) for m in pending]
                pending = []
                bad = ~np.isfinite(losses)
                if bad.any() or losses.max() > limit:
                    step = res.steps - len(losses) + int(np.argmax(bad | (losses > limit)))
                    what = "non-finite" if bad.any() else f"diverged (> {limit:.3g} = {recipe.divergence_factor} x chance)"
                    res.status = "failed"
                    res.error = f"training loss {what} at epoch {epoch} step {step}: {losses[np.argmax(bad | (losses > limit))]:.4g}"
                    res.seconds = time.perf_counter() - t0
                    res.compile_seconds = compile_s
                    return res
        res.train_loss = float(np.mean(epoch_losses))
        res.train_accuracy = 100.0 * float(np.mean(epoch_accs))
        res.history.append({"epoch": epoch, "train_loss": res.train_loss, "train_accuracy": res.train_accuracy})
        res.epochs_done = epoch + 1
    t_train = time.perf_counter()
    variables = {"params": state["params"], **state["model_state"]}
    acc, loss = evaluate_model(eval_step, variables, valid, mean, std, recipe.eval_batch_size, placer)
    res.valid_accuracy, res.valid_loss = acc, loss
    res.seconds = time.perf_counter() - t0
    res.compile_seconds = compile_s
    res.images_per_second = images_seen / max(t_train - t_init - compile_s, 1e-9)
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
