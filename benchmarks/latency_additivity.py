"""Does latency add up? LUT-predicted vs measured end-to-end latency of random archs.

For ``--n`` random architectures of a space (default: the CIFAR-size MobileNetV3-Small,
32x32 input, batch 8, so it finishes in minutes on a 2-core CPU), this

1. fills a per-unit latency LUT (stem, every MBConv layer, head; each jitted alone,
   warm-up, ``--repeats`` timed calls, median);
2. measures each whole model end to end (one jitted call, median), interleaved in
   ``--rounds`` rounds with its own units timed again, so that the "same-window unit sum"
   tests additivity alone, free of the load drift between building the LUT and now;
3. compares the LUT sum with the measurement: relative error, Spearman and Kendall rank
   correlation; the same rank correlations for MAdds (the baseline a latency LUT must
   beat to be worth it) and for an overhead-corrected LUT sum, which subtracts the
   per-call dispatch cost counted once per unit instead of once per model.

Writes results/latency/: additivity.csv, additivity.png, summary.md, lut.json (the LUT
used), provenance.json. The machine is shared and busy; medians are used throughout.

    python benchmarks/latency_additivity.py [--space mobilenetv3-small-cifar] [--n 30] [--batch 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from scipy import stats

from layernas.provenance import write_provenance
from layernas.search_spaces.mobilenet_v2 import SPACES as V2
from layernas.search_spaces.mobilenet_v3 import SPACES as V3
from layernas.trainers import latency
from layernas.trainers.models import build_model

OUT = Path(__file__).resolve().parents[1] / "results" / "latency"


def plot(df: pd.DataFrame, path: Path, title: str) -> None:
    """Predicted against measured latency (left) and MAdds against latency (right).

    The overhead-corrected LUT sum sits within a fraction of a millisecond of the plain
    LUT sum, so the plain sum is drawn as large open circles and the corrected one as
    small dots inside them: both stay visible.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def rho(col):
        return stats.spearmanr(df[col], df.measured_ms)[0]

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    lim = [0, 1.05 * max(df.measured_ms.max(), df.lut_ms.max(), df.same_window_sum_ms.max())]
    axes[0].scatter(df.measured_ms, df.lut_ms, s=60, facecolors="none", edgecolors="C0", linewidths=1.3,
                    label=f"LUT sum (Spearman {rho('lut_ms'):.3f})", zorder=3)
    axes[0].scatter(df.measured_ms, df.lut_corrected_ms, s=9, color="C1", zorder=4,
                    label=f"LUT sum - dispatch overhead (Spearman {rho('lut_corrected_ms'):.3f})")
    axes[0].scatter(df.measured_ms, df.same_window_sum_ms, s=22, marker="^", color="C2", alpha=0.8, zorder=2,
                    label=f"same-window unit sum (Spearman {rho('same_window_sum_ms'):.3f})")
    axes[0].plot(lim, lim, "k--", lw=1, label="y = x")
    axes[0].set(xlabel="measured end-to-end latency (ms, median)", ylabel="predicted latency (ms)", xlim=lim,
                ylim=lim, title=title)
    axes[0].legend(fontsize=8, loc="lower right")  # below the diagonal: no point there
    axes[1].scatter(df.madds_M, df.measured_ms, s=14, c="C2")
    axes[1].set(xlabel="MAdds (M)", ylabel="measured latency (ms)",
                title=f"MAdds vs latency (Spearman {stats.spearmanr(df.madds_M, df.measured_ms)[0]:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="mobilenetv3-small-cifar", choices=sorted({**V2, **V3}))
    p.add_argument("--n", type=int, default=30, help="random architectures (the default arch is added)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds: the whole model and its units are timed in alternation")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--replot", action="store_true", help="only redraw additivity.png from --out's additivity.csv")
    args = p.parse_args(argv)
    if args.replot:
        import json

        prov = args.out / "provenance.json"
        backend = json.loads(prov.read_text()).get("machine", {}).get("backend", "") if prov.exists() else ""
        plot(pd.read_csv(args.out / "additivity.csv"), args.out / "additivity.png",
             f"{args.space}, batch {args.batch}" + (f", {backend}" if backend else ""))
        print(f"redrew {args.out / 'additivity.png'}")
        return
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    lut = latency.LatencyLUT(args.out / "lut.json", batch_size=args.batch, warmup=args.warmup, repeats=args.repeats)
    space = {**V2, **V3}[args.space](latency_lut=lut)
    rng = np.random.default_rng(args.seed)
    archs = [space.default_arch()] + [space.random_arch(rng) for _ in range(args.n)]

    units = [u for a in archs for u in space.latency_units(a)]
    t_lut = time.time()
    n_timed = lut.fill(units, progress=True)
    t_lut = time.time() - t_lut
    overhead = latency.dispatch_overhead_ms()
    rows = []
    t_e2e = time.time()
    for i, arch in enumerate(archs):
        c = space.cost(arch)
        n_units = len(space.latency_units(arch))
        r = space.spec.resolution
        calls = [latency.compiled_call(build_model(space, arch), (args.batch, r, r, 3))]
        calls += [latency.compiled_call(latency.unit_module(u), u.input_shape(args.batch)) for u in space.latency_units(arch)]
        per_round = max(1, args.repeats // args.rounds)
        times = latency.interleaved_ms(calls, args.rounds, per_round, args.warmup)
        measured = times[0]
        rows.append(dict(arch=space.arch_to_str(arch), is_default=i == 0, madds_M=c["madds"] / 1e6,
                         params_M=c["params"] / 1e6, n_units=n_units, lut_ms=c["latency"],
                         lut_corrected_ms=c["latency"] - (n_units - 1) * overhead,
                         same_window_sum_ms=sum(times[1:]), measured_ms=measured))
        print(f"[e2e] {i + 1}/{len(archs)} measured {measured:.3f} ms, LUT {c['latency']:.3f} ms, "
              f"same-window unit sum {sum(times[1:]):.3f} ms", flush=True)
    t_e2e = time.time() - t_e2e
    df = pd.DataFrame(rows)
    df["rel_error"] = df.lut_ms / df.measured_ms - 1
    df["rel_error_corrected"] = df.lut_corrected_ms / df.measured_ms - 1
    df["rel_error_same_window"] = df.same_window_sum_ms / df.measured_ms - 1
    df.to_csv(args.out / "additivity.csv", index=False)

    def corr(col):
        return stats.spearmanr(df[col], df.measured_ms)[0], stats.kendalltau(df[col], df.measured_ms)[0]

    rho_lut, tau_lut = corr("lut_ms")
    rho_cor, tau_cor = corr("lut_corrected_ms")
    rho_madds, tau_madds = corr("madds_M")
    rho_sw, tau_sw = corr("same_window_sum_ms")

    plot(df, args.out / "additivity.png", f"{args.space}, batch {args.batch}, {jax.default_backend()}")

    wall = time.time() - t0
    lut_note = "; the rest were read from lut.json, timed by an earlier run under a different load" if n_timed < len(lut) else ""
    summary = f"""# Latency additivity: LUT prediction vs measured end-to-end latency

Space `{args.space}` ({len(archs)} architectures: the default plus {args.n} random, seed {args.seed}), batch {args.batch},
backend `{latency.device_key()}`, jax {jax.__version__}. Every latency is the median of {args.repeats} timed calls
after {args.warmup} warm-up calls (model and units interleaved in {args.rounds} rounds), on a shared, busy 2-core machine (other jobs ran at the same time), so single
numbers are noisy; ranks are the more robust summary.

| predictor | median abs rel error | mean rel error | Spearman | Kendall |
|---|---|---|---|---|
| LUT sum | {df.rel_error.abs().median():.3f} | {df.rel_error.mean():+.3f} | {rho_lut:.3f} | {tau_lut:.3f} |
| LUT sum - (units-1) x dispatch overhead ({overhead:.4f} ms) | {df.rel_error_corrected.abs().median():.3f} | {df.rel_error_corrected.mean():+.3f} | {rho_cor:.3f} | {tau_cor:.3f} |
| unit sum timed in the same window as the model (additivity alone, no LUT drift) | {df.rel_error_same_window.abs().median():.3f} | {df.rel_error_same_window.mean():+.3f} | {rho_sw:.3f} | {tau_sw:.3f} |
| MAdds (baseline; rank only) | - | - | {rho_madds:.3f} | {tau_madds:.3f} |

Measured latency range {df.measured_ms.min():.3f}-{df.measured_ms.max():.3f} ms; LUT range
{df.lut_ms.min():.3f}-{df.lut_ms.max():.3f} ms. The LUT has {len(lut)} units for this device and batch
({n_timed} timed in this run, {t_lut:.0f} s{lut_note}); end-to-end measurements took {t_e2e:.0f} s; total wall {wall:.0f} s.

Why the sum can be off: each unit is a separate jitted call, so the sum pays the per-call dispatch
cost once per unit (the corrected row removes that), and XLA fuses across unit boundaries
(BN/activation/residual into neighbouring convs, and layout choices) only in the whole model.
Files: additivity.csv (one row per architecture), additivity.png, lut.json.
"""
    (args.out / "summary.md").write_text(summary)
    write_provenance(args.out, wall, " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
                     space=args.space, n_archs=len(archs), batch=args.batch, repeats=args.repeats,
                     device=latency.device_key())
    print(summary)


if __name__ == "__main__":
    main()
