"""ADD: local archives extracted safely (every compression), URLs downloaded from a loopback server."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import zstandard

from cloche.engine.add import add_into
from cloche.engine.context import context_from_directory
from cloche.engine.copy import CopyDestinationError, CopyRequest
from cloche.engine.extract import is_tar_archive
from cloche.engine.remote import DownloadError
from cloche.engine.sources import SourceTree
from cloche.errors import UnsafePathError
from cloche.oci.digest import DigestMismatchError
from tests.fixtures.services import require_root

MTIME = 1_500_000_000


def make_tar(entries: list[tuple[str, str, object]]) -> bytes:
    """A tar from (name, kind, payload): kind is file, dir, symlink, hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            info.uid, info.gid = 1000, 1001
            if kind == "file":
                data = str(payload).encode()
                info.size, info.mode = len(data), 0o640
                tf.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o750
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
            tf.addfile(info)
    return buf.getvalue()


COMPRESSORS = {
    "plain": lambda b: b,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}

GOOD = [("app", "dir", None), ("app/bin", "dir", None), ("app/bin/tool", "file", "#!/bin/sh\n"),
        ("app/link", "symlink", "bin/tool"), ("app/hard", "hardlink", "app/bin/tool")]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
    (r / "etc" / "group").write_text("root:x:0:\napp:x:1000:\n")
    return r


def ctx_with(tmp_path: Path, name: str, data: bytes) -> SourceTree:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / name).write_bytes(data)
    return context_from_directory(ctx).tree


def add(tree: SourceTree, root: Path, *sources: str, dest: str, **kw: object):
    checksum = kw.pop("checksum", None)
    return add_into(CopyRequest(tuple(sources), dest, instruction="ADD", **kw),  # type: ignore[arg-type]
                    tree, root, checksum=checksum)  # type: ignore[arg-type]


@pytest.mark.parametrize("compression", list(COMPRESSORS))
def test_local_archive_is_extracted(tmp_path: Path, root: Path, compression: str) -> None:
    require_root()
    tree = ctx_with(tmp_path, "bundle.bin", COMPRESSORS[compression](make_tar(GOOD)))
    add(tree, root, "bundle.bin", dest="/opt")  # no trailing slash: still a directory
    tool = root / "opt" / "app" / "bin" / "tool"
    assert tool.read_text() == "#!/bin/sh\n"
    # the hard link entry comes last and its header (mode 0644) is applied to the shared inode
    assert stat.S_IMODE(tool.stat().st_mode) == 0o644
    assert (tool.stat().st_uid, tool.stat().st_gid) == (1000, 1001)  # owners from the tar
    assert int(tool.stat().st_mtime) == MTIME
    assert stat.S_IMODE((root / "opt" / "app" / "bin").stat().st_mode) == 0o750
    assert int((root / "opt" / "app" / "bin").stat().st_mtime) == MTIME
    assert os.readlink(root / "opt" / "app" / "link") == "bin/tool"
    assert (root / "opt" / "app" / "hard").stat().st_ino == tool.stat().st_ino


def test_chown_applies_to_every_extracted_entry(tmp_path: Path, root: Path) -> None:
    """Current BuildKit (solver/llbsolver/file/unpack.go: ChownOpts) owns every unpacked entry,
    links included, by --chown; the Docker engine's v0.8 kept the tar's owners."""
    require_root()
    tree = ctx_with(tmp_path, "b.tar.gz", gzip.compress(make_tar(GOOD)))
    add(tree, root, "b.tar.gz", dest="/x/", chown="app")
    for path in (root / "x").rglob("*"):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (1000, 1000), path
    assert os.lstat(root / "x").st_uid == 1000        # the created destination is the user's
    assert stat.S_IMODE(os.lstat(root / "x" / "app" / "bin").st_mode) == 0o750  # modes kept


def test_not_a_tar_is_copied_as_a_file(tmp_path: Path, root: Path) -> None:
    tree = ctx_with(tmp_path, "fake.tar.gz", b"just text, whatever the name says")
    assert not is_tar_archive(tree.root / "fake.tar.gz")
    add(tree, root, "fake.tar.gz", dest="/x/")
    assert (root / "x" / "fake.tar.gz").read_bytes().startswith(b"just text")
    empty = ctx_with(tmp_path, "gz-text", gzip.compress(b"compressed text, not a tar"))
    add(empty, root, "gz-text", dest="/y/")
    assert (root / "y" / "gz-text").exists()


@pytest.mark.parametrize(("entries", "needle"), [
    ([("../escape.txt", "file", "x")], "../escape.txt"),
    ([("ok/../../escape.txt", "file", "x")], "ok/../../escape.txt"),
    ([("up", "symlink", "../../.."), ("up/escape.txt", "file", "x")], "../../.."),
    ([("hl", "hardlink", "../../outside/secret")], "../../outside/secret"),
])
def test_malicious_tar_cannot_escape(tmp_path: Path, root: Path,
                                     entries: list[tuple[str, str, object]], needle: str) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s")
    tree = ctx_with(tmp_path, "evil.tar", make_tar(entries))
    before = sorted(p.name for p in tmp_path.rglob("*") if root not in p.parents)
    with pytest.raises(UnsafePathError) as info:
        add(tree, root, "evil.tar", dest="/x/")
    assert needle in str(info.value)
    assert sorted(p.name for p in tmp_path.rglob("*") if root not in p.parents) == before
    assert not (tmp_path / "escape.txt").exists() and not (root / "escape.txt").exists()


def test_absolute_names_and_links_stay_in_the_destination(tmp_path: Path, root: Path) -> None:
    entries = [("/abs.txt", "file", "a"), ("etc", "symlink", "/etc"),
               ("target", "dir", None), ("via", "symlink", "/target"),
               ("via/through-link.txt", "file", "w")]
    tree = ctx_with(tmp_path, "t.tar", make_tar(entries))
    add(tree, root, "t.tar", dest="/x/")
    assert (root / "x" / "abs.txt").read_text() == "a"
    assert os.readlink(root / "x" / "etc") == "/etc"  # kept as a link, never followed out
    # links are resolved with the extraction directory as the root, as Docker's chroot does
    assert (root / "x" / "target" / "through-link.txt").read_text() == "w"
    assert not Path("/target").exists()


def test_link_loop_in_a_tar_is_an_error(tmp_path: Path, root: Path) -> None:
    entries = [("etc", "symlink", "/etc"), ("etc/passwd", "file", "x")]
    tree = ctx_with(tmp_path, "t.tar", make_tar(entries))
    with pytest.raises(UnsafePathError, match="too many levels of symbolic links"):
        add(tree, root, "t.tar", dest="/x/")
    assert (root / "etc" / "passwd").read_text().startswith("root:")


def test_checksum_needs_a_url(tmp_path: Path, root: Path) -> None:
    tree = ctx_with(tmp_path, "f", b"x")
    with pytest.raises(CopyDestinationError, match="checksum"):
        add(tree, root, "f", dest="/x/", checksum="sha256:" + "0" * 64)


# ---- URLs, served by a real HTTP server on loopback


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/disposition"):
            body = b"named by header"
            self.send_response(200)
            self.send_header("Content-Disposition", 'attachment; filename="from-header.txt"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    docs = tmp_path / "www"
    (docs / "files").mkdir(parents=True)
    handler = lambda *a, **k: _Handler(*a, directory=str(docs), **k)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", docs
    finally:
        server.shutdown()
        server.server_close()


def test_url_download_mode_mtime_and_checksum(tmp_path: Path, root: Path,
                                              web: tuple[str, Path]) -> None:
    base, docs = web
    payload = b"#!/bin/sh\necho downloaded\n"
    (docs / "files" / "tool.sh").write_bytes(payload)
    os.utime(docs / "files" / "tool.sh", (MTIME, MTIME))
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    tree = context_from_directory(tmp_path / "www").tree
    add(tree, root, f"{base}/files/tool.sh", dest="/usr/local/bin/", checksum=digest)
    got = root / "usr" / "local" / "bin" / "tool.sh"
    assert got.read_bytes() == payload
    assert stat.S_IMODE(got.stat().st_mode) == 0o600
    assert int(got.stat().st_mtime) == MTIME  # Last-Modified
    assert (got.stat().st_uid, got.stat().st_gid) == (0, 0)


def test_url_name_from_destination_and_header(tmp_path: Path, root: Path,
                                              web: tuple[str, Path]) -> None:
    base, docs = web
    (docs / "files" / "a.tar").write_bytes(make_tar(GOOD))
    tree = context_from_directory(tmp_path / "www").tree
    add(tree, root, f"{base}/files/a.tar", dest="/opt/renamed.tar", chmod="0755")
    renamed = root / "opt" / "renamed.tar"
    assert renamed.is_file()                       # a downloaded tar is not extracted
    assert stat.S_IMODE(renamed.stat().st_mode) == 0o755
    add(tree, root, f"{base}/disposition?x=1", dest="/d/")
    assert (root / "d" / "from-header.txt").read_bytes() == b"named by header"


def test_url_checksum_mismatch_leaves_nothing(tmp_path: Path, root: Path,
                                              web: tuple[str, Path]) -> None:
    base, docs = web
    (docs / "files" / "f.bin").write_bytes(b"real bytes")
    tree = context_from_directory(tmp_path / "www").tree
    with pytest.raises(DigestMismatchError) as info:
        add(tree, root, f"{base}/files/f.bin", dest="/dl/", checksum="sha256:" + "a" * 64)
    assert "f.bin" in str(info.value)
    assert not (root / "dl").exists()


def test_url_not_found(tmp_path: Path, root: Path, web: tuple[str, Path]) -> None:
    base, _ = web
    tree = context_from_directory(tmp_path / "www").tree
    with pytest.raises(DownloadError) as info:
        add(tree, root, f"{base}/files/missing", dest="/dl/")
    assert info.value.status == 404 and "/files/missing" in str(info.value)


def test_download_without_ca_bundle(tmp_path: Path, web: tuple[str, Path],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from cloche.engine.remote import download

    base, docs = web
    (docs / "files" / "f.bin").write_bytes(b"plain http needs no certificates")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing-ca.pem"))
    out = tmp_path / "dl"
    out.mkdir()
    got = download(f"{base}/files/f.bin", out)
    assert got.path.read_bytes().startswith(b"plain http")
    with pytest.raises(DownloadError, match="CA certificates"):
        download("https://127.0.0.1:9/x", out)


@pytest.mark.parametrize("disposition, url, name", [
    ('attachment; filename="../../etc/passwd"', "http://h/x", "passwd"),
    ('attachment; filename=".."', "http://h/dl/tool", "tool"),
    ('attachment; filename="/abs/evil.sh"', "http://h/x", "evil.sh"),
    (None, "http://h/a/..", "download"),
])
def test_a_download_name_never_climbs(disposition: str | None, url: str, name: str) -> None:
    """A server's Content-Disposition or URL names the file (ADD, an HTTP named context): its
    last segment only, never a path out of the folder it is written in."""
    import httpx

    from cloche.engine.remote import filename_for

    headers = httpx.Headers({"content-disposition": disposition} if disposition else {})
    assert filename_for(url, headers, None) == name
