"""Progress events: what the build engine reports while it works.

The engine never prints; it calls a ``Listener`` with these values, from any worker thread.
The CLI renders them (a live view, plain lines for CI logs, or only the digest). They share
the ``Event`` base, ``Listener`` and ``ignore`` of ``cloche.events`` with the pull and push
events, re-exported here so the engine's modules keep one import.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloche.events import Event, Listener, ignore


@dataclass(frozen=True)
class StepRef:
    """Which step: ``[stage step/steps] TEXT`` as BuildKit names it, and its Dockerfile line.

    BuildKit numbers only what runs: FROM of an image (1) and the RUN, COPY, ADD and WORKDIR
    steps; a config-only step (ENV, LABEL, CMD...) has ``step`` 0 and is no work to show. A
    Dockerfile of one stage shows no stage name (``single``)."""

    stage_index: int
    stage_name: str | None
    step: int
    steps: int
    text: str
    line: int = 0
    single: bool = False

    @property
    def stage_label(self) -> str:
        return self.stage_name or f"stage-{self.stage_index}"

    @property
    def shown(self) -> bool:
        """Whether progress shows the step (BuildKit shows no config-only step)."""
        return self.step > 0

    @property
    def title(self) -> str:
        if not self.shown:
            return self.text
        label = "" if self.single else f"{self.stage_label} "
        width = len(str(self.steps))
        return f"[{label}{self.step:>{width}}/{self.steps}] {self.text}"


@dataclass(frozen=True)
class StageSkipped(Event):
    stage_index: int
    stage_name: str | None
    reason: str


@dataclass(frozen=True)
class StageStarted(Event):
    stage_index: int
    stage_name: str | None
    base: str


@dataclass(frozen=True)
class StageFinished(Event):
    stage_index: int
    stage_name: str | None
    seconds: float
    layers: int
    size: int


@dataclass(frozen=True)
class Pulling(Event):
    reference: str


@dataclass(frozen=True)
class StepStarted(Event):
    step: StepRef


@dataclass(frozen=True)
class BaseResolved(Event):
    """A stage's base image is there (``cached``: it was in the store; else pulled now): the
    ``[1/N] FROM`` line BuildKit's progress shows. Not a step of the Dockerfile's."""

    step: StepRef
    seconds: float
    cached: bool = True


@dataclass(frozen=True)
class StepOutput(Event):
    step: StepRef
    text: str  # one line, without its newline


@dataclass(frozen=True)
class StepFinished(Event):
    step: StepRef
    seconds: float
    cached: bool = False
    layer_size: int | None = None  # None: the step made no layer
    imported: str = ""  # cached from this --cache-from source (engine/remote_cache.py)


@dataclass(frozen=True)
class StepFailed(Event):
    step: StepRef
    seconds: float
    message: str


@dataclass(frozen=True)
class BuildWarning(Event):
    """Something the build goes on with but the user should know. A build check (BuildKit's
    lint rules, cloche.plan.checks) names its ``rule`` and ``url``, and its location:
    ``file``, ``line`` to ``end_line``; ``message`` is then the rule's message alone."""

    message: str
    line: int = 0
    rule: str = ""
    url: str = ""
    end_line: int = 0
    file: str = ""

    @property
    def short(self) -> str:
        """BuildKit's one-line form of a check: ``RULE: message (line N)``."""
        if not self.rule:
            return self.message
        text = f"{self.rule}: {self.message}"
        return f"{text} (line {self.line})" if self.line > 0 else text


@dataclass(frozen=True)
class ExportStarted(Event):
    """An ``--output`` that writes an image starts, named as BuildKit names its vertex:
    ``exporting to oci image format``, ``exporting to docker image format``. Its blobs'
    bytes follow as ``cloche.events.BlobProgress`` (``exporting``); the archive's upload to
    the Docker engine (``--load``) is one more, its descriptor of type ``TARBALL``."""

    name: str


#: The media type of the ``BlobProgress`` of an archive sent whole (BuildKit's "sending tarball").
TARBALL = "application/x-tar"


@dataclass(frozen=True)
class ExportFinished(Event):
    """The output is written. ``tarball``: it was an archive (``size`` its bytes, when the
    destination is a file or the Docker engine)."""

    name: str
    seconds: float
    tarball: bool = False
    size: int | None = None


@dataclass(frozen=True)
class BuildFinished(Event):
    digest: str
    seconds: float
    size: int
    names: tuple[str, ...] = ()


#: Every event a build reports (a pull of a base image adds ``cloche.events``' transfer ones).
BuildEvent = (StageSkipped | StageStarted | StageFinished | Pulling | BaseResolved
              | StepStarted | StepOutput | StepFinished | StepFailed | BuildWarning
              | ExportStarted | ExportFinished | BuildFinished)

__all__ = ["BaseResolved", "BuildEvent", "BuildFinished", "BuildWarning", "Event", "ExportFinished",
           "ExportStarted", "Listener", "Pulling", "TARBALL",
           "StageFinished", "StageSkipped", "StageStarted", "StepFailed", "StepFinished",
           "StepOutput", "StepRef", "StepStarted", "ignore"]
