"""Named contexts, ``--build-context NAME=VALUE`` (buildx's spelling, BuildKit's lookup): a
local directory, ``docker-image://REF`` and ``oci-layout://PATH[:TAG][@DIGEST]``, each used by
FROM, COPY --from and RUN --mount from=; a context with a stage's name replaces the stage, one
with an image's (normalised) name replaces the image; cache keys follow the context's content;
wrong values fail before the build, naming the flag.

Docker's BuildKit v0.8 has no --build-context (its `docker build` lacks the flag), so these
cases are checked against BuildKit's frontend source (dockerui/namedcontext.go,
dockerfile2llb/convert.go) rather than differentially (docs/conformance.md)."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from cloche.dockerfile.stages import parse_dockerfile
from cloche.engine import events as ev
from cloche.engine.options import BuildOptions, context_name, parse_build_contexts
from cloche.errors import BuildError, ClocheError, ConfigError
from cloche.oci.layout import write_layout
from cloche.plan.graph import build_plan
from cloche.plan.steps import ContextRef, ImageRef, StageRef
from cloche.registry.push import push_stored
from cloche.store import Store
from tests.engine.conftest import BASE, Builder, layer_contents, layer_members, rootfs


def _dir(base: Path, files: dict[str, str], name: str = "named") -> Path:
    root = base / name
    root.mkdir()
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def _steps_cached(builder: Builder) -> list[bool]:
    return [e.cached for e in builder.recorder.of(ev.StepFinished)]


# -- names and values, as buildx reads them (no root needed) -----------------------------------

def test_names_are_normalised_as_buildx_does() -> None:
    assert context_name("docker.io/library/alpine:latest") == "alpine"
    assert context_name("alpine") == "alpine"
    assert context_name("alpine:3") == "alpine:3"
    assert context_name("localhost:5000/app") == "localhost:5000/app"
    assert parse_build_contexts(["docker.io/library/alpine=dir", "x=docker-image://busybox"]) \
        == {"alpine": "dir", "x": "docker-image://busybox"}
    assert parse_build_contexts({"a": "one", "docker.io/library/a:latest": "two"}) == {"a": "two"}


@pytest.mark.parametrize("item, message", [
    ("nodelimiter", "expected NAME=VALUE"),
    ("Upper=dir", "invalid context name 'Upper'"),
    ("x=", "empty value"),
    ("x=target:build", "unsupported context source target"),
    ("x=https://example.invalid/repo.git?color=red", "unexpected query"),
    ("x=ftp://example.invalid/ctx", "unknown scheme 'ftp'"),
    ("x=docker-image://Not_Valid", "invalid reference format"),
    ("x=oci-layout://dir@sha256:short", "invalid digest"),
])
def test_wrong_values_name_the_flag(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match="--build-context") as info:
        BuildOptions(build_contexts=[item])
    assert message in info.value.message


class _Names:
    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def lookup(self, name: str) -> str | None:
        key = context_name(name)
        return key if key in self.names else None


def _plan(text: str, *names: str):  # type: ignore[no-untyped-def]
    return build_plan(parse_dockerfile(textwrap.dedent(text).lstrip()), contexts=_Names(*names))


def test_plan_looks_names_up_after_stages_and_before_images() -> None:
    plan = _plan("""
        FROM docker.io/library/alpine:latest AS gen
        RUN --mount=from=tools,target=/t true
        FROM scratch
        COPY --from=gen /a /a
        COPY --from=alpine /b /b
        COPY --from=other /c /c
        COPY --from=0 /d /d
    """, "alpine", "tools")
    gen, last = plan.stages
    assert gen.base_context == "alpine" and gen.images == ()
    assert gen.steps[0].mounts == (ContextRef("tools"),)
    assert [s.from_ for s in last.steps] == [StageRef(0, "gen"), ContextRef("alpine"),
                                             ImageRef("other"), StageRef(0, "gen")]
    assert [d.context for d in last.dependencies] == [None, "alpine", None, None]


def test_plan_replaces_a_stage_named_like_a_context() -> None:
    plan = _plan("""
        FROM busybox AS deps
        RUN exit 1
        FROM deps AS build
        COPY --from=missing /x /x
        FROM scratch
        COPY --from=build /x /x
    """, "build")
    deps, build, last = plan.stages
    assert build.base_context == "build" and build.steps == () and build.dependencies == ()
    assert build.replaced and not deps.replaced
    assert not deps.reachable  # only the replaced stage needed it
    assert last.steps[0].from_ == StageRef(1, "build")


def test_from_scratch_is_never_a_context() -> None:
    assert _plan("FROM scratch\n", "scratch").stages[0].base_context is None


# -- directories -----------------------------------------------------------------------------

def test_directory_in_copy_from_with_its_own_dockerignore(builder: Builder,
                                                          tmp_path: Path) -> None:
    named = _dir(tmp_path, {"a.txt": "from the named context\n", "sub/b.txt": "b\n",
                            "secret.key": "nope\n", ".dockerignore": "secret.key\n"})
    os.chown(named / "a.txt", 1234, 1234)
    result = builder.build(f"FROM {BASE}\nCOPY --from=src / /got/\n",
                           {"secret.key": "main context file\n"},
                           build_contexts={"src": str(named)})
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "got/a.txt").read_text() == "from the named context\n"
    assert (root / "got/sub/b.txt").read_text() == "b\n"
    assert not (root / "got/secret.key").exists()  # the named context's own .dockerignore
    owners = {m.name: (m.uid, m.gid) for m in layer_members(result.image.layers[-1])}
    assert owners["got/a.txt"] == (0, 0)  # sent with owners reset, as the main context


def test_directory_in_run_mount_hides_ignored_files(builder: Builder, tmp_path: Path) -> None:
    named = _dir(tmp_path, {"a.txt": "mounted\n", "secret.key": "nope\n",
                            ".dockerignore": "secret.key\n"})
    result = builder.build(
        f"FROM {BASE}\nRUN --mount=from=src,target=/m cat /m/a.txt > /got && "
        "{ test -e /m/secret.key && echo leaked || echo hidden; } >> /got\n",
        build_contexts={"src": str(named)})
    assert layer_contents(result.image.layers[-1])["got"] == b"mounted\nhidden\n"


def test_directory_as_a_base_image(builder: Builder, tmp_path: Path) -> None:
    named = _dir(tmp_path, {"etc/motd": "hello\n", "skip.me": "x\n",
                            ".dockerignore": "skip.me\n"})
    result = builder.build("FROM src\nCOPY local.txt /\n", {"local.txt": "local\n"},
                           build_contexts={"src": str(named)})
    image = result.image
    assert len(image.layers) == 2  # the directory, then the COPY
    first = layer_contents(image.layers[0])
    assert first == {"etc/motd": b"hello\n", ".dockerignore": b"skip.me\n"}
    assert all((m.uid, m.gid) == (0, 0) for m in layer_members(image.layers[0]))
    config = image.config
    assert config.working_dir == "/" and any(e.startswith("PATH=") for e in config.env)
    assert [h.created_by for h in config.history if not h.empty_layer][0] == \
        "local source for src"


def test_directory_cache_key_follows_its_content(builder: Builder, tmp_path: Path) -> None:
    named = _dir(tmp_path, {"a.txt": "one\n"})
    dockerfile = (f"FROM {BASE}\nCOPY --from=src /a.txt /a.txt\n"
                  "RUN --mount=from=src,target=/m cat /m/a.txt > /b.txt\n")
    ctx = {"build_contexts": {"src": str(named)}}
    builder.build(dockerfile, **ctx)
    builder.build(dockerfile, **ctx)
    assert _steps_cached(builder) == [True, True]
    os.utime(named / "a.txt", (1, 1))  # a new mtime alone changes nothing (BuildKit's rule)
    builder.build(dockerfile, **ctx)
    assert _steps_cached(builder) == [True, True]
    (named / "a.txt").write_text("two\n")
    result = builder.build(dockerfile, **ctx)
    assert _steps_cached(builder) == [False, False]
    files = rootfs(result.image, tmp_path / "out")
    assert (files / "a.txt").read_text() == (files / "b.txt").read_text() == "two\n"
    # FROM the directory: its content hash keys the steps on it
    (named / "Dockerfile.unused").write_text("x")
    builder.build("FROM src\nCOPY local.txt /\n", {"local.txt": "l\n"}, **ctx)
    builder.build("FROM src\nCOPY local.txt /\n", {"local.txt": "l\n"}, **ctx)
    assert _steps_cached(builder) == [True]
    (named / "a.txt").write_text("three\n")
    builder.build("FROM src\nCOPY local.txt /\n", {"local.txt": "l\n"}, **ctx)
    assert _steps_cached(builder) == [False]


def test_context_replaces_a_stage_of_the_same_name(builder: Builder, tmp_path: Path) -> None:
    named = _dir(tmp_path, {"out/app": "prebuilt\n"})
    dockerfile = (f"FROM {BASE} AS build\nRUN exit 3\n"
                  f"FROM {BASE}\nCOPY --from=build /out/app /app\n")
    with pytest.raises(BuildError):
        builder.build(dockerfile)
    result = builder.build(dockerfile, build_contexts={"build": str(named)})
    assert layer_contents(result.image.layers[-1]) == {"app": b"prebuilt\n"}


def test_symlinks_stay_inside_a_directory_context(builder: Builder, tmp_path: Path) -> None:
    named = _dir(tmp_path, {"inside.txt": "in\n"})
    (named / "passwd").symlink_to("/etc/passwd")
    (named / "up").symlink_to("../../..")
    with pytest.raises(BuildError, match="not found"):
        builder.build(f"FROM {BASE}\nCOPY --from=src /passwd /x\n",
                      build_contexts={"src": str(named)})
    with pytest.raises(BuildError, match="not found"):
        builder.build(f"FROM {BASE}\nCOPY --from=src /up/etc/passwd /x\n",
                      build_contexts={"src": str(named)})


def test_missing_directory_fails_before_the_build(builder: Builder, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--build-context src=.*missing") as info:
        builder.build(f"FROM {BASE}\nRUN exit 9\n",
                      build_contexts={"src": str(tmp_path / "missing")})
    assert "failed to get build context src" in info.value.message
    assert builder.recorder.of(ev.StepStarted) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        builder.build(f"FROM {BASE}\n", build_contexts={"src": str(tmp_path / "file")})


# -- images ------------------------------------------------------------------------------------

def test_docker_image_context_overrides_an_image_name(builder: Builder, tmp_path: Path) -> None:
    """``FROM docker.io/library/alpine:latest`` finds the context ``alpine`` (normalised
    names); no pull is tried for alpine (no Docker Hub here: it would fail)."""
    dockerfile = ("FROM docker.io/library/alpine:latest\nRUN echo hi > /hi\n"
                  "COPY --from=alpine /bin/busybox /bb\n"
                  "RUN --mount=from=alpine,target=/m test -x /m/bin/busybox && echo ok > /ok\n")
    result = builder.build(dockerfile, build_contexts={"alpine": f"docker-image://{BASE}"})
    assert builder.recorder.of(ev.Pulling) == []
    files = rootfs(result.image, tmp_path / "out")
    assert (files / "hi").read_text() == "hi\n" and (files / "ok").read_text() == "ok\n"
    base = Store.open(builder.root).image(BASE)
    assert result.image.layers[0].diff_id == base.layers[0].diff_id
    with pytest.raises(BuildError):  # without the context: a pull of alpine, which fails
        builder.build(dockerfile)


def test_docker_image_context_pulls_through_the_resolver(builder: Builder, registry,
                                                         tmp_path: Path) -> None:
    ref = f"{registry.host}/contexts/busybox:1"
    push_stored(Store.open(builder.root), BASE, ref)
    shutil.rmtree(builder.root)
    builder.root.mkdir()  # an empty store: the context's image must be pulled
    result = builder.build("FROM base\nRUN echo pulled > /p\n",
                           build_contexts={"base": f"docker-image://{ref}"})
    assert [p.reference for p in builder.recorder.of(ev.Pulling)] == [ref]
    assert (rootfs(result.image, tmp_path / "out") / "p").read_text() == "pulled\n"


def test_oci_layout_context(builder: Builder, tmp_path: Path) -> None:
    store = Store.open(builder.root)
    image = store.image(BASE)
    layout = tmp_path / "layout"
    write_layout(layout, image, name="v1")
    for value in (f"oci-layout://{layout}:v1", f"oci-layout://{layout}",  # the only image
                  f"oci-layout://{layout}@{image.digest}"):
        result = builder.build("FROM base\nRUN echo from-layout > /l\n"
                               "COPY --from=base /bin/busybox /bb\n",
                               build_contexts={"base": value})
        assert result.image.layers[0].diff_id == image.layers[0].diff_id
        assert (rootfs(result.image, tmp_path / f"out{len(value)}") / "l").read_text() \
            == "from-layout\n"
    write_layout(layout, image, name="v2")
    with pytest.raises(ConfigError, match="could not be resolved"):
        builder.build("FROM base\n", build_contexts={"base": f"oci-layout://{layout}:v3"})


def test_oci_layout_is_read_confined(builder: Builder, tmp_path: Path) -> None:
    """A layout is hostile input: index.json as a FIFO, blobs as links out of the folder."""
    store = Store.open(builder.root)
    image = store.image(BASE)
    fifo = tmp_path / "fifo-layout"
    fifo.mkdir()
    os.mkfifo(fifo / "index.json")
    with pytest.raises(ConfigError, match="FIFO"):
        builder.build("FROM base\n", build_contexts={"base": f"oci-layout://{fifo}"})
    layout = tmp_path / "layout"
    write_layout(layout, image, name="v1")
    manifest = layout / "blobs" / "sha256" / image.digest.hex
    outside = tmp_path / "outside-manifest"
    manifest.rename(outside)
    manifest.symlink_to(outside)  # resolved inside the layout: not found there
    with pytest.raises(ClocheError, match="not found"):
        builder.build("FROM base\n", build_contexts={"base": f"oci-layout://{layout}:v1"})


def test_cli_flag(builder: Builder, tmp_path: Path) -> None:
    named = _dir(tmp_path, {"a.txt": "cli\n"})
    ctx = builder.context(f"FROM {BASE}\nCOPY --from=src a.txt /a.txt\n")
    builder.cli("build", "-t", "named:1", "--build-context", f"src={named}", str(ctx))
    image = Store.open(builder.root).image("named:1")
    assert layer_contents(image.layers[-1]) == {"a.txt": b"cli\n"}
    failed = builder.cli("build", "--build-context", "src=target:x", str(ctx), check=False)
    assert failed.returncode != 0 and "--build-context src=target:x" in failed.stderr
