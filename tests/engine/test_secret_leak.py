"""A build secret never reaches a layer, the config, the history, a cache record or the log.

The search looks at every byte the build left behind: every file under the store root, with
gzip/zstd blobs also decompressed, and the whole progress output. The control build passes the
same value as a build ARG, where BuildKit's semantics put it in the history: the same search
finds it there, so a search that finds nothing means something.
"""

from __future__ import annotations

import gzip
import io
import os
import uuid
from pathlib import Path

import zstandard

from tests.engine.conftest import BASE, Builder, rootfs


def occurrences(root: Path, needle: bytes) -> list[str]:
    """Paths under ``root`` whose bytes, or decompressed bytes, contain ``needle``."""
    found = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            if needle in data:
                found.append(str(path))
                continue
            try:
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                elif data[:4] == b"\x28\xb5\x2f\xfd":
                    data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
                else:
                    continue
            except (OSError, EOFError, zstandard.ZstdError):
                continue
            if needle in data:
                found.append(f"{path} (decompressed)")
    return found


SECRET_DOCKERFILE = f"""\
FROM {BASE} AS build
RUN --mount=type=secret,id=token test "$(cat /run/secrets/token)" != "" \\
    && sha256sum /run/secrets/token | cut -c1-64 > /token.sha
RUN --mount=type=secret,id=token,target=/etc/app/token,required=true \\
    ls -l /etc/app/token > /mode.txt && cat /etc/app/token | wc -c > /length.txt
FROM {BASE}
COPY --from=build /token.sha /mode.txt /length.txt /
"""


def test_secret_is_nowhere_but_the_step(builder: Builder, tmp_path: Path) -> None:
    value = f"s3cr3t-{uuid.uuid4().hex}"
    secret_file = tmp_path / "token"
    secret_file.write_text(value)
    ctx = builder.context(SECRET_DOCKERFILE)
    result = builder.cli("build", "--progress", "plain", "--secret", f"id=token,src={secret_file}",
                         "-t", "secretive:1", "-o", f"type=oci,dest={tmp_path / 'out.tar'}",
                         str(ctx))
    log = result.stdout + result.stderr
    # The step saw the secret: its hash, its size, its mode (0400 by default).
    tree = rootfs(builder.store.image("secretive:1"), tmp_path / "tree")
    import hashlib
    assert (tree / "token.sha").read_text().strip() == hashlib.sha256(value.encode()).hexdigest()
    assert (tree / "length.txt").read_text().strip() == str(len(value))
    assert (tree / "mode.txt").read_text().startswith("-r--------")
    needle = value.encode()
    assert occurrences(builder.root, needle) == []
    assert needle not in (tmp_path / "out.tar").read_bytes()
    assert value not in log
    assert not list(Path("/dev/shm").glob("cloche-secret-*")), "the tmpfs copy is removed"


def test_control_the_search_finds_a_build_arg(builder: Builder) -> None:
    value = f"n0t-s3cr3t-{uuid.uuid4().hex}"
    ctx = builder.context(f"FROM {BASE}\nARG TOKEN\nRUN echo \"$TOKEN\" | wc -c > /length\n")
    builder.cli("build", "--progress", "quiet", "--build-arg", f"TOKEN={value}", str(ctx))
    assert occurrences(builder.root, value.encode()), "a build ARG is in the history"


def test_missing_required_secret_fails_clearly(builder: Builder) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN --mount=type=secret,id=npmrc,required \\\n"
                          "    cat /run/secrets/npmrc\n")
    result = builder.cli("build", "--progress", "plain", str(ctx), check=False)
    assert result.returncode != 0
    assert "secret npmrc is required" in result.stderr
    assert "Dockerfile:2" in result.stderr and "Traceback" not in result.stderr


def test_optional_missing_secret_is_simply_absent(builder: Builder) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN --mount=type=secret,id=maybe "
                          "test ! -e /run/secrets/maybe && echo ok > /ok\n")
    builder.cli("build", "--progress", "quiet", "-t", "opt:1", str(ctx))
    assert (rootfs(builder.store.image("opt:1"), builder.dir / "t") / "ok").exists()


def test_a_secret_the_step_prints_is_masked(builder: Builder, tmp_path: Path) -> None:
    value = f"pr1nted-{uuid.uuid4().hex}"
    (tmp_path / "x").write_text(value + "\n")
    ctx = builder.context(f"FROM {BASE}\nRUN --mount=type=secret,id=x "
                          "cat /run/secrets/x && echo \"len $(wc -c < /run/secrets/x)\" && exit 1\n")
    result = builder.cli("build", "--progress", "plain", "--secret", f"id=x,src={tmp_path / 'x'}",
                         str(ctx), check=False)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert value not in out
    assert "****" in out and "len 41" in out  # the rest of the output is kept
