"""Resolved steps: each instruction of a stage as the build engine receives it.

The plan resolves what only the Dockerfile can answer, once, so the engine never reads the
Dockerfile again: a ``COPY --from`` or ``RUN --mount from=`` reference (after expansion of
the ARGs it may use) becomes a ``StageRef`` (a stage of this build, by index), a
``ContextRef`` (a named context of ``--build-context``, which BuildKit looks up before
pulling an image of that name) or an ``ImageRef`` (an external image). ONBUILD triggers of
a parent stage come as typed instructions; triggers stored in a base image's config go
through ``trigger_steps``, which parses them with the front end's checks and resolves their
references by the same rule.

The instruction itself stays as written: variables are expanded at dispatch time, with the
stage's environment including the base image's ENV (``StageEnv.apply``, the one expansion
function; the plan uses that same function before anything runs, without the image's ENV,
for dependency edges and display only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cloche.dockerfile.args import StageEnv
from cloche.dockerfile.flags import error_at
from cloche.dockerfile.from_nodes import parse_trigger
from cloche.dockerfile.instructions import Copy, Instruction, Run
from cloche.dockerfile.stages import Dockerfile
from cloche.errors import DockerfileError

__all__ = ["StageRef", "ImageRef", "ContextRef", "ContextNames", "Ref", "Step",
           "resolve_reference", "resolve_step", "trigger_steps", "SOURCE_MOUNTS"]

SOURCE_MOUNTS = ("bind", "cache")  # the mount types whose from= names files to read


@dataclass(frozen=True)
class StageRef:
    """A stage of this build, by index (``name``: how messages call it)."""

    index: int
    name: str


@dataclass(frozen=True)
class ImageRef:
    """An external image, by reference as written (after expansion)."""

    reference: str


@dataclass(frozen=True)
class ContextRef:
    """A named context (``--build-context NAME=...``), by its normalised name."""

    name: str


Ref = StageRef | ImageRef | ContextRef


class ContextNames(Protocol):
    """The named contexts of a build, as the plan asks about them (the engine knows how a
    name is normalised: ``docker.io/library/alpine:latest`` is the context ``alpine``)."""

    def lookup(self, name: str) -> str | None:
        """The normalised name of the context ``name`` stands for, or None."""
        ...


@dataclass(frozen=True)
class Step:
    """One instruction of a stage with its references resolved.

    ``from_`` is COPY's ``--from``; ``mounts`` has one entry per ``--mount`` of a RUN (None
    for a mount that reads no stage or image). ``trigger``: an ONBUILD trigger of the base.
    """

    instruction: Instruction
    from_: Ref | None = None
    mounts: tuple[Ref | None, ...] = ()
    trigger: bool = False

    @property
    def line(self) -> int:
        return self.instruction.line

    @property
    def refs(self) -> tuple[Ref, ...]:
        """Every stage or image this step reads."""
        found = (self.from_,) + self.mounts
        return tuple(r for r in found if r is not None)


def resolve_reference(dockerfile: Dockerfile, reference: str, at: int,
                      instruction: Instruction, contexts: ContextNames | None = None) -> Ref:
    """A ``--from`` value seen from stage ``at``: a stage index, a stage name, a named
    context, or an image.

    A number is a stage index (an error past the last stage); a name is the last stage of
    that name at or above ``at``, else any stage of that name (the caller rejects it as a
    forward reference), else a named context of that (normalised) name, else an image.
    Stage names are case-insensitive. A stage that a named context replaces is still a
    ``StageRef``: the plan gives that stage the context as its whole content.
    """
    stages = dockerfile.stages
    if reference.isdigit():
        index = int(reference)
        if index >= len(stages):
            raise error_at(instruction.node, dockerfile.tree,
                           f"invalid stage index {index}: the file has {len(stages)} stages",
                           needle=reference)
        return StageRef(index, stages[index].display_name)
    found = dockerfile.find_stage(reference, before=at + 1) or dockerfile.find_stage(reference)
    if found:
        return StageRef(found.index, found.display_name)
    named = contexts.lookup(reference) if contexts is not None else None
    return ContextRef(named) if named is not None else ImageRef(reference)


def resolve_step(dockerfile: Dockerfile, at: int, instruction: Instruction,
                 expanded: Instruction, *, trigger: bool = False,
                 contexts: ContextNames | None = None) -> Step:
    """The step of ``instruction`` (as written), its references read from ``expanded``."""
    from_ = None
    mounts: tuple[Ref | None, ...] = ()
    if isinstance(expanded, Copy) and expanded.from_ is not None:
        from_ = resolve_reference(dockerfile, expanded.from_, at, expanded, contexts)
    if isinstance(expanded, Run):
        mounts = tuple(
            resolve_reference(dockerfile, m.from_, at, expanded, contexts)
            if m.from_ and m.type in SOURCE_MOUNTS else None
            for m in expanded.mounts)
    return Step(instruction, from_, mounts, trigger)


def trigger_steps(dockerfile: Dockerfile, at: int, line: int, texts: tuple[str, ...],
                  env: StageEnv, runs: frozenset[int],
                  contexts: ContextNames | None = None) -> tuple[Step, ...]:
    """The ONBUILD triggers of a base image's config, as steps of stage ``at``.

    Each text is parsed by the front end (``parse_trigger``: the Dockerfile's own ONBUILD
    checks), located at the FROM ``line`` that runs it. References are resolved as in the
    plan, expanded in ``env`` (the stage right after FROM); a trigger may name only a stage
    above this one that the build runs (``runs``), since the plan could not know it.
    """
    tree = dockerfile.tree
    steps: list[Step] = []
    for text in texts:
        instruction = parse_trigger(text, dockerfile.file, line, tree.source_line(line))
        expanded, env = env.apply(instruction)
        step = resolve_step(dockerfile, at, instruction, expanded, trigger=True,
                            contexts=contexts)
        for ref in step.refs:
            if isinstance(ref, StageRef) and (ref.index >= at or ref.index not in runs):
                raise DockerfileError(
                    f"ONBUILD trigger {text[:200]!r} of the base image reads stage "
                    f"{ref.name!r}, which this build does not run before this stage",
                    file=dockerfile.file, line=line, source_line=tree.source_line(line))
        steps.append(step)
    return tuple(steps)
