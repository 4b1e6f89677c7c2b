"""Table-lookup evaluation of NATS-Bench architectures, following the NATS-Bench protocol.

:class:`TableEvaluator` answers a :class:`~layernas.evaluator.Trial` from a
:class:`~layernas.tables.Table`, as NATS-Bench's ``simulate_train_eval`` does:

* ``reward``: the validation accuracy of ONE seed, drawn deterministically from
  ``trial.seed`` (:func:`seed_index`); NATS-Bench draws one of the trained seeds at random
  per query. For cifar10 the validation set is the ``cifar10-valid`` split.
* ``cost_seconds``: simulated seconds charged for the query, ``train_time_s * scale +
  valid_time_s``: the architecture's training time plus one validation pass
  (``train-all-time + valid-per-time`` in NATS-Bench). ``scale`` is 1, or
  ``charge_epochs / train_time_epochs`` when ``charge_epochs`` is given: NATS-Bench's
  training time is linear in epochs (the 12-epoch ``T-train@total`` is exactly 12/200 of
  the 200-epoch one, checked on the official fixture), so ``charge_epochs=12`` charges
  the 12-epoch time that the NATS-Bench budgets (20000/40000/120000 s for tss) are in.
  The default table has no validation-pass time; it then charges 0 for that part (a
  validation pass is ~3 % of 12-epoch training in NATS-Bench).
* ``test``: the table's test accuracy (mean over seeds) when it has one, else None.
* ``costs``: ``params`` (MB) and ``latency`` (s) from the table (when known).
* ``info``: ``{"table_seed": position of the seed drawn, "index": official index}``, plus
  ``"seed"`` (the seed id) when the table records seed ids.

Unknown architectures give ``EvalResult.failed`` with the reason. Lookups are a dict hit
plus a hash (a few microseconds); :attr:`TableEvaluator.arrays` and
:meth:`TableEvaluator.evaluate_rows` give the same numbers vectorised, for benchmarks that
simulate many runs.

Example:
    >>> from layernas.tables import default_table
    >>> from layernas.table_evaluator import TableEvaluator
    >>> from layernas.evaluator import Trial
    >>> ev = TableEvaluator(default_table(), "cifar10", charge_epochs=12)
    >>> r = ev.evaluate(Trial(0, (3, 3, 3, 3, 3, 3), seed=1))
    >>> r.ok and 80 < r.reward < 100 and r.cost_seconds > 0
    True
"""

from __future__ import annotations

import math

import numpy as np

from layernas.evaluator import EvalResult, Trial, fast_builder
from layernas.tables import Table, TableArrays, TableError, load_table

_MASK = (1 << 64) - 1

_new_result = fast_builder(EvalResult)   # EvalResult(...) without the frozen __init__'s cost


def _splitmix64(seed: int) -> int:
    z = (seed + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


_MIXED: dict = {}        # trial seed -> splitmix64(seed), for TableEvaluator.evaluate
_MIXED_SIZE = 1 << 17


def seed_index(seed: int, num_seeds: int) -> int:
    """Which of ``num_seeds`` table seeds a trial with ``seed`` reads: splitmix64(seed) mod n."""
    return _splitmix64(int(seed)) % int(num_seeds)


def seed_indices(seeds: np.ndarray, num_seeds: np.ndarray) -> np.ndarray:
    """Vectorised :func:`seed_index` (same numbers)."""
    z = np.asarray(seeds).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z % np.asarray(num_seeds).astype(np.uint64)).astype(np.int64)


class TableEvaluator:
    """Evaluates architectures by table lookup (see the module docstring).

    Args:
      table: a :class:`Table`, or a source for :func:`load_table` (path, None, "official").
      dataset: ``cifar10``, ``cifar100`` or ``ImageNet16-120``.
      space: the search space whose architectures will be asked (its layers must be the
        table's space's; its FLOPs fill ``arrays.flops``); or "tss"/"sss"; default: the
        table's space (then ``arrays.flops`` is None).
      charge_epochs: charge the training time of this many epochs (rescaled from the
        table's ``train_time_epochs``); None charges the table's training time as is.
    """

    def __init__(self, table, dataset: str, space=None, charge_epochs: int | None = None):
        if not isinstance(table, Table):
            name = space if isinstance(space, str) else getattr(space, "name", "nats-tss")
            table = load_table(table, "sss" if "sss" in name else "tss")
        self.table = table
        self.dataset = dataset
        space_object = space if space is not None and not isinstance(space, str) else None
        self.arrays: TableArrays = table.arrays(dataset)
        if space_object is not None:
            expected = len(self.arrays.archs[0])
            if space.num_layers != expected or any(
                space.arch_to_str(a) != s for a, s in zip(self.arrays.archs[:3].tolist(), self.arrays.arch_str[:3])
            ):
                raise TableError(f"space {space.name!r} does not match the NATS {table.space} table {table.source}")
            if callable(getattr(space_object, "flops_of_array", None)):
                self.arrays = table.arrays(dataset, space_object)  # with the space's FLOPs of every row
        self.space = space
        self.time_scale = 1.0
        if charge_epochs is not None:
            epochs = table.metadata.get("train_time_epochs")
            if not epochs:
                raise TableError(
                    f"table {table.source} does not record its train_time_epochs, so charge_epochs="
                    f"{charge_epochs} cannot rescale it; pass metadata={{'train_time_epochs': N}} to load_table"
                )
            if charge_epochs <= 0:
                raise TableError(f"charge_epochs must be a positive number of epochs, got {charge_epochs}")
            self.time_scale = float(charge_epochs) / float(epochs)
        self.charge_epochs = charge_epochs
        a = self.arrays
        self.cost_seconds = a.train_time_s * self.time_scale + a.valid_time_s  # per row
        self._row_of_arch = a.row_of_arch
        # plain Python lists: faster per-item access than numpy scalars
        self._valid = [[float(v) for v in row[:n]] for row, n in zip(a.valid_per_seed, a.num_seeds)]
        self._seed_ids = a.seed_ids.tolist()
        self._cost = self.cost_seconds.tolist()
        self._test = [None if not math.isfinite(t) else float(t) for t in a.test_mean]
        self._index = a.index.tolist()
        self._costs = [
            {k: float(v) for k, v in (("params", p), ("latency", l)) if math.isfinite(v)}
            for p, l in zip(a.params_mb, a.latency_s)
        ]
        # everything one lookup reads, one tuple per architecture (a single dict hit)
        self._lookup = {
            arch: (self._valid[row], len(self._valid[row]), self._index[row], self._seed_ids[row],
                   self._cost[row], self._test[row], self._costs[row])
            for arch, row in self._row_of_arch.items()
        }

    def row(self, arch) -> int | None:
        """The table row of an architecture, or None if the table lacks it."""
        return self._row_of_arch.get(tuple(arch))

    def evaluate(self, trial: Trial) -> EvalResult:
        arch = trial.arch
        hit = self._lookup.get(arch if type(arch) is tuple else tuple(arch))
        if hit is None:
            return EvalResult.failed(
                trial, f"architecture {tuple(trial.arch)} is not in table {self.table.source} ({self.dataset})"
            )
        valid, n, index, seed_ids, cost, test, costs = hit
        seed = trial.seed
        z = _MIXED.get(seed)   # runs that share a seed share their trial seeds
        if z is None:
            z = _splitmix64(int(seed))
            if len(_MIXED) < _MIXED_SIZE:
                _MIXED[seed] = z
        k = z % n   # seed_index(seed, n)
        seed_id = seed_ids[k]
        info = {"table_seed": k, "index": index, "seed": seed_id} if seed_id >= 0 else \
            {"table_seed": k, "index": index}
        return _new_result(trial.trial_id, tuple(arch), valid[k], cost, test, dict(costs), "ok", "", info)

    def evaluate_rows(self, rows: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised lookups: ``(reward, cost_seconds, test)`` for table rows and trial seeds,
        the same numbers :meth:`evaluate` gives (test is NaN when unknown)."""
        rows = np.asarray(rows, dtype=np.int64)
        k = seed_indices(seeds, self.arrays.num_seeds[rows])
        return self.arrays.valid_per_seed[rows, k], self.cost_seconds[rows], self.arrays.test_mean[rows]


__all__ = ["TableEvaluator", "seed_index", "seed_indices"]


NATS_CHARGE_EPOCHS = 12  # NATS-Bench's search budgets (20000/40000/120000 s) are 12-epoch training time


def evaluator_for_search(config, space) -> TableEvaluator:
    """The ``"table"`` factory of the NATS spaces in :mod:`layernas.registry`: a lookup in
    ``config.table`` (default: the packaged table) for ``config.dataset``."""
    table = load_table(config.table, space="sss" if config.space == "nats-sss" else "tss")
    # charge the NATS-Bench protocol's 12-epoch training time (its budgets are in it), when the
    # table says which epochs its times are for; else as recorded (the CLI prints a note)
    charge = NATS_CHARGE_EPOCHS if table.metadata.get("train_time_epochs") else None
    return TableEvaluator(table, config.dataset, space, charge_epochs=charge)
