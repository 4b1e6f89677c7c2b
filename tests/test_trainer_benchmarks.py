"""The benchmark helpers: the PyTorch twin of the tss network and the proxy-rank selection."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _import_bench(name: str):
    """Import a benchmarks/ script without letting its XLA_FLAGS default leak into the tests."""
    saved = os.environ.get("XLA_FLAGS")
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))
        if saved is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = saved


OPS_CASES = [
    ("avg_pool_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_1x1", "skip_connect", "skip_connect"),
    ("nor_conv_3x3",) * 6,
    ("none",) * 6,
]


@pytest.mark.parametrize("ops", OPS_CASES)
@pytest.mark.parametrize("C,N", [(4, 1), (16, 5)])
def test_torch_tss_matches_flax_parameter_count_and_output_shape(ops, C, N):
    torch = pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp

    from layernas.trainers.nats_models import build_tss

    net = _import_bench("torch_nats_tss").TorchTss(ops, 10, C, N)
    torch_params = sum(p.numel() for p in net.parameters())
    model = build_tss(ops, 10, C, N)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    flax_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
    assert torch_params == flax_params
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_torch_tss_nats_fixture_param_count():
    pytest.importorskip("torch")
    net = _import_bench("torch_nats_tss").TorchTss(OPS_CASES[0], 10)  # NATS arch 0: 0.129306 MB
    assert sum(p.numel() for p in net.parameters()) == 129306


def test_arch_ops_parses_nats_strings():
    pr = _import_bench("proxy_rank")
    s = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    assert pr.arch_ops(s) == OPS_CASES[0]
    with pytest.raises(ValueError, match="expected 6"):
        pr.arch_ops("|none~0|")


def test_selection_spans_the_range_and_is_deterministic(nats_tss_csv):
    import pandas as pd

    pr = _import_bench("proxy_rank")
    table = pd.read_csv(nats_tss_csv)
    a = pr.select_architectures(table, 30, seed=0)
    b = pr.select_architectures(table, 30, seed=0)
    assert list(a.index) == list(b.index)
    assert a.index.is_unique and len(a) == 30
    acc = a[pr.REFERENCE]
    assert acc.min() < 15 and acc.max() > 91  # value-spaced half reaches both ends
    q = a[a.selection == "quantile"][pr.REFERENCE]
    assert len(q) == 15 and q.median() > 80  # quantile half sits where most archs are
