"""Free functions that return a changed copy of an Image (go-containerregistry's mutate).

Every function keeps the config's rootfs diff ids equal to the layers' diff ids and leaves
the manifest to be computed again, so no function can produce an inconsistent image.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from cloche.oci import mediatypes as mt
from cloche.oci._frozen import FrozenMap
from cloche.oci.config import History, ImageConfig
from cloche.oci.errors import ImageFormatError
from cloche.oci.image import Image, Layer
from cloche.oci.platform import Platform


def rfc3339(moment: int | float | datetime) -> str:
    """A timestamp as image configs store it, in UTC, e.g. ``2024-01-02T03:04:05Z``."""
    if isinstance(moment, datetime):
        moment = moment.timestamp()
    whole = int(moment)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    fraction = round(moment - whole, 9)
    if fraction:
        text += f"{fraction:.9f}"[1:].rstrip("0")
    return text + "Z"


def now() -> str:
    return rfc3339(datetime.now(UTC))


def empty_image(platform: Platform | None = None, *, docker: bool = False) -> Image:
    """An image with no layers (``FROM scratch``) for ``platform`` (the host's by default)."""
    platform = platform or Platform.host()
    config = ImageConfig().with_platform(platform)
    return Image.from_config(config, (), media_type=mt.DOCKER_MANIFEST if docker
                             else mt.OCI_MANIFEST)


def _rebuild(image: Image, config: ImageConfig, layers: tuple[Layer, ...]) -> Image:
    config = replace(config, diff_ids=tuple(layer.diff_id for layer in layers))
    return Image(config.to_json(), layers, image.media_type, image.annotations)


def set_config(image: Image, config: ImageConfig) -> Image:
    """Replace the config; its diff ids are set from the image's layers."""
    return _rebuild(image, config, image.layers)


def append_layers(image: Image, layers: Iterable[Layer],
                  history: Iterable[History] | History | None = None) -> Image:
    """Add layers on top, with one history entry per layer (given, or an empty entry).
    The new layers keep their media types; see ``with_media_type`` to convert."""
    layers = tuple(layers)
    if history is None:
        entries: tuple[History, ...] = tuple(History() for _ in layers)
    elif isinstance(history, History):
        entries = (history,)
    else:
        entries = tuple(history)
    if len(entries) != len(layers):
        raise ImageFormatError(f"{len(layers)} layers need {len(layers)} history entries, "
                               f"got {len(entries)}")
    if any(h.empty_layer for h in entries):
        raise ImageFormatError("a history entry for a layer cannot be marked empty_layer")
    config = image.config
    return _rebuild(image, replace(config, history=config.history + entries),
                    image.layers + layers)


def add_history(image: Image, entry: History) -> Image:
    """Record a step that made no layer (ENV, CMD...); ``empty_layer`` is set for it."""
    config = image.config
    entry = replace(entry, empty_layer=True)
    return _rebuild(image, replace(config, history=config.history + (entry,)), image.layers)


def set_history(image: Image, history: Iterable[History]) -> Image:
    """Replace the history; its non-empty entries must be as many as the layers (or none)."""
    history = tuple(history)
    with_layer = sum(1 for h in history if not h.empty_layer)
    if history and with_layer != len(image.layers):
        raise ImageFormatError(f"history has {with_layer} entries with a layer, the image "
                               f"has {len(image.layers)} layers")
    return _rebuild(image, replace(image.config, history=history), image.layers)


def canonicalise(image: Image, epoch: int | float | datetime = 0) -> Image:
    """Set the image's and every history entry's creation time to ``epoch`` (for
    SOURCE_DATE_EPOCH and reproducible builds). Layer contents are cloche.layers' concern."""
    stamp = rfc3339(epoch)
    config = image.config
    history = tuple(replace(h, created=stamp) for h in config.history)
    return _rebuild(image, replace(config, created=stamp, history=history), image.layers)


def set_created(image: Image, created: str | None) -> Image:
    return _rebuild(image, replace(image.config, created=created), image.layers)


def set_platform(image: Image, platform: Platform) -> Image:
    return _rebuild(image, image.config.with_platform(platform), image.layers)


def set_annotations(image: Image, annotations: Mapping[str, str]) -> Image:
    """Replace the manifest's annotations (Docker schema 2 manifests cannot carry them)."""
    return replace(image, annotations=FrozenMap(annotations), raw_manifest=None)


def with_media_type(image: Image, *, docker: bool) -> Image:
    """The image as a Docker schema 2 (``docker=True``) or OCI manifest, layer media types
    converted to match; the config bytes and layer blobs are unchanged."""
    conv = mt.to_docker if docker else mt.to_oci
    layers = tuple(replace(layer, media_type=conv(layer.media_type)) for layer in image.layers)
    return Image(image.config_bytes, layers,
                 mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST, image.annotations)


def replace_layers(image: Image, layers: Iterable[Layer]) -> Image:
    """Same config and history, other blobs for the same diff ids (e.g. recompressed)."""
    layers = tuple(layers)
    if tuple(x.diff_id for x in layers) != tuple(x.diff_id for x in image.layers):
        raise ImageFormatError("replacement layers must have the same diff ids, in order")
    return Image(image.config_bytes, layers, image.media_type, image.annotations)
