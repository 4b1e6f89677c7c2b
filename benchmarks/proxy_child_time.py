"""Time one child per NATS space under the PROXY recipe (or a shortened copy of it).

Measures, per child: init seconds (numpy vs flax init), first-step compile seconds, train
images/s, wall seconds, and the extrapolated wall time of the full PROXY recipe. Writes
``results/proxy_child_time/{children.csv,summary.md,provenance.json}``.

    python benchmarks/proxy_child_time.py --epochs 1 --data ../shared/data/cifar10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from layernas.provenance import write_provenance
from layernas.trainers import nats_models, train

CHILDREN = {
    # name: (builder, description)
    "tss-mid (2x conv3x3, 2x conv1x1, skip, pool)": lambda k: nats_models.build_tss(
        ("nor_conv_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_3x3", "avg_pool_3x3", "nor_conv_1x1"), k),
    "tss-max (6x conv3x3)": lambda k: nats_models.build_tss(("nor_conv_3x3",) * 6, k),
    "tss-mid reduced C=8 N=1": lambda k: nats_models.build_tss(
        ("nor_conv_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_3x3", "avg_pool_3x3", "nor_conv_1x1"), k, C=8, N=1),
    "sss 32:32:32:32:32": lambda k: nats_models.build_sss((32,) * 5, k),
    "sss 64:64:64:64:64 (max)": lambda k: nats_models.build_sss((64,) * 5, k),
}


def _markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"))
    p.add_argument("--epochs", type=int, default=1, help="epochs actually run (PROXY has 5; time is extrapolated)")
    p.add_argument("--children", default="all", help="comma-separated indices into the child list, or 'all'")
    p.add_argument("--out", default="results/proxy_child_time")
    args = p.parse_args(argv)
    t_all = time.perf_counter()
    train.configure_compilation_cache(None)
    recipe = train.PROXY.replace(epochs=args.epochs)
    tr, va = train.prepare_data(args.data, train.PROXY, seed=0)
    names = list(CHILDREN)
    if args.children != "all":
        names = [names[int(i)] for i in args.children.split(",")]
    rows = []
    for name in names:
        model = CHILDREN[name](tr.num_classes)
        t = time.perf_counter()
        train.init_variables(model, tr.images.shape, 0, "flax")
        flax_init = time.perf_counter() - t
        r = train.train_model(model, tr, va, recipe, seed=0, keep_variables=False)
        train_s = r.seconds - r.init_seconds - r.compile_seconds
        per_epoch = train_s / r.epochs_done if r.epochs_done else float("nan")
        rows.append({"child": name, "status": r.status, "epochs_run": r.epochs_done,
                     "init_numpy_s": round(r.init_seconds, 3), "init_flax_s": round(flax_init, 3),
                     "compile_s": round(r.compile_seconds, 2), "train_images_per_s": round(r.images_per_second, 1),
                     "wall_s": round(r.seconds, 1), "valid_acc": round(r.valid_accuracy, 2),
                     "proxy_wall_s_estimate": round(r.init_seconds + r.compile_seconds + per_epoch * train.PROXY.epochs, 1)})
        print(rows[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "children.csv", index=False)
    (out / "summary.md").write_text(
        f"# PROXY child time\n\nRecipe {train.PROXY}\n\nRan {args.epochs} epoch(s) per child on "
        f"{len(tr)} train / {len(va)} valid images; `proxy_wall_s_estimate` extrapolates to "
        f"{train.PROXY.epochs} epochs.\n\n" + _markdown(df) + "\n")
    write_provenance(out, time.perf_counter() - t_all, " ".join([sys.executable] + sys.argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
