"""How long the 2,400-run NATS comparison takes on one process, before and after a change,
side by side, and whether its outputs stay byte for byte the same.

The comparison is ``layernas.comparison.run_comparison`` exactly as ``python
benchmarks/nats_comparison.py`` runs it (100 seeds x 4 searchers x 3 datasets x 2 FLOPs
budgets, LayerNAS's paper preset), but on ONE process. Each measurement runs in a fresh
subprocess: ``before`` imports the package as it was at ``--before`` (a commit, read with
``git archive``), ``now`` this checkout. The two alternate, ``--rounds`` times each, so a
change in the machine's load hits both. Measured per run: the CPU seconds of the process
(``time.process_time``; the stable number on a shared machine) and the wall seconds, of the
searches alone (the table is loaded before the clock starts) and of the table load.

Each run writes runs.csv, final.csv and oracle.csv as ``write_benchmark`` does; they are
compared byte for byte with the committed ``results/nats/`` files (``identical``).

Writes ``OUT/comparison_speed.csv`` (one row per run) and ``OUT/comparison_speed.md``::

    python benchmarks/nats_comparison_speed.py --table PATH [--before bc0d3db] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
BEFORE = "bc0d3db"   # main before the lookup-speed work (branch tablespeed)
OUTPUTS = ("runs.csv", "final.csv", "oracle.csv")


def worker(table: str, seeds: int, out: Path) -> dict:
    """One comparison on this process; writes the three CSVs into ``out``."""
    import layernas
    from layernas import comparison as c

    start_wall, start_cpu = time.perf_counter(), time.process_time()
    datasets = list(c.DATASETS)
    for d in datasets:
        c.context(table, d)
    load = {"load_wall_s": time.perf_counter() - start_wall, "load_cpu_s": time.process_time() - start_cpu}
    wall, cpu = time.perf_counter(), time.process_time()
    points, runs, _ = c.run_comparison(table, seeds, processes=1, options={"layernas": {"preset": "paper"}})
    searched = {"search_wall_s": time.perf_counter() - wall, "search_cpu_s": time.process_time() - cpu}
    oracles = c.oracle_table(table, datasets, list(c.FRACTIONS))
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs.csv").write_text(runs.to_csv(index=False))
    (out / "oracle.csv").write_text(oracles.to_csv(index=False))
    (out / "final.csv").write_text(c.final_table(points, runs, oracles).to_csv(index=False))
    return {**load, **searched, "runs": len(runs), "evaluations": int(runs.evaluations_run.sum()),
            "package": str(Path(layernas.__file__).parent)}


def tree_at(ref: str, into: Path) -> Path:
    """The importable package of commit ``ref`` (layernas with its search_spaces and
    trainers mapped in, as pyproject.toml maps them), under ``into``; returns the folder to
    put first on PYTHONPATH."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "layernas", "search_spaces", "trainers"],
                             check=True, capture_output=True).stdout
    src = into / "src"
    src.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    pkg = into / "pkg"
    pkg.mkdir()
    shutil.move(str(src / "layernas"), pkg / "layernas")
    for sub, name in (("search_spaces", "search_spaces"), ("trainers", "trainers")):
        if (src / sub).exists():
            shutil.move(str(src / sub), pkg / "layernas" / name)
    return pkg


def commit_of(ref: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", ref], check=True,
                          capture_output=True, text=True).stdout.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nats_comparison_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="the compact NATS tss table (200-epoch columns)")
    parser.add_argument("--before", default=BEFORE, help=f"the commit to compare with (default {BEFORE})")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--out", default="results/nats_tables")
    parser.add_argument("--worker", nargs=2, metavar=("SEEDS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.table, int(args.worker[0]), Path(args.worker[1]))))
        return 0
    from layernas.provenance import machine_info

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="nats_speed_"))
    paths = {"before": str(tree_at(args.before, tmp / "before")), "now": str(REPO)}
    commits = {"before": commit_of(args.before), "now": commit_of("HEAD")}
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "layernas", "search_spaces"],
                                capture_output=True, text=True).stdout.strip())
    if dirty:
        commits["now"] += "+uncommitted"
    rows = []
    for r in range(args.rounds):
        for label in (("before", "now") if r % 2 == 0 else ("now", "before")):
            out = tmp / f"{label}{r}"
            env = dict(os.environ, PYTHONPATH=paths[label] + os.pathsep + os.environ.get("PYTHONPATH", ""))
            load_before = os.getloadavg()[0]
            done = subprocess.run([sys.executable, __file__, "--table", args.table, "--worker", str(args.seeds),
                                   str(out)], env=env, check=True, capture_output=True, text=True, cwd=tmp)
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            same = all((out / f).read_bytes() == (REPO / "results" / "nats" / f).read_bytes() for f in OUTPUTS)
            rows.append({"label": label, "commit": commits[label], "round": r, **{k: round(v, 3) if isinstance(
                v, float) else v for k, v in measured.items() if k != "package"},
                "identical_to_results_nats": same, "load_average_1min": round((load_before + os.getloadavg()[0]) / 2, 2)})
            print(rows[-1], flush=True)
            if label == "before" and not measured["package"].startswith(paths["before"]):
                raise SystemExit(f"the before run imported {measured['package']}, not the tree of {args.before}")
    import pandas as pd

    frame = pd.DataFrame(rows)
    machine = machine_info()
    frame = frame.assign(cpu_model=machine.get("cpu_model"), cpu_count=machine.get("cpu_count"),
                         date=machine.get("date"))
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(outdir / "comparison_speed.csv", index=False)
    med = frame.groupby("label")[["search_cpu_s", "search_wall_s", "load_cpu_s", "load_wall_s"]].median()
    lines = [
        "# The 2,400-run NATS comparison on one process: before and after",
        "",
        f"`python benchmarks/nats_comparison_speed.py --table TABLE --before {args.before} --rounds {args.rounds}`, "
        f"{machine.get('date')}. Machine: {machine.get('cpu_model')}, {machine.get('cpu_count')} cores, shared "
        f"with other jobs (1-minute load average {frame.load_average_1min.min():.1f}-"
        f"{frame.load_average_1min.max():.1f} during the runs), so wall time includes waiting for a core; "
        "the CPU seconds of the process are the number to compare. Each run is a fresh process; "
        f"'before' ({commits['before']}) and 'now' ({commits['now']}) alternate, {args.rounds} runs each. "
        "Searches only: the table load (3 datasets) is timed apart.",
        "",
        "| run | round | searches CPU s | searches wall s | table load CPU s | load avg | outputs identical |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, row in frame.iterrows():
        lines.append(f"| {row.label} ({row.commit}) | {row['round']} | {row.search_cpu_s:.2f} | {row.search_wall_s:.2f} | "
                     f"{row.load_cpu_s:.2f} | {row.load_average_1min:.1f} | {'yes' if row.identical_to_results_nats else 'NO'} |")
    b, n = med.loc["before"], med.loc["now"]
    lines += [
        "",
        f"Median searches CPU: before {b.search_cpu_s:.2f} s, now {n.search_cpu_s:.2f} s "
        f"({b.search_cpu_s / n.search_cpu_s:.2f}x); wall {b.search_wall_s:.2f} s -> {n.search_wall_s:.2f} s. "
        f"{int(frame.evaluations.iloc[0])} evaluations in {int(frame.runs.iloc[0])} runs: "
        f"{1e6 * n.search_cpu_s / frame.evaluations.iloc[0]:.1f} us of CPU per evaluation now.",
        "",
        "'outputs identical': runs.csv, final.csv and oracle.csv of the run equal the committed "
        "results/nats/ files byte for byte.",
        "",
        f"Script wall time: {time.perf_counter() - started:.0f} s.",
        "",
    ]
    (outdir / "comparison_speed.md").write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if frame.identical_to_results_nats.all() else 1


if __name__ == "__main__":
    sys.exit(main())
