"""Project-wide pytest set-up: fixture modules and the location of the shared test data."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.services", "tests.fixtures.rootfs", "tests.fixtures.golang"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"
CONFORMANCE = SHARED / "conformance" / "buildkit"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """BuildKit's own test data, read from ../shared at test time."""
    if not CONFORMANCE.is_dir():
        pytest.skip(f"conformance data not found at {CONFORMANCE}")
    return CONFORMANCE
