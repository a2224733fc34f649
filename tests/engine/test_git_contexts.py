"""Git and remote tarball contexts, ``ADD <git url>`` and ``ADD --checksum``.

Real servers on 127.0.0.1 only (tests/fixtures/gitserve.py): ``git daemon`` (git://), git's
smart HTTP (``git http-backend``), dumb HTTP and plain files (http.server). The rules are
current BuildKit's as read in its source (frontend/dockerui/context.go,
frontend/dockerfile/dfgitutil, source/git, dockerfile2llb/convert_copy.go).
"""

from __future__ import annotations

import base64
import io
import os
import socket
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloche import api
from cloche.engine import events as ev
from cloche.engine.giturl import GitRefError, is_remote_context, parse_git_ref, redact
from cloche.engine.options import BuildOptions
from cloche.errors import ClocheError
from tests.engine.conftest import Builder, Recorder, rootfs
from tests.fixtures.gitserve import (
    commit_all,
    git,
    git_daemon,
    publish,
    smart_http,
    static_http,
)

DOCKERFILE = "FROM busybox-test:1\nCOPY . /ctx/\n"
SUB_DOCKERFILE = "FROM busybox-test:1\nCOPY . /sub/\n"


# ---- parsing (no server, no root)


def test_parse_fragment_and_query_forms() -> None:
    ref = parse_git_ref("https://host/o/repo.git#v1.0:docs/./x/")
    assert ref is not None
    assert (ref.remote, ref.ref, ref.subdir) == ("https://host/o/repo.git", "v1.0", "docs/x")
    ref = parse_git_ref("https://host/repo.git?tag=v1&subdir=a/b&keep-git-dir=true")
    assert ref is not None
    assert (ref.remote, ref.ref, ref.subdir, ref.keep_git_dir) == \
        ("https://host/repo.git", "refs/tags/v1", "a/b", True)
    ref = parse_git_ref("git@github.com:moby/buildkit.git#main")
    assert ref is not None and (ref.remote, ref.ref) == ("git@github.com:moby/buildkit.git", "main")
    ref = parse_git_ref("ssh://git@host:2222/x.git?branch=dev&checksum=abc123")
    assert ref is not None
    assert (ref.ref, ref.checksum) == ("refs/heads/dev", "abc123")
    ref = parse_git_ref("git://127.0.0.1/r?commit=" + "a" * 40)
    assert ref is not None and ref.ref == "a" * 40 and ref.unencrypted


def test_what_is_not_git() -> None:
    assert parse_git_ref("https://host/archive.tar.gz") is None  # http needs .git
    assert parse_git_ref("./repo.git") is None
    assert parse_git_ref("ftp://host/repo.git") is None
    assert parse_git_ref("github.com/moby/buildkit") is None  # a local path for ADD
    shorthand = parse_git_ref("github.com/moby/buildkit", context=True)
    assert shorthand is not None and shorthand.remote == "https://github.com/moby/buildkit"


@pytest.mark.parametrize("url, message", [
    ("https://h/r.git?ref=a#b", "ref conflicts"),
    ("https://h/r.git?tag=a&branch=b", "branch conflicts with tag"),
    ("https://h/r.git?color=red", "unexpected query"),
    ("https://h/r.git?ref=a&ref=b", "multiple values"),
    ("https://h/r.git?keep-git-dir=maybe", "invalid keep-git-dir"),
    ("https://h/r.git?mtime=now", "invalid mtime"),
])
def test_bad_git_url_options(url: str, message: str) -> None:
    with pytest.raises(GitRefError, match=message):
        parse_git_ref(url)


def test_context_urls_are_never_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "https:" / "host" / "r.git").mkdir(parents=True)  # what Path() would reach
    assert is_remote_context("https://host/r.git")
    assert is_remote_context("http://host/ctx.tar.gz")
    assert is_remote_context("git@host:r.git")
    (tmp_path / "me@host:dir").mkdir()
    assert not is_remote_context("me@host:dir")  # a local folder of that name wins (buildx)
    assert not is_remote_context("ctx")
    assert redact("https://user:secret@host/r.git") == "https://user:xxxxx@host/r.git"


# ---- the repository and its servers (one set per module)


@dataclass
class Repo:
    served: Path
    daemon: str  # git://127.0.0.1:PORT
    smart: str  # http://127.0.0.1:PORT (smart HTTP)
    smart_requests: list[str]
    files: str  # http://127.0.0.1:PORT (static files: dumb HTTP, tarballs, a Dockerfile)
    work: Path
    first: str  # main's first commit (tag v1, annotated)
    second: str  # main's head
    feature: str  # branch feature

    def push(self) -> str:
        """A new commit on main, published; its hash."""
        (self.work / "a.txt").write_text("three\n")
        sha = commit_all(self.work, "three", "2020-01-04T00:00:00Z")
        publish(self.work, self.served, "repo.git")
        return sha


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    base = tmp_path_factory.mktemp("git")
    work, served = base / "work", base / "served"
    work.mkdir()
    served.mkdir()
    git("init", "-q", str(work))
    (work / "Dockerfile").write_text(DOCKERFILE)
    (work / "a.txt").write_text("one\n")
    (work / "run.sh").write_text("#!/bin/sh\necho run\n")
    (work / "run.sh").chmod(0o755)
    (work / "sub").mkdir()
    (work / "sub" / "Dockerfile").write_text(SUB_DOCKERFILE)
    (work / "sub" / "b.txt").write_text("bee\n")
    os.symlink("/etc/shadow", work / "escape")
    os.symlink("sub", work / "linkdir")
    first = commit_all(work, "one")
    git("tag", "-a", "v1", "-m", "version 1", cwd=work)
    git("checkout", "-q", "-b", "feature", cwd=work)
    (work / "c.txt").write_text("see\n")
    feature = commit_all(work, "feature", "2020-01-03T00:00:00Z")
    git("checkout", "-q", "main", cwd=work)
    (work / "a.txt").write_text("two\n")
    second = commit_all(work, "two", "2020-01-03T00:00:00Z")
    publish(work, served, "repo.git")
    # the context of a remote tarball, and a Dockerfile on its own
    files = base / "files"
    files.mkdir()
    (files / "Dockerfile.txt").write_text("FROM busybox-test:1\nCOPY context /got\n")
    with git_daemon(served) as daemon, smart_http(served) as (smart, requests), \
            static_http(served.parent) as static:
        yield Repo(served, daemon, smart, requests, static, work, first, second, feature)


def build(builder: Builder, context: str, dockerfile: str | None = None,
          **options: object) -> api.BuildResult:
    opts = BuildOptions(context=context, root=builder.root, dockerfile=dockerfile,
                        **options)  # type: ignore[arg-type]
    return api.build(opts, listener=builder.recorder)


def files_of(builder: Builder, result: api.BuildResult, name: str = "fs") -> Path:
    return rootfs(result.image, builder.dir / name)


# ---- Git contexts


def test_git_daemon_context_default_branch(builder: Builder, repo: Repo) -> None:
    fs = files_of(builder, build(builder, f"{repo.daemon}/repo.git"))
    ctx = fs / "ctx"
    assert (ctx / "a.txt").read_text() == "two\n"  # main's head
    assert stat.S_IMODE((ctx / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((ctx / "a.txt").stat().st_mode) == 0o644
    assert os.readlink(ctx / "escape") == "/etc/shadow"  # kept as a link, never followed
    assert not (ctx / ".git").exists()  # BuildKit: keep-git-dir is false for contexts
    assert (ctx / "a.txt").stat().st_uid == 0


def test_smart_http_context_tag_and_subdir(builder: Builder, repo: Repo) -> None:
    repo.smart_requests.clear()
    fs = files_of(builder, build(builder, f"{repo.smart}/repo.git#v1:sub"))
    assert (fs / "sub" / "b.txt").read_text() == "bee\n"  # sub/Dockerfile, sub as the root
    assert sorted(p.name for p in (fs / "sub").iterdir()) == ["Dockerfile", "b.txt"]
    assert not (fs / "ctx").exists()
    assert any("git-upload-pack" in r for r in repo.smart_requests)  # smart, not dumb


@pytest.mark.parametrize("fragment, present, a_txt", [
    ("#feature", "c.txt", "one\n"),
    ("#refs/heads/feature", "c.txt", "one\n"),
    ("?branch=feature", "c.txt", "one\n"),
    ("?tag=v1", "a.txt", "one\n"),
    ("#v1", "a.txt", "one\n"),
])
def test_branch_and_tag_refs(builder: Builder, repo: Repo, fragment: str, present: str,
                             a_txt: str) -> None:
    fs = files_of(builder, build(builder, f"{repo.daemon}/repo.git{fragment}"))
    assert (fs / "ctx" / present).exists()
    assert (fs / "ctx" / "a.txt").read_text() == a_txt


def test_commit_ref_and_checksum_query(builder: Builder, repo: Repo) -> None:
    fs = files_of(builder, build(builder, f"{repo.smart}/repo.git#{repo.first}"))
    assert (fs / "ctx" / "a.txt").read_text() == "one\n"
    fs = files_of(builder, build(builder, f"{repo.daemon}/repo.git?ref=main&checksum="
                                          f"{repo.second[:12]}"), "fs2")
    assert (fs / "ctx" / "a.txt").read_text() == "two\n"
    with pytest.raises(ClocheError, match="expected checksum to match"):
        build(builder, f"{repo.daemon}/repo.git?ref=main&checksum={repo.first}")


def test_dumb_http_context(builder: Builder, repo: Repo) -> None:
    fs = files_of(builder, build(builder, f"{repo.files}/served/repo.git#main"))
    assert (fs / "ctx" / "a.txt").read_text() == "two\n"


def test_keep_git_dir_and_dockerfile_inside(builder: Builder, repo: Repo) -> None:
    result = build(builder, f"{repo.daemon}/repo.git?keep-git-dir=true",
                   dockerfile="sub/Dockerfile")
    fs = files_of(builder, result)
    assert (fs / "sub" / ".git" / "HEAD").is_file()  # the whole repository is the context
    assert (fs / "sub" / "sub" / "b.txt").is_file()


def test_mtime_commit(builder: Builder, repo: Repo) -> None:
    result = builder.build(f"FROM busybox-test:1\nADD {repo.daemon}/repo.git?mtime=commit#v1"
                           " /src\n")
    fs = files_of(builder, result)
    for path in (fs / "src" / "a.txt", fs / "src" / "sub", fs / "src" / "escape"):
        assert int(path.lstat().st_mtime) == 1577934245  # 2020-01-02T03:04:05Z


def test_missing_ref_and_subdir(builder: Builder, repo: Repo) -> None:
    with pytest.raises(ClocheError, match="does not contain ref nope"):
        build(builder, f"{repo.daemon}/repo.git#nope")
    with pytest.raises(ClocheError, match="subdir 'missing' does not exist"):
        build(builder, f"{repo.daemon}/repo.git#main:missing")
    with pytest.raises(ClocheError, match="'linkdir' is not a directory"):
        build(builder, f"{repo.daemon}/repo.git#main:linkdir")  # a symlink is no subdir


# ---- remote tarballs and Dockerfiles


def _tar(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_remote_tarball_context(builder: Builder, repo: Repo) -> None:
    files = repo.served.parent / "files"
    (files / "ctx.tar.gz").write_bytes(_tar({
        "Dockerfile": DOCKERFILE.encode(), "x.txt": b"ex\n", ".dockerignore": b"x.txt\n"}))
    fs = files_of(builder, build(builder, f"{repo.files}/files/ctx.tar.gz"))
    # BuildKit applies no .dockerignore to a remote context
    assert (fs / "ctx" / "x.txt").read_text() == "ex\n"


def test_remote_tarball_with_dotdot_is_refused(builder: Builder, repo: Repo) -> None:
    files = repo.served.parent / "files"
    (files / "evil.tar.gz").write_bytes(_tar({"Dockerfile": DOCKERFILE.encode(),
                                              "../../evil": b"x"}))
    with pytest.raises(ClocheError, match="'../../evil' climbs out of the root"):
        build(builder, f"{repo.files}/files/evil.tar.gz")
    assert not any(p.name == "evil" for p in builder.dir.rglob("evil"))


def test_remote_dockerfile_is_the_context(builder: Builder, repo: Repo) -> None:
    fs = files_of(builder, build(builder, f"{repo.files}/files/Dockerfile.txt"))
    assert (fs / "got").read_text().startswith("FROM busybox-test:1")  # the file "context"


def test_remote_context_not_found(builder: Builder, repo: Repo) -> None:
    with pytest.raises(ClocheError, match="build context .*HTTP 404"):
        build(builder, f"{repo.files}/files/missing.tar")


# ---- Git and HTTP(S) named contexts (--build-context NAME=URL)


def test_named_git_context_keeps_git_dir_and_keys_by_commit(builder: Builder, repo: Repo) -> None:
    dockerfile = builder.dir / "named-git.Dockerfile"
    dockerfile.write_text("FROM busybox-test:1\nCOPY --from=src . /src/\n"
                          "FROM src AS sub\n"
                          "FROM busybox-test:1\nCOPY --from=0 /src /got\n"
                          "RUN --mount=from=src,target=/m cat /m/a.txt > /mounted\n")
    contexts = {"src": f"{repo.smart}/repo.git#v1"}
    first = build(builder, str(builder.dir), dockerfile=str(dockerfile), build_contexts=contexts)
    fs = files_of(builder, first)
    assert (fs / "got" / "a.txt").read_text() == "one\n"  # tag v1
    assert (fs / "mounted").read_text() == "one\n"
    head = git("rev-parse", "HEAD", cwd=fs / "got")  # BuildKit keeps .git for a named context
    assert head.strip() == repo.first
    assert (fs / "got" / "a.txt").stat().st_uid == 0
    assert os.readlink(fs / "got" / "escape") == "/etc/shadow"  # a link, never followed
    builder.recorder = Recorder()
    again = build(builder, str(builder.dir), dockerfile=str(dockerfile), build_contexts=contexts)
    assert again.image.digest == first.image.digest  # keyed by the commit: all cached
    assert [e for e in builder.recorder.of(ev.StepFinished) if not e.cached] == []


def test_named_git_context_as_a_base_and_a_subdir(builder: Builder, repo: Repo) -> None:
    dockerfile = builder.dir / "named-base.Dockerfile"
    dockerfile.write_text("FROM sub\n")
    result = build(builder, str(builder.dir), dockerfile=str(dockerfile),
                   build_contexts={"sub": f"{repo.daemon}/repo.git#main:sub"})
    fs = files_of(builder, result)
    assert sorted(p.name for p in fs.iterdir()) == ["Dockerfile", "b.txt"]


def test_named_http_context_is_one_file(builder: Builder, repo: Repo) -> None:
    files = repo.served.parent / "files"
    (files / "tool.tar.gz").write_bytes(_tar({"inside": b"x"}))
    dockerfile = builder.dir / "named-http.Dockerfile"
    dockerfile.write_text("FROM busybox-test:1\nCOPY --from=dl / /dl/\n")
    result = build(builder, str(builder.dir), dockerfile=str(dockerfile),
                   build_contexts={"dl": f"{repo.files}/files/tool.tar.gz"})
    fs = files_of(builder, result)
    got = fs / "dl" / "tool.tar.gz"  # the download, not extracted (BuildKit's llb.HTTP)
    assert got.read_bytes() == (files / "tool.tar.gz").read_bytes()
    assert stat.S_IMODE(got.stat().st_mode) == 0o600
    assert sorted(p.name for p in (fs / "dl").iterdir()) == ["tool.tar.gz"]


def test_named_remote_context_errors_name_the_flag(builder: Builder, repo: Repo) -> None:
    dockerfile = builder.dir / "named-missing.Dockerfile"
    dockerfile.write_text("FROM busybox-test:1\nCOPY --from=x / /x/\n")
    with pytest.raises(ClocheError, match=r"--build-context x=.*HTTP 404"):
        build(builder, str(builder.dir), dockerfile=str(dockerfile),
              build_contexts={"x": f"{repo.files}/files/missing.bin"})
    with pytest.raises(ClocheError, match=r"--build-context x=.*nope"):
        build(builder, str(builder.dir), dockerfile=str(dockerfile),
              build_contexts={"x": f"{repo.daemon}/repo.git#nope"})
    unused = builder.dir / "named-unused.Dockerfile"
    unused.write_text("FROM busybox-test:1\n")  # an unused context is never fetched
    build(builder, str(builder.dir), dockerfile=str(unused),
          build_contexts={"x": "https://example.invalid/never.git"})


# ---- private repositories: BuildKit's GIT_AUTH_TOKEN / GIT_AUTH_HEADER build secrets

TOKEN = "s3cr3t-t0ken-7f1e"
TOKEN_AUTH = "basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


@pytest.fixture(scope="module")
def private(repo: Repo) -> Iterator[str]:
    """The repository over smart HTTP that answers only with the token's Authorization."""
    with smart_http(repo.served, auth=TOKEN_AUTH) as (url, _requests):
        yield url


def _no_token_in(root: Path) -> None:
    needles = (TOKEN.encode(), TOKEN_AUTH.encode())
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert not any(n in data for n in needles), f"the token is in {path}"


def test_git_auth_token_for_context_add_and_named_context(
        builder: Builder, repo: Repo, private: str, monkeypatch: pytest.MonkeyPatch) -> None:
    host = private.removeprefix("http://")
    monkeypatch.setenv("MY_TOKEN", TOKEN)
    secrets = (api.parse_secret(f"id=GIT_AUTH_TOKEN.{host},env=MY_TOKEN"),)
    dockerfile = builder.dir / "private.Dockerfile"
    dockerfile.write_text("FROM busybox-test:1\nCOPY . /ctx/\n"
                          f"ADD --keep-git-dir=true {private}/repo.git#v1 /added\n"
                          "COPY --from=named c.txt /named.txt\n")
    result = build(builder, f"{private}/repo.git", dockerfile=str(dockerfile), secrets=secrets,
                   build_contexts={"named": f"{private}/repo.git#feature"})
    fs = files_of(builder, result)
    assert (fs / "ctx" / "a.txt").read_text() == "two\n"
    assert (fs / "added" / "a.txt").read_text() == "one\n"
    assert (fs / "named.txt").read_text() == "see\n"  # branch feature
    _no_token_in(fs / "added" / ".git")  # a kept .git holds no header, no token
    _no_token_in(builder.root)  # nor the store: layers, configs, history, cache records


def test_git_auth_header_and_the_generic_token(builder: Builder, repo: Repo, private: str,
                                               monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    header = tmp_path / "header"
    header.write_text(TOKEN_AUTH)
    result = build(builder, f"{private}/repo.git",
                   secrets=(api.parse_secret(f"id=GIT_AUTH_HEADER,src={header}"),))
    assert (files_of(builder, result) / "ctx" / "a.txt").read_text() == "two\n"
    monkeypatch.setenv("GIT_AUTH_TOKEN", TOKEN)
    result = build(builder, f"{private}/repo.git#main:sub",
                   secrets=(api.parse_secret("id=GIT_AUTH_TOKEN"),))
    assert result.image.digest


def test_private_repository_without_or_with_a_wrong_token_fails_clearly(
        builder: Builder, private: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ClocheError, match="git ls-remote .*repo.git failed"):
        build(builder, f"{private}/repo.git")
    monkeypatch.setenv("WRONG", "not-the-token")
    with pytest.raises(ClocheError, match="failed") as info:
        build(builder, f"{private}/repo.git",
              secrets=(api.parse_secret("id=GIT_AUTH_TOKEN,env=WRONG"),))
    assert "not-the-token" not in str(info.value)


# ---- ADD of a Git repository


def test_add_git_with_and_without_keep_git_dir(builder: Builder, repo: Repo) -> None:
    result = builder.build(
        "FROM busybox-test:1\n"
        f"ADD {repo.daemon}/repo.git#v1 /src\n"
        f"ADD --keep-git-dir=true {repo.smart}/repo.git#feature /kept/\n"
        f"ADD {repo.daemon}/repo.git#main:sub /only-sub\n")
    fs = files_of(builder, result)
    assert (fs / "src" / "a.txt").read_text() == "one\n"
    assert not (fs / "src" / ".git").exists()
    assert (fs / "kept" / "c.txt").is_file()
    head = git("rev-parse", "HEAD", cwd=fs / "kept")
    assert head.strip() == repo.feature
    assert "xxxxx" not in git("remote", "get-url", "origin", cwd=fs / "kept")
    assert sorted(p.name for p in (fs / "only-sub").iterdir()) == ["Dockerfile", "b.txt"]
    history = [h.created_by for h in result.image.config.history][-3:]
    assert history[0].startswith(f"ADD {repo.daemon}/repo.git#v1 /src")


def test_add_git_checksum(builder: Builder, repo: Repo) -> None:
    result = builder.build("FROM busybox-test:1\n"
                           f"ADD --checksum={repo.first} {repo.daemon}/repo.git#v1 /a\n"
                           f"ADD --checksum={repo.second[:10]} {repo.daemon}/repo.git /b\n")
    fs = files_of(builder, result)
    assert (fs / "a" / "a.txt").read_text() == "one\n"
    assert (fs / "b" / "a.txt").read_text() == "two\n"
    with pytest.raises(ClocheError) as info:
        builder.build("FROM busybox-test:1\nRUN true\n"
                      f"ADD --checksum={repo.first} {repo.daemon}/repo.git#main /a\n")
    assert info.value.line == 3  # type: ignore[attr-defined]
    assert "expected checksum to match" in str(info.value)
    with pytest.raises(ClocheError, match="expected hex commit hash"):
        builder.build("FROM busybox-test:1\n"
                      f"ADD --checksum=sha256:{'0' * 64} {repo.daemon}/repo.git /a\n")


def test_add_git_cache_key_is_the_commit(builder: Builder, repo: Repo) -> None:
    dockerfile = f"FROM busybox-test:1\nADD {repo.daemon}/repo.git#main /src\n"
    builder.build(dockerfile)
    from cloche.engine import events as ev

    builder.build(dockerfile)
    assert any(e.cached for e in builder.recorder.of(ev.StepFinished))
    repo.push()
    try:
        result = builder.build(dockerfile)
        assert not any(e.cached for e in builder.recorder.of(ev.StepFinished))
        assert (files_of(builder, result) / "src" / "a.txt").read_text() == "three\n"
    finally:
        git("reset", "-q", "--hard", repo.second, cwd=repo.work)
        publish(repo.work, repo.served, "repo.git")


def test_add_url_checksum(builder: Builder, repo: Repo) -> None:
    import hashlib

    files = repo.served.parent / "files"
    (files / "blob.bin").write_bytes(b"payload\n")
    good = "sha256:" + hashlib.sha256(b"payload\n").hexdigest()
    result = builder.build(f"FROM busybox-test:1\nADD --checksum={good} "
                           f"{repo.files}/files/blob.bin /got\n")
    assert (files_of(builder, result) / "got").read_bytes() == b"payload\n"
    with pytest.raises(ClocheError) as info:
        builder.build(f"FROM busybox-test:1\nADD --checksum=sha256:{'a' * 64} "
                      f"{repo.files}/files/blob.bin /got\n")
    assert info.value.line == 2 and "checksum mismatch" in str(info.value)  # type: ignore[attr-defined]


# ---- hostile repositories and servers


def test_file_submodules_are_refused(builder: Builder, repo: Repo, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.mkdir()
    git("init", "-q", str(secret))
    (secret / "secret.txt").write_text("host secret\n")
    commit_all(secret, "secret")
    work = tmp_path / "hostile"
    work.mkdir()
    git("init", "-q", str(work))
    (work / "Dockerfile").write_text(DOCKERFILE)
    git("submodule", "add", "-q", f"file://{secret}", "mod", cwd=work)
    commit_all(work, "with a file:// submodule")
    publish(work, repo.served, "hostile.git")
    with pytest.raises(ClocheError, match="transport 'file' not allowed"):
        build(builder, f"{repo.daemon}/hostile.git")
    # without submodules the rest of the repository builds
    fs = files_of(builder, build(builder, f"{repo.daemon}/hostile.git?submodules=false"))
    assert not (fs / "ctx" / "mod" / "secret.txt").exists()


def test_host_git_config_and_hooks_are_not_used(builder: Builder, repo: Repo, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    hooks = home / "hooks"
    hooks.mkdir(parents=True)
    marker = tmp_path / "hook-ran"
    (hooks / "post-checkout").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (hooks / "post-checkout").chmod(0o755)
    # a global config that would run hooks and send the fetch elsewhere
    (home / ".gitconfig").write_text(f"[core]\n\thooksPath = {hooks}\n"
                                     f'[url "{repo.daemon}/nowhere/"]\n'
                                     f"\tinsteadOf = {repo.daemon}/\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    fs = files_of(builder, build(builder, f"{repo.daemon}/repo.git#v1"))
    assert (fs / "ctx" / "a.txt").read_text() == "one\n"
    assert not marker.exists()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


def test_a_server_that_never_answers_times_out(builder: Builder, silent_server: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("CLOCHE_GIT_TIMEOUT", "2")
    started = time.monotonic()
    with pytest.raises(ClocheError, match="CLOCHE_GIT_TIMEOUT"):
        build(builder, f"git://127.0.0.1:{silent_server}/repo.git")
    assert time.monotonic() - started < 30


def test_a_repository_past_the_layer_size_bound(builder: Builder, repo: Repo, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "big"
    work.mkdir()
    git("init", "-q", str(work))
    (work / "Dockerfile").write_text(DOCKERFILE)
    (work / "big.bin").write_bytes(os.urandom(2 << 20))
    commit_all(work, "big")
    publish(work, repo.served, "big.git")
    monkeypatch.setenv("CLOCHE_MAX_LAYER_SIZE", "512K")
    with pytest.raises(ClocheError, match="CLOCHE_MAX_LAYER_SIZE"):
        build(builder, f"{repo.daemon}/big.git")


# ---- the command line


def test_cli_builds_a_url_context_never_a_path(builder: Builder, repo: Repo) -> None:
    url = f"{repo.smart}/repo.git#v1:sub"
    # what a mangled URL (http:/127.0.0.1:PORT/...) would read, were it taken as a path
    decoy = builder.dir / "http:" / url.split("//", 1)[1].split("#")[0]
    decoy.mkdir(parents=True)
    (decoy / "Dockerfile").write_text("FROM busybox-test:1\nRUN touch /decoy\n")
    builder.cli("build", "-t", "from-git:1", url)
    image = builder.store.image("from-git:1")
    fs = rootfs(image, builder.dir / "cli-fs")
    assert (fs / "sub" / "b.txt").read_text() == "bee\n"
    assert not (fs / "decoy").exists()
