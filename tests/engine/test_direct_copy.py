"""COPY straight to the layer (build/direct_copy.py) writes what the usual copy writes.

The target stage's last file-writing COPY of a directory skips writing the files into the
step. Each case builds the same COPY twice: once as that last step (the direct path: the test
checks its marker is there, so it cannot quietly compare the usual path with itself) and once
followed by ``WORKDIR /`` (which makes the COPY an ordinary step, copied into the overlay).
The two layers must hold the same entries in the same order: path, type, mode, owner, size,
content, link target, xattrs and mtime; a directory the step created or wrote into gets the
build's time in both, so those mtimes are compared as "recent" only.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from cloche.engine.workspace import PENDING_LAYER
from cloche.layers.reader import iter_layer
from tests.engine.conftest import BASE, Builder

# name -> the Dockerfile's lines after FROM (the context is made by _context)
CASES = {
    "new destination under root": "COPY . /ctx",
    "new nested destination below existing /usr": "COPY src /usr/share/app/src",
    "into an existing empty directory (WORKDIR)": "WORKDIR /app\nCOPY src .",
    "chown by name and chmod": "COPY --chown=nobody --chmod=640 src /srv/src",
    "chown by numbers": "COPY --chown=1234:5678 src /srv/",
    "exclude": "COPY --exclude=*.log --exclude=sub/deep src /out",
    "from another stage keeps owners": None,  # built below (needs a first stage)
}


def _context(ctx: Path) -> None:
    src = ctx / "src"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(src / "run.sh", 0o4755)
    (src / "notes.log").write_text("log\n")
    (src / "sub" / "b.bin").write_bytes(random.Random(7).randbytes(70_000))
    (src / "sub" / "deep" / "c").write_text("c\n")
    os.link(src / "a.txt", src / "sub" / "hard-a")
    os.symlink("../a.txt", src / "sub" / "link-a")
    os.symlink("/nowhere", src / "dangling")
    os.mkfifo(src / "sub" / "fifo")
    os.setxattr(src / "a.txt", "user.note", b"kept")
    (src / "empty-dir").mkdir()
    (ctx / ".dockerignore").write_text("src/sub/deep/c\nDockerfile\n")
    # the same times in every context made (links and directories too): only what the step
    # itself touches may differ between two builds
    for path in [ctx, *ctx.rglob("*")]:
        os.utime(path, (1_500_000_000, 1_500_000_000), follow_symlinks=False)


def _entries(layer) -> list[tuple]:
    out = []
    with layer.open() as stream:
        for entry, content in iter_layer(stream):
            digest = hashlib.sha256(content.read()).hexdigest() if content is not None else ""
            out.append((entry.path, entry.type.name, oct(entry.mode), entry.uid, entry.gid,
                        entry.size, entry.linkname, entry.xattrs, digest, entry.mtime))
    return out


def _markers(root: Path) -> int:
    return len(list((root / "snapshots" / "steps").glob(f"*/{PENDING_LAYER}")))


def _dockerfiles(case: str) -> tuple[str, str]:
    """(the COPY as the target's last step, the same COPY followed by ``WORKDIR /``)."""
    if CASES[case] is None:
        first = (f"FROM {BASE} AS first\nCOPY src /stuff\n"
                 "RUN chown -R 42:43 /stuff && chmod 0700 /stuff/sub\n")
        body = "COPY --from=first /stuff /copied"
        return f"{first}FROM {BASE}\n{body}\n", f"{first}FROM {BASE}\n{body}\nWORKDIR /\n"
    body = CASES[case]
    return f"FROM {BASE}\n{body}\n", f"FROM {BASE}\n{body}\nWORKDIR /\n"


@pytest.mark.parametrize("case", list(CASES))
def test_copy_straight_to_the_layer_writes_what_the_usual_copy_writes(builder: Builder,
                                                                      case: str) -> None:
    direct_file, usual_file = _dockerfiles(case)
    started = int(time.time())
    results = {}
    for name, dockerfile in (("usual", usual_file), ("direct", direct_file)):
        before = _markers(builder.root)
        ctx = builder.context(dockerfile)
        _context(ctx)
        from cloche import api
        from cloche.engine.options import BuildOptions
        results[name] = api.build(BuildOptions(context=str(ctx), root=builder.root,
                                               no_cache=True), listener=builder.recorder)
        took_direct = _markers(builder.root) > before
        assert took_direct == (name == "direct"), f"{name} build: direct path {took_direct}"
    # the COPY's layer: the last one of the direct image; in the usual image the WORKDIR /
    # made no layer (it changes nothing), so it is the last one there too
    direct = _entries(results["direct"].image.layers[-1])
    usual = _entries(results["usual"].image.layers[-1])
    assert [e[:9] for e in direct] == [e[:9] for e in usual]
    for d, u in zip(direct, usual):
        if d[9] != u[9]:  # only directories the step made or wrote into: the build's time
            assert d[1] == "DIR" and d[9] >= started and u[9] >= started, (d, u)
    assert any(e[1] == "HARDLINK" for e in direct) or case.startswith(("exclude", "from"))


def test_a_later_build_unpacks_the_layer_before_stacking_on_it(builder: Builder) -> None:
    """The direct step's directory is empty until a later build needs its files: a cache hit
    on the COPY followed by a RUN, and a stage that copies from it."""
    first = f"FROM {BASE} AS app\nCOPY src /ctx\n"
    ctx = builder.context(first)
    _context(ctx)
    from cloche import api
    from cloche.engine.options import BuildOptions
    api.build(BuildOptions(context=str(ctx), root=builder.root))
    assert _markers(builder.root) == 1
    second = (first + "RUN cat /ctx/a.txt /ctx/sub/hard-a > /both && ls /ctx/sub > /listing\n"
              f"FROM {BASE}\nCOPY --from=app /both /listing /ctx/run.sh /out/\n")
    ctx2 = builder.context(second)
    _context(ctx2)
    from cloche.engine import events as ev
    from tests.engine.conftest import Recorder, layer_contents
    recorder = Recorder()
    result = api.build(BuildOptions(context=str(ctx2), root=builder.root), listener=recorder)
    cached = [e.step.text for e in recorder.of(ev.StepFinished) if e.cached]
    assert "COPY src /ctx" in cached  # the hit on the direct step, which had to be unpacked
    assert _markers(builder.root) == 0
    files = layer_contents(result.image.layers[-1])
    assert files["out/both"] == b"alpha\nalpha\n"
    assert files["out/listing"].split() == [b"b.bin", b"deep", b"fifo", b"hard-a", b"link-a"]
    assert files["out/run.sh"] == b"#!/bin/sh\necho hi\n"


@pytest.mark.parametrize("damage", ["corrupt marker", "killed after the rename",
                                    "killed before the rename"])
def test_a_damaged_unpack_is_a_miss_or_finished_never_a_wrong_result(builder: Builder,
                                                                     damage: str) -> None:
    """The store stays right when the marker is garbage (the step is a cache miss and runs
    again) or an unpack was killed (a leftover is removed, a finished one is kept)."""
    from cloche import api
    from cloche.engine import events as ev
    from cloche.engine.options import BuildOptions
    from cloche.layers.apply import apply_layer
    from tests.engine.conftest import Recorder, layer_contents

    first = f"FROM {BASE}\nCOPY src /ctx\n"
    ctx = builder.context(first)
    _context(ctx)
    built = api.build(BuildOptions(context=str(ctx), root=builder.root))
    (marker,) = (builder.root / "snapshots" / "steps").glob(f"*/{PENDING_LAYER}")
    upper = marker.parent / "upper"
    if damage == "corrupt marker":
        marker.write_text("sha256:not-a-digest\n")
    elif damage == "killed after the rename":
        with built.image.layers[-1].open() as stream:
            apply_layer(stream, upper)
    else:
        (marker.parent / "unpacking-1-1" / "half").mkdir(parents=True)
    second = first + "RUN cat /ctx/a.txt /ctx/sub/deep/c 2>&1 > /seen; true\n"
    ctx2 = builder.context(second)
    _context(ctx2)
    recorder = Recorder()
    result = api.build(BuildOptions(context=str(ctx2), root=builder.root), listener=recorder)
    cached = [e.step.text for e in recorder.of(ev.StepFinished) if e.cached]
    assert ("COPY src /ctx" in cached) == (damage != "corrupt marker")
    assert layer_contents(result.image.layers[-1])["seen"] == b"alpha\n"  # deep/c is ignored
    assert not marker.exists() or damage == "corrupt marker"
    assert not (marker.parent / "unpacking-1-1").exists()
