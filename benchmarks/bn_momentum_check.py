"""Does a MobileNetV3-Small child learn under the MobileNet search proxy? BatchNorm momentum,
and precise BatchNorm.

The MobileNetV3 spaces keep torchvision's BatchNorm momentum (0.99 in flax's convention).
The MobileNet search proxy trains a child for about 90 steps, and evaluation uses the running
statistics. This script trains one MobileNetV3-Small-CIFAR child with that proxy
(``mobilenet_search.proxy_recipe``, same data split, seed 0) once per ``--momenta`` value and
writes its validation accuracy and training loss to ``--out`` (default
``results/mobilenet_search/bn_momentum.csv``). Training is identical across momenta (the
momentum only moves the running statistics), so any difference is in evaluation. Each
``--precise-bn`` value adds a run at momentum 0.99 whose running statistics are recomputed
over that many training batches before evaluation (``Recipe.bn_recalibration_batches``,
what the benchmark's MobileNetV3 family uses).

Usage:
    python benchmarks/bn_momentum_check.py [--momenta 0.99 0.9] [--precise-bn 32]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import mobilenet_search as ms  # noqa: E402

# the first MobileNetV3-Small search's LayerNAS answer at 0.5x (8.32M MAdds)
ARCH = (1, 0, 1, 2, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--momenta", type=float, nargs="+", default=[0.99, 0.9])
    p.add_argument("--precise-bn", type=int, nargs="*", default=[32], metavar="BATCHES",
                   help="runs at momentum 0.99 with precise BatchNorm over this many batches")
    p.add_argument("--out", type=Path, default=REPO / "results" / "mobilenet_search" / "bn_momentum.csv")
    args = p.parse_args(argv)
    from layernas.provenance import machine_info
    from layernas.search_spaces.layerwise import LayerwiseSpace
    from layernas.search_spaces.mobilenet_v3 import mobilenet_v3_spec
    from layernas.trainers import train
    from layernas.trainers.models import build_model

    settings = ms.settings(argparse.Namespace(quick=False, children=[43], targets=[0.5], num_buckets=1,
                                              final_train_per_class=1000, final_epochs=4))
    recipe = ms.proxy_recipe(settings)
    data, valid = train.prepare_data(ms.CIFAR10, recipe, seed=0)
    rows, start = [], time.perf_counter()
    runs = [(m, 0) for m in args.momenta] + [(0.99, b) for b in args.precise_bn]
    for momentum, batches in runs:
        spec = dataclasses.replace(mobilenet_v3_spec("small", 32, 10, cifar=True), bn_momentum=momentum)
        res = train.train_model(build_model(LayerwiseSpace(spec), ARCH), data, valid,
                                recipe.replace(bn_recalibration_batches=batches), 0)
        m = res.summary()
        rows.append({"space": "mobilenetv3-small-cifar", "arch": "-".join(map(str, ARCH)), "bn_momentum": momentum,
                     "bn_recalibration_batches": batches,
                     "steps": m["steps"], "train_loss": m["train_loss"], "valid_accuracy": m["valid_accuracy"],
                     "seconds": m["seconds"]})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["machine"] = machine_info().get("cpu_model")
    table["script_wall_s"] = round(time.perf_counter() - start, 1)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
