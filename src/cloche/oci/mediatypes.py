"""Media types of the OCI image spec and of Docker's image manifest v2 schema 2.

cloche writes OCI types by default and Docker's on request (``docker=True``); it reads both.
The two families describe the same things, so each OCI type has a Docker twin; the helpers here
map between them and say what a layer's compression is.
"""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYOUT_VERSION = "1.0.0"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

_OCI_TO_DOCKER = {
    OCI_MANIFEST: DOCKER_MANIFEST,
    OCI_INDEX: DOCKER_MANIFEST_LIST,
    OCI_CONFIG: DOCKER_CONFIG,
    OCI_LAYER_TAR: DOCKER_LAYER,
    OCI_LAYER_GZIP: DOCKER_LAYER_GZIP,
    OCI_LAYER_ZSTD: DOCKER_LAYER_ZSTD,
    OCI_LAYER_NONDIST_GZIP: DOCKER_FOREIGN_LAYER,
}
_DOCKER_TO_OCI = {v: k for k, v in _OCI_TO_DOCKER.items()}

_COMPRESSION = {
    OCI_LAYER_TAR: "none", OCI_LAYER_NONDIST_TAR: "none", DOCKER_LAYER: "none",
    OCI_LAYER_GZIP: "gzip", OCI_LAYER_NONDIST_GZIP: "gzip", DOCKER_LAYER_GZIP: "gzip",
    DOCKER_FOREIGN_LAYER: "gzip",
    OCI_LAYER_ZSTD: "zstd", OCI_LAYER_NONDIST_ZSTD: "zstd", DOCKER_LAYER_ZSTD: "zstd",
}

# Every acceptable Accept header value when asking a registry for a manifest.
MANIFEST_ACCEPT = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)


def is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFEST_TYPES


def is_layer(media_type: str) -> bool:
    return media_type in _COMPRESSION


def is_docker(media_type: str) -> bool:
    return media_type.startswith("application/vnd.docker.")


def layer_compression(media_type: str) -> str:
    """``none``, ``gzip`` or ``zstd`` for a layer media type; ``unknown`` for anything else."""
    return _COMPRESSION.get(media_type, "unknown")


def to_docker(media_type: str) -> str:
    """The Docker schema 2 twin of an OCI type (unchanged when it has none or is Docker's)."""
    return _OCI_TO_DOCKER.get(media_type, media_type)


def to_oci(media_type: str) -> str:
    """The OCI twin of a Docker schema 2 type (unchanged when it has none or is OCI's)."""
    return _DOCKER_TO_OCI.get(media_type, media_type)


def layer_type(compression: str, *, docker: bool = False) -> str:
    """The layer media type for a compression (``none``, ``gzip``, ``zstd``)."""
    oci = {"none": OCI_LAYER_TAR, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}.get(compression)
    if oci is None:
        raise ValueError(f"unknown layer compression {compression!r}")
    return to_docker(oci) if docker else oci
