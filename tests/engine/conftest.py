"""Fixtures for the build engine's tests: a store holding a busybox base image, a builder.

Every test gets its own store (a copy of a session-wide template that already holds
``busybox-test:1``), so that no test sees another's images, cache mounts or build cache, and
a test that wants a cold build gets one without ``--no-cache``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloche import api
from cloche.engine import events as ev
from cloche.engine.options import BuildOptions
from cloche.oci.image import Image, Layer
from cloche.store import Store
from tests.fixtures.services import require_root

BASE = "busybox-test:1"
PROJECT = Path(__file__).resolve().parents[2]
CLOCHE = [str(PROJECT / ".venv" / "bin" / "cloche")]
if not os.access(CLOCHE[0], os.X_OK):  # CI may install cloche elsewhere
    CLOCHE = [sys.executable, "-m", "cloche.cli.main"]


@pytest.fixture(scope="session")
def template_store(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the busybox-static rootfs imported as ``busybox-test:1``."""
    from cloche.ops.importer import import_rootfs

    root = tmp_path_factory.mktemp("engine-template") / "store"
    import_rootfs(Store.open(root), busybox_rootfs, names=[BASE])
    return root


class Recorder:
    """A listener that keeps every progress event (the engine calls it from many threads)."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type) -> list:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]


@dataclass
class Builder:
    """Builds Dockerfiles in one test's directory against one test's store."""

    dir: Path
    root: Path
    recorder: Recorder = field(default_factory=Recorder)
    _contexts: int = 0

    @property
    def store(self) -> Store:
        return Store.open(self.root)

    def context(self, dockerfile: str | None, files: Mapping[str, str | bytes] = ()) -> Path:
        """A fresh context directory holding the Dockerfile and ``files`` (path -> content)."""
        self._contexts += 1
        ctx = self.dir / f"ctx{self._contexts}"
        ctx.mkdir()
        if dockerfile is not None:
            (ctx / "Dockerfile").write_text(dockerfile)
        for name, content in dict(files).items():
            path = ctx / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        return ctx

    def build(self, dockerfile: str, files: Mapping[str, str | bytes] = (),
              **options: object) -> api.BuildResult:
        """``cloche.api.build`` of ``dockerfile`` with ``files`` as its context."""
        ctx = self.context(dockerfile, files)
        self.recorder = Recorder()
        opts = BuildOptions(context=str(ctx), root=self.root, **options)  # type: ignore[arg-type]
        return api.build(opts, listener=self.recorder)

    def cli(self, *args: str, input: str | bytes | None = None, check: bool = True,
            timeout: float = 180, **kw: object) -> subprocess.CompletedProcess:
        """``cloche ARGS`` as a subprocess, with ``--root`` after the subcommand."""
        argv = CLOCHE + [args[0], "--root", str(self.root), *args[1:]]
        text = not isinstance(input, bytes)
        result = subprocess.run(argv, input=input, capture_output=True, text=text,
                                timeout=timeout, cwd=self.dir, **kw)  # type: ignore[call-overload]
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture
def builder(template_store: Path, tmp_path: Path) -> Builder:
    """A Builder with its own copy of the template store; skips without root (CI has it)."""
    require_root()
    root = tmp_path / "store"
    shutil.copytree(template_store, root, symlinks=True)
    return Builder(tmp_path, root)


def rootfs(image: Image, dest: Path) -> Path:
    """The image's layers applied in order into ``dest`` (whiteouts honoured)."""
    from cloche.layers.apply import flatten

    streams = [layer.open() for layer in image.layers]
    try:
        flatten(streams, dest)
    finally:
        for s in streams:
            s.close()
    return dest


def layer_members(layer: Layer) -> list[tarfile.TarInfo]:
    """The tar entries of one layer, in order."""
    with layer.open_uncompressed() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        return [m for m in tar]


def layer_contents(layer: Layer) -> dict[str, bytes]:
    """Regular files of one layer: name -> bytes."""
    out: dict[str, bytes] = {}
    with layer.open_uncompressed() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for m in tar:
            if m.isfile():
                f = tar.extractfile(m)
                out[m.name] = f.read() if f else b""
    return out
