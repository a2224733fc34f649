"""Base images of a build with --cache-from: layers pulled only when needed (issue 12).

Two stores stand for two machines sharing one loopback registry (as in test_remote_cache.py).
The builder stage's base, the "sdk", is an image of its own (one layer, busybox plus a few MB
of random bytes, an ENV and a WORKDIR); the final stage's base is the small busybox image.
Machine A builds with ``--cache-to mode=max``; machine B, whose store is empty, builds with
``--cache-from``: every step hits, so B needs of the sdk only its manifest digest (the keys)
and config (ENV, WORKDIR), and never downloads its layer; the runtime base's layer is in the
image, so B has it. When an sdk-stage step misses, the sdk is pulled then, and the build works.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cloche.engine import events as ev
from cloche.errors import BuildError, ImageNotFoundError
from cloche.oci.image import Image
from cloche.ops.importer import import_rootfs
from cloche.registry.push import push_stored
from cloche.store import Store
from tests.engine.conftest import BASE, rootfs
from tests.engine.test_remote_cache import UUID, finished, machine, ran

pytestmark = [pytest.mark.root, pytest.mark.registry]


def _sdk(registry, busybox_rootfs: Path, tmp_path: Path, repo: str) -> tuple[str, Image]:
    """A one-layer "sdk" image of its own (random bytes: no blob shared with anything else),
    pushed as ``repo``."""
    tree = tmp_path / "sdk-rootfs"
    shutil.copytree(busybox_rootfs, tree, symlinks=True)
    (tree / "sdk").mkdir()
    (tree / "sdk" / "toolchain.bin").write_bytes(os.urandom(4 << 20))
    store = Store.open(tmp_path / "sdk-store")
    _, image = import_rootfs(store, tree, names=["sdk-test:1"],
                             changes=["ENV SDK_HOME=/sdk", "WORKDIR /sdk"])
    ref = f"{registry.host}/lazy/{repo}:1"
    push_stored(store, "sdk-test:1", ref)
    return ref, image


@pytest.fixture(scope="module")
def runtime_base(registry, template_store: Path) -> tuple[str, Image]:
    ref = f"{registry.host}/lazy/runtime:1"
    store = Store.open(template_store)
    push_stored(store, BASE, ref)
    return ref, store.image(BASE)


RUN_BUILT = f"RUN {UUID} > /built && wc -c < toolchain.bin >> /built && echo $SDK_HOME >> /built"
RUN_OUT = f"RUN cat /src.txt /built > /out && {UUID} >> /out"
RUN_STAMP = f"RUN {UUID} > /stamp"


def dockerfile(sdk: str, runtime: str) -> str:
    return (f"FROM {sdk} AS sdk\n"
            f"{RUN_BUILT}\n"
            "COPY src.txt /src.txt\n"
            f"{RUN_OUT}\n"
            f"FROM {runtime}\n"
            "COPY --from=sdk /out /out\n"
            f"{RUN_STAMP}\n")


FILES = {"src.txt": "source\n"}
ALL_FS = sorted([f"sdk {RUN_BUILT}", "sdk COPY src.txt /src.txt", f"sdk {RUN_OUT}",
                 "stage-1 COPY --from=sdk /out /out", f"stage-1 {RUN_STAMP}"])


def _has_layer(store: Store, image: Image) -> list[bool]:
    """Per layer of ``image``: whether ``store`` holds its blob (as pulled, or as a tar)."""
    return [store.blobs.exists(x.digest) or store.blobs.exists(x.diff_id) for x in image.layers]


def _named(store: Store, ref: str) -> bool:
    try:
        store.image(ref)
    except ImageNotFoundError:
        return False
    return True


def test_second_machine_never_downloads_the_sdk_base(tmp_path: Path, registry,
                                                    busybox_rootfs: Path,
                                                    runtime_base: tuple[str, Image]) -> None:
    sdk, sdk_image = _sdk(registry, busybox_rootfs, tmp_path, "sdk")
    runtime, runtime_image = runtime_base
    cache = f"{registry.host}/lazy/app:max"
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    first = a.build(dockerfile(sdk, runtime), FILES, cache_to=f"type=registry,ref={cache},mode=max")
    assert ran(a) == ALL_FS
    assert _has_layer(a.store, sdk_image) == [True]  # A ran the sdk's steps: it pulled it

    meta = tmp_path / "meta-b.json"
    second = b.build(dockerfile(sdk, runtime), FILES, cache_from=cache, metadata_file=str(meta))
    assert ran(b) == []
    assert all(e.imported == cache for k, e in finished(b).items() if k in ALL_FS)
    assert second.digest == first.digest
    # the sdk: its manifest and config only, nothing stored; the runtime: in the image
    assert _has_layer(b.store, sdk_image) == [False]
    assert not b.store.blobs.exists(sdk_image.digest)
    assert not _named(b.store, sdk)
    assert all(_has_layer(b.store, runtime_image))
    assert _named(b.store, runtime)
    # nor is any base unpacked: every step hit, no step needed a root file system
    assert not list((b.store.snapshots_dir / "images").glob("*/rootfs"))
    out = (rootfs(second.image, tmp_path / "root-b") / "out").read_text().split("\n")
    assert out[:4] == ["source", (rootfs(first.image, tmp_path / "root-a") / "out"
                                  ).read_text().split("\n")[1], str(4 << 20), "/sdk"]
    # progress: the sdk's FROM is cached (never pulled), the runtime's was pulled
    pulled = [e.reference for e in b.recorder.of(ev.Pulling)]
    assert pulled == [runtime]
    froms = {e.step.text: e.cached for e in b.recorder.of(ev.BaseResolved)}
    assert froms == {f"FROM {sdk}": True, f"FROM {runtime}": False}
    doc = json.loads(meta.read_text())
    assert doc["cloche.cache.imported"] == [{"source": cache, "steps": 5}]
    assert doc["containerimage.digest"] == str(second.digest)

    # a change the sdk stage reads: its COPY misses and needs the files; the sdk is pulled
    # (once), the imported RUN under the COPY unpacked, and the steps from the COPY on run
    third = b.build(dockerfile(sdk, runtime), {"src.txt": "changed\n"}, cache_from=cache)
    assert ran(b) == sorted(k for k in ALL_FS if k != f"sdk {RUN_BUILT}")
    assert [e.reference for e in b.recorder.of(ev.Pulling)] == [sdk]
    assert _has_layer(b.store, sdk_image) == [True]
    assert _named(b.store, sdk)
    out3 = (rootfs(third.image, tmp_path / "root-b3") / "out").read_text().split("\n")
    assert out3[:4] == ["changed", *out[1:4]]


def test_a_missing_sdk_layer_fails_at_from_and_stores_nothing(
        tmp_path: Path, registry, busybox_rootfs: Path, runtime_base: tuple[str, Image]) -> None:
    """The lazy pull happens late (a step misses), and may fail: the error is located at the
    sdk's FROM, and no image without its blobs is named in the store."""
    sdk, sdk_image = _sdk(registry, busybox_rootfs, tmp_path, "sdk-gone")
    runtime = runtime_base[0]
    cache = f"{registry.host}/lazy/app-gone:max"
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    a.build(dockerfile(sdk, runtime), FILES, cache_to=f"type=registry,ref={cache},mode=max")
    # the registry loses the sdk's layer (its bytes are this test's alone: random)
    layer = sdk_image.layers[0].digest
    data = (registry.root / "docker" / "registry" / "v2" / "blobs" / "sha256"
            / layer.hex[:2] / layer.hex / "data")
    data.unlink()

    second = b.build(dockerfile(sdk, runtime), FILES, cache_from=cache)  # all hits: no need
    assert ran(b) == []
    with pytest.raises(BuildError) as info:
        b.build(dockerfile(sdk, runtime), {"src.txt": "changed\n"}, cache_from=cache)
    assert info.value.line == 1 and f"FROM {sdk}" in info.value.message
    assert not _named(b.store, sdk)
    assert not b.store.blobs.exists(layer)
    assert b.store.image(str(second.digest)).digest == second.digest


def test_copy_from_an_image_pulls_it_only_on_a_miss(tmp_path: Path, registry,
                                                    busybox_rootfs: Path,
                                                    runtime_base: tuple[str, Image]) -> None:
    """``COPY --from=<image>`` is keyed by the image's digest: a hit needs nothing more; a
    miss reads the image's files, and pulls it then."""
    sdk, sdk_image = _sdk(registry, busybox_rootfs, tmp_path, "sdk-copy")
    runtime = runtime_base[0]
    cache = f"{registry.host}/lazy/app-copy:min"
    text = (f"FROM {runtime}\nARG DEST=/tool\n"
            f"COPY --from={sdk} /sdk/toolchain.bin $DEST\nRUN wc -c < $DEST > /size\n")
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    first = a.build(text, cache_to=f"type=registry,ref={cache}")
    second = b.build(text, cache_from=cache)
    assert ran(b) == [] and second.digest == first.digest
    assert _has_layer(b.store, sdk_image) == [False] and not _named(b.store, sdk)

    third = b.build(text, cache_from=cache, build_args={"DEST": "/other"})
    assert [k.split(" ", 1)[1].split()[0] for k in ran(b)] == ["COPY", "RUN"]
    assert _has_layer(b.store, sdk_image) == [True] and _named(b.store, sdk)
    assert (rootfs(third.image, tmp_path / "root-b") / "size").read_text() == f"{4 << 20}\n"
