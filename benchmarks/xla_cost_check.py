"""Cross-check the cost model against XLA's own count (``compiled.cost_analysis()``).

For each MobileNet space (default architecture plus random ones, ImageNet and CIFAR
resolution) this compiles the flax model's inference forward pass (batch 1) and compares
XLA's ``flops`` with ``2 * MAdds`` of :mod:`layernas.cost_model`. It also compiles every
distinct conv of one default model on its own to split the difference into

* padding: XLA counts only the kernel taps that land inside the image (``"SAME"``
  padding taps are skipped), the cost model counts the full ``k x k`` window like the
  papers do; ``valid_tap_madds`` reproduces XLA's convention exactly;
* elementwise work that MAdds leave out by convention (BN, activations, residual adds,
  SE gating, pooling, biases).

Writes results/mobilenet/xla_cost_check.csv, xla_conv_check.csv, summary_xla.md and
provenance.json.

    python benchmarks/xla_cost_check.py [--random 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from layernas.cost_model import conv_out_size
from layernas.provenance import write_provenance
from layernas.search_spaces.mobilenet_v2 import SPACES as V2
from layernas.search_spaces.mobilenet_v3 import SPACES as V3
from layernas.trainers.mbconv_model import init_variables
from layernas.trainers.models import build_model

OUT = Path(__file__).resolve().parents[1] / "results" / "mobilenet"


def _flops(fn, *args) -> float:
    c = jax.jit(fn).lower(*args).compile().cost_analysis()
    c = c[0] if isinstance(c, (list, tuple)) else c
    return float(c["flops"])


def valid_taps(size: int, kernel: int, stride: int) -> int:
    """Kernel taps inside the input, summed over output positions, for XLA "SAME" padding."""
    out = conv_out_size(size, kernel, stride)
    pad_lo = max((out - 1) * stride + kernel - size, 0) // 2
    return sum(sum(0 <= o * stride - pad_lo + j < size for j in range(kernel)) for o in range(out))


def valid_tap_madds(layer) -> int:
    """MAdds of a conv LayerCost counting only taps inside the input (XLA's convention)."""
    h, w, cin = layer.in_shape
    ho, wo, cout = layer.out_shape
    k = int(round((layer.params / cout / (1 if layer.kind == "dwconv2d" else cin)) ** 0.5))
    stride = -(-h // ho)
    per_tap = cout if layer.kind == "dwconv2d" else cin * cout
    return valid_taps(h, k, stride) * valid_taps(w, k, stride) * per_tap


def model_rows(n_random: int) -> list[dict]:
    rows = []
    for name, factory in {**V2, **V3}.items():
        space = factory()
        rng = np.random.default_rng(0)
        archs = [("default", space.default_arch())] + [(f"random{i}", space.random_arch(rng)) for i in range(n_random)]
        for tag, arch in archs:
            model, r = build_model(space, arch), space.spec.resolution
            x = jnp.zeros((1, r, r, 3))
            v = init_variables(model, x.shape)
            flops = _flops(lambda v, x: model.apply(v, x), v, x)
            net = space.network_cost(arch)
            conv_layers = [l for l in net.layers if l.kind in ("conv2d", "dwconv2d", "dense", "squeeze_excite")]
            vt = sum(valid_tap_madds(l) if l.kind in ("conv2d", "dwconv2d") else l.madds for l in conv_layers)
            elems = sum(int(np.prod(l.out_shape)) for l in net.layers if l.madds == 0 and l.kind != "pool")
            rows.append(dict(space=name, arch=tag, resolution=r, madds=net.madds, two_madds=2 * net.madds,
                             two_valid_tap_madds=2 * vt, xla_flops=flops, ratio_xla_to_2madds=flops / (2 * net.madds),
                             ratio_xla_to_2validtap=flops / (2 * vt),
                             extra_flops_per_elementwise_output=(flops - 2 * vt) / max(elems, 1)))
            print(rows[-1], flush=True)
    return rows


def conv_rows(space_name: str = "mobilenetv3-large") -> list[dict]:
    import flax.linen as nn

    space = {**V2, **V3}[space_name]()
    net = space.network_cost(space.default_arch())
    seen, rows = set(), []
    for l in net.layers:
        if l.kind not in ("conv2d", "dwconv2d"):
            continue
        h, w, cin = l.in_shape
        ho, wo, cout = l.out_shape
        groups = cin if l.kind == "dwconv2d" else 1
        k = int(round((l.params / cout / (cin // groups)) ** 0.5))
        stride = -(-h // ho)
        key = (h, cin, cout, k, stride, groups)
        if key in seen:
            continue
        seen.add(key)
        conv = nn.Conv(cout, (k, k), (stride, stride), padding="SAME", feature_group_count=groups, use_bias=False)
        x = jnp.zeros((1, h, w, cin))
        v = {"params": {"kernel": jnp.zeros((k, k, cin // groups, cout))}}
        flops = _flops(lambda v, x: conv.apply(v, x), v, x)
        rows.append(dict(space=space_name, layer=l.name, kind=l.kind, in_shape="x".join(map(str, l.in_shape)),
                         kernel=k, stride=stride, two_madds=2 * l.madds, two_valid_tap_madds=2 * valid_tap_madds(l),
                         xla_flops=flops, ratio_xla_to_2madds=flops / (2 * l.madds),
                         ratio_xla_to_2validtap=flops / (2 * valid_tap_madds(l))))
    return rows


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A pipe table (pandas' to_markdown needs the absent tabulate package)."""
    fmt = lambda v: format(v, floatfmt) if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--random", type=int, default=2, help="random archs per space besides the default")
    args = p.parse_args(argv)
    t0 = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    models = pd.DataFrame(model_rows(args.random))
    convs = pd.DataFrame(conv_rows())
    models.to_csv(OUT / "xla_cost_check.csv", index=False)
    convs.to_csv(OUT / "xla_conv_check.csv", index=False)
    lines = [
        "# Cost model vs XLA cost_analysis (inference forward, batch 1)", "",
        f"Backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}.", "",
        "## Whole models: XLA flops / (2 x MAdds)", "",
        models[["space", "arch", "resolution", "madds", "xla_flops", "ratio_xla_to_2madds", "ratio_xla_to_2validtap",
                "extra_flops_per_elementwise_output"]].pipe(markdown_table), "",
        f"ratio_xla_to_2madds: min {models.ratio_xla_to_2madds.min():.4f}, max {models.ratio_xla_to_2madds.max():.4f}.", "",
        "## Single convs of the default mobilenetv3-large (each compiled alone)", "",
        markdown_table(convs[["layer", "kind", "in_shape", "kernel", "stride", "ratio_xla_to_2madds",
                              "ratio_xla_to_2validtap"]], ".5f"), "",
        f"Single convs: XLA / (2 x valid-tap MAdds) in [{convs.ratio_xla_to_2validtap.min():.6f}, "
        f"{convs.ratio_xla_to_2validtap.max():.6f}]; XLA / (2 x MAdds) in [{convs.ratio_xla_to_2madds.min():.4f}, "
        f"{convs.ratio_xla_to_2madds.max():.4f}].",
    ]
    (OUT / "summary_xla.md").write_text("\n".join(lines) + "\n")
    write_provenance(OUT, time.time() - t0, " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])))
    print((OUT / "summary_xla.md").read_text())


if __name__ == "__main__":
    main()
