"""Unit tests of the value types: digests, descriptors, platforms, manifests, configs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloche.oci import mediatypes as mt
from cloche.oci.config import Healthcheck, History, ImageConfig
from cloche.oci.descriptor import Descriptor
from cloche.oci.digest import Digest
from cloche.oci.errors import ImageFormatError, PlatformNotFoundError
from cloche.oci.manifest import Index, Manifest, parse
from cloche.oci.platform import InvalidPlatformError, Platform, best_match

D1 = Digest.from_bytes(b"one")
D2 = Digest.from_bytes(b"two")
D3 = Digest.from_bytes(b"three")


def test_digest_parse_and_errors() -> None:
    assert Digest.parse(str(D1)) == D1
    assert D1.short == D1.hex[:12]
    for bad in ("sha256:abc", "md5:" + "0" * 32, "nocolon", "sha256:" + "G" * 64):
        with pytest.raises(ValueError):
            Digest.parse(bad)


def test_descriptor_round_trip_and_hashable() -> None:
    desc = Descriptor(mt.OCI_LAYER_GZIP, D1, 42, annotations={"a": "b"},
                      platform=Platform("linux", "arm64", "v8"), urls=("https://x/y",))
    again = Descriptor.from_dict(json.loads(json.dumps(desc.to_dict())))
    assert again == desc
    assert hash(again) == hash(desc)
    assert desc.to_dict()["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert desc.with_annotations(c="d").annotations == {"a": "b", "c": "d"}
    assert desc.annotations == {"a": "b"}  # unchanged: values are immutable


@pytest.mark.parametrize("data, message", [
    ({"mediaType": mt.OCI_CONFIG, "size": 3}, "lacks 'digest'"),
    ({"mediaType": mt.OCI_CONFIG, "digest": "sha256:xyz", "size": 3}, "bad descriptor"),
    ({"mediaType": mt.OCI_CONFIG, "digest": str(D1), "size": -1}, "invalid size"),
    ("just a string", "not an object"),
])
def test_descriptor_errors_name_source(data: object, message: str) -> None:
    with pytest.raises(ImageFormatError, match=message) as info:
        Descriptor.from_dict(data, source="somewhere.json")
    assert "somewhere.json" in str(info.value)


@pytest.mark.parametrize("text, expected", [
    ("linux/amd64", ("linux", "amd64", "")),
    ("linux/x86_64", ("linux", "amd64", "")),
    ("linux/aarch64", ("linux", "arm64", "v8")),
    ("linux/arm64/v8", ("linux", "arm64", "v8")),
    ("linux/arm64", ("linux", "arm64", "v8")),
    ("linux/arm", ("linux", "arm", "v7")),
    ("linux/armhf", ("linux", "arm", "v7")),
    ("linux/arm/6", ("linux", "arm", "v6")),
    ("linux/i386", ("linux", "386", "")),
    ("Linux/AMD64", ("linux", "amd64", "")),
])
def test_platform_normalisation(text: str, expected: tuple[str, str, str]) -> None:
    p = Platform.parse(text).normalized()
    assert (p.os, p.architecture, p.variant) == expected


def test_platform_parse_forms_and_errors() -> None:
    assert str(Platform.parse("linux/arm/v7")) == "linux/arm/v7"
    assert str(Platform.parse("arm64")) == "linux/arm64"
    assert Platform.parse("linux").architecture == Platform.host().architecture
    for bad in ("", "a/b/c/d", "linux/am d64", "linux//"):
        with pytest.raises(InvalidPlatformError):
            Platform.parse(bad)


def test_platform_matching() -> None:
    assert Platform.parse("linux/arm64").matches(Platform.parse("linux/aarch64/v8"))
    assert not Platform.parse("linux/arm64").matches(Platform.parse("linux/arm/v8"))
    arm7 = Platform.parse("linux/arm/v7")
    assert arm7.runs(Platform.parse("linux/arm/v7")) == 0
    assert arm7.runs(Platform.parse("linux/arm/v6")) == 1
    assert arm7.runs(Platform.parse("linux/arm/v8")) is None
    assert Platform.parse("linux/amd64").runs(Platform.parse("windows/amd64")) is None


def _entry(platform: str | None, data: bytes) -> Descriptor:
    return Descriptor(mt.OCI_MANIFEST, Digest.from_bytes(data), 10,
                      platform=Platform.parse(platform) if platform else None)


def test_best_match_prefers_exact_then_newest_compatible_variant() -> None:
    entries = [_entry("linux/amd64", b"a"), _entry("linux/arm/v5", b"b"),
               _entry("linux/arm/v6", b"c"), _entry("linux/arm64", b"d"),
               Descriptor(mt.OCI_MANIFEST, D3, 5, platform=Platform("unknown", "unknown"))]
    assert best_match(Platform.parse("linux/arm/v7"), entries) == entries[2]
    assert best_match(Platform.parse("linux/arm/v6"), entries) == entries[2]
    assert best_match(Platform.parse("linux/aarch64"), entries) == entries[3]
    assert best_match(Platform.parse("linux/s390x"), entries) is None
    index = Index(tuple(entries))
    with pytest.raises(PlatformNotFoundError) as info:
        index.select(Platform.parse("linux/ppc64le"))
    assert "linux/amd64" in info.value.render() and "unknown" not in info.value.render()


def _manifest() -> Manifest:
    return Manifest(config=Descriptor(mt.OCI_CONFIG, D1, 100),
                    layers=(Descriptor(mt.OCI_LAYER_GZIP, D2, 200),
                            Descriptor(mt.OCI_LAYER_ZSTD, D3, 300)),
                    annotations={"org.example": "x"})


def test_manifest_oci_docker_conversion_round_trip() -> None:
    oci = _manifest()
    docker_bytes = oci.to_json(docker=True)
    docker = parse(docker_bytes)
    assert isinstance(docker, Manifest) and docker.is_docker
    assert docker.config.media_type == mt.DOCKER_CONFIG
    assert [d.media_type for d in docker.layers] == [mt.DOCKER_LAYER_GZIP, mt.DOCKER_LAYER_ZSTD]
    assert "annotations" not in json.loads(docker_bytes)
    back = parse(docker.to_json(docker=False))
    assert back == replace(oci, annotations={})  # Docker's format has no annotations
    assert parse(oci.to_json()) == oci


def test_manifest_json_is_canonical() -> None:
    a = _manifest().to_json()
    assert a == _manifest().to_json()
    assert b" " not in a and b"\n" not in a
    assert a.startswith(b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest')
    assert _manifest().digest == Digest.from_bytes(a)


def test_parse_uses_content_type_when_document_has_none() -> None:
    doc = {"schemaVersion": 2, "manifests": [_entry("linux/amd64", b"a").to_dict()]}
    assert isinstance(parse(json.dumps(doc).encode()), Index)
    docker_list = parse(json.dumps(doc).encode(), media_type=mt.DOCKER_MANIFEST_LIST)
    assert isinstance(docker_list, Index) and docker_list.is_docker
    assert json.loads(docker_list.to_json())["mediaType"] == mt.OCI_INDEX  # OCI by default
    assert json.loads(docker_list.to_json(docker=True))["mediaType"] == mt.DOCKER_MANIFEST_LIST
    assert docker_list.digest == Digest.from_bytes(docker_list.to_json(docker=True))


@pytest.mark.parametrize("doc, message", [
    (b"{not json", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b'{"schemaVersion":1,"name":"x","fsLayers":[]}', "schema 1"),
    (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}',
     "no config"),
    (b'{"schemaVersion":3,"config":{}}', "schemaVersion"),
    (b'{"schemaVersion":2,"mediaType":"text/plain"}', "unknown manifest media type"),
])
def test_manifest_parse_errors(doc: bytes, message: str) -> None:
    with pytest.raises(ImageFormatError, match=message):
        parse(doc, source="ref")


DOCKER_CONFIG = {
    "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05.123Z",
    "docker_version": "20.10.24", "container": "abc",
    "config": {"Hostname": "", "User": "app", "Env": ["PATH=/bin", "A=1"], "Cmd": None,
               "Entrypoint": ["/bin/sh", "-c"], "WorkingDir": "/w", "Labels": {"k": "v"},
               "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}}, "StopSignal": "SIGINT",
               "OnBuild": None, "Shell": ["/bin/ash", "-c"], "ArgsEscaped": True,
               "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 30000000000,
                               "Retries": 3}},
    "rootfs": {"type": "layers", "diff_ids": [str(D1), str(D2)]},
    "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "ADD x /"},
                {"created_by": "ENV A=1", "empty_layer": True, "comment": "buildkit"},
                {"created_by": "RUN make"}],
}


def test_config_typed_view_keeps_unknown_keys() -> None:
    config = ImageConfig.from_json(json.dumps(DOCKER_CONFIG).encode())
    assert config.user == "app" and config.cmd is None and config.entrypoint == ("/bin/sh", "-c")
    assert config.env_map == {"PATH": "/bin", "A": "1"}
    assert config.exposed_ports == ("80/tcp",) and config.volumes == ("/data",)
    assert config.healthcheck == Healthcheck(("CMD-SHELL", "true"), interval=30_000_000_000,
                                             retries=3)
    assert config.history[1] == History(created_by="ENV A=1", empty_layer=True,
                                        comment="buildkit")
    assert config.diff_ids == (D1, D2)
    assert config.platform == Platform("linux", "amd64")
    out = json.loads(config.to_json())
    assert out["docker_version"] == "20.10.24" and out["container"] == "abc"
    assert out["config"]["Hostname"] == "" and "Cmd" not in out["config"]
    assert out["history"] == DOCKER_CONFIG["history"]
    assert ImageConfig.from_json(config.to_json()) == config


def test_config_with_env_replaces_in_place() -> None:
    config = ImageConfig(env=("PATH=/bin", "A=1")).with_env(PATH="/usr/bin", B="2")
    assert config.env == ("PATH=/usr/bin", "A=1", "B=2")


@pytest.mark.parametrize("change, message", [
    ({"config": {"Env": "A=1"}}, "Env must be a list"),
    ({"rootfs": {"diff_ids": ["sha256:zz"]}}, "bad rootfs diff id"),
    ({"config": {"Labels": {"a": 1}}}, "Labels"),
    ({"history": {"a": 1}}, "history is not a list"),
])
def test_config_errors(change: dict, message: str) -> None:
    with pytest.raises(ImageFormatError, match=message):
        ImageConfig.from_json(json.dumps({**DOCKER_CONFIG, **change}).encode(), source="cfg")


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(env=st.lists(_text.map(lambda s: "K" + s.replace("=", "") + "=" + s), max_size=4),
       cmd=st.none() | st.lists(_text, max_size=3),
       labels=st.dictionaries(_text, _text, max_size=3),
       history=st.lists(st.builds(History, created=st.none() | _text,
                                  created_by=st.none() | _text, empty_layer=st.booleans()),
                        max_size=3))
def test_config_round_trip_property(env: list[str], cmd: list[str] | None,
                                    labels: dict[str, str], history: list[History]) -> None:
    config = ImageConfig(architecture="arm64", env=env, cmd=cmd, labels=labels,
                         history=history, diff_ids=(D1,))
    data = config.to_json()
    assert ImageConfig.from_json(data) == config
    assert ImageConfig.from_json(data).to_json() == data


@given(os_name=st.sampled_from(["linux", "Linux", "windows", "freebsd"]),
       arch=st.sampled_from(["amd64", "x86_64", "aarch64", "arm64", "arm", "armhf", "armel",
                             "i386", "386", "riscv64", "s390x"]),
       variant=st.sampled_from(["", "v5", "v6", "v7", "v8", "8", "7", "v2", "v3"]))
def test_platform_normalisation_is_idempotent_and_self_matching(os_name: str, arch: str,
                                                                  variant: str) -> None:
    p = Platform(os_name, arch, variant)
    n = p.normalized()
    assert n.normalized() == n
    assert p.matches(n) and n.matches(p)
    assert p.runs(n) == 0
    assert Platform.parse(str(n)).normalized() == n
