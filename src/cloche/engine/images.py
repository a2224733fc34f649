"""Base images for a build: each external reference resolved once, from the store or a pull.

Stages that name the same image share one pull (a future per reference); ``--pull`` skips the
store and asks the registry, as ``docker build --pull`` does. The executor starts every image
the plan names at the start of the build (``prefetch``: one thread each, all at once), so a
stage finds its base pulled, or being pulled, instead of starting the pull when it gets there.

A build with ``--cache-from`` (``lazy``) may never need the files of a base image: when every
step of a stage hits the remote cache, the stage needs only its base's manifest digest (the
key) and config. For such builds ``prefetch_light``/``get_light`` resolve an image the store
lacks by its manifest and config only (registry/pull.py ``resolve_image``; nothing is stored);
its layers are ``LazyLayer`` values, and ``complete`` (or the first layer asked for its blob)
pulls the rest, once per reference, from the manifest already fetched. The image is named in
the store only then, with all its blobs: a base that was never needed leaves no trace.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING

from cloche.engine import events as ev
from cloche.errors import ClocheError, ImageNotFoundError
from cloche.oci.digest import Digest
from cloche.oci.image import Image, LazyLayer, MemoryBlobSource
from cloche.oci.platform import Platform
from cloche.store import Store

if TYPE_CHECKING:
    from cloche.registry.pull import ResolvedManifest


class ImageResolver:
    """``get(ref)`` returns the Image for a base reference, pulling it at most once."""

    def __init__(self, store: Store, platform: Platform, *, pull: bool,
                 listener: ev.Listener, lazy: bool = False) -> None:
        self.store = store
        self.platform = platform
        self.pull = pull
        self.listener = listener
        self.lazy = lazy  # the build has --cache-from: a base's layers may never be needed
        self._lock = threading.Lock()
        self._futures: dict[tuple[str, str], Future[Image]] = {}
        # lazy: the images resolved by manifest and config only, and what the pull reuses
        self._light: dict[tuple[str, str], Future[Image]] = {}
        self._resolved: dict[tuple[str, str], ResolvedManifest] = {}
        self._pending: dict[Digest, tuple[str, str]] = {}  # light image -> its ref
        self.pulled: set[str] = set()  # references this build pulled (progress: FROM DONE)

    def get(self, reference: str, platform: str | None = None) -> Image:
        """The image (waiting for its pull); the pull's error, raised, when it failed."""
        future, owner, want = self._claim(reference, platform)
        if owner:
            self._fill(future, reference, want)
        return future.result()

    def prefetch(self, reference: str, platform: str | None = None) -> Future[Image]:
        """Start resolving ``reference`` on a thread of its own, unless already started; the
        future says when it is done. Errors stay in the future for ``get`` to raise, located,
        by the stage that needs the image.

        The thread is a daemon: a pull cannot be interrupted halfway, and a build that stops
        (a failure, Ctrl-C) does not wait for the pulls nobody needs any more. What a pull
        writes into the store appears atomically, so one cut short leaves nothing half-done.
        """
        future, owner, want = self._claim(reference, platform)
        if owner:
            threading.Thread(target=self._fill, args=(future, reference, want), daemon=True,
                             name=f"cloche-pull-{reference}").start()
        return future

    def prefetch_light(self, reference: str, platform: str | None = None) -> Future[Image]:
        """``prefetch`` for a use that may need only the image's digest and config: in a lazy
        build, an image the store lacks is resolved by its manifest and config only."""
        if not self.lazy:
            return self.prefetch(reference, platform)
        future, owner, want = self._claim_light(reference, platform)
        if owner:
            threading.Thread(target=self._fill_light, args=(future, reference, want),
                             daemon=True, name=f"cloche-resolve-{reference}").start()
        return future

    def get_light(self, reference: str, platform: str | None = None) -> Image:
        """``get`` for a use that may need only the image's digest and config; the image's
        layers may be pending (``complete`` pulls them)."""
        if not self.lazy:
            return self.get(reference, platform)
        future, owner, want = self._claim_light(reference, platform)
        if owner:
            self._fill_light(future, reference, want)
        return future.result()

    def pending(self, image: Image) -> bool:
        """Whether ``image`` came from ``get_light`` without its layers (not in the store)."""
        if not any(isinstance(layer, LazyLayer) for layer in image.layers):
            return False  # a whole image (the store's, or pulled) of the same digest
        with self._lock:
            return image.digest in self._pending

    def complete(self, image: Image) -> Image:
        """The whole image of a ``get_light`` result (pulled once, shared); ``image`` itself
        when it was not pending."""
        with self._lock:
            source = self._pending.get(image.digest)
        if source is None:
            return image
        return self.get(*source)

    def _claim_light(self, reference: str, platform: str | None
                     ) -> tuple[Future[Image], bool, Platform]:
        want = Platform.parse(platform) if platform else self.platform
        key = (reference, str(want))
        with self._lock:
            future = self._futures.get(key) or self._light.get(key)
            if future is not None:
                return future, False, want
            future = self._light[key] = Future()
        return future, True, want

    def _fill_light(self, future: Future[Image], reference: str, platform: Platform) -> None:
        try:
            future.set_result(self._resolve_light(reference, platform))
        except BaseException as err:  # noqa: BLE001 - handed to every waiter
            future.set_exception(err)

    def _resolve_light(self, reference: str, platform: Platform) -> Image:
        """The stored image, else the registry's manifest and config with pending layers."""
        stored = self._stored(reference, platform)
        if stored is not None and same_platform(stored.platform, platform):
            return stored
        from cloche.registry.pull import resolve_image

        try:
            resolved = resolve_image(reference, platform)
        except ClocheError as err:
            if stored is None:
                raise
            raise _other_platform(reference, stored, platform, err) from err
        assert resolved.config is not None
        config = resolved.config
        # the config checked as a pull checks it (digest, size, one diff id per layer)
        shape = Image.from_manifest(
            resolved.fetched.data, MemoryBlobSource({resolved.manifest.config.digest: config}),
            media_type=resolved.fetched.media_type or None, name=reference)
        key = (reference, str(platform))
        layers = tuple(self._pending_layer(key, i, layer.diff_id, layer.size)
                       for i, layer in enumerate(shape.layers))
        image = replace(shape, layers=layers)
        with self._lock:
            self._resolved[key] = resolved
            self._pending[image.digest] = (reference, str(platform))
        return image

    def _pending_layer(self, key: tuple[str, str], index: int, diff_id: Digest,
                       size: int) -> LazyLayer:
        """Layer ``index`` of a light image: its blob is the whole image's pull away."""
        def produce() -> tuple[Digest, int, str]:
            layer = self.get(*key).layers[index]
            return layer.digest, layer.size, layer.media_type

        return LazyLayer(diff_id, size, self.store.blobs, produce)

    def _claim(self, reference: str, platform: str | None
               ) -> tuple[Future[Image], bool, Platform]:
        """The future of (reference, platform), and whether the caller must fill it."""
        want = Platform.parse(platform) if platform else self.platform
        key = (reference, str(want))
        with self._lock:
            future = self._futures.get(key)
            if future is not None:
                return future, False, want
            future = self._futures[key] = Future()
        return future, True, want

    def _fill(self, future: Future[Image], reference: str, platform: Platform) -> None:
        try:
            future.set_result(self._resolve(reference, platform))
        except BaseException as err:  # noqa: BLE001 - handed to every waiter
            future.set_exception(err)

    def _stored(self, reference: str, platform: Platform) -> Image | None:
        """The store's image of that name (for ``platform`` if it has one), unless ``--pull``
        asks the registry."""
        if self.pull:
            return None
        try:
            return self.store.image(reference, platform)
        except ImageNotFoundError:
            return None

    def _resolve(self, reference: str, platform: Platform) -> Image:
        stored = self._stored(reference, platform)
        if stored is not None and same_platform(stored.platform, platform):
            return stored
        from cloche.registry.pull import pull_image, pull_resolved

        resolved = self._light_resolution(reference, platform)
        self.listener(ev.Pulling(reference))
        self.pulled.add(reference)
        try:
            if resolved is not None:  # the manifest a light resolution fetched: the rest
                return pull_resolved(resolved, self.store, listener=self.listener)
            return pull_image(reference, self.store, platform, listener=self.listener)
        except ClocheError as err:
            if stored is None:
                raise
            raise _other_platform(reference, stored, platform, err) from err

    def _light_resolution(self, reference: str, platform: Platform) -> ResolvedManifest | None:
        """The manifest a light resolution of (reference, platform) fetched, once it is done
        (waiting for one under way); None when there is none."""
        key = (reference, str(platform))
        with self._lock:
            light = self._light.get(key)
        if light is None:
            return None
        if light.exception() is not None:
            return None
        with self._lock:
            return self._resolved.get(key)


def _other_platform(reference: str, stored: Image, platform: Platform,
                    err: ClocheError) -> ImageNotFoundError:
    return ImageNotFoundError(
        f"{reference} is stored for {stored.platform} only, not {platform}, and "
        f"pulling it for {platform} failed: {err.message}",
        hint="build with the image's platform, or pull or import the image for this one")


def same_platform(got: Platform, wanted: Platform) -> bool:
    """OS and architecture agree (and the variant, when the build asks for one)."""
    if (got.os, got.architecture) != (wanted.os, wanted.architecture):
        return False
    return not wanted.variant or not got.variant or got.variant == wanted.variant
