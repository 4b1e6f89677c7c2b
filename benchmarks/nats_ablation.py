"""Ablation of LayerNAS's options on NATS-Bench tss, and the choice of its default.

Every LayerNAS variant (how unsearched layers are filled in, whether infeasible children
are repaired, what children are bucketed by, which candidates are expanded first, and what
the search does once the layerwise search is exhausted with budget left) runs
100 seeded searches on each of the six panels of the NATS comparison (cifar10, cifar100,
ImageNet16-120 at 50% and 25% of the largest model's FLOPs), with the comparison's
protocol: one-seed 200-epoch validation accuracy as the search signal, 12-epoch simulated
training seconds as the cost, the NATS-Bench time budgets. REA runs beside them, in the
same run, as the reference to beat.

The default is chosen on ONE panel, cifar10 at 50%, by ONE number that uses only the
search signal: the area under the best-validation-so-far curve over the time budget
(``auc_valid``; the curve counts 0 until the run has a feasible answer, so a late first
answer costs area). The other five panels are the held-out check and are only reported.

Writes results/nats/ablation.csv (one row per variant and panel), ablation_runs.csv (one
row per run), ablation_curves.png, ablation.md and ablation_provenance.json. Resumable:
finished (variant, panel) cells are journalled in .cache/nats_ablation/ (git-ignored) and
skipped on a rerun with the same number of seeds; ``--fresh`` starts over.

    python benchmarks/nats_ablation.py                      # 100 seeds, 2 processes
    python benchmarks/nats_ablation.py --seeds 3 --out /tmp/ablation   # smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from layernas.comparison import (DATASETS, FRACTIONS, TSS_TIME_BUDGETS, context, default_table_path,
                                 flops_target, run_search)
from layernas.searchers.layernas import PRESETS

SELECTION_PANEL = ("cifar10", 0.5)
# the default chosen by the first ablation (before when_exhausted existed), shown beside the current one
FIRST_DEFAULT = "space+repair/model/reward"
# the default chosen by the second ablation (before warm_start existed)
SECOND_DEFAULT = "space+repair/model/reward+mutate"
# the default chosen by the third ablation (before dives existed): a new variant replaces it
# only if it beats it on the selection panel by more than twice the standard error of the
# run-by-run difference
PREVIOUS_DEFAULT = "space+repair/model/reward+mutate/W3"
NOISE = 2.0   # how many standard errors of the paired difference count as more than noise
GRID = np.linspace(0.0, 1.0, 41)  # fractions of the time budget for the curves
REFERENCE = "rea"


def variant_name(options: dict) -> str:
    """``fill[+repair]/bucket_by/candidate_order[+when_exhausted][/H<num_buckets>][/W<warm_start>][/D<dives>]``,
    e.g. ``space/model/reward`` (the paper) or ``space+repair/model/reward+refine/H25``; the
    suffixes are left out at their defaults (``"stop"``, 100 buckets, no warm start, no dive)."""
    repair = "+repair" if options["repair"] else ""
    name = f"{options['fill']}{repair}/{options['bucket_by']}/{options['candidate_order']}"
    if options.get("when_exhausted", "stop") != "stop":
        name += f"+{options['when_exhausted']}"
    if options.get("num_buckets", 100) != 100:
        name += f"/H{options['num_buckets']}"
    if options.get("warm_start", 0):
        name += f"/W{options['warm_start']}"
    if options.get("dives", 0):
        name += f"/D{options['dives']}"
    return name


def variants() -> dict[str, dict]:
    """Every LayerNAS variant of the ablation, by name.

    ``dearest`` is left out: on NATS tss it is the space's default (``nor_conv_3x3``).
    ``cheapest`` is never over a FLOPs maximum, so repairing it changes nothing.
    What the search does once the layerwise search is exhausted (``when_exhausted``) is
    varied on three bases: the paper's, the first default (``space+repair/model/reward``)
    and the static fill that stays inside the target (``in_target/model/reward``), each with
    the paper's 100 buckets and with 25 (a coarse first pass that the refinement passes
    make finer).
    ``warm_start`` (a few random feasible models evaluated before the layerwise search) is
    varied on the second default (``space+repair/model/reward+mutate``): 3, 5, 10 and 20
    models, with ``"stop"`` and with 25 buckets; and with ``fill="sampled"`` (the best of
    them is the all-default architecture), with and without repair.
    ``dives`` (greedy passes through the layers before the layer-by-layer rounds) is varied
    on the third default (``space+repair/model/reward+mutate/W3``): 1, 2 and 3 dives; one
    dive with 0 and 5 warm-start models, with 25 and 50 buckets, without repair, and with
    ``fill="in_target"``.

    Every variant names all the options a preset bundles (``when_exhausted="stop"``,
    ``warm_start=0`` and ``dives=0`` where its name has no suffix), so a change of the
    library's default preset cannot change what a variant runs.
    """
    out = {}
    orders = [("model", "reward"), ("model", "cost"), ("min_completion", "reward"),
              ("min_completion", "cost")]
    for fill in ("space", "in_target", "cheapest"):
        for repair in ((False, True) if fill != "cheapest" else (False,)):
            for bucket_by, order in orders:
                options = {"fill": fill, "repair": repair, "bucket_by": bucket_by,
                           "candidate_order": order, "when_exhausted": "stop", "warm_start": 0, "dives": 0}
                out[variant_name(options)] = options
    for fill, repair in (("space", False), ("space", True), ("in_target", False)):
        for when in ("refine", "mutate"):
            for buckets in (100, 25):
                options = {"fill": fill, "repair": repair, "bucket_by": "model",
                           "candidate_order": "reward", "when_exhausted": when, "warm_start": 0, "dives": 0}
                if buckets != 100:
                    options["num_buckets"] = buckets
                out[variant_name(options)] = options
    # (fill, repair, when_exhausted, buckets, warm_start, dives): the warm starts, then the dives
    later = [("space", True, "mutate", 100, 3, 0), ("space", True, "mutate", 100, 5, 0),
             ("space", True, "mutate", 100, 10, 0), ("space", True, "mutate", 100, 20, 0),
             ("space", True, "stop", 100, 5, 0), ("space", True, "mutate", 25, 5, 0),
             ("sampled", True, "mutate", 100, 5, 0), ("sampled", True, "mutate", 100, 10, 0),
             ("sampled", False, "mutate", 100, 10, 0),
             ("space", True, "mutate", 100, 3, 1), ("space", True, "mutate", 100, 3, 2),
             ("space", True, "mutate", 100, 3, 3), ("space", True, "mutate", 100, 0, 1),
             ("space", True, "mutate", 100, 5, 1), ("space", True, "mutate", 25, 3, 1),
             ("space", True, "mutate", 50, 3, 1), ("space", False, "mutate", 100, 3, 1),
             ("in_target", False, "mutate", 100, 3, 1)]
    for fill, repair, when, buckets, samples, dives in later:
        options = {"fill": fill, "repair": repair, "bucket_by": "model", "candidate_order": "reward",
                   "when_exhausted": when, "warm_start": samples, "dives": dives}
        if buckets != 100:
            options["num_buckets"] = buckets
        out[variant_name(options)] = options
    return out


def area(cum_seconds: np.ndarray, best: np.ndarray, budget: float) -> float:
    """Mean over [0, budget] of the running-best step curve (0 before the first answer):
    the area under it divided by the budget."""
    starts = np.asarray(cum_seconds, float)
    values = np.nan_to_num(np.asarray(best, float), nan=0.0)
    ends = np.append(starts[1:], np.inf)
    inside = starts < budget
    widths = np.minimum(ends[inside], budget) - starts[inside]
    return float((values[inside] * widths).sum() / budget)


def at_fractions(cum_seconds: np.ndarray, best: np.ndarray, budget: float) -> np.ndarray:
    """The running best at each fraction of GRID of the budget (NaN: no answer yet)."""
    idx = np.searchsorted(cum_seconds, GRID * budget, side="right") - 1
    out = np.full(len(GRID), np.nan)
    ok = idx >= 0
    out[ok] = np.asarray(best, float)[idx[ok]]
    return out


def run_cell(task) -> dict:
    """All seeds of one (variant, dataset, fraction): per-run rows and curves."""
    table_path, name, algorithm, options, dataset, fraction, seeds = task
    start = time.perf_counter()
    space, evaluator = context(table_path, dataset)
    target = flops_target(space, fraction)
    budget = TSS_TIME_BUDGETS[dataset]
    runs, valid_curves, test_curves = [], [], []
    for seed in seeds:
        trace = run_search(algorithm, space, evaluator, target, seed, budget, 1, options)
        cum, feasible = trace["cum_seconds"], trace["feasible"]
        in_budget = cum <= budget
        first = np.flatnonzero(feasible)
        runs.append({
            "option": name, "dataset": dataset, "flops_fraction": fraction, "seed": seed,
            "first_feasible_eval": int(first[0] + 1) if len(first) else np.nan,
            "first_feasible_time_fraction": float(cum[first[0]] / budget) if len(first) else np.nan,
            "evals_in_budget": int(in_budget.sum()),
            "infeasible_in_budget": int((~feasible[in_budget]).sum()),
            "auc_valid": area(cum, trace["best_valid"], budget),
            "auc_test": area(cum, trace["best_test"], budget),
            "final_valid": float(at_fractions(cum, trace["best_valid"], budget)[-1]),
            "final_test": float(at_fractions(cum, trace["best_test"], budget)[-1]),
            "finished": bool(trace["finished"]),
            # the share of the time budget charged by the last evaluation inside it
            "budget_used": float(cum[in_budget][-1] / budget) if in_budget.any() else 0.0,
        })
        valid_curves.append(at_fractions(cum, trace["best_valid"], budget).tolist())
        test_curves.append(at_fractions(cum, trace["best_test"], budget).tolist())
    return {"option": name, "dataset": dataset, "flops_fraction": fraction, "runs": runs,
            "valid_curves": valid_curves, "test_curves": test_curves,
            "worker_seconds": time.perf_counter() - start}


def summarize(cells: list[dict]) -> pd.DataFrame:
    """One row per (option, dataset, fraction), with the goal checks against REA."""
    rows, curves, valid_curves = [], {}, {}
    for cell in cells:
        runs = pd.DataFrame(cell["runs"])
        test = np.array(cell["test_curves"], float)
        key = (cell["option"], cell["dataset"], cell["flops_fraction"])
        curves[key] = test
        valid_curves[key] = np.array(cell["valid_curves"], float)
        answered_20 = np.isfinite(test[:, np.searchsorted(GRID, 0.2)]).mean()
        rows.append({
            "option": cell["option"], "dataset": cell["dataset"],
            "flops_fraction": cell["flops_fraction"], "runs": len(runs),
            "first_feasible_eval": runs.first_feasible_eval.mean(),
            "first_feasible_time_fraction_max": runs.first_feasible_time_fraction.max(),
            "answered_by_20pct": answered_20,
            "infeasible_fraction": (runs.infeasible_in_budget / runs.evals_in_budget).mean(),
            "infeasible_in_budget": runs.infeasible_in_budget.mean(),
            "evals_in_budget": runs.evals_in_budget.mean(),
            "stopped_early": runs.finished.mean(), "budget_used": runs.budget_used.mean(),
            "auc_valid": runs.auc_valid.mean(),
            "auc_valid_se": runs.auc_valid.std() / np.sqrt(len(runs)), "auc_test": runs.auc_test.mean(),
            "final_valid_mean": runs.final_valid.mean(),
            "final_test_mean": runs.final_test.mean(), "final_test_std": runs.final_test.std(),
        })
    table = pd.DataFrame(rows)
    for column, by_key in (("ahead_of_rea_from", curves), ("ahead_of_rea_valid_from", valid_curves)):
        ahead = []
        for _, r in table.iterrows():
            mine = by_key[(r.option, r.dataset, r.flops_fraction)]
            ref = by_key.get((REFERENCE, r.dataset, r.flops_fraction))
            ahead.append(ahead_from(mine, ref) if ref is not None and r.option != REFERENCE else np.nan)
        table[column] = ahead
    order = {d: i for i, d in enumerate(DATASETS)}
    return table.sort_values(["flops_fraction", "dataset", "option"], ascending=[False, True, True],
                             key=lambda s: s.map(order) if s.name == "dataset" else s).reset_index(drop=True)


def ahead_from(mine: np.ndarray, ref: np.ndarray) -> float:
    """The earliest fraction of the budget from which, at every later grid point, every run
    has an answer and the mean of the curves (test accuracy, or validation accuracy for
    ``ahead_of_rea_valid_from``) is above the reference's (NaN: not even at the end)."""
    ok = np.isfinite(mine).all(axis=0) & (mine.mean(axis=0) > _mean_of_answered(ref))
    if not ok[-1]:
        return float("nan")
    bad = np.flatnonzero(~ok)
    return float(GRID[bad[-1] + 1]) if len(bad) else 0.0


def _mean_of_answered(curves: np.ndarray) -> np.ndarray:
    """Per grid point, the mean over the runs that have an answer (NaN where none has)."""
    answered = np.isfinite(curves)
    total = np.where(answered, curves, 0.0).sum(axis=0)
    count = answered.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def paired_difference(cells: list[dict], name: str, base: str, panel: tuple[str, float],
                      column: str = "auc_valid") -> tuple[float, float]:
    """Mean and standard error over the seeds of ``name``'s ``column`` minus ``base``'s, run
    by run (same seed, same panel)."""
    def of(option):
        cell = next(c for c in cells if (c["option"], c["dataset"], c["flops_fraction"]) == (option, *panel))
        return pd.DataFrame(cell["runs"]).set_index("seed")[column]
    diff = (of(name) - of(base)).dropna()
    return float(diff.mean()), float(diff.std() / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")


def plot(cells: list[dict], shown: Sequence[str], path: Path, labels: dict | None = None) -> None:
    """Anytime test-accuracy curves of the ``shown`` options on the six panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8), squeeze=False)
    colors = plt.get_cmap("tab10")
    by_key = {(c["option"], c["dataset"], c["flops_fraction"]): c for c in cells}
    for i, fraction in enumerate(FRACTIONS):
        for j, dataset in enumerate(DATASETS):
            ax = axes[i][j]
            lows = []
            for k, name in enumerate(shown):
                cell = by_key.get((name, dataset, fraction))
                if cell is None:
                    continue
                test = np.array(cell["test_curves"], float)
                answered = np.isfinite(test).mean(axis=0)
                mean = _mean_of_answered(test)
                with warnings.catch_warnings():  # all-NaN columns (no run answered yet) give NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    q25, q75 = np.nanpercentile(test, 25, axis=0), np.nanpercentile(test, 75, axis=0)
                color = "black" if name == REFERENCE else colors(k % 10)
                partial = answered < 1
                ax.plot(GRID, np.where(partial, np.nan, mean), color=color, lw=1.6,
                        label=name + (labels or {}).get(name, ""))
                ax.plot(GRID, np.where(answered > 0, mean, np.nan), color=color, lw=1.0, ls=":")
                ax.fill_between(GRID, q25, q75, color=color, alpha=0.12, lw=0)
                lows.append(np.nanmin(mean[GRID >= 0.25]))
            top = max(np.nanmax(np.array(by_key[(n, dataset, fraction)]["test_curves"], float))
                      for n in shown if (n, dataset, fraction) in by_key)
            ax.set_ylim(min(lows) - 0.5, top + 0.2)
            ax.axvline(0.2, color="gray", lw=0.8, ls="--")
            ax.axvline(0.25, color="gray", lw=0.8, ls="-.")
            ax.set_title(f"{dataset}, FLOPs <= {fraction:.0%} of max", fontsize=10)
            ax.set_xlabel("fraction of the NATS time budget")
            ax.set_ylabel("test accuracy (%) of best-by-validation")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle("LayerNAS variants vs REA: mean over 100 runs (line), 25-75% band; solid where every "
                 "run has a feasible answer, dotted where the mean is over only the runs that have one;\n"
                 "vertical lines at 20% and 25% of the budget", 
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(table: pd.DataFrame, names: Sequence[str]) -> str:
    lines = ["| option | dataset | FLOPs | first feasible eval | answered by 20% | latest first answer "
             "(of budget) | infeasible evals in budget | budget used (runs that stopped early) | auc_valid | "
             "auc_test | final test mean ± std | ahead of REA from |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table[table.option.isin(names)].iterrows():
        ahead = "never" if not np.isfinite(r.ahead_of_rea_from) else f"{r.ahead_of_rea_from:.0%}"
        if r.option == REFERENCE:
            ahead = "–"
        lines.append(
            f"| {r.option} | {r.dataset} | {r.flops_fraction:.0%} | {r.first_feasible_eval:.1f} | "
            f"{r.answered_by_20pct:.0%} | {r.first_feasible_time_fraction_max:.0%} | "
            f"{r.infeasible_in_budget:.1f} of {r.evals_in_budget:.0f} ({r.infeasible_fraction:.0%}) | "
            f"{r.budget_used:.0%} ({r.stopped_early:.0%}) | {r.auc_valid:.2f} | {r.auc_test:.2f} | {r.final_test_mean:.2f} ± {r.final_test_std:.2f} | {ahead} |")
    return "\n".join(lines)


def goal_lines(table: pd.DataFrame, name: str, paper: str) -> list[str]:
    """The three goals, per panel, for variant ``name``: every run has a feasible answer within
    20% of the budget; ahead of REA from 25% on; final mean test no lower than the paper's;
    beside it the final mean validation accuracy, the signal the searchers maximise."""
    lines = ["| panel | every run answered by 20% | ahead of REA from 25% on | final mean >= paper's | "
             "final mean validation (the searched signal) vs paper's |",
             "|---|---|---|---|---|"]
    for (d, f), g in table.groupby(["dataset", "flops_fraction"], sort=False):
        mine, base = g[g.option == name].iloc[0], g[g.option == paper].iloc[0]
        ahead = np.isfinite(mine.ahead_of_rea_from) and mine.ahead_of_rea_from <= 0.25
        since = lambda fraction: "never" if not np.isfinite(fraction) else f"from {fraction:.0%}"  # noqa: E731
        ahead_text = f"{since(mine.ahead_of_rea_from)}; validation: {since(mine.ahead_of_rea_valid_from)}"
        lines.append(
            f"| {d} {f:.0%} | {'yes' if mine.answered_by_20pct == 1 else 'NO'} "
            f"({mine.answered_by_20pct:.0%}) | {'yes' if ahead else 'NO'} ({ahead_text}) | "
            f"{'yes' if mine.final_test_mean >= base.final_test_mean - 1e-12 else 'NO'} "
            f"({mine.final_test_mean:.2f} vs {base.final_test_mean:.2f}) | "
            f"{mine.final_valid_mean:.2f} vs {base.final_valid_mean:.2f} "
            f"({'higher' if mine.final_valid_mean > base.final_valid_mean else 'lower'}) |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nats_ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=None, help="compact tss table (default: the shared data folder)")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", default="results/nats")
    parser.add_argument("--journal", default=None,
                        help="finished cells (default .cache/nats_ablation/SEEDSseeds.jsonl in the repository)")
    parser.add_argument("--fresh", action="store_true", help="ignore the journal's finished cells")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    table_path = str(Path(args.table) if args.table else default_table_path())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    journal = Path(args.journal) if args.journal else (
        Path(__file__).resolve().parents[1] / ".cache" / "nats_ablation" / f"{args.seeds}seeds.jsonl")
    journal.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh and journal.exists():
        journal.unlink()
    done: dict = {}
    if journal.exists():
        for line in journal.read_text().splitlines():
            cell = json.loads(line)
            if len(cell["runs"]) == args.seeds:
                done[(cell["option"], cell["dataset"], cell["flops_fraction"])] = cell
    all_variants = variants()
    # cells of variants that are no longer in the ablation (renamed or dropped) are not reported
    done = {key: cell for key, cell in done.items() if key[0] in all_variants or key[0] == REFERENCE}
    jobs = [(name, "layernas", opts) for name, opts in all_variants.items()]
    jobs.append((REFERENCE, REFERENCE, None))
    tasks = [(table_path, name, algorithm, opts, d, float(f), list(range(args.seeds)))
             for d in DATASETS for f in FRACTIONS for name, algorithm, opts in jobs
             if (name, d, float(f)) not in done]
    for d in DATASETS:
        context(table_path, d)  # parsed once, inherited by the forked workers
    cells = list(done.values())
    with open(journal, "a") as log:
        if args.processes > 1 and tasks:
            with multiprocessing.get_context("fork").Pool(args.processes) as pool:
                outputs = pool.imap_unordered(run_cell, tasks)
                for cell in outputs:
                    log.write(json.dumps(cell) + "\n")
                    log.flush()
                    cells.append(cell)
        else:
            for task in tasks:
                cell = run_cell(task)
                log.write(json.dumps(cell) + "\n")
                log.flush()
                cells.append(cell)
    table = summarize(cells)
    table.to_csv(out / "ablation.csv", index=False)
    pd.DataFrame([r for c in cells for r in c["runs"]]).to_csv(out / "ablation_runs.csv", index=False)

    sel = table[(table.dataset == SELECTION_PANEL[0]) & (table.flops_fraction == SELECTION_PANEL[1])
                & (table.option != REFERENCE)].sort_values("auc_valid", ascending=False)
    chosen = sel.iloc[0].option
    gain, gain_se = paired_difference(cells, chosen, PREVIOUS_DEFAULT, SELECTION_PANEL)
    beats = chosen != PREVIOUS_DEFAULT and gain > NOISE * gain_se
    rule_default = chosen if beats else PREVIOUS_DEFAULT
    paper = variant_name(PRESETS["paper"])
    default = variant_name(PRESETS["efficient"])
    previous = [n for n in (PREVIOUS_DEFAULT, SECOND_DEFAULT, FIRST_DEFAULT) if n != default]
    # drawn in this order: the selected variant and the default last, on top
    shown = list(dict.fromkeys([paper, FIRST_DEFAULT, PREVIOUS_DEFAULT, chosen, default, REFERENCE]))
    plot(cells, shown, out / "ablation_curves.png",
         {paper: " (paper)", FIRST_DEFAULT: " (first default)", SECOND_DEFAULT: " (second default)",
          PREVIOUS_DEFAULT: " (third default)", chosen: " (selected)", default: " (default)"})
    wall = time.perf_counter() - start
    worker = sum(c["worker_seconds"] for c in cells)

    from layernas.provenance import machine_info

    machine = machine_info()
    committed = Path(__file__).resolve().parents[1] / "results" / "nats" / "final.csv"  # the NATS comparison
    reproduce = ""
    if committed.exists():
        final = pd.read_csv(committed)
        final = final[final.algorithm == "layernas"]
        mine = table[table.option == paper]
        merged = final.merge(mine, left_on=["dataset", "fraction"], right_on=["dataset", "flops_fraction"])
        same = np.allclose(merged["mean"], merged.final_test_mean, rtol=0, atol=1e-9) and len(merged) == 6
        reproduce = (f"The paper's variant (`{paper}`) gives the committed final means of "
                     f"results/nats/final.csv on all six panels: {'yes, exactly' if same else 'NO'} "
                     f"({', '.join(f'{v:.2f}' for v in merged.final_test_mean)}).")
    command = "python benchmarks/nats_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = [
        "# LayerNAS options on NATS-Bench tss",
        "",
        f"Generated by `{command.strip()}` on {machine.get('cpu_model', 'an unknown CPU')} "
        f"({machine.get('cpu_count')} cores, {args.processes} processes, shared with other work): "
        f"{len(cells)} cells of {args.seeds} runs each, {worker:.1f} s of worker time in all. This "
        f"invocation computed {len(tasks)} cells and reused {len(done)} journalled by an earlier one, in "
        f"{wall:.1f} s wall (the wall time of every invocation is in ablation_provenance.json).",
        "",
        "Protocol: that of the NATS comparison (summary.md): one-seed 200-epoch validation accuracy as "
        "the search signal, 12-epoch simulated seconds as the cost, the NATS-Bench time budgets; the "
        "answer is the best-by-validation evaluated architecture under the FLOPs budget, reported by its "
        "200-epoch test accuracy. `auc_valid` / `auc_test`: the mean over the time budget of the "
        "best-so-far validation / test curve, counting 0 before the run's first feasible answer. "
        "'answered by 20%': runs with a feasible answer within 20% of the budget; 'latest first "
        "answer': the latest time at which a run got its first one. 'ahead of REA from': the earliest "
        "fraction of the budget from which, at every later point of a 41-point grid, every run has an "
        "answer and the mean test accuracy is above REA's (same seeds, same run). 'budget used': the "
        "mean share of the time budget charged by the run's last evaluation inside it; in brackets, the "
        "share of runs whose searcher stopped before the budget ended because it had nothing left to "
        "propose (the rest of the budget is then unused).",
        "",
        "## How the default was chosen",
        "",
        f"Selection used one panel ({SELECTION_PANEL[0]}, {SELECTION_PANEL[1]:.0%}) and one number, "
        "`auc_valid`. Top five there:",
        "",
        f"| option | auc_valid (± standard error over the runs) | minus `{PREVIOUS_DEFAULT}`'s, run by run "
        f"(same seed; ± standard error) | minus `{FIRST_DEFAULT}`'s, run by run |", "|---|---|---|---|",
        *[f"| {r.option} | {r.auc_valid:.3f} ± {r.auc_valid_se:.3f} | "
          "{:+.4f} ± {:.4f} | ".format(*paired_difference(cells, r.option, PREVIOUS_DEFAULT, SELECTION_PANEL))
          + "{:+.4f} ± {:.4f} |".format(*paired_difference(cells, r.option, FIRST_DEFAULT, SELECTION_PANEL))
          for _, r in sel.head(5).iterrows()],
        "",
        f"The rule: the variant with the highest `auc_valid` there becomes the default if it beats the "
        f"previous default (`{PREVIOUS_DEFAULT}`, chosen by the ablation before `dives` existed) by "
        f"more than {NOISE:g} standard errors of their run-by-run difference; otherwise the previous "
        f"default stays. Highest: `{chosen}`, "
        + (f"{gain:+.4f} ± {gain_se:.4f} against the previous default: "
           + ("more than noise, so it is the new default." if beats else "not more than noise, so the "
              "previous default stays.") if chosen != PREVIOUS_DEFAULT else "the previous default itself.")
        + f" The library's default preset `efficient` is `{default}`"
        + (" (what the rule gives)." if rule_default == default else
           f" -- NOT what the rule gives (`{rule_default}`): update PRESETS in layernas/searchers/layernas.py."),
        f"The paper's behaviour is `preset=\"paper\"` (`{paper}`).",
        "",
        reproduce,
        "",
        "## The default and the paper's variant on all six panels (the five other than "
        f"{SELECTION_PANEL[0]} at {SELECTION_PANEL[1]:.0%} are held out)",
        "",
        markdown(table, list(dict.fromkeys([default, *previous, paper, REFERENCE]))),
        "",
        f"The goals, for the default (`{default}`):",
        "",
        *goal_lines(table, default, paper),
        "",
        *([f"And for the third default (`{PREVIOUS_DEFAULT}`, no dive):", "",
           *goal_lines(table, PREVIOUS_DEFAULT, paper), ""] if PREVIOUS_DEFAULT != default else []),
        *([f"And for the second default (`{SECOND_DEFAULT}`, no warm start):", "",
           *goal_lines(table, SECOND_DEFAULT, paper), ""] if SECOND_DEFAULT != default else []),
        *([f"And for the first default (`{FIRST_DEFAULT}`, which stops when the layerwise search is "
           "exhausted):", "", *goal_lines(table, FIRST_DEFAULT, paper), ""]
          if FIRST_DEFAULT != default else []),
        "![anytime curves](ablation_curves.png)",
        "",
        "## Every variant",
        "",
        "Names are `fill[+repair]/bucket_by/candidate_order[+when_exhausted][/H<num_buckets>][/W<warm_start>]"
        "[/D<dives>]` (see docs/searchers.md; no suffix: `when_exhausted=\"stop\"`, 100 buckets, no warm "
        "start, no dive).",
        "",
        markdown(table, list(all_variants) + [REFERENCE]),
        "",
    ]
    (out / "ablation.md").write_text("\n".join(text))
    provenance = out / "ablation_provenance.json"
    invocations = json.loads(provenance.read_text()).get("invocations", []) if provenance.exists() and done else []
    invocations.append({"command": command.strip(), "wall_seconds": round(wall, 2),
                        "cells_computed": len(tasks), "cells_reused": len(done),
                        "date": machine.get("date")})
    provenance.write_text(json.dumps(
        {"invocations": invocations, "worker_seconds": round(worker, 2), "seeds": args.seeds,
         "table": table_path, "machine": machine}, indent=2) + "\n")
    print(markdown(table, [default, paper, chosen, REFERENCE]))
    print(f"selected {chosen}; wrote {out}/ablation.* in {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
