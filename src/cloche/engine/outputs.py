"""Where a built image goes: the local store (default), files, a directory, a registry.

The kinds and their names are buildx's ``--output`` types: ``oci`` (an OCI archive),
``docker`` (a docker-archive for ``docker load``), ``tar`` (the root filesystem as a tar),
``local`` (the root filesystem as a directory), ``image``/``registry`` (named, optionally
pushed). Without ``--output`` the image is stored under its ``-t`` names, as ``docker build``
leaves it in the engine.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cloche import events as tev
from cloche.engine import events as ev
from cloche.engine.export_fs import export_local, export_tar
from cloche.engine.options import BuildOptions, OutputSpec
from cloche.errors import ConfigError
from cloche.fs.outfile import OutputFileError, write_output_file
from cloche.oci.descriptor import Descriptor
from cloche.oci.digest import Digest
from cloche.oci.image import Image
from cloche.oci.layout import BlobWatch
from cloche.store import Store


@dataclass(frozen=True)
class Exported:
    """What the outputs did: names given in the store, and references pushed."""

    names: tuple[str, ...] = ()
    pushed: tuple[str, ...] = ()
    image: Image | None = None  # what an output wrote instead (rewrite-timestamp), if any
    sent: Image | None = None  # what a push sent (its layers compressed), if any


def _tag_of(name: str | None) -> str | None:
    """The OCI ref name a layout folder gives ``name``: its tag, as BuildKit's exporter."""
    if not name:
        return None
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def _open_dest(dest: str) -> tuple[BinaryIO | str, bool]:
    if dest == "-":
        return sys.stdout.buffer, False
    try:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputFileError("the output", dest, err, "--output") from err
    return dest, True


def _watch(image: Image, where: str, listener: ev.Listener) -> BlobWatch:
    """Counts each blob an archive or layout writer copies: ``BlobProgress`` (``exporting``)."""
    kinds = {layer.digest: layer.media_type for layer in image.layers}
    kinds[image.config_digest] = image.config_descriptor.media_type
    kinds[image.digest] = image.media_type

    def watch(digest: Digest, size: int, stream: BinaryIO) -> BinaryIO:
        desc = Descriptor(kinds.get(digest, "application/octet-stream"), digest, size)
        return tev.BlobMeter(listener, where, desc, "exporting").reader(stream)
    return watch


def _archive_size(dest: str) -> int | None:
    if dest == "-":
        return None
    try:
        return os.stat(dest).st_size
    except OSError:
        return None


def _compressed(spec: OutputSpec, image: Image, store: Store, base_layers: int) -> Image:
    """``image`` with the layers ``spec``'s compression attributes ask for (``type=oci`` and
    a push: gzip by default; ``type=docker``: the layers as stored unless asked); the first
    ``base_layers`` (the base image's) kept as they are unless ``force-compression``."""
    from cloche.engine.output_attrs import compression_of
    from cloche.store.compressed import for_output  # compresses: imported on use

    how = compression_of(dict(spec.attrs), default=None if spec.type == "docker" else "gzip")
    return image if how is None else for_output(store, image, how, base_layers)


def write_output(spec: OutputSpec, image: Image, tags: tuple[str, ...], store: Store, *,
                 epoch: int | None = None, descriptor: dict[str, str] | None = None,
                 listener: ev.Listener = ev.ignore, base_layers: int = 0) -> Exported:
    """Write ``image`` as ``spec`` says; ``epoch``: SOURCE_DATE_EPOCH, every mtime of the
    ``local`` and ``tar`` outputs (engine/reproducible.py). The image outputs (``oci``,
    ``docker``) report ``ExportStarted``, their blobs' bytes and ``ExportFinished``.
    ``base_layers``: how many layers are the base image's (``_compressed``)."""
    names = spec.names or tags
    attrs = dict(spec.attrs)
    started = time.monotonic()
    vertex = f"exporting to {spec.type} image format"
    if spec.type in ("oci", "docker") and spec.dest and \
            attrs.get("tar", "true").lower() in ("false", "0"):  # an OCI layout folder
        from cloche.oci.layout import Layout

        listener(ev.ExportStarted(vertex))
        layout = Layout.create(spec.dest)
        ready = _compressed(spec, image, store, base_layers)
        for ref in names or (None,):
            layout.write_image(ready, _tag_of(ref), watch=_watch(ready, spec.dest, listener))
        listener(ev.ExportFinished(vertex, time.monotonic() - started))
        return Exported()
    if spec.type == "oci":
        from cloche.oci.archive import write_oci_archive

        listener(ev.ExportStarted(vertex))
        target, _ = _open_dest(spec.dest or "")  # every name, as BuildKit's exporter
        ready = _compressed(spec, image, store, base_layers)
        write_oci_archive(target, ready, name=list(names), descriptor_annotations=descriptor,
                          watch=_watch(ready, spec.dest or "-", listener))
        listener(ev.ExportFinished(vertex, time.monotonic() - started, tarball=True,
                                   size=_archive_size(spec.dest or "-")))
        return Exported()
    if spec.type == "docker" and not spec.dest:  # --load: into the local Docker engine
        from cloche.engine.dockerload import load_into_docker
        from cloche.oci.docker_archive import write_docker_archive

        listener(ev.ExportStarted(vertex))
        store.tmp_dir.mkdir(parents=True, exist_ok=True)
        ready = _compressed(spec, image, store, base_layers)
        watch = _watch(ready, "docker", listener)
        # the archive's upload is its own BlobProgress (ev.TARBALL): "sending tarball"
        load_into_docker(lambda out: write_docker_archive(out, ready, tags=names, watch=watch),
                         store.tmp_dir, listener=listener)
        listener(ev.ExportFinished(vertex, time.monotonic() - started))
        return Exported()
    if spec.type == "docker":
        from cloche.oci.docker_archive import write_docker_archive

        listener(ev.ExportStarted(vertex))
        target, _ = _open_dest(spec.dest or "")
        ready = _compressed(spec, image, store, base_layers)
        write_docker_archive(target, ready, tags=names, descriptor_annotations=descriptor,
                             watch=_watch(ready, spec.dest or "-", listener))
        listener(ev.ExportFinished(vertex, time.monotonic() - started, tarball=True,
                                   size=_archive_size(spec.dest or "-")))
        return Exported()
    if spec.type == "local":  # the final tree merged into the folder, nothing deleted there
        export_local(image, Path(spec.dest or "."), store, epoch=epoch)
        return Exported()
    if spec.type == "tar":  # written under a temporary name, renamed once whole
        export_tar(image, spec.dest or "-", store, epoch=epoch)
        return Exported()
    if spec.type == "image":
        if not names:
            raise ConfigError("--output type=image needs name= (or -t)")
        store.put_image(image, names)
        if not spec.push:
            return Exported(names)
        ready = _compressed(spec, image, store, base_layers)
        return Exported(names, push_all(store, ready, names, listener), sent=ready)
    raise ConfigError(f"unknown output type {spec.type!r}")


def push_all(store: Store, ready: Image, names: tuple[str, ...],
             listener: ev.Listener = ev.ignore) -> tuple[str, ...]:
    """Push ``ready`` (its layers compressed for the push: ``_compressed``) under each name;
    the store's names then name what the registry has (same config, same image ID)."""
    from cloche.registry.push import push_image

    for name in names:
        push_image(ready, name, listener=listener)  # each blob's bytes: BlobProgress
    store.put_image(ready, names)
    return names


def export(image: Image, options: BuildOptions, store: Store,
           cache_meta: dict[str, object] | None = None, *,
           base: tuple[int, int] = (0, 0), listener: ev.Listener = ev.ignore) -> Exported:
    """Send ``image`` everywhere ``options`` asks; the store always keeps it.
    ``cache_meta``: what ``--cache-to``/``--cache-from`` did, for ``--metadata-file``.
    ``base``: how many layers and history entries are the base image's, which an output's
    ``source-date-epoch`` and ``rewrite-timestamp`` leave alone (engine/reproducible.py)."""
    from cloche.engine.annotations import annotated, descriptor_notes, from_attrs
    from cloche.engine.reproducible import for_output

    names: tuple[str, ...] = ()
    pushed: tuple[str, ...] = ()
    made: Image | None = None  # the image an output dated and rewrote (rewrite-timestamp)
    sent: Image | None = None  # what the last push sent (--metadata-file's digest)
    notes = list(options.annotations)  # --annotation: every output's
    if notes and (not options.outputs or options.tags or options.push):
        if descriptor_notes(notes) and not options.outputs:
            raise ConfigError("--annotation manifest-descriptor:...: the store and a push "
                              "have no index entry to annotate; use -o type=oci|docker")
        image = made = annotated(image, notes)
    if not options.outputs or options.tags:
        store.put_image(image, options.tags)
        names = options.tags
    for spec in options.outputs:
        attrs = dict(spec.attrs)
        spec_notes = notes + from_attrs(attrs)
        dated, epoch = for_output(spec.type, attrs, image, store,
                                  options.source_date_epoch, base)
        dated = annotated(dated, spec_notes)
        if dated is not image:
            made = dated
        descriptor = descriptor_notes(spec_notes)
        if descriptor and spec.type not in ("oci", "docker"):
            raise ConfigError(f"manifest-descriptor annotations need an archive output "
                              f"(type=oci|docker), not type={spec.type}")
        try:
            done = write_output(spec, dated, options.tags, store, epoch=epoch,
                                descriptor=descriptor, listener=listener,
                                base_layers=base[0])
        except OutputFileError as err:  # the archive writers know the file, not the flag
            raise err.with_flag("--output") from err
        names += tuple(n for n in done.names if n not in names)
        pushed += done.pushed
        sent = done.sent or sent
    if options.push:
        if not options.tags:
            raise ConfigError("--push needs a name: add -t NAME:TAG")
        sent = _compressed(OutputSpec(type="image", push=True), image, store, base[0])
        pushed += push_all(store, sent, tuple(t for t in options.tags if t not in pushed),
                           listener)
    if made is not None:
        image = made  # what --iidfile and --metadata-file name
    if options.iidfile:
        write_output_file(options.iidfile, str(image.config_digest).encode(),
                          what="the image ID file", flag="--iidfile")
    if options.metadata_file:
        # once pushed, the digest a registry knows (the manifest of the layers it was sent)
        shown = sent if pushed and sent is not None else image
        meta: dict[str, object] = {"containerimage.config.digest": str(image.config_digest),
                "containerimage.digest": str(shown.digest)}
        if names:
            meta["image.name"] = ",".join(names)
        meta.update(cache_meta or {})
        write_output_file(options.metadata_file, (json.dumps(meta, indent=2) + "\n").encode(),
                          what="the metadata file", flag="--metadata-file")
    return Exported(names, pushed, made)


__all__ = ["Exported", "export", "write_output"]
