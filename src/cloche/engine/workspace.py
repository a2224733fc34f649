"""Where a build keeps its files: step directories, base image root filesystems, new layers.

Every step that can change files (RUN, COPY, ADD, WORKDIR) gets a fresh overlayfs upper
directory stacked on the stage's lowers; after the step the upper directory *is* the change
(the step's snapshot): unchanged, it is the top lower directory of the next step, because
overlayfs reads its own whiteout format in lower layers too, and it is what the layer blob
(whiteouts and opaque directories translated to OCI's ``.wh.`` entries) is written from.

The blob is written only for the stages whose layers the image ships (the target and the
stages it is built FROM, see ``Workspace.shipping``), in one pass as the step ends. Any other
step gets a ``LazyLayer``: its diff id comes from an uncompressed pass that only hashes, and
the compressed blob is written the first time something asks for it (an export of a build
whose target is that stage, a push), from the snapshot, which the build never changes again.

Base images are flattened once into ``<root>/snapshots/images/<digest>/rootfs`` and shared by
every build that uses them (a lock file serialises the first extraction; the result appears by
rename from the build's own folder, so a killed extraction leaves only scratch that the
sweep of stale builds removes, engine/scratch.py). A build with ``--cache-from`` may leave a
base's root filesystem unmade (``lazy_rootfs``) until a step needs its files (``unpack``).
"""

from __future__ import annotations

import fcntl
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cloche.compression import Compression
from cloche.engine.slots import UNBOUNDED, CpuSlots
from cloche.errors import LayerError, StoreError
from cloche.fs.owners import recording
from cloche.fs.rmtree import rmtree
from cloche.fs.tarentry import TarEntry
from cloche.layers.diff import write_overlay_diff
from cloche.layers.tarwriter import LayerBlob
from cloche.layers.tree import write_entries
from cloche.layers.unchanged import Unchanged, find_unchanged
from cloche.oci.digest import Digest
from cloche.oci.image import Image, Layer, LazyLayer
from cloche.sandbox.overlay import mount_overlay
from cloche.store import Store, atomic_write, locked

# The store keeps a build's layers as plain tars, as the Docker engine keeps its layers:
# compressing is the costliest part of a big layer and only a push or an archive needs it
# (cloche.store.compressed writes the compressed blobs then, once per layer).
LOCAL_LAYERS = Compression.NONE
PENDING_LAYER = "unpack-layer"  # beside an upper directory whose files are still in a layer
UNCHANGED = "unchanged.json"  # beside an upper directory: what its layer leaves out


def pending_layer(upper: Path) -> Digest | None:
    """The layer an upper directory still has to be unpacked from (see ``Workspace.unpack``);
    None when it has no marker or an unreadable one."""
    try:
        return Digest.parse((upper.parent / PENDING_LAYER).read_text().strip())
    except (OSError, ValueError):
        return None


class Workspace:
    """The scratch space of one build, under the store root (same filesystem as snapshots)."""

    def __init__(self, store: Store, compression: Compression = LOCAL_LAYERS, *,
                 cpu: CpuSlots = UNBOUNDED, isolation: str = "namespaces") -> None:
        self.store = store
        self.compression = compression
        self.cpu = cpu  # taken around the CPU-bound work here (layers, unpacking, flattening)
        self._stage = threading.local()  # .ships: this thread's stage ships its layers
        self.root, self._lock_fd = _claim_build_dir(store.builds_dir)
        self._counter = 0
        self._lock = threading.Lock()
        # "chroot": no mounts; steps work on plain trees (engine/plaintree.py), kept here
        # by the lowers they hold, for the next step over exactly those (``_take_tree``)
        self.plain = isolation == "chroot"
        self._trees: dict[tuple[Path, ...], Path] = {}
        self._creator = threading.local()  # .ids: the user a RUN in this thread runs as
        # fetches a layer blob an imported step left to fetch on first need (remote_cache.py)
        self.fetch_layer: Callable[[Digest], None] | None = None
        # base image root filesystems not made yet: made (the image pulled) on first need
        self._lazy_roots: dict[Path, Callable[[], Path]] = {}
        if self.plain and os.geteuid() == 0:
            # a RUN as another user reaches its root and binds by host path (proot):
            # search (not read) permission on the way there (docs/isolation.md)
            for d in (store.root, store.builds_dir, self.root):
                os.chmod(d, os.stat(d).st_mode | 0o111)

    def _new_dir(self, prefix: str) -> Path:
        path = self.scratch_path(prefix)
        path.mkdir()
        return path

    def scratch_path(self, prefix: str) -> Path:
        """A new name in this build's folder: what is made there and not yet renamed into the
        store when the build is killed, the sweep of stale builds removes (engine/scratch.py)."""
        with self._lock:
            self._counter += 1
            return self.root / f"{prefix}{self._counter}"

    @contextmanager
    def step(self, lowers: tuple[Path, ...], *, command: bool = False
             ) -> Iterator[tuple[Path, Path]]:
        """Mount a new upper directory over ``lowers`` (top first); yields (merged, upper).

        The overlay is unmounted when the block ends, so the caller may read ``upper`` after
        it; ``upper`` stays (it is the step's change) unless the caller drops it.
        """
        if self.plain:
            with self._plain_step(lowers, command) as pair:
                yield pair
            return
        self.unpack(lowers)
        base = self.store.snapshots_dir / "steps" / uuid.uuid4().hex
        base.mkdir(parents=True)
        upper, work, merged = base / "upper", base / "work", base / "merged"
        for d in (upper, work, merged):
            d.mkdir()
        try:
            with mount_overlay(list(lowers), upper, work, merged, scratch=self.root):
                yield merged, upper
        finally:
            rmtree(work, True)
            try:
                merged.rmdir()
            except OSError:
                pass

    @contextmanager
    def _plain_step(self, lowers: tuple[Path, ...], command: bool
                    ) -> Iterator[tuple[Path, Path]]:
        """``step`` without mounts: the step works on a plain tree of ``lowers``; its change
        is written to ``upper`` afterwards (engine/plaintree.py). The tree is then kept for
        the step over (upper,) + lowers, or over lowers when nothing changed."""
        from cloche.engine import plaintree
        from cloche.layers.diff import upper_is_empty

        self.unpack(lowers)
        base = self.store.snapshots_dir / "steps" / uuid.uuid4().hex
        base.mkdir(parents=True)
        upper = base / "upper"
        upper.mkdir()
        tree = self._take_tree(lowers)
        kept = False
        pins: list[int] = []  # the tree's directories, held open until the diff is made
        self._creator.ids = None
        # without root, cloche's own writes (COPY, ADD, WORKDIR; not a RUN's ``command``, which
        # proot's fake root lets through) need the owner's bits on directories whose mode
        # denies them (0555): given for the step, taken back after (engine/plaintree.py)
        unlocked: list[tuple[str, int, int]] | None = \
            [] if recording() and not command else None
        try:
            before = plaintree.index(tree, pins, unlock=unlocked)
            yield tree, upper
            plaintree.diff(tree, before, upper, creator=self._creator.ids)
            if unlocked:
                plaintree.relock(tree, upper, unlocked)
            self._keep_tree(lowers if upper_is_empty(upper) else (upper,) + lowers, tree)
            kept = True
        finally:
            self._creator.ids = None
            for fd in pins:
                os.close(fd)
            if not kept:
                rmtree(tree, True)

    def creates_as(self, uid: int, gid: int) -> None:
        """Say, inside ``step``, which user the step's command runs as: in a build that
        records owners (not root, cloche.fs.owners) the files it makes are that user's."""
        if self.plain:
            self._creator.ids = (uid, gid)

    def _take_tree(self, lowers: tuple[Path, ...]) -> Path:
        """A plain tree of ``lowers`` for this caller alone: a kept one whose lowers are the
        bottom of ``lowers``, with the rest applied, else a new one."""
        from cloche.engine import plaintree

        with self._lock:
            best: tuple[Path, ...] | None = None
            for key in self._trees:
                if len(key) <= len(lowers) and lowers[len(lowers) - len(key):] == key and (
                        best is None or len(key) > len(best)):
                    best = key
            tree = self._trees.pop(best) if best is not None else None
        if tree is not None and best is not None:
            plaintree.materialize(lowers[:len(lowers) - len(best)], tree, base=tree)
            return tree
        tree = self.scratch_path("tree-")
        try:
            plaintree.materialize(lowers, tree)
        except BaseException:
            rmtree(tree, True)
            raise
        return tree

    def _keep_tree(self, lowers: tuple[Path, ...], tree: Path) -> None:
        with self._lock:
            old = self._trees.pop(lowers, None)
            self._trees[lowers] = tree
        if old is not None:
            rmtree(old, True)

    @contextmanager
    def readonly_view(self, lowers: tuple[Path, ...]) -> Iterator[Path]:
        """A mounted view of a finished stage's root filesystem, for COPY --from."""
        if len(lowers) == 1:
            self.unpack(lowers)
            yield lowers[0]
            return
        if self.plain:  # a plain tree, kept again afterwards (the view only reads it)
            self.unpack(lowers)
            tree = self._take_tree(lowers)
            try:
                yield tree
            finally:
                self._keep_tree(lowers, tree)
            return
        with self.step(lowers) as (merged, upper):
            yield merged
        rmtree(upper.parent, True)

    @contextmanager
    def shipping(self, ships: bool) -> Iterator[None]:
        """Within the block, the calling thread's steps write their blobs at once (``ships``:
        the stage's layers are part of the image) or lazily. A stage runs on one thread, so
        the executor says it once per stage and the step handlers need not know."""
        before = getattr(self._stage, "ships", False)
        self._stage.ships = ships
        try:
            yield
        finally:
            self._stage.ships = before

    def commit(self, upper: Path, lowers: tuple[Path, ...]) -> Layer:
        """The layer for a step's upper directory over ``lowers`` (the step's). What the step
        left as it was is left out, as BuildKit's differ leaves it out (layers/unchanged.py;
        the list is kept beside ``upper`` for a lazy layer); a step that changed nothing gets
        an empty layer, as in BuildKit. Its blob is written now when the stage ships
        (``shipping``), else on first need (``LazyLayer``)."""
        with self.cpu.slot():
            unchanged = find_unchanged(upper, lowers)
            atomic_write(upper.parent / UNCHANGED, unchanged.to_json())
            if getattr(self._stage, "ships", False):
                with self.store.blobs.writer(hashed_by_caller=True) as sink:
                    blob = write_overlay_diff(upper, sink, self.compression, unchanged=unchanged)
                    sink.name_as(blob.digest, blob.size)
                return self._layer(blob)
            tar = write_overlay_diff(upper, _Discard(), Compression.NONE, unchanged=unchanged)
        return lazy_layer(self.store, upper, tar.diff_id, tar.size, self.compression)

    def _layer(self, blob: LayerBlob) -> Layer:
        return Layer(blob.digest, blob.diff_id, blob.size, blob.media_type, self.store.blobs)

    def commit_entries(self, pairs: list[tuple[TarEntry, str | None]], upper: Path) -> Layer:
        """The layer of a step written from entries (a COPY straight to its layer, see
        build/direct_copy.py). ``upper`` stays empty and is marked: ``unpack`` fills it from
        the layer when a step is stacked on it."""
        with self.cpu.slot(), self.store.blobs.writer(hashed_by_caller=True) as sink:
            blob = write_entries(iter(pairs), sink, self.compression)
            sink.name_as(blob.digest, blob.size)
        atomic_write(upper.parent / PENDING_LAYER, str(blob.digest).encode())
        return self._layer(blob)

    def unpack(self, lowers: tuple[Path, ...]) -> None:
        """Fill the upper directories among ``lowers`` that hold only a marker with their
        layer's files (once, under a lock; the files appear by rename, so a killed unpack
        leaves the directory empty and the marker in place)."""
        for lower in lowers:
            if lower in self._lazy_roots:
                self._make_root(lower)
            marker = lower.parent / PENDING_LAYER
            if not marker.exists():
                continue
            wanted = pending_layer(lower) if self.fetch_layer is not None else None
            if self.fetch_layer is not None and wanted is not None \
                    and not self.store.blobs.exists(wanted):
                self.fetch_layer(wanted)  # a step imported from a remote cache; no slot held
            with self.cpu.slot(), locked(lower.parent / ".lock"):
                if not marker.exists():
                    continue
                for stale in lower.parent.glob("unpacking-*"):  # killed before the rename
                    rmtree(stale, True)
                with os.scandir(lower) as it:
                    done = next(it, None) is not None  # killed after the rename
                if not done:
                    digest = pending_layer(lower)
                    if digest is None:
                        raise StoreError(f"{marker}: not a layer digest")
                    tmp = self.scratch_path("unpacking-")  # found stale if killed
                    from cloche.layers.apply import apply_layer

                    with self.store.blobs.open(digest) as stream:
                        apply_layer(stream, tmp)
                    os.rename(tmp, lower)  # over the empty upper directory
                marker.unlink()

    def _make_root(self, rootfs: Path) -> None:
        """Make a base image's root filesystem that ``lazy_rootfs`` left for later; no slot
        held here (the pull waits for the network; the flattening takes one)."""
        with self._lock:
            make = self._lazy_roots.get(rootfs)
        if make is None:
            return
        made = make()  # pulls once per image; image_rootfs flattens once per store
        if made != rootfs:
            raise StoreError(f"{made}: not the base image's root filesystem {rootfs}")
        with self._lock:
            self._lazy_roots.pop(rootfs, None)

    def cleanup(self) -> None:
        from cloche.sandbox.cgroups import remove_build_groups

        rmtree(self.root, True)
        remove_build_groups(self.root.name)  # the steps' cgroups are named after the build
        self.root.with_suffix(".lock").unlink(missing_ok=True)
        os.close(self._lock_fd)

    # -- base images -----------------------------------------------------------------------

    def image_rootfs(self, image: Image, name: str | None = None) -> Path:
        """The flattened root filesystem of ``image``, extracted once per store. Each layer
        is checked against its config's diff id; errors name the image (``name``, its
        reference, else its digest) and the layer, and leave no half-made tree behind."""
        from cloche.layers.apply import flatten_image

        if not image.layers:
            empty = self.store.snapshots_dir / "empty"
            empty.mkdir(parents=True, exist_ok=True)
            return empty
        base = self.store.snapshots_dir / "images" / image.digest.hex
        rootfs = base / "rootfs"
        if rootfs.is_dir():
            return rootfs
        base.mkdir(parents=True, exist_ok=True)
        with self.cpu.slot(), locked(base / ".lock"):
            if rootfs.is_dir():
                return rootfs
            tmp = self.scratch_path("extracting-")  # the build's folder: found stale if killed
            try:
                flatten_image(image, tmp, name=name or str(image.digest))
            except BaseException:
                rmtree(tmp, ignore_errors=True)
                raise
            os.rename(tmp, rootfs)
        return rootfs

    def lazy_rootfs(self, image: Image, make: Callable[[], Path]) -> Path:
        """Where ``image_rootfs`` puts the root filesystem of ``image``, whose layers may not
        be in the store yet: ``make`` (which pulls the image and calls ``image_rootfs``) runs
        when a step first needs the files (``unpack``), never when every step hits a cache."""
        if not image.layers:
            return self.image_rootfs(image)
        rootfs = self.store.snapshots_dir / "images" / image.digest.hex / "rootfs"
        if rootfs.is_dir():  # flattened by an earlier build
            return rootfs
        with self._lock:
            self._lazy_roots.setdefault(rootfs, make)
        return rootfs


def _claim_build_dir(builds: Path) -> tuple[Path, int]:
    """A new ``build-<id>`` folder and the fd of its lock, held while the build runs: the
    sweep of stale builds (engine/scratch.py) removes only folders whose lock is free, and
    folders without a lock. So the lock comes first, and is checked to be still linked once
    held (a sweep may have taken it, found no folder and unlinked it in between)."""
    builds.mkdir(parents=True, exist_ok=True)
    while True:
        root = builds / f"build-{uuid.uuid4().hex[:12]}"
        lock = root.with_suffix(".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            linked = os.stat(lock, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            linked = False
        if linked:
            root.mkdir()
            return root, fd
        os.close(fd)


class _Discard:
    """A sink that keeps nothing: the uncompressed pass only wants the tar's hash and size."""

    def write(self, data: bytes) -> int:
        return len(data)


def load_unchanged(upper: Path) -> Unchanged:
    """What the layer of ``upper`` leaves out (layers/unchanged.py), as its step found it;
    nothing when no list was kept (a directory unpacked from its layer holds only that)."""
    try:
        return Unchanged.from_json((upper.parent / UNCHANGED).read_bytes())
    except FileNotFoundError:
        return Unchanged()
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LayerError(f"{upper.parent / UNCHANGED}: unreadable ({e})") from e


def lazy_layer(store: Store, snapshot: Path, diff_id: Digest, tar_size: int,
               compression: Compression) -> LazyLayer:
    """The layer of a step's snapshot, whose blob is written into ``store`` on first need.

    The blob is checked against ``diff_id``: a snapshot changed since its diff id was taken
    fails the export with a LayerError instead of shipping a layer its config does not name.
    """
    def produce() -> tuple[Digest, int, str]:
        with store.blobs.writer(hashed_by_caller=True) as sink:
            blob = write_overlay_diff(snapshot, sink, compression,
                                      unchanged=load_unchanged(snapshot))
            sink.name_as(blob.digest, blob.size)
            if blob.diff_id != diff_id:
                raise LayerError(f"{snapshot}: the step's files changed after the step "
                                 f"(diff id {blob.diff_id}, recorded {diff_id})")
        return blob.digest, blob.size, blob.media_type

    return LazyLayer(diff_id, tar_size, store.blobs, produce)
