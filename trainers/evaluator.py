"""TrainerEvaluator: the real-training :class:`~layernas.evaluator.Evaluator`.

``evaluate(trial)`` builds the child (:func:`~layernas.trainers.models.build_model` or a
``build`` callable), trains it with a :class:`~layernas.trainers.train.Recipe` on the
training split minus a held-out validation split, and returns an ``EvalResult`` whose
reward is the validation accuracy in percent and whose ``cost_seconds`` is the measured
wall time. ``trial.seed`` seeds initialisation, shuffling and augmentation.

With a ``work_dir`` every finished child is recorded under
``work_dir/children/<key>/``: an orbax checkpoint of its variables (``variables/``),
then ``result.json``. The key hashes the space name, the architecture, the seed and the
recipe, so a resumed search that meets the same trial again returns the recorded result
(``info["cached"] = True``) and never retrains it. A NaN or diverging loss gives
``EvalResult.failed(trial, reason)`` (also recorded: with the same seed it would fail again).

Example:
    >>> ev = TrainerEvaluator(space, "data/cifar10", PROXY, work_dir="runs/x")  # doctest: +SKIP
    >>> ev.evaluate(Trial(0, arch, seed=1)).reward                                         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax

from layernas.evaluator import EvalResult, Trial
from layernas.executors import DeviceParallelExecutor, data_parallel_mesh, evaluate_safely
from layernas.trainers import data as data_lib
from layernas.trainers import train as train_lib
from layernas.trainers.models import build_model


class TrainerEvaluator:
    """Evaluate architectures by training them.

    Args:
      space: a search space that :func:`~layernas.trainers.models.build_model` can build
        (``name``; ``arch_to_str`` is used for records when present).
      data: the dataset root (``root/train/<class>/*``; the recipe's subset and validation
        split are taken from its ``train`` split), or a ``(train, valid)`` pair of
        :class:`~layernas.trainers.data.ImageDataset`.
      recipe: the training recipe, e.g. :data:`~layernas.trainers.train.PROXY`.
      work_dir: where children are checkpointed and recorded (None: nothing is kept).
      build: ``arch -> flax module``. Default:
        ``build_model(space, arch, num_classes=K, **model_kwargs)`` with the data's class
        count K.
      data_seed: seed of the data subset and validation split (fixed for a whole search,
        so every child sees the same split).
      placement: default placement for training (None, a device or a data-parallel mesh;
        see :func:`~layernas.trainers.train.compiled_steps`).
      init_method: "numpy" (fast) or "flax".
      save_checkpoints: write orbax checkpoints of trained variables (results are recorded
        either way when ``work_dir`` is set).
      cache_dir: decoded-image cache for ``data`` given as a path.
      model_kwargs: extra builder arguments, e.g. ``{"C": 8, "N": 1}`` for NATS spaces: a
        reduced tss network for CPU proxies (NATS itself uses C=16, N=5). Part of the
        child key, so a reduced and a full-size run never share records.
    """

    def __init__(self, space, data, recipe: train_lib.Recipe = train_lib.PROXY, *, work_dir=None,
                 build: Callable[[tuple], Any] | None = None, data_seed: int = 0, placement=None,
                 init_method: str = "numpy", save_checkpoints: bool = True,
                 cache_dir=data_lib.DEFAULT_CACHE_DIR, model_kwargs: dict | None = None):
        self.space = space
        self.recipe = recipe
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self._build = build
        self.data_seed = int(data_seed)
        self.placement = placement
        self.init_method = init_method
        self.save_checkpoints = save_checkpoints
        self._cache_dir = cache_dir
        self._lock = threading.Lock()
        self.model_kwargs = dict(model_kwargs or {})
        if isinstance(data, (tuple, list)):
            if len(data) != 2:
                raise ValueError(f"data has {len(data)} items; expected a root path or (train, valid)")
            self._data = tuple(data)
        else:
            self._root = Path(data)
            if not (self._root / "train").is_dir():
                raise ValueError(f"data root {self._root} has no train/ folder; expected root/train/<class>/*.jpg|png")
            self._data = None

    # ------------------------------------------------------------------ helpers
    @property
    def datasets(self) -> tuple[data_lib.ImageDataset, data_lib.ImageDataset]:
        """(train, valid), loaded on first use."""
        with self._lock:  # trials on several devices may ask at once
            if self._data is None:
                self._data = train_lib.prepare_data(self._root, self.recipe, seed=self.data_seed,
                                                    cache_dir=self._cache_dir)
        return self._data

    def build(self, arch):
        if self._build is not None:
            return self._build(arch)
        return build_model(self.space, arch, num_classes=self.datasets[0].num_classes, **self.model_kwargs)

    def arch_str(self, arch) -> str:
        to_str = getattr(self.space, "arch_to_str", None)
        return to_str(arch) if to_str else json.dumps(list(arch))

    def child_key(self, trial: Trial) -> str:
        recipe = json.dumps(self.recipe.identity(label=True), sort_keys=True)
        text = (f"{getattr(self.space, 'name', 'space')}|{list(trial.arch)}|{trial.seed}|{self.data_seed}|{recipe}"
                + (f"|{sorted(self.model_kwargs.items())}" if self.model_kwargs else ""))
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def child_dir(self, trial: Trial) -> Path | None:
        return None if self.work_dir is None else self.work_dir / "children" / self.child_key(trial)

    def recorded(self, trial: Trial) -> EvalResult | None:
        """The recorded result of this trial's child, or None."""
        d = self.child_dir(trial)
        if d is None or not (d / "result.json").exists():
            return None
        rec = json.loads((d / "result.json").read_text())
        res = EvalResult.from_dict(rec)
        return dataclasses.replace(res, trial_id=trial.trial_id, info={**res.info, "cached": True})

    # ------------------------------------------------------------------ protocol
    def evaluate(self, trial: Trial, placement=None) -> EvalResult:
        """Train ``trial.arch`` (or return its recorded result) -> EvalResult.

        A child that cannot be built or trained fails alone: the error becomes a failed
        result (:func:`~layernas.executors.evaluate_safely`) charged the seconds it took.
        """
        done = self.recorded(trial)
        if done is not None:
            return done
        start = time.perf_counter()
        result = evaluate_safely(functools.partial(self._train, placement=placement), trial)
        if not result.ok and not result.cost_seconds:  # raised before training finished
            result = dataclasses.replace(result, cost_seconds=time.perf_counter() - start)
        return result

    def _train(self, trial: Trial, placement=None) -> EvalResult:
        t0 = time.perf_counter()
        model = self.build(trial.arch)
        tr, va = self.datasets
        res = train_lib.train_model(model, tr, va, self.recipe, trial.seed,
                                    placement=placement if placement is not None else self.placement,
                                    init_method=self.init_method, keep_variables=self.save_checkpoints)
        wall = time.perf_counter() - t0
        info = {"arch_str": self.arch_str(trial.arch), "recipe": self.recipe.name, "seed": trial.seed,
                **{k: v for k, v in res.summary().items() if k not in ("status", "error", "valid_accuracy")}}
        if res.ok:
            result = EvalResult(trial.trial_id, tuple(trial.arch), float(res.valid_accuracy), wall, None, {},
                                "ok", "", info)
        else:
            result = EvalResult.failed(trial, res.error, wall, **info)
        self._record(trial, result, res.variables if res.ok else None)
        return result

    def _record(self, trial: Trial, result: EvalResult, variables) -> None:
        d = self.child_dir(trial)
        if d is None:
            return
        d.mkdir(parents=True, exist_ok=True)
        if variables is not None and self.save_checkpoints:
            save_variables(d / "variables", variables)
        tmp = d / f"result.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(result.to_dict(), indent=1))
        os.replace(tmp, d / "result.json")


def save_variables(path: Path, variables) -> None:
    """Write ``variables`` (a pytree of arrays) as an orbax checkpoint at ``path``.

    Only this process takes part (``active_processes={this one}``), so hosts of a
    multi-host run save their own children without waiting for each other.
    """
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    if path.exists():
        return
    pid = jax.process_index()
    opts = ocp.options.MultiprocessingOptions(primary_host=pid, active_processes={pid},
                                              barrier_sync_key_prefix=f"child-{path.parent.name}")
    ckpt = ocp.StandardCheckpointer(multiprocessing_options=opts)
    ckpt.save(path, jax.device_get(variables))
    ckpt.wait_until_finished()
    ckpt.close()


def load_variables(path: Path):
    """Restore variables written by :func:`save_variables` (host NumPy arrays)."""
    import orbax.checkpoint as ocp

    pid = jax.process_index()
    opts = ocp.options.MultiprocessingOptions(primary_host=pid, active_processes={pid})
    with ocp.StandardCheckpointer(multiprocessing_options=opts) as ckpt:
        return ckpt.restore(Path(path).resolve())


def make_trainer_evaluator(space, data, trainer: str = "proxy", *, work_dir=None, data_seed: int = 0,
                           devices: str = "auto", compilation_cache=train_lib.DEFAULT_COMPILATION_CACHE,
                           model_kwargs: dict | None = None, recipe_overrides: dict | None = None,
                           store=None, training_seeds: int = 3, warm_start_epochs: int | None = None):
    """What ``layernas search --trainer NAME --data DIR`` builds.

    Args:
      space: the search space.
      data: dataset root (``root/train/<class>/*``) or a ``(train, valid)`` pair.
      trainer: a recipe name from :data:`~layernas.trainers.train.RECIPES`
        ("proxy", "trained-search", "nats-12", "nats-200"). On NATS tss, "trained-search"
        trains the reduced network of :data:`~layernas.trainers.train.RECIPE_NETWORKS`
        (C=8, N=1) unless ``model_kwargs`` is given.
      work_dir: where trained children are recorded (the run's ``out_dir / "children"``
        parent; resuming the run reuses them).
      data_seed: seed of the data subset / validation split (the run's seed).
      devices: "auto" (candidate-parallel over local devices when there are several,
        else one device), "candidates", "data" (data-parallel mesh over all local devices)
        or "single".
      compilation_cache: persistent compilation cache dir (None: leave JAX's setting).
      model_kwargs: NATS builder overrides (``{"C": 8, "N": 1}`` for a reduced tss proxy);
        None: the recipe's own network on NATS tss, else the full skeleton.
      recipe_overrides: :class:`~layernas.trainers.train.Recipe` fields to change, e.g.
        ``{"epochs": 1, "train_per_class": 20, "valid_per_class": 5}`` (what the CLI's
        ``--epochs``, ``--train-per-class`` and ``--valid-per-class`` set). They are part
        of the recipe, hence of every child's key.
      store: a child-store directory (``--store``): children are trained once into it and
        reused by every later run and process, each query drawing one of
        ``training_seeds`` seeds (:mod:`layernas.trainers.stored_evaluator`). None: the
        run's own ``work_dir`` records, one seed per trial.
      training_seeds: K of the seeded proxy protocol (with ``store``).
      warm_start_epochs: with ``store``, start each tss child from a stored one-layer
        neighbour's weights and train this many epochs (None: from scratch).

    Returns:
      a :class:`TrainerEvaluator`, or a :class:`~layernas.executors.DeviceParallelExecutor`
      wrapping one ("auto"/"candidates" with several local devices). A Ray worker given
      that executor trains one child at a time data-parallel over the same devices
      (``DeviceParallelExecutor.as_evaluator()``): a worker that reserved a whole host
      uses all of it.
    """
    if trainer not in train_lib.RECIPES:
        raise ValueError(f"trainer {trainer!r}; expected one of {sorted(train_lib.RECIPES)}")
    if devices not in ("auto", "candidates", "data", "single"):
        raise ValueError(f"devices={devices!r}; expected 'auto', 'candidates', 'data' or 'single'")
    train_lib.configure_compilation_cache(compilation_cache)
    recipe = train_lib.RECIPES[trainer]
    if model_kwargs is None and trainer in train_lib.RECIPE_NETWORKS:
        from layernas.search_spaces.nats_tss import NatsTss

        if isinstance(space, NatsTss):  # the recipe's reduced tss network
            model_kwargs = dict(train_lib.RECIPE_NETWORKS[trainer])
    if recipe_overrides:
        unknown = sorted(set(recipe_overrides) - {f.name for f in dataclasses.fields(recipe)})
        if unknown:
            raise ValueError(f"recipe_overrides has unknown fields {unknown}; expected fields of Recipe")
        recipe = recipe.replace(**recipe_overrides)
    if store is not None:
        from layernas.trainers.stored_evaluator import StoredTrainerEvaluator
        from layernas.trainers.warm_start import WarmStart

        ev = StoredTrainerEvaluator(space, data, recipe, store=store, training_seeds=training_seeds,
                                    warm_start=None if warm_start_epochs is None else WarmStart(warm_start_epochs),
                                    data_seed=data_seed, model_kwargs=model_kwargs)
    else:
        ev = TrainerEvaluator(space, data, recipe, work_dir=work_dir, data_seed=data_seed,
                              model_kwargs=model_kwargs)
    n = len(jax.local_devices())
    if devices == "data" and n > 1:
        ev.placement = data_parallel_mesh()
        return ev
    if devices in ("auto", "candidates") and n > 1:
        return DeviceParallelExecutor(ev)
    return ev


# --- the registry's factories (layernas.registry): (config, space) -> evaluator --------
def evaluator_for_search(config, space):
    """The ``"trainer"`` factory of the classifier spaces: :func:`make_trainer_evaluator`
    with ``config``'s recipe, data, devices and seed; children are recorded under
    ``<out>/trainer``. In a ``jax.distributed`` search each process trains on one device
    per trial (the distributed executor spreads its share over its devices)."""
    devices = config.devices or "auto"
    if config.multi_host and devices in ("auto", "candidates"):
        devices = "single"
    from layernas.trainers.data_checks import check_image_folder, load_training_data

    check_image_folder(config.data)  # a bad --data is one line before any child trains
    evaluator = make_trainer_evaluator(space, config.data, config.trainer,
                                       work_dir=Path(config.out) / "trainer" if config.out else None,
                                       data_seed=config.seed, devices=devices,
                                       recipe_overrides=config.recipe_overrides, **config.store_options())
    load_training_data(evaluator)  # decode the recipe's subset now (and cache it): a bad image names its file
    return evaluator


def codec_evaluator_for_search(config, space):
    """The ``"codec"`` factory of ``codec-hyperprior``: :meth:`CodecEvaluator.for_search`
    with ``config``'s ``--lambda``, ``--width-scale`` and ``--proxy-steps``."""
    from layernas.trainers.codec_train import CodecEvaluator

    return _codec_for_search(CodecEvaluator, config, space)


def sandwich_evaluator_for_search(config, space):
    """The ``"codec"`` factory of ``codec-sandwich``: :meth:`SandwichEvaluator.for_search`
    with ``config``'s ``--lambda``, ``--width-scale`` and ``--proxy-steps``."""
    from layernas.trainers.sandwich_train import SandwichEvaluator

    return _codec_for_search(SandwichEvaluator, config, space)


def _codec_for_search(family, config, space):
    codec = config.codec_options
    # the photos are read and checked here, before any child trains (one line naming a bad file)
    return family.for_search(space, codec["lmbda"], config.data, width_scale=codec["width_scale"],
                             steps=codec["proxy_steps"], seed=config.seed, valid_dir=config.valid_data)
