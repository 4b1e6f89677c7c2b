"""A trained MobileNet search, exported: how far the ONNX file's logits are from JAX's.

Runs ``layernas search`` on ``mobilenetv3-small-cifar`` with real training on CIFAR-10
(a short proxy: a few children, a few epochs, a class-balanced subset, so that it fits a
2-core CPU in minutes; the point is a trained network, not a good one), then
``layernas export`` of its answer, which runs ``model.onnx`` in onnxruntime on 100 CIFAR-10
test images and compares the logits with the flax model. Writes
``results/export/check.json`` and ``results/export/check.md`` with the wall times and the
machine; the run and the export itself go to ``--work`` (``runs/export_check``). Resumable: a finished search is reused (``--resume``), an export is redone.

Usage:
    python benchmarks/export_check.py --data DIR/cifar10 [--out results/export]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from layernas.cli import main as layernas
from layernas.provenance import machine_info

SPACE = "mobilenetv3-small-cifar"
RECIPE = ["--trainer", "proxy", "--epochs", "3", "--train-per-class", "100", "--valid-per-class", "20",
          "--batch-size", "64"]


def run(data: Path, out: Path, work: Path, budget: int, target_madds: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    run_dir = work / "run"
    search = ["search", "--space", SPACE, "--data", str(data), *RECIPE, "--target-madds", target_madds,
              "--budget-evals", str(budget), "--quiet", "--out", str(run_dir)]
    if (run_dir / "checkpoint.json").exists():
        search.append("--resume")
    t0 = time.perf_counter()
    if layernas(search) != 0:
        raise SystemExit("the search failed")
    search_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if layernas(["export", str(run_dir), "--out", str(work / "exported")]) != 0:
        raise SystemExit("the export failed")
    export_s = time.perf_counter() - t0
    meta = json.loads((work / "exported" / "model.json").read_text())
    shown = [a.replace(str(data), "DATA").replace(str(work), "WORK") for a in search]
    record = {
        "command": " ".join(["layernas", *shown]),
        "space": SPACE, "arch_str": meta["arch_str"], "costs": meta["costs"],
        "validation": meta["source"]["validation"], "onnx_check": meta["onnx_check"],
        "onnx_bytes": (work / "exported" / "model.onnx").stat().st_size,
        "search_wall_s": round(search_s, 1), "export_wall_s": round(export_s, 1),
        "machine": machine_info(),
    }
    (out / "check.json").write_text(json.dumps(record, indent=1))
    (out / "check.md").write_text(render(record))
    return record


def render(record: dict) -> str:
    """check.md from check.json's record."""
    c, m = record["onnx_check"], record["machine"]
    return (
        f"# ONNX export check\n\n"
        f"`{record['command']}` (DATA: the CIFAR-10 image folder), then `layernas export WORK/run --out WORK/exported`.\n\n"
        f"| answer | MAdds | params | validation % | images | max abs logit diff | largest abs logit | top-1 agreement |\n"
        f"|---|---|---|---|---|---|---|---|\n"
        f"| {record['arch_str']} | {record['costs']['madds']:.4g} | {record['costs']['params']:.4g} | "
        f"{record['validation']:.1f} | {c['images']} ({c['source']}) | {c['max_abs_diff']:.3g} | "
        f"{c['max_abs_logit']:.3g} | {100 * c['top1_agreement']:.0f}% |\n\n"
        f"The proxy is short (3 epochs on 800 images, to fit a 2-core CPU); the check is of the conversion "
        f"(the same trained variables in JAX and in onnxruntime), not of accuracy.\n\n"
        f"{c['exporter']}, {c['runtime']}. Search wall {record['search_wall_s']} s (a resumed search counts only "
        f"this session), export wall {record['export_wall_s']} s, on {m.get('cpu_model', '?')} "
        f"({m['cpu_count']} CPUs, shared with other jobs), {m['date']}.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="CIFAR-10 image folder (root/{train,test}/<class>/)")
    parser.add_argument("--out", type=Path, default=Path("results/export"), help="where check.json/.md go")
    parser.add_argument("--work", type=Path, default=Path("runs/export_check"),
                        help="the search run and the export (weights: megabytes, not committed)")
    parser.add_argument("--budget-evals", type=int, default=3)
    parser.add_argument("--target-madds", default="20M")
    args = parser.parse_args()
    record = run(args.data, args.out, args.work, args.budget_evals, args.target_madds)
    print(json.dumps({k: record[k] for k in ("arch_str", "costs", "validation", "onnx_check",
                                             "search_wall_s", "export_wall_s")}, indent=1))


if __name__ == "__main__":
    main()
