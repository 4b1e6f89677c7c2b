"""One frozen, validated description of a search: what ``layernas search`` runs.

:class:`SearchConfig` holds every setting of a search as plain values (its fields are the
``layernas search`` flags), checks them all once, when it is built, and says what each
derived setting resolves to (the evaluator kind, the codec options, the training recipe
overrides, the run directory). It pickles, so a Ray worker receives it and builds its own
evaluator (``functools.partial(layernas.registry.build_evaluator, config)``).

Every check raises ``ValueError`` with one line naming the flag, the bad value and what
was expected. Checks that need the space itself (the metric, the target's units) happen
in :meth:`SearchConfig.make_target`.

Example:
    >>> from layernas.config import SearchConfig
    >>> config = SearchConfig(space="nats-tss", fraction=0.5, budget_evals=50)
    >>> config.dataset, config.evaluator_kind, config.searcher
    ('cifar10', 'table', 'layernas')
    >>> SearchConfig(space="nats-tss", num_buckets=5, searcher="random")
    Traceback (most recent call last):
    ...
    ValueError: --num-buckets 5: applies to --searcher layernas only, not --searcher random
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
import socket
import stat
from pathlib import Path
from typing import Any

from layernas import registry
from layernas.errors import first_line

SEARCHER_NAMES = ("layernas", "random", "rea", "reinforce")
TRAINER_RECIPES = ("proxy", "trained-search", "nats-12", "nats-200")
DEVICES = ("auto", "candidates", "data", "single")
TARGET_METRICS = ("flops", "madds", "params", "latency", "decoder_gmacs")
LAYERNAS_PRESETS = ("efficient", "paper")  # layernas.searchers.layernas.PRESETS, kept jax/searcher-free here
MAX_NUM_BUCKETS = 10_000  # H per layer; LayerNAS keeps up to H x per_bucket children per layer
MAX_PER_BUCKET = 1_000
MAX_SEED = 2 ** 63 - 1
UNITS_FACTOR = 1e3  # a target this many times above the dearest architecture is a units mistake
RECIPE_FLAGS = {"epochs": ("--epochs", 1), "batch_size": ("--batch-size", 1),
                "train_per_class": ("--train-per-class", 2), "valid_per_class": ("--valid-per-class", 1)}
CODEC_FLAGS = {"lmbda": "--lambda", "width_scale": "--width-scale", "proxy_steps": "--proxy-steps"}
RAY_DEFAULTS = {"address": "auto", "gpus_per_trial": 0.0, "cpus_per_trial": 1.0, "max_retries": 2}
INT_FIELDS = ("budget_evals", "num_buckets", "per_bucket", "seed", "max_in_flight", "epochs", "batch_size",
              "train_per_class", "valid_per_class", "proxy_steps", "max_concurrent", "max_retries", "num_processes",
              "process_id")
FLOAT_FIELDS = ("fraction", "target_max", "target_min", "budget_seconds", "lmbda", "width_scale", "gpus_per_trial",
                "cpus_per_trial")
_FLAG_NAMES = {"fraction": "--flops-fraction", "lmbda": "--lambda"}


def flag(field: str) -> str:
    """The command-line flag of a :class:`SearchConfig` field (``"fraction"`` -> ``--flops-fraction``)."""
    return _FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def _fail(field: str, value: Any, expected: str) -> None:
    shown = repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else value
    raise ValueError(f"{flag(field)} {shown}: {expected}")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Every setting of one search; see ``docs/cli.md`` for each flag's meaning and unit.

    Fields left None take the default documented for their flag. ``dataset`` is filled in
    with the space's first dataset, and ``budget_evals`` with 200 when no budget is given.
    ``out`` defaults to :meth:`default_out_dir`; ``table`` and ``data`` are made absolute.
    ``target_flag`` is the flag that set ``target_max`` (for messages).
    """

    space: str
    dataset: str | None = None
    searcher: str = "layernas"
    metric: str | None = None
    fraction: float | None = None
    target_max: float | None = None
    target_min: float | None = None
    target_flag: str = "--target-max"
    caps: tuple[tuple[str, float], ...] = ()
    budget_evals: int | None = None
    budget_seconds: float | None = None
    num_buckets: int | None = None
    per_bucket: int | None = None
    preset: str | None = None
    searcher_option: tuple[tuple[str, Any], ...] = ()
    seed: int = 0
    table: str | None = None
    max_in_flight: int | None = None
    evaluator: str = "auto"
    trainer: str | None = None
    data: str | None = None
    valid_data: str | None = None
    store: str | None = None
    training_seeds: int | None = None
    warm_start_epochs: int | None = None
    devices: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    train_per_class: int | None = None
    valid_per_class: int | None = None
    lmbda: float | None = None
    width_scale: float | None = None
    proxy_steps: int | None = None
    backend: str = "local"
    address: str | None = None
    max_concurrent: int | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    max_retries: int | None = None
    distributed: bool = False
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    out: str | None = None
    resume: bool = False
    quiet: bool = False
    json: bool = False

    def __post_init__(self):
        if not isinstance(self.space, str):
            raise TypeError(f"--space must be a space name, got {self.space!r}")
        entry = registry.get_space_entry(self.space)
        for field in INT_FIELDS + FLOAT_FIELDS:
            value = getattr(self, field)
            kinds = (numbers.Integral,) if field in INT_FIELDS else (numbers.Real,)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                _fail(field, value, f"expected {'an integer' if field in INT_FIELDS else 'a number'}")
        for field in ("dataset", "metric", "table", "data", "valid_data", "out", "trainer", "address", "coordinator"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                _fail(field, value, "is empty; expected a non-empty value")
        object.__setattr__(self, "dataset", registry.check_dataset(self.space, self.dataset))
        if self.searcher not in SEARCHER_NAMES:
            _fail("searcher", self.searcher, f"expected one of {', '.join(SEARCHER_NAMES)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            _fail("seed", self.seed, "expected an integer in 0..2**63-1")
        self._check_target()
        self._check_budget()
        self._check_evaluator(entry)
        self._check_execution()
        if self.budget_evals is None and self.budget_seconds is None:
            object.__setattr__(self, "budget_evals", 200)
        if self.out is None:
            object.__setattr__(self, "out", str(self.default_out_dir()))
        for field in ("table", "data", "valid_data"):  # absolute: a Ray worker may start in another folder
            value = getattr(self, field)
            if value is not None and value != "official":
                object.__setattr__(self, field, str(Path(value).resolve()))

    # --- checks ---------------------------------------------------------------------
    def _check_target(self) -> None:
        if self.fraction is not None:
            if self.target_max is not None:
                raise ValueError(f"give either --flops-fraction or {self.target_flag}, not both")
            if not (math.isfinite(self.fraction) and 0 < self.fraction <= 1):
                raise ValueError(f"--flops-fraction must be in (0, 1], got {self.fraction:g}")
        for field in ("target_max", "target_min"):
            value = getattr(self, field)
            if value is not None and not math.isfinite(value):
                _fail(self.target_flag if field == "target_max" else field, value, "expected a finite number")
        if self.target_max is not None and self.target_min is not None and self.target_min > self.target_max:
            raise ValueError(f"--target-min {self.target_min:g} is above {self.target_flag} {self.target_max:g}")
        for metric, value in self.caps:
            if not metric:
                raise ValueError(f"--cap ={value:g}: expected METRIC=MAX, e.g. params=3.5")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"--cap {metric}={value:g}: expected a positive finite maximum")

    def _check_budget(self) -> None:
        if self.budget_evals is not None and self.budget_evals < 1:
            _fail("budget_evals", self.budget_evals, "budget evaluations must be a positive integer")
        if self.budget_seconds is not None and not (math.isfinite(self.budget_seconds) and self.budget_seconds > 0):
            _fail("budget_seconds", self.budget_seconds, "budget seconds must be a positive finite number")
        for field, most in (("num_buckets", MAX_NUM_BUCKETS), ("per_bucket", MAX_PER_BUCKET)):
            value = getattr(self, field)
            if value is None:
                continue
            if self.searcher != "layernas":
                _fail(field, value, f"applies to --searcher layernas only, not --searcher {self.searcher}")
            if not 1 <= value <= most:
                _fail(field, value, f"expected an integer in 1..{most}")
        self._check_searcher_options()
        if self.preset is not None:
            if self.searcher != "layernas":
                _fail("preset", self.preset, f"applies to --searcher layernas only, not --searcher {self.searcher}")
            if self.preset not in LAYERNAS_PRESETS:
                _fail("preset", self.preset, f"expected one of {', '.join(LAYERNAS_PRESETS)}")

    def _check_searcher_options(self) -> None:
        if not self.searcher_option:
            return
        from layernas.api import searcher_options_given  # the searchers' own option lists

        names = [name for name, _ in self.searcher_option]
        for name in names:
            if names.count(name) > 1:
                _fail("searcher_option", name, "each option at most once")
            if name in ("num_buckets", "per_bucket", "preset"):
                _fail("searcher_option", name, f"use --{name.replace('_', '-')}")
        try:
            searcher_options_given(self.searcher, dict(self.searcher_option))
        except ValueError as e:
            raise ValueError(f"--searcher-option: {first_line(e)}") from None

    def _check_evaluator(self, entry: registry.SpaceEntry) -> None:
        if self.evaluator not in ("auto", "dry-run"):
            _fail("evaluator", self.evaluator, "expected auto or dry-run")
        if self.evaluator == "dry-run" and self.trainer:
            raise ValueError("--evaluator dry-run and --trainer exclude each other: a dry run trains nothing")
        families = [name for name, e in registry.SPACES.items() if e.options]
        for field, name in CODEC_FLAGS.items():
            if getattr(self, field) is not None and field not in entry.options:
                raise ValueError(f"{name} applies to --space {' or '.join(families)}, not --space {self.space}")
        if entry.options:
            for field, (name, _) in RECIPE_FLAGS.items():
                if getattr(self, field) is not None:
                    raise ValueError(f"{name} sets the image-classifier recipe; the codec spaces train with "
                                     f"--proxy-steps, --width-scale and --lambda")
            if self.trainer:
                raise ValueError(f"--trainer {self.trainer!r} picks an image-classifier recipe; --space "
                                 f"{self.space} trains with --proxy-steps, --width-scale and --lambda")
            self._check_codec()
        if self.trainer is not None:
            if "trainer" not in entry.evaluators:
                _fail("trainer", self.trainer, f"--space {self.space} cannot be trained as an image classifier")
            if self.trainer not in TRAINER_RECIPES:
                _fail("trainer", self.trainer, f"expected one of {', '.join(TRAINER_RECIPES)}")
        for field, (name, least) in RECIPE_FLAGS.items():
            value = getattr(self, field)
            if value is not None and not self.trainer:
                raise ValueError(f"{name} sets the training recipe; it needs --trainer {'|'.join(TRAINER_RECIPES)}")
            if value is not None and value < least:
                raise ValueError(f"{name} {value}: expected an integer >= {least}")
        if self.train_per_class is not None and self.valid_per_class is not None \
                and self.valid_per_class >= self.train_per_class:
            raise ValueError(f"--valid-per-class {self.valid_per_class} must be below --train-per-class "
                             f"{self.train_per_class} (validation is held out of the training images)")
        if self.data is not None and not self.trainer and not entry.options:
            _fail("data", self.data, "applies to --trainer and the codec spaces only (the children they train)")
        if self.valid_data is not None and not (entry.options and self.evaluator != "dry-run"):
            _fail("valid_data", self.valid_data, f"applies to --space {' or '.join(families)} only (their "
                  f"held-out photos)")
        if entry.options and self.evaluator != "dry-run" and not self.data:
            raise ValueError(f"--space {self.space} trains on photos: pass --data DIR, a folder of .png photos "
                             f"(make one with `layernas prepare-data photos SRC --out DIR`; see docs/data.md)")
        if self.store is not None and not self.trainer:
            _fail("store", self.store, "keeps trained children: it needs --trainer proxy|nats-12|nats-200")
        for field in ("training_seeds", "warm_start_epochs"):
            value = getattr(self, field)
            if value is not None and self.store is None:
                _fail(field, value, "needs --store [PATH]")
            if value is not None and (not isinstance(value, int) or value < 1):
                _fail(field, value, "expected a positive integer")
        if self.devices is not None and not self.trainer:
            _fail("devices", self.devices, "applies to --trainer only (the children it trains)")
        if self.devices is not None and self.devices not in DEVICES:
            _fail("devices", self.devices, f"expected one of {', '.join(DEVICES)}")
        kind = self.evaluator_kind
        if kind is None:
            raise ValueError(f"space {self.space!r} must be trained: pass --trainer proxy --data DIR, "
                             f"or --evaluator dry-run")
        if self.trainer and not self.data:
            raise ValueError("--trainer needs --data DIR, an image folder ROOT/train/<class>/*.png (make CIFAR-10's "
                             "with `layernas prepare-data cifar10 ARCHIVE --out DIR`; see docs/data.md)")
        if kind == "table" and self.space == "nats-sss" and self.table is None:
            raise ValueError("--space nats-sss needs --table: only the tss table ships with the install; convert the "
                             "official NATS-Bench sss files with `layernas convert-table SRC sss.parquet --space sss` "
                             "(docs/nats.md), or train children with --trainer")
        if self.table is not None:
            if kind != "table":
                _fail("table", self.table, f"applies to table lookups only, not to the {kind} evaluator")
            path = Path(self.table)
            if self.table != "official" and path.exists() and not (path.is_file() or path.is_dir()):
                kind = "a FIFO" if stat.S_ISFIFO(path.stat().st_mode) else "not a regular file"
                _fail("table", self.table, f"is {kind}; expected a regular file or a directory")

    def _check_codec(self) -> None:
        codec = self.codec_options
        if not (math.isfinite(codec["lmbda"]) and codec["lmbda"] > 0):
            raise ValueError(f"--lambda {codec['lmbda']}: expected a positive number (CompressAI uses 0.0018-0.18)")
        if not 0 < codec["width_scale"] <= 1:
            raise ValueError(f"--width-scale {codec['width_scale']}: expected a number in (0, 1]")
        if codec["proxy_steps"] < 1:
            raise ValueError(f"--proxy-steps {codec['proxy_steps']}: expected an integer >= 1")

    def _check_execution(self) -> None:
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"--max-in-flight {self.max_in_flight}: expected a positive integer")
        if self.backend not in ("local", "ray"):
            _fail("backend", self.backend, "expected local or ray")
        ray_given = [f for f in ("address", "max_concurrent", *RAY_DEFAULTS) if getattr(self, f) is not None]
        if self.backend != "ray" and ray_given:
            _fail(ray_given[0], getattr(self, ray_given[0]), "is a Ray setting; it needs --backend ray")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            _fail("max_concurrent", self.max_concurrent, "expected a positive integer")
        if self.gpus_per_trial is not None and not (math.isfinite(self.gpus_per_trial) and self.gpus_per_trial >= 0):
            _fail("gpus_per_trial", self.gpus_per_trial, "expected a finite number >= 0")
        if self.cpus_per_trial is not None and not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            _fail("cpus_per_trial", self.cpus_per_trial, "expected a positive finite number")
        if self.max_retries is not None and self.max_retries < 0:
            _fail("max_retries", self.max_retries, "expected an integer >= 0")
        if self.address is not None and self.address not in ("auto", "local") and not _host_port(self.address):
            _fail("address", self.address, "expected auto, local, HOST:PORT or ray://HOST:PORT with a port in 1..65535")
        if not self.multi_host:
            return
        if self.backend == "ray":
            raise ValueError("--distributed and --backend ray are two different multi-machine backends; choose one")
        if self.coordinator is not None and not _host_port(self.coordinator):
            raise ValueError(f"--coordinator {self.coordinator!r}: expected HOST:PORT with a port in 1..65535, "
                             f"e.g. 10.0.0.2:8476")
        if self.num_processes is not None and self.num_processes < 1:
            raise ValueError(f"--num-processes {self.num_processes}: expected a positive integer")
        if self.process_id is not None:
            if self.process_id < 0:
                raise ValueError(f"--process-id {self.process_id}: expected 0 or more")
            if self.num_processes is not None and self.process_id >= self.num_processes:
                raise ValueError(f"--process-id {self.process_id}: expected 0..{self.num_processes - 1} "
                                 f"(--num-processes {self.num_processes})")

    # --- what the settings resolve to -------------------------------------------------
    @property
    def evaluator_kind(self) -> str | None:
        """``"dry-run"``, ``"trainer"`` (with ``--trainer``) or the space's default kind."""
        if self.evaluator == "dry-run":
            return "dry-run"
        if self.trainer:
            return "trainer"
        return registry.get_space_entry(self.space).default_evaluator

    @property
    def multi_host(self) -> bool:
        """Whether this is a ``jax.distributed`` search (``--distributed`` or its three flags)."""
        return self.distributed or any(v is not None for v in (self.coordinator, self.num_processes, self.process_id))

    @property
    def codec_options(self) -> dict | None:
        """``{"lmbda", "width_scale", "proxy_steps"}`` with the space's defaults; None for other spaces."""
        defaults = registry.get_space_entry(self.space).options
        if not defaults:
            return None
        return {k: (defaults[k] if getattr(self, k) is None else getattr(self, k)) for k in CODEC_FLAGS}

    @property
    def recipe_overrides(self) -> dict:
        """The training-recipe fields set by ``--epochs``, ``--batch-size``, ``--train-per-class``, ``--valid-per-class``."""
        return {k: getattr(self, k) for k in RECIPE_FLAGS if getattr(self, k) is not None}

    def ray_option(self, field: str):
        """A Ray setting, or its default (``address`` auto, 0 GPUs, 1 CPU, 2 retries)."""
        value = getattr(self, field)
        return RAY_DEFAULTS[field] if value is None else value

    def searcher_options(self) -> dict:
        """``num_buckets``/``per_bucket``/``preset`` (LayerNAS only) and ``--searcher-option`` s, as given."""
        given = {k: getattr(self, k) for k in ("num_buckets", "per_bucket", "preset") if getattr(self, k) is not None}
        return {**given, **dict(self.searcher_option)}

    def store_options(self) -> dict:
        """``make_trainer_evaluator``'s child-store options (empty without ``--store``)."""
        if self.store is None:
            return {}
        from layernas.trainers.child_store import DEFAULT_STORE

        return {"store": DEFAULT_STORE if self.store == "default" else Path(self.store),
                "training_seeds": self.training_seeds or 3, "warm_start_epochs": self.warm_start_epochs}

    def make_space(self):
        """The search space (imports its module now)."""
        return registry.make_space(self.space, self.dataset)

    def make_target(self, space):
        """The :class:`~layernas.target.Target`, checked against ``space``.

        Raises:
          ValueError: an unknown metric, or a target max ``UNITS_FACTOR`` times above the
            space's dearest architecture (a units mistake: NATS FLOPs are in MFLOPs).
        """
        from layernas.target import Target

        entry = registry.get_space_entry(self.space)
        metric = self.metric or entry.default_metric
        if metric not in space.cost_metrics:
            raise ValueError(f"unknown metric {metric!r} for space {space.name!r}; expected one of "
                             f"{', '.join(space.cost_metrics)}")
        for name, _ in self.caps:
            if name not in space.cost_metrics:
                raise ValueError(f"--cap {name}=...: unknown metric {name!r} for space {space.name!r}; "
                                 f"expected one of {', '.join(space.cost_metrics)}")
        target_max = self.target_max
        cheapest, dearest = space.cost_bounds((), metric)
        unit = entry.units.get(metric, "the space's units")
        if self.fraction is not None:
            target_max = self.fraction * dearest
        elif target_max is not None and target_max >= UNITS_FACTOR * dearest:
            raise ValueError(f"{self.target_flag} {target_max:g} is {UNITS_FACTOR:g}x or more above the dearest "
                             f"architecture of {space.name!r} ({dearest:g}); {metric} is in {unit} here")
        elif target_max is not None and target_max < cheapest:
            raise ValueError(f"{self.target_flag} {target_max:g} is impossible: the cheapest architecture of "
                             f"{space.name!r} costs {cheapest:g} ({metric} in {unit})")
        if self.target_min is not None and self.target_min > dearest:
            raise ValueError(f"--target-min {self.target_min:g} is impossible: the dearest architecture of "
                             f"{space.name!r} costs {dearest:g} ({metric} in {unit})")
        return Target(metric, max=target_max, min=self.target_min, caps=dict(self.caps))

    def make_evaluator(self, space):
        """The evaluator, built by the space family's factory; for ``--backend ray``, the Ray
        executor whose workers build it from this (pickled) config.

        Raises:
          ValueError: ``--address HOST:PORT`` where nothing listens (probed for 5 s, so an
            unreachable head fails at once instead of hanging in ``ray.init``).
        """
        if self.backend != "ray":
            return registry.build_evaluator(self, space)
        address = self.ray_option("address")
        if address not in ("auto", "local"):
            host, _, port = address.strip().removeprefix("ray://").rpartition(":")
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
            except OSError as e:
                raise ValueError(f"--address {address}: cannot reach a Ray head there ({first_line(e)}); start "
                                 f"one with `ray start --head`, or pass --address local") from None
        from layernas.executors import make_ray_executor

        return make_ray_executor(functools.partial(registry.build_evaluator, self), address,
                                 self.max_concurrent or self.max_in_flight or 1,
                                 num_gpus_per_trial=self.ray_option("gpus_per_trial"),
                                 num_cpus_per_trial=self.ray_option("cpus_per_trial"),
                                 max_retries=self.ray_option("max_retries"))

    def join_processes(self) -> None:
        """``jax.distributed.initialize`` with ``--coordinator``, ``--num-processes`` and
        ``--process-id`` (None: what JAX detects); call before anything else touches JAX.

        Raises:
          ValueError: one line, when JAX cannot join the processes.
        """
        from layernas.executors import initialize_distributed

        try:
            initialize_distributed(coordinator_address=self.coordinator and self.coordinator.strip(),
                                   num_processes=self.num_processes, process_id=self.process_id)
        except (ValueError, TypeError, RuntimeError) as e:
            raise ValueError(f"jax.distributed.initialize: {first_line(e)} (pass --coordinator HOST:PORT "
                             f"--num-processes N --process-id I, or run where JAX finds them: Cloud TPU, SLURM, "
                             f"Open MPI)") from None

    def default_out_dir(self) -> Path:
        """``runs/<named from the space, dataset, searcher, target and seed>``: what ``--out`` defaults to."""
        parts = [self.space, self.dataset, self.searcher, self.metric or registry.get_space_entry(self.space).default_metric]
        if self.fraction is not None:
            parts.append(f"frac{self.fraction:g}")
        else:
            parts.append(f"max{self.target_max:g}" if self.target_max is not None else "nomax")
            if self.target_min is not None:
                parts.append(f"min{self.target_min:g}")
        parts += [f"{m}{v:g}" for m, v in sorted(self.caps)]
        parts.append(f"seed{self.seed}")
        return Path("runs") / re.sub(r"[^A-Za-z0-9_.+-]", "_", "-".join(parts).replace("/", "_"))

    def run_settings(self) -> dict:
        """What a resume must match besides the searcher, seed and target: the dataset, the
        evaluator, the resolved table (absolute path plus content hash) and the recipe."""
        settings: dict[str, Any] = {"dataset": self.dataset,
                                    "evaluator": self.trainer if self.trainer else self.evaluator_kind}
        if self.evaluator_kind == "table":
            from layernas.table_evaluator import NATS_CHARGE_EPOCHS

            # the charge policy (12-epoch time when the table records its epochs): a run
            # charged another way must not resume under it
            settings["charge_epochs"] = NATS_CHARGE_EPOCHS
            if self.table is None or self.table == "official":
                settings["table"] = self.table or "default"
            else:
                settings["table"] = self.table
                from layernas.tables import table_fingerprint

                settings["table_sha256"] = table_fingerprint(self.table)
        if self.recipe_overrides:
            settings["recipe_overrides"] = self.recipe_overrides
        if self.store is not None:
            settings["store"] = {**self.store_options(), "store": str(self.store_options()["store"])}
        if self.codec_options:
            settings["codec"] = self.codec_options
        return settings


def _host_port(text: str) -> bool:
    text = text.strip().removeprefix("ray://")
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})", text.strip())
    return bool(m) and 1 <= int(m.group(2)) <= 65535


def check_resumable(out: str | Path) -> None:
    """Check that ``out`` holds a run that ``--resume`` can continue.

    Args:
      out: the run directory.
    Raises:
      ValueError: ``out`` does not exist (a misspelt ``--out`` must not start a new run).
        What the folder holds (snapshot and journal) is checked by the run loop when it
        resumes, with one line naming the file.
    """
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"--resume: {out} holds no run (no such directory); check --out, or drop --resume "
                         f"to start a new run")


