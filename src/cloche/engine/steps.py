"""One step of a stage: expand, find the handler, compute the key, reuse or apply.

The plan hands over each stage's steps resolved (plan/steps.py): the engine expands an
instruction once, at dispatch time, with the stage's scope (``StageEnv.apply``, which knows
the base image's ENV), looks its handler up by instruction type (engine/dispatch), asks the
handler for its cache inputs and either reuses the recorded result or applies the step.
``--from`` references come resolved by the plan; the stages, images and context files they
name are reached through ``BuildSources``. Every error leaves here naming its Dockerfile line
and stage.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from cloche.dockerfile import instructions as ins
from cloche.dockerfile.args import StageEnv
from cloche.engine import events as ev
from cloche.engine.cache import BuildCache, StatCache
from cloche.engine.context import BuildContext
from cloche.engine.dispatch import HANDLERS, Handler, handler_for
from cloche.engine.dispatch.context import Sources, StepContext
from cloche.engine.fastwalk import Prefetch
from cloche.engine.images import ImageResolver
from cloche.engine.named import ContextResolver
from cloche.engine.options import BuildOptions
from cloche.engine.remote_cache import RemoteCache
from cloche.engine.sources import SourceTree, content_hash
from cloche.engine.state import StageState
from cloche.engine.workspace import Workspace
from cloche.errors import BuildError, ClocheError, DockerfileError
from cloche.plan.graph import BuildPlan, PlannedStage
from cloche.plan.keys import step_key
from cloche.plan.steps import ContextRef, ImageRef, Ref, StageRef, Step
from cloche.sandbox.cancel import CancelScope, StepCancelled

__all__ = ["BuildSources", "StepRunner", "BuildCancelled", "stage_steps", "writes_files",
           "title"]


class BuildCancelled(BuildError):
    """Another stage failed; this one stopped before its next step."""


def stage_steps(plan: BuildPlan, planned: PlannedStage, image_triggers: tuple[str, ...],
                env: StageEnv) -> tuple[Step, ...]:
    """What a stage runs: its base image's ONBUILD triggers (known once the image is there,
    parsed and resolved by the plan's rules), then the plan's steps, which begin with a
    parent stage's triggers."""
    if planned.base_stage is not None or not image_triggers:
        return planned.steps
    return plan.trigger_steps(planned.index, image_triggers, env) + planned.steps


def writes_files(instruction: ins.Instruction) -> bool:
    handler = HANDLERS.get(type(instruction))
    return handler is not None and handler.writes_files


def title(instruction: ins.Instruction) -> str:
    text = " ".join(instruction.original.split())
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True)
class BuildSources(Sources):
    """What ``--from`` and bind mounts read: other stages (waited for through ``stage``),
    images, named contexts (``--build-context``) and the build context."""

    stage: Callable[[int], StageState]  # a stage's final state, once it is built
    images: ImageResolver
    workspace: Workspace
    context: BuildContext
    stat_cache: StatCache
    prefetch: Prefetch | None = None
    contexts: ContextResolver | None = None

    @contextmanager
    def open(self, ref: Ref) -> Iterator[SourceTree]:
        if isinstance(ref, ContextRef):
            assert self.contexts is not None
            with self.contexts.open(ref.name) as tree:
                yield tree
            return
        if isinstance(ref, StageRef):
            state = self.stage(ref.index)
            with self.workspace.readonly_view(state.lowers) as root:
                yield SourceTree.stage(root, ref.name)
            return
        image = self.images.get(ref.reference)
        yield SourceTree.stage(self.workspace.image_rootfs(image, ref.reference), ref.reference)

    def identity(self, ref: Ref | None, paths: tuple[str, ...],
                 excludes: tuple[str, ...]) -> str:
        """A stage's key, an image's digest, or the content hash of context files."""
        if isinstance(ref, ContextRef):
            assert self.contexts is not None
            return self.contexts.identity(ref.name, paths, excludes)
        if isinstance(ref, StageRef):
            return "stage:" + self.stage(ref.index).key + repr(paths)
        if isinstance(ref, ImageRef):
            # the digest alone: in a lazy build the image is pulled only when a step opens it
            return "image:" + str(self.images.get_light(ref.reference).digest) + repr(paths)
        return "context:" + content_hash(self.context.tree, paths, excludes=excludes,
                                         cache=self.stat_cache, prefetch=self.prefetch)


@dataclass(frozen=True)
class StepRunner:
    """Runs the steps of one build (shared by its stages; holds no per-step state)."""

    plan: BuildPlan
    options: BuildOptions
    listener: ev.Listener
    workspace: Workspace
    cache: BuildCache
    context: BuildContext
    sources: Sources
    platform: str
    cancel: CancelScope
    remote: RemoteCache | None = None  # --cache-from sources, --cache-to's notes

    def run(self, planned: PlannedStage, step: Step, state: StageState, ref: ev.StepRef,
            cmd_set: bool, *, files_unread: bool = False) -> StageState:
        """The stage after ``step``; ``cmd_set``: a CMD came before in this stage."""
        started = time.monotonic()
        self.listener(ev.StepStarted(ref))
        layers_before = len(state.layers)
        try:
            expanded, env = state.env.apply(step.instruction)
            handler = handler_for(expanded)
            resolved = replace(step, instruction=expanded)
            state = replace(state, env=env)
            ctx = StepContext(self.workspace, self.options, self.listener, ref, self.plan.file,
                              self.context, self.sources, planned.display_name,
                              platform=self.platform, cmd_set=cmd_set, cancel=self.cancel,
                              files_unread=files_unread)
            if handler.writes_files:
                state, cached = self._cached(planned, handler, resolved, state, ctx)
                if cached:
                    self.listener(ev.StepFinished(ref, time.monotonic() - started, cached=True,
                                                  imported=cached if isinstance(cached, str)
                                                  else ""))
                    return state
            else:
                state = handler.apply(resolved, state, ctx)
        except StepCancelled as err:
            self.listener(ev.StepFailed(ref, time.monotonic() - started, "cancelled"))
            raise BuildCancelled("cancelled: another stage failed",
                                     stage=planned.display_name) from err
        except BaseException as err:
            located = self.locate(err, planned, step.instruction)
            message = located.message if isinstance(located, ClocheError) else str(err)
            self.listener(ev.StepFailed(ref, time.monotonic() - started, message))
            if located is err:
                raise
            raise located from err
        size = state.layers[-1].shown_size if len(state.layers) > layers_before else None
        self.listener(ev.StepFinished(ref, time.monotonic() - started, layer_size=size))
        return state

    def _cached(self, planned: PlannedStage, handler: Handler, step: Step, state: StageState,
                ctx: StepContext) -> tuple[StageState, bool | str]:
        """Apply a step that writes files, or reuse its recorded result: (state, cached);
        cached is the ``--cache-from`` source's name when the record was imported from it.

        The key chains the previous step's key, the expanded instruction and the handler's
        inputs; a step without a key (its result cannot be known in advance) gets a fresh
        random one, so every step after it misses too.
        """
        inputs = handler.cache_inputs(step, state, ctx)
        key = None if inputs is None else step_key(state.key, repr(step.instruction),
                                                   inputs.variables, inputs.extra)
        use_cache = key is not None and not self.options.no_cache and not (
            planned.name and planned.name in self.options.no_cache_filter)
        parent = state.key
        if key is not None and use_cache:
            record = self.cache.get(key)
            source: bool | str = True
            if record is None and self.remote is not None:
                found = self.remote.lookup(key, self.cache, planned.index)
                if found is not None:
                    record, source = found
            if record is not None:
                state = handler.on_hit(step, state)
                if record.layer is None or record.snapshot is None:
                    state = state.record(record.created_by, empty_layer=True)
                else:
                    state = state.with_layer(record.layer, record.snapshot, record.created_by,
                                             created=record.created)
                if self.remote is not None:
                    self.remote.note(planned.index, key, parent, record.created_by,
                                     record.created, record.layer)
                return replace(state, key=key), source
        layers_before = len(state.layers)
        state = handler.apply(step, state, ctx)
        new_layer = len(state.layers) > layers_before
        entry = state.config.history[-1]
        if key is not None:
            self.cache.put(key, entry.created_by or "", state.layers[-1] if new_layer else None,
                           state.lowers[0] if new_layer else None, entry.created)
            if self.remote is not None:
                self.remote.note(planned.index, key, parent, entry.created_by or "",
                                 entry.created, state.layers[-1] if new_layer else None)
        return replace(state, key=key or uuid.uuid4().hex), False

    def locate(self, err: BaseException, planned: PlannedStage,
               instruction: ins.Instruction) -> BaseException:
        """Every error of a step names the Dockerfile line and the stage."""
        file = self.plan.file
        if isinstance(err, DockerfileError):
            return err.with_location(file=file, line=instruction.line,
                                     source_line=self.plan.source_line(instruction.line))
        if isinstance(err, BuildError):
            err.stage = err.stage or planned.display_name
            err.file = err.file or file
            err.line = err.line or instruction.line
            return err
        if isinstance(err, ClocheError):
            return BuildError(f"{instruction.keyword.upper()}: {err.message}",
                              stage=planned.display_name, file=file,
                              line=instruction.line, hint=err.hint)
        return err
