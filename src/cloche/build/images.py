"""Base images for a build: each external reference resolved once, from the store or a pull.

Stages that name the same image share one pull (a future per reference); ``--pull`` skips the
store and asks the registry, as ``docker build --pull`` does.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

from cloche.build import events as ev
from cloche.errors import ImageNotFoundError
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
        if not self.pull:
            try:
                return self.store.image(reference, platform)
            except ImageNotFoundError:
                pass
        from cloche.registry.pull import pull_image

        self.listener(ev.Pulling(reference))
        return pull_image(reference, self.store, platform)
