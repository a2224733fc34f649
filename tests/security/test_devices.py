"""A RUN step cannot use a device node it makes or an image brings (issue 9, item 4).

The node used is 1:11, the kernel log (/dev/kmsg): writing to it is harmless, and proves that
the device was reachable. As under Docker, ``mknod`` itself succeeds (CAP_MKNOD is in the
default set, so images can ship nodes), but the node cannot be opened; the standard nodes
of /dev keep working.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cloche.sandbox.spec import Mount
from tests.engine.conftest import BASE, Builder
from tests.sandbox.conftest import Layer

KMSG = os.makedev(1, 11)


@pytest.mark.parametrize("where", ["/kmsg", "/dev/kmsg2", "/tmp/kmsg", "/cache/kmsg",
                                   "/scratch/kmsg"])
def test_a_node_made_by_the_step_cannot_be_opened(layer: Layer, tmp_path: Path,
                                                  where: str) -> None:
    """The root filesystem, /dev, a writable bind (a cache mount) and a tmpfs mount."""
    cache = tmp_path / "cache"
    cache.mkdir()
    mounts = (Mount(target="/cache", source=cache), Mount(target="/scratch", kind="tmpfs"))
    step = layer.run(f"busybox mknod {where} c 1 11 && echo made "
                     f"&& {{ echo cloche-i9-kmsg > {where} && echo WROTE; }}", mounts=mounts)
    assert step.text.splitlines() == ["made"], step.err  # mknod works, as under Docker
    assert not step.result.ok


def test_a_node_in_the_image_cannot_be_opened(layer: Layer) -> None:
    """A device node that a base image layer carries (here put in the step's rootfs)."""
    os.mknod(layer.merged / "kmsg", 0o666 | stat.S_IFCHR, KMSG)
    step = layer.run("echo cloche-i9-kmsg > /kmsg && echo WROTE")
    assert "WROTE" not in step.text and not step.result.ok


def test_a_node_in_a_bind_source_cannot_be_opened(layer: Layer, tmp_path: Path) -> None:
    """``RUN --mount=type=bind,from=stage``: a node in the stage, read-only or not."""
    src = tmp_path / "stage"
    src.mkdir()
    os.mknod(src / "kmsg", 0o666 | stat.S_IFCHR, KMSG)
    for readonly in (True, False):
        step = layer.run("echo cloche-i9-kmsg > /stage/kmsg && echo WROTE",
                         mounts=(Mount(target="/stage", source=src, readonly=readonly),))
        assert "WROTE" not in step.text and not step.result.ok


def test_standard_nodes_still_work(layer: Layer) -> None:
    step = layer.run(
        "echo x > /dev/null && head -c 3 /dev/zero | wc -c && head -c 5 /dev/urandom | wc -c "
        "&& head -c 2 /dev/random | wc -c && { echo x > /dev/full; echo full=$?; } 2>/dev/null "
        "&& test -c /dev/tty && test -c /dev/pts/ptmx && test -L /dev/ptmx "
        "&& echo shm > /dev/shm/f && cat /dev/shm/f && chmod 600 /dev/null && echo chmod-ok")
    assert step.result.ok, step.err
    assert step.text.split() == ["3", "5", "2", "full=1", "shm", "chmod-ok"]
    assert stat.S_IMODE(os.stat("/dev/null").st_mode) == 0o666  # the host's node is untouched


def test_a_build_cannot_write_to_a_device_it_makes(builder: Builder) -> None:
    """Through the engine, as a Dockerfile would; the node lands in the layer (as Docker)."""
    dockerfile = (f"FROM {BASE}\n"
                  "RUN busybox mknod /kmsg c 1 11 && "
                  "{ echo cloche-i9-kmsg > /kmsg && echo WROTE > /wrote || true; }\n")
    result = builder.build(dockerfile)
    from tests.engine.conftest import layer_members
    names = {m.name: m for m in layer_members(result.image.layers[-1])}
    assert "wrote" not in names
    assert names["kmsg"].ischr() and (names["kmsg"].devmajor, names["kmsg"].devminor) == (1, 11)
