"""Base images for a build: each external reference resolved once, from the store or a pull.

Stages that name the same image share one pull (a future per reference); ``--pull`` skips the
store and asks the registry, as ``docker build --pull`` does.
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

    def get(self, reference: str, platform: str | None = None) -> Image:
        want = Platform.parse(platform) if platform else self.platform
        key = (reference, str(want))
        with self._lock:
            future = self._futures.get(key)
            owner = future is None
            if owner:
                future = Future()
                self._futures[key] = future
        assert future is not None
        if owner:
            try:
                future.set_result(self._resolve(reference, want))
            except BaseException as err:  # handed to every waiter
                future.set_exception(err)
        return future.result()

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
