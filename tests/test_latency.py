"""Latency LUT: timing, caching by device, additive prediction, exact bounds on latency."""

import hashlib
import json

import numpy as np
import pytest

from layernas.trainers import latency
from layernas.target import Target
from layernas.search_spaces import layerwise


def tiny_space(lut=None):
    spec = layerwise.BackboneSpec(
        name="tiny-lat", resolution=16, num_classes=10, stem_channels=8, stem_stride=1,
        blocks=(
            layerwise.BlockSpec(8, 1, 1, expansion=(1.0,), depth_options=(1,), kernel_options=(3, 5),
                                expansion_options=(1.0, 2.0), filter_options=(1.0, 2.0)),
            layerwise.BlockSpec(16, 2, 2, expansion=(3.0,), depth_options=(1, 2), kernel_options=(3,),
                                expansion_options=(0.5, 1.0), filter_options=(0.5, 1.0), se_options=(False, True)),
        ),
        head_channels=32,
    )
    return layerwise.LayerwiseSpace(spec, latency_lut=lut)


class HashLUT(latency.LatencyLUT):
    """A deterministic, deliberately non-monotone stand-in 'latency' (no timing)."""

    def __init__(self):
        super().__init__(path=None)

    def latency_ms(self, unit):
        return int(hashlib.sha256(unit.key.encode()).hexdigest()[:6], 16) / 1e6


def test_unit_keys_are_stable_and_distinct():
    space = tiny_space()
    units = space.all_units()
    keys = [u.key for u in units]
    assert len(keys) == len(set(keys)) > 5
    arch = space.default_arch()
    assert {u.key for u in space.latency_units(arch)} <= set(keys)


def test_latency_bounds_exact_with_a_non_monotone_metric():
    space = tiny_space(HashLUT())
    assert "latency" in space.cost_metrics
    rng = np.random.default_rng(0)
    for k in (0, 1, 2, 4):
        prefix = space.random_arch(rng)[:k]
        assert space.cost_bounds(prefix, "latency") == pytest.approx(
            layerwise.brute_force_bounds(space, prefix, "latency"), rel=1e-12)
    arch = space.random_arch(rng)
    assert space.cost(arch)["latency"] == pytest.approx(
        sum(space.latency_lut.latency_ms(u) for u in space.latency_units(arch)))


def test_multi_objective_target_with_latency_cap():
    space = tiny_space(HashLUT())
    lo, hi = space.cost_bounds((), "latency")
    target = Target("madds", max=space.cost_bounds((), "madds")[1], caps={"latency": (lo + hi) / 2, "params": 1e6})
    target.check(space)
    feasible = [a for a in space.all_archs() if target.feasible(space.cost(a))]
    assert 0 < len(feasible) < space.size
    for a in feasible[:5]:
        assert target.reachable(space, a[:3])


def test_lut_times_caches_and_reloads(tmp_path):
    path = tmp_path / "lut.json"
    space = tiny_space()
    lut = latency.LatencyLUT(path, batch_size=2, warmup=1, repeats=3)
    units = space.latency_units(space.default_arch())
    assert lut.fill(units) == len({u.key for u in units})
    assert all(lut.entries[u.key] > 0 for u in units)
    data = json.loads(path.read_text())
    table = f"{latency.device_key()}|bs=2"
    assert set(data["tables"]) == {table}
    again = latency.LatencyLUT(path, batch_size=2, measure_missing=False)
    assert again.predict_ms(units) == pytest.approx(lut.predict_ms(units))
    other_batch = latency.LatencyLUT(path, batch_size=4, measure_missing=False)
    with pytest.raises(KeyError, match="not in the LUT"):
        other_batch.latency_ms(units[0])
    timed = tiny_space(again)
    assert timed.cost(timed.default_arch())["latency"] == pytest.approx(again.predict_ms(units))
    assert "latency_ms" in timed.describe(timed.default_arch())


def test_time_call_returns_a_median():
    calls = []
    ms = latency.time_call(lambda: calls.append(1) or np.zeros(1), warmup=2, repeats=5)
    assert len(calls) == 7 and ms >= 0
