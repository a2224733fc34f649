"""A real overlay over the busybox rootfs for each test, and a helper to run shell steps."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloche.sandbox import RunResult, RunSpec, mount_overlay, run
from tests.fixtures.services import require_root


@dataclass
class Step:
    result: RunResult
    out: bytes
    err: bytes

    @property
    def text(self) -> str:
        return self.out.decode()


@dataclass
class Layer:
    """A mounted overlay: ``merged`` is the step's rootfs, ``upper`` its diff, ``lower`` below."""

    merged: Path
    upper: Path
    lower: Path
    runs: list[Step] = field(default_factory=list)

    def run(self, argv: tuple[str, ...] | str, **kwargs: Any) -> Step:
        if isinstance(argv, str):
            argv = ("/bin/sh", "-c", argv)
        out: list[bytes] = []
        err: list[bytes] = []
        result = run(RunSpec(self.merged, argv, stdout=out.append, stderr=err.append, **kwargs))
        return Step(result, b"".join(out), b"".join(err))

    def upper_entries(self) -> list[str]:
        found = []
        for dirpath, dirnames, filenames in os.walk(self.upper):
            rel = os.path.relpath(dirpath, self.upper)
            found += [os.path.normpath(os.path.join(rel, n)) for n in dirnames + filenames]
        return sorted(found)


def _mounted(lower: Path, tmp_path: Path) -> Iterator[Layer]:
    require_root()
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    with mount_overlay([lower], upper, work, merged):
        yield Layer(merged, upper, lower)


@pytest.fixture()
def layer(busybox_rootfs: Path, tmp_path: Path) -> Iterator[Layer]:
    yield from _mounted(busybox_rootfs, tmp_path)


@pytest.fixture(scope="session")
def scratch_like_rootfs(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Busybox without /proc, /dev, /sys and with no /etc at all, like a FROM scratch stage."""
    root = tmp_path_factory.mktemp("scratchlike") / "rootfs"
    root.mkdir()
    (root / "bin").mkdir()
    shutil.copy2(busybox_rootfs / "bin" / "busybox", root / "bin" / "busybox")
    for applet in ("sh", "true", "echo", "cat", "ls", "touch", "mkdir"):
        (root / "bin" / applet).symlink_to("busybox")
    return root


@pytest.fixture()
def scratch_layer(scratch_like_rootfs: Path, tmp_path: Path) -> Iterator[Layer]:
    yield from _mounted(scratch_like_rootfs, tmp_path)
