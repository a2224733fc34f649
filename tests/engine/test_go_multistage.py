"""The classic multi-stage proof: examples/go-hello, a Go program compiled in a golang image
and copied alone into a distroless/static-like image, both made on this machine
(tests/fixtures/golang.py) and pulled by cloche from a loopback registry.

What is checked with real parts: Docker loads the docker-archive cloche writes and runs it; the
final image is the runtime base's layers plus one layer with the binary (diff_ids compared with
the base's config as the registry serves it); Docker's flattened filesystem holds no Go
toolchain and no shell; the size is printed and is a small fraction of the golang image's.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloche.store import Store
from tests.fixtures.golang import GO_HELLO, GoBaseImages
from tests.fixtures.services import require_tool

# The debootstrap of the golang image (a few minutes, once a session) counts in the first
# test's time.
pytestmark = [pytest.mark.root, pytest.mark.registry, pytest.mark.docker,
              pytest.mark.timeout(3600)]

CLOCHE = [sys.executable, "-m", "cloche.cli.main"]
GREETING = "Hello, world, from a cloche-built image!"
BINARY = "usr/local/bin/go-hello"


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def cloche_build(bases: GoBaseImages, *args: str) -> subprocess.CompletedProcess[str]:
    return run(CLOCHE + ["build", "--root", str(bases.store), "--progress", "plain",
                         *bases.build_args, *args, str(GO_HELLO)])


@dataclass(frozen=True)
class Built:
    """The example built to a docker-archive and loaded into the Docker engine as ``tag``."""

    archive: Path
    tag: str
    log: str
    manifest: dict
    config: dict


@pytest.fixture(scope="module")
def built(go_base_images: GoBaseImages, docker: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    tag = f"cloche-test/go-hello:{uuid.uuid4().hex[:10]}"
    archive = tmp_path_factory.mktemp("go-hello") / "go-hello.tar"
    proc = cloche_build(go_base_images, "-t", tag, "-o", f"type=docker,dest={archive}")
    with tarfile.open(archive) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(tf.extractfile(manifest["Config"]))  # type: ignore[arg-type]
    run([docker, "load", "-i", str(archive)])
    yield Built(archive, tag, proc.stdout + proc.stderr, manifest, config)
    subprocess.run([docker, "rmi", "-f", tag], capture_output=True)


def registry_config(ref: str) -> dict:
    """An image's config as the registry serves it, read by skopeo (not by cloche)."""
    skopeo = require_tool("skopeo")
    out = run([skopeo, "inspect", "--config", "--tls-verify=false", f"docker://{ref}"])
    return json.loads(out.stdout)


def uncompressed_size(store: Store, name: str) -> int:
    """Bytes of the image's layer tars, uncompressed (the measure Docker's SIZE uses)."""
    total = 0
    for layer in store.image(name).layers:
        with layer.open_uncompressed() as stream:
            while chunk := stream.read(1 << 20):
                total += len(chunk)
    return total


def archive_layers_size(archive: Path, manifest: dict) -> int:
    with tarfile.open(archive) as tf:
        return sum(tf.getmember(name).size for name in manifest["Layers"])


def test_build_runs_only_what_the_target_needs(built: Built) -> None:
    assert "skipped stage test" in built.log
    assert "go test" not in built.log
    assert "go version go1." in built.log  # `RUN go version` in the golang image works


def test_docker_runs_the_image(built: Built, docker: str) -> None:
    out = run([docker, "run", "--rm", built.tag]).stdout
    lines = out.splitlines()
    assert lines[0] == GREETING
    assert lines[1].startswith("built with go1.") and " for linux/" in lines[1]
    assert lines[2] == "running as uid 65532, not root"  # USER nonroot, from the base's passwd
    named = run([docker, "run", "--rm", "-e", "GREETING_NAME=docker", built.tag]).stdout
    assert named.splitlines()[0] == "Hello, docker, from a cloche-built image!"


def test_final_image_is_runtime_base_plus_the_binary(built: Built, docker: str,
                                                     go_base_images: GoBaseImages) -> None:
    base = registry_config(go_base_images.runtime)["rootfs"]["diff_ids"]
    golang = registry_config(go_base_images.golang)["rootfs"]["diff_ids"]
    ours = built.config["rootfs"]["diff_ids"]
    assert len(ours) == len(base) + 1
    assert ours[:-1] == base
    assert not set(ours) & set(golang)
    loaded = json.loads(run([docker, "image", "inspect", built.tag]).stdout)[0]
    assert loaded["RootFS"]["Layers"] == ours

    with tarfile.open(built.archive) as tf:
        layer = tf.extractfile(built.manifest["Layers"][-1])
        assert layer is not None
        with tarfile.open(fileobj=io.BytesIO(layer.read())) as lt:
            members = {m.name.removeprefix("./").rstrip("/"): m for m in lt.getmembers()}
    assert set(members) == {"usr", "usr/local", "usr/local/bin", BINARY}
    binary = members[BINARY]
    assert binary.isfile() and binary.mode & 0o111 and (binary.uid, binary.gid) == (0, 0)

    config = built.config["config"]
    assert config["User"] == "nonroot"
    assert config["Entrypoint"] == ["/" + BINARY]
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in config["Env"]  # from the base


def test_no_go_toolchain_in_the_flattened_image(built: Built, docker: str,
                                                tmp_path: Path) -> None:
    container = run([docker, "create", built.tag]).stdout.strip()
    try:
        exported = tmp_path / "rootfs.tar"
        run([docker, "export", "-o", str(exported), container])
    finally:
        subprocess.run([docker, "rm", "-f", container], capture_output=True)
    with tarfile.open(exported) as tf:
        names = {m.name.removeprefix("./").rstrip("/") for m in tf.getmembers()}
    assert BINARY in names and "etc/passwd" in names
    toolchain = sorted(n for n in names if n.startswith(("usr/lib/go", "usr/share/go", "go/"))
                       or os.path.basename(n) in ("go", "gofmt", "sh", "bash", "busybox"))
    assert not toolchain, f"the final image carries build-stage files: {toolchain[:10]}"


def test_final_image_size_is_a_fraction_of_golang(built: Built, docker: str,
                                                  go_base_images: GoBaseImages) -> None:
    store = Store.open(go_base_images.store)
    golang = uncompressed_size(store, go_base_images.golang)
    ours = archive_layers_size(built.archive, built.manifest)
    docker_size = json.loads(run([docker, "image", "inspect", built.tag]).stdout)[0]["Size"]
    print(f"\ngo-hello image: {ours / 1e6:.1f} MB of layers ({docker_size / 1e6:.1f} MB in Docker);"
          f" golang image: {golang / 1e6:.1f} MB; ratio {ours / golang:.2%}")
    assert 0 < ours < golang * 0.10
    assert 0 < docker_size < golang * 0.10


def test_flattened_output_runs_without_docker(go_base_images: GoBaseImages,
                                              tmp_path: Path) -> None:
    """The demo's path when no Docker engine answers: -o type=local, then run the binary."""
    dest = tmp_path / "rootfs"
    cloche_build(go_base_images, "-o", f"type=local,dest={dest}")
    assert not (dest / "usr/lib/go").exists() and not (dest / "bin").exists()
    out = run([str(dest / BINARY)], env={"GREETING_NAME": "local"}).stdout
    assert out.splitlines()[0] == "Hello, local, from a cloche-built image!"


def test_the_skipped_test_stage_passes_when_targeted(go_base_images: GoBaseImages) -> None:
    proc = cloche_build(go_base_images, "--target", "test", "-t",
                        f"cloche-test/go-hello-tests:{uuid.uuid4().hex[:10]}")
    log = proc.stdout + proc.stderr
    assert "--- PASS: TestGreeting" in log and "--- PASS: TestWhoAmI" in log
