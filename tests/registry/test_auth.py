"""Docker's credential sources and WWW-Authenticate parsing."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from cloche.registry.auth import (
    CredentialHelperError,
    Credentials,
    erase_credentials,
    get_credentials,
    parse_challenge,
    store_credentials,
)


def test_parse_challenge() -> None:
    c = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                        'scope="repository:library/busybox:pull"')
    assert c.is_bearer
    assert c.get("realm") == "https://auth.docker.io/token"
    assert c.get("service") == "registry.docker.io"
    assert c.get("scope") == "repository:library/busybox:pull"
    b = parse_challenge('Basic realm="basic-realm"')
    assert not b.is_bearer and b.get("realm") == "basic-realm"
    q = parse_challenge('Bearer realm="x", error="insufficient_scope", scope=a:b:c')
    assert q.get("error") == "insufficient_scope" and q.get("scope") == "a:b:c"


def _auth(user: str, pw: str) -> str:
    return base64.b64encode(f"{user}:{pw}".encode()).decode()


def test_auths_from_config_json(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": _auth("hubuser", "hubpw")},
        "127.0.0.1:5000": {"auth": _auth("u", "p:with:colons")},
        "http://reg.example/v2/": {"auth": _auth("r", "s")},
    }}))
    assert get_credentials("docker.io", cfg) == Credentials("hubuser", "hubpw")
    assert get_credentials("127.0.0.1:5000", cfg) == Credentials("u", "p:with:colons")
    assert get_credentials("reg.example", cfg) == Credentials("r", "s")
    assert get_credentials("other.example", cfg) is None
    assert "hubpw" not in repr(get_credentials("docker.io", cfg))


def test_store_and_erase_keep_other_entries(tmp_path: Path) -> None:
    cfg = tmp_path / "d" / "config.json"
    store_credentials("docker.io", Credentials("a", "b"), cfg)
    store_credentials("127.0.0.1:5000", Credentials("c", "d"), cfg)
    data = json.loads(cfg.read_text())
    assert data["auths"]["https://index.docker.io/v1/"] == {"auth": _auth("a", "b")}
    assert data["auths"]["127.0.0.1:5000"] == {"auth": _auth("c", "d")}
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert erase_credentials("docker.io", cfg) is True
    assert erase_credentials("docker.io", cfg) is False
    assert get_credentials("docker.io", cfg) is None
    assert get_credentials("127.0.0.1:5000", cfg) == Credentials("c", "d")


def _helper(bin_dir: Path, name: str, store: Path) -> None:
    """A real docker-credential-NAME program (a shell script keeping one JSON file)."""
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"""#!/bin/sh
set -e
case "$1" in
  get) read server || true; if [ -f {store}/"$(echo $server | tr / _)" ]; then
         cat {store}/"$(echo $server | tr / _)"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  store) cat > {store}/tmp.json; server=$(sed 's/.*"ServerURL": *"\\([^"]*\\)".*/\\1/' {store}/tmp.json);
         mv {store}/tmp.json {store}/"$(echo $server | tr / _)" ;;
  erase) read server || true; rm -f {store}/"$(echo $server | tr / _)" ;;
esac
""")
    script.chmod(0o755)


def test_cred_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    _helper(bin_dir, "fake", secrets)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"credHelpers": {"reg.example": "fake"},
                               "auths": {"other.example": {"auth": _auth("o", "p")}}}))
    assert get_credentials("reg.example", cfg) is None       # "credentials not found"
    store_credentials("reg.example", Credentials("helper-user", "helper-pw"), cfg)
    assert "reg.example" not in json.loads(cfg.read_text()).get("auths", {})
    assert get_credentials("reg.example", cfg) == Credentials("helper-user", "helper-pw")
    assert get_credentials("other.example", cfg) == Credentials("o", "p")
    assert erase_credentials("reg.example", cfg)
    assert get_credentials("reg.example", cfg) is None
    cfg.write_text(json.dumps({"credsStore": "missing-helper"}))
    with pytest.raises(CredentialHelperError, match="docker-credential-missing-helper"):
        get_credentials("any.example", cfg)
