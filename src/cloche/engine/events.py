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
    """Which step: ``[stage step/steps] TEXT`` as BuildKit names it, and its Dockerfile line."""

    stage_index: int
    stage_name: str | None
    step: int
    steps: int
    text: str
    line: int = 0

    @property
    def stage_label(self) -> str:
        return self.stage_name or f"stage-{self.stage_index}"

    @property
    def title(self) -> str:
        return f"[{self.stage_label} {self.step}/{self.steps}] {self.text}"


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
class StepOutput(Event):
    step: StepRef
    text: str  # one line, without its newline


@dataclass(frozen=True)
class StepFinished(Event):
    step: StepRef
    seconds: float
    cached: bool = False
    layer_size: int | None = None  # None: the step made no layer


@dataclass(frozen=True)
class StepFailed(Event):
    step: StepRef
    seconds: float
    message: str


@dataclass(frozen=True)
class BuildWarning(Event):
    """Something the build goes on with but the user should know (BuildKit's lint warnings)."""

    message: str
    line: int = 0


@dataclass(frozen=True)
class BuildFinished(Event):
    digest: str
    seconds: float
    size: int
    names: tuple[str, ...] = ()


#: Every event a build reports (a pull of a base image adds ``cloche.events``' transfer ones).
BuildEvent = (StageSkipped | StageStarted | StageFinished | Pulling | StepStarted | StepOutput
              | StepFinished | StepFailed | BuildWarning | BuildFinished)

__all__ = ["BuildEvent", "BuildFinished", "BuildWarning", "Event", "Listener", "Pulling",
           "StageFinished", "StageSkipped", "StageStarted", "StepFailed", "StepFinished",
           "StepOutput", "StepRef", "StepStarted", "ignore"]
