"""Secret files for a RUN step that no host file system ever holds.

A secret used to be written to ``/dev/shm`` and removed after the step: a build stopped by
SIGTERM, SIGHUP or kill -9 left the plaintext there for good. Now the value travels in a
memfd (anonymous memory, no path) handed to the sandbox's init, whose PID 1 copies it onto a
tmpfs it mounts in the step's own mount namespace, bind-mounts the file at the target and
detaches the tmpfs. The host sees an empty directory; the tmpfs lives as long as the step's
mount namespace, which the kernel drops when the step ends, however cloche ends.
"""

from __future__ import annotations

import os
from pathlib import Path

from cloche.errors import SandboxError
from cloche.sandbox.initconfig import InitMount
from cloche.sandbox.spec import Mount


class SecretFiles:
    """The memfds of one step's secrets, and the empty directory their tmpfs is mounted on."""

    def __init__(self, scratch: Path) -> None:
        self.holder = scratch / "secrets"
        self.fds: list[int] = []

    def init_mount(self, mount: Mount, stub: str) -> InitMount:
        """The init's view of a ``secret`` mount whose mount point ``stub`` exists."""
        assert mount.kind == "secret" and mount.data is not None
        if not self.fds:
            self.holder.mkdir(mode=0o700)
        fd = os.memfd_create("cloche-secret", os.MFD_CLOEXEC)
        self.fds.append(fd)
        view = memoryview(mount.data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except OSError as err:
                raise SandboxError(f"cannot hold the secret for {mount.target}: "
                                   f"{err.strerror}") from None
        return InitMount(kind="secret", path=mount.target, target=stub, source=str(self.holder),
                         readonly=True, mode=0o400 if mount.mode is None else mount.mode,
                         fd=fd, uid=mount.uid, gid=mount.gid)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
