"""SOURCE_DATE_EPOCH and ``rewrite-timestamp``: the same image from the same sources, anywhere.

As BuildKit (v0.11 and later; rewrite-timestamp since v0.13) does it:

- The epoch comes from the ``SOURCE_DATE_EPOCH`` build arg (``cloche build`` passes the
  environment variable of that name as the build arg, as buildx does), or from a global
  ``ARG SOURCE_DATE_EPOCH=N`` default. It is a whole number of seconds since 1970.
- Every history entry this build adds gets the epoch as its time, and so does the config's
  ``created``; the base image's history is kept as it is (moby/buildkit#4614).
- An output's ``source-date-epoch=N`` attribute overrides the epoch for that output (``""``
  turns it off there); what it finds newer than the epoch is clamped to it.
- ``rewrite-timestamp=true`` (image, oci, docker outputs) rewrites the layers this build made:
  every mtime newer than the epoch becomes the epoch, so the layers get new diff ids. The
  base image's layers are never touched. Without it the layers keep the build's times.
- The ``local`` and ``tar`` outputs write every file with the epoch as its mtime.

Rewritten layers are remembered under ``<root>/rewritten/<epoch>/`` (digest, diff id, size of
the rewritten blob, as ``cloche.store.compressed`` remembers compressed twins), so an export
rewrites each layer once; a record whose blob is gone is a miss. A rewritten blob that no image
holds (an archive output's) is build cache: ``cloche du`` counts it, ``cloche prune`` removes
it and then its record (``forget_missing_rewrites``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from cloche.compression import Compression
from cloche.errors import ConfigError, LayerError
from cloche.fs.tarentry import TarEntry
from cloche.oci import mediatypes as mt
from cloche.oci.config import History, ImageConfig
from cloche.oci.digest import Digest
from cloche.oci.image import Image, Layer
from cloche.oci.mutate import rfc3339
from cloche.store import Store, atomic_write

__all__ = ["EPOCH_ARG", "REWRITTEN_ANNOTATION", "clamp_config", "for_output",
           "forget_missing_rewrites", "output_epoch", "parse_epoch", "resolve_epoch",
           "rewrite_layer", "rewrite_timestamps", "rewrites", "rewritten_blobs", "stamp_history"]

EPOCH_ARG = "SOURCE_DATE_EPOCH"
REWRITTEN_ANNOTATION = "buildkit/rewritten-timestamp"  # BuildKit's, on each rewritten layer
# what an image config can spell (RFC 3339 years 0001 to 9999)
_MIN_EPOCH = -62135596800
_MAX_EPOCH = 253402300799
_NUMBER = re.compile(r"[+-]?[0-9]+")


def parse_epoch(value: object, what: str = EPOCH_ARG) -> int | None:
    """A SOURCE_DATE_EPOCH value as seconds; None for an empty one (no epoch), as BuildKit
    reads an empty build arg. Anything but a whole number is a ConfigError."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ConfigError(f"invalid {what}: {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _NUMBER.fullmatch(value):
        number = int(value)
    else:
        raise ConfigError(f"invalid {what}: {value}",
                          hint="a whole number of seconds since 1970-01-01 UTC, e.g. "
                               "$(git log -1 --pretty=%ct)")
    if not _MIN_EPOCH <= number <= _MAX_EPOCH:
        raise ConfigError(f"invalid {what}: {value} is out of range",
                          hint="an image config holds years 0001 to 9999 only")
    return number


def resolve_epoch(given: int | None, build_args: Mapping[str, str],
                  globals_: Mapping[str, str | None]) -> int | None:
    """The build's epoch: ``source_date_epoch`` given to the library, else the build arg,
    else a global ``ARG SOURCE_DATE_EPOCH=N`` default (BuildKit's getBuildArgValue)."""
    if given is not None:
        return parse_epoch(given)
    if EPOCH_ARG in build_args:
        return parse_epoch(build_args[EPOCH_ARG])
    return parse_epoch(globals_.get(EPOCH_ARG) or None)


def output_epoch(attrs: Mapping[str, str], epoch: int | None) -> int | None:
    """The epoch an output uses: its ``source-date-epoch`` attribute when it has one (an
    empty one: none), else the build's."""
    if "source-date-epoch" in attrs:
        return parse_epoch(attrs["source-date-epoch"], "--output source-date-epoch")
    return epoch


def rewrites(attrs: Mapping[str, str]) -> bool:
    """The ``rewrite-timestamp`` attribute of an output, as a bool (BuildKit's ParseBool)."""
    value = attrs.get("rewrite-timestamp")
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("", "1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise ConfigError(f"--output rewrite-timestamp={value}: want true or false")


def _seconds(text: str | None) -> float | None:
    """An RFC 3339 time as seconds since 1970 (nanoseconds cut to micro); None: unreadable."""
    if not text:
        return None
    cut = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(cut)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def stamp_history(config: ImageConfig, epoch: int, base_history: int) -> ImageConfig:
    """The build's own history entries (after the base's ``base_history``) at ``epoch``, and
    ``created`` too when the build added any (else the last entry's time, as BuildKit)."""
    stamp = rfc3339(epoch)
    history = config.history
    ours = tuple(replace(h, created=stamp) for h in history[base_history:])
    if not ours:
        return config
    return config.replace(history=history[:base_history] + ours, created=stamp)


def clamp_config(config: ImageConfig, epoch: int, base_history: int) -> ImageConfig:
    """An exporter's epoch: the build's history entries without a time or newer than
    ``epoch`` get it, and so does ``created`` when it is newer (BuildKit's patchImageConfig)."""
    stamp = rfc3339(epoch)

    def clamped(h: History) -> History:
        seconds = _seconds(h.created)
        return h if seconds is not None and seconds <= epoch else replace(h, created=stamp)

    history = config.history[:base_history] + tuple(
        clamped(h) for h in config.history[base_history:])
    created = config.created
    seconds = _seconds(created)
    if created is not None and (seconds is None or seconds > epoch):
        created = stamp
    return config.replace(history=history, created=created)


def _record(store: Store, epoch: int, digest: Digest) -> Path:
    return store.root / "rewritten" / str(epoch) / f"{digest.algorithm}-{digest.hex}.json"


def _records(store: Store) -> list[Path]:
    return sorted((store.root / "rewritten").glob("*/*.json"))


def _recorded_blob(record: Path) -> Digest | None:
    try:
        return Digest.parse(json.loads(record.read_bytes())["digest"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: useless


def rewritten_blobs(store: Store) -> list[Digest | None]:
    """The blob each rewrite record names (None: an unreadable record), for ``cloche du``."""
    return [_recorded_blob(record) for record in _records(store)]


def forget_missing_rewrites(store: Store) -> int:
    """Remove the rewrite records whose blob is gone (after ``gc``), and the epoch folders
    they leave empty; returns how many records went."""
    removed = 0
    for record in _records(store):
        digest = _recorded_blob(record)
        if digest is None or not store.blobs.exists(digest):
            record.unlink(missing_ok=True)
            removed += 1
            try:
                record.parent.rmdir()  # its epoch's folder, once empty
            except OSError:
                pass
    return removed


def _clamped_entries(stream: BinaryIO, epoch: int
                     ) -> Iterator[tuple[TarEntry, BinaryIO | None]]:
    from cloche.layers.reader import LayerReader

    for entry, content in LayerReader(stream):
        if entry.sparse is not None:
            raise LayerError(f"{entry.path}: a sparse entry cannot be rewritten")
        yield (replace(entry, mtime=epoch) if entry.mtime > epoch else entry), content


def rewrite_layer(store: Store, layer: Layer, epoch: int, *, annotate: bool) -> Layer:
    """``layer`` with every mtime newer than ``epoch`` set to it: a new blob in ``store``, of
    the same compression, written by cloche's deterministic tar writer (once per epoch)."""
    from cloche.layers.tarwriter import TarWriter

    annotations = dict(layer.annotations)
    if annotate:
        annotations[REWRITTEN_ANNOTATION] = str(epoch)
    media_type = layer.media_type
    record = _record(store, epoch, layer.digest)
    try:
        doc = json.loads(record.read_bytes())
        digest, diff_id = Digest.parse(doc["digest"]), Digest.parse(doc["diff_id"])
        size = int(doc["size"])
        if store.blobs.exists(digest) and store.blobs.size(digest) == size:
            store.blobs.touch(digest)
            return Layer(digest, diff_id, size, media_type, store.blobs, annotations)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no record, or a corrupt one: rewrite
    kind = mt.layer_compression(media_type)
    if kind not in ("none", "gzip", "zstd"):
        raise LayerError(f"layer {layer.digest}: cannot rewrite a layer of type {media_type}")
    compression = Compression(kind)
    with layer.open() as src, store.blobs.writer(hashed_by_caller=True) as sink:
        with TarWriter(sink, compression) as writer:
            for entry, content in _clamped_entries(src, epoch):
                writer.add(entry, content)
        blob = writer.close()
        sink.name_as(blob.digest, blob.size)
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(record, json.dumps({"digest": str(blob.digest), "diff_id": str(blob.diff_id),
                                     "size": blob.size}).encode())
    return Layer(blob.digest, blob.diff_id, blob.size, media_type, store.blobs, annotations)


def rewrite_timestamps(store: Store, image: Image, epoch: int, base_layers: int) -> Image:
    """``image`` with the layers after the base's first ``base_layers`` rewritten to
    ``epoch`` (``rewrite_layer``) and the config's diff ids following them."""
    annotate = not mt.is_docker(image.media_type)
    layers = image.layers[:base_layers] + tuple(
        rewrite_layer(store, layer, epoch, annotate=annotate)
        for layer in image.layers[base_layers:])
    if layers == image.layers and all(a.annotations == b.annotations
                                      for a, b in zip(layers, image.layers)):
        return image
    config = image.config.replace(diff_ids=tuple(layer.diff_id for layer in layers))
    return Image(config.to_json(), layers, image.media_type, image.annotations)


def for_output(kind: str, attrs: Mapping[str, str], image: Image, store: Store,
               epoch: int | None, base: tuple[int, int]) -> tuple[Image, int | None]:
    """What an output of type ``kind`` with ``attrs`` writes, and the epoch it uses: its
    ``source-date-epoch`` clamps the config, ``rewrite-timestamp`` rewrites the build's
    layers (image, oci and docker outputs; ``base``: the base's layers and history entries,
    left alone)."""
    given = "source-date-epoch" in attrs
    epoch = output_epoch(attrs, epoch)
    rewrite = rewrites(attrs)
    if epoch is None or kind not in ("image", "oci", "docker"):
        return image, epoch
    if given:
        config = clamp_config(image.config, epoch, base[1])
        image = Image(config.to_json(), image.layers, image.media_type, image.annotations)
    if rewrite:
        image = rewrite_timestamps(store, image, epoch, base[0])
    return image, epoch
