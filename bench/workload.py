"""The inputs the benchmark builds: a busybox base rootfs, a multi-stage project, a big context,
and examples/go-hello with its two base images served by a registry on loopback.

Everything is generated here (no Docker Hub on this machine), from a fixed seed, so two runs
build the same bytes. The multi-stage project stands in for a compiled service: a ``deps``
stage (like ``go mod download``) from a lock file, a ``build`` stage that copies the sources
and "compiles" them into one binary-like file, and a ``scratch`` release stage that copies
only that file, the same graph as examples/multistage. The go project is the real thing: Go
compiles examples/go-hello in a golang image (examples/make-base-images.sh makes it, and a
distroless/static-like runtime image, from a cached debootstrap).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BASE_REF = "localhost/cloche-bench/busybox:1"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REGISTRY_BIN = "/usr/bin/docker-registry"

MULTISTAGE_DOCKERFILE = """\
ARG BASE
FROM ${BASE} AS deps
WORKDIR /src
COPY deps.lock ./
RUN mkdir -p /deps && for i in $(seq 1 64); do cat deps.lock; done > /deps/libdeps.a

FROM deps AS build
COPY . .
RUN mkdir -p /out \\
 && find . -name '*.c' | sort | xargs cat /deps/libdeps.a | gzip -6 > /out/app \\
 && sha256sum /out/app > /out/app.sha256 && chmod 0755 /out/app

FROM scratch AS release
COPY --from=build /out/app /app
COPY --from=build /out/app.sha256 /app.sha256
USER 65534:65534
ENTRYPOINT ["/app"]
"""

CONTEXT_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY . /ctx
"""

_WORDS = ("static const int table void return struct buffer length index value node "
          "layer digest context stage build image cache mount secret copy file").split()


def _text(rng: random.Random, size: int) -> bytes:
    """Source-like text of ``size`` bytes (compresses about as well as real code)."""
    out: list[str] = []
    n = 0
    while n < size:
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        line = f"    {line} = {rng.randint(0, 1 << 20)};\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def make_base_rootfs(root: Path) -> Path:
    """busybox-static with every applet linked, /etc/passwd and /etc/group, /tmp."""
    busybox = shutil.which("busybox") or "/usr/bin/busybox"
    for d in ("bin", "etc", "tmp", "root", "usr/bin", "var", "dev", "proc", "sys"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(busybox, root / "bin" / "busybox")
    listing = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in listing.stdout.split():
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return root


@dataclass(frozen=True)
class Project:
    """A generated build: its context directory, its Dockerfile (outside the context) and the
    files the rebuild scenarios touch."""

    name: str
    context: Path
    dockerfile: Path
    files: int
    size: int
    change_target: Path     # content edited in the one-file-changed rebuild
    touch_target: Path      # mtime bumped in the mtime-only rebuild
    build_args: tuple[tuple[str, str], ...] = (("BASE", BASE_REF),)
    pulls: tuple[str, ...] = ()  # registry images every tool pulls after its reset, untimed

    def change_one_file(self, generation: int) -> None:
        """Append a line: same path, new content (and size)."""
        with open(self.change_target, "ab") as f:
            f.write(b"// change %d\n" % generation)

    def touch_one_file(self) -> None:
        """Bump the mtime by a second, content untouched."""
        st = os.stat(self.touch_target)
        os.utime(self.touch_target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def make_multistage(root: Path, *, sources: int = 120, seed: int = 5) -> Project:
    rng = random.Random(seed)
    ctx = root / "context"
    ctx.mkdir(parents=True)
    (ctx / "deps.lock").write_bytes(_text(rng, 64 * 1024))
    size = 64 * 1024
    for i in range(sources):
        pkg = ctx / "pkg" / f"mod{i % 12:02d}"
        pkg.mkdir(parents=True, exist_ok=True)
        data = _text(rng, rng.randint(2_000, 24_000))
        (pkg / f"unit{i:03d}.c").write_bytes(data)
        size += len(data)
    (ctx / "main.c").write_bytes(_text(rng, 4_000))
    dockerfile = root / "Dockerfile"
    dockerfile.write_text(MULTISTAGE_DOCKERFILE)
    return Project("multistage", ctx, dockerfile, sources + 2, size + 4_000,
                   change_target=ctx / "main.c", touch_target=ctx / "pkg" / "mod03" / "unit003.c")


def make_big_context(root: Path, *, files: int = 40_000, seed: int = 40) -> Project:
    """``files`` files in nested directories (top/sub/leaf, ~25 per leaf directory), mostly
    small (100 B - 6 KB of text), a few big ones (4 x 8 MB of mixed text and random bytes)."""
    rng = random.Random(seed)
    ctx = root / "context"
    ctx.mkdir(parents=True)
    big = 4
    small = files - big
    per_dir = 25
    total = 0
    pool = _text(rng, 1 << 20)  # slices of one pool: fast to write, still text-like
    first = last = None
    for i in range(small):
        d = i // per_dir
        leaf = ctx / f"t{d // 400:02d}" / f"s{(d // 20) % 20:02d}" / f"l{d % 20:02d}"
        if i % per_dir == 0:
            leaf.mkdir(parents=True, exist_ok=True)
        n = rng.randint(100, 6_000)
        off = rng.randint(0, len(pool) - n)
        path = leaf / f"f{i:05d}.txt"
        path.write_bytes(pool[off:off + n])
        total += n
        first = first or path
        last = path
    blobs = ctx / "assets"
    blobs.mkdir()
    for j in range(big):
        data = (_text(rng, 4 << 20) + rng.randbytes(4 << 20)) if j % 2 else rng.randbytes(8 << 20)
        (blobs / f"blob{j}.bin").write_bytes(data)
        total += len(data)
    dockerfile = root / "Dockerfile"
    dockerfile.write_text(CONTEXT_DOCKERFILE)
    assert first is not None and last is not None
    return Project(f"context-{files // 1000}k", ctx, dockerfile, files, total,
                   change_target=last, touch_target=first)


FANIN_DOCKERFILE = "ARG BASE\n" + "".join(
    f"FROM ${{BASE}} AS {name}\nRUN sleep 3 && echo {name} > /{name}\n"
    for name in ("one", "two", "three", "four")
) + "FROM ${BASE}\n" + "".join(f"COPY --from={name} /{name} /{name}\n"
                               for name in ("one", "two", "three", "four")) + \
    "COPY note.txt /note.txt\n"

BIGLAYER_DOCKERFILE = """\
ARG BASE
FROM ${BASE} AS scratchpad
COPY data.txt /data.txt
RUN for i in $(seq 1 19); do cat /data.txt; done > /work.bin && md5sum /work.bin > /work.md5

FROM ${BASE}
COPY data.txt /data.txt
COPY --from=scratchpad /work.md5 /work.md5
RUN for i in $(seq 1 38); do cat /data.txt; done > /big.bin && rm /data.txt
COPY note.txt /note.txt
"""


def make_fanin(root: Path) -> Project:
    """Four independent stages that each wait 3 s (``sleep``), one final stage copying a file
    from each: what the scheduler does with stages that wait rather than compute."""
    ctx = root / "context"
    ctx.mkdir(parents=True)
    (ctx / "note.txt").write_text("fan-in\n")
    (ctx / "other.txt").write_text("not used\n")
    dockerfile = root / "Dockerfile"
    dockerfile.write_text(FANIN_DOCKERFILE)
    return Project("fan-in", ctx, dockerfile, 2, 16, change_target=ctx / "note.txt",
                   touch_target=ctx / "other.txt")


def make_biglayer(root: Path, *, seed: int = 8) -> Project:
    """A 16 MB text file; a first stage writes 19 copies (~305 MB) that no output ships and
    the final stage writes 38 (~610 MB) into the layer the image exports: what compressing
    layers nobody asks for costs."""
    rng = random.Random(seed)
    ctx = root / "context"
    ctx.mkdir(parents=True)
    (ctx / "data.txt").write_bytes(_text(rng, 16 << 20))
    (ctx / "note.txt").write_text("big layer\n")
    (ctx / "other.txt").write_text("not used\n")
    dockerfile = root / "Dockerfile"
    dockerfile.write_text(BIGLAYER_DOCKERFILE)
    return Project("big-layer", ctx, dockerfile, 3, (16 << 20) + 19,
                   change_target=ctx / "note.txt", touch_target=ctx / "other.txt")


def start_registry(root: Path) -> tuple[str, subprocess.Popen]:
    """Debian's docker-registry on a free loopback port, storing under ``root``: returns
    ``127.0.0.1:PORT`` and the process (the caller stops it). Plain HTTP, which Docker, cloche
    and (with ``--tls-verify=false``) buildah accept for a loopback address."""
    if not os.access(REGISTRY_BIN, os.X_OK):
        raise FileNotFoundError(f"{REGISTRY_BIN} not found (apt-get install docker-registry)")
    root.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2)
            return f"127.0.0.1:{port}", proc
        except urllib.error.HTTPError:
            return f"127.0.0.1:{port}", proc  # it answers
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("docker-registry did not start: "
                                   + (root / "registry.log").read_text()[-1000:]) from None
            time.sleep(0.1)


def make_go_base_images(registry: str, store: Path, cloche: str) -> tuple[str, str]:
    """examples/make-base-images.sh into a scratch cloche store, pushed to ``registry``:
    returns the golang and the runtime image's registry references. The debootstrap is cached
    in /var/cache/cloche-examples (the first run on a machine takes a few minutes)."""
    proc = subprocess.run([str(EXAMPLES / "make-base-images.sh"), "--cloche", cloche,
                           "--root", str(store), "--push", registry],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"make-base-images.sh exited {proc.returncode}:\n"
                           f"{proc.stderr[-2000:]}{proc.stdout[-500:]}")
    refs = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return refs["GOLANG_IMAGE"], refs["RUNTIME_IMAGE"]


def make_go(root: Path, golang_image: str, runtime_image: str) -> Project:
    """examples/go-hello as it is: Go compiles main.go (and the standard library, the first
    time) in the golang image with a ``RUN --mount=type=cache`` Go build cache, and the binary
    alone ships in the distroless/static-like image. The one-file change edits main.go (a
    comment appended: Go compiles it again); the mtime-only change touches main_test.go, which
    ``COPY *.go`` copies but the binary does not use. Cold means: build cache and Go build
    cache (the cache mount) empty, both base images already pulled and unpacked (bench/run.py
    pulls them after each reset, untimed), for every tool alike.

    The Dockerfile's ``# syntax=docker/dockerfile:1`` line is dropped in the copy: it makes
    BuildKit pull a frontend image from Docker Hub, and the engine's built-in frontend reads
    this Dockerfile the same (cloche and buildah ignore the line)."""
    example = EXAMPLES / "go-hello"
    ctx = root / "context"
    ctx.mkdir(parents=True)
    size = files = 0
    for src in sorted(example.iterdir()):
        if src.is_file() and src.name != "Dockerfile":
            shutil.copy2(src, ctx / src.name)
            size += src.stat().st_size
            files += 1
    lines = (example / "Dockerfile").read_text().splitlines(keepends=True)
    dockerfile = root / "Dockerfile"
    dockerfile.write_text("".join(line for line in lines if not line.startswith("# syntax=")))
    return Project("go-hello", ctx, dockerfile, files, size, change_target=ctx / "main.go",
                   touch_target=ctx / "main_test.go",
                   build_args=(("GOLANG_IMAGE", golang_image), ("RUNTIME_IMAGE", runtime_image)),
                   pulls=(golang_image, runtime_image))


def make_export_tree(root: Path, target_bytes: int, *, seed: int = 200) -> tuple[int, int]:
    """A tree of about ``target_bytes`` for the layer export test: real files of this machine
    (/usr/lib, /usr/share: binaries, libraries, text) copied in, topped up with generated text.
    Returns (files, bytes)."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    total = files = 0
    for top in ("/usr/lib/x86_64-linux-gnu", "/usr/share", "/usr/bin", "/usr/lib", "/usr/libexec"):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                src = os.path.join(dirpath, name)
                if total >= target_bytes:
                    return files, total
                try:
                    if not os.path.isfile(src) or os.path.islink(src):
                        continue
                    size = os.path.getsize(src)
                    if size > 32 << 20:
                        continue
                    dst = root / src.lstrip("/")
                    if dst.exists():
                        continue
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
                except OSError:
                    continue
                total += size
                files += 1
    filler = root / "filler"
    filler.mkdir(exist_ok=True)
    while total < target_bytes:
        data = _text(rng, 1 << 20)
        (filler / f"f{files}.txt").write_bytes(data)
        total += len(data)
        files += 1
    return files, total
