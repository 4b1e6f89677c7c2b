"""Shared test fixtures. Tests that need ../shared skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``$LAYERNAS_SHARED`` if set, else ``../shared`` beside the repository."""
    return Path(os.environ.get("LAYERNAS_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the calling test, naming what is missing."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared data folder), which is absent")
    return path


@pytest.fixture
def nats_tss_csv() -> Path:
    return shared_path("data", "nats_tss", "nats_tss_200ep.csv")


@pytest.fixture
def nats_fixture_dir() -> Path:
    return shared_path("data", "nats_fixture")


@pytest.fixture
def cifar10_dir() -> Path:
    return shared_path("data", "cifar10")


# -- what will skip, and why, without -rs --------------------------------------------------

def pytest_report_header(config):
    """Say up front which optional pieces are missing and which tests skip for it."""
    import importlib.util
    import shutil

    lines = []
    if importlib.util.find_spec("torch") is None:
        lines.append("torch: not installed, so the torch reference tests skip "
                     "(tests/test_trainer_benchmarks.py; install it with pip install -e '.[bench]')")
    else:
        lines.append("torch: installed (the torch reference tests run)")
    if not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")):
        lines.append("chromium: not on PATH, so the report.html render test skips (apt-get install -y chromium)")
    if not shared_dir().exists():
        lines.append(f"data: {shared_dir()} is absent, so the tests that need real data skip")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Every skip reason with its count (pytest shows them only with -rs)."""
    if "s" in (config.option.reportchars or "") or "a" in (config.option.reportchars or ""):
        return  # pytest lists them itself
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        terminalreporter.section("skipped, by reason")
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{count:4d} x {reason}")
