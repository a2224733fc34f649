"""--isolation=chroot on the host (as root): the same layers as the namespaces mode.

The chroot mode (engine/isolation.py) keeps a stage's files as a plain directory and finds
each step's change by comparing it with an index taken before (engine/plaintree.py); RUN runs
under proot (sandbox/chroot.py). A multi-stage build that writes, deletes (a whiteout of a
base file), replaces a directory (an opaque one), chmods and chowns, runs a USER step and
uses cache, secret, bind-from-stage and tmpfs mounts must give layers with the same entries
(names, types, modes, owners, link targets, contents) as the default mode; only mtimes may
differ.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

import pytest

from cloche.engine import events as ev
from cloche.errors import ClocheError
from tests.engine.conftest import Builder

pytestmark = pytest.mark.skipif(shutil.which("proot") is None,
                                reason="proot is not installed (apt-get install proot)")

DOCKERFILE = """\
FROM busybox-test:1 AS tools
RUN mkdir -p /out && echo tool > /out/tool.txt && chmod 0750 /out/tool.txt

FROM busybox-test:1
RUN mkdir -p /app/sub /keep && echo one > /app/a && echo two > /app/sub/b \\
 && ln -s a /app/link && ln /app/a /app/hard && chmod 0704 /app/a \\
 && chown 1000:1001 /app/sub/b && touch /keep/k
RUN rm /app/sub/b && echo three > /app/c && chmod 0711 /app/sub && rm -rf /keep \\
 && mkdir /keep && echo new > /keep/n
RUN rm /bin/true
RUN --mount=type=cache,target=/var/cache/x sh -c 'echo cached > /var/cache/x/log; \\
 cp /var/cache/x/log /app/cache-copy'
RUN --mount=type=secret,id=tok sh -c 'test "$(cat /run/secrets/tok)" = s3cret \\
 && stat -c %a /run/secrets/tok > /app/secret-mode'
RUN --mount=type=bind,from=tools,source=/out,target=/mnt/tools cp /mnt/tools/tool.txt /app/
RUN --mount=type=tmpfs,target=/scratch sh -c 'echo t > /scratch/t && cat /scratch/t > /app/t'
USER nobody
RUN echo mine > /tmp/nobody.txt && id -u > /tmp/uid
USER root
WORKDIR /work/dir
RUN echo done > done.txt
"""


def _entries(layer) -> list[tuple]:
    """A layer's tar entries without their times: name, type, mode, owner, link, content."""
    out = []
    with layer.open_uncompressed() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for m in tar:
            digest = ""
            if m.isfile():
                f = tar.extractfile(m)
                digest = hashlib.sha256(f.read() if f else b"").hexdigest()
            out.append((m.name, m.type, m.mode, m.uid, m.gid, m.linkname, digest))
    return out


def _build(builder: Builder, isolation: str, tmp_path: Path) -> list[list[tuple]]:
    secret = tmp_path / "tok"
    secret.write_text("s3cret")
    result = builder.build(DOCKERFILE, isolation=isolation, secrets=(
        __import__("cloche.engine.options", fromlist=["SecretSpec"]).SecretSpec(
            id="tok", src=str(secret)),), no_cache=True)
    return [_entries(layer) for layer in result.image.layers]


def test_chroot_layers_equal_namespaces(builder: Builder, tmp_path: Path) -> None:
    chroot = _build(builder, "chroot", tmp_path)
    warnings = [w.message for w in builder.recorder.of(ev.BuildWarning)]
    assert sum("isolation=chroot" in w for w in warnings) == 1, warnings
    namespaces = _build(builder, "namespaces", tmp_path)
    assert not any("isolation=chroot" in w.message
                   for w in builder.recorder.of(ev.BuildWarning))
    assert len(chroot) == len(namespaces)
    for n, (a, b) in enumerate(zip(chroot, namespaces)):
        assert a == b, f"layer {n}"
    flat = {e[0]: e for layer in chroot for e in layer}
    assert "bin/.wh.true" in flat  # the deleted base file
    assert "keep/.wh.k" in flat  # the replaced directory, compared as BuildKit's differ does
    assert flat["app/sub/.wh.b"][0] == "app/sub/.wh.b"
    assert ("tmp/nobody.txt" in flat and flat["tmp/nobody.txt"][3] == 65534)


def test_auto_picks_namespaces_on_the_host(builder: Builder) -> None:
    builder.build("FROM busybox-test:1\nRUN echo hi > /x\n")
    assert not any("isolation=chroot" in w.message for w in builder.recorder.of(ev.BuildWarning))


def test_chroot_refuses_network_none(builder: Builder) -> None:
    with pytest.raises(ClocheError, match="--network=none cannot be enforced with "
                                          "--isolation=chroot"):
        builder.build("FROM busybox-test:1\nRUN true\n", isolation="chroot", network="none")
    with pytest.raises(ClocheError, match="--network=none cannot be enforced") as info:
        builder.build("FROM busybox-test:1\nRUN echo a\nRUN --network=none true\n",
                      isolation="chroot")
    assert info.value.line == 3
    with pytest.raises(ClocheError, match="--memory cannot be enforced"):
        builder.build("FROM busybox-test:1\n", isolation="chroot", memory="64m")


def test_chroot_failure_and_signal(builder: Builder) -> None:
    with pytest.raises(ClocheError, match="exit code: 3") as info:
        builder.build("FROM busybox-test:1\nRUN echo out; exit 3\n", isolation="chroot")
    assert "out" in (info.value.output_tail or "")
    with pytest.raises(ClocheError, match="killed by signal 15"):
        builder.build("FROM busybox-test:1\nRUN kill -TERM $$\n", isolation="chroot")


def test_chroot_failing_stage_kills_the_other_steps(builder: Builder) -> None:
    """The build's cancel scope ends a chroot step's whole process group: a stage that fails
    stops a sibling's long RUN (and the background process it started) at once."""
    import os
    import time

    marker = f"cloche-chroot-cancel-{os.getpid()}"
    dockerfile = ("FROM busybox-test:1 AS slow\n"
                  f"RUN sh -c 'sleep 300 & sleep 301; echo {marker}'\n"
                  "FROM busybox-test:1 AS bad\n"
                  "RUN sleep 1; exit 7\n"
                  "FROM busybox-test:1\n"
                  "COPY --from=slow /etc/passwd /a\n"
                  "COPY --from=bad /etc/passwd /b\n")
    started = time.monotonic()
    with pytest.raises(ClocheError, match="exit code: 7"):
        builder.build(dockerfile, isolation="chroot")
    assert time.monotonic() - started < 60
    time.sleep(0.5)
    left = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if cmd[:2] in ([b"sleep", b"300"], [b"sleep", b"301"]):
                left.append(pid)
    assert not left
