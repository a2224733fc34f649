"""Minimal images made in test code: a layer tar, a config, a manifest, stored in a BlobStore."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from cloche.oci import mediatypes as mt
from cloche.oci.digest import Digest
from cloche.store.blobs import BlobStore


@dataclass(frozen=True)
class BuiltImage:
    manifest_bytes: bytes
    media_type: str
    digest: Digest
    config_digest: Digest
    layer_digests: tuple[Digest, ...]


def layer_from_files(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def layer_from_dir(root: Path) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if rel.split("/", 1)[0] in ("proc", "sys", "dev"):
                continue
            tar.add(path, arcname=rel, recursive=False)
    return gzip.compress(raw.getvalue(), mtime=0)


def make_image(blobs: BlobStore, layers: list[bytes], *, docker: bool = False,
               arch: str = "amd64", label: str = "x") -> BuiltImage:
    import hashlib
    diff_ids = [f"sha256:{hashlib.sha256(gzip.decompress(layer)).hexdigest()}" for layer in layers]
    config = {"architecture": arch, "os": "linux",
              "config": {"Cmd": ["/bin/sh"], "Labels": {"t": label}},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": []}
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = blobs.put_bytes(config_bytes)
    layer_digests = tuple(blobs.put_bytes(layer) for layer in layers)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST,
        "config": {"mediaType": mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG,
                   "digest": str(config_digest), "size": len(config_bytes)},
        "layers": [{"mediaType": mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP,
                    "digest": str(d), "size": len(layer)} for d, layer in zip(layer_digests, layers)],
    }
    data = json.dumps(manifest).encode()
    digest = blobs.put_bytes(data)
    return BuiltImage(data, manifest["mediaType"], digest, config_digest, layer_digests)


def make_index(blobs: BlobStore, images: dict[str, BuiltImage]) -> tuple[bytes, Digest]:
    entries = []
    for plat, img in images.items():
        os_, arch, *variant = plat.split("/")
        p = {"os": os_, "architecture": arch}
        if variant:
            p["variant"] = variant[0]
        entries.append({"mediaType": img.media_type, "digest": str(img.digest),
                        "size": len(img.manifest_bytes), "platform": p})
    data = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}).encode()
    return data, blobs.put_bytes(data)
