"""Where `cloche build` puts the image, read back by other tools: the store (`cloche images`),
OCI and docker archives (skopeo, `docker load` + `docker run`), a directory, a tar, a registry
(skopeo); the id and metadata files; stdin for the Dockerfile or the context; progress modes."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from cloche import api
from cloche.cli._live import LiveRenderer
from cloche.engine.options import BuildOptions
from tests.engine.conftest import BASE, Builder
from tests.fixtures.services import require_tool

APP = (f"FROM {BASE} AS build\n"
       "RUN printf '#!/bin/sh\\necho hello from cloche \"$@\"\\n' > /hello && chmod 755 /hello\n"
       f"FROM {BASE}\n"
       "COPY --from=build /hello /usr/bin/hello\n"
       'ENTRYPOINT ["/usr/bin/hello"]\n'
       'CMD ["world"]\n')
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def test_default_output_is_the_store_under_its_tags(builder: Builder) -> None:
    ctx = builder.context(APP)
    builder.cli("build", "-t", "outputs/app:1.0", "-t", "outputs/app:latest", str(ctx))
    listing = builder.cli("images", "--format", "json").stdout
    rows = [json.loads(line) for line in listing.splitlines()]
    tags = {(r["Repository"], r["Tag"]) for r in rows}
    assert {("outputs/app", "1.0"), ("outputs/app", "latest")} <= tags
    stored = builder.store.image("outputs/app:1.0")
    assert stored.config.entrypoint == ("/usr/bin/hello",)


def test_oci_archive_reads_with_skopeo(builder: Builder, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    ctx = builder.context(APP)
    out = tmp_path / "image.tar"
    builder.cli("build", "-o", f"type=oci,dest={out}", str(ctx))
    info = json.loads(subprocess.run([skopeo, "inspect", f"oci-archive:{out}"], check=True,
                                     capture_output=True, text=True).stdout)
    assert len(info["Layers"]) == 2
    config = json.loads(subprocess.run([skopeo, "inspect", "--config", f"oci-archive:{out}"],
                                       check=True, capture_output=True, text=True).stdout)
    assert config["config"]["Entrypoint"] == ["/usr/bin/hello"]


def test_docker_archive_loads_and_runs(builder: Builder, docker: str, tmp_path: Path) -> None:
    ctx = builder.context(APP)
    out = tmp_path / "docker.tar"
    name = f"cloche-engine-test/hello:{uuid.uuid4().hex[:8]}"
    builder.cli("build", "-t", name, "-o", f"type=docker,dest={out}", str(ctx))
    subprocess.run([docker, "load", "-i", str(out)], check=True, capture_output=True)
    try:
        run = subprocess.run([docker, "run", "--rm", "--network=none", name], check=True,
                             capture_output=True, text=True, timeout=120)
        assert run.stdout == "hello from cloche world\n"
        run = subprocess.run([docker, "run", "--rm", "--network=none", name, "again"],
                             check=True, capture_output=True, text=True, timeout=120)
        assert run.stdout == "hello from cloche again\n"
    finally:
        subprocess.run([docker, "rmi", "-f", name], capture_output=True)


def test_local_directory_output(builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context(APP)
    out = tmp_path / "rootfs"
    builder.cli("build", "-o", f"type=local,dest={out}", str(ctx))
    assert (out / "usr/bin/hello").read_text().startswith("#!/bin/sh")
    assert (out / "bin/busybox").is_file()


def test_tar_output(builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context(APP)
    out = tmp_path / "rootfs.tar"
    builder.cli("build", "-o", f"type=tar,dest={out}", str(ctx))
    with tarfile.open(out) as tar:
        names = {m.name.lstrip("./").rstrip("/") for m in tar.getmembers()}
        assert not any(".wh." in n for n in names)
        member = next(m for m in tar.getmembers() if m.name.lstrip("./") == "usr/bin/hello")
        assert member.mode & 0o777 == 0o755
    assert {"usr/bin/hello", "bin/busybox", "etc/passwd"} <= names


def test_tar_output_to_stdout(builder: Builder) -> None:
    ctx = builder.context(APP)
    result = builder.cli("build", "--progress", "quiet", "-o", "-", str(ctx), input=b"")
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
        assert "usr/bin/hello" in {m.name.lstrip("./") for m in tar.getmembers()}


@pytest.fixture
def skopeo() -> str:
    return require_tool("skopeo")


def _inspect(skopeo: str, ref: str) -> dict:
    return json.loads(subprocess.run(
        [skopeo, "inspect", "--tls-verify=false", f"docker://{ref}"], check=True,
        capture_output=True, text=True, timeout=60).stdout)


def test_push_and_image_output_to_a_registry(builder: Builder, registry, skopeo: str) -> None:
    ctx = builder.context(APP)
    pushed = f"{registry.host}/engine/pushed:1"
    named = f"{registry.host}/engine/named:1"
    builder.cli("build", "--push", "-t", pushed, str(ctx))
    builder.cli("build", "-o", f"type=image,name={named},push=true", str(ctx))
    for ref in (pushed, named):
        info = _inspect(skopeo, ref)
        assert len(info["Layers"]) == 2
        assert info["Digest"] == str(builder.store.image(ref).digest)


def test_push_without_a_name_is_a_clear_error(builder: Builder) -> None:
    ctx = builder.context(APP)
    result = builder.cli("build", "--push", str(ctx), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--push" in result.stderr


def test_iidfile_and_metadata_file(builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context(APP)
    iid, meta = tmp_path / "iid", tmp_path / "meta.json"
    builder.cli("build", "-t", "meta/app:1", "--iidfile", str(iid), "--metadata-file",
                str(meta), str(ctx))
    stored = builder.store.image("meta/app:1")
    assert iid.read_text().strip() == str(stored.config_digest)
    data = json.loads(meta.read_text())
    assert data["containerimage.digest"] == str(stored.digest)
    assert data["containerimage.config.digest"] == str(stored.config_digest)
    assert "meta/app:1" in data["image.name"]


def test_dockerfile_from_stdin(builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context(None, {"data.txt": "from the context"})
    out = tmp_path / "out"
    builder.cli("build", "-f", "-", "-o", f"type=local,dest={out}", str(ctx),
                input=f"FROM {BASE}\nCOPY data.txt /data.txt\n")
    assert (out / "data.txt").read_text() == "from the context"


def test_context_tar_from_stdin(builder: Builder, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", f"FROM {BASE}\nCOPY in.txt /in.txt\n".encode()),
                           ("in.txt", b"piped context")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    builder.cli("build", "-o", f"type=local,dest={out}", "-", input=buf.getvalue())
    assert (out / "in.txt").read_text() == "piped context"


def test_progress_quiet_prints_only_the_image_id(builder: Builder) -> None:
    ctx = builder.context(APP)
    result = builder.cli("build", "--progress", "quiet", "-t", "quiet/app:1", str(ctx))
    assert DIGEST.match(result.stdout.strip()), result.stdout
    assert result.stdout.count("\n") == 1
    assert result.stderr == ""
    # as `docker build -q`: the image ID, the config's digest
    assert result.stdout.strip() == str(builder.store.image("quiet/app:1").config_digest)
    again = builder.cli("build", "-q", "-t", "quiet/app:2", str(ctx))  # the short flag
    assert again.stdout == result.stdout and again.stderr == ""
    by_env = builder.cli("build", "-t", "quiet/app:3", str(ctx),  # as buildx reads it
                         env={**os.environ, "BUILDKIT_PROGRESS": "quiet"})
    assert by_env.stdout == result.stdout and by_env.stderr == ""


def test_progress_plain_prints_step_lines(builder: Builder) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN echo visible-output-line\nRUN true\n")
    result = builder.cli("build", "--progress", "plain", str(ctx))
    err = result.stderr
    # BuildKit's plain form: one-stage Dockerfiles name no stage, FROM of an image is step 1,
    # output lines carry the seconds since the step started
    assert re.search(r"^#1 \[1/3\] FROM ", err, re.M), err
    assert re.search(r"^#\d+ \[2/3\] RUN echo visible-output-line$", err, re.M), err
    assert re.search(r"^#\d+ \d+\.\d{3} visible-output-line$", err, re.M), err
    assert re.search(r"^#\d+ DONE \d+\.\ds", err, re.M), err
    assert "built sha256:" in err


def test_progress_tty_shows_each_finished_step_once(builder: Builder) -> None:
    """The live view: a finished step is printed once with ✔ and leaves the running area."""
    buf = io.StringIO()
    renderer = LiveRenderer(Console(file=buf, force_terminal=True, width=200))
    ctx = builder.context(f"FROM {BASE}\nRUN echo tty-line\nWORKDIR /w\nRUN true\n")
    with renderer:
        api.build(BuildOptions(context=str(ctx), root=builder.root), listener=renderer)
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buf.getvalue()).replace("\r", "\n")
    lines = [ln for ln in plain.splitlines() if ln.strip()]
    for title in ("[1/4] FROM busybox-test:1", "[2/4] RUN echo tty-line", "[3/4] WORKDIR /w",
                  "[4/4] RUN true"):
        done = [i for i, ln in enumerate(lines) if ln.startswith("✔ " + title)]
        assert len(done) == 1, (title, lines)
        assert not any(ln.startswith("=> " + title) for ln in lines[done[0]:]), lines
    assert any(ln.startswith("built sha256:") for ln in lines)


def test_library_front_door_with_cli_spellings(builder: Builder, tmp_path: Path) -> None:
    """``cloche.build(context, tags=..., outputs=[...])``, as the README shows it."""
    import cloche

    ctx = builder.context(APP)
    out = tmp_path / "rootfs"
    result = cloche.build(str(ctx), root=builder.root, tags=["front/door:1"],
                          build_args={"UNUSED": "x"}, outputs=[f"type=local,dest={out}"])
    assert result.names == ("front/door:1",)
    assert builder.store.image("front/door:1").digest == result.digest
    assert (out / "usr/bin/hello").is_file()


def test_archives_are_named_as_buildkit_names_them(builder: Builder, docker: str,
                                                   tmp_path: Path) -> None:
    """`-o type=oci` and `cloche save` write one archive shape (BuildKit's exporters): an OCI
    layout whose entries carry the full name (io.containerd.image.name) and the tag
    (ref.name), with docker load's manifest.json beside it; every name is kept."""
    skopeo = require_tool("skopeo")
    ctx = builder.context(APP)
    tag = uuid.uuid4().hex[:8]
    names = (f"cloche-engine-test/named:{tag}", f"localhost:5000/team/named:{tag}-b")
    out = tmp_path / "image.tar"
    builder.cli("build", "-t", names[0], "-t", names[1], "-o", f"type=oci,dest={out}", str(ctx))
    saved = tmp_path / "saved.tar"
    builder.cli("save", "-o", str(saved), names[0], names[1])
    for archive in (out, saved):
        with tarfile.open(archive) as tar:
            index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert sorted(m["annotations"]["io.containerd.image.name"]
                      for m in index["manifests"]) == sorted(
            [f"docker.io/cloche-engine-test/named:{tag}", f"localhost:5000/team/named:{tag}-b"])
        assert sorted(m["annotations"]["org.opencontainers.image.ref.name"]
                      for m in index["manifests"]) == sorted([tag, f"{tag}-b"])
        assert sorted(t for e in manifest for t in e["RepoTags"]) == sorted(names)
        info = json.loads(subprocess.run([skopeo, "inspect", f"oci-archive:{archive}:{tag}"],
                                         check=True, capture_output=True, text=True).stdout)
        assert len(info["Layers"]) == 2
        # cloche load keeps both names
        other = tmp_path / f"store-{archive.stem}"
        loaded = builder.cli("load", "--root", str(other), "-i", str(archive)).stdout
        assert all(n in loaded for n in names), loaded
    subprocess.run([docker, "load", "-i", str(saved)], check=True, capture_output=True)
    try:
        run = subprocess.run([docker, "run", "--rm", "--network=none", names[1]], check=True,
                             capture_output=True, text=True, timeout=120)
        assert run.stdout == "hello from cloche world\n"
    finally:
        subprocess.run([docker, "rmi", "-f", *names], capture_output=True)


def test_load_puts_the_image_into_the_docker_engine(builder: Builder, docker: str,
                                                    tmp_path: Path) -> None:
    """`--load` (buildx's): the image goes to the engine through its API socket, no CLI."""
    ctx = builder.context(APP)
    name = f"cloche-engine-test/loaded:{uuid.uuid4().hex[:8]}"
    builder.cli("build", "--load", "-t", name, str(ctx))
    try:
        run = subprocess.run([docker, "run", "--rm", "--network=none", name], check=True,
                             capture_output=True, text=True, timeout=120)
        assert run.stdout == "hello from cloche world\n"
        image_id = subprocess.run([docker, "image", "inspect", "-f", "{{.Id}}", name],
                                  check=True, capture_output=True, text=True).stdout.strip()
        assert image_id == str(builder.store.image(name).config_digest)
    finally:
        subprocess.run([docker, "rmi", "-f", name], capture_output=True)
    gone = builder.cli("build", "--load", "-t", name, str(ctx), check=False,
                       env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert gone.returncode != 0 and "no Docker engine answers" in gone.stderr
    tcp = builder.cli("build", "-o", "type=docker", "-t", name, str(ctx), check=False,
                      env={**os.environ, "DOCKER_HOST": "tcp://127.0.0.1:2375"})
    assert tcp.returncode != 0 and "not a unix socket" in tcp.stderr


@pytest.mark.parametrize(("output", "says"), [
    ("type=oci,dest=o.tar,compression=estargz",
     "compression=estargz is not supported for type=oci"),
    ("type=image,name=x:1,oci-mediatypes=false", "oci-mediatypes=false is not supported"),
    ("type=oci,dest=o.tar,annotation-index.org.opencontainers.image.title=x",
     "BuildKit's annotation-index.org.opencontainers.image.title= is not supported"),
    ("type=image,name=x:1,annotation-manifest-descriptor.k=v",
     "annotation-manifest-descriptor.k= is not supported by cloche for type=image"),
    ("type=local,dest=out,platform-split=true", "BuildKit's platform-split= is not supported"),
    ("type=docker,dest=d.tar,colour=red", "unknown attribute 'colour' for type=docker"),
])
def test_output_attributes_are_honoured_or_refused(builder: Builder, output: str,
                                                   says: str) -> None:
    """Every attribute of BuildKit's exporters is honoured or refused, never dropped."""
    ctx = builder.context(APP)
    done = builder.cli("build", "-o", output, str(ctx), check=False)
    assert done.returncode != 0 and says in done.stderr, done.stderr


def test_oci_output_as_a_layout_folder(builder: Builder, tmp_path: Path) -> None:
    """`tar=false` (BuildKit's oci exporter): an OCI layout folder that skopeo reads."""
    skopeo = require_tool("skopeo")
    ctx = builder.context(APP)
    out = tmp_path / "layout"
    builder.cli("build", "-t", "layout/app:v2", "-o",
                f"type=oci,dest={out},tar=false,compression=gzip,oci-mediatypes=true", str(ctx))
    assert (out / "oci-layout").is_file() and (out / "index.json").is_file()
    info = json.loads(subprocess.run([skopeo, "inspect", f"oci:{out}:v2"], check=True,
                                     capture_output=True, text=True).stdout)
    assert len(info["Layers"]) == 2


def test_annotations_reach_the_manifest_and_the_index(builder: Builder, tmp_path: Path) -> None:
    """`--annotation` and the outputs' annotation.* attributes, as buildx: in the manifest (a
    new digest, the same image ID) or in the archive's index entry; index ones are refused."""
    ctx = builder.context(APP)
    out = tmp_path / "a.tar"
    builder.cli("build", "-t", "notes/app:1", "--annotation", "org.example.by=cloche",
                "--annotation", "manifest-descriptor:org.example.entry=yes",
                "-o", f"type=oci,dest={out},annotation.org.opencontainers.image.title=hello",
                str(ctx))
    with tarfile.open(out) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        entry = index["manifests"][0]
        manifest = json.load(tar.extractfile(  # type: ignore[arg-type]
            f"blobs/sha256/{entry['digest'].split(':')[1]}"))
    assert manifest["annotations"] == {"org.example.by": "cloche",
                                       "org.opencontainers.image.title": "hello"}
    assert entry["annotations"]["org.example.entry"] == "yes"
    stored = builder.store.image("notes/app:1")  # --annotation reaches the store's image too
    assert stored.annotations == {"org.example.by": "cloche"}
    plain = builder.cli("build", "-t", "notes/app:2", str(ctx))
    assert plain.returncode == 0
    assert builder.store.image("notes/app:2").config_digest == stored.config_digest
    assert builder.store.image("notes/app:2").digest != stored.digest
    for bad, says in (("index:k=v", "need an image index"), ("k", "[TYPE:]KEY=VALUE"),
                      ("manifest[linux/amd64]:k=v", "platform selectors")):
        done = builder.cli("build", "--annotation", bad, str(ctx), check=False)
        assert done.returncode != 0 and says in done.stderr, done.stderr
