"""Random SIGINT/SIGTERM against the real CLI on the real NATS table, then ``--resume``.

For each searcher, runs "trials": a ``layernas search`` subprocess on the NATS-Bench tss
table, interrupted 1-3 times (SIGINT or SIGTERM, at a random moment 0-0.6 s after the
session starts appending to its journal), resumed with ``--resume`` after each interrupt,
then resumed once more to the end. Every session must exit 0 (it finished before the
signal took effect), 130 (SIGINT) or 143 (SIGTERM) with one line on stderr; the finished run
must equal an uninterrupted one (``history.csv`` and the best answer), with every trial
journaled exactly once and no temporary file left. This is what
``tests/test_interrupts.py`` checks, at a larger count.

``--concurrent N`` also runs N starts of two processes on one new folder at the same instant
(both import first, then start on a shared clock): exactly one must run to the end and the
other exit 2 with one line naming the folder and the winner's PID.

Each outcome is appended to ``OUT/interrupts.csv`` (``OUT/concurrency.csv``) as it happens;
a restarted script continues where the CSVs end. ``OUT/summary.md`` is written from the CSVs
at the end (or alone with ``--summary-only``). The full stderr of any failing session goes to
``OUT/failures/``.

    python benchmarks/interrupt_stress.py --table PATH --per-searcher 125 --concurrent 20 \\
        --out results/reliability
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from layernas.provenance import machine_info
from layernas.run import JOURNAL_NAME, finished_results

SEARCHERS = ("layernas", "random", "rea", "reinforce")
BUDGET = 400
EXPECTED = {"SIGINT": 130, "SIGTERM": 143}
INTERRUPT_FIELDS = ["searcher", "trial", "signals", "delays_s", "exit_codes", "signals_sent",
                    "interrupted", "identical", "error", "wall_s", "load_1min"]
CONCURRENCY_FIELDS = ["trial", "exit_codes", "one_ran", "loser_line_ok", "folder_valid", "loser_stderr", "wall_s"]
START_SCRIPT = """
import sys, time
from layernas.cli import console_main
print("ready", flush=True)
start = float(sys.stdin.readline())
while time.time() < start:
    pass
sys.argv = ["layernas", *sys.argv[1:]]
sys.exit(console_main())
"""


def search_argv(table: Path, searcher: str, out: Path, resume: bool = False, budget: int = BUDGET) -> list[str]:
    argv = [sys.executable, "-m", "layernas", "search", "--space", "nats-tss", "--dataset", "cifar100",
            "--flops-fraction", "0.25", "--table", str(table), "--searcher", searcher,
            "--budget-evals", str(budget), "--seed", "4", "--out", str(out), "--quiet"]
    return argv + (["--resume"] if resume else [])


def outputs(out: Path) -> tuple[pd.DataFrame, dict]:
    return pd.read_csv(out / "history.csv"), json.loads((out / "result.json").read_text())["best"]


def reference(table: Path, searcher: str, work: Path) -> tuple[pd.DataFrame, dict]:
    out = work / "ref" / searcher
    if not (out / "result.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        done = subprocess.run(search_argv(table, searcher, out), capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"the uninterrupted {searcher} run failed ({done.returncode}): {done.stderr}")
    return outputs(out)


def same_as_reference(out: Path, ref) -> str:
    """'' when the finished run equals the reference, else what differs."""
    try:
        history, best = outputs(out)
    except Exception as e:  # noqa: BLE001 - recorded as the failure
        return f"cannot read the outputs: {e}"
    try:
        pd.testing.assert_frame_equal(history, ref[0])
    except AssertionError as e:
        return f"history differs: {str(e).splitlines()[0]}"
    if best != ref[1]:
        return "best differs"
    ids = sorted(r.trial_id for r in finished_results(out))
    if ids != list(range(len(ref[0]))):
        return "a trial was journaled twice, or is missing"
    if list(out.glob(".*.tmp")):
        return "a temporary file was left behind"
    return ""


def one_trial(table: Path, searcher: str, trial: int, seed: int, out: Path, ref, failures: Path,
              max_delay: float = 0.6, names: tuple[str, ...] = ("SIGINT", "SIGTERM")) -> dict:
    """Interrupt one run 1-3 times, resume it to the end, compare with the reference."""
    rng = np.random.default_rng([seed, SEARCHERS.index(searcher), trial])
    began = time.monotonic()
    shutil.rmtree(out, ignore_errors=True)
    n = int(rng.integers(1, 4))
    signals, delays, codes, errors = [], [], [], []
    sent = interrupted = 0
    journal = out / JOURNAL_NAME
    for session in range(n + 1):
        argv = search_argv(table, searcher, out, resume=session > 0)
        if session == n:  # the last session runs to the end
            done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            codes.append(done.returncode)
            if done.returncode != 0:
                errors.append(f"final session exit {done.returncode}")
                (failures / f"{searcher}-{trial}-final.txt").write_text(done.stderr)
            break
        size = journal.stat().st_size if journal.exists() else -1
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if journal.exists() and journal.stat().st_size > size:
                break
            time.sleep(0.002)
        delay = float(rng.uniform(0.0, max_delay))
        name = names[int(rng.random() * len(names))]
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(getattr(signal, name))
            sent += 1
        else:
            name = "none"   # it had finished before the signal was due
        signals.append(name)
        delays.append(round(delay, 3))
        _, stderr = proc.communicate(timeout=600)
        code = proc.returncode
        codes.append(code)
        lines = [line for line in stderr.splitlines() if line.strip()]
        bad = ""
        if code not in (0, EXPECTED.get(name, 0)):
            bad = f"session {session} ({name}) exit {code}"
        elif "Traceback" in stderr:
            bad = f"session {session} ({name}) printed a traceback"
        elif code and not (len(lines) == 1 and "--resume" in lines[0]):
            bad = f"session {session} ({name}) printed {len(lines)} lines"
        if bad:
            errors.append(bad + (f": {lines[-1][:200]}" if lines else ""))
            (failures / f"{searcher}-{trial}-s{session}.txt").write_text(
                f"{bad}\nsignal {name} after {delay:.3f} s\n--- stderr ---\n{stderr}")
        interrupted += code != 0
    differs = same_as_reference(out, ref) if codes[-1] == 0 else "did not finish"
    if differs:
        errors.append(differs)
    shutil.rmtree(out, ignore_errors=True)
    return {"searcher": searcher, "trial": trial, "signals": ";".join(signals),
            "delays_s": ";".join(f"{d:.3f}" for d in delays), "exit_codes": ";".join(map(str, codes)),
            "signals_sent": sent, "interrupted": interrupted, "identical": not differs,
            "error": " | ".join(errors), "wall_s": round(time.monotonic() - began, 2),
            "load_1min": round(os.getloadavg()[0], 2)}


def concurrent_start(table: Path, trial: int, out: Path) -> dict:
    """Two processes on one new folder at the same instant."""
    began = time.monotonic()
    shutil.rmtree(out, ignore_errors=True)
    budget = 3000
    argv = search_argv(table, "reinforce", out, budget=budget)[3:]
    procs = [subprocess.Popen([sys.executable, "-c", START_SCRIPT, *argv], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:   # both have imported everything
        assert p.stdout.readline().strip() == "ready"
    start = time.time() + 0.3
    for p in procs:
        p.stdin.write(f"{start!r}\n")
        p.stdin.flush()
    done = [(p.pid, *p.communicate(timeout=600), p.returncode) for p in procs]
    codes = [d[3] for d in done]
    one_ran = sorted(codes) == [0, 2]
    line_ok = valid = False
    loser_err = ""
    if one_ran:
        (winner,) = [d for d in done if d[3] == 0]
        (loser,) = [d for d in done if d[3] == 2]
        lines = [line for line in loser[2].splitlines() if line.strip()]
        loser_err = " / ".join(lines)
        line_ok = lines == [f"layernas: error: {out} is in use by PID {winner[0]}"]
        try:
            history, best = outputs(out)
            json.loads((out / "provenance.json").read_text())
            ids = sorted(r.trial_id for r in finished_results(out))
            valid = len(history) == budget and best is not None and ids == list(range(budget))
        except Exception:  # noqa: BLE001 - recorded as invalid
            valid = False
    else:
        loser_err = " / ".join(line for d in done for line in d[2].splitlines() if line.strip())[:300]
    shutil.rmtree(out, ignore_errors=True)
    return {"trial": trial, "exit_codes": ";".join(map(str, codes)), "one_ran": one_ran,
            "loser_line_ok": line_ok, "folder_valid": valid, "loser_stderr": loser_err,
            "wall_s": round(time.monotonic() - began, 2)}


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, fields: list[str], row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def write_summary(out: Path, command: str, per_searcher: int | None = None, note: str = "") -> str:
    rows = pd.DataFrame(read_rows(out / "interrupts.csv"))
    conc = pd.DataFrame(read_rows(out / "concurrency.csv"))
    meta = json.loads((out / "machine.json").read_text()) if (out / "machine.json").exists() else {}
    lines = ["# Random interrupts and resumes against the CLI", "",
             "Written by `benchmarks/interrupt_stress.py` from `interrupts.csv` and `concurrency.csv` "
             "(one row per trial). Reproduce with:", "", "```", command, "```", ""]
    if meta:
        lines += [f"Machine: {meta['cpu']}, {meta['cpus']} CPUs, Python {meta['python']}; shared with other jobs "
                  f"(1-minute load average {rows['load_1min'].astype(float).min():.1f}-"
                  f"{rows['load_1min'].astype(float).max():.1f} over the trials). Wall time: "
                  f"{rows['wall_s'].astype(float).sum() / 60:.1f} min of interrupt trials"
                  + (f", {conc['wall_s'].astype(float).sum() / 60:.1f} min of concurrent starts" if len(conc) else "")
                  + "." + (f" {note}" if note else ""), ""] if len(rows) else []
    if len(rows):
        rows["signals_sent"] = rows["signals_sent"].astype(int)
        rows["interrupted"] = rows["interrupted"].astype(int)
        rows["identical"] = rows["identical"] == "True"
        bad = rows[rows["error"].fillna("") != ""]
        sigs = rows["signals"].str.split(";").explode()
        lines += ["Each trial interrupts one `layernas search` run (NATS-Bench tss table, cifar100, "
                  f"{BUDGET} evaluations) 1-3 times with SIGINT or SIGTERM at a random moment, resumes it "
                  "with `--resume` after each interrupt, then compares the finished run with an uninterrupted "
                  "one. A signal is *sent* when the process was still alive at its moment; a session is "
                  "*interrupted* when it then exited 130/143 (otherwise it had committed its search and "
                  "exited 0).", "",
                  "| searcher | trials | signals sent | SIGINT | SIGTERM | sessions interrupted | identical resumes | failing trials |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, g in list(rows.groupby("searcher", sort=False)) + [("all", rows)]:
            s = g["signals"].str.split(";").explode()
            lines.append(f"| {name} | {len(g)} | {g['signals_sent'].sum()} | {(s == 'SIGINT').sum()} | "
                         f"{(s == 'SIGTERM').sum()} | {g['interrupted'].sum()} | {g['identical'].sum()} of {len(g)} | "
                         f"{(g['error'].fillna('') != '').sum()} |")
        lines += ["", f"Signals due after the process had already finished (not sent): {(sigs == 'none').sum()}.", ""]
        if per_searcher is not None:
            short = {name: int(g["signals_sent"].sum()) for name, g in rows.groupby("searcher", sort=False)
                     if g["signals_sent"].sum() < per_searcher}
            lines += [f"Target: {per_searcher} signals per searcher ({len(SEARCHERS) * per_searcher} in all); "
                      + ("reached." if not short and rows["searcher"].nunique() == len(SEARCHERS) else
                         f"**not reached**: {rows['signals_sent'].sum()} sent in all (the run stopped at its "
                         f"time limit, `--stop-after-minutes`)."), ""]
        if len(bad):
            lines += ["Failures (full stderr in `failures/`):", "", "| searcher | trial | signals | exit codes | error |",
                      "|---|---|---|---|---|"]
            for _, r in bad.iterrows():
                lines.append(f"| {r['searcher']} | {r['trial']} | {r['signals']} | {r['exit_codes']} | "
                             f"{r['error'].replace('|', '/')} |")
        else:
            lines.append("No failure: every session exited 0, 130 or 143 with at most one line on stderr, and every "
                         "resumed run equals the uninterrupted one.")
        lines.append("")
    if len(conc):
        for col in ("one_ran", "loser_line_ok", "folder_valid"):
            conc[col] = conc[col] == "True"
        ok = conc["one_ran"] & conc["loser_line_ok"] & conc["folder_valid"]
        lines += ["## Two processes on one folder at the same instant", "",
                  "Both processes import everything, then start on a shared clock on one new folder "
                  "(REINFORCE, 3000 evaluations).", "",
                  f"- starts: {len(conc)}", f"- exactly one ran, the other exited 2: {conc['one_ran'].sum()}",
                  f"- the other printed exactly one line naming the folder and the winner's PID: {conc['loser_line_ok'].sum()}",
                  f"- the folder was a complete, valid run: {conc['folder_valid'].sum()}",
                  f"- all three: {ok.sum()} of {len(conc)}", ""]
        for _, r in conc[~ok].iterrows():
            lines.append(f"- failure, start {r['trial']}: exit codes {r['exit_codes']}: {r['loser_stderr']}")
    text = "\n".join(lines).rstrip() + "\n"
    (out / "summary.md").write_text(text)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", type=Path, required=True, help="the NATS-Bench tss table (CSV or Parquet)")
    p.add_argument("--per-searcher", type=int, default=125, help="signals to send per searcher")
    p.add_argument("--concurrent", type=int, default=0, help="simultaneous two-process starts to run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-delay", type=float, default=0.6, help="latest moment of a signal, in seconds after the "
                   "session starts appending to its journal")
    p.add_argument("--signals", default="SIGINT,SIGTERM", help="the signals to choose from (equally likely)")
    p.add_argument("--out", type=Path, default=Path("results/reliability"))
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "layernas_interrupt_stress",
                   help="scratch folder (references are kept there across restarts)")
    p.add_argument("--stop-after-minutes", type=float, default=None, help="stop starting trials after this long")
    p.add_argument("--summary-only", action="store_true", help="write summary.md from the CSVs and exit")
    p.add_argument("--no-interrupts", action="store_true", help="run only the simultaneous starts")
    p.add_argument("--note", default="", help="a sentence for summary.md about how the run was made")
    args = p.parse_args()
    # a background job may have inherited SIGINT ignored, and its children with it (then no
    # SIGINT would interrupt them): a Python handler here gives the children the default one
    signal.signal(signal.SIGINT, signal.default_int_handler)
    out, work = args.out, args.work
    command = (f"python benchmarks/interrupt_stress.py --table {os.path.relpath(args.table, Path(__file__).resolve().parents[1])} --per-searcher {args.per_searcher} "
               f"--concurrent {args.concurrent} --seed {args.seed} --out {args.out}"
               + (f" --max-delay {args.max_delay}" if args.max_delay != 0.6 else "")
               + (f" --signals {args.signals}" if args.signals != "SIGINT,SIGTERM" else ""))
    if args.summary_only:
        print(write_summary(out, command, args.per_searcher, args.note))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "failures").mkdir(exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    (out / "machine.json").write_text(json.dumps({"cpu": machine.get("cpu_model") or platform.processor() or platform.machine(),
                                                  "cpus": machine["cpu_count"], "python": machine["python"]}) + "\n")
    began = time.monotonic()

    def time_left() -> bool:
        return args.stop_after_minutes is None or time.monotonic() - began < 60 * args.stop_after_minutes

    refs = {s: reference(args.table, s, work) for s in SEARCHERS}
    path = out / "interrupts.csv"
    rows = read_rows(path)
    sent = {s: sum(int(r["signals_sent"]) for r in rows if r["searcher"] == s) for s in SEARCHERS}
    trial = {s: 1 + max([int(r["trial"]) for r in rows if r["searcher"] == s], default=-1) for s in SEARCHERS}
    while not args.no_interrupts and time_left() and any(sent[s] < args.per_searcher for s in SEARCHERS):
        for s in SEARCHERS:   # round robin: a stopped run has covered every searcher alike
            if sent[s] >= args.per_searcher or not time_left():
                continue
            row = one_trial(args.table, s, trial[s], args.seed, work / "run", refs[s], out / "failures",
                            args.max_delay, tuple(args.signals.split(",")))
            append_row(path, INTERRUPT_FIELDS, row)
            sent[s] += row["signals_sent"]
            trial[s] += 1
            print(f"{s} trial {row['trial']}: {row['signals']} -> {row['exit_codes']} "
                  f"{'identical' if row['identical'] else 'DIFFERENT'} {row['error']} ({row['wall_s']} s); "
                  f"sent so far {sent}", flush=True)
    cpath = out / "concurrency.csv"
    done = len(read_rows(cpath))
    for t in range(done, args.concurrent):
        if not time_left():
            break
        row = concurrent_start(args.table, t, work / "shared_run")
        append_row(cpath, CONCURRENCY_FIELDS, row)
        print(f"concurrent start {t}: {row['exit_codes']} one_ran={row['one_ran']} line={row['loser_line_ok']} "
              f"valid={row['folder_valid']} ({row['wall_s']} s)", flush=True)
    print(write_summary(out, command, args.per_searcher, args.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
