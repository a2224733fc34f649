"""The store commands through click's runner and through the installed console script."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cloche.cli.main import cli
from cloche.store import Store

CLOCHE = str(Path(sys.executable).parent / "cloche")


def run(root: Path, *args: str, input: bytes | None = None, ok: bool = True) -> Result:
    result = CliRunner().invoke(cli, [args[0], "--root", str(root), *args[1:]], input=input)
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def imported(root: Path, busybox_rootfs: Path) -> str:
    """busybox imported as bb:1; returns the printed image ID."""
    out = run(root, "import", str(busybox_rootfs), "bb:1", "--change", 'CMD ["/bin/sh"]',
              "--change", "ENV PATH=/bin", "-c", "WORKDIR /home/app").output.strip()
    return out


def test_import_directory(root: Path, imported: str) -> None:
    assert imported.startswith("sha256:") and len(imported) == 71
    doc = json.loads(run(root, "inspect", "bb:1", "--format", "json").output)[0]
    assert doc["Id"] == imported
    assert doc["RepoTags"] == ["bb:1"]
    # the changes mean what they mean in a Dockerfile: CMD sets ArgsEscaped as BuildKit does
    assert doc["Config"] == {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/home/app",
                             "ArgsEscaped": True}
    assert doc["Os"] == "linux" and doc["Architecture"]
    assert len(doc["Layers"]) == 1 and doc["Layers"][0]["Size"] > 100_000
    assert doc["History"][0]["comment"].startswith("Imported from ")
    image = Store.open(root).image("bb:1")
    with image.layers[0].open_uncompressed() as f, tarfile.open(fileobj=f, mode="r|") as tar:
        names = {m.name for m in tar}
    assert {"bin/busybox", "bin/sh", "etc/passwd"} <= names


def test_import_tar_variants_give_the_same_layer(root: Path, busybox_rootfs: Path,
                                                 tmp_path: Path, imported: str) -> None:
    plain = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "-C", str(busybox_rootfs), "-cf", str(plain), "."], check=True)
    compressed = tmp_path / "rootfs.tar.gz"
    compressed.write_bytes(gzip.compress(plain.read_bytes()))
    run(root, "import", str(plain), "bb:plain")
    run(root, "import", str(compressed), "bb:gz")
    run(root, "import", "-", "bb:stdin", input=plain.read_bytes())
    store = Store.open(root)
    diff_ids = {store.image(n).config.diff_ids for n in ("bb:plain", "bb:gz", "bb:stdin")}
    assert len(diff_ids) == 1
    assert _entries(store, "bb:plain") == _entries(store, "bb:1")  # same files, tar's order


def _entries(store: Store, name: str) -> set[tuple[str, str, int, int, str]]:
    from cloche.layers.reader import LayerReader

    with store.image(name).layers[0].open() as f:
        return {(e.path, e.type.value, e.mode, e.uid, e.linkname) for e, _ in LayerReader(f)}


def test_import_platform_and_message(root: Path, busybox_rootfs: Path) -> None:
    run(root, "import", str(busybox_rootfs), "arm:1", "--platform", "linux/arm64", "-m", "hello")
    doc = json.loads(run(root, "inspect", "arm:1", "--format", "json").output)[0]
    assert (doc["Os"], doc["Architecture"]) == ("linux", "arm64")
    assert doc["History"][0]["comment"] == "hello"


def test_import_refuses_escaping_tar(root: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../../etc/evil")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    result = run(root, "import", str(evil), "evil", ok=False)
    assert result.exit_code == 1
    assert "error:" in result.output and "evil.tar" in result.output
    assert "Traceback" not in result.output
    assert Store.open(root).names() == []
    assert list(Store.open(root).blobs.digests()) == []


def test_import_bad_inputs(root: Path, tmp_path: Path, busybox_rootfs: Path) -> None:
    result = run(root, "import", str(tmp_path / "missing.tar"), "x", ok=False)
    assert result.exit_code == 1 and "missing.tar" in result.output
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar at all" * 40)
    result = run(root, "import", str(junk), "x", ok=False)
    assert result.exit_code == 1 and "junk.tar" in result.output
    result = run(root, "import", str(busybox_rootfs), "x", "-c", "RUN rm -rf /", ok=False)
    assert result.exit_code == 1 and "RUN cannot be used with import" in result.output
    result = run(root, "import", str(busybox_rootfs), "Bad:Name!", ok=False)
    assert result.exit_code == 1 and "invalid reference" in result.output


def test_images_table_and_json(root: Path, imported: str) -> None:
    run(root, "tag", "bb:1", "localhost:5000/tools/bb")
    table = run(root, "images").output.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    rows = [line.split() for line in table[1:]]
    short = imported.split(":")[1][:12]
    assert [r[:3] for r in rows] == [["bb", "1", short], ["localhost:5000/tools/bb", "latest", short]]
    lines = run(root, "images", "--format", "json").output.splitlines()
    docs = [json.loads(line) for line in lines]
    assert [(d["Repository"], d["Tag"], d["ID"]) for d in docs] == [
        ("bb", "1", imported), ("localhost:5000/tools/bb", "latest", imported)]
    assert all(d["Size"] > 100_000 and d["CreatedAt"] for d in docs)
    assert run(root, "images", "-q").output.split() == [short]
    assert run(root, "images", "bb").output.count("\n") == 2  # header and one row


def test_tag_by_id_and_errors(root: Path, imported: str) -> None:
    run(root, "tag", imported.split(":")[1][:8], "other:2")
    assert Store.open(root).resolve("other:2") == Store.open(root).resolve("bb:1")
    result = run(root, "tag", "nosuch", "x", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("error: no such image: nosuch")
    assert "Traceback" not in result.output


def test_inspect_text(root: Path, imported: str) -> None:
    out = run(root, "inspect", "-f", "text", "bb:1").output
    assert f"ID:            {imported}" in out
    assert "Names:         bb:1" in out
    assert 'Cmd:           ["/bin/sh"]' in out
    assert "Layers (1," in out and "History:" in out and "Imported from" in out


def test_rmi(root: Path, imported: str) -> None:
    run(root, "tag", "bb:1", "bb:2")
    out = run(root, "rmi", "bb:1").output
    assert out == "Untagged: bb:1\n"
    result = run(root, "rmi", "bb:1", ok=False)
    assert result.exit_code == 1 and "no such image: bb:1" in result.output
    run(root, "tag", "bb:2", "bb:3")
    result = run(root, "rmi", imported, ok=False)  # two names: must be forced
    assert result.exit_code == 1 and "must be forced" in result.output
    out = run(root, "rmi", "--force", imported).output
    assert out == f"Untagged: bb:2\nUntagged: bb:3\nDeleted: {imported}\n"
    assert run(root, "images", "-q").output == ""
    store = Store.open(root)
    assert store.gc(grace_seconds=0).blobs_removed == 3  # manifest, config, layer
    assert list(store.blobs.digests()) == []


def test_save_and_load_round_trip(root: Path, imported: str, tmp_path: Path) -> None:
    for fmt in ("oci", "docker"):
        archive = tmp_path / f"bb-{fmt}.tar"
        run(root, "save", "bb:1", "-o", str(archive), "--format", fmt)
        other = tmp_path / f"store-{fmt}"
        out = run(other, "load", "-i", str(archive)).output
        assert out == "Loaded image: bb:1\n"
        loaded = Store.open(other).image("bb:1")
        original = Store.open(root).image("bb:1")
        assert loaded.config_digest == original.config_digest
        assert loaded.config.diff_ids == original.config.diff_ids
    gz = tmp_path / "bb.tar.gz"
    gz.write_bytes(gzip.compress((tmp_path / "bb-docker.tar").read_bytes()))
    assert run(tmp_path / "store-gz", "load", "-i", str(gz)).output == "Loaded image: bb:1\n"


def test_save_by_id_loads_without_a_name(root: Path, imported: str, tmp_path: Path) -> None:
    archive = tmp_path / "anon.tar"
    run(root, "save", imported, "-o", str(archive))
    out = run(tmp_path / "other", "load", "-i", str(archive)).output
    assert out == f"Loaded image ID: {imported}\n"
    assert "<none>" in run(tmp_path / "other", "images").output


def test_load_rejects_other_files(root: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 100 + b"junk")
    result = run(root, "load", "-i", str(junk), ok=False)
    assert result.exit_code == 1 and "junk" in result.output and "Traceback" not in result.output
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.addfile(tarfile.TarInfo("hello"), io.BytesIO(b""))
    result = run(root, "load", "-i", str(plain), ok=False)
    assert result.exit_code == 1 and "neither an OCI archive" in result.output


def test_root_from_environment(tmp_path: Path, busybox_rootfs: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOCHE_ROOT", str(tmp_path / "env-store"))
    assert CliRunner().invoke(cli, ["import", str(busybox_rootfs), "envimg"]).exit_code == 0
    assert Store.open(tmp_path / "env-store").names()[0][0] == "docker.io/library/envimg:latest"


def test_console_script(tmp_path: Path, busybox_rootfs: Path) -> None:
    root = str(tmp_path / "store")
    done = subprocess.run([CLOCHE, "import", "--root", root, str(busybox_rootfs), "cs:1"],
                          capture_output=True, text=True, check=True)
    image_id = done.stdout.strip()
    done = subprocess.run([CLOCHE, "images", "--root", root, "--format", "json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["ID"] == image_id
    done = subprocess.run([CLOCHE, "inspect", "--root", root, "nope:1"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("error: no such image: nope:1")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_save_to_stdout_and_load_from_stdin(root: Path, imported: str, tmp_path: Path) -> None:
    saved = CliRunner().invoke(cli, ["save", "--root", str(root), "bb:1", "--format", "docker"])
    assert saved.exit_code == 0, saved.output
    data = saved.stdout_bytes
    assert data[257:262] == b"ustar"
    out = run(tmp_path / "piped", "load", input=data).output
    assert out == "Loaded image: bb:1\n"
    assert Store.open(tmp_path / "piped").image("bb:1").config_digest.hex == imported[7:]


def test_threads_tagging_in_one_process_lose_no_tag(root: Path, imported: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = Store.open(root)
    desc = store.resolve("bb:1")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: store.tag(f"t:{i}", desc), range(40)))
    assert len(store.names()) == 41


def test_loading_a_docker_archive_of_a_stored_image_adds_only_names(
        root: Path, imported: str, tmp_path: Path) -> None:
    archive = tmp_path / "bb.tar"
    run(root, "save", "bb:1", "-o", str(archive), "--format", "docker")
    store = Store.open(root)
    before = store.resolve("bb:1")
    run(root, "tag", "bb:1", "bb:keep")
    run(root, "rmi", "bb:1")
    assert run(root, "load", "-i", str(archive)).output == "Loaded image: bb:1\n"
    assert store.resolve("bb:1") == before  # the gzip layers, not a second uncompressed copy
    assert [s.name for s in store.list_images()] == ["docker.io/library/bb:1",
                                                     "docker.io/library/bb:keep"]


def test_load_of_a_tampered_archive_stores_nothing(root: Path, imported: str,
                                                    tmp_path: Path) -> None:
    archive = tmp_path / "bb.tar"
    run(root, "save", "bb:1", "-o", str(archive))
    layer = Store.open(root).image("bb:1").layers[0]
    with tarfile.open(archive) as tar:
        member = tar.getmember(f"blobs/sha256/{layer.digest.hex}")
    data = bytearray(archive.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0xFF  # one flipped bit in the layer
    archive.write_bytes(bytes(data))
    other = tmp_path / "other"
    result = run(other, "load", "-i", str(archive), ok=False)
    assert result.exit_code != 0 and "digest" in result.output and "Traceback" not in result.output
    store = Store.open(other)
    assert store.names() == []
    assert not store.blobs.exists(layer.digest)
    assert list(store.blobs.tmp_dir.iterdir()) == []
