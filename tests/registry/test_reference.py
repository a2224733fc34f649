"""Reference parsing against Docker's rules (distribution/reference, ParseNormalizedNamed)."""

from __future__ import annotations

import pytest

from cloche.errors import InvalidReferenceError
from cloche.oci.reference import Reference, is_loopback

D = "sha256:" + "ab" * 32

VALID = [
    # text, registry, repository, tag, digest, familiar
    ("busybox", "docker.io", "library/busybox", "latest", None, "busybox:latest"),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, "busybox:1.36"),
    ("library/busybox", "docker.io", "library/busybox", "latest", None, "busybox:latest"),
    ("docker.io/busybox", "docker.io", "library/busybox", "latest", None, "busybox:latest"),
    ("index.docker.io/library/busybox:x", "docker.io", "library/busybox", "x", None, "busybox:x"),
    ("user/app", "docker.io", "user/app", "latest", None, "user/app:latest"),
    ("docker.io/library/a/b", "docker.io", "library/a/b", "latest", None, "library/a/b:latest"),
    ("localhost/app", "localhost", "app", "latest", None, "localhost/app:latest"),
    ("localhost:5000/app:v1", "localhost:5000", "app", "v1", None, "localhost:5000/app:v1"),
    ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c", "latest", None, "127.0.0.1:5000/a/b/c:latest"),
    ("gcr.io/distroless/static:nonroot", "gcr.io", "distroless/static", "nonroot", None,
     "gcr.io/distroless/static:nonroot"),
    ("[::1]:5000/app", "[::1]:5000", "app", "latest", None, "[::1]:5000/app:latest"),
    ("Example.COM/app", "Example.COM", "app", "latest", None, "Example.COM/app:latest"),
    ("Foo/bar", "Foo", "bar", "latest", None, "Foo/bar:latest"),   # upper case: a host
    ("a_b__c-d---e/x.y", "docker.io", "a_b__c-d---e/x.y", "latest", None, "a_b__c-d---e/x.y:latest"),
    (f"busybox@{D}", "docker.io", "library/busybox", None, D, f"busybox@{D}"),
    (f"busybox:1@{D}", "docker.io", "library/busybox", "1", D, f"busybox:1@{D}"),
    (f"host:1/x:t@{D}", "host:1", "x", "t", D, f"host:1/x:t@{D}"),
    ("x:" + "T" * 128, "docker.io", "library/x", "T" * 128, None, "x:" + "T" * 128),
]


@pytest.mark.parametrize("text,registry,repository,tag,digest,familiar", VALID)
def test_valid(text: str, registry: str, repository: str, tag: str | None, digest: str | None,
               familiar: str) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert (str(ref.digest) if ref.digest else None) == digest
    assert ref.familiar == familiar
    assert Reference.parse(str(ref)) == ref     # the canonical form parses to the same value
    assert Reference.parse(ref.familiar) == ref


INVALID = [
    "", "Busybox", "busybox:", ":tag", "a//b", "a/b/", "/a", "-a", "a-", "a..b", "a/B",
    "busybox@sha256:abc", "busybox@sha256:" + "g" * 64, "busybox@md5:" + "a" * 64,
    "x:" + "a" * 129, "x:-tag", "x:.tag", "foo:bar/baz", "host:port/x", "a" * 64,
    "ex ample/x", "a_b.c/x", "a@b@c", "x/" + "a" * 256, "UPPER:tag", "localhost:5000/App",
]


@pytest.mark.parametrize("text", INVALID)
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(text)
    assert isinstance(info.value, ValueError)
    assert "invalid" in str(info.value)


def test_messages_say_what_is_wrong() -> None:
    with pytest.raises(InvalidReferenceError, match="must be lowercase"):
        Reference.parse("Busybox")
    with pytest.raises(InvalidReferenceError, match="64-byte hexadecimal"):
        Reference.parse("a" * 64)
    with pytest.raises(InvalidReferenceError, match="invalid tag"):
        Reference.parse("x:-t")


def test_no_default_tag_and_views() -> None:
    ref = Reference.parse("busybox", default_tag=None)
    assert ref.tag is None and str(ref) == "docker.io/library/busybox"
    assert ref.identifier == "latest" and ref.api_host == "registry-1.docker.io"
    pinned = ref.with_digest(Reference.parse(f"x@{D}").digest)  # type: ignore[arg-type]
    assert pinned.identifier == D
    mirrored = Reference.parse("gcr.io/distroless/static:1").in_registry("127.0.0.1:5000")
    assert str(mirrored) == "127.0.0.1:5000/distroless/static:1"
    assert Reference.parse("golang:1.21").in_registry("m:1").repository == "library/golang"
    assert Reference.parse("a:1").with_tag("2").tag == "2"
    with pytest.raises(InvalidReferenceError):
        Reference.parse("a").with_tag("-bad")


@pytest.mark.parametrize("host,loop", [
    ("127.0.0.1:5000", True), ("127.9.8.7", True), ("localhost", True), ("localhost:80", True),
    ("[::1]:5000", True), ("docker.io", False), ("128.0.0.1:5000", False), ("gcr.io", False),
    ("localhost.example.com", False)])
def test_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_component = st.from_regex(r"\A[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z").filter(lambda c: len(c) < 30)
_host = st.sampled_from(["", "localhost:5000/", "127.0.0.1:5000/", "gcr.io/", "docker.io/",
                         "index.docker.io/", "[::1]:1/"])
_tag = st.one_of(st.none(), st.from_regex(r"\A[\w][\w.-]{0,20}\Z", alphabet="abcXYZ019_.-"))


@settings(max_examples=60, deadline=None)
@given(_host, st.lists(_component, min_size=1, max_size=3), _tag)
def test_round_trip_property(host: str, path: list[str], tag: str | None) -> None:
    if len(path) > 1 and "." in path[0]:
        # a first component with a dot is read as a host, so such a Docker Hub name has no
        # familiar form that parses back (Docker's FamiliarString has the same ambiguity)
        host = "example.com/"
    text = host + "/".join(path) + (f":{tag}" if tag else "")
    ref = Reference.parse(text)
    assert ref.tag == (tag or "latest")
    assert Reference.parse(str(ref)) == ref == Reference.parse(ref.familiar)
    assert str(ref).startswith(ref.registry + "/") and ref.repository.endswith(path[-1])
