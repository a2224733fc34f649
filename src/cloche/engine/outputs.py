"""Where a built image goes: the local store (default), files, a directory, a registry.

The kinds and their names are buildx's ``--output`` types: ``oci`` (an OCI archive),
``docker`` (a docker-archive for ``docker load``), ``tar`` (the root filesystem as a tar),
``local`` (the root filesystem as a directory), ``image``/``registry`` (named, optionally
pushed). Without ``--output`` the image is stored under its ``-t`` names, as ``docker build``
leaves it in the engine.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cloche.compression import Compression
from cloche.engine.options import BuildOptions, OutputSpec
from cloche.errors import ConfigError
from cloche.oci.image import Image
from cloche.store import Store


@dataclass(frozen=True)
class Exported:
    """What the outputs did: names given in the store, and references pushed."""

    names: tuple[str, ...] = ()
    pushed: tuple[str, ...] = ()


def _ref_name(name: str | None) -> str | None:
    """The tag part used as an OCI layout ref name (``app:1.0`` -> ``1.0``)."""
    if not name:
        return None
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def _open_dest(dest: str) -> tuple[BinaryIO | str, bool]:
    if dest == "-":
        return sys.stdout.buffer, False
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    return dest, True


def _flatten_into(image: Image, dest: Path) -> None:
    from cloche.layers.apply import flatten

    streams = [layer.open() for layer in image.layers]
    try:
        flatten(streams, dest)
    finally:
        for s in streams:
            s.close()


def write_output(spec: OutputSpec, image: Image, tags: tuple[str, ...], store: Store) -> Exported:
    names = spec.names or tags
    if spec.type == "oci":
        from cloche.oci.archive import write_oci_archive

        target, _ = _open_dest(spec.dest or "")
        write_oci_archive(target, image, name=_ref_name(names[0] if names else None))
        return Exported()
    if spec.type == "docker":
        from cloche.oci.docker_archive import write_docker_archive

        target, _ = _open_dest(spec.dest or "")
        write_docker_archive(target, image, tags=names)
        return Exported()
    if spec.type == "local":
        _flatten_into(image, Path(spec.dest or "."))
        return Exported()
    if spec.type == "tar":
        from cloche.layers.tree import write_tree

        with tempfile.TemporaryDirectory(prefix="cloche-tar-", dir=store.root) as tmp:
            root = Path(tmp) / "rootfs"
            _flatten_into(image, root)
            target, is_path = _open_dest(spec.dest or "")
            if is_path:
                with open(target, "wb") as out:  # type: ignore[arg-type]
                    write_tree(root, out, Compression.NONE)
            else:
                write_tree(root, target, Compression.NONE)  # type: ignore[arg-type]
        return Exported()
    if spec.type == "image":
        if not names:
            raise ConfigError("--output type=image needs name= (or -t)")
        store.put_image(image, names)
        pushed = push_all(image, names) if spec.push else ()
        return Exported(names, pushed)
    raise ConfigError(f"unknown output type {spec.type!r}")


def push_all(image: Image, names: tuple[str, ...]) -> tuple[str, ...]:
    from cloche.registry.push import push_image

    for name in names:
        push_image(image, name)
    return names


def export(image: Image, options: BuildOptions, store: Store) -> Exported:
    """Send ``image`` everywhere ``options`` asks; the store always keeps it."""
    names: tuple[str, ...] = ()
    pushed: tuple[str, ...] = ()
    if not options.outputs or options.tags:
        store.put_image(image, options.tags)
        names = options.tags
    for spec in options.outputs:
        done = write_output(spec, image, options.tags, store)
        names += tuple(n for n in done.names if n not in names)
        pushed += done.pushed
    if options.push:
        if not options.tags:
            raise ConfigError("--push needs a name: add -t NAME:TAG")
        pushed += push_all(image, tuple(t for t in options.tags if t not in pushed))
    if options.iidfile:
        Path(options.iidfile).write_text(str(image.config_digest))
    if options.metadata_file:
        meta = {"containerimage.config.digest": str(image.config_digest),
                "containerimage.digest": str(image.digest)}
        if names:
            meta["image.name"] = ",".join(names)
        Path(options.metadata_file).write_text(json.dumps(meta, indent=2) + "\n")
    return Exported(names, pushed)


__all__ = ["Exported", "export", "write_output"]
