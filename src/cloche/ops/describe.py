"""What ``cloche images`` and ``cloche inspect`` show about a stored image, as plain data.

The shapes follow ``docker image inspect`` (``Id``, ``RepoTags``, ``RepoDigests``, ``Config``,
``RootFS``...) so scripts written against Docker's JSON keep working, plus what an OCI store
knows and Docker hides: the manifest, its media type and each layer's blob. An operation of
the face (``cloche.inspect``), not of the store: it reads the store, it keeps nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cloche.errors import ClocheError
from cloche.oci.image import Image
from cloche.ops.sizes import image_content_size
from cloche.store.images import load_image
from cloche.store.store import Store, StoredImage, parse_name


@dataclass(frozen=True)
class ImageSummary:
    """One row of ``cloche images``."""

    repository: str
    tag: str
    image_id: str
    digest: str
    created: str | None
    size: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"Repository": self.repository, "Tag": self.tag, "ID": self.image_id,
                "Digest": self.digest, "CreatedAt": self.created, "Size": self.size}


def summaries(store: Store) -> list[ImageSummary]:
    """Every entry of the store, named first; size is what its layers' files take, as
    ``docker images`` shows it (ops/sizes.py)."""
    rows = []
    for entry in store.list_images():
        created: str | None = None
        size: int | None = None
        try:
            image = load_image(store, entry.descriptor)
            created = image.config.created
            size = image_content_size(store, image.layers)
        except ClocheError:
            pass  # an index without our platform, or missing blobs: shown without details
        if entry.name is None:
            repo, tag = "<none>", "<none>"
        else:
            ref = parse_name(entry.name)
            repo, tag = ref.familiar_name, ref.tag or "<none>"
        rows.append(ImageSummary(repo, tag, str(entry.image_id), str(entry.descriptor.digest),
                                 created, size))
    return rows


def names_of(store: Store, entry: StoredImage) -> list[str]:
    return [parse_name(n).familiar for n, d in store.names() if d.digest == entry.descriptor.digest]


def inspect(store: Store, ref: str) -> dict[str, Any]:
    """A ``docker image inspect``-like document for one stored image."""
    entry = store.lookup(ref)
    image: Image = load_image(store, entry.descriptor)
    config = json.loads(image.config_bytes)
    repo_tags = names_of(store, entry)
    repo_digests = sorted({f"{parse_name(t).familiar_name}@{image.digest}" for t in repo_tags})
    layers = [{"MediaType": layer.media_type, "Digest": str(layer.digest),
               "DiffID": str(layer.diff_id), "Size": layer.size} for layer in image.layers]
    return {
        "Id": str(entry.image_id),
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Digest": str(image.digest),
        "MediaType": image.media_type,
        "Created": config.get("created"),
        "Author": config.get("author", ""),
        "Architecture": config.get("architecture", ""),
        "Variant": config.get("variant", ""),
        "Os": config.get("os", ""),
        "Config": config.get("config") or {},
        "RootFS": {"Type": "layers", "Layers": [str(d) for d in image.config.diff_ids]},
        "History": config.get("history") or [],
        "Size": image_content_size(store, image.layers),  # as Docker: the files' bytes
        "Layers": layers,
        "Manifest": json.loads(image.manifest_bytes),
    }
