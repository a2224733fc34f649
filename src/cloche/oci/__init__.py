"""The OCI image core: digests, descriptors, manifests, configs, platforms, image values,
and the readers and writers of OCI layouts, OCI archives and docker-archives.

Submodules import only downwards (digest -> descriptor/platform -> manifest/config -> image ->
mutate -> layout/archive/docker_archive); import the submodules directly or these names.
"""

from typing import TYPE_CHECKING, Any

from cloche import _lazy

if TYPE_CHECKING:
    from cloche.oci import mediatypes, mutate
    from cloche.oci.archive import OciArchive, read_oci_archive, write_oci_archive
    from cloche.oci.config import Healthcheck, History, ImageConfig
    from cloche.oci.descriptor import Descriptor
    from cloche.oci.digest import Digest, Digester, DigestMismatchError, verify
    from cloche.oci.docker_archive import DockerArchive, read_docker_archive, write_docker_archive
    from cloche.oci.errors import BlobNotFoundError, ImageFormatError, PlatformNotFoundError, RefNotFoundError
    from cloche.oci.image import BlobSource, DirBlobSource, Image, Layer, MemoryBlobSource
    from cloche.oci.layout import Layout, read_layout, write_layout
    from cloche.oci.manifest import Index, Manifest, parse
    from cloche.oci.platform import InvalidPlatformError, Platform, best_match

# Imported on first use: the archive and layout writers pull in tarfile and tempfile, which a
# no-op rebuild never needs.
_EXPORTS = {
    "BlobNotFoundError": "cloche.oci.errors",
    "BlobSource": "cloche.oci.image",
    "Descriptor": "cloche.oci.descriptor",
    "Digest": "cloche.oci.digest",
    "DigestMismatchError": "cloche.oci.digest",
    "Digester": "cloche.oci.digest",
    "DirBlobSource": "cloche.oci.image",
    "DockerArchive": "cloche.oci.docker_archive",
    "Healthcheck": "cloche.oci.config",
    "History": "cloche.oci.config",
    "Image": "cloche.oci.image",
    "ImageConfig": "cloche.oci.config",
    "ImageFormatError": "cloche.oci.errors",
    "Index": "cloche.oci.manifest",
    "InvalidPlatformError": "cloche.oci.platform",
    "Layer": "cloche.oci.image",
    "Layout": "cloche.oci.layout",
    "Manifest": "cloche.oci.manifest",
    "MemoryBlobSource": "cloche.oci.image",
    "OciArchive": "cloche.oci.archive",
    "Platform": "cloche.oci.platform",
    "PlatformNotFoundError": "cloche.oci.errors",
    "RefNotFoundError": "cloche.oci.errors",
    "best_match": "cloche.oci.platform",
    "mediatypes": "cloche.oci.mediatypes!module",
    "mutate": "cloche.oci.mutate!module",
    "parse": "cloche.oci.manifest",
    "read_docker_archive": "cloche.oci.docker_archive",
    "read_layout": "cloche.oci.layout",
    "read_oci_archive": "cloche.oci.archive",
    "verify": "cloche.oci.digest",
    "write_docker_archive": "cloche.oci.docker_archive",
    "write_layout": "cloche.oci.layout",
    "write_oci_archive": "cloche.oci.archive",
}


__getattr__ = _lazy.exports(__name__, _EXPORTS, globals())


__all__ = [
    "BlobNotFoundError", "BlobSource", "Descriptor", "Digest", "DigestMismatchError", "Digester",
    "DirBlobSource", "DockerArchive", "Healthcheck", "History", "Image", "ImageConfig",
    "ImageFormatError", "Index", "InvalidPlatformError", "Layer", "Layout", "Manifest",
    "MemoryBlobSource", "OciArchive", "Platform", "PlatformNotFoundError", "RefNotFoundError",
    "best_match", "mediatypes", "mutate", "parse", "read_docker_archive", "read_layout",
    "read_oci_archive", "verify", "write_docker_archive", "write_layout", "write_oci_archive",
]
