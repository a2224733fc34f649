"""Small builders of real layer tars and images for the oci tests (stdlib tarfile only)."""

from __future__ import annotations

import io
import tarfile

from cloche.oci.config import History, ImageConfig
from cloche.oci.image import Image, Layer, MemoryBlobSource
from cloche.oci.mutate import append_layers, empty_image
from cloche.oci.platform import Platform


def tar_of(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar with these regular files (parents implied), fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def small_image(*contents: dict[str, bytes], compression: str = "gzip",
                source: MemoryBlobSource | None = None, cmd: tuple[str, ...] | None = None,
                platform: str = "linux/amd64") -> Image:
    """An image with one layer per mapping of files."""
    source = source or MemoryBlobSource()
    image = empty_image(Platform.parse(platform))
    if cmd is not None:
        from cloche.oci.mutate import set_config
        image = set_config(image, ImageConfig(architecture=image.config.architecture,
                                              os="linux", cmd=cmd))
    layers = [Layer.from_tar_bytes(tar_of(files), compression, source) for files in contents]
    history = [History(created_by=f"COPY layer{i} /") for i in range(len(layers))]
    return append_layers(image, layers, history)
