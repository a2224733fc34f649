"""Base images for a build: each external reference resolved once, from the store or a pull.

Stages that name the same image share one pull (a future per reference); ``--pull`` skips the
store and asks the registry, as ``docker build --pull`` does. The executor starts every image
the plan names at the start of the build (``prefetch``: one thread each, all at once), so a
stage finds its base pulled, or being pulled, instead of starting the pull when it gets there.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

from cloche.engine import events as ev
from cloche.errors import ClocheError, ImageNotFoundError
from cloche.oci.image import Image
from cloche.oci.platform import Platform
from cloche.store import Store


class ImageResolver:
    """``get(ref)`` returns the Image for a base reference, pulling it at most once."""

    def __init__(self, store: Store, platform: Platform, *, pull: bool,
                 listener: ev.Listener) -> None:
        self.store = store
        self.platform = platform
        self.pull = pull
        self.listener = listener
        self._lock = threading.Lock()
        self._futures: dict[tuple[str, str], Future[Image]] = {}
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

    def _resolve(self, reference: str, platform: Platform) -> Image:
        stored = None
        if not self.pull:
            try:
                stored = self.store.image(reference, platform)
            except ImageNotFoundError:
                pass
            if stored is not None and same_platform(stored.platform, platform):
                return stored
        from cloche.registry.pull import pull_image

        self.listener(ev.Pulling(reference))
        self.pulled.add(reference)
        try:
            return pull_image(reference, self.store, platform)
        except ClocheError as err:
            if stored is None:
                raise
            raise ImageNotFoundError(
                f"{reference} is stored for {stored.platform} only, not {platform}, and "
                f"pulling it for {platform} failed: {err.message}",
                hint="build with the image's platform, or pull or import the image for this "
                     "one") from err


def same_platform(got: Platform, wanted: Platform) -> bool:
    """OS and architecture agree (and the variant, when the build asks for one)."""
    if (got.os, got.architecture) != (wanted.os, wanted.architecture):
        return False
    return not wanted.variant or not got.variant or got.variant == wanted.variant
