"""`compression=`, `compression-level=` and `force-compression=` of the image outputs, as
BuildKit's exporters honour them: the layers the build made are written in the asked
compression, the base image's keep theirs unless forced; the diff ids and the config (the
image ID) never change. Read back by skopeo, umoci, `docker load` and a registry."""

from __future__ import annotations

import json
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from cloche.compression import Compression
from cloche.engine.output_attrs import compression_of
from cloche.errors import ConfigError
from cloche.oci import mediatypes as mt
from cloche.store import Store
from tests.engine.conftest import BASE, CLOCHE, Builder
from tests.fixtures.services import require_tool

# the final stage: the base's one layer (stored gzip-compressed) and one layer of the build
APP = (f"FROM {BASE}\n"
       "RUN printf '#!/bin/sh\\necho hello from cloche \"$@\"\\n' > /hello && chmod 755 /hello"
       " && head -c 200000 /bin/busybox > /filler\n"
       'ENTRYPOINT ["/hello"]\n')
MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}


def _kind(blob: bytes) -> str:
    return next((k for k, m in MAGIC.items() if blob.startswith(m)), "none")


def _archive(path: Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest of the one image in an OCI archive, and its blobs by digest."""
    with tarfile.open(path) as tar:
        blobs = {f"sha256:{m.name.rsplit('/', 1)[1]}":
                 tar.extractfile(m).read()  # type: ignore[union-attr]
                 for m in tar.getmembers() if m.name.startswith("blobs/sha256/")}
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    return json.loads(blobs[index["manifests"][0]["digest"]]), blobs


def _stored(builder: Builder, name: str) -> tuple[str, list[str]]:
    image = builder.store.image(name)
    return str(image.config_digest), [str(d) for d in image.config.diff_ids]


@pytest.mark.parametrize(("attrs", "kinds"), [
    ("", ["gzip", "gzip"]),
    (",compression=zstd", ["gzip", "zstd"]),
    (",compression=zstd,force-compression=true", ["zstd", "zstd"]),
    (",compression=uncompressed", ["gzip", "none"]),
    (",compression=uncompressed,force-compression", ["none", "none"]),
    (",compression=gzip,compression-level=9,force-compression=true", ["gzip", "gzip"]),
])
def test_oci_archive_layers_in_the_asked_compression(builder: Builder, tmp_path: Path,
                                                     attrs: str, kinds: list[str]) -> None:
    """The build's layer as asked, the base's as stored unless forced; media types and
    the bytes (by magic) agree; config and diff ids are the store's; skopeo reads it."""
    skopeo = require_tool("skopeo")
    ctx = builder.context(APP)
    out = tmp_path / "image.tar"
    builder.cli("build", "-t", "comp/app:1", "-o", f"type=oci,dest={out}{attrs}", str(ctx))
    manifest, blobs = _archive(out)
    layers = manifest["layers"]
    assert [mt.layer_compression(x["mediaType"]) for x in layers] == kinds
    assert [_kind(blobs[x["digest"]]) for x in layers] == kinds
    assert all(not x["mediaType"].startswith("application/vnd.docker") for x in layers)
    config_digest, diff_ids = _stored(builder, "comp/app:1")
    assert manifest["config"]["digest"] == config_digest
    assert json.loads(blobs[config_digest])["rootfs"]["diff_ids"] == diff_ids
    if kinds[1] == "none":  # a plain layer is its diff id
        assert layers[1]["digest"] == diff_ids[1]
    dest = tmp_path / "copied"
    subprocess.run([skopeo, "copy", f"oci-archive:{out}", f"dir:{dest}"], check=True,
                   capture_output=True, timeout=120)
    copied = [(dest / x["digest"].split(":")[1]).read_bytes()[:4] for x in layers]
    assert [_kind(head) for head in copied] == kinds


def test_gzip_levels_give_other_blobs_of_the_same_tar(builder: Builder, tmp_path: Path) -> None:
    """compression-level picks the writer's level: level 1 and 9 (ISA-L 1 and 3) write
    other bytes for the build's layer, the same diff id; the base's stays as stored."""
    ctx = builder.context(APP)
    seen = []
    for level in ("1", "9"):
        out = tmp_path / f"l{level}.tar"
        builder.cli("build", "-o", f"type=oci,dest={out},compression-level={level}", str(ctx))
        seen.append(_archive(out)[0]["layers"])
    assert seen[0][0] == seen[1][0]
    assert seen[0][1]["digest"] != seen[1][1]["digest"]
    assert seen[0][1]["size"] > seen[1][1]["size"]


@pytest.mark.parametrize(("attrs", "kind"), [
    ("compression=uncompressed,force-compression=true", mt.OCI_LAYER_TAR),
    ("compression=gzip,compression-level=1,force-compression=true", mt.OCI_LAYER_GZIP),
])
def test_layout_unpacks_with_umoci(builder: Builder, tmp_path: Path, attrs: str,
                                   kind: str) -> None:
    """umoci (0.4.7 reads no zstd: the zstd outputs are read back by skopeo above)."""
    umoci = require_tool("umoci")
    ctx = builder.context(APP)
    out = tmp_path / "layout"
    builder.cli("build", "-t", "comp/app:z", "-o", f"type=oci,dest={out},tar=false,{attrs}",
                str(ctx))
    index = json.loads((out / "index.json").read_text())
    manifest = json.loads((out / "blobs/sha256" / index["manifests"][0]["digest"]
                           .split(":")[1]).read_text())
    assert {x["mediaType"] for x in manifest["layers"]} == {kind}
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--image", f"{out}:z", str(bundle)],
                   check=True, capture_output=True, timeout=120)
    assert (bundle / "rootfs/hello").read_text().startswith("#!/bin/sh")
    assert (bundle / "rootfs/bin/busybox").is_file()


@pytest.mark.parametrize("attrs", [
    "compression=uncompressed,force-compression=true",
    "compression=gzip,compression-level=9,force-compression=true",
    "compression=uncompressed",
])
def test_docker_archive_in_each_compression_loads_and_runs(builder: Builder, docker: str,
                                                           tmp_path: Path, attrs: str) -> None:
    ctx = builder.context(APP)
    out = tmp_path / "docker.tar"
    name = f"cloche-engine-test/comp:{uuid.uuid4().hex[:8]}"
    builder.cli("build", "-t", name, "-o", f"type=docker,dest={out},{attrs}", str(ctx))
    manifest, _ = _archive(out)
    want = "none" if "uncompressed" in attrs else "gzip"
    assert mt.layer_compression(manifest["layers"][1]["mediaType"]) == want
    subprocess.run([docker, "load", "-i", str(out)], check=True, capture_output=True,
                   timeout=120)
    try:
        run = subprocess.run([docker, "run", "--rm", "--network=none", name, "x"],
                             check=True, capture_output=True, text=True, timeout=120)
        assert run.stdout == "hello from cloche x\n"
        config = json.loads(subprocess.run([docker, "inspect", "--format", "{{json .RootFS}}",
                                            name], check=True, capture_output=True,
                                           text=True).stdout)
        assert config["Layers"] == _stored(builder, name)[1]
    finally:
        subprocess.run([docker, "rmi", "-f", name], capture_output=True)


def test_docker_archive_keeps_stored_layers_unless_asked(builder: Builder,
                                                         tmp_path: Path) -> None:
    """Without compression attributes `type=docker` writes the layers as the store has them
    (the build's plain); with `compression=zstd` the build's are zstd."""
    ctx = builder.context(APP)
    plain, zstd = tmp_path / "plain.tar", tmp_path / "zstd.tar"
    builder.cli("build", "-o", f"type=docker,dest={plain}", str(ctx))
    builder.cli("build", "-o", f"type=docker,dest={zstd},compression=zstd", str(ctx))
    kinds = [[mt.layer_compression(x["mediaType"]) for x in _archive(p)[0]["layers"]]
             for p in (plain, zstd)]
    assert kinds == [["gzip", "none"], ["gzip", "zstd"]]


def test_push_in_zstd_and_pull_back(builder: Builder, registry, tmp_path: Path) -> None:
    """type=image,push=true,compression=zstd: the registry has zstd layers (skopeo reads the
    manifest), the metadata file names its digest, and cloche pulls it back into another
    store with the same image ID and diff ids."""
    skopeo = require_tool("skopeo")
    ctx = builder.context(APP)
    ref = f"{registry.host}/engine/zstd:{uuid.uuid4().hex[:8]}"
    meta = tmp_path / "meta.json"
    builder.cli("build", "--metadata-file", str(meta), "-o",
                f"type=image,name={ref},push=true,compression=zstd,force-compression=true",
                str(ctx))
    raw = json.loads(subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false",
                                     f"docker://{ref}"], check=True, capture_output=True,
                                    text=True, timeout=60).stdout)
    assert {x["mediaType"] for x in raw["layers"]} == {mt.OCI_LAYER_ZSTD}
    pushed = builder.store.image(ref)
    assert json.loads(meta.read_text())["containerimage.digest"] == str(pushed.digest)
    other = tmp_path / "other"
    done = subprocess.run([*CLOCHE, "pull", "--root", str(other), ref],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pulled = Store.open(other).image(ref)
    assert pulled.config_digest == pushed.config_digest
    assert pulled.digest == pushed.digest
    assert [x.compression for x in pulled.layers] == ["zstd", "zstd"]
    for layer in pulled.layers:  # the diff ids hold: each layer decompresses to its tar
        with layer.open_uncompressed() as stream:
            while stream.read(1 << 20):
                pass


def test_default_push_keeps_gzip(builder: Builder, registry) -> None:
    """`--push` without attributes: gzip, the base's blob as stored."""
    skopeo = require_tool("skopeo")
    ctx = builder.context(APP)
    ref = f"{registry.host}/engine/gz:{uuid.uuid4().hex[:8]}"
    builder.cli("build", "--push", "-t", ref, str(ctx))
    raw = json.loads(subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false",
                                     f"docker://{ref}"], check=True, capture_output=True,
                                    text=True, timeout=60).stdout)
    assert {x["mediaType"] for x in raw["layers"]} == {mt.OCI_LAYER_GZIP}
    base = builder.store.image(BASE)
    assert raw["layers"][0]["digest"] == str(base.layers[0].digest)


@pytest.mark.parametrize(("output", "says"), [
    ("type=oci,dest=o.tar,compression=estargz", "compression=estargz is not supported"),
    ("type=oci,dest=o.tar,compression-level=10", "compression-level=10 is out of gzip's range"),
    ("type=image,name=x:1,compression-level=fast", "compression-level=fast is not an integer"),
    ("type=docker,dest=d.tar,force-compression=maybe", "force-compression=maybe is not"),
])
def test_bad_compression_attributes_are_refused(builder: Builder, output: str,
                                                says: str) -> None:
    ctx = builder.context(APP)
    done = builder.cli("build", "-o", output, str(ctx), check=False)
    assert done.returncode != 0 and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("attrs", "want"), [
    ({}, (Compression.GZIP, None, False)),
    ({"compression-level": "-1"}, (Compression.GZIP, None, False)),
    ({"compression-level": "0"}, (Compression.GZIP, 0, False)),
    ({"compression-level": "5", "force-compression": ""}, (Compression.GZIP, 2, True)),
    ({"compression-level": "9"}, (Compression.GZIP, 3, False)),
    ({"compression": "zstd", "compression-level": "1"}, (Compression.ZSTD, 1, False)),
    ({"compression": "zstd", "compression-level": "3"}, (Compression.ZSTD, 3, False)),
    ({"compression": "zstd", "compression-level": "8"}, (Compression.ZSTD, 7, False)),
    ({"compression": "zstd", "compression-level": "22"}, (Compression.ZSTD, 11, False)),
    ({"compression": "zstd", "compression-level": "-5"}, (Compression.ZSTD, None, False)),
    ({"compression": "uncompressed", "compression-level": "7"}, (Compression.NONE, None, False)),
])
def test_compression_levels_map_as_buildkit_classes_them(attrs: dict[str, str],
                                                         want: tuple) -> None:
    how = compression_of(attrs)
    assert how is not None and (how.compression, how.level, how.force) == want
    assert compression_of({}, default=None) is None


def test_gzip_level_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="out of gzip's range"):
        compression_of({"compression-level": "-3"})
