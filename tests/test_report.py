"""Readable runs: units in the summary, the plots and report.html of a run, `layernas report`,
the progress display, and NATS budgets charged in the protocol's 12-epoch time."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import layernas
from layernas import cli
from layernas.executors import as_executor
from layernas.progress import ProgressBar, report_child_progress
from layernas.report import PLOT_FILES, REPORT_FILE, ReportError, write_report
from layernas.results import SearchResult
from layernas.run import Budget, run_loop
from layernas.searchers import make_searcher
from layernas.search_spaces.nats_tss import NatsTss
from layernas.table_evaluator import TableEvaluator
from layernas.tables import default_table
from layernas.target import Target
from layernas.units import format_cost, reward_meaning


@pytest.fixture(scope="module")
def space():
    return NatsTss("cifar10")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A CLI table search at 50% of the FLOPs, as the README's first command runs it."""
    out = tmp_path_factory.mktemp("runs") / "tss"
    assert cli.main(["search", "--space", "nats-tss", "--flops-fraction", "0.5", "--budget-evals", "60",
                     "--out", str(out), "--quiet"]) == 0
    return out


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


# -- units and the meaning of the reward ----------------------------------------------------

def test_summary_prints_units_and_what_the_reward_is(run_dir, capsys):
    result = json.loads((run_dir / "result.json").read_text())
    flops = result["best"]["costs"]["flops"]
    cli_out = subprocess.run([sys.executable, "-m", "layernas", "search", "--space", "nats-tss",
                              "--flops-fraction", "0.5", "--budget-evals", "60", "--out", str(run_dir),
                              "--resume", "--quiet"], capture_output=True, text=True, check=True).stdout
    assert f"flops={flops:.4g} MFLOPs" in cli_out
    assert re.search(r"params=[0-9.]+ MB", cli_out) and re.search(r"latency=[0-9.]+ s", cli_out)
    assert "validation accuracy" in cli_out and "%" in cli_out
    assert "simulated 12-epoch training time" in cli_out


def test_codec_reward_prints_its_meaning():
    best = {"arch": [0], "arch_str": "x", "reward": -27.249, "test": None,
            "costs": {"decoder_gmacs": 17.5, "decoder_madds": 44000.0}, "trial_id": 0}
    settings = {"space": "codec-hyperprior", "evaluator": "trainer", "codec": {"lmbda": 0.013}}
    result = SearchResult(best, pd.DataFrame(), pd.DataFrame(), 1, 1, 3.0, 3.0, {}, settings)
    text = result.summary()
    assert "reward -27.249 (= -(lambda*255^2*MSE + bpp)" in text and "lambda=0.013" in text
    assert "validation -27.249" not in text and "decoder_gmacs=17.5 GMACs" in text
    assert "measured training time" in text


def test_units_of_the_space_families():
    assert format_cost("flops", 86.4262, "nats-tss/cifar10") == "86.43 MFLOPs"
    assert format_cost("params", 0.615386, "nats-sss/cifar10") == "0.6154 MB"
    assert format_cost("madds", 59.6e6, "mobilenetv3-small") == "59.6M MAdds"
    assert format_cost("params", 2.54e6, "mobilenetv3-small") == "2.54M params"
    assert format_cost("latency", 12.0, "mobilenetv2") == "12 ms"
    assert reward_meaning({"evaluator": "dry-run"}).endswith("(NOT accuracy)")
    from layernas.config import TRAINER_RECIPES

    for recipe in TRAINER_RECIPES:  # every --trainer recipe's reward is a validation accuracy
        assert reward_meaning({"evaluator": recipe}) == "validation accuracy (%)"


def test_help_names_units_and_the_12_epoch_charge(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "12-epoch" in text and "20000/40000/120000" in text
    assert "MFLOPs" in text and "GMACs" in text


# -- plots and report.html ------------------------------------------------------------------

def test_a_run_writes_its_plots_and_report(run_dir):
    for name in PLOT_FILES:
        width, height = png_size(run_dir / name)
        assert width > 300 and height > 200
    page = (run_dir / REPORT_FILE).read_text()
    assert page.count('src="data:image/png;base64,') == 2
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    frontier = pd.read_csv(run_dir / "frontier.csv")
    assert frontier["arch_str"].iloc[0] in page  # the result table is in the page


def test_layernas_report_redraws_the_plots(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    for name in (*PLOT_FILES, REPORT_FILE):
        (copy / name).unlink()
    assert cli.main(["report", str(copy)]) == 0
    assert all((copy / name).stat().st_size > 1000 for name in (*PLOT_FILES, REPORT_FILE))
    assert "report.html" in capsys.readouterr().out


def test_report_of_a_folder_without_a_run_is_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "history.csv" in err and str(tmp_path) in err
    with pytest.raises(ReportError, match="not a directory"):
        write_report(tmp_path / "absent")


def test_library_search_without_out_dir_draws_nothing(space, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    layernas.search(space, TableEvaluator(default_table(), "cifar10", space), budget=5)
    assert not list(tmp_path.iterdir())


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


PROBE = """<script>window.addEventListener("load", function () {
  var seen = [];
  for (const img of document.images) { seen.push(img.complete + ":" + img.naturalWidth + "x" + img.naturalHeight); }
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = seen.join(" ");
  document.body.appendChild(pre);
});</script>"""


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium on PATH (install one, e.g. `apt-get install -y chromium`, to render report.html)")
    page = (run_dir / REPORT_FILE).read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                           "--virtual-time-budget=10000", "--host-resolver-rules=MAP * ~NOTFOUND",
                           probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">([^<]*)</pre>', done.stdout)
    assert found, f"chromium gave no probe (rc {done.returncode}): {done.stderr[-2000:]}"
    images = found.group(1).split()
    assert len(images) == 2
    for item in images:
        complete, size = item.split(":")
        width, height = map(int, size.split("x"))
        assert complete == "true" and width > 0 and height > 0, item


# -- progress -------------------------------------------------------------------------------

def test_progress_off_a_terminal_is_one_line_per_result(space):
    out = io.StringIO()
    bar = ProgressBar(out)
    target = Target("flops")
    run_loop(space, make_searcher("random", space, target), as_executor(TableEvaluator(default_table(), "cifar10", space)),
             Budget(evaluations=12), target, progress=bar)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 12, lines  # the final line is not printed twice
    assert [int(re.search(r"\] (\d+) evals", line).group(1)) for line in lines] == list(range(1, 13))
    assert "\r" not in out.getvalue()


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_is_a_bar_with_the_child_steps():
    out = FakeTerminal()
    bar = ProgressBar(out, child_interval=0.0)
    bar.evaluations(3, 10, 30.0, None)
    bar("[s/x] 3 evals/10 | 30 s | best 91.000 at flops=80 (|arch|)")
    report_child_progress(epoch=2, epochs=5, step=17, steps=390)
    text = out.getvalue()
    assert "3/10" in text and "best 91.000 at flops=80" in text and "|arch|" not in text
    assert "epoch 2/5 step 17/390" in text
    bar.close()
    before = out.getvalue()
    report_child_progress(epoch=2, epochs=5, step=18, steps=390)  # closed: no longer listening
    assert out.getvalue() == before


# -- NATS budgets in the protocol's time ----------------------------------------------------

def test_nats_budget_seconds_are_12_epoch_time(tmp_path, space):
    out = tmp_path / "budget"
    assert cli.main(["search", "--space", "nats-tss", "--flops-fraction", "0.5", "--searcher", "random",
                     "--budget-seconds", "20000", "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "result.json").read_text())
    history = pd.read_csv(out / "history.csv")
    assert result["settings"]["charge_epochs"] == 12
    twelve = TableEvaluator(default_table(), "cifar10", space, charge_epochs=12)
    rows = [twelve.row(space.str_to_arch(s)) for s in history["arch_str"]]
    assert history["cost_seconds"].tolist() == pytest.approx([twelve.cost_seconds[r] for r in rows])
    # the budget buys the protocol's ~150-190 evaluations, not the 12 that 200-epoch time would
    assert 100 <= result["evaluations"] <= 260
    assert history["cum_seconds"].iloc[-2] < 20000 <= history["cum_seconds"].iloc[-1]


# -- nats-sss without a usable table -------------------------------------------------------

def test_nats_sss_without_table_says_to_pass_one(capsys, tmp_path):
    assert cli.main(["search", "--space", "nats-sss", "--flops-fraction", "0.5", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs --table" in err and "convert-table" in err


def test_a_search_in_which_every_trial_fails_is_one_line(capsys, tmp_path, nats_fixture_dir):
    table = nats_fixture_dir / "NATS-sss-v1_0-50262-simple"
    assert cli.main(["search", "--space", "nats-sss", "--table", str(table), "--budget-evals", "20",
                     "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "evaluations failed" in err
    assert "the table has 3 of the space's 32768 architectures" in err and "is not in table" in err
