"""Trained search with a child store, a seeded proxy protocol and optional warm start.

:class:`StoredTrainerEvaluator` is a :class:`~layernas.trainers.evaluator.TrainerEvaluator`
whose children live in a :class:`~layernas.trainers.child_store.ChildStore`:

* **Train once.** A child is keyed by (space, recipe, data subset, network overrides) =
  its *family*, its mode (scratch or warm start), its architecture and its training seed.
  A child already in the store is reused, in any run, searcher or process; two processes
  that want the same child at once train it once (the store's claim rows).
* **Seeded proxy protocol.** As NATS-Bench's tables hold several training seeds per
  architecture and a query draws one, each query here draws one of ``training_seeds``
  (K, default 3) seeds: ``draw_training_seed(trial.seed, K)``. ``trial.seed`` is a pure
  function of the run's seed and the trial id, both kept in the run's checkpoint, so the
  draw is part of the run's state: a resumed run draws exactly what the uninterrupted one
  did. Repeated searches with other seeds see the noise of real training.
* **Warm start** (``warm_start=WarmStart(epochs)``, tss only): a child with a trained
  one-layer neighbour in the store starts from that parent's weights for every unchanged
  edge and layer, and trains ``epochs`` epochs (see :mod:`layernas.trainers.warm_start`).

Each result's ``info`` says ``child``: "trained" or "reused", the ``training_seed``, the
``store_key``, the ``mode`` and, for a warm start, ``warm_from`` (the parent's
architecture). ``cost_seconds`` is the child's recorded training time whether it was
trained now or reused, so a seconds budget gives the same search either way; ``info
["wall_seconds"]`` is what this query actually took.

Example:
    >>> ev = StoredTrainerEvaluator(space, "data/cifar10", recipe, store="runs/store")  # doctest: +SKIP
    >>> ev.evaluate(Trial(0, arch, seed=123)).info["child"]                          # doctest: +SKIP
    'trained'
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time

import numpy as np

from layernas.evaluator import EvalResult, Trial
from layernas.executors import evaluate_safely
from layernas.trainers import train as train_lib
from layernas.trainers import warm_start as warm_lib
from layernas.trainers.child_store import ChildStore, StoredChild, child_key, family_key
from layernas.trainers.evaluator import TrainerEvaluator

DEFAULT_TRAINING_SEEDS = 3


def draw_training_seed(trial_seed: int, training_seeds: int) -> int:
    """The training seed (0..K-1) a query with ``trial_seed`` draws, uniformly."""
    if int(training_seeds) < 1:
        raise ValueError(f"training_seeds={training_seeds}; expected a positive integer")
    return int(np.random.default_rng([int(trial_seed), 0x5EED]).integers(int(training_seeds)))


class StoredTrainerEvaluator(TrainerEvaluator):
    """Train children through a :class:`ChildStore` (see the module docstring).

    Args:
      space, data, recipe: as :class:`~layernas.trainers.evaluator.TrainerEvaluator`.
      store: a :class:`ChildStore` or its directory.
      training_seeds: K, the number of training seeds a query draws from.
      warm_start: a :class:`~layernas.trainers.warm_start.WarmStart`, or None to train
        every child from scratch.
      **kwargs: other :class:`TrainerEvaluator` options (``data_seed``, ``model_kwargs``,
        ``placement``, ``init_method``, ``cache_dir``, ``build``).
    """

    def __init__(self, space, data, recipe: train_lib.Recipe = train_lib.PROXY, *, store,
                 training_seeds: int = DEFAULT_TRAINING_SEEDS, warm_start: warm_lib.WarmStart | None = None,
                 **kwargs):
        kwargs.pop("work_dir", None)
        super().__init__(space, data, recipe, work_dir=None, save_checkpoints=True, **kwargs)
        self.store = store if isinstance(store, ChildStore) else ChildStore(store)
        draw_training_seed(0, training_seeds)  # validates
        self.training_seeds = int(training_seeds)
        if warm_start is not None and not str(getattr(space, "name", "")).startswith("nats-tss"):
            raise ValueError(f"warm start needs a NATS tss space (one layer = one cell edge); got {space.name!r}")
        if warm_start is not None and warm_start.epochs >= recipe.epochs:
            raise ValueError(f"warm-start epochs={warm_start.epochs}; expected fewer than the recipe's "
                             f"{recipe.epochs} (a warm start saves training)")
        self.warm_start = warm_start
        self.counts = {"trained": 0, "reused": 0}

    # ------------------------------------------------------------------ identity
    def training_seed(self, trial: Trial) -> int:
        """The training seed ``trial`` draws (see :func:`draw_training_seed`)."""
        return draw_training_seed(trial.seed, self.training_seeds)

    @functools.cached_property
    def family(self) -> str:
        """The family key: space, recipe (less its label), the training and validation images
        and labels (their SHA-256), network overrides and init method."""
        recipe = self.recipe.identity()
        h = hashlib.sha256()  # the images themselves: a changed or moved data folder is handled right
        for a in (self.datasets[0].images, self.datasets[0].labels,
                  self.datasets[1].images, self.datasets[1].labels):
            h.update(np.ascontiguousarray(a).tobytes())
        data = {"train_valid_sha256": h.hexdigest()}
        return family_key({"space": str(getattr(self.space, "name", "space")), "recipe": recipe, "data": data,
                           "model": sorted(self.model_kwargs.items()), "init": self.init_method})

    # ------------------------------------------------------------------ protocol
    def evaluate(self, trial: Trial, placement=None, *, training_seed: int | None = None) -> EvalResult:
        """The stored child of ``trial`` (trained now if absent) -> EvalResult.

        Args:
          trial: the query; its ``seed`` draws the training seed.
          placement: where to train (None: the evaluator's placement).
          training_seed: train (or reuse) the child of this training seed instead of the
            drawn one, e.g. to re-train a finalist with every seed (0..K-1).
        """
        if training_seed is not None and not 0 <= int(training_seed) < self.training_seeds:
            raise ValueError(f"training_seed={training_seed}; expected 0..{self.training_seeds - 1}")
        start = time.perf_counter()
        result = evaluate_safely(functools.partial(self._evaluate_stored, placement=placement,
                                                   training_seed=training_seed), trial)
        wall = time.perf_counter() - start
        if not result.ok and not result.cost_seconds:
            result = dataclasses.replace(result, cost_seconds=wall)
        return dataclasses.replace(result, info={**result.info, "wall_seconds": wall})

    def _evaluate_stored(self, trial: Trial, placement=None, training_seed: int | None = None) -> EvalResult:
        seed = self.training_seed(trial) if training_seed is None else int(training_seed)
        arch = tuple(int(a) for a in trial.arch)
        mode = "scratch"
        if self.warm_start is not None:
            warm_key = child_key(self.family, self.warm_start.mode, arch, seed)
            if (self.store.get(warm_key, weights=False) is not None
                    or warm_lib.find_parent(self.store, self.family, arch, seed, weights=False) is not None):
                mode = self.warm_start.mode
        key = child_key(self.family, mode, arch, seed)
        meta = {"family": self.family, "mode": mode, "arch": arch, "training_seed": seed}
        child, how = self.store.train_once(
            key, meta, functools.partial(self._train_child, arch, seed, mode != "scratch", placement), weights=False)
        self.counts[how] += 1
        return self._result(trial, child, how)

    def _train_child(self, arch, seed: int, warm: bool, placement):
        model = self.build(arch)
        tr, va = self.datasets
        recipe, initial, extra = self.recipe, None, {}
        if warm:
            parent = warm_lib.find_parent(self.store, self.family, arch, seed)
            if parent is None:
                raise RuntimeError(f"the warm-start parent of {self.arch_str(arch)} left the store while it was "
                                   "being trained; evaluate it again")
            fresh = train_lib.init_variables(model, tr.images.shape, seed, self.init_method)
            initial, counts = warm_lib.inherit(fresh, parent.variables,
                                               warm_lib.tss_changed_scopes(parent.arch, arch))
            recipe = self.recipe.replace(epochs=self.warm_start.epochs)
            extra = {"warm_from": list(parent.arch), "warm_from_key": parent.key, **counts}
        res = train_lib.train_model(model, tr, va, recipe, seed,
                                    placement=placement if placement is not None else self.placement,
                                    init_method=self.init_method, keep_variables=True, initial_variables=initial)
        metrics = {k: v for k, v in res.summary().items() if k != "history"}
        metrics.update(extra)
        return (res.variables if res.ok else None), metrics, float(res.seconds)

    def _result(self, trial: Trial, child: StoredChild, how: str) -> EvalResult:
        m = child.metrics
        info = {"arch_str": self.arch_str(trial.arch), "recipe": self.recipe.name, "child": how,
                "training_seed": child.training_seed, "store_key": child.key, "mode": child.mode,
                "epochs": m.get("epochs_done"), "train_loss": m.get("train_loss"),
                "compile_seconds": m.get("compile_seconds")}
        if "warm_from" in m:
            info["warm_from"] = self.arch_str(m["warm_from"])
        if m.get("status") == "ok":
            return EvalResult(trial.trial_id, tuple(trial.arch), float(m["valid_accuracy"]), child.train_seconds,
                              None, {}, "ok", "", info)
        return EvalResult.failed(trial, str(m.get("error", "training failed")), child.train_seconds, **info)
