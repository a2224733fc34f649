"""Image references parsed exactly as Docker parses them (distribution/reference).

``busybox`` is ``docker.io/library/busybox:latest``; ``localhost:5000/app@sha256:...`` keeps its
registry and digest. A first path component is a registry only when it looks like a host (has a
``.`` or a ``:``, or is ``localhost``) and has no upper-case letter; otherwise the name is a
Docker Hub repository. Normalisation lives here, once, because the store keys images by the
canonical name and the registry client addresses the API by registry and repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from cloche.errors import DigestError, InvalidReferenceError
from cloche.oci.digest import Digest

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
LEGACY_REGISTRY = "index.docker.io"
#: Where the API of Docker Hub answers (``docker.io`` is only the name people write).
DOCKER_HUB_API = "registry-1.docker.io"
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_DIGEST_RE = re.compile(rf"^{_DIGEST}$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: registry, repository, and a tag and/or a digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: str | None = DEFAULT_TAG) -> Reference:
        """Parse a reference as ``docker pull`` does; a bare name gets ``default_tag``.

        Pass ``default_tag=None`` to keep a reference without tag or digest as it is (a
        repository name, as ``docker push --all-tags`` or tag listing take it).
        """
        if not isinstance(text, str) or not text:
            raise InvalidReferenceError("invalid reference format: empty reference")
        if _HEX64_RE.match(text):
            raise InvalidReferenceError(
                f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings",
                hint="to address an image by ID use the store (cloche inspect), not a registry")
        rest = text
        digest: Digest | None = None
        if "@" in rest:
            rest, _, digest_text = rest.partition("@")
            if not _DIGEST_RE.match(digest_text):
                raise _invalid(text, f"invalid digest {digest_text!r}")
            try:
                digest = Digest.parse(digest_text)
            except DigestError as err:
                raise _invalid(text, err.message) from err
        tag: str | None = None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1:]
            if not _TAG_RE.match(tag):
                raise _invalid(text, f"invalid tag {tag!r}")
        registry, repository = _split_domain(rest, text)
        if not repository:
            raise _invalid(text)
        if repository.lower() != repository:
            raise InvalidReferenceError(
                f"invalid reference format: repository name ({repository}) must be lowercase "
                f"in {text!r}")
        if not _PATH_RE.match(repository):
            raise _invalid(text)
        if len(registry) + 1 + len(repository) > NAME_MAX:
            raise _invalid(text, f"repository name must not be more than {NAME_MAX} characters")
        if tag is None and digest is None and default_tag is not None:
            tag = default_tag
        return cls(registry, repository, tag, digest)

    # --- views -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def familiar_name(self) -> str:
        """The name as Docker prints it: no ``docker.io/``, no ``library/`` for official images."""
        if self.registry != DEFAULT_REGISTRY:
            return self.name
        repo = self.repository
        if repo.startswith("library/") and repo.count("/") == 1:
            repo = repo[len("library/"):]
        return repo

    @property
    def familiar(self) -> str:
        """The short form ``docker images`` and ``docker pull`` print (``busybox:latest``)."""
        return self.familiar_name + self._suffix()

    @property
    def identifier(self) -> str:
        """What goes in ``/v2/<repo>/manifests/<identifier>``: the digest if any, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or DEFAULT_TAG

    @property
    def api_host(self) -> str:
        """The host that serves the registry API (Docker Hub answers elsewhere than docker.io)."""
        return DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.match(tag):
            raise _invalid(tag, f"invalid tag {tag!r}")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: Digest) -> Reference:
        return replace(self, digest=digest)

    def in_registry(self, registry: str) -> Reference:
        """The same repository path served by another registry (a mirror)."""
        if not _DOMAIN_RE.match(registry):
            raise _invalid(registry, f"invalid registry host {registry!r}")
        return replace(self, registry=registry)

    def _suffix(self) -> str:
        out = f":{self.tag}" if self.tag else ""
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    def __str__(self) -> str:
        return self.name + self._suffix()


def _invalid(text: str, why: str | None = None) -> InvalidReferenceError:
    detail = f" ({why})" if why else ""
    return InvalidReferenceError(f"invalid reference format: {text!r}{detail}",
                                 hint="a reference looks like [REGISTRY[:PORT]/]NAME[:TAG][@DIGEST]")


def _split_domain(name: str, text: str) -> tuple[str, str]:
    """Docker's splitDockerDomain, with validation of the registry part."""
    first, sep, remainder = name.partition("/")
    is_domain = bool(sep) and (
        any(c in first for c in ".:") or first == "localhost" or first.lower() != first)
    if not is_domain:
        registry, repository = DEFAULT_REGISTRY, name
    else:
        if not _DOMAIN_RE.match(first):
            raise _invalid(text, f"invalid registry host {first!r}")
        registry, repository = first, remainder
    if registry == LEGACY_REGISTRY:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def is_loopback(registry: str) -> bool:
    """True for 127.0.0.0/8, localhost and [::1], with or without a port."""
    host = registry
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host in ("localhost", "::1") or host.startswith("127.")
