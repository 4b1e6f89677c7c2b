"""Interrupts, concurrent starts and torn writes against the real CLI on the real NATS table.

* SIGINT and SIGTERM at random moments of a real ``python -m layernas search`` subprocess,
  then ``--resume`` (possibly interrupted again) until it finishes: the resumed run must
  equal an uninterrupted one (same history, same best), and no trial may be journaled
  twice. A few per searcher in the default suite; ``LAYERNAS_INTERRUPTS`` per searcher
  (default 50) in the slow test.
* Two processes started on one folder at the same instant: exactly one runs, the other
  exits 2 with one line naming the folder and the winner's PID, and the folder is valid.
* The state a kill during the very first write leaves (only a stale temporary file), and a
  journal torn in its last line, both resume correctly.
* Every output file is written atomically: a kill at any instant leaves the old or the
  new file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layernas.run import JOURNAL_NAME, finished_results
from layernas.run_dir import write_atomic

SEARCHERS = ("layernas", "random", "rea", "reinforce")
BUDGET = 400


@pytest.fixture(scope="module")
def table():
    from tests.conftest import shared_path

    return shared_path("data", "nats_tss", "nats_tss_200ep.csv")


def search_argv(table: Path, searcher: str, out: Path, resume: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "layernas", "search", "--space", "nats-tss", "--dataset", "cifar100",
            "--flops-fraction", "0.25", "--table", str(table), "--searcher", searcher,
            "--budget-evals", str(BUDGET), "--seed", "4", "--out", str(out), "--quiet"]
    return argv + (["--resume"] if resume else [])


def run_cli(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def outputs(out: Path) -> tuple[pd.DataFrame, dict]:
    return pd.read_csv(out / "history.csv"), json.loads((out / "result.json").read_text())["best"]


@pytest.fixture(scope="module")
def references(table, tmp_path_factory):
    """The uninterrupted run of every searcher, and how long its search phase took."""
    refs = {}
    for searcher in SEARCHERS:
        out = tmp_path_factory.mktemp("ref") / searcher
        done = run_cli(search_argv(table, searcher, out))
        assert done.returncode == 0, done.stderr
        refs[searcher] = outputs(out)
    return refs


def interrupt_and_resume(table: Path, searcher: str, out: Path, rng: np.random.Generator,
                         max_interrupts: int) -> list[int]:
    """Start the search, send SIGINT/SIGTERM at random moments of its search phase
    (``max_interrupts`` times over successive ``--resume`` sessions), then let it finish.

    Returns:
      the exit codes of the interrupted sessions (0 when the run finished first).
    """
    codes = []
    for session in range(max_interrupts + 1):
        argv = search_argv(table, searcher, out, resume=session > 0)
        if session == max_interrupts:
            done = run_cli(argv)
            assert done.returncode == 0, done.stderr
            return codes
        journal = out / JOURNAL_NAME
        size = journal.stat().st_size if journal.exists() else -1
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=default_sigint)
        deadline = time.monotonic() + 120
        # wait until this session's loop runs (it appends to, or creates, the journal) ...
        while proc.poll() is None and time.monotonic() < deadline:
            if journal.exists() and journal.stat().st_size > size:
                break
            time.sleep(0.002)
        # ... then interrupt it at a random moment of the search (or of the writing after it)
        time.sleep(float(rng.uniform(0.0, 0.6)))
        sig = signal.SIGINT if rng.random() < 0.5 else signal.SIGTERM
        if proc.poll() is None:
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
        expected = {signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
        assert proc.returncode in (0, expected), (proc.returncode, stderr)
        assert "Traceback" not in stderr, stderr
        if proc.returncode:
            lines = [line for line in stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and "--resume" in lines[0], stderr
        codes.append(proc.returncode)
    return codes


def default_sigint() -> None:
    """In the child: SIGINT back to its default, so that a test run as a background job (which
    starts with SIGINT ignored, inherited by every child) still interrupts the search."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def check_same_as_reference(out: Path, reference) -> None:
    history, best = outputs(out)
    ref_history, ref_best = reference
    pd.testing.assert_frame_equal(history, ref_history)
    assert best == ref_best
    ids = [r.trial_id for r in finished_results(out)]
    assert sorted(ids) == list(range(len(ref_history))), "a trial was journaled twice, or is missing"
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


@pytest.mark.parametrize("searcher", SEARCHERS)
def test_random_interrupts_then_resume_equal_the_uninterrupted_run(table, references, tmp_path, searcher):
    rng = np.random.default_rng(SEARCHERS.index(searcher))
    out = tmp_path / "run"
    interrupt_and_resume(table, searcher, out, rng, max_interrupts=2)
    check_same_as_reference(out, references[searcher])


@pytest.mark.slow
@pytest.mark.parametrize("searcher", SEARCHERS)
def test_many_random_interrupts(table, references, tmp_path, searcher):
    """``LAYERNAS_INTERRUPTS`` (default 50) interrupts per searcher, 1-3 per run."""
    wanted = int(os.environ.get("LAYERNAS_INTERRUPTS", "50"))
    rng = np.random.default_rng(12345 + SEARCHERS.index(searcher))
    sent = interrupted = runs = 0
    while sent < wanted:
        out = tmp_path / f"run{runs}"
        codes = interrupt_and_resume(table, searcher, out, rng, max_interrupts=int(rng.integers(1, 4)))
        check_same_as_reference(out, references[searcher])
        sent += len(codes)
        interrupted += sum(1 for c in codes if c)
        runs += 1
    report = Path(os.environ.get("LAYERNAS_INTERRUPT_REPORT", tmp_path / "report.jsonl"))
    with open(report, "a") as f:
        f.write(json.dumps({"searcher": searcher, "signals_sent": sent, "interrupted_a_running_search": interrupted,
                            "runs": runs, "identical_resumes": runs}) + "\n")
    assert interrupted > 0


START_AT_SCRIPT = """
import sys, time
from layernas.cli import main
start = float(sys.argv[1])
while time.time() < start:
    pass
sys.exit(main(sys.argv[2:]))
"""


def test_two_processes_on_one_folder_at_the_same_instant(table, tmp_path):
    out = tmp_path / "shared_run"
    argv = search_argv(table, "reinforce", out)[3:]   # the CLI's own arguments
    argv[argv.index("--budget-evals") + 1] = "3000"
    start = time.time() + 6.0   # both have imported everything by then
    procs = [subprocess.Popen([sys.executable, "-c", START_AT_SCRIPT, repr(start), *argv],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    done = [(p.pid, *p.communicate(timeout=300), p.returncode) for p in procs]
    codes = sorted(d[3] for d in done)
    assert codes == [0, 2], done
    (winner,) = [d for d in done if d[3] == 0]
    (loser,) = [d for d in done if d[3] == 2]
    lines = [line for line in loser[2].splitlines() if line.strip()]
    assert lines == [f"layernas: error: {out} is in use by PID {winner[0]}"], loser[2]
    history, best = outputs(out)
    assert len(history) == 3000 and best is not None
    json.loads((out / "provenance.json").read_text())
    assert sorted(r.trial_id for r in finished_results(out)) == list(range(3000))


def test_resume_while_running_is_refused(table, tmp_path):
    out = tmp_path / "run"
    argv = search_argv(table, "rea", out)
    argv[argv.index("--budget-evals") + 1] = "4000"
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / JOURNAL_NAME).exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.005)
    second = run_cli(search_argv(table, "rea", out, resume=True))
    first.communicate(timeout=300)
    assert first.returncode == 0
    if second.returncode == 0:   # the first one had finished already: nothing to refuse
        pytest.skip("the first search ended before the second one started")
    assert second.returncode == 2 and f"{out} is in use by PID {first.pid}" in second.stderr
    assert len(pd.read_csv(out / "history.csv")) == 4000


def test_a_kill_during_the_first_write_leaves_a_folder_that_resumes(table, references, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / f".{JOURNAL_NAME}.k3j2_x.tmp").write_text('{"version": 2, "sett')   # the torn first write
    done = run_cli(search_argv(table, "random", out, resume=True))
    assert done.returncode == 0, done.stderr
    check_same_as_reference(out, references["random"])


def test_a_torn_last_journal_line_is_dropped_and_the_run_resumes(table, references, tmp_path):
    out = tmp_path / "run"
    assert run_cli(search_argv(table, "rea", out)).returncode == 0
    journal = out / JOURNAL_NAME
    data = journal.read_bytes()
    lines = data.splitlines(keepends=True)
    keep = len(lines) // 2
    # a kill in the middle of appending a line, before any snapshot covered it
    journal.write_bytes(b"".join(lines[:keep]) + lines[keep][: len(lines[keep]) // 2])
    (out / "checkpoint.json").unlink()
    for name in ("history.csv", "result.json"):
        (out / name).unlink()
    done = run_cli(search_argv(table, "rea", out, resume=True))
    assert done.returncode == 0, done.stderr
    check_same_as_reference(out, references["rea"])


WRITER_SCRIPT = """
import sys
from layernas.run_dir import write_atomic
path = sys.argv[1]
contents = [("a" * 2_000_000 + "\\n"), ("b" * 3_000_000 + "\\n")]
print("ready", flush=True)
i = 0
while True:
    write_atomic(path, contents[i % 2])
    i += 1
"""


def test_write_atomic_survives_kills_at_any_instant(tmp_path):
    path = tmp_path / "history.csv"
    write_atomic(path, "old\n")
    allowed = {"old\n", "a" * 2_000_000 + "\n", "b" * 3_000_000 + "\n"}
    rng = np.random.default_rng(0)
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.kill()
        proc.wait()
        assert path.read_text() in allowed
    # the next run's cleanup removes what the kills left behind
    from layernas.run_dir import remove_stale_tmp

    remove_stale_tmp(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]


def test_write_atomic_failure_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    write_atomic(path, "old")

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match=f"cannot write {path}"):
        write_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@pytest.mark.parametrize("process", [True, False])
def test_after_a_caught_interrupt_the_program_ignores_further_signals(monkeypatch, capsys, process):
    """As the ``layernas`` program, once main has caught an interrupt, SIGINT and SIGTERM stay
    ignored until exit (a second Ctrl-C cannot kill it); as a function, the handlers are kept."""
    from layernas import cli

    def interrupted(args):
        raise KeyboardInterrupt

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(cli, "_exiting_process", process)
    monkeypatch.setitem(cli.COMMANDS, "spaces", interrupted)
    try:  # start from Python's own handlers (a job started in the background inherits SIGINT ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert cli.main(["spaces"]) == 130
        ignored = [signal.getsignal(sig) is signal.SIG_IGN for sig in saved]
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert ignored == [process, process]
    assert capsys.readouterr().err.strip().endswith("(continue with --resume)")
