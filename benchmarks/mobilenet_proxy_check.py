"""Does the MobileNet search's own signal rank its answer above the baselines?

For each final model of ``results/mobilenet_search/models.csv`` at ``--targets``, this
trains (or reuses from the child store) the model under the *search proxy* with every one
of its K=3 training seeds, exactly as the search scores a child (``mobilenet_search``'s
``make_evaluator``, in the space of the model's width), and writes the proxy's mean
validation accuracy beside the final test accuracy to ``proxy_check.csv``. If the proxy
ranks the LayerNAS answer below the width-scaled network, the search missed by its own
signal; if above, the proxy and the final recipe disagree.

Usage:
    python benchmarks/mobilenet_proxy_check.py --store STORE [--targets 0.5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import mobilenet_search as ms  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, required=True, help="the child store of the searches")
    p.add_argument("--targets", type=float, nargs="+", default=[0.5])
    p.add_argument("--out", type=Path, default=ms.OUT)
    args = p.parse_args(argv)
    models_csv = args.out / "models.csv"
    if not models_csv.exists():
        print(f"mobilenet_proxy_check: {models_csv} does not exist; run benchmarks/mobilenet_search.py first",
              file=sys.stderr)
        return 2
    from layernas.evaluator import Trial
    from layernas.provenance import machine_info
    from layernas.trainers.child_store import ChildStore
    from layernas.trainers import train

    train.configure_compilation_cache()
    s = ms.settings(argparse.Namespace(quick=False, children=[57], targets=args.targets, num_buckets=1,
                                       final_train_per_class=1000, final_epochs=4))
    store = ChildStore(args.store)
    models = pd.read_csv(models_csv)
    rows, start = [], time.perf_counter()
    for r in models.itertuples():
        if not any(np.isclose(r.target_fraction, f) for f in args.targets):
            continue
        space = ms.make_space(r.width)
        ev = ms.make_evaluator(space, s, store)
        arch = space.str_to_arch(r.arch)
        scores, how = [], []
        for seed in range(ev.training_seeds):
            res = ev.evaluate(Trial(seed, arch, 0), training_seed=seed)
            scores.append(res.reward if res.ok else np.nan)
            how.append(res.info.get("child", ""))
        rows.append({"kind": r.kind, "target_fraction": r.target_fraction, "width": r.width, "arch": r.arch,
                     "madds": r.madds, "proxy_valid_mean": float(np.nanmean(scores)),
                     "proxy_valid_std": float(np.nanstd(scores, ddof=1)),
                     "proxy_valid_per_seed": ";".join(f"{x:.2f}" for x in scores),
                     "children": ";".join(how), "final_test_mean": r.test_acc_mean})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["machine"] = machine_info().get("cpu_model")
    table["script_wall_s"] = round(time.perf_counter() - start, 1)
    table.to_csv(args.out / "proxy_check.csv", index=False)
    print(table.drop(columns=["arch"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
