"""The training loop: one recipe type, one optimizer factory, one cached jitted step.

Every model family (the classifiers of :mod:`layernas.trainers.train`, the hyperprior codec
of :mod:`layernas.trainers.codec_train`, the JPEG sandwich of
:mod:`layernas.trainers.sandwich_train`) trains through :func:`fit`, in the style of
big_vision and the flax examples: a small **task** object says what is particular to the
family, and the loop does the rest.

A task has

* ``cache_key``: a hashable of everything the compiled program depends on besides the
  recipe (the model, its shapes); children of the same shape share compiled steps;
* ``init(seed) -> variables``: ``{"params": ..., <other collections>...}``;
* ``loss(params, model_state, batch, key, consts) -> (loss, (model_state, metrics))``:
  ``metrics`` holds a ``"loss"`` entry; ``key`` is the step's ``jax.random`` key;
* ``eval_metrics(variables, batch, consts)`` (optional): the jitted evaluation;
* ``batch_statistics(variables, batch, consts)`` (optional): one batch's BatchNorm
  statistics, for precise BatchNorm (``Recipe.bn_recalibration_batches``);
* ``plan(recipe, num_devices) -> Plan``: the batch, steps per epoch and epochs;
* ``batches(recipe, plan, seed)``: an iterator of ``(epoch, host batch dict)``;
* ``consts(recipe)``: arrays every step sees (normalisation stats, lambda, tables);
* ``divergence_limit(recipe)``: a loss above it fails the run (None: only non-finite does).

:class:`Recipe` is the one training config (frozen, validated once); :func:`make_optimizer`
the one optax factory (SGD / Adam / AdamW, warm-up + cosine or constant schedules, gradient
clipping); :func:`compiled_steps` jits one train step per (task shape, optimizer,
placement) with the state donated, plus the task's eval step, and caches both; :func:`fit`
runs the steps with explicit ``jax.random`` keys (the step key is
``fold_in(key(seed), step)``), an optional parameter EMA, NaN/divergence checks every
``recipe.check_every`` steps, on one device, a given device, or data-parallel over a mesh.

Example:
    >>> from layernas.trainers import data, nats_models, train
    >>> ds = data.synthetic_dataset(num_classes=4, per_class=32, size=16)
    >>> tr, va = data.split_validation(ds, per_class=8, seed=0)
    >>> task = train.ClassifierTask(nats_models.build_sss((4, 4, 4, 4, 4), num_classes=4), tr)
    >>> out = fit(task, Recipe(name="tiny", epochs=1, batch_size=32, learning_rate=0.05), seed=0)
    >>> out.status, len(out.step_metrics) == out.steps
    ('ok', True)
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from layernas.progress import report_child_progress

DEFAULT_COMPILATION_CACHE = Path(os.environ.get("LAYERNAS_CACHE", Path.home() / ".cache" / "layernas")) / "jax"


def configure_compilation_cache(path: str | Path | None = DEFAULT_COMPILATION_CACHE) -> None:
    """Turn on JAX's persistent compilation cache for every compile, however short.

    JAX's defaults skip compiles under 1 s, which on CPU is all of them; with a warm cache
    a train-step compile becomes a cache read (``benchmarks/child_fixed_costs.py`` measures
    a new process's child on a warm cache against a cold one). ``None`` leaves JAX alone.
    """
    if path is None:
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


# ------------------------------------------------------------------------------- recipe
@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train one model: the one config type of every training run.

    Length and data:
      name: a label recorded with results.
      epochs: passes over a dataset (classifiers).
      steps: a fixed number of optimizer steps on streamed batches (codecs; None: use
        ``epochs``).
      batch_size: global batch (split across devices when data-parallel).
      seed: the run's seed, for tasks whose callers keep it in the recipe (codecs).

    Optimizer (:func:`make_optimizer`):
      optimizer: "sgd" (momentum), "adam", or "adamw" (decoupled weight decay).
      learning_rate: peak learning rate.
      momentum, nesterov: SGD momentum settings (momentum 0: plain SGD).
      weight_decay: coupled L2 on every parameter for "sgd"/"adam" (as PyTorch and
        NATS-Bench), decoupled for "adamw"; 0 disables.
      grad_clip: global-norm gradient clip (0 disables).
      schedule: "cosine" (decay to ``final_lr_fraction`` of the peak over all steps) or
        "constant".
      warmup_epochs, warmup_steps: linear warm-up from 0 before the schedule, in epochs
        (may be fractional) and/or steps; they add up.
      final_lr_fraction: where the cosine ends, as a fraction of the peak.
      ema_decay: decay of a parameter EMA kept beside the parameters (0: none).

    Classifier data (:mod:`layernas.trainers.train`):
      label_smoothing: 0 disables.
      augment: random crop (4 px padding) + horizontal flip, on device.
      train_per_class: images per class taken from the training split before holding out
        validation (None: all).
      valid_per_class: images per class held out from train as the validation split.
      eval_batch_size: batch for evaluation.
      bn_recalibration_batches: before evaluation, replace BatchNorm's running statistics
        by the mean of the per-batch statistics over this many training batches (at most
        one pass, unaugmented), computed with the final parameters ("precise BatchNorm").
        For short runs of networks with a slow BatchNorm momentum (0.99 in MobileNetV3's
        convention), whose running statistics have not converged; 0 keeps them.

    Codec data (:mod:`layernas.trainers.codec_train`, :mod:`~layernas.trainers.sandwich_train`):
      lmbda: the rate-distortion trade-off (loss = lmbda * 255^2 * MSE + bpp).
      crop_size: crop side in pixels (a multiple of 64).

    Checks:
      check_every: steps between NaN/divergence checks (each one syncs with the device).
      divergence_factor: a classifier's training loss above ``factor * ln(num_classes)``
        (chance level times this) counts as divergence.
    """

    name: str = "custom"
    epochs: int = 5
    steps: int | None = None
    batch_size: int = 128
    seed: int = 0
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    grad_clip: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_steps: int = 0
    final_lr_fraction: float = 0.0
    ema_decay: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = True
    train_per_class: int | None = None
    valid_per_class: int | None = None
    eval_batch_size: int = 500
    bn_recalibration_batches: int = 0
    lmbda: float = 0.0130
    crop_size: int = 64
    check_every: int = 20
    divergence_factor: float = 10.0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r}; expected one of {', '.join(map(repr, OPTIMIZERS))}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule={self.schedule!r}; expected 'cosine' or 'constant'")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs={self.epochs}, batch_size={self.batch_size}; expected positive integers")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps {self.steps} and batch_size {self.batch_size} must be >= 1")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing}; expected a value in [0, 1)")
        if self.crop_size % 64 or self.crop_size < 64:
            raise ValueError(f"crop_size {self.crop_size} must be a multiple of 64")
        if not (self.lmbda > 0 and math.isfinite(self.lmbda)):
            raise ValueError(f"lmbda {self.lmbda}: expected a positive number")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate {self.learning_rate}: expected a positive number")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay {self.ema_decay}: expected a number in [0, 1)")
        if self.warmup_steps < 0 or self.warmup_epochs < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps}, warmup_epochs={self.warmup_epochs}, "
                             f"grad_clip={self.grad_clip}, weight_decay={self.weight_decay}; expected >= 0")
        if not 0 <= self.final_lr_fraction <= 1:
            raise ValueError(f"final_lr_fraction {self.final_lr_fraction}: expected a number in [0, 1]")
        if self.check_every < 1:
            raise ValueError(f"check_every={self.check_every}; expected a positive integer")
        if self.bn_recalibration_batches < 0:
            raise ValueError(f"bn_recalibration_batches={self.bn_recalibration_batches}; expected an integer >= 0")

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def identity(self, *, label: bool = False) -> dict:
        """The fields that decide what a training run produces, as a dict: what stored
        children are keyed by. Fields added after children were first stored
        (``ADDED_FIELDS``) are left out while at their default, so those children keep
        their keys.

        Args:
          label: keep ``name`` and ``check_every`` (which change nothing trained).

        Example:
            >>> Recipe(name="a").identity() == Recipe(name="b").identity()
            True
            >>> "bn_recalibration_batches" in Recipe(bn_recalibration_batches=4).identity()
            True
        """
        fields = dataclasses.asdict(self)
        for name, default in ADDED_FIELDS.items():
            if fields[name] == default:
                del fields[name]
        if not label:
            del fields["name"], fields["check_every"]
        return fields


ADDED_FIELDS = {"bn_recalibration_batches": 0}   # Recipe fields newer than stored children


OPTIMIZERS = ("sgd", "adam", "adamw")


# ---------------------------------------------------------------------------- optimizer
def warmup_steps(recipe: Recipe, steps_per_epoch: int) -> int:
    """The recipe's warm-up in steps: ``warmup_steps + round(warmup_epochs * steps_per_epoch)``."""
    return recipe.warmup_steps + int(round(recipe.warmup_epochs * steps_per_epoch))


def make_schedule(recipe: Recipe, total_steps: int, steps_per_epoch: int):
    """The learning-rate schedule of a recipe (a float or an optax schedule)."""
    warm, lr = warmup_steps(recipe, steps_per_epoch), recipe.learning_rate
    if recipe.schedule == "cosine":
        if warm:
            return optax.warmup_cosine_decay_schedule(0.0, lr, warm, max(total_steps, warm + 1),
                                                      lr * recipe.final_lr_fraction)
        return optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=recipe.final_lr_fraction)
    return lr if not warm else optax.linear_schedule(0.0, lr, warm)


def make_optimizer(recipe: Recipe, total_steps: int, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optax transformation of a recipe, with its learning-rate schedule.

    Args:
      recipe: the training config.
      total_steps: steps of the whole run (the cosine's length).
      steps_per_epoch: converts ``recipe.warmup_epochs`` to steps.
    Returns:
      ``clip_by_global_norm`` (if ``grad_clip``), coupled weight decay (sgd/adam with
      ``weight_decay``), then the optimizer.
    """
    lr = make_schedule(recipe, total_steps, steps_per_epoch)
    parts = [optax.clip_by_global_norm(recipe.grad_clip)] if recipe.grad_clip else []
    if recipe.optimizer == "adamw":
        parts.append(optax.adamw(lr, weight_decay=recipe.weight_decay))
    else:
        if recipe.weight_decay:
            parts.append(optax.add_decayed_weights(recipe.weight_decay))
        if recipe.optimizer == "adam":
            parts.append(optax.adam(lr))
        else:
            parts.append(optax.sgd(lr, momentum=recipe.momentum or None, nesterov=recipe.nesterov))
    return optax.chain(*parts)


def _optimizer_key(recipe: Recipe, total_steps: int, steps_per_epoch: int) -> tuple:
    return (recipe.optimizer, recipe.learning_rate, recipe.momentum, recipe.nesterov, recipe.weight_decay,
            recipe.grad_clip, recipe.schedule, warmup_steps(recipe, steps_per_epoch), recipe.final_lr_fraction,
            recipe.ema_decay, total_steps)


# --------------------------------------------------------------------------------- init
def _leaf_name(path) -> str:
    last = path[-1]
    return str(getattr(last, "key", getattr(last, "name", last)))


def init_variables(model, input_shape: tuple[int, ...], seed: int, method: str = "numpy", **apply_kwargs):
    """The variables of a flax ``model`` called as ``model(x, train=False, **apply_kwargs)``.

    ``method="numpy"`` evaluates the variable shapes with ``jax.eval_shape`` (no compile)
    and draws them with NumPy: conv kernels He-normal over fan-out, dense kernels uniform
    in +-1/sqrt(fan_in) (PyTorch's Linear), biases 0, BatchNorm scale 1 / mean 0 / var 1.
    Variables with other names fall back to flax's own ``init``. ``method="flax"`` always
    uses ``model.init`` with ``jax.random.key(seed)``.

    Args:
      model: the flax module.
      input_shape: the input's shape (only ``input_shape[1:]`` matters; batch 1 is used).
      seed: the init seed.
      method: "numpy" or "flax".
    Returns:
      the variables as host arrays.
    """
    x = jnp.zeros((1,) + tuple(input_shape[1:]), jnp.float32)
    if method == "flax":
        return jax.device_get(model.init(jax.random.key(seed), x, train=False, **apply_kwargs))
    if method != "numpy":
        raise ValueError(f"init method {method!r}; expected 'numpy' or 'flax'")
    shapes = _variable_shapes(model, x.shape, apply_kwargs)
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
            return init_variables(model, input_shape, seed, "flax", **apply_kwargs)
        out.append(np.asarray(v, dtype=leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


_SHAPE_CACHE: "collections.OrderedDict[tuple, Any]" = collections.OrderedDict()


def _variable_shapes(model, x_shape, apply_kwargs):
    """``jax.eval_shape`` of ``model.init``, cached per (model, input shape): tracing a
    NATS net's init costs ~0.1-0.5 s on CPU, and a search meets the same shapes often."""
    key = (model, tuple(x_shape), tuple(sorted(apply_kwargs.items())))
    try:
        hit = _SHAPE_CACHE.get(key)
    except TypeError:  # an unhashable model or argument: no caching
        key, hit = None, None
    if hit is None:
        x = jnp.zeros(x_shape, jnp.float32)
        hit = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False, **apply_kwargs))
        if key is not None:
            _SHAPE_CACHE[key] = hit
            while len(_SHAPE_CACHE) > MAX_CACHED_SHAPES:
                _SHAPE_CACHE.popitem(last=False)
    return hit


# ------------------------------------------------------------------------------ placement
class Placer:
    """Puts state and constants (replicated) and batches (split on 'data') where a
    placement says: None (the default device), a ``jax.Device``, or a
    ``jax.sharding.Mesh`` with a ``"data"`` axis (data-parallel; state replicated)."""

    def __init__(self, placement=None):
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

    @property
    def key(self):
        if self.placement is None:
            return None
        if isinstance(self.placement, jax.sharding.Mesh):
            return ("mesh", tuple(d.id for d in self.placement.devices.flat), self.placement.axis_names)
        return ("device", self.placement.id)

    def put_state(self, tree):
        return jax.device_put(tree, self.state) if self.state is not None else jax.device_put(tree)

    def put_batch(self, tree):
        return jax.device_put(tree, self.batch) if self.batch is not None else jax.device_put(tree)


def data_parallel_mesh(num_devices: int) -> jax.sharding.Mesh:
    """A ``("data",)`` mesh over the first ``num_devices`` local devices."""
    devices = jax.local_devices()
    if num_devices > len(devices):
        raise ValueError(f"data_parallel={num_devices} needs that many devices (have {len(devices)})")
    return jax.sharding.Mesh(np.array(devices[:num_devices]), ("data",))


# -------------------------------------------------------------------------- compiled steps
class CompiledSteps(NamedTuple):
    """What :func:`compiled_steps` caches for one shape.

    ``train_step(state, batch, key, consts) -> (state, metrics)`` is jitted with ``state``
    donated; ``eval_step(variables, batch, consts)`` is the task's jitted ``eval_metrics``
    and ``batch_statistics(variables, batch, consts)`` its jitted ``batch_statistics``
    (precise BatchNorm; each None when the task has none).
    """

    tx: optax.GradientTransformation
    train_step: Any
    eval_step: Any
    batch_statistics: Any = None


# Compiled steps by shape, least recently used first. A search trains each architecture
# once, so only a few entries are ever reused; the bound keeps memory flat over long runs.
MAX_CACHED_SHAPES = 16
_STEP_CACHE: "collections.OrderedDict[tuple, CompiledSteps]" = collections.OrderedDict()
# XLA:CPU maps the code of every compiled kernel into memory regions of its own: one
# MobileNetV2-CIFAR train step holds ~1,700 of them, and a process past the kernel's
# vm.max_map_count (65,530 by default) aborts inside LLVM ("Unable to allocate section
# memory"), which a search of ~40 MobileNet children reached with 64 cached shapes. So
# compiled steps are also evicted, oldest first, while the process maps more than this
# fraction of the limit.
MAP_COUNT_FRACTION = 0.5


def memory_map_usage() -> tuple[int, int] | None:
    """``(memory regions this process maps, the kernel's limit vm.max_map_count)``, or None
    where ``/proc`` does not say (not Linux)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            regions = sum(1 for _ in f)
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return None
    return regions, limit


def _evict_compiled_steps() -> None:
    """Drop the oldest compiled steps beyond :data:`MAX_CACHED_SHAPES`, then while the
    process maps more than :data:`MAP_COUNT_FRACTION` of its limit (keeping the newest)."""
    while len(_STEP_CACHE) > MAX_CACHED_SHAPES:
        _STEP_CACHE.popitem(last=False)
    usage = memory_map_usage()
    while usage is not None and len(_STEP_CACHE) > 1 and usage[0] > MAP_COUNT_FRACTION * usage[1]:
        _STEP_CACHE.popitem(last=False)
        gc.collect()  # the executables (and their code regions) go with the last reference
        usage = memory_map_usage()


def make_train_step(task, tx: optax.GradientTransformation, ema_decay: float):
    """The (unjitted) step: one optimizer update on ``task.loss``, then the EMA.

    ``state`` is ``{"params", "model_state", "opt_state", "ema", "step"}``; ``ema`` is None
    when ``ema_decay`` is 0. The step's key is ``fold_in(key, state["step"])``.
    """

    def train_step(state, batch, key, consts):
        key = jax.random.fold_in(key, state["step"])
        (_, (model_state, metrics)), grads = jax.value_and_grad(task.loss, has_aux=True)(
            state["params"], state["model_state"], batch, key, consts)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        d = ema_decay
        ema = jax.tree_util.tree_map(lambda e, p: d * e + (1 - d) * p, state["ema"], params) if d > 0 else None
        new = {"params": params, "model_state": model_state, "opt_state": opt_state, "ema": ema,
               "step": state["step"] + 1}
        return new, metrics

    return train_step


def compiled_steps(task, recipe: Recipe, total_steps: int, steps_per_epoch: int, placement=None) -> CompiledSteps:
    """The task's jitted train and eval steps for this recipe and placement, cached.

    The cache key is ``task.cache_key``, the recipe's optimizer fields, the run's length
    (the schedule) and the placement: tasks of the same shape (children of one search that
    share an architecture, runs at other seeds or lambdas) share one compile.
    """
    placer = placement if isinstance(placement, Placer) else Placer(placement)
    key = (task.cache_key, _optimizer_key(recipe, total_steps, steps_per_epoch), placer.key)
    if key in _STEP_CACHE:
        _STEP_CACHE.move_to_end(key)
        return _STEP_CACHE[key]
    tx = make_optimizer(recipe, total_steps, steps_per_epoch)
    step = make_train_step(task, tx, recipe.ema_decay)
    if isinstance(placer.placement, jax.sharding.Mesh):
        repl = placer.state
        train_jit = jax.jit(step, donate_argnums=0, out_shardings=(repl, repl))
        jit_replicated = lambda fn: jax.jit(fn, out_shardings=repl)  # noqa: E731
    else:
        train_jit = jax.jit(step, donate_argnums=0)
        jit_replicated = jax.jit
    eval_jit, stats_jit = (None if fn is None else jit_replicated(fn) for fn in
                           (getattr(task, "eval_metrics", None), getattr(task, "batch_statistics", None)))
    _STEP_CACHE[key] = entry = CompiledSteps(tx, train_jit, eval_jit, stats_jit)
    _evict_compiled_steps()
    return entry


# ---------------------------------------------------------------------------------- fit
class Plan(NamedTuple):
    """A run's shape: the global ``batch``, ``steps_per_epoch`` and ``epochs``."""

    batch: int
    steps_per_epoch: int
    epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    ``step_metrics`` has one dict of host floats per step; ``state`` is the final train
    state (on device; None after a failure); ``variables`` the final ``{"params", ...}``
    and ``ema`` the EMA parameters (the parameters when the recipe keeps no EMA).
    """

    status: str
    error: str = ""
    steps: int = 0
    epochs_done: int = 0
    step_metrics: list = dataclasses.field(default_factory=list)
    epoch_metrics: list = dataclasses.field(default_factory=list)
    init_seconds: float = 0.0
    compile_seconds: float = 0.0
    train_seconds: float = 0.0
    examples_seen: int = 0
    variables: Any = None
    ema: Any = None
    compiled: CompiledSteps | None = None
    consts: Any = None
    placer: Placer | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def initial_state(variables, tx: optax.GradientTransformation, ema_decay: float, placer: Placer):
    """The train state that starts from ``variables``, where ``placer`` puts state.

    The arrays are fresh copies: the train step donates its state, and the caller keeps
    ``variables`` (e.g. a model to fine-tune from).
    """
    copy = lambda tree: jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), tree)  # noqa: E731
    params = copy(variables["params"])
    state = {"params": params, "model_state": copy({k: v for k, v in variables.items() if k != "params"}),
             "opt_state": tx.init(params), "ema": copy(params) if ema_decay > 0 else None,
             "step": jnp.zeros((), jnp.int32)}
    return placer.put_state(state) if placer.state is not None else state


def fit(task, recipe: Recipe, seed: int, *, placement=None, initial_variables=None, key_seed: int | None = None,
        log_every: int = 0) -> FitResult:
    """Train ``task`` with ``recipe``.

    Args:
      task: the model family's task object (see the module docstring).
      recipe: the training config.
      seed: init and data seed (``task.init(seed)``, ``task.batches(..., seed)``).
      placement: None, a ``jax.Device``, or a Mesh with a "data" axis (see :class:`Placer`).
      initial_variables: start from these variables (copied) instead of ``task.init(seed)``.
      key_seed: the step keys are ``fold_in(jax.random.key(key_seed), step)``
        (default ``seed``).
      log_every: print the metrics every this many steps (0: silent).
    Returns:
      a :class:`FitResult`; ``status="failed"`` with the reason on a non-finite loss or
      one above ``task.divergence_limit(recipe)``.
    """
    t0 = time.perf_counter()
    placer = Placer(placement)
    if recipe.batch_size % placer.size:
        raise ValueError(f"batch_size={recipe.batch_size} does not split over {placer.size} devices")
    plan = task.plan(recipe, placer.size)
    variables = task.init(seed) if initial_variables is None else initial_variables
    t_init = time.perf_counter()
    compiled = compiled_steps(task, recipe, plan.total_steps, plan.steps_per_epoch, placer)
    state = initial_state(variables, compiled.tx, recipe.ema_decay, placer)
    consts = placer.put_state(task.consts(recipe))
    key = jax.random.wrap_key_data(placer.put_state(jax.random.key_data(
        jax.random.key(seed if key_seed is None else key_seed))))
    limit = task.divergence_limit(recipe)
    res = FitResult(status="ok", init_seconds=t_init - t0, compiled=compiled, consts=consts, placer=placer)
    pending: list = []
    epoch_rows: list = []
    current_epoch = 0

    def close_epoch(epoch):
        res.epoch_metrics.append({k: float(np.mean([m[k] for m in epoch_rows])) for k in epoch_rows[0]})
        res.epochs_done = epoch + 1
        epoch_rows.clear()

    for epoch, host_batch in task.batches(recipe, plan, seed):
        if epoch != current_epoch:
            close_epoch(current_epoch)
            current_epoch = epoch
        batch = placer.put_batch(host_batch)
        ts = time.perf_counter()
        state, metrics = compiled.train_step(state, batch, key, consts)
        if res.steps == 0:
            jax.block_until_ready(metrics)
            res.compile_seconds = time.perf_counter() - ts
        res.steps += 1
        res.examples_seen += plan.batch
        if plan.epochs > 1:  # the search's progress bar, if one listens
            report_child_progress(epoch=epoch + 1, epochs=plan.epochs,
                                  step=(res.steps - 1) % plan.steps_per_epoch + 1, steps=plan.steps_per_epoch)
        else:  # a step-only run (the codecs)
            report_child_progress(step=res.steps, steps=plan.total_steps)
        pending.append(metrics)
        end_of_epoch = res.steps % plan.steps_per_epoch == 0
        if res.steps % recipe.check_every == 0 or end_of_epoch or res.steps == plan.total_steps:
            rows = [{k: float(v) for k, v in m.items()} for m in jax.device_get(pending)]
            pending = []
            for j, row in enumerate(rows):
                step = res.steps - len(rows) + j
                loss = row["loss"]
                if not math.isfinite(loss) or (limit is not None and loss > limit):
                    what = ("non-finite" if not math.isfinite(loss) else
                            f"diverged (> {limit:.3g} = {recipe.divergence_factor} x chance)")
                    res.status = "failed"
                    res.error = f"training loss {what} at epoch {epoch} step {step}: {loss:.4g}"
                    res.train_seconds = time.perf_counter() - t_init
                    return res
                res.step_metrics.append(row)
                epoch_rows.append(row)
                if log_every and (step % log_every == 0 or step == plan.total_steps - 1):
                    print(f"step {step:5d} " + " ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    if epoch_rows:
        close_epoch(current_epoch)
    res.train_seconds = time.perf_counter() - t_init
    res.variables = {"params": state["params"], **state["model_state"]}
    res.ema = state["ema"] if state["ema"] is not None else state["params"]
    return res


def stream_batches(plan: Plan, make_batch) -> Iterator[tuple[int, dict]]:
    """``(0, make_batch(i))`` for every step of a single-"epoch" streamed run."""
    for i in range(plan.total_steps):
        yield 0, make_batch(i)
