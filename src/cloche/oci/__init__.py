"""The OCI image core: digests, descriptors, manifests, configs, platforms, image values,
and the readers and writers of OCI layouts, OCI archives and docker-archives.

Submodules import only downwards (digest -> descriptor/platform -> manifest/config -> image ->
mutate -> layout/archive/docker_archive); import the submodules directly or these names.
"""

from cloche.oci.config import Healthcheck, History, ImageConfig
from cloche.oci.descriptor import Descriptor
from cloche.oci.digest import Digest, Digester, DigestMismatchError, verify
from cloche.oci.errors import (BlobNotFoundError, ImageFormatError, PlatformNotFoundError,
                               RefNotFoundError)
from cloche.oci.image import BlobSource, DirBlobSource, Image, Layer, MemoryBlobSource
from cloche.oci.manifest import Index, Manifest, parse
from cloche.oci.platform import InvalidPlatformError, Platform, best_match

__all__ = [
    "BlobNotFoundError", "BlobSource", "Descriptor", "Digest", "DigestMismatchError", "Digester",
    "DirBlobSource", "Healthcheck", "History", "Image", "ImageConfig", "ImageFormatError",
    "Index", "InvalidPlatformError", "Layer", "Manifest", "MemoryBlobSource", "Platform",
    "PlatformNotFoundError", "RefNotFoundError", "best_match", "parse", "verify",
]
