"""OCI annotations on what a build exports, as buildx and BuildKit's exporters take them.

``--annotation [TYPE:]KEY=VALUE`` (every output) and the outputs' ``annotation.KEY=VALUE``,
``annotation-manifest.KEY=VALUE`` (the image manifest's annotations: they change its digest,
not the image ID) and ``annotation-manifest-descriptor.KEY=VALUE`` (the manifest's entry in an
OCI archive's or layout's ``index.json``). A build makes one single-platform image, which has
no index: ``index`` and ``index-descriptor`` annotations, and a platform selector
(``manifest[linux/amd64]:``), are refused with an error rather than dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from cloche.errors import ConfigError
from cloche.oci.image import Image

KINDS = ("manifest", "manifest-descriptor")
_REFUSED = ("index", "index-descriptor")
_PREFIXES = {"annotation.": "manifest", "annotation-manifest.": "manifest",
             "annotation-manifest-descriptor.": "manifest-descriptor"}


def parse_annotation(text: str) -> tuple[str, str, str]:
    """``--annotation [TYPE:]KEY=VALUE`` -> (type, key, value)."""
    head, sep, value = text.partition("=")
    if not sep or not head:
        raise ConfigError(f"--annotation {text!r}: expected [TYPE:]KEY=VALUE")
    kind, colon, key = head.partition(":")
    if colon and "[" in kind:
        raise ConfigError(f"--annotation {text!r}: platform selectors are not supported "
                          "(a build makes one single-platform image)")
    if not colon or "." in kind or "/" in kind:  # a key such as org.opencontainers.image.title
        kind, key = "manifest", head
    if kind in _REFUSED:
        raise ConfigError(f"--annotation {text!r}: {kind} annotations need an image index, "
                          "and a build makes one single-platform image")
    if kind not in KINDS:
        raise ConfigError(f"--annotation {text!r}: unknown type {kind!r} (manifest or "
                          "manifest-descriptor)")
    if not key:
        raise ConfigError(f"--annotation {text!r}: empty key")
    return kind, key, value


def from_attrs(attrs: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """The annotations an output's attributes give (output_attrs.py lets only these in)."""
    out = []
    for name, value in attrs.items():
        for prefix, kind in _PREFIXES.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                out.append((kind, name[len(prefix):], value))
                break
    return out


def annotated(image: Image, notes: Iterable[tuple[str, str, str]]) -> Image:
    """``image`` with the manifest annotations among ``notes`` added (a new manifest)."""
    extra = {key: value for kind, key, value in notes if kind == "manifest"}
    if not extra:
        return image
    return dataclasses.replace(image, annotations={**image.annotations, **extra},
                               raw_manifest=None)


def descriptor_notes(notes: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    return {key: value for kind, key, value in notes if kind == "manifest-descriptor"}
