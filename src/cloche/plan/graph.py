"""The stage graph of a Dockerfile: who needs whom, what the target keeps, what runs together.

A stage depends on another through ``FROM <stage>``, ``COPY --from=<stage|index>`` and
``RUN --mount=from=<stage>``. As in BuildKit, ``FROM`` matches only stages defined above it
(``FROM 0`` is an image called "0", never a stage), names are case-insensitive, and a
``--from`` that names no stage is an external image. A ``--from`` naming a later stage is an
error, a loop is an error naming every stage in it, and only the stages the target reaches are
built: the others are skipped, even ones that would fail, and the plan says why. Reachable
stages are grouped into levels: a stage's level is one more than its deepest dependency's, so
all stages of one level can run at the same time.

Words are expanded (global ARGs in FROM, the stage's ARG/ENV in the rest) as far as that can
be known before anything runs: a base image's own ENV is unknown here. Each stage carries its
instructions as resolved steps (plan/steps.py): ``--from`` and mount ``from=`` references are
resolved here, once, and the build engine uses them as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from cloche.dockerfile.args import GlobalScope, StageEnv, resolve_global_scope
from cloche.dockerfile.flags import error_at
from cloche.dockerfile.instructions import Arg, Copy, Instruction, Onbuild
from cloche.dockerfile.stages import Dockerfile, Stage
from cloche.errors import DockerfileError, did_you_mean
from cloche.plan.steps import (
    ContextNames,
    ContextRef,
    ImageRef,
    StageRef,
    Step,
    resolve_step,
    trigger_steps,
)

__all__ = ["Dependency", "PlannedStage", "BuildPlan", "build_plan", "CircularDependencyError"]


class CircularDependencyError(DockerfileError):
    """Stages that need each other; ``stages`` names every stage of the loop, in order."""

    def __init__(self, message: str, *, stages: tuple[str, ...] = (), **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.stages = stages


@dataclass(frozen=True)
class Dependency:
    """One edge: ``kind`` is "from", "copy" or "mount"; ``stage`` is None for an image or a
    named context (``context``: its normalised name, ``--build-context``)."""

    kind: str
    line: int
    reference: str
    stage: int | None = None
    image: str | None = None
    sources: tuple[str, ...] = ()
    dest: str | None = None
    context: str | None = None


@dataclass(frozen=True)
class PlannedStage:
    """A stage as the build will see it: expanded base, its dependencies, its fate.

    ``commands`` are the stage's instructions as written: the build engine expands each one
    itself with ``StageEnv.apply`` (it knows the base image's ENV, the plan does not).
    ``triggers`` are the ONBUILD triggers of a parent *stage*, typed, located at this stage's
    FROM line. ``steps`` is what the engine runs: triggers then commands, with their
    ``--from`` references resolved. ``expanded`` is the plan-time expansion of triggers +
    commands (the same ``StageEnv.apply``, without the base image's ENV), for display and
    dependency edges only. ``base_context``: the named context (``--build-context``) the
    stage is built on, as FROM names it or, when the context has the stage's own name, in
    place of the whole stage (``replaced``: then it has no instructions, and BuildKit runs
    none of them, nor the context image's ONBUILD triggers).
    """

    index: int
    name: str | None
    base: str
    base_stage: int | None
    platform: str | None
    line: int
    dependencies: tuple[Dependency, ...]
    commands: tuple[Instruction, ...]
    triggers: tuple[Instruction, ...] = ()
    expanded: tuple[Instruction, ...] = ()
    steps: tuple[Step, ...] = ()
    reachable: bool = True
    skip_reason: str | None = None
    level: int | None = None
    base_context: str | None = None
    replaced: bool = False

    @property
    def depends_on(self) -> tuple[int, ...]:
        return tuple(sorted({d.stage for d in self.dependencies if d.stage is not None}))

    @property
    def display_name(self) -> str:
        return self.name or f"stage-{self.index}"

    @property
    def images(self) -> tuple[str, ...]:
        """External images this stage needs (its base and --from images), in order."""
        seen: dict[str, None] = {}
        if self.base_stage is None and self.base_context is None and \
                self.base.lower() != "scratch":
            seen[self.base] = None
        for dep in self.dependencies:
            if dep.image:
                seen[dep.image] = None
        return tuple(seen)


@dataclass(frozen=True)
class BuildPlan:
    """The whole plan: stages in file order, the target, and levels for parallel execution."""

    dockerfile: Dockerfile
    scope: GlobalScope
    target: int
    stages: tuple[PlannedStage, ...]
    levels: tuple[tuple[int, ...], ...]
    warnings: tuple[str, ...] = field(default=())
    contexts: ContextNames | None = None  # the build's named contexts (--build-context)

    @property
    def order(self) -> tuple[int, ...]:
        """A topological order of the reachable stages (level by level, file order within)."""
        return tuple(i for level in self.levels for i in level)

    @property
    def reachable(self) -> tuple[int, ...]:
        return tuple(s.index for s in self.stages if s.reachable)

    @property
    def shipped(self) -> frozenset[int]:
        """The target stage and the stages it is built FROM: their layers are the image's
        (what ships, and what ``--cache-to mode=min`` exports)."""
        found: set[int] = set()
        index: int | None = self.target
        while index is not None and index not in found:
            found.add(index)
            index = self.stages[index].base_stage
        return frozenset(found)

    @property
    def file(self) -> str:
        return self.dockerfile.file

    def source_line(self, line: int) -> str | None:
        """The Dockerfile's text at ``line``, for error messages."""
        return self.dockerfile.tree.source_line(line)

    def trigger_steps(self, index: int, texts: tuple[str, ...],
                      env: StageEnv) -> tuple[Step, ...]:
        """The ONBUILD triggers of stage ``index``'s base *image* (known once it is pulled),
        as steps resolved by the plan's rules; ``env`` is the stage's scope after FROM."""
        stage = self.stages[index]
        runs = frozenset(s.index for s in self.stages if s.reachable)
        return trigger_steps(self.dockerfile, index, stage.line, texts, env, runs,
                             self.contexts)

    def to_dict(self) -> dict[str, object]:
        """The JSON shape of ``cloche plan --format json`` (keys of the brief are fixed)."""
        return {
            "file": self.dockerfile.file,
            "target": self.target,
            "stages": [_stage_dict(s) for s in self.stages],
            "levels": [list(level) for level in self.levels],
            "warnings": list(self.warnings),
        }


def _stage_dict(stage: PlannedStage) -> dict[str, object]:
    return {
        "index": stage.index, "name": stage.name, "base": stage.base,
        "depends_on": list(stage.depends_on), "reachable": stage.reachable,
        "base_stage": stage.base_stage, "platform": stage.platform, "line": stage.line,
        "level": stage.level, "skip_reason": stage.skip_reason, "images": list(stage.images),
        "base_context": stage.base_context,
        "dependencies": [
            {"kind": d.kind, "line": d.line, "reference": d.reference, "stage": d.stage,
             "image": d.image, "context": d.context, "sources": list(d.sources),
             "dest": d.dest}
            for d in stage.dependencies],
        "instructions": [{"line": c.line, "keyword": c.keyword, "original": c.original}
                         for c in stage.commands],
    }


@dataclass
class _Walk:
    """Mutable scratch state of one build_plan call (never escapes it)."""

    dockerfile: Dockerfile
    scope: GlobalScope
    contexts: ContextNames | None = None
    finals: dict[int, StageEnv] = field(default_factory=dict)
    errors: dict[int, DockerfileError] = field(default_factory=dict)
    forward: dict[int, tuple[Dependency, Instruction]] = field(default_factory=dict)

    def walk(self, stage: Stage) -> PlannedStage:
        tree = self.dockerfile.tree
        base_from = self.scope.expand_from(stage.from_)
        if not base_from.image:
            raise error_at(stage.from_.node, tree,
                           f"base name ({stage.base}) should not be blank")
        if stage.platform is not None and not base_from.platform:
            raise error_at(stage.from_.node, tree,
                           f"empty platform value from expression {stage.platform}",
                           needle=stage.platform, hint="set the ARG it uses, or drop --platform")
        replaced = self.contexts.lookup(stage.name) \
            if self.contexts is not None and stage.name else None
        if replaced is not None:
            # BuildKit: a named context with the stage's name is the whole stage; none of
            # its instructions is planned or run (nor are the stages only they would need)
            self.finals[stage.index] = StageEnv.start(self.scope)
            return PlannedStage(
                index=stage.index, name=stage.name, base=base_from.image, base_stage=None,
                platform=base_from.platform, line=stage.line, dependencies=(), commands=(),
                base_context=replaced, replaced=True)
        parent = self.dockerfile.find_stage(base_from.image, before=stage.index)
        base_context = None
        if parent is None and self.contexts is not None and \
                base_from.image.lower() != "scratch":  # FROM scratch is never a context
            base_context = self.contexts.lookup(base_from.image)
        deps: list[Dependency] = []
        if parent is not None:
            deps.append(Dependency("from", stage.line, base_from.image, stage=parent.index))
            env = StageEnv.start(self.scope, parent=self.finals.get(parent.index))
            # the parent's triggers run as this stage's first steps, located at its FROM line
            triggers = tuple(_at_line(c.trigger, stage.line) for c in parent.commands
                             if isinstance(c, Onbuild))
        else:
            env = StageEnv.start(self.scope)
            triggers = ()
        expanded_commands: list[Instruction] = []
        steps: list[Step] = []
        pending = list(triggers + stage.commands)
        for position, instruction in enumerate(pending):
            is_trigger = position < len(triggers)
            try:
                expanded, env = env.apply(instruction)
                step = resolve_step(self.dockerfile, stage.index, instruction, expanded,
                                    trigger=is_trigger, contexts=self.contexts)
                deps.extend(self._edges(stage.index, expanded, step))
            except DockerfileError as err:
                # reported only if the target needs this stage; never run otherwise
                self.errors.setdefault(stage.index, err)
                expanded_commands.extend(pending[position:])
                steps.extend(Step(c, trigger=n + position < len(triggers))
                             for n, c in enumerate(pending[position:]))
                break
            expanded_commands.append(expanded)
            steps.append(step)
        self.finals[stage.index] = env
        return PlannedStage(
            index=stage.index, name=stage.name, base=base_from.image,
            base_stage=parent.index if parent else None, platform=base_from.platform,
            line=stage.line, dependencies=tuple(deps), commands=stage.commands,
            triggers=triggers, expanded=tuple(expanded_commands), steps=tuple(steps),
            base_context=base_context)

    def _edges(self, at: int, ins: Instruction, step: Step) -> list[Dependency]:
        found: list[Dependency] = []
        if isinstance(ins, Copy) and step.from_ is not None and ins.from_ is not None:
            found.append(_dependency("copy", ins, ins.from_, step.from_,
                                     ins.sources + tuple(h.name for h in ins.contents),
                                     ins.dest))
        for mount, ref in zip(getattr(ins, "mounts", ()), step.mounts):
            if ref is not None:
                source = (mount.source,) if mount.source else ()
                found.append(_dependency("mount", ins, mount.from_, ref, source, mount.target))
        for dep in found:
            if dep.stage is not None and dep.stage > at:
                self.forward.setdefault(at, (dep, ins))
        return found


def _dependency(kind: str, ins: Instruction, reference: str,
                ref: StageRef | ImageRef | ContextRef, sources: tuple[str, ...],
                dest: str | None) -> Dependency:
    if isinstance(ref, StageRef):
        return Dependency(kind, ins.line, reference, ref.index, None, sources, dest)
    if isinstance(ref, ContextRef):
        return Dependency(kind, ins.line, reference, None, None, sources, dest, ref.name)
    return Dependency(kind, ins.line, reference, None, ref.reference, sources, dest)


def _at_line(instruction: Instruction, line: int) -> Instruction:
    """``instruction`` located at ``line`` (a trigger runs at the FROM line that uses it)."""
    node = dataclasses.replace(instruction.node, start_line=line, end_line=line)
    return dataclasses.replace(instruction, node=node)


def _find_cycle(edges: Mapping[int, tuple[int, ...]]) -> list[int] | None:
    """One dependency loop as a list of stage indexes (first repeated at the end), or None.

    A depth-first search with an explicit stack: a Dockerfile may chain thousands of stages."""
    state: dict[int, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(edges):
        if start in state:
            continue
        path = [start]
        todo = [iter(edges.get(start, ()))]
        state[start] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(edges.get(nxt, ())))
    return None


def build_plan(
    dockerfile: Dockerfile, target: str | None = None,
    build_args: Mapping[str, str] | None = None, platform: str | None = None,
    build_platform: str | None = None, contexts: ContextNames | None = None,
) -> BuildPlan:
    """Plan the build of ``target`` (a stage name; default: the last stage); ``contexts``
    are the named contexts of ``--build-context``."""
    tree = dockerfile.tree
    if not dockerfile.stages:
        raise DockerfileError("dockerfile contains no stages to build", file=tree.file,
                              hint="add a FROM line")
    scope = resolve_global_scope(dockerfile, build_args, target_platform=platform,
                                 build_platform=build_platform)
    walk = _Walk(dockerfile, scope, contexts)
    planned = [walk.walk(stage) for stage in dockerfile.stages]
    edges = {s.index: s.depends_on for s in planned}
    cycle = _find_cycle(edges)
    if cycle:
        names = tuple(planned[i].display_name for i in cycle)
        closing = next(d for d in planned[cycle[-2]].dependencies if d.stage == cycle[-1])
        node = dockerfile.stages[cycle[-2]].from_.node
        for ins in planned[cycle[-2]].expanded:
            if ins.line == closing.line:
                node = ins.node
        err = error_at(node, tree, "circular dependency detected on stages: "
                       + " -> ".join(names), needle=closing.reference,
                       error=CircularDependencyError)
        err.stages = names[:-1]  # type: ignore[attr-defined]
        raise err
    for index in sorted(walk.forward):
        dep, ins = walk.forward[index]
        later = planned[dep.stage or 0]
        raise error_at(ins.node, tree,
                       f"stage {later.display_name!r} (line {later.line}) needs to be defined "
                       f"before it is used by {'--mount from' if dep.kind == 'mount' else '--from'}",
                       needle=dep.reference, hint="move that stage above this one")
    target_index = len(planned) - 1
    if target is not None:
        found = dockerfile.find_stage(target)
        if found is None:
            names = tuple(s.name for s in dockerfile.stages if s.name)
            raise DockerfileError(
                f"target stage {target!r} could not be found", file=tree.file,
                hint=did_you_mean(target, names) or
                (f"stages are: {', '.join(names)}" if names else "no stage has a name"))
        target_index = found.index
    reachable: set[int] = set()
    todo = [target_index]
    while todo:
        index = todo.pop()
        if index not in reachable:
            reachable.add(index)
            todo.extend(edges[index])
    for index in sorted(walk.errors):
        if index in reachable:
            raise walk.errors[index]
    levels: dict[int, int] = {}
    for stage in planned:
        if stage.index in reachable:
            levels[stage.index] = 1 + max((levels[d] for d in stage.depends_on), default=-1)
    target_name = planned[target_index].display_name
    final = []
    for stage in planned:
        if stage.index in reachable:
            final.append(_replace(stage, level=levels[stage.index]))
        else:
            final.append(_replace(stage, reachable=False, level=None,
                                  skip_reason=f"target {target_name!r} does not depend on it"))
    grouped = tuple(tuple(sorted(i for i, lv in levels.items() if lv == n))
                    for n in range(max(levels.values()) + 1))
    warnings = _warnings(dockerfile, scope, final)
    return BuildPlan(dockerfile, scope, target_index, tuple(final), grouped, warnings,
                     contexts)


def _replace(stage: PlannedStage, **changes: object) -> PlannedStage:
    return dataclasses.replace(stage, **changes)  # type: ignore[arg-type]


def _warnings(dockerfile: Dockerfile, scope: GlobalScope,
              stages: list[PlannedStage]) -> tuple[str, ...]:
    out = []
    seen: dict[str, int] = {}
    for stage in dockerfile.stages:
        if stage.name and stage.name in seen:
            out.append(f"line {stage.line}: stage name {stage.name!r} is also used on line "
                       f"{seen[stage.name]}")
        elif stage.name:
            seen[stage.name] = stage.line
    declared = {d.name for s in stages for c in s.expanded if isinstance(c, Arg) for d in c.args}
    for name in scope.unused_build_args(declared):
        out.append(f"build arg {name!r} is not declared by any ARG")
    return tuple(out)
