"""Layer blobs are written only when an output needs them (issue 8).

A stage whose layers the image does not ship keeps its step snapshots as the cache and never
compresses them: no blob of it appears in the store. When a later build ships that stage
(``--target``), the blob is written then, from the snapshot, once: the cache record gains its
digest and the build after that reuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

from cloche.oci.digest import Digest
from cloche.oci.image import LazyLayer
from tests.engine.conftest import BASE, Builder, layer_contents, rootfs

TOOLS = (f"FROM {BASE} AS tools\n"
         "RUN dd if=/dev/urandom of=/big bs=1024 count=256 2>/dev/null"
         " && echo artefact > /artefact\n"
         "FROM scratch\nCOPY --from=tools /artefact /artefact\n")


def _records(builder: Builder) -> list[dict]:
    return [json.loads(p.read_text())
            for p in sorted((builder.root / "cache" / "steps").glob("*/*.json"))]


def _run_record(builder: Builder) -> dict:
    found = [r for r in _records(builder) if "dd if=/dev/urandom" in r["created_by"]]
    assert len(found) == 1, found
    return found[0]


def test_a_stage_no_output_ships_never_writes_its_blob(builder: Builder, tmp_path: Path) -> None:
    before = set(builder.store.blobs.digests())
    result = builder.build(TOOLS, tags=("final:1",))
    image = result.image
    shipped = {image.digest, image.config_digest} | {layer.digest for layer in image.layers}
    new = set(builder.store.blobs.digests()) - before
    assert new == shipped, f"blobs no output asked for: {new - shipped}"
    record = _run_record(builder)
    assert "digest" not in record["layer"], record  # the RUN's layer: a diff id, no blob
    assert record["layer"]["tar_size"] > 256 * 1024
    assert (rootfs(image, tmp_path / "out") / "artefact").read_text() == "artefact\n"


def test_a_lazy_layer_is_written_once_when_a_build_ships_it(builder: Builder) -> None:
    builder.build(TOOLS)
    diff_id = Digest.parse(_run_record(builder)["layer"]["diff_id"])
    ctx = builder.dir / "ctx1"

    def target_tools():  # the same context, the tools stage as the target: a cache hit
        from cloche import api
        from cloche.engine.options import BuildOptions
        return api.build(BuildOptions(context=str(ctx), root=builder.root, target="tools"),
                         listener=lambda event: None)

    second = target_tools()
    layer = second.image.layers[-1]
    assert layer.diff_id == diff_id  # the recorded diff id is the written tar's
    assert builder.store.blobs.exists(layer.digest)
    assert len(layer_contents(layer)["big"]) == 256 * 1024
    record = _run_record(builder)
    assert record["layer"]["digest"] == str(layer.digest)  # the record now names the blob
    third = target_tools()
    again = third.image.layers[-1]
    assert not isinstance(again, LazyLayer)  # read from the record: nothing written again
    assert third.image.digest == second.image.digest


def test_a_snapshot_changed_after_its_step_is_refused(builder: Builder) -> None:
    """The blob is checked against the diff id the image's config already names."""
    import pytest

    from cloche.errors import LayerError

    builder.build(TOOLS)
    record = _run_record(builder)
    (builder.root / record["snapshot"] / "artefact").write_text("tampered\n")
    from cloche import api
    from cloche.engine.options import BuildOptions
    with pytest.raises(LayerError, match="changed after the step"):
        api.build(BuildOptions(context=str(builder.dir / "ctx1"), root=builder.root,
                               target="tools"), listener=lambda event: None)


def test_a_lazy_layer_leaves_out_what_the_step_did_not_change(builder: Builder,
                                                               tmp_path: Path) -> None:
    # ln copies /bin/busybox up unchanged (left out of the layer, as BuildKit's differ does),
    # and the snapshot keeps the link: the layer written later, lazily, must leave out the
    # same entries (else its diff id differs from the one the config names)
    dockerfile = (f"FROM {BASE} AS tools\n"
                  "RUN ln /bin/busybox /bb && cp -p /etc/passwd /tmp/p"
                  " && cp -p /tmp/p /etc/passwd && rm /tmp/p\n"
                  "RUN stat -c %h /bb > /links\n"
                  "FROM scratch\nCOPY --from=tools /links /links\n")
    first = builder.build(dockerfile)
    assert (rootfs(first.image, tmp_path / "a") / "links").read_text() == "2\n"  # as BuildKit
    ctx = builder.dir / "ctx1"
    from cloche import api
    from cloche.engine.options import BuildOptions
    tools = api.build(BuildOptions(context=str(ctx), root=builder.root, target="tools"),
                      listener=lambda event: None)
    layer = tools.image.layers[-2]
    assert sorted(layer_contents(layer)) == ["bb"]  # not bin/busybox, not etc/passwd
