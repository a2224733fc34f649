"""The OCI image core: digests, descriptors, manifests, configs, platforms, image values,
and the readers and writers of OCI layouts, OCI archives and docker-archives.

Submodules import only downwards (digest -> descriptor/platform -> manifest/config -> image ->
mutate -> layout/archive/docker_archive); import the submodules directly or these names.
"""

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

__all__ = [
    "BlobNotFoundError", "BlobSource", "Descriptor", "Digest", "DigestMismatchError", "Digester",
    "DirBlobSource", "DockerArchive", "Healthcheck", "History", "Image", "ImageConfig",
    "ImageFormatError", "Index", "InvalidPlatformError", "Layer", "Layout", "Manifest",
    "MemoryBlobSource", "OciArchive", "Platform", "PlatformNotFoundError", "RefNotFoundError",
    "best_match", "mediatypes", "mutate", "parse", "read_docker_archive", "read_layout",
    "read_oci_archive", "verify", "write_docker_archive", "write_layout", "write_oci_archive",
]
