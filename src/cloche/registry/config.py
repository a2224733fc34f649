"""Registry configuration: mirrors and insecure (HTTP or unverified TLS) registries.

The file is TOML and its registry section has the shape of BuildKit's ``buildkitd.toml`` so that
people can reuse theirs::

    [registry."docker.io"]
    mirrors = ["127.0.0.1:5000"]

    [registry."127.0.0.1:5000"]
    http = true          # plain HTTP
    insecure = true      # HTTPS without certificate verification

It is read from ``$CLOCHE_CONFIG``, else ``/etc/cloche/config.toml`` for root, else
``~/.config/cloche/config.toml``; a missing file is an empty configuration. Loopback registries
(127.0.0.0/8, localhost, [::1]) speak plain HTTP unless the file says ``http = false``, as
Docker and BuildKit treat them as insecure by default.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cloche.errors import ConfigError
from cloche.oci.reference import DEFAULT_REGISTRY, LEGACY_REGISTRY, Reference, is_loopback
from cloche.rootless.identity import host_root


@dataclass(frozen=True)
class HostConfig:
    """What the configuration says about one registry host."""

    mirrors: tuple[str, ...] = ()
    http: bool | None = None        # None: decided by the host (loopback speaks HTTP)
    insecure: bool = False          # HTTPS without verifying the certificate
    ca: tuple[str, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """One place to try for a reference: the reference as that host sees it, and how to talk."""

    reference: Reference
    scheme: str
    verify_tls: bool
    is_mirror: bool = False

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.reference.api_host}"


@dataclass(frozen=True)
class RegistryConfig:
    """All the per-registry settings; ``RegistryConfig()`` is the empty configuration."""

    hosts: Mapping[str, HostConfig] = field(default_factory=lambda: MappingProxyType({}))
    source: Path | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> RegistryConfig:
        """Read the configuration file (``default_path()`` unless given); missing means empty."""
        path = path if path is not None else default_path()
        if not path.exists():
            return cls(source=None)
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from err
        except OSError as err:
            raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: Mapping[str, object], source: Path | None = None) -> RegistryConfig:
        where = str(source) if source else "configuration"
        section = data.get("registry", {})
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: [registry] must be a table")
        hosts: dict[str, HostConfig] = {}
        for host, value in section.items():
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [registry.{host!r}] must be a table")
            hosts[_normal_host(host)] = _host_config(value, f"{where}: [registry.{host!r}]")
        return cls(MappingProxyType(hosts), source)

    def host(self, registry: str) -> HostConfig:
        return self.hosts.get(_normal_host(registry), HostConfig())

    def schemes(self, registry: str) -> list[tuple[str, bool]]:
        """(scheme, verify_tls) pairs to try, in order, for a registry host."""
        cfg = self.host(registry)
        if cfg.http is True or (cfg.http is None and is_loopback(registry)):
            return [("http", False)]
        if cfg.insecure:
            return [("https", False), ("http", False)]
        return [("https", True)]

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        """Where to look for ``ref``: each configured mirror (same repository path), then the
        registry itself. Mirrors apply to reads only; pushes go to ``push_endpoints``."""
        out: list[Endpoint] = []
        for mirror in self.host(ref.registry).mirrors:
            mirrored = ref.in_registry(mirror)
            for scheme, verify in self.schemes(mirror):
                out.append(Endpoint(mirrored, scheme, verify, is_mirror=True))
        out.extend(self.push_endpoints(ref))
        return out

    def push_endpoints(self, ref: Reference) -> list[Endpoint]:
        return [Endpoint(ref, scheme, verify) for scheme, verify in self.schemes(ref.registry)]


def default_path() -> Path:
    """``$CLOCHE_CONFIG``, else /etc/cloche/config.toml for root, else the user's file."""
    env = os.environ.get("CLOCHE_CONFIG")
    if env:
        return Path(env)
    if host_root():  # root of cloche's user namespace is the user (cloche.rootless)
        return Path("/etc/cloche/config.toml")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cloche" / "config.toml"


def _normal_host(host: str) -> str:
    host = host.strip()
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix):]
    host = host.rstrip("/")
    return DEFAULT_REGISTRY if host in (LEGACY_REGISTRY, "registry-1.docker.io") else host


def _host_config(value: Mapping[str, object], where: str) -> HostConfig:
    mirrors = value.get("mirrors", [])
    if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
        raise ConfigError(f"{where}: mirrors must be a list of host names")
    for key in ("http", "insecure"):
        if key in value and not isinstance(value[key], bool):
            raise ConfigError(f"{where}: {key} must be true or false")
    ca = value.get("ca", [])
    if isinstance(ca, str):
        ca = [ca]
    if not isinstance(ca, list):
        raise ConfigError(f"{where}: ca must be a path or a list of paths")
    http = value.get("http")
    return HostConfig(tuple(_normal_host(m) for m in mirrors),
                      http if isinstance(http, bool) else None,
                      bool(value.get("insecure", False)), tuple(str(c) for c in ca))
