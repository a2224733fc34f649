"""The registry configuration file: buildkitd.toml's shape, defaults for loopback hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloche.errors import ConfigError
from cloche.oci.reference import Reference
from cloche.registry.config import RegistryConfig, default_path

TOML = """
[registry."docker.io"]
mirrors = ["mirror.example:5000", "https://m2.example"]

[registry."gcr.io"]
mirrors = ["127.0.0.1:5001"]

[registry."10.0.0.5:5000"]
http = true

[registry."reg.internal"]
insecure = true

[registry."127.0.0.1:6000"]
http = false
"""


def test_load_and_endpoints(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(TOML)
    cfg = RegistryConfig.load(path)
    eps = cfg.endpoints(Reference.parse("golang:1.21"))
    assert [str(e.reference) for e in eps] == [
        "mirror.example:5000/library/golang:1.21", "m2.example/library/golang:1.21",
        "docker.io/library/golang:1.21"]
    assert [e.is_mirror for e in eps] == [True, True, False]
    assert eps[-1].base_url == "https://registry-1.docker.io"
    eps = cfg.endpoints(Reference.parse("gcr.io/distroless/static"))
    assert eps[0].base_url == "http://127.0.0.1:5001"           # loopback mirror: HTTP
    assert str(eps[0].reference) == "127.0.0.1:5001/distroless/static:latest"
    assert cfg.schemes("10.0.0.5:5000") == [("http", False)]
    assert cfg.schemes("reg.internal") == [("https", False), ("http", False)]
    assert cfg.schemes("127.0.0.1:6000") == [("https", True)]   # explicit http = false wins
    assert cfg.schemes("quay.io") == [("https", True)]
    assert cfg.push_endpoints(Reference.parse("golang")) == [eps[-1].__class__(
        Reference.parse("golang"), "https", True)]


def test_loopback_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = RegistryConfig.load(tmp_path / "missing.toml")
    for host in ("127.0.0.1:5000", "localhost:5000", "[::1]:5000", "127.1.2.3"):
        assert cfg.schemes(host) == [("http", False)]


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLOCHE_CONFIG", str(tmp_path / "c.toml"))
    assert default_path() == tmp_path / "c.toml"
    monkeypatch.delenv("CLOCHE_CONFIG")
    import os
    expected = Path("/etc/cloche/config.toml") if os.geteuid() == 0 else \
        Path.home() / ".config" / "cloche" / "config.toml"
    assert default_path() == expected


@pytest.mark.parametrize("text,match", [
    ("[registry\n", "invalid TOML"),
    ('registry = 1', "must be a table"),
    ('[registry."x"]\nmirrors = "m"', "mirrors must be a list"),
    ('[registry."x"]\nhttp = "yes"', "http must be true or false"),
])
def test_bad_files_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        RegistryConfig.load(path)
    assert str(path) in str(info.value)


def test_backoff_honours_retry_after_and_is_capped() -> None:
    from cloche.registry.wire import backoff_delay
    assert backoff_delay(0.5, 1) == 0.5 and backoff_delay(0.5, 3) == 2.0
    assert backoff_delay(0.1, 1, "4") == 4.0
    assert backoff_delay(0.1, 1, "3600") == 30.0
    assert backoff_delay(0.1, 1, "Wed, 21 Oct 2015 07:28:00 GMT") == 0.1   # a past date
    assert backoff_delay(0.1, 1, "soon") == 0.1
