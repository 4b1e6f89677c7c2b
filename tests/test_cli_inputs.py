"""Bad CLI input gets one line and exit code 2; a resume compares resolved settings; the
end of a finished run survives Ctrl-C and a closed pipe."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from layernas.cli import main
from tests.conftest import shared_path


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("layernas: error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("argv, needles", [
    (["--searcher", "random", "--num-buckets", "5"], ["--num-buckets 5", "--searcher layernas only"]),
    (["--searcher", "rea", "--per-bucket", "2"], ["--per-bucket 2", "layernas only"]),
    (["--num-buckets", "1000000000"], ["--num-buckets 1000000000", "1..10000"]),
    (["--num-buckets", "0"], ["--num-buckets 0"]),
    (["--dataset", ""], ["--dataset ''"]),
    (["--metric", ""], ["--metric ''"]),
    (["--out", ""], ["--out ''"]),
    (["--table", ""], ["--table ''"]),
    (["--table", "/dev/null"], ["--table '/dev/null'", "regular file"]),
    (["--trainer", "proxy", "--data", ".", "--table", "t.csv"], ["--table 't.csv'", "table lookups only"]),
    (["--devices", "data"], ["--devices 'data'", "--trainer only"]),
    (["--data", "."], ["--data '.'", "applies to --trainer and the codec spaces only"]),
    (["--address", "auto"], ["--address 'auto'", "--backend ray"]),
    (["--max-concurrent", "2"], ["--max-concurrent 2", "--backend ray"]),
    (["--gpus-per-trial", "1"], ["--gpus-per-trial 1", "--backend ray"]),
    (["--cpus-per-trial", "2"], ["--cpus-per-trial 2", "--backend ray"]),
    (["--max-retries", "0"], ["--max-retries 0", "--backend ray"]),
    (["--backend", "ray", "--max-concurrent", "0"], ["--max-concurrent 0", "positive"]),
    (["--backend", "ray", "--cpus-per-trial", "0"], ["--cpus-per-trial 0"]),
    (["--backend", "ray", "--gpus-per-trial", "-1"], ["--gpus-per-trial -1"]),
    (["--backend", "ray", "--address", "nowhere"], ["--address 'nowhere'", "HOST:PORT"]),
    (["--evaluator", "dry-run", "--trainer", "proxy"], ["--evaluator dry-run", "--trainer"]),
    (["--target-flops", "300M"], ["--target-flops 3e+08", "MFLOPs"]),
    (["--target-max", "1e6"], ["--target-max 1e+06", "MFLOPs"]),
    (["--seed", "-1"], ["--seed -1"]),
    (["--target-flops", "1e400"], ["--target-flops", "'1e400' is not a finite number"]),
    (["--target-min", "5", "--target-max", "3"], ["--target-min 5", "--target-max 3"]),
    (["--cap", "params=1e400"], ["--cap", "1e400"]),
    (["--cap", "params=0"], ["--cap params=0"]),
    (["--cap", "madds=5"], ["--cap madds", "unknown metric 'madds'"]),
    (["--flops-fraction", "nan"], ["--flops-fraction"]),
    (["--budget-seconds", "1e400"], ["--budget-seconds", "not a finite number"]),
    (["--trainer", "big"], ["--trainer", "'big'"]),
    (["--searcher", "gradient"], ["--searcher", "'gradient'"]),
])
def test_bad_search_flags(argv, needles, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "search", "--space", "nats-tss", "--quiet", *argv)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "runs").exists()


def test_bad_space_specific_flags(capsys):
    code, _, err = run_cli(capsys, "search", "--space", "codec-hyperprior", "--trainer", "proxy")
    assert_one_line_error(code, err, "--trainer 'proxy'", "--proxy-steps")
    code, _, err = run_cli(capsys, "search", "--space", "mobilenetv2", "--evaluator", "dry-run", "--target-madds",
                           "300")
    assert_one_line_error(code, err, "--target-madds 300", "impossible")
    code, _, err = run_cli(capsys, "describe", "--space", "nats-tss", "--arch", "")
    assert_one_line_error(code, err, "--arch ''")


def test_resume_of_a_misspelt_out_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "search", "--space", "nats-tss", "--budget-evals", "5", "--quiet", "--resume",
                           "--out", str(tmp_path / "rnu"))
    assert_one_line_error(code, err, str(tmp_path / "rnu"), "holds no run")
    assert not (tmp_path / "rnu").exists()


def _corrupt(checkpoint: dict, how: str):
    data = json.loads(json.dumps(checkpoint))
    if how == "empty object":
        return {}
    if how == "a list":
        return []
    if how == "no budget":
        data.pop("budget")
    elif how == "history null":
        data["history"] = None
    elif how == "rows lack keys":
        data["history"] = [{"trial_id": 0}]
    elif how == "in_flight strings":
        data["in_flight"] = ["x"]
    elif how == "issued string":
        data["issued"] = "3"
    elif how == "state list":
        data["state"] = []
    elif how == "state emptied":
        data["state"] = {"searcher": "layernas"}
    elif how == "state field wrong type":
        data["state"]["tables"] = 7
    elif how == "budget a string":
        data["budget"] = "200"
    return data


@pytest.mark.parametrize("how", ["empty object", "a list", "no budget", "history null", "rows lack keys",
                                 "in_flight strings", "issued string", "state list", "state emptied",
                                 "state field wrong type", "budget a string"])
def test_malformed_checkpoint_is_one_line_naming_the_file(how, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["search", "--space", "nats-tss", "--budget-evals", "10", "--quiet", "--out", str(out)]
    assert run_cli(capsys, *base)[0] == 0
    path = out / "checkpoint.json"
    path.write_text(json.dumps(_corrupt(json.loads(path.read_text()), how)))
    code, _, err = run_cli(capsys, *base[:4], "12", *base[5:], "--resume")
    assert_one_line_error(code, err, str(path))


def test_resume_compares_resolved_settings_and_the_table_contents(tmp_path, capsys, monkeypatch):
    table = tmp_path / "t.csv"
    shutil.copy(shared_path("data", "nats_tss", "nats_tss_200ep.csv"), table)
    monkeypatch.chdir(tmp_path)
    base = ["search", "--space", "nats-tss", "--quiet", "--out", "run"]
    assert run_cli(capsys, *base, "--table", "t.csv", "--budget-evals", "10")[0] == 0
    # the same table by its absolute path, and the default --num-buckets typed out: the same run
    code, _, err = run_cli(capsys, *base, "--table", str(table), "--num-buckets", "100", "--budget-evals", "12",
                           "--resume")
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "result.json").read_text())["evaluations"] == 12
    # another --num-buckets is another search
    code, _, err = run_cli(capsys, *base, "--table", "t.csv", "--num-buckets", "50", "--budget-evals", "14",
                           "--resume")
    assert_one_line_error(code, err, "settings differ", "num_buckets")
    # the same path with changed contents is refused
    text = table.read_text().splitlines()
    fields = text[1].split(",")
    fields[2] = "12.0;12.0;12.0"
    table.write_text("\n".join([text[0], ",".join(fields), *text[2:]]) + "\n")
    code, _, err = run_cli(capsys, *base, "--table", "t.csv", "--budget-evals", "14", "--resume")
    assert_one_line_error(code, err, "settings differ", "table_sha256")


def test_disk_full_names_the_run_folder(tmp_path, capsys, monkeypatch):
    import layernas.run as run_lib

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_lib, "write_json_atomic", full)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "search", "--space", "nats-tss", "--budget-evals", "5", "--quiet", "--out",
                           str(out))
    assert_one_line_error(code, err, str(out), "No space left on device")


def test_ctrl_c_after_the_search_is_ignored(tmp_path, capsys, monkeypatch):
    import layernas.provenance as provenance

    write = provenance.write_provenance

    def interrupted_write(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C while the finished run is being reported
        time.sleep(0.05)
        return write(*args, **kwargs)

    monkeypatch.setattr(provenance, "write_provenance", interrupted_write)
    before = signal.getsignal(signal.SIGINT)
    code, out, err = run_cli(capsys, "search", "--space", "nats-tss", "--budget-evals", "5", "--quiet", "--out",
                             str(tmp_path / "run"))
    assert code == 0 and "Traceback" not in err, err
    assert (tmp_path / "run" / "provenance.json").exists() and "wrote" in out
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored


def test_a_closed_pipe_does_not_fail_a_finished_run(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "layernas.cli", "search", "--space", "nats-tss",
                             "--budget-evals", "20", "--quiet", "--json", "--out", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.close()  # like `| head -0`: the reader is gone before the result is printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert err == "" and (tmp_path / "run" / "result.json").exists()


def test_unreachable_ray_address_fails_fast(tmp_path):
    pytest.importorskip("ray")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "layernas.cli", "search", "--space", "nats-tss", "--backend", "ray",
                           "--address", "127.0.0.1:1", "--quiet", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert time.monotonic() - started < 30
    assert_one_line_error(proc.returncode, proc.stderr, "--address 127.0.0.1:1", "cannot reach")
    assert not (tmp_path / "run").exists()


def test_spaces_columns_align_and_describe_explains_the_star(capsys):
    code, out, _ = run_cli(capsys, "spaces")
    lines = out.strip().splitlines()
    starts = {len(line) - len(line.split("  ", 1)[1].lstrip()) for line in lines}
    assert code == 0 and len(starts) == 1, lines
    code, out, _ = run_cli(capsys, "describe", "--space", "nats-tss", "--arch",
                           "|none~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    assert code == 0 and "  *" in out and "* marks a layer whose option differs" in out
    assert "flops in MFLOPs" in out


def test_docs_list_every_flag_and_every_flag_has_help():
    from pathlib import Path

    from layernas.cli import build_parser

    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        assert f"layernas {name}" in docs, name
        for action in sub._actions:
            if action.dest == "help" or action.dest == "benchmark":  # -h; the benchmark's own subcommands
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            for option in action.option_strings:
                assert f"`{option}" in docs or f"{option} " in docs, f"docs/cli.md lacks {name} {option}"


def test_searcher_options_from_the_cli_are_checked_and_resumed_by_their_resolved_value(tmp_path, capsys,
                                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["search", "--space", "nats-tss", "--quiet", "--out", "run", "--budget-evals", "20"]
    code, _, err = run_cli(capsys, *base, "--searcher-option", "when_exhausted=stop")
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "result.json").read_text())["settings"]
    assert saved["searcher_config"]["when_exhausted"] == "stop"
    # resuming without the option is another search (the default differs): named, with the fix
    code, _, err = run_cli(capsys, *base, "--resume")
    assert_one_line_error(code, err, "searcher option when_exhausted: 'stop' ->",
                          '--searcher-option when_exhausted="stop"')
    code, _, err = run_cli(capsys, *base[:-1], "30", "--resume", "--searcher-option", 'when_exhausted="stop"')
    assert code == 0, err
    for bad, words in ((["--searcher-option", "bogus=1"], ("bogus", "not options of searcher 'layernas'")),
                       (["--searcher-option", "population"], ("NAME=VALUE",)),
                       (["--searcher-option", "num_buckets=5"], ("--num-buckets",)),
                       (["--searcher", "rea", "--searcher-option", "when_exhausted=stop"], ("when_exhausted", "'rea'"))):
        code, _, err = run_cli(capsys, *base[:-2], "--out", "other", *bad)
        assert_one_line_error(code, err, *words)
