"""cloche.pull and cloche.push against a real registry, with the typed transfer events."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import cloche
from cloche.events import Event, LayerExists, LayerPulled, LayerPulling, LayerPushed, ManifestPushed
from tests.fixtures.services import Registry

pytestmark = pytest.mark.registry


class Recorder:
    """A listener as a program would write one: called from transfer threads."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


def test_push_then_pull_through_the_face(registry: Registry, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "hello").write_text("hi\n")
    src, dst = tmp_path / "src", tmp_path / "dst"
    image = cloche.import_image(rootfs, "face:1", root=src, changes=["CMD [\"/hello\"]"])
    target = f"{registry.host}/face/app:1"

    pushed_events = Recorder()
    pushed = cloche.push("face:1", target, root=src, listener=pushed_events)
    assert isinstance(pushed, cloche.PushResult) and pushed.digest == image.digest
    assert sorted(e.how for e in pushed_events.of(LayerPushed)) == ["uploaded", "uploaded"]
    assert [e.descriptor.digest for e in pushed_events.of(ManifestPushed)] == [image.digest]

    pulled_events = Recorder()
    pulled = cloche.pull(target, root=dst, listener=pulled_events)
    assert pulled.digest == image.digest
    fetched = {image.config_digest, *(layer.digest for layer in image.layers)}
    assert {e.descriptor.digest for e in pulled_events.of(LayerPulled)} == fetched
    assert {e.descriptor.digest for e in pulled_events.of(LayerPulling)} == fetched
    assert cloche.inspect(target, root=dst)["Config"]["Cmd"] == ["/hello"]

    again = Recorder()
    cloche.pull(cloche.Reference.parse(target), root=dst, listener=again)
    assert {type(e) for e in again.events} == {LayerExists}
    pushed_again = Recorder()
    cloche.push("face:1", target, root=src, listener=pushed_again)
    assert sorted(e.how for e in pushed_again.of(LayerPushed)) == ["exists", "exists"]
