"""Small builders of real image blobs for store tests (no dependency on the image core)."""

from __future__ import annotations

import io
import json
import tarfile

from cloche.oci.descriptor import Descriptor
from cloche.oci.digest import Digest
from cloche.store.store import Store

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def put_raw_image(store: Store, marker: str, *, created: str = "2024-01-02T03:04:05Z") -> Descriptor:
    """Store a one-layer image whose content depends on ``marker``; returns its descriptor."""
    layer = layer_tar({"hello.txt": marker.encode()})
    layer_digest = store.blobs.put_bytes(layer)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Env": ["MARKER=" + marker]},
        "rootfs": {"type": "layers", "diff_ids": [str(layer_digest)]},
        "history": [{"created": created, "created_by": "test " + marker}],
    }, sort_keys=True).encode()
    config_digest = store.blobs.put_bytes(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": str(config_digest), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": str(layer_digest), "size": len(layer)}],
    }, sort_keys=True).encode()
    digest = store.blobs.put_bytes(manifest)
    return Descriptor(OCI_MANIFEST, digest, len(manifest))


def config_digest(store: Store, desc: Descriptor) -> Digest:
    return Digest.parse(json.loads(store.blobs.read_bytes(desc.digest))["config"]["digest"])
