"""What a step handler needs from the build around it, bundled so handlers stay small."""

from __future__ import annotations

import threading
from collections import deque
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from cloche.engine import events as ev
from cloche.engine.context import BuildContext
from cloche.engine.options import BuildOptions
from cloche.engine.sources import SourceTree
from cloche.engine.workspace import Workspace
from cloche.plan.steps import Ref
from cloche.sandbox.cancel import CancelScope


class Sources(Protocol):
    """The files a step may read besides its own stage: other stages, images, the context."""

    def open(self, ref: Ref) -> AbstractContextManager[SourceTree]:
        """A stage's or an image's root filesystem, read-only, while the block runs."""
        ...

    def identity(self, ref: Ref | None, paths: tuple[str, ...],
                 excludes: tuple[str, ...]) -> str:
        """What ``paths`` of ``ref`` (None: the build context) are, for a cache key."""
        ...


@dataclass
class StepContext:
    """One step's surroundings: where files go, what it may read, whom to tell."""

    workspace: Workspace
    options: BuildOptions
    listener: ev.Listener
    step: ev.StepRef
    file: str
    build_context: BuildContext
    sources: Sources  # a COPY --from / RUN --mount from= reference -> its files
    stage_name: str
    platform: str = ""  # the build's target platform (part of every cache key)
    cmd_set: bool = False  # a CMD came before in this stage (ENTRYPOINT keeps it then)
    output_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    cancel: CancelScope | None = None  # the build's: ends its steps when it stops
    # no later step of this build reads the stage's files (the target stage's last step
    # that writes files): a COPY may write its layer without writing the files first
    files_unread: bool = False
    # ADD's Git sources -> the commit the step's cache key was made from (what it checks out)
    git_commits: dict[str, str] = field(default_factory=dict)


MAX_LINE = 64 * 1024  # bytes of an unfinished line kept before it is shown anyway
MAX_SHOWN = 2000  # characters of one output line shown in progress and error messages


class LineSink:
    """Turns chunks of a process's output into lines for the listener (thread-safe)."""

    def __init__(self, ctx: StepContext, secrets: list[bytes] | None = None) -> None:
        self.ctx = ctx
        self._partial = b""
        self._lock = threading.Lock()
        # A secret a step prints is shown as ****: it must reach no log and no error message.
        pieces = set()
        for value in secrets or ():
            text = value.decode("utf-8", "replace")
            pieces.add(text.strip())
            pieces.update(line.strip() for line in text.splitlines())
        self._secrets = sorted((p for p in pieces if len(p) >= 3), key=len, reverse=True)

    def __call__(self, chunk: bytes) -> None:
        with self._lock:
            data = self._partial + chunk
            *lines, self._partial = data.split(b"\n")
            if len(self._partial) > MAX_LINE:  # output without newlines: bounded memory
                lines.append(self._partial)
                self._partial = b""
            for line in lines:
                self._emit(line)

    def flush(self) -> None:
        with self._lock:
            if self._partial:
                self._emit(self._partial)
                self._partial = b""

    def _emit(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        for secret in self._secrets:
            text = text.replace(secret, "****")
        if len(text) > MAX_SHOWN:
            text = text[:MAX_SHOWN] + f"... ({len(text) - MAX_SHOWN} more characters)"
        self.ctx.output_tail.append(text)
        self.ctx.listener(ev.StepOutput(self.ctx.step, text))
