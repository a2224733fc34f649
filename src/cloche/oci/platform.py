"""Platforms (os, architecture, variant) with containerd's normalisation and matching rules.

Users and images spell the same platform many ways (``x86_64`` and ``amd64``, ``aarch64``,
``arm64`` and ``arm64/v8``); comparing the spellings directly would pick the wrong image from
an index or none at all, so every comparison goes through ``normalized()``.
"""

from __future__ import annotations

import platform as _host_platform
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cloche.errors import ClocheError

if TYPE_CHECKING:
    from cloche.oci.descriptor import Descriptor

_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]+$")
_KNOWN_OS = frozenset({"aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos",
                       "ios", "js", "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris",
                       "wasip1", "windows", "zos"})


class InvalidPlatformError(ClocheError, ValueError):
    """A platform string that is not ``os[/arch[/variant]]``."""


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch in ("i386", "386", "i686"):
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "v8" if variant in ("", "8", "v8", "v8.0") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
        return "arm", variant
    return arch, variant


@dataclass(frozen=True)
class Platform:
    """An image platform; ``variant`` is "" when none is given."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` as ``docker --platform`` does (``linux`` alone, or an
        architecture alone such as ``arm64``, fill the rest from the host or with linux)."""
        parts = text.strip().split("/") if isinstance(text, str) else []
        if not parts or len(parts) > 3 or not all(_COMPONENT.match(p) for p in parts):
            raise InvalidPlatformError(
                f"invalid platform {text!r}: want os/architecture[/variant], e.g. linux/arm64")
        if len(parts) == 1:
            word = parts[0].lower()
            if word in _KNOWN_OS:
                host = cls.host()
                return cls(word, host.architecture, host.variant if word == host.os else "")
            arch, variant = _normalize_arch(word, "")
            return cls("linux", arch, "" if arch == "arm64" else variant)
        os_name = parts[0].lower()
        if os_name == "macos":
            os_name = "darwin"
        return cls(os_name, parts[1].lower(), parts[2].lower() if len(parts) == 3 else "")

    @classmethod
    def host(cls) -> Platform:
        """The platform this machine runs natively."""
        machine = _host_platform.machine().lower()
        os_name = "darwin" if sys.platform == "darwin" else sys.platform.rstrip("0123456789")
        if machine.startswith("armv") and machine[4:5].isdigit():
            return cls(os_name, "arm", "v" + machine[4])
        arch, variant = _normalize_arch(machine, "")
        return cls(os_name, arch, "" if arch == "arm64" else variant)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Platform:
        if not isinstance(data, Mapping):
            raise InvalidPlatformError(f"platform is not an object: {data!r}")
        return cls(os=str(data.get("os", "")), architecture=str(data.get("architecture", "")),
                   variant=str(data.get("variant", "") or ""),
                   os_version=str(data.get("os.version", "") or ""),
                   os_features=tuple(data.get("os.features") or ()))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    def normalized(self) -> Platform:
        """The canonical spelling: amd64, arm64 (variant v8), arm (variant v7 by default)."""
        arch, variant = _normalize_arch(self.architecture, self.variant)
        os_name = self.os.lower()
        return replace(self, os="darwin" if os_name == "macos" else os_name,
                       architecture=arch, variant=variant)

    def matches(self, other: Platform) -> bool:
        """Whether both name the same platform once normalised (os.version only when both
        give one)."""
        a, b = self.normalized(), other.normalized()
        if a.os_version and b.os_version and a.os_version != b.os_version:
            return False
        return (a.os, a.architecture, a.variant) == (b.os, b.architecture, b.variant)

    def runs(self, candidate: Platform) -> int | None:
        """How well a machine of this platform runs ``candidate``: 0 for an exact match, a
        larger number for an older compatible variant (arm/v6 on arm/v7, amd64 on amd64/v3),
        None when it cannot."""
        want, have = self.normalized(), candidate.normalized()
        if want.os != have.os or want.architecture != have.architecture:
            return None
        if want.os_version and have.os_version and want.os_version != have.os_version:
            return None
        if want.variant == have.variant:
            return 0
        if want.architecture in ("arm", "amd64", "arm64"):
            wanted, got = _variant_number(want.variant), _variant_number(have.variant)
            if wanted is not None and got is not None and got < wanted:
                return wanted - got
        return None

    def with_default_variant(self) -> Platform:
        return replace(self, variant=self.normalized().variant)

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


def _variant_number(variant: str) -> int | None:
    if variant == "":
        return 1
    m = re.match(r"^v(\d+)(?:\.\d+)?$", variant)
    return int(m.group(1)) if m else None


def best_match(want: Platform, candidates: Iterable[Descriptor]) -> Descriptor | None:
    """The index entry a machine of platform ``want`` should use: an exact match first, then
    the newest compatible variant; entries without a platform (attestations are marked
    unknown/unknown) never match. Ties keep the index's order, as containerd does."""
    best: tuple[int, int, Descriptor] | None = None
    for position, desc in enumerate(candidates):
        if desc.platform is None:
            continue
        score = want.runs(desc.platform)
        if score is None:
            continue
        if best is None or (score, position) < best[:2]:
            best = (score, position, desc)
    return best[2] if best else None
