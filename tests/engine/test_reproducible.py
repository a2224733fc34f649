"""Reproducible images: SOURCE_DATE_EPOCH and ``rewrite-timestamp`` (engine/reproducible.py).

Two "machines" are two fresh stores and two copies of the context whose files were written at
different times (as two checkouts are). With the same SOURCE_DATE_EPOCH, ``--no-cache`` and
``rewrite-timestamp=true`` they must give byte-identical OCI archives and one manifest digest.
BuildKit v0.8 (the Docker engine's here) has neither SOURCE_DATE_EPOCH nor rewrite-timestamp,
so these are checked against BuildKit's documented rules, not run side by side.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from cloche.engine.options import parse_output
from cloche.oci.mutate import rfc3339
from cloche.store import Store
from tests.engine.conftest import BASE, Builder, layer_contents, layer_members
from tests.fixtures.golang import GO_HELLO, GoBaseImages

pytestmark = pytest.mark.root

EPOCH = 1_700_000_000
STAMP = "2023-11-14T22:13:20Z"  # EPOCH in RFC 3339
OLD = 1_600_000_000  # a context file older than the epoch keeps its time

DOCKERFILE = f"""\
FROM {BASE}
WORKDIR /app/work
COPY hello.txt old.txt ./
COPY sub /app/sub
RUN echo built > /app/built.txt && mkdir -p /data/deep && echo x > /data/deep/f \\
    && ln -s built.txt /app/link && ln /app/built.txt /app/hard
COPY <<EOF /app/heredoc.txt
made by a heredoc
EOF
RUN rm /app/work/hello.txt && sleep 1
ARG SOURCE_DATE_EPOCH
RUN echo "epoch=$SOURCE_DATE_EPOCH" > /app/epoch.txt
ENV DONE=1
"""
FILES = {"hello.txt": "hello\n", "old.txt": "old\n", "sub/a.txt": "a\n", "sub/b/c.txt": "c\n"}


def _machine(builder: Builder, template_store: Path, name: str) -> Builder:
    """Another machine: a fresh copy of the template store (the base image only)."""
    home = builder.dir / name
    home.mkdir()
    root = home / "store"
    shutil.copytree(template_store, root, symlinks=True)
    return Builder(home, root)


def _checkout(builder: Builder, written: float) -> Path:
    """The context as a checkout made at ``written`` (old.txt is older than the epoch)."""
    ctx = builder.context(DOCKERFILE, FILES)
    for path in ctx.rglob("*"):
        os.utime(path, (written, written), follow_symlinks=False)
    os.utime(ctx / "old.txt", (OLD, OLD))
    return ctx


def _build(builder: Builder, ctx: Path, *outputs: str, no_cache: bool = True,
           **options: object):
    from cloche import api
    from cloche.engine.options import BuildOptions

    opts = BuildOptions(context=str(ctx), root=builder.root, no_cache=no_cache,
                        outputs=tuple(parse_output(o) for o in outputs),
                        **options)  # type: ignore[arg-type]
    return api.build(opts, listener=builder.recorder)


def _archive_manifest(archive: Path) -> tuple[dict, dict, tarfile.TarFile]:
    tar = tarfile.open(archive)
    index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.load(tar.extractfile(f"blobs/sha256/{digest}"))  # type: ignore[arg-type]
    return index, manifest, tar


def test_two_fresh_stores_give_the_same_archive_and_digest(builder: Builder,
                                                           template_store: Path) -> None:
    a = _machine(builder, template_store, "a")
    b = _machine(builder, template_store, "b")
    now = time.time()
    out_a, out_b = a.dir / "out.tar", b.dir / "out.tar"
    args = {"SOURCE_DATE_EPOCH": str(EPOCH)}
    first = _build(a, _checkout(a, now - 3600), f"type=oci,dest={out_a},rewrite-timestamp=true",
                   "type=image,name=repro:1,rewrite-timestamp=true", build_args=args)
    second = _build(b, _checkout(b, now - 60), f"type=oci,dest={out_b},rewrite-timestamp=true",
                    "type=image,name=repro:1,rewrite-timestamp=true", build_args=args)
    assert out_a.read_bytes() == out_b.read_bytes()
    assert first.digest == second.digest
    stored_a, stored_b = a.store.image("repro:1"), b.store.image("repro:1")
    assert stored_a.digest == stored_b.digest == first.digest
    # what the archive holds is that image, its layers compressed for distribution
    _, manifest, tar = _archive_manifest(out_a)
    assert manifest["config"]["digest"] == str(stored_a.config_digest)
    new = manifest["layers"][len(Store.open(template_store).image(BASE).layers):]
    assert new and all(layer["annotations"]["buildkit/rewritten-timestamp"] == str(EPOCH)
                       for layer in new)
    tar.close()


def test_history_and_created_are_the_epoch_and_the_base_keeps_its_own(builder: Builder) -> None:
    base = builder.store.image(BASE)
    result = builder.build(DOCKERFILE, FILES, source_date_epoch=EPOCH)  # the library option
    config = result.image.config
    assert config.created == STAMP == rfc3339(EPOCH)
    kept = len(base.config.history)
    assert config.history[:kept] == base.config.history
    assert config.history[kept:] and all(h.created == STAMP for h in config.history[kept:])
    # the option is also the build arg an ARG reads
    written = {k: v for layer in result.image.layers for k, v in layer_contents(layer).items()}
    assert written["app/epoch.txt"] == f"epoch={EPOCH}\n".encode()
    # without rewrite-timestamp the layers keep the build's own times (BuildKit's rule)
    new_layers = result.image.layers[len(base.layers):]
    times = [m.mtime for layer in new_layers for m in layer_members(layer)]
    assert max(times) > EPOCH
    assert result.image.layers[:len(base.layers)] == base.layers


def test_rewrite_timestamp_clamps_only_the_layers_of_the_build(builder: Builder) -> None:
    base = builder.store.image(BASE)
    ctx = _checkout(builder, time.time())
    plain = _build(builder, ctx, "type=image,name=plain:1", build_args={
        "SOURCE_DATE_EPOCH": str(EPOCH)})
    rewritten = _build(builder, ctx, "type=image,name=clamped:1,rewrite-timestamp=true",
                       build_args={"SOURCE_DATE_EPOCH": str(EPOCH)})
    image = builder.store.image("clamped:1")
    assert image.digest == rewritten.digest != plain.digest
    count = len(base.layers)
    assert image.layers[:count] == base.layers  # the base's blobs, untouched
    assert image.config.diff_ids[:count] == base.config.diff_ids
    new = image.layers[count:]
    assert all(x.diff_id != y.diff_id for x, y in zip(new, plain.image.layers[count:]))
    members = {m.name: m for layer in new for m in layer_members(layer)}
    assert all(m.mtime <= EPOCH for m in members.values())
    assert members["app/work/old.txt"].mtime == OLD  # older than the epoch: kept
    assert members["app/built.txt"].mtime == EPOCH
    assert members["app/work/.wh.hello.txt"].mtime == EPOCH
    # the rewritten layers are what a flattened image holds, and the store can build on it
    again = builder.build("FROM clamped:1\nRUN cat /app/built.txt /app/heredoc.txt\n")
    assert again.image.layers[:len(image.layers)] == image.layers


def test_cloche_build_takes_the_environment_variable(builder: Builder) -> None:
    ctx = builder.context(DOCKERFILE, FILES)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
    builder.cli("build", "-t", "fromenv:1", "--progress", "plain", str(ctx), env=env)
    config = builder.store.image("fromenv:1").config
    assert config.created == STAMP
    # --build-arg beats the environment, as in buildx
    builder.cli("build", "-t", "fromarg:1", "--build-arg", f"SOURCE_DATE_EPOCH={OLD}",
                str(ctx), env=env)
    assert builder.store.image("fromarg:1").config.created == rfc3339(OLD)
    bad = builder.cli("build", "-t", "bad:1", str(ctx), check=False,
                      env={**os.environ, "SOURCE_DATE_EPOCH": "yesterday"})
    assert bad.returncode != 0
    assert "invalid SOURCE_DATE_EPOCH: yesterday" in bad.stderr


def test_a_global_arg_default_is_the_epoch(builder: Builder) -> None:
    result = builder.build(f"ARG SOURCE_DATE_EPOCH={OLD}\n" + DOCKERFILE, FILES)
    assert result.image.config.created == rfc3339(OLD)
    overridden = builder.build(f"ARG SOURCE_DATE_EPOCH={OLD}\n" + DOCKERFILE, FILES,
                               build_args={"SOURCE_DATE_EPOCH": str(EPOCH)})
    assert overridden.image.config.created == STAMP


def test_the_epoch_wins_over_cached_history_times_and_keys_what_depends_on_it(
        builder: Builder) -> None:
    from cloche.engine import events as ev

    ctx = builder.context(f"""\
FROM {BASE}
COPY hello.txt /app/
RUN echo built > /app/built.txt
WORKDIR /w
ARG SOURCE_DATE_EPOCH
RUN echo "$SOURCE_DATE_EPOCH" > /app/epoch.txt
""", FILES)

    def build(**kw: object) -> tuple[object, set[str]]:
        builder.recorder = type(builder.recorder)()
        result = _build(builder, ctx, no_cache=False, **kw)
        hits = {e.step.text.split()[0] + str(e.step.step)
                for e in builder.recorder.of(ev.StepFinished) if e.cached}
        return result, hits

    first, _ = build()
    assert first.image.config.created != STAMP
    second, hits = build(source_date_epoch=EPOCH)
    # COPY and RUN do not read the epoch: cache hits; WORKDIR makes its directory at the
    # epoch (BuildKit's mkdir), so it and what follows it run again
    assert hits == {"COPY2", "RUN3"}
    kept = len(builder.store.image(BASE).config.history)
    history = second.image.config.history  # type: ignore[attr-defined]
    assert all(h.created == STAMP for h in history[kept:])
    workdir = {m.name: m for m in layer_members(second.image.layers[-2])}  # type: ignore[attr-defined]
    assert workdir["w"].mtime == EPOCH
    third, hits = build(source_date_epoch=EPOCH)
    assert hits == {"COPY2", "RUN3", "WORKDIR4", "RUN5"}  # as BuildKit numbers them
    assert third.image.config_bytes == second.image.config_bytes  # type: ignore[attr-defined]
    _, hits = build(source_date_epoch=EPOCH + 1)
    assert hits == {"COPY2", "RUN3"}


def test_local_and_tar_outputs_write_every_file_at_the_epoch(builder: Builder) -> None:
    ctx = builder.context(DOCKERFILE, FILES)
    tar_out, local_out = builder.dir / "fs.tar", builder.dir / "fs"
    _build(builder, ctx, f"type=tar,dest={tar_out}", f"type=local,dest={local_out}",
           build_args={"SOURCE_DATE_EPOCH": str(EPOCH)})
    with tarfile.open(tar_out) as tar:
        assert {m.mtime for m in tar} == {EPOCH}
    for path in [local_out / "app", local_out / "app" / "built.txt", local_out / "bin"]:
        assert os.lstat(path).st_mtime == EPOCH, path


def test_an_output_source_date_epoch_clamps_that_output(builder: Builder) -> None:
    ctx = builder.context(DOCKERFILE, FILES)
    out = builder.dir / "out.tar"
    result = _build(builder, ctx, f"type=oci,dest={out},source-date-epoch={EPOCH},"
                                  "rewrite-timestamp=true", "type=image,name=now:1")
    _, manifest, tar = _archive_manifest(out)
    config = json.load(tar.extractfile(  # type: ignore[arg-type]
        "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]))
    tar.close()
    assert config["created"] == STAMP
    base = builder.store.image(BASE).config.history
    assert all(h["created"] == STAMP for h in config["history"][len(base):])
    assert builder.store.image("now:1").config.created != STAMP  # the other output: as built
    assert result.image.config.created == STAMP  # the result names the rewritten image
    # rewrite-timestamp without any epoch does nothing, with BuildKit's warning
    from cloche.engine import events as ev

    plain = _build(builder, ctx, "type=image,name=nothing:1,rewrite-timestamp=true")
    assert any("no source-date-epoch" in w.message for w in builder.recorder.of(ev.BuildWarning))
    assert plain.image.config.created != STAMP


@pytest.mark.slow
@pytest.mark.registry
@pytest.mark.timeout(3600)
def test_the_go_example_built_twice_gives_one_digest(go_base_images: GoBaseImages,
                                                    tmp_path: Path) -> None:
    """examples/go-hello in two fresh stores (each pulls its bases from the registry), from
    two copies of the example written at different times."""
    import sys

    digests, archives = [], []
    for n in (1, 2):
        ctx = tmp_path / f"go-hello-{n}"
        shutil.copytree(GO_HELLO, ctx)
        stamp = time.time() - 1000 * n
        for path in [ctx, *ctx.rglob("*")]:
            os.utime(path, (stamp, stamp))
        archive = tmp_path / f"go-{n}.tar"
        proc = subprocess.run(
            [sys.executable, "-m", "cloche.cli.main", "build", "--root",
             str(tmp_path / f"store-{n}"), "--no-cache", "--progress", "plain",
             *go_base_images.build_args, "--metadata-file", str(tmp_path / f"meta-{n}.json"),
             "-o", f"type=oci,dest={archive},rewrite-timestamp=true", str(ctx)],
            capture_output=True, text=True, timeout=1800,
            env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)})
        assert proc.returncode == 0, proc.stderr
        meta = json.loads((tmp_path / f"meta-{n}.json").read_text())
        digests.append(meta["containerimage.digest"])
        archives.append(archive.read_bytes())
    assert digests[0] == digests[1]
    assert archives[0] == archives[1]
    with tarfile.open(fileobj=io.BytesIO(archives[0])) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(tar.extractfile(  # type: ignore[arg-type]
            "blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))
        config = json.load(tar.extractfile(  # type: ignore[arg-type]
            "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]))
    assert config["created"] == STAMP


# A Debian image whose RUN steps write files the way real builds do: useradd (shadow's
# "last changed" day, which useradd takes from SOURCE_DATE_EPOCH when the step has it),
# update-alternatives, ldconfig, dpkg installing a package. What these programs write with the
# time of the build or this store's inode numbers (dpkg's and update-alternatives' logs,
# ldconfig's aux cache) differs from one build to the next whatever the builder does, so the
# steps remove it, as a reproducible Dockerfile must (docs/reproducible.md).
DEBIAN_DOCKERFILE = """\
ARG BASE
FROM $BASE
ARG SOURCE_DATE_EPOCH
RUN useradd --create-home --shell /bin/bash app && groupadd builders \\
    && usermod -aG builders app && mkdir -p /srv/app && echo hello > /srv/app/hello.txt \\
    && ln -s hello.txt /srv/app/link \\
    && update-alternatives --install /usr/local/bin/hello hello /bin/true 10 && ldconfig \\
    && rm /var/log/alternatives.log /var/cache/ldconfig/aux-cache
COPY pkg /tmp/pkg
RUN dpkg-deb --root-owner-group --build /tmp/pkg /tmp/hello.deb && dpkg -i /tmp/hello.deb \\
    && rm -r /tmp/pkg /tmp/hello.deb /var/log/dpkg.log
USER app
WORKDIR /home/app
RUN mkdir -p .config/app && echo "epoch $SOURCE_DATE_EPOCH" > .config/app/stamp
"""
DEBIAN_FILES = {
    "pkg/DEBIAN/control": "Package: hello-repro\nVersion: 1.0\nArchitecture: all\n"
                          "Maintainer: cloche tests <tests@example.invalid>\n"
                          "Description: installed by dpkg in a reproducible build\n",
    "pkg/usr/share/hello-repro/hi.txt": "hi\n",
}


@pytest.mark.slow
@pytest.mark.registry
@pytest.mark.timeout(1800)
def test_a_debian_image_with_run_steps_built_twice_gives_one_digest(
        go_base_images: GoBaseImages, tmp_path: Path) -> None:
    """Issue 12: a Debian bookworm base (the examples' debootstrap, from the registry) in two
    fresh stores, RUN steps that add a user, install a package with dpkg and write files, the
    context written at different times: ``--no-cache`` with SOURCE_DATE_EPOCH and
    ``rewrite-timestamp=true`` gives byte-identical archives and one manifest digest."""
    import sys

    digests, archives = [], []
    for n in (1, 2):
        ctx = tmp_path / f"ctx-{n}"
        for name, text in {"Dockerfile": DEBIAN_DOCKERFILE, **DEBIAN_FILES}.items():
            (ctx / name).parent.mkdir(parents=True, exist_ok=True)
            (ctx / name).write_text(text)
        stamp = time.time() - 1000 * n
        for path in [ctx, *ctx.rglob("*")]:
            os.utime(path, (stamp, stamp))
        archive = tmp_path / f"debian-{n}.tar"
        proc = subprocess.run(
            [sys.executable, "-m", "cloche.cli.main", "build", "--root",
             str(tmp_path / f"store-{n}"), "--no-cache", "--progress", "plain",
             "--build-arg", f"BASE={go_base_images.golang}",
             "--metadata-file", str(tmp_path / f"meta-{n}.json"),
             "-o", f"type=oci,dest={archive},rewrite-timestamp=true", str(ctx)],
            capture_output=True, text=True, timeout=900,
            env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)})
        assert proc.returncode == 0, proc.stderr
        meta = json.loads((tmp_path / f"meta-{n}.json").read_text())
        digests.append((meta["containerimage.digest"], meta["containerimage.config.digest"]))
        archives.append(archive.read_bytes())
        if n == 1:
            time.sleep(1.1)  # the second build's files are written in another second
    assert digests[0] == digests[1]
    assert archives[0] == archives[1]
    _, manifest, tar = _archive_manifest(tmp_path / "debian-1.tar")  # one manifest digest
    assert manifest["config"]["digest"] == digests[0][1]
    files: dict[str, tarfile.TarInfo] = {}
    content: dict[str, bytes] = {}
    new = [layer for layer in manifest["layers"]
           if layer.get("annotations", {}).get("buildkit/rewritten-timestamp") == str(EPOCH)]
    assert len(new) >= 4 and manifest["layers"][-len(new):] == new  # 3 RUN, COPY (+WORKDIR)
    for layer in new:
        blob = tar.extractfile("blobs/sha256/" + layer["digest"].split(":")[1])
        with tarfile.open(fileobj=io.BytesIO(blob.read())) as layer_tar:  # type: ignore[union-attr]
            for member in layer_tar:
                files[member.name] = member
                if member.isfile():
                    content[member.name] = layer_tar.extractfile(member).read()  # type: ignore[union-attr]
    tar.close()
    assert all(m.mtime <= EPOCH for m in files.values())
    # the steps did their work: the user (shadow's day of last change is the epoch's day, so
    # SOURCE_DATE_EPOCH reached the RUN step), the package, the alternative, the user's file
    assert f"app:!:{EPOCH // 86400}:" in content["etc/shadow"].decode()
    assert "builders:x:" in content["etc/group"].decode()
    assert "hello-repro" in content["var/lib/dpkg/status"].decode()
    assert content["usr/share/hello-repro/hi.txt"] == b"hi\n"
    assert files["usr/local/bin/hello"].issym()
    assert content["home/app/.config/app/stamp"] == f"epoch {EPOCH}\n".encode()
    assert files["home/app/.config/app/stamp"].uid == files["home/app"].uid != 0


def test_rewriting_keeps_everything_but_the_newer_times(tmp_path: Path) -> None:
    """The reader -> writer round trip of a rewrite loses nothing: long and non-ASCII names,
    xattrs, links, a FIFO, an empty file; only mtimes newer than the epoch change."""
    from dataclasses import replace

    from cloche.compression import Compression
    from cloche.engine.reproducible import rewrite_layer
    from cloche.layers.reader import iter_layer
    from cloche.layers.tree import write_tree
    from cloche.oci.image import Layer

    tree = tmp_path / "tree"
    deep = tree / ("d" * 120) / "sub"
    deep.mkdir(parents=True)
    (deep / "файл.txt").write_text("unicode\n")
    (tree / "empty").touch()
    (tree / "data").write_bytes(os.urandom(70_000))
    os.link(tree / "data", tree / "hard")
    os.symlink("data", tree / "link")
    os.mkfifo(tree / "fifo")
    os.setxattr(tree / "data", "user.note", b"\x00\xffbinary")
    os.utime(tree / "empty", (OLD, OLD))
    store = Store.open(tmp_path / "store")
    for compression in (Compression.NONE, Compression.GZIP):
        with store.blobs.writer() as sink:
            blob = write_tree(tree, sink, compression)
        layer = Layer(blob.digest, blob.diff_id, blob.size, blob.media_type, store.blobs)
        same = rewrite_layer(store, layer, 2**40, annotate=True)  # nothing is newer
        assert same.diff_id == layer.diff_id and same.media_type == layer.media_type
        clamped = rewrite_layer(store, layer, EPOCH, annotate=False)
        assert clamped.diff_id != layer.diff_id

        def entries(x: Layer) -> list:
            with x.open() as stream:
                return [e for e, _ in iter_layer(stream)]

        before, after = entries(layer), entries(clamped)
        assert [replace(e, mtime=min(e.mtime, EPOCH)) for e in before] == after
        assert {e.path: e.mtime for e in after}["empty"] == OLD
        again = rewrite_layer(store, layer, EPOCH, annotate=False)  # remembered: no new blob
        assert again == clamped


@pytest.mark.parametrize("value", ["abc", "1.5", "0x10", " 17", "99999999999999"])
def test_an_invalid_epoch_is_refused_before_the_build(value: str) -> None:
    from cloche.engine.options import BuildOptions
    from cloche.errors import ConfigError

    with pytest.raises(ConfigError, match="invalid SOURCE_DATE_EPOCH"):
        BuildOptions(build_args={"SOURCE_DATE_EPOCH": value})
    assert BuildOptions(build_args={"SOURCE_DATE_EPOCH": ""}).source_date_epoch is None
    assert BuildOptions(build_args={"SOURCE_DATE_EPOCH": "+017"}).build_args == {
        "SOURCE_DATE_EPOCH": "17"}
    assert BuildOptions(source_date_epoch=EPOCH).build_args == {"SOURCE_DATE_EPOCH": str(EPOCH)}
