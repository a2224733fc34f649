"""Registry credentials and challenges, the way Docker does them.

Credentials come from Docker's ``config.json`` (``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json``): a per-registry ``credHelpers`` entry, else the global ``credsStore``,
else the base64 ``auth`` of ``auths``. Helpers are ``docker-credential-NAME`` programs that read
the server on stdin and answer JSON. ``cloche login`` writes the same file, so ``docker`` and
``cloche`` share logins. Challenges (``WWW-Authenticate``) are parsed here; the token exchange
itself is done by the client, which owns the HTTP transport.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloche.errors import ConfigError, RegistryError
from cloche.oci.reference import DEFAULT_REGISTRY

#: The key Docker uses in config.json for Docker Hub.
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"


class CredentialHelperError(RegistryError):
    """A docker-credential-* helper failed or is missing."""


@dataclass(frozen=True)
class Credentials:
    """A user name and a secret; ``identity_token`` is an OAuth refresh token (helpers may give one)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __repr__(self) -> str:  # never show secrets in tracebacks or logs
        return f"Credentials(username={self.username!r}, password=***)"


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header: scheme and its parameters."""

    scheme: str
    params: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str = "") -> str:
        return dict(self.params).get(key, default)

    @property
    def is_bearer(self) -> bool:
        return self.scheme.lower() == "bearer"


_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


def parse_challenge(header: str) -> Challenge:
    """``Bearer realm="https://auth",service="reg",scope="repository:a:pull"`` -> Challenge."""
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    params: list[tuple[str, str]] = []
    pos = 0
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if not m or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else (m.group(3) or "")
        params.append((m.group(1).lower(), re.sub(r"\\(.)", r"\1", value)))
        pos = m.end()
    return Challenge(scheme, tuple(params))


# --- Docker's config.json ----------------------------------------------------------------

def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def auth_key(registry: str) -> str:
    """The key config.json uses for a registry (Docker Hub has its historical URL)."""
    return DOCKER_HUB_AUTH_KEY if registry == DEFAULT_REGISTRY else registry


def _normal_key(key: str) -> str:
    """config.json keys may be URLs (``https://host/v1/``); reduce them to the host."""
    key = re.sub(r"^[a-z]+://", "", key).split("/", 1)[0]
    return DEFAULT_REGISTRY if key in ("index.docker.io", "registry-1.docker.io") else key


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read Docker's configuration: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a JSON object")
    return data


def _helper_for(config: dict[str, Any], registry: str) -> str | None:
    helpers = config.get("credHelpers") or {}
    for key, name in helpers.items():
        if _normal_key(key) == registry:
            return str(name)
    store = config.get("credsStore")
    return str(store) if store else None


def _run_helper(name: str, action: str, payload: str) -> str:
    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run([program, action], input=payload, capture_output=True,
                              text=True, timeout=60)
    except FileNotFoundError as err:
        raise CredentialHelperError(f"credential helper {program} is not installed",
                                    hint="install it or remove it from Docker's config.json") from err
    except subprocess.TimeoutExpired as err:
        raise CredentialHelperError(f"credential helper {program} {action} timed out") from err
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip()
        if action == "get" and "credentials not found" in out.lower():
            return ""
        raise CredentialHelperError(f"credential helper {program} {action} failed: {out}")
    return proc.stdout


def get_credentials(registry: str, config_path: Path | None = None) -> Credentials | None:
    """Credentials stored for ``registry`` (a host such as ``docker.io`` or ``127.0.0.1:5000``)."""
    path = config_path or docker_config_path()
    config = _read_config(path)
    helper = _helper_for(config, registry)
    if helper:
        out = _run_helper(helper, "get", auth_key(registry))
        if out.strip():
            try:
                data = json.loads(out)
            except ValueError as err:
                raise CredentialHelperError(
                    f"credential helper docker-credential-{helper} answered non-JSON") from err
            user, secret = data.get("Username", ""), data.get("Secret", "")
            if user == "<token>":
                return Credentials(identity_token=secret)
            return Credentials(user, secret)
    for key, entry in (config.get("auths") or {}).items():
        if _normal_key(key) != registry or not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials(identity_token=entry["identitytoken"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError) as err:
                raise ConfigError(f"{path}: invalid auth for {key}") from err
            return Credentials(user, password)
        if entry.get("username"):
            return Credentials(entry["username"], entry.get("password", ""))
    return None


def store_credentials(registry: str, creds: Credentials, config_path: Path | None = None) -> Path:
    """Save credentials as ``docker login`` does: in the helper if one is set, else in auths."""
    path = config_path or docker_config_path()
    config = _read_config(path)
    helper = _helper_for(config, registry)
    if helper:
        payload = json.dumps({"ServerURL": auth_key(registry), "Username": creds.username,
                              "Secret": creds.password})
        _run_helper(helper, "store", payload)
        return path
    auths = config.setdefault("auths", {})
    for key in [k for k in auths if _normal_key(k) == registry]:
        del auths[key]
    raw = f"{creds.username}:{creds.password}".encode()
    auths[auth_key(registry)] = {"auth": base64.b64encode(raw).decode()}
    _write_config(path, config)
    return path


def erase_credentials(registry: str, config_path: Path | None = None) -> bool:
    """Forget credentials for ``registry``; True when something was removed."""
    path = config_path or docker_config_path()
    config = _read_config(path)
    removed = False
    helper = _helper_for(config, registry)
    if helper:
        _run_helper(helper, "erase", auth_key(registry))
        removed = True
    auths = config.get("auths") or {}
    for key in [k for k in auths if _normal_key(k) == registry]:
        del auths[key]
        removed = True
    if removed and path.exists():
        _write_config(path, config)
    return removed


def _write_config(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent="\t")
        f.write("\n")
    os.replace(tmp, path)
