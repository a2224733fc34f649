"""Real clients read what the store writes, and the store reads what Docker writes.

`cloche import` of the busybox fixture, then: `docker load` + `docker run` of the
docker-archive, `skopeo inspect` and `umoci unpack` of the OCI archive, and `cloche load` of
a `docker save` file giving the same diff ids.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloche.cli.main import cli
from cloche.store import Store
from tests.fixtures.services import require_tool


def cloche(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> tuple[Path, str]:
    """A store holding the busybox fixture imported under a unique name; (root, name)."""
    root = tmp_path_factory.mktemp("interop") / "store"
    name = f"cloche-test/busybox-{uuid.uuid4().hex[:10]}:1"
    cloche("import", "--root", str(root), str(busybox_rootfs), name, "-c", 'CMD ["/bin/sh"]',
           "-c", "ENV GREETING=from-cloche")
    return root, name


@pytest.fixture
def docker_image(docker: str, imported: tuple[Path, str], tmp_path: Path) -> Iterator[str]:
    """The imported image, saved as a docker-archive and loaded into the Docker engine."""
    root, name = imported
    archive = tmp_path / "image.tar"
    cloche("save", "--root", str(root), name, "-o", str(archive), "--format", "docker")
    done = subprocess.run([docker, "load", "-i", str(archive)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"Loaded image: {name}" in done.stdout
    try:
        yield name
    finally:
        subprocess.run([docker, "rmi", "-f", name], capture_output=True)


def test_docker_runs_the_saved_image(docker: str, docker_image: str) -> None:
    done = subprocess.run([docker, "run", "--rm", docker_image, "/bin/busybox", "echo", "hi"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hi\n"
    done = subprocess.run([docker, "run", "--rm", docker_image, "/bin/sh", "-c", "echo $GREETING"],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout == "from-cloche\n"


def test_cloche_loads_what_docker_saves(docker: str, docker_image: str,
                                        imported: tuple[Path, str], tmp_path: Path) -> None:
    archive = tmp_path / "docker-saved.tar"
    subprocess.run([docker, "save", "-o", str(archive), docker_image], check=True)
    other = tmp_path / "other-store"
    out = cloche("load", "--root", str(other), "-i", str(archive))
    assert out == f"Loaded image: {docker_image}\n"
    original = Store.open(imported[0]).image(imported[1])
    loaded = Store.open(other).image(docker_image)
    assert loaded.config.diff_ids == original.config.diff_ids
    assert loaded.config_digest == original.config_digest  # docker keeps the config bytes
    with loaded.layers[0].open_uncompressed() as f:  # verifies the diff id as it reads
        with tarfile.open(fileobj=f, mode="r|") as tar:
            assert "bin/busybox" in {m.name for m in tar}


def test_skopeo_reads_the_oci_archive(imported: tuple[Path, str], tmp_path: Path) -> None:
    skopeo = require_tool("skopeo", "apt-get install skopeo")
    root, name = imported
    archive = tmp_path / "image-oci.tar"
    cloche("save", "--root", str(root), name, "-o", str(archive))
    done = subprocess.run([skopeo, "inspect", f"oci-archive:{archive}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    image = Store.open(root).image(name)
    assert doc["Digest"] == str(image.digest)
    assert doc["Layers"] == [str(layer.digest) for layer in image.layers]
    assert "GREETING=from-cloche" in doc["Env"]
    done = subprocess.run([skopeo, "inspect", "--config", f"oci-archive:{archive}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rootfs"]["diff_ids"] == [str(d) for d in image.config.diff_ids]


def test_store_root_is_an_oci_layout_umoci_unpacks(imported: tuple[Path, str],
                                                   tmp_path: Path) -> None:
    umoci = require_tool("umoci", "apt-get install umoci")
    root, name = imported
    canonical = Store.open(root).names()[0][0]
    bundle = tmp_path / "bundle"
    done = subprocess.run([umoci, "unpack", "--image", f"{root}:{canonical}", str(bundle)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()
    assert (bundle / "rootfs" / "bin" / "sh").is_symlink()
