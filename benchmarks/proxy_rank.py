"""Does our proxy training rank NATS tss architectures like the 200-epoch benchmark?

Trains a fixed, seeded selection of tss architectures on real CIFAR-10 images
(``../shared/data/cifar10``, train split only; validation is held out of it) with the
PROXY recipe of :mod:`layernas.trainers.train`, at two or more recipe lengths, and compares
the proxy validation accuracy with the table's 200-epoch cifar10 validation accuracy
(``cifar10_valid_mean``, the ``cifar10-valid`` split) by Kendall tau and Spearman rho.
The test split and the table's test accuracy are never used.

Selection (``--archs``, seed ``--seed``): half the architectures are nearest to targets
spaced evenly in accuracy from the table's minimum to its maximum ("value-spaced": the
whole range, including the broken cells near 10%); the other half are one random pick per
equal-count accuracy quantile bin ("quantile-spaced": the crowded 80-91% region where a
search actually has to choose). Correlations are reported for all and for each half.

CPU budget: the network is shrunk (``--C``, ``--N``) and trained on a class-balanced subset;
1, 3 and 6 epochs took 33 minutes on the shared 2-core machine (load 2-14). Rows are
written to the CSV as each child finishes, architectures run in a shuffled order, and ``--budget-minutes`` stops
starting new ones, so a cut-short run still spans the range. ``--analyze-only`` redoes the
statistics and plot from the CSV.

Usage:
    python benchmarks/proxy_rank.py                    # train + analyse -> results/proxy_rank/
    python benchmarks/proxy_rank.py --analyze-only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LAYERNAS_SHARED", REPO.parent / "shared"))
TSS_CSV = SHARED / "data" / "nats_tss" / "nats_tss_200ep.csv"
CIFAR10 = SHARED / "data" / "cifar10"
OUT = REPO / "results" / "proxy_rank"
REFERENCE = "cifar10_valid_mean"


def arch_ops(arch_str: str) -> tuple[str, ...]:
    """``|op~0|+|op~0|op~1|+|...|`` -> the 6 ops in edge order (1<-0),(2<-0),(2<-1),..."""
    ops = tuple(tok.split("~")[0] for tok in arch_str.split("|") if "~" in tok)
    if len(ops) != 6:
        raise ValueError(f"arch string {arch_str!r} has {len(ops)} ops; expected 6")
    return ops


def select_architectures(table: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` distinct rows: ``n//2`` value-spaced and the rest quantile-spaced (see module doc)."""
    rng = np.random.default_rng(seed)
    acc = table[REFERENCE].to_numpy()
    chosen: dict[int, str] = {}
    n_value = n // 2
    for target in np.linspace(acc.min(), acc.max(), n_value):
        dist = np.abs(acc - target)
        dist[list(chosen)] = np.inf
        near = np.flatnonzero(dist <= dist.min() + 0.05)  # ties / near-ties: seeded pick
        chosen[int(rng.choice(near))] = "value"
    order = np.argsort(acc, kind="stable")
    bins = np.array_split(order, n - n_value)
    for b in bins:
        free = [i for i in b if int(i) not in chosen]
        chosen[int(rng.choice(free))] = "quantile"
    rows = table.loc[list(chosen)].copy()
    rows["selection"] = [chosen[i] for i in rows.index]
    return rows


def train_all(args) -> None:
    import jax

    from layernas.trainers import nats_models, train

    train.configure_compilation_cache()
    table = pd.read_csv(TSS_CSV)
    sel = select_architectures(table, args.archs, args.seed)
    order = np.random.default_rng(args.seed + 1).permutation(len(sel))
    sel = sel.iloc[order]
    base = train.PROXY.replace(train_per_class=args.train_per_class + args.valid_per_class,
                               valid_per_class=args.valid_per_class, schedule=args.schedule,
                               batch_size=args.batch_size)
    tr, va = train.prepare_data(CIFAR10, base, seed=args.seed)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",)) if len(jax.devices()) > 1 else None
    OUT.mkdir(parents=True, exist_ok=True)
    csv = OUT / "proxy_runs.csv"
    done = set()
    if csv.exists() and not args.fresh:
        prev = pd.read_csv(csv)
        done = {(int(r.index), int(r.epochs)) for r in prev.itertuples()}
    elif csv.exists():
        csv.unlink()
    t_start = time.perf_counter()
    for k, row in enumerate(sel.itertuples()):
        if time.perf_counter() - t_start > args.budget_minutes * 60:
            print(f"budget of {args.budget_minutes} min reached after {k} architectures", flush=True)
            break
        model = nats_models.build_tss(arch_ops(row.arch_str), tr.num_classes, C=args.C, N=args.N)
        for epochs in args.epochs:
            if (int(row.Index), epochs) in done:
                continue
            recipe = base.replace(name=f"proxy-{epochs}ep", epochs=epochs)
            res = train.train_model(model, tr, va, recipe, seed=args.seed, placement=mesh, keep_variables=False)
            rec = {"index": int(row.Index), "arch_str": row.arch_str, "selection": row.selection,
                   "reference_valid": float(getattr(row, REFERENCE)), "epochs": epochs,
                   "proxy_valid": res.valid_accuracy, "proxy_valid_loss": res.valid_loss,
                   "train_loss": res.train_loss, "status": res.status, "error": res.error,
                   "seconds": round(res.seconds, 3), "compile_seconds": round(res.compile_seconds, 3),
                   "init_seconds": round(res.init_seconds, 3), "images_per_second": round(res.images_per_second, 1),
                   "C": args.C, "N": args.N, "train_images": len(tr), "valid_images": len(va),
                   "batch_size": recipe.batch_size, "learning_rate": recipe.learning_rate,
                   "schedule": recipe.schedule, "loadavg_1min": os.getloadavg()[0]}
            table_so_far = pd.concat([pd.read_csv(csv), pd.DataFrame([rec])]) if csv.exists() else pd.DataFrame([rec])
            table_so_far.to_csv(csv.with_suffix(".tmp"), index=False)
            os.replace(csv.with_suffix(".tmp"), csv)  # rewrite whole: columns may grow between versions
            print(f"[{k + 1}/{len(sel)}] #{row.Index} {epochs}ep ref {rec['reference_valid']:.2f} "
                  f"proxy {res.valid_accuracy:.2f} ({res.status}) {res.seconds:.1f}s "
                  f"(compile {res.compile_seconds:.1f}s) elapsed {time.perf_counter() - t_start:.0f}s", flush=True)


def correlations(df: pd.DataFrame) -> pd.DataFrame:
    from scipy import stats

    rows = []
    for epochs, g in df[df.status == "ok"].groupby("epochs"):
        for subset, h in [("all", g), ("value-spaced", g[g.selection == "value"]),
                          ("quantile-spaced", g[g.selection == "quantile"]),
                          ("reference >= 80%", g[g.reference_valid >= 80])]:
            if len(h) < 3:
                continue
            tau = stats.kendalltau(h.proxy_valid, h.reference_valid)
            rho = stats.spearmanr(h.proxy_valid, h.reference_valid)
            rows.append({"epochs": int(epochs), "subset": subset, "n": len(h),
                         "kendall_tau": tau.statistic, "kendall_p": tau.pvalue,
                         "spearman_rho": rho.statistic, "spearman_p": rho.pvalue,
                         "mean_proxy_valid": h.proxy_valid.mean(),
                         "train_seconds_total": h.seconds.sum()})
    return pd.DataFrame(rows)


def analyze(args, wall_seconds: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from layernas.provenance import write_provenance

    df = pd.read_csv(OUT / "proxy_runs.csv")
    corr = correlations(df)
    corr.to_csv(OUT / "rank_correlations.csv", index=False)
    lengths = sorted(df.epochs.unique())
    fig, axes = plt.subplots(1, len(lengths), figsize=(5 * len(lengths), 4.2), squeeze=False)
    for ax, ep in zip(axes[0], lengths):
        g = df[(df.epochs == ep) & (df.status == "ok")]
        for sel, mk in (("value", "o"), ("quantile", "s")):
            h = g[g.selection == sel]
            ax.scatter(h.reference_valid, h.proxy_valid, marker=mk, alpha=0.75, label=f"{sel}-spaced")
        c = corr[(corr.epochs == ep) & (corr.subset == "all")]
        if len(c):
            ax.set_title(f"proxy {ep} epoch(s): tau={c.kendall_tau.iloc[0]:.3f}, rho={c.spearman_rho.iloc[0]:.3f}")
        ax.set_xlabel("NATS-Bench 200-epoch cifar10-valid accuracy (%)")
        ax.set_ylabel("proxy validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(OUT / "proxy_rank.png", dpi=120)

    first = df.iloc[0]
    lines = ["# Proxy ranking vs NATS-Bench 200-epoch validation accuracy (cifar10)", "",
             f"Architectures: {df['index'].nunique()} tss cells (seed {args.seed}: half value-spaced over the "
             f"table's accuracy range, half one per accuracy quantile). Network: tss skeleton with "
             f"C={int(first.C)}, N={int(first.N)} (NATS uses C=16, N=5; shrunk to fit the CPU budget). "
             f"Data: {int(first.train_images)} real CIFAR-10 train images, {int(first.valid_images)} held out of "
             f"the train split for validation (class-balanced). Recipe: PROXY's optimizer (SGD-Nesterov, lr "
             f"{first.learning_rate}, {first.schedule} learning rate, wd 5e-4, batch {int(first.batch_size)}, crop+flip) at "
             f"{', '.join(str(e) for e in lengths)} epoch(s). Reference: the table's `{REFERENCE}` "
             "(mean over seeds of 200-epoch cifar10-valid accuracy). No test accuracy is used.", "",
             "| epochs | subset | n | Kendall tau | Spearman rho | p (tau) | train s (sum) |",
             "|---|---|---|---|---|---|---|"]
    for r in corr.itertuples():
        lines.append(f"| {r.epochs} | {r.subset} | {r.n} | {r.kendall_tau:.3f} | {r.spearman_rho:.3f} | "
                     f"{r.kendall_p:.2g} | {r.train_seconds_total:.0f} |")
    failed = df[df.status != "ok"]
    lines += ["", f"Failed trainings: {len(failed)}.",
              f"Training wall time, all children and lengths: {df.seconds.sum():.0f} s "
              f"(median {df.seconds.median():.1f} s per child, of which compile {df.compile_seconds.median():.1f} s). "
              "The machine (2 cores) was shared with other jobs while this ran, so times are indicative.",
              "", "![scatter](proxy_rank.png)", "",
              "Files: `proxy_runs.csv` (one row per child and length), `rank_correlations.csv`, `proxy_rank.png`."]
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")
    if wall_seconds is not None:
        write_provenance(OUT, wall_seconds, " ".join(["python"] + sys.argv), archs=args.archs, seed=args.seed,
                         epochs=args.epochs, C=args.C, N=args.N, train_per_class=args.train_per_class,
                         valid_per_class=args.valid_per_class, reference=REFERENCE,
                         training_seconds_all_runs=float(df.seconds.sum()),
                         note="wall_seconds covers this invocation only; the CSV may have been filled by "
                              "earlier (resumed) invocations, see training_seconds_all_runs")
    print(corr.to_string(index=False))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", type=int, default=30)
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 3, 6], help="recipe lengths to compare")
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--N", type=int, default=1)
    p.add_argument("--train-per-class", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine"],
                   help="constant: every length compiles to the same program, so the persistent "
                        "compilation cache serves the second length (cosine bakes the step count in)")
    p.add_argument("--valid-per-class", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-minutes", type=float, default=34.0)
    p.add_argument("--fresh", action="store_true", help="discard proxy_runs.csv instead of resuming it")
    p.add_argument("--analyze-only", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if not args.analyze_only:
        train_all(args)
    analyze(args, None if args.analyze_only else time.perf_counter() - t0)


if __name__ == "__main__":
    main()
