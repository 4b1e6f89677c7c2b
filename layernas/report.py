"""Pictures and a readable report of a run: ``progress.png``, ``cost_reward.png``, ``report.html``.

Every search that writes a run directory also writes two plots beside its tables (see
:func:`write_plots`), drawn from the files of the run alone (``history.csv``,
``frontier.csv``, ``result.json``), so ``layernas report RUN_DIR`` can redraw them at any
time, for a finished run or one still in progress:

* ``progress.png``: the best-so-far reward of the answers that satisfy the target (and,
  where the evaluator knows it, the test accuracy of that best-by-reward answer) against
  evaluations (left) and against charged seconds (right);
* ``cost_reward.png``: every evaluated child as a point, cost of the target metric against
  reward (answers that satisfy the target, children outside it, children over a cap), the
  target range shaded, the frontier's Pareto rows joined as a step line, the answer starred.

:func:`write_report` also writes ``report.html``: the summary, the settings, the answer,
the frontier table and both plots, with the images inlined as base64 ``data:`` URIs and
no script, stylesheet or font from the network, so the one file can be mailed or opened
offline.

matplotlib is imported inside the functions that draw (Agg backend), so a table search
pays for it only at the end, and importing this module imports neither matplotlib nor jax.

Example:
    >>> import layernas, tempfile, pathlib
    >>> from layernas.search_spaces.nats_tss import NatsTss
    >>> from layernas.table_evaluator import TableEvaluator
    >>> from layernas.tables import default_table
    >>> space = NatsTss("cifar10")
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> _ = layernas.search(space, TableEvaluator(default_table(), "cifar10", space), budget=20, out_dir=out)
    >>> sorted(p.name for p in out.glob("*.png")), (out / "report.html").exists()
    (['cost_reward.png', 'progress.png'], True)
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import pandas as pd

from layernas.run_dir import write_atomic
from layernas.units import axis_label, charged_meaning, cost_unit, format_cost, reward_label, reward_meaning

PLOT_FILES = ("progress.png", "cost_reward.png")
REPORT_FILE = "report.html"


class ReportError(ValueError):
    """A directory that holds no run to report on."""


def load_run(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The history, frontier and result.json of a run directory.

    Args:
      run_dir: a directory written by ``layernas search`` or ``layernas.search(out_dir=...)``.
    Returns:
      ``(history, frontier, result)``; frontier is empty if frontier.csv is missing.
    Raises:
      ReportError: the directory or its history.csv / result.json is missing or unreadable.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ReportError(f"{run} is not a directory (expected a run directory with history.csv and result.json)")
    for name in ("history.csv", "result.json"):
        if not (run / name).is_file():
            raise ReportError(f"{run} has no {name}: not a finished layernas run directory "
                              f"(a run writes it when its search ends)")
    try:
        history = pd.read_csv(run / "history.csv")
        result = json.loads((run / "result.json").read_text())
        frontier = pd.read_csv(run / "frontier.csv") if (run / "frontier.csv").is_file() else pd.DataFrame()
    except (OSError, ValueError) as e:
        raise ReportError(f"cannot read run {run}: {e}") from None
    if not isinstance(result, dict) or "settings" not in result:
        raise ReportError(f"{run / 'result.json'} is not a layernas result (no settings)")
    return history, frontier, result


def write_plots(run_dir: str | Path) -> list[Path]:
    """Draw ``progress.png`` and ``cost_reward.png`` into ``run_dir`` from its files.

    Args:
      run_dir: the run directory.
    Returns:
      the paths written.
    Raises:
      ReportError: see :func:`load_run`.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    history, frontier, result = load_run(run)
    settings = result["settings"]
    target = settings.get("target") or {}
    metric = target.get("metric")
    space = settings.get("space", "")
    title = f"{space} / {settings.get('searcher', '')}, seed {settings.get('seed', 0)}"
    ylabel = reward_label(settings)
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    test_known = "best_test" in history and history["best_test"].notna().any()
    for ax, xcol, xlabel in ((axes[0], "evaluation", "evaluations"),
                             (axes[1], "cum_seconds", f"charged seconds ({charged_meaning(settings)})")):
        if len(history):
            ax.step(history[xcol], history["best_reward"], where="post", color="C0",
                    label="best reward so far (answers inside the target)")
            if test_known:
                ax.step(history[xcol], history["best_test"], where="post", color="C1", linestyle="--",
                        label="test accuracy (%) of that answer (never used by the search)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%): validation solid, test dashed"
                      if test_known and ylabel.startswith("validation accuracy") else ylabel)
        ax.grid(alpha=0.3)
    if not (len(history) and history["best_reward"].notna().any()):
        axes[0].text(0.5, 0.5, "no answer inside the target yet", transform=axes[0].transAxes, ha="center")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{title}: best so far")
    paths.append(run / PLOT_FILES[0])
    _save_figure(fig, paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, 5), constrained_layout=True)
    cost_col = f"cost_{metric}"
    ok = history[(history.get("status", "ok") == "ok") & history["reward"].notna()] if len(history) else history
    if metric and cost_col in ok:
        feasible = ok["feasible"].astype(bool)
        in_range = _in_range(ok[cost_col], target)
        groups = ((feasible, "inside the target", dict(color="C0", marker="o", s=18)),
                  (~feasible & in_range, "inside the range, over a cap", dict(color="C3", marker="x", s=22)),
                  (~feasible & ~in_range, "outside the target range", dict(color="0.55", marker="o", s=12)))
        for mask, label, style in groups:
            if mask.any():
                ax.scatter(ok.loc[mask, cost_col], ok.loc[mask, "reward"], label=f"{label} ({int(mask.sum())})",
                           alpha=0.7, **style)
        lo, hi = target.get("min"), target.get("max")
        if lo is not None or hi is not None:
            xs = ok[cost_col]
            left = lo if lo is not None else min(float(xs.min()) if len(xs) else 0.0, hi or 0.0)
            right = hi if hi is not None else (float(xs.max()) if len(xs) else left)
            ax.axvspan(left, right, color="C2", alpha=0.12,
                       label=f"target range ({_range_text(metric, lo, hi, space)})")
        if len(frontier) and metric in frontier:
            pareto = frontier[frontier["pareto"].astype(bool)] if "pareto" in frontier else frontier
            ax.step(pareto[metric], pareto["reward"], where="post", color="k", linewidth=1.2, marker="s",
                    markersize=4, label="frontier (best per cost bucket, Pareto rows)")
        best = result.get("best")
        if best:
            ax.scatter([best["costs"][metric]], [best["reward"]], marker="*", s=220, color="gold",
                       edgecolor="k", zorder=5, label="the answer")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "no successful evaluation", transform=ax.transAxes, ha="center")
    else:
        ax.text(0.5, 0.5, "no evaluated child yet", transform=ax.transAxes, ha="center")
    ax.set_xlabel(axis_label(metric or "cost", space))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(f"{title}: every evaluated child")
    paths.append(run / PLOT_FILES[1])
    _save_figure(fig, paths[-1])
    plt.close(fig)
    return paths


def _in_range(costs: pd.Series, target: dict) -> pd.Series:
    lo, hi = target.get("min"), target.get("max")
    mask = pd.Series(True, index=costs.index)
    if lo is not None:
        mask &= costs >= lo
    if hi is not None:
        mask &= costs <= hi
    return mask


def _range_text(metric: str, lo, hi, space: str) -> str:
    low = "-inf" if lo is None else format_cost(metric, lo, space)
    high = "inf" if hi is None else format_cost(metric, hi, space)
    return f"{low} .. {high}"


def _image_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _number(value) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return "" if value is None else html.escape(str(value))


def write_report(run_dir: str | Path, plots: bool = True) -> Path:
    """Write ``report.html`` into ``run_dir`` (redrawing the plots first when ``plots``).

    Args:
      run_dir: the run directory.
      plots: redraw ``progress.png`` and ``cost_reward.png`` (else use the ones there).
    Returns:
      the path of report.html.
    Raises:
      ReportError: see :func:`load_run`; or a plot is missing with ``plots=False``.
    """
    run = Path(run_dir)
    if plots:
        write_plots(run)
    history, frontier, result = load_run(run)
    settings = result["settings"]
    space = settings.get("space", "")
    target = settings.get("target") or {}
    metric = target.get("metric", "")
    best = result.get("best")
    caps = ", ".join(f"{m} &le; {html.escape(format_cost(m, v, space))}" for m, v in (target.get("caps") or {}).items())
    rows = [("space", space), ("searcher", settings.get("searcher")), ("seed", settings.get("seed")),
            ("target", f"{metric} in {_range_text(metric, target.get('min'), target.get('max'), space)}"
                       + (f"; {caps}" if caps else "")),
            ("reward", reward_meaning(settings)),
            ("evaluations", f"{result.get('evaluations')} ({result.get('models_trained')} distinct models)"),
            ("charged", f"{result.get('simulated_seconds', 0):,.0f} s ({charged_meaning(settings)})"),
            ("wall", f"{result.get('wall_seconds', 0):,.2f} s")]
    budget = settings.get("budget") or {}
    rows.append(("budget", ", ".join(f"{v} {k}" for k, v in budget.items() if v is not None)))
    if best:
        rows += [("answer", best["arch_str"]), ("answer's reward", f"{best['reward']:.4f}"),
                 ("answer's test accuracy", "not measured" if best.get("test") is None else f"{best['test']:.3f} %"),
                 ("answer's costs", ", ".join(f"{k} = {format_cost(k, v, space)}" for k, v in best["costs"].items()))]
    else:
        rows.append(("answer", "no evaluated architecture satisfies the target"))
    info = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    if len(frontier):
        unit = cost_unit(metric, space) or metric
        shown = frontier.rename(columns={metric: axis_label(metric, space), "bucket_lo": f"bucket_lo ({unit})",
                                         "bucket_hi": f"bucket_hi ({unit})"})
        frontier_html = ('<div style="overflow-x: auto">'
                         + shown.to_html(index=False, float_format=lambda v: f"{v:.6g}", na_rep="", border=0)
                         + "</div>")
    else:
        frontier_html = "<p>no evaluated architecture respects the caps yet</p>"
    images = []
    for name, caption in ((PLOT_FILES[0], "Best so far, against evaluations and charged seconds"),
                          (PLOT_FILES[1], "Cost against reward of every evaluated child")):
        if not (run / name).is_file():
            raise ReportError(f"{run / name} is missing; run `layernas report {run}` to draw it")
        images.append(f"<figure>{_image_tag(run / name, caption)}<figcaption>{caption}</figcaption></figure>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>layernas run: {html.escape(str(space))}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 75em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.75em; text-align: left; font-size: 0.9em; }}
img {{ max-width: 100%; }}
code {{ font-size: 0.9em; }}
</style></head>
<body>
<h1>layernas run: {html.escape(str(space))} / {html.escape(str(settings.get('searcher', '')))}</h1>
<p>Run directory <code>{html.escape(str(run.resolve()))}</code>. Column meanings and units: the
project's <code>docs/results.md</code>.</p>
<table>{info}</table>
<h2>Plots</h2>
{''.join(images)}
<h2>Frontier: best architecture per cost bucket of {html.escape(metric)}</h2>
{frontier_html}
<p>{len(history)} evaluations in <code>history.csv</code>.</p>
</body></html>
"""
    path = run / REPORT_FILE
    write_atomic(path, page)
    return path


def _save_figure(fig, path: Path) -> None:
    """Render ``fig`` as PNG and replace ``path`` atomically (a kill leaves the old plot or the new one)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_atomic(path, buffer.getvalue())


def write_run_report(run_dir: str | Path) -> None:
    """The end of a search: plots and report.html, or one line on stderr saying why not.

    A search's answer is already written when this runs, so a drawing problem (no
    matplotlib, a full disk) must not turn a finished search into an error.
    """
    import sys

    try:
        write_report(run_dir)
    except Exception as e:  # the tables are written; a plot must not fail the search
        from layernas.errors import first_line

        print(f"layernas: plots not written: {first_line(e)} (retry with `layernas report {run_dir}`)",
              file=sys.stderr)


__all__ = ["PLOT_FILES", "REPORT_FILE", "ReportError", "load_run", "write_plots", "write_report",
           "write_run_report"]
