"""Image manifests and indexes, OCI and Docker schema 2, as frozen values.

Both families are read; ``to_json()`` writes OCI and ``to_json(docker=True)`` writes Docker
schema 2 (converting every media type to its twin). Parsed values never replace the bytes they
came from: a digest is always of the exact bytes, kept by the Image that read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cloche.oci import _json
from cloche.oci import mediatypes as mt
from cloche.oci._frozen import FrozenMap
from cloche.oci.descriptor import Descriptor
from cloche.oci.digest import Digest
from cloche.oci.errors import ImageFormatError, PlatformNotFoundError
from cloche.oci.platform import Platform, best_match


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config blob and an ordered list of layer blobs."""

    config: Descriptor
    layers: tuple[Descriptor, ...] = ()
    media_type: str = mt.OCI_MANIFEST
    annotations: Mapping[str, str] = field(default_factory=FrozenMap)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    schema_version: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not isinstance(self.annotations, FrozenMap):
            object.__setattr__(self, "annotations", FrozenMap(self.annotations or {}))

    @property
    def is_docker(self) -> bool:
        return self.media_type == mt.DOCKER_MANIFEST

    def converted(self, *, docker: bool) -> Manifest:
        """The same manifest with every media type of the other family."""
        conv = mt.to_docker if docker else mt.to_oci
        return replace(
            self,
            media_type=mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST,
            config=self.config.with_media_type(conv(self.config.media_type)),
            layers=tuple(d.with_media_type(conv(d.media_type)) for d in self.layers),
            annotations=FrozenMap() if docker else self.annotations,
            subject=None if docker else self.subject,
            artifact_type=None if docker else self.artifact_type)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": self.schema_version, "mediaType": self.media_type}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["config"] = self.config.to_dict()
        out["layers"] = [d.to_dict() for d in self.layers]
        if self.subject is not None:
            out["subject"] = self.subject.to_dict()
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    def to_json(self, *, docker: bool = False) -> bytes:
        """Canonical bytes, OCI by default, Docker schema 2 with ``docker=True`` (media types
        converted either way)."""
        value = self if docker == self.is_docker else self.converted(docker=docker)
        return _json.dumps(value.to_dict())

    @property
    def digest(self) -> Digest:
        """Digest of the canonical bytes in this manifest's own family; an Image read from
        bytes uses those bytes instead."""
        return Digest.from_bytes(self.to_json(docker=self.is_docker))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, media_type: str | None = None,
                  source: str | None = None) -> Manifest:
        _check_schema(data, source)
        kind = data.get("mediaType") or media_type or mt.OCI_MANIFEST
        if kind not in mt.MANIFEST_TYPES:
            raise ImageFormatError(f"not an image manifest (media type {kind})", source=source)
        if "config" not in data:
            raise ImageFormatError("manifest has no config", source=source)
        layers = data.get("layers") or []
        if not isinstance(layers, list):
            raise ImageFormatError("manifest layers is not a list", source=source)
        subject = data.get("subject")
        return cls(config=Descriptor.from_dict(data["config"], source=source),
                   layers=tuple(Descriptor.from_dict(d, source=source) for d in layers),
                   media_type=kind, annotations=_annotations(data, source),
                   subject=Descriptor.from_dict(subject, source=source) if subject else None,
                   artifact_type=data.get("artifactType"))

    @classmethod
    def from_json(cls, data: bytes, *, media_type: str | None = None,
                  source: str | None = None) -> Manifest:
        value = parse(data, media_type=media_type, source=source)
        if not isinstance(value, Manifest):
            raise ImageFormatError("expected an image manifest, found an index", source=source)
        return value


@dataclass(frozen=True)
class Index:
    """An image index (OCI) or manifest list (Docker): manifests for several platforms."""

    manifests: tuple[Descriptor, ...] = ()
    media_type: str = mt.OCI_INDEX
    annotations: Mapping[str, str] = field(default_factory=FrozenMap)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    schema_version: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifests", tuple(self.manifests))
        if not isinstance(self.annotations, FrozenMap):
            object.__setattr__(self, "annotations", FrozenMap(self.annotations or {}))

    @property
    def is_docker(self) -> bool:
        return self.media_type == mt.DOCKER_MANIFEST_LIST

    def converted(self, *, docker: bool) -> Index:
        conv = mt.to_docker if docker else mt.to_oci
        return replace(self, media_type=mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX,
                       manifests=tuple(d.with_media_type(conv(d.media_type))
                                       for d in self.manifests),
                       annotations=FrozenMap() if docker else self.annotations,
                       subject=None if docker else self.subject,
                       artifact_type=None if docker else self.artifact_type)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": self.schema_version, "mediaType": self.media_type}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["manifests"] = [d.to_dict() for d in self.manifests]
        if self.subject is not None:
            out["subject"] = self.subject.to_dict()
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    def to_json(self, *, docker: bool = False) -> bytes:
        """Canonical bytes, OCI by default, a Docker manifest list with ``docker=True``."""
        value = self if docker == self.is_docker else self.converted(docker=docker)
        return _json.dumps(value.to_dict())

    @property
    def digest(self) -> Digest:
        return Digest.from_bytes(self.to_json(docker=self.is_docker))

    def platforms(self) -> tuple[Platform, ...]:
        return tuple(d.platform for d in self.manifests if d.platform is not None)

    def select(self, want: Platform) -> Descriptor:
        """The entry to use on platform ``want``; PlatformNotFoundError when none fits."""
        found = best_match(want, self.manifests)
        if found is None:
            raise PlatformNotFoundError(
                f"no image for platform {want} in the index", wanted=str(want),
                available=tuple(str(p) for p in self.platforms() if p.os != "unknown"))
        return found

    def with_manifests(self, manifests: Iterable[Descriptor]) -> Index:
        return replace(self, manifests=tuple(manifests))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, media_type: str | None = None,
                  source: str | None = None) -> Index:
        _check_schema(data, source)
        kind = data.get("mediaType") or media_type or mt.OCI_INDEX
        if kind not in mt.INDEX_TYPES:
            raise ImageFormatError(f"not an image index (media type {kind})", source=source)
        entries = data.get("manifests")
        if not isinstance(entries, list):
            raise ImageFormatError("index has no manifests list", source=source)
        subject = data.get("subject")
        return cls(manifests=tuple(Descriptor.from_dict(d, source=source) for d in entries),
                   media_type=kind, annotations=_annotations(data, source),
                   subject=Descriptor.from_dict(subject, source=source) if subject else None,
                   artifact_type=data.get("artifactType"))

    @classmethod
    def from_json(cls, data: bytes, *, media_type: str | None = None,
                  source: str | None = None) -> Index:
        value = parse(data, media_type=media_type, source=source)
        if not isinstance(value, Index):
            raise ImageFormatError("expected an image index, found a manifest", source=source)
        return value


def parse(data: bytes, *, media_type: str | None = None,
          source: str | None = None) -> Manifest | Index:
    """Parse manifest or index bytes of either family. ``media_type`` is the Content-Type a
    registry sent, used when the document does not name its own type (OCI allows that)."""
    doc = _json.loads(data, what="manifest", source=source)
    if not isinstance(doc, dict):
        raise ImageFormatError("manifest is not a JSON object", source=source)
    kind = doc.get("mediaType") or media_type
    if kind in mt.INDEX_TYPES or (kind is None and "manifests" in doc):
        return Index.from_dict(doc, media_type=kind, source=source)
    if kind in mt.MANIFEST_TYPES or (kind is None and "config" in doc):
        return Manifest.from_dict(doc, media_type=kind, source=source)
    if kind == mt.DOCKER_MANIFEST_V1_SIGNED or doc.get("schemaVersion") == 1:
        raise ImageFormatError("Docker schema 1 manifests are not supported",
                               source=source, hint="re-push the image with a current Docker")
    raise ImageFormatError(f"unknown manifest media type {kind!r}", source=source)


def _check_schema(data: Mapping[str, Any], source: str | None) -> None:
    if data.get("schemaVersion") != 2:
        raise ImageFormatError(f"unsupported schemaVersion {data.get('schemaVersion')!r}"
                               " (want 2)", source=source)


def _annotations(data: Mapping[str, Any], source: str | None) -> FrozenMap[str, str]:
    raw = data.get("annotations") or {}
    if not isinstance(raw, Mapping) or not all(isinstance(v, str) for v in raw.values()):
        raise ImageFormatError("annotations must map strings to strings", source=source)
    return FrozenMap(raw)
