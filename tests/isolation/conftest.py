"""Fixtures for the isolation tests: the engine's template store, in a builder whose store
sits under a directory every user may search (a chroot-mode USER step reaches its files by
their host path, and pytest's own tmp folder is 0700)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.conftest import Builder, template_store  # noqa: F401 - a fixture
from tests.fixtures.services import require_root


@pytest.fixture
def builder(template_store: Path, tmp_path: Path) -> Iterator[Builder]:  # noqa: F811
    require_root()
    top = Path(tempfile.mkdtemp(prefix="cloche-isolation-", dir="/var/tmp"))
    top.chmod(0o755)
    root = top / "store"
    shutil.copytree(template_store, root, symlinks=True)
    try:
        yield Builder(tmp_path, root)
    finally:
        shutil.rmtree(top, ignore_errors=True)

