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
