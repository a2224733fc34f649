"""``docker login`` and ``docker logout`` semantics: verify, then store in Docker's config.json.

The server may be given as Docker accepts it (``docker.io``, ``https://index.docker.io/v1/``,
``registry.example:5000``); credentials are checked against the registry (basic auth, or a token
fetched with them) before anything is written.
"""

from __future__ import annotations

import re
from pathlib import Path

from cloche.errors import InvalidReferenceError, RegistryError
from cloche.oci.reference import DEFAULT_REGISTRY, Reference
from cloche.registry.auth import Credentials, erase_credentials, store_credentials
from cloche.registry.client import RegistryClient
from cloche.registry.config import RegistryConfig
from cloche.registry.errors import AuthError

_HOSTS_OF_HUB = ("index.docker.io", "registry-1.docker.io", "docker.io", "registry.hub.docker.com")


def normalize_server(server: str | None) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://h:5000/`` -> ``h:5000``."""
    if not server:
        return DEFAULT_REGISTRY
    host = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", server.strip()).split("/", 1)[0]
    if host in _HOSTS_OF_HUB:
        return DEFAULT_REGISTRY
    try:
        Reference.parse(f"{host}/x")
    except InvalidReferenceError as err:
        raise InvalidReferenceError(f"invalid registry address {server!r}") from err
    return host


def login(server: str | None, username: str, password: str, *,
          config: RegistryConfig | None = None, docker_config: Path | None = None,
          client: RegistryClient | None = None) -> Path:
    """Check the credentials against the registry, then save them; returns the file written."""
    registry = normalize_server(server)
    creds = Credentials(username, password)
    own = client is None
    client = client or RegistryClient(config, credentials=lambda host: creds, retries=2)
    try:
        ref = Reference(registry, "library/x" if registry == DEFAULT_REGISTRY else "x")
        endpoints = client.config.push_endpoints(ref)
        last: Exception | None = None
        for ep in endpoints:
            try:
                client.check_login(ep)
                break
            except AuthError as err:
                raise AuthError(f"login to {registry} failed: {err.message}",
                                reference=registry, status=err.status, codes=err.codes,
                                hint="check the user name and password") from err
            except Exception as err:  # noqa: BLE001  # connection errors: try the next scheme
                last = err
        else:
            assert last is not None
            if isinstance(last, RegistryError) and last.status is None:
                # not "login to REGISTRY/x": that repository is only a probe
                raise RegistryError(f"cannot reach the registry {registry} to log in: "
                                    f"{last.__cause__ or last}", reference=registry,
                                    retryable=True) from last
            raise last
    finally:
        if own:
            client.close()
    return store_credentials(registry, creds, docker_config)


def logout(server: str | None, *, docker_config: Path | None = None) -> bool:
    """Forget the credentials for a registry; False when there were none."""
    return erase_credentials(normalize_server(server), docker_config)


__all__ = ["login", "logout", "normalize_server"]
