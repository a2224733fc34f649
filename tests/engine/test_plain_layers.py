"""The store keeps a build's layers as plain tars; what leaves the machine is compressed once.

And the cache trusts a step's snapshot (written through a volatile overlay, never synced) only
within the boot that wrote it: after a reboot a snapshot is restored from its layer blob.
"""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

from cloche.oci import mediatypes as mt
from cloche.store.compressed import for_distribution
from tests.engine.conftest import BASE, Builder, layer_contents
from tests.engine.test_cache import rebuild, steps
from tests.fixtures.services import require_tool

APP = f"""\
FROM {BASE}
COPY app.txt /app.txt
RUN echo built > /built.txt
"""


def test_built_layers_are_stored_plain_and_pushed_compressed(builder: Builder, registry) -> None:
    skopeo = require_tool("skopeo")
    result = builder.build(APP, {"app.txt": "x" * 100_000}, tags=("plain:1",))
    stored = builder.store.image("plain:1")
    assert [layer.media_type for layer in stored.layers[-2:]] == [mt.OCI_LAYER_TAR] * 2
    for layer in stored.layers[-2:]:
        assert layer.digest == layer.diff_id
    ref = f"{registry.host}/engine/plain:1"
    builder.cli("tag", "plain:1", ref)
    builder.cli("push", ref)
    raw = json.loads(_skopeo(skopeo, "inspect", "--raw", f"docker://{ref}"))
    assert [x["mediaType"] for x in raw["layers"][-2:]] == [mt.OCI_LAYER_GZIP] * 2
    assert raw["config"]["digest"] == str(result.image.config_digest)  # same image ID
    # the twin is written once: a second conversion finds its record and its blob
    twin = for_distribution(builder.store, stored)
    again = for_distribution(builder.store, stored)
    assert [x.digest for x in twin.layers] == [x.digest for x in again.layers]
    assert [x["digest"] for x in raw["layers"]] == [str(x.digest) for x in twin.layers]
    with twin.layers[-1].open() as f:
        with tarfile.open(fileobj=gzip.GzipFile(fileobj=f), mode="r|") as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    assert files["built.txt"] == b"built\n"


def test_an_oci_archive_output_has_gzip_layers(builder: Builder, tmp_path: Path) -> None:
    out = tmp_path / "app.tar"
    builder.build(APP, {"app.txt": "y"}, outputs=(_spec(f"type=oci,dest={out}"),))
    with tarfile.open(out) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        top = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{top}"))  # type: ignore[arg-type]
    assert {x["mediaType"] for x in manifest["layers"]} == {mt.OCI_LAYER_GZIP}


def _spec(text: str):
    from cloche.engine.options import parse_output

    return parse_output(text)


def _skopeo(skopeo: str, *args: str) -> str:
    import subprocess

    return subprocess.run([skopeo, *args, "--tls-verify=false"], check=True,
                          capture_output=True, text=True).stdout


def _records(builder: Builder) -> list[Path]:
    return sorted((builder.root / "cache" / "steps").glob("*/*.json"))


def _pretend_reboot(builder: Builder) -> None:
    for path in _records(builder):
        doc = json.loads(path.read_text())
        doc["boot"] = "an-earlier-boot"
        path.write_text(json.dumps(doc))


MULTI = f"""\
FROM {BASE} AS tool
RUN echo tool > /tool.txt

FROM {BASE}
RUN echo one > /one.txt
COPY --from=tool /tool.txt /tool.txt
RUN cat /one.txt /tool.txt > /both.txt
"""


def test_after_a_reboot_snapshots_come_back_from_their_blobs(builder: Builder) -> None:
    first = builder.build(MULTI)
    _pretend_reboot(builder)
    # a snapshot that lost its files in the "crash": only the blob can be trusted
    one = [p for p in _records(builder) if "echo one" in p.read_text()][0]
    snapshot = builder.root / json.loads(one.read_text())["snapshot"]
    (snapshot / "one.txt").write_text("torn")
    second = rebuild(builder, builder.dir / "ctx1")
    ran, cached = steps(builder)
    # the unshipped stage's layer was never written: a miss, run again; the final stage's
    # steps have blobs: hits, their snapshots restored from the blobs
    assert any("echo tool" in r for r in ran)
    assert any("echo one" in c for c in cached)
    assert second.image.config_digest == first.image.config_digest
    assert (snapshot.parent / "unpack-layer").exists() or (snapshot / "one.txt").read_text() \
        == "one\n"
    # the restored snapshot serves as a lower for a new step on top of it
    builder.recorder = type(builder.recorder)()
    ctx = builder.context(MULTI + "RUN cat /one.txt > /copy.txt\n")
    from cloche import api
    from cloche.engine.options import BuildOptions

    result = api.build(BuildOptions(context=str(ctx), root=builder.root), listener=builder.recorder)
    assert layer_contents(result.image.layers[-1])["copy.txt"] == b"one\n"
    for path in _records(builder):
        doc = json.loads(path.read_text())
        layer = doc["layer"]
        assert doc["boot"] != "an-earlier-boot" or layer is None or layer.get("digest") is None


def test_prune_forgets_twins_whose_blobs_are_gone(builder: Builder) -> None:
    builder.build(APP, {"app.txt": "z"}, tags=("twin:1",))
    stored = builder.store.image("twin:1")
    twin = for_distribution(builder.store, stored)
    records = sorted((builder.root / "compressed").glob("*/*.json"))
    assert len(records) == 2  # the two plain layers the build wrote
    builder.cli("rmi", "twin:1")
    builder.cli("prune", "--all", "--force")
    assert not builder.store.blobs.exists(twin.layers[-1].digest)
    assert sorted((builder.root / "compressed").glob("*/*.json")) == []
