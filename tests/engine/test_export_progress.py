"""Issue 14: a build's image outputs report their bytes. ``-o type=oci|docker`` is BuildKit's
``exporting to oci image format`` vertex: each blob written into the archive or layout as
``BlobProgress`` (``exporting``), the archive as ``sending tarball``; ``--load`` sends the
archive to the Docker engine with its own progress. Real builds, a 5 MB layer of random bytes."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

from cloche import events as tev
from cloche.engine import events as ev
from cloche.engine.options import parse_output
from tests.engine.conftest import BASE, Builder
from tests.fixtures.services import Registry

BIG = f"FROM {BASE}\nRUN dd if=/dev/urandom of=/big bs=1024 count=5120 2>/dev/null\n"


def _exported(builder: Builder) -> dict[str, list[tev.BlobProgress]]:
    """The export's BlobProgress events by digest, each list checked: done grows to total,
    one final event, a bounded count (the 0.1 s throttle)."""
    by_digest: dict[str, list[tev.BlobProgress]] = {}
    for e in builder.recorder.of(tev.BlobProgress):
        assert e.action == "exporting"
        by_digest.setdefault(str(e.descriptor.digest), []).append(e)
    for events in by_digest.values():
        done = [e.done for e in events]
        assert done == sorted(done) and done[-1] == events[-1].total
        assert [e.done == e.total for e in events].count(True) == 1
        assert len(events) < 50
    return by_digest


def test_oci_archive_output_reports_every_blob(builder: Builder, tmp_path: Path) -> None:
    out = tmp_path / "image.tar"
    result = builder.build(BIG, outputs=(parse_output(f"type=oci,dest={out}"),))
    started = builder.recorder.of(ev.ExportStarted)
    finished = builder.recorder.of(ev.ExportFinished)
    assert [e.name for e in started] == ["exporting to oci image format"]
    assert len(finished) == 1 and finished[0].tarball and finished[0].size == out.stat().st_size
    blobs = _exported(builder)
    # the archive's blobs: the layers (compressed for distribution), config and manifest
    import tarfile

    with tarfile.open(out) as tar:
        members = {m.name.removeprefix("blobs/sha256/") for m in tar if m.name.startswith(
            "blobs/sha256/") and m.isfile()}
    assert {d.removeprefix("sha256:") for d in blobs} == members
    biggest = max(blobs.values(), key=lambda events: events[-1].done)
    assert biggest[-1].done > 5 << 20 and biggest[-1].reference == str(out)
    assert len(result.image.layers) == 2
    events = builder.recorder.events
    assert events.index(started[0]) < events.index(biggest[0]) \
        < events.index(biggest[-1]) < events.index(finished[0])


def test_layout_output_reports_its_blobs(builder: Builder, tmp_path: Path) -> None:
    out = tmp_path / "layout"
    builder.build(BIG, outputs=(parse_output(f"type=oci,dest={out},tar=false"),))
    finished = builder.recorder.of(ev.ExportFinished)
    assert len(finished) == 1 and not finished[0].tarball
    blobs = _exported(builder)
    assert {d.removeprefix("sha256:") for d in blobs} == \
        {p.name for p in (out / "blobs" / "sha256").iterdir()}


def test_plain_progress_of_an_oci_output(builder: Builder, tmp_path: Path) -> None:
    """``cloche build --progress=plain -o type=oci,dest=...``: BuildKit's exporter vertex with
    a byte line per blob and its done line, the tarball, DONE."""
    ctx = builder.context(BIG)
    out = tmp_path / "image.tar"
    run = builder.cli("build", "--progress=plain", "-o", f"type=oci,dest={out}", str(ctx))
    lines = run.stderr.splitlines()
    head = [line for line in lines if line.endswith(" exporting to oci image format")]
    assert len(head) == 1, run.stderr
    number = head[0].split(" ", 1)[0]
    mine = [line for line in lines if line.startswith(number + " ")]
    blob = re.compile(rf"^{number} sha256:[0-9a-f]{{64}} [0-9.]+[kMG]?B / [0-9.]+[kMG]?B"
                      r"( [0-9.]+s)?( done)?$")
    big = [line for line in mine if blob.match(line) and " / 5.2" in line]
    assert big and big[-1].endswith(" done"), run.stderr
    assert sum(line.endswith(" done") for line in big) == 1
    assert len(big) < 10  # at most one line a second per blob, its first and its done line
    assert re.match(rf"^{number} sending tarball [0-9.]+MB [0-9.]+s done$", mine[-2]), run.stderr
    assert re.match(rf"^{number} DONE [0-9.]+s$", mine[-1])
    assert lines.index(head[0]) < lines.index(big[-1]) < lines.index(mine[-1])


def test_load_reports_the_archive_sent_to_docker(builder: Builder, docker: str) -> None:
    name = f"cloche-engine-test/progress:{uuid.uuid4().hex[:8]}"
    try:
        builder.build(BIG, tags=(name,), outputs=(parse_output("type=docker"),))
    finally:
        subprocess.run([docker, "rmi", "-f", name], capture_output=True)
    assert [e.name for e in builder.recorder.of(ev.ExportStarted)] == \
        ["exporting to docker image format"]
    sent = [e for e in builder.recorder.of(tev.BlobProgress)
            if e.descriptor.media_type == ev.TARBALL]
    assert sent and sent[-1].done == sent[-1].total == sent[-1].descriptor.size > 5 << 20
    blobs = _exported(builder)
    assert len(blobs) == 2 + 2 + 1  # two layers, config, manifest, and the archive itself


def test_tty_view_shows_the_export(builder: Builder, tmp_path: Path) -> None:
    """The live view: the exporter runs as a row of its own with its blobs' bars, and ends
    as one ✔ line."""
    import io

    from rich.console import Console

    from cloche import api
    from cloche.cli._live import LiveRenderer
    from cloche.engine.options import BuildOptions

    buf = io.StringIO()
    renderer = LiveRenderer(Console(file=buf, force_terminal=True, width=200))
    ctx = builder.context(BIG)
    out = tmp_path / "image.tar"
    with renderer:
        api.build(BuildOptions(context=str(ctx), root=builder.root,
                               outputs=(parse_output(f"type=oci,dest={out}"),)),
                  listener=renderer)
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buf.getvalue()).replace("\r", "\n")
    done = [ln for ln in plain.splitlines() if ln.startswith("✔ exporting to oci image format")]
    assert len(done) == 1 and re.search(r"[0-9.]+s  6\.[0-9]+MB$", done[0]), plain


def test_plain_progress_of_a_base_image_pull(builder: Builder, registry: Registry,
                                             tmp_path: Path) -> None:
    """A build that pulls its base: the blobs' byte lines under the number its ``FROM`` step
    then gets, as BuildKit shows a pull under the FROM vertex."""
    import os

    from cloche.registry.push import push_manifest
    from cloche.store.blobs import BlobStore
    from tests.registry.images import layer_from_files, make_image

    blobs = BlobStore(tmp_path / "blobs")
    img = make_image(blobs, [layer_from_files({"big": os.urandom(5 << 20)})])
    base = f"{registry.host}/progress/base:{uuid.uuid4().hex[:8]}"
    push_manifest(base, img.manifest_bytes, img.media_type, blobs)
    ctx = builder.context(f"FROM {base}\nLABEL progress=1\n")
    run = builder.cli("build", "--progress=plain", str(ctx))
    lines = run.stderr.splitlines()
    [from_line] = [line for line in lines if line.endswith(f"[1/1] FROM {base}")]
    number = from_line.split(" ", 1)[0]
    layer = str(img.layer_digests[0])
    mine = [line for line in lines if line.startswith(f"{number} {layer} ")]
    assert mine and mine[-1].endswith(" done") and " / 5.2" in mine[-1], run.stderr
    assert lines.index(f"pulling {base}") < lines.index(mine[0]) < lines.index(from_line)


def test_plain_progress_of_a_build_push(builder: Builder, registry: Registry) -> None:
    """``--push``: the upload of each blob, under a vertex of the push."""
    name = f"{registry.host}/progress/pushed:{uuid.uuid4().hex[:8]}"
    ctx = builder.context(BIG)
    run = builder.cli("build", "--progress=plain", "--push", "-t", name, str(ctx))
    lines = run.stderr.splitlines()
    [head] = [line for line in lines if line.endswith(f" pushing {name}")]
    number = head.split(" ", 1)[0]
    big = [line for line in lines if line.startswith(f"{number} sha256:") and " / 5.2" in line]
    assert big and big[-1].endswith(" done"), run.stderr
    assert sum(line.endswith(" done") for line in big) == 1


def test_plain_numbers_after_a_pulled_base_have_no_gap(tmp_path: Path) -> None:
    """The FROM line takes its pull's number: the next step gets the next one."""
    import io

    from cloche.cli._progress import PlainRenderer
    from cloche.oci.descriptor import Descriptor
    from cloche.oci.digest import Digest

    out = io.StringIO()
    render = PlainRenderer(out)
    ref = "127.0.0.1:5000/x:1"
    desc = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", Digest.from_bytes(b"l"), 10)
    render(ev.Pulling(ref))
    meter = tev.BlobMeter(render, ref, desc, "pulling")
    meter.add(5)
    meter.finish()
    render(ev.BaseResolved(ev.StepRef(0, None, 1, 2, f"FROM {ref}", single=True), 0.5, False))
    run = ev.StepRef(0, None, 2, 2, "RUN true", single=True)
    render(ev.StepStarted(run))
    render(ev.StepFinished(run, 0.1))
    shown = re.sub(r" [0-9.]+s( done)?$", r"\1", out.getvalue(), flags=re.M)  # the timer
    assert shown.splitlines() == [
        f"pulling {ref}",
        f"#1 {desc.digest} 5B / 10B",
        f"#1 {desc.digest} 10B / 10B done",
        f"#1 [1/2] FROM {ref}", "#1 DONE",
        "#2 [2/2] RUN true", "#2 DONE"]
