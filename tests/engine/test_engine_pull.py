"""Base images from a registry: pulled once per build and shared between the stages naming
them; a digest-pinned reference works; a second build finds the image in the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cloche.engine import events as ev
from cloche.registry.push import push_stored
from cloche.store import Store
from tests.engine.conftest import BASE, Builder, rootfs


@pytest.fixture(scope="module")
def remote_base(registry, template_store: Path) -> str:
    """The busybox image pushed to the loopback registry; returns its reference."""
    ref = f"{registry.host}/engine/busybox:1"
    push_stored(Store.open(template_store), BASE, ref)
    return ref


@pytest.fixture
def empty_builder(builder: Builder) -> Builder:
    """A builder whose store holds nothing, so every base image must be pulled."""
    shutil.rmtree(builder.root)
    builder.root.mkdir()
    return builder


def test_two_stages_share_one_pull(empty_builder: Builder, remote_base: str,
                                   tmp_path: Path) -> None:
    dockerfile = (f"FROM {remote_base} AS one\nRUN echo 1 > /one\n"
                  f"FROM {remote_base} AS two\nRUN echo 2 > /two\n"
                  f"FROM {remote_base}\nCOPY --from=one /one /\nCOPY --from=two /two /\n")
    result = empty_builder.build(dockerfile, jobs=3)
    pulls = empty_builder.recorder.of(ev.Pulling)
    assert [p.reference for p in pulls] == [remote_base]
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "one").read_text() == "1\n" and (root / "two").read_text() == "2\n"

    again = empty_builder.build(f"FROM {remote_base}\nRUN echo again > /again\n")
    assert again.image.layers[0].digest == result.image.layers[0].digest
    assert empty_builder.recorder.of(ev.Pulling) == []  # now in the store


def test_digest_pinned_base(empty_builder: Builder, remote_base: str, registry,
                            template_store: Path) -> None:
    digest = Store.open(template_store).image(BASE).digest
    pinned = f"{registry.host}/engine/busybox@{digest}"
    result = empty_builder.build(f"FROM {pinned}\nRUN echo pinned > /p\n")
    assert result.image.layers[0].digest == Store.open(template_store).image(BASE).layers[0].digest


def test_pull_flag_asks_the_registry_again(builder: Builder, remote_base: str) -> None:
    builder.build(f"FROM {remote_base}\nRUN true\n")
    builder.build(f"FROM {remote_base}\nRUN true\n", pull=True)
    assert [p.reference for p in builder.recorder.of(ev.Pulling)] == [remote_base]


def test_copy_from_a_registry_image(empty_builder: Builder, remote_base: str,
                                    tmp_path: Path) -> None:
    result = empty_builder.build(f"FROM scratch\nCOPY --from={remote_base} /bin/busybox /bb\n")
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "bb").stat().st_size > 100_000


def test_a_stored_base_of_another_platform_is_not_used(builder) -> None:
    """BuildKit would look for the asked platform; with no registry to ask, the build fails
    and says which platforms the stored image has."""
    import pytest

    from cloche.errors import BuildError

    with pytest.raises(BuildError) as caught:
        builder.build(f"FROM {BASE}\nRUN true\n", platform="linux/arm64")
    message = caught.value.render()
    assert "stored for linux/amd64 only, not linux/arm64" in message
    assert caught.value.line == 1


def test_a_base_without_the_asked_platform_is_an_error(empty_builder: Builder,
                                                       remote_base: str) -> None:
    """An amd64-only base under --platform linux/arm64: BuildKit warns
    (InvalidBaseImagePlatform) and makes an image whose config says arm64 over amd64
    binaries; cloche, one platform per build, refuses it at the FROM line (issue 14)."""
    import pytest

    from cloche.errors import BuildError

    with pytest.raises(BuildError) as caught:
        empty_builder.build(f"FROM {remote_base}\nRUN true\n", platform="linux/arm64")
    message = caught.value.render()
    assert "linux/amd64" in message and "linux/arm64" in message, message
    assert caught.value.line == 1
    assert not [e for e in empty_builder.recorder.of(ev.StepFinished) if not e.cached]
