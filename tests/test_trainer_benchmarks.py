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


def _load_flax_into_torch(torch, net, model, variables):
    """Copy a flax MobileNet's variables into its PyTorch twin, layer by layer."""
    params, stats = variables["params"], variables["batch_stats"]

    def conv_bn(seq, p, s):
        conv = next(m for m in seq if isinstance(m, torch.nn.Conv2d))
        bn = next(m for m in seq if isinstance(m, torch.nn.BatchNorm2d))
        conv.weight.data = torch.from_numpy(np.asarray(p["conv"]["kernel"]).transpose(3, 2, 0, 1).copy())
        bn.weight.data, bn.bias.data = (torch.from_numpy(np.asarray(p["bn"][k]).copy()) for k in ("scale", "bias"))
        bn.running_mean.data, bn.running_var.data = (torch.from_numpy(np.asarray(s["bn"][k]).copy())
                                                     for k in ("mean", "var"))

    def dense(lin, p):
        lin.weight.data = torch.from_numpy(np.asarray(p["kernel"]).T.copy())
        lin.bias.data = torch.from_numpy(np.asarray(p["bias"]).copy())

    conv_bn(net.stem, params["stem"]["stem"], stats["stem"]["stem"])
    for torch_layer, name, layer in zip(net.layers, model.net.names, model.net.layers):
        p, s = params[name.replace(".", "_")], stats[name.replace(".", "_")]
        parts = iter(torch_layer.body)
        if layer.expand:
            conv_bn(next(parts), p["expand"], s["expand"])
        conv_bn(next(parts), p["dw"], s["dw"])
        if layer.se_ch:
            se = next(parts)
            for fc, key in ((se.fc1, "fc1"), (se.fc2, "fc2")):
                fc.weight.data = torch.from_numpy(np.asarray(p["se"][key]["kernel"]).transpose(3, 2, 0, 1).copy())
                fc.bias.data = torch.from_numpy(np.asarray(p["se"][key]["bias"]).copy())
        conv_bn(next(parts), p["project"], s["project"])
    if model.net.head_ch:
        conv_bn(net.head, params["head"]["head"], stats["head"]["head"])
    for i, lin in enumerate(m for m in net.fc if isinstance(m, torch.nn.Linear)):
        dense(lin, params["head"][f"fc{i}"])
    dense(net.classifier, params["head"]["classifier"])


@pytest.mark.parametrize("space_name", ["mobilenetv2-cifar", pytest.param("mobilenetv3-small-cifar", marks=pytest.mark.slow)])
def test_torch_mobilenet_twin_computes_the_flax_network(space_name):
    """Same parameter count and, with the flax weights copied in, the same logits (eval mode):
    the PyTorch side of benchmarks/mobilenet_step.py trains the same network."""
    torch = pytest.importorskip("torch")
    import jax

    from layernas import registry
    from layernas.trainers import mbconv_model
    from layernas.trainers.loop import init_variables

    space = registry.make_space(space_name)
    rng = np.random.default_rng(0)
    arch = tuple(int(rng.integers(len(layer.options))) for layer in space.layers)  # kernels 5/7 and strides
    model = mbconv_model.build_layerwise(space, arch)
    variables = init_variables(model, (1, 32, 32, 3), 0)
    variables = {**variables, "batch_stats": jax.tree.map(  # non-trivial running statistics
        lambda v: np.asarray(v) + rng.uniform(0.1, 0.5, v.shape).astype(np.float32), variables["batch_stats"])}
    net = _import_bench("torch_mobilenet").TorchMobileNet(model.net).eval()
    flax_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
    assert sum(p.numel() for p in net.parameters()) == flax_params
    _load_flax_into_torch(torch, net, model, variables)
    x = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    want = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


@pytest.mark.slow  # ~1 min: compiles two MobileNet train steps and starts a PyTorch process
def test_mobilenet_step_quick_run(tmp_path):
    pytest.importorskip("torch")
    import pandas as pd

    assert _import_bench("mobilenet_step").main(["--quick", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "mobilenet_step.csv")
    steps = df[df.measure == "train step"]
    assert set(steps.config) == {"jax, depthwise lax", "jax, depthwise shifted", "pytorch eager, 2 threads, NCHW",
                                 "pytorch eager, 2 threads, channels_last"}
    assert (steps.seconds > 0).all() and steps.ratio_vs_pytorch.max() >= 1.0  # the best PyTorch layout is 1
    assert "ratio vs PyTorch" in (tmp_path / "mobilenet_step.md").read_text()
