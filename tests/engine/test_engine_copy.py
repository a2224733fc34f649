"""COPY and ADD through the engine: context and .dockerignore, --from a stage, an index or a
stored image, --chown by name, --chmod, heredocs, local archives, and URLs with --checksum."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cloche.errors import ClocheError
from tests.engine.conftest import BASE, Builder, layer_members, rootfs


def owner_mode(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_context_copy_honours_dockerignore(builder: Builder, tmp_path: Path) -> None:
    files = {"a.txt": "a", "secret.key": "k", "logs/x.log": "x", "logs/keep.log": "keep",
             "deep/er/x.tmp": "t", "deep/er/y.txt": "y",
             ".dockerignore": "*.key\nlogs\n!logs/keep.log\n**/*.tmp\n"}
    result = builder.build(f"FROM {BASE}\nCOPY . /ctx/\n", files)
    root = rootfs(result.image, tmp_path / "out") / "ctx"
    got = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())
    assert got == [".dockerignore", "Dockerfile", "a.txt", "deep/er/y.txt", "logs/keep.log"]


def test_dockerignore_does_not_apply_to_copy_from(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE} AS make\nRUN mkdir /out && echo k > /out/a.key\n"
                  f"FROM {BASE}\nCOPY --from=make /out/ /got/\n")
    result = builder.build(dockerfile, {".dockerignore": "*.key\n**/*.key\n"})
    assert (rootfs(result.image, tmp_path / "out") / "got/a.key").read_text() == "k\n"


def test_copy_from_stage_index_and_stored_image(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE} AS builder\nRUN echo built > /artefact\n"
                  f"FROM {BASE}\nRUN echo second > /second\n"
                  "FROM scratch\n"
                  "COPY --from=builder /artefact /by-name\n"
                  "COPY --from=1 /second /by-index\n"
                  f"COPY --from={BASE} /etc/passwd /from-image\n")
    result = builder.build(dockerfile)
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "by-name").read_text() == "built\n"
    assert (root / "by-index").read_text() == "second\n"
    assert "app:x:1000" in (root / "from-image").read_text()
    assert len(result.image.layers) == 3


def test_copy_from_a_later_stage_is_an_error(builder: Builder) -> None:
    dockerfile = (f"FROM {BASE}\nCOPY --from=later /x /x\n"
                  f"FROM {BASE} AS later\nRUN true\n")
    with pytest.raises(ClocheError) as info:
        builder.build(dockerfile)
    assert ":2" in info.value.render()


def test_chown_by_name_and_chmod(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE}\n"
                  "COPY --chown=app:staff a.txt /owned-both\n"
                  "COPY --chown=app a.txt /owned-user\n"
                  "COPY --chown=1234 a.txt /owned-number\n"
                  "COPY --chmod=0750 a.txt /mode-octal\n"
                  "COPY --chmod=u=rwx,go=r a.txt /mode-symbolic\n"
                  "COPY --chown=app:staff --chmod=600 dir /owned-dir\n")
    files = {"a.txt": "a", "dir/inner.txt": "i"}
    os_mode_before = 0o644
    ctx_result = builder.build(dockerfile, files)
    root = rootfs(ctx_result.image, tmp_path / "out")
    assert owner_mode(root / "owned-both") == (1000, 50, os_mode_before)
    assert owner_mode(root / "owned-user") == (1000, 1000, os_mode_before)
    assert owner_mode(root / "owned-number")[:2] == (1234, 1234)
    assert owner_mode(root / "mode-octal") == (0, 0, 0o750)
    assert owner_mode(root / "mode-symbolic")[2] == 0o744
    assert owner_mode(root / "owned-dir/inner.txt") == (1000, 50, 0o600)


def test_chown_unknown_user_is_an_error_at_its_line(builder: Builder) -> None:
    with pytest.raises(ClocheError) as info:
        builder.build(f"FROM {BASE}\nRUN true\nCOPY --chown=nobody-here a /a\n", {"a": "a"})
    text = info.value.render()
    assert "nobody-here" in text and ":3" in text


def test_copy_heredoc(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE}\n"
                  "ARG NAME=world\n"
                  "COPY <<EOF /hello.txt\n"
                  "hello $NAME\n"
                  "EOF\n"
                  "COPY <<'RAW' /raw.txt\n"
                  "hello $NAME\n"
                  "RAW\n")
    result = builder.build(dockerfile)
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "hello.txt").read_text() == "hello world\n"
    assert (root / "raw.txt").read_text() == "hello $NAME\n"
    assert owner_mode(root / "hello.txt") == (0, 0, 0o644)


def _targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o640
            info.uid = info.gid = 7
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_add_local_targz_is_extracted(builder: Builder, tmp_path: Path) -> None:
    files = {"bundle.tar.gz": _targz({"pkg/one.txt": b"1", "pkg/two.txt": b"22"})}
    result = builder.build(f"FROM {BASE}\nADD bundle.tar.gz /opt/\n"
                           "COPY bundle.tar.gz /copied/\n", files)
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "opt/pkg/two.txt").read_text() == "22"
    assert owner_mode(root / "opt/pkg/one.txt") == (7, 7, 0o640)  # the tar's owners kept
    assert (root / "copied/bundle.tar.gz").is_file()  # COPY does not extract


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A directory served by http.server on 127.0.0.1 (base URL, directory)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_add_url_with_checksum(builder: Builder, http_dir: tuple[str, Path],
                               tmp_path: Path) -> None:
    base, served = http_dir
    data = b"remote payload\n"
    (served / "payload.txt").write_bytes(data)
    (served / "pkg.tar.gz").write_bytes(_targz({"x": b"x"}))
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    dockerfile = (f"FROM {BASE}\n"
                  f"ADD --checksum={digest} {base}/payload.txt /dl/\n"
                  f"ADD {base}/pkg.tar.gz /dl/\n")
    result = builder.build(dockerfile)
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "dl/payload.txt").read_bytes() == data
    assert owner_mode(root / "dl/payload.txt") == (0, 0, 0o600)  # BuildKit's mode for URLs
    assert (root / "dl/pkg.tar.gz").is_file()  # a remote archive is not extracted


def test_add_url_with_wrong_checksum_fails(builder: Builder, http_dir: tuple[str, Path],
                                          monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    # also: plain http needs no CA certificates (this one's SSL_CERT_FILE names no file)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.crt"))
    base, served = http_dir
    (served / "payload.txt").write_bytes(b"changed\n")
    wrong = "sha256:" + hashlib.sha256(b"expected\n").hexdigest()
    with pytest.raises(ClocheError) as info:
        builder.build(f"FROM {BASE}\nADD --checksum={wrong} {base}/payload.txt /p\n")
    assert ":2" in info.value.render()
    assert "checksum" in info.value.render().lower() or "digest" in info.value.render().lower()


def test_add_https_without_ca_certificates_is_a_clear_error(
        builder: Builder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.crt"))
    with pytest.raises(ClocheError) as info:
        builder.build(f"FROM {BASE}\nADD https://127.0.0.1:9/x /x\n")
    text = info.value.render()
    assert "CA certificates" in text and ":2" in text


def test_copy_never_reads_outside_the_context(builder: Builder, tmp_path: Path) -> None:
    outside = tmp_path / "outside-secret"
    outside.write_text("do not copy")
    ctx = builder.context(f"FROM {BASE}\nCOPY link /got\n")
    (ctx / "link").symlink_to(outside)
    result_ok = None
    try:
        from cloche import api
        from cloche.engine.options import BuildOptions
        result_ok = api.build(BuildOptions(context=str(ctx), root=builder.root))
    except ClocheError:
        return  # refusing is fine
    got = rootfs(result_ok.image, tmp_path / "out") / "got"
    assert not (got.is_file() and got.read_text() == "do not copy")


def test_copy_from_a_stage_does_not_resurrect_deleted_files(builder: Builder,
                                                             tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE} AS a\n"
                  "RUN mkdir -p /d/sub && echo 1 > /d/one && echo 2 > /d/sub/two\n"
                  "RUN rm /d/one && rm -r /d/sub && echo 3 > /d/three\n"
                  "FROM scratch\nCOPY --from=a /d /copied\n")
    result = builder.build(dockerfile)
    root = rootfs(result.image, tmp_path / "out")
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == ["copied",
                                                                        "copied/three"]
    names = [m.name for m in layer_members(result.image.layers[0])]
    assert not any(".wh." in n for n in names), names
