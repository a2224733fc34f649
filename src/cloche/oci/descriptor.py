"""Content descriptors: what a manifest or an index says about a blob it points at.

A descriptor names a blob by digest and size (so the reader can verify both) and says what
it is (media type), optionally for which platform and with which annotations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cloche.oci._frozen import FrozenMap
from cloche.oci.digest import Digest
from cloche.oci.errors import ImageFormatError
from cloche.oci.platform import Platform

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"
ANNOTATION_BASE_DIGEST = "org.opencontainers.image.base.digest"


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (media type, digest, size, and optional extras)."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=FrozenMap)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.digest, Digest):
            object.__setattr__(self, "digest", Digest.parse(str(self.digest)))
        if not isinstance(self.annotations, FrozenMap):
            object.__setattr__(self, "annotations", FrozenMap(self.annotations or {}))
        object.__setattr__(self, "urls", tuple(self.urls))
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise ImageFormatError(f"descriptor {self.digest} has an invalid size {self.size!r}")

    def with_annotations(self, **annotations: str) -> Descriptor:
        merged = dict(self.annotations)
        merged.update(annotations)
        return replace(self, annotations=FrozenMap(merged))

    def with_media_type(self, media_type: str) -> Descriptor:
        return replace(self, media_type=media_type)

    @property
    def ref_name(self) -> str | None:
        """The ``org.opencontainers.image.ref.name`` annotation (a tag in an OCI layout)."""
        return self.annotations.get(ANNOTATION_REF_NAME)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, keys in the order the spec lists them."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                               "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        if self.platform is not None:
            out["platform"] = self.platform.to_dict()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> Descriptor:
        """Parse a descriptor object; raises ImageFormatError naming ``source`` when it is bad."""
        if not isinstance(data, Mapping):
            raise ImageFormatError(f"descriptor is not an object: {data!r}", source=source)
        try:
            media_type = data.get("mediaType", "")
            if not isinstance(media_type, str):
                raise ImageFormatError("descriptor mediaType is not a string", source=source)
            digest = Digest.parse(data["digest"])
            size = data["size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ImageFormatError(f"descriptor {digest} has an invalid size {size!r}",
                                       source=source)
            annotations = data.get("annotations") or {}
            if not isinstance(annotations, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
                raise ImageFormatError("descriptor annotations must map strings to strings",
                                       source=source)
            platform = data.get("platform")
            urls = data.get("urls") or ()
            return cls(media_type=media_type, digest=digest, size=size,
                       annotations=FrozenMap(annotations),
                       platform=Platform.from_dict(platform) if platform else None,
                       urls=tuple(urls), artifact_type=data.get("artifactType"))
        except KeyError as e:
            raise ImageFormatError(f"descriptor lacks {e.args[0]!r}", source=source) from e
        except ImageFormatError:
            raise
        except ValueError as e:
            raise ImageFormatError(f"bad descriptor: {e}", source=source) from e
