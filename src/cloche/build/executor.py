"""The build engine: runs the stages of a plan, in parallel where the graph allows.

Each reachable stage is one task in a thread pool bounded by ``--jobs`` (default: the number
of cores). Tasks are submitted in topological order and a task first waits for the stages it
needs, so a waiting task only ever waits for tasks that are already running: the pool cannot
deadlock. The first failure stops the other stages at their next step and is the error the
caller sees. Only the target stage's layers and config make the result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from cloche.build import events as ev
from cloche.build.context import BuildContext
from cloche.build.dispatch import config as config_dispatch
from cloche.build.dispatch import files, run
from cloche.build.dispatch.context import StepContext
from cloche.build.images import ImageResolver
from cloche.build.options import BuildOptions
from cloche.build.sources import SourceTree
from cloche.build.state import StageState
from cloche.build.workspace import Workspace
from cloche.dockerfile import instructions as ins
from cloche.dockerfile.args import StageEnv
from cloche.dockerfile.parser import parse
from cloche.plan.graph import BuildPlan, PlannedStage
from cloche.errors import BuildError, ClocheError, DockerfileError
from cloche.oci.config import ImageConfig
from cloche.oci.image import Image
from cloche.oci.mutate import now
from cloche.oci.platform import Platform
from cloche.sandbox.spec import DEFAULT_PATH
from cloche.store import Store


class BuildCancelled(BuildError):
    """Another stage failed; this one stopped before its next step."""


@dataclass(frozen=True)
class StageReport:
    """What one stage did, for progress and for explaining the build."""

    index: int
    name: str | None
    seconds: float
    layers: int
    new_layers: int
    size: int


@dataclass(frozen=True)
class BuildOutcome:
    image: Image
    target: int
    stages: tuple[StageReport, ...]
    seconds: float


class Executor:
    """Runs one plan against one store."""

    def __init__(self, plan: BuildPlan, options: BuildOptions, store: Store,
                 context: BuildContext, listener: ev.Listener, platform: Platform) -> None:
        self.plan = plan
        self.options = options
        self.store = store
        self.context = context
        self.listener = listener
        self.platform = platform
        self.file = plan.dockerfile.file
        self.workspace = Workspace(store)
        self.images = ImageResolver(store, platform, pull=options.pull, listener=listener)
        self._futures: dict[int, Future[StageState]] = {}
        self._reports: dict[int, StageReport] = {}
        self._failed = threading.Event()

    # -- the whole build ---------------------------------------------------------------

    def run(self) -> BuildOutcome:
        started = time.monotonic()
        for stage in self.plan.stages:
            if not stage.reachable:
                self.listener(ev.StageSkipped(stage.index, stage.name, stage.skip_reason or ""))
        try:
            with ThreadPoolExecutor(max_workers=self.options.job_count,
                                    thread_name_prefix="cloche-stage") as pool:
                for index in self.plan.order:
                    if self.plan.stages[index].reachable:
                        self._futures[index] = pool.submit(self._run_stage, index)
                errors = []
                for index, future in self._futures.items():
                    err = future.exception()
                    if err is not None:
                        errors.append(err)
            real = [e for e in errors if not isinstance(e, BuildCancelled)]
            if real or errors:
                raise (real or errors)[0]
            final = self._futures[self.plan.target].result()
            image = self._image(final)
            return BuildOutcome(image, self.plan.target,
                                tuple(self._reports[i] for i in sorted(self._reports)),
                                time.monotonic() - started)
        finally:
            self.workspace.cleanup()

    def _image(self, state: StageState) -> Image:
        config = state.config
        if self.options.labels:
            labels = dict(config.labels)
            labels.update(self.options.labels)
            config = config.replace(labels=labels)
        config = config.replace(created=now(),
                                diff_ids=tuple(layer.diff_id for layer in state.layers))
        return Image.from_config(config, state.layers)

    # -- one stage ----------------------------------------------------------------------

    def _run_stage(self, index: int) -> StageState:
        planned = self.plan.stages[index]
        for dep in planned.depends_on:
            self._futures[dep].exception()  # wait; failures surface through _failed
        if self._failed.is_set():
            raise BuildCancelled("cancelled: another stage failed", stage=planned.display_name)
        try:
            return self._stage_body(planned)
        except BaseException:
            self._failed.set()
            raise

    def _stage_body(self, planned: PlannedStage) -> StageState:
        started = time.monotonic()
        self.listener(ev.StageStarted(planned.index, planned.name, planned.base))
        state, triggers = self._initial_state(planned)
        commands = triggers + tuple(planned.commands)
        total = len(commands) + 1
        cmd_set = False
        base_layers = len(state.layers)
        for number, instruction in enumerate(commands, start=2):
            if self._failed.is_set():
                raise BuildCancelled("cancelled: another stage failed",
                                     stage=planned.display_name)
            step = ev.StepRef(planned.index, planned.name, number, total,
                              _title(instruction), instruction.line)
            state = self._step(planned, instruction, state, step, cmd_set)
            cmd_set = cmd_set or isinstance(instruction, ins.Cmd)
        seconds = time.monotonic() - started
        new_layers = len(state.layers) - base_layers
        self._reports[planned.index] = StageReport(planned.index, planned.name, seconds,
                                                   len(state.layers), new_layers, state.size)
        self.listener(ev.StageFinished(planned.index, planned.name, seconds, len(state.layers),
                                       state.size))
        return state

    def _initial_state(self, planned: PlannedStage) -> tuple[StageState, tuple[ins.Instruction, ...]]:
        """The state right after FROM, and the ONBUILD triggers the base asks for."""
        scope = self.plan.scope
        if planned.base_stage is not None:
            parent = self._futures[planned.base_stage].result()
            triggers = parent.config.on_build or ()
            state = StageState(parent.config.replace(on_build=None), parent.layers,
                               parent.lowers, StageEnv.start(scope, parent=parent.env))
        elif planned.base.lower() == "scratch":
            # BuildKit's empty image: working directory / and the default PATH.
            config = ImageConfig(architecture=self.platform.architecture, os=self.platform.os,
                                 variant=self.platform.variant, working_dir="/",
                                 env=(f"PATH={DEFAULT_PATH}",))
            empty = self.workspace.image_rootfs(Image.from_config(config))
            state = StageState(config, (), (empty,),
                               StageEnv.start(scope, base_env=(("PATH", DEFAULT_PATH),)))
            triggers = ()
        else:
            image = self.images.get(planned.base, planned.platform)
            rootfs = self.workspace.image_rootfs(image)
            config = image.config
            if not any(e.startswith("PATH=") for e in config.env):
                config = config.replace(env=(f"PATH={DEFAULT_PATH}",) + config.env)
            triggers = config.on_build or ()
            base_env = tuple(tuple(e.split("=", 1)) if "=" in e else (e, "")
                             for e in config.env)
            state = StageState(config.replace(on_build=None), image.layers, (rootfs,),
                               StageEnv.start(scope, base_env=base_env))  # type: ignore[arg-type]
        return state, tuple(self._trigger(planned, text) for text in triggers)

    def _trigger(self, planned: PlannedStage, text: str) -> ins.Instruction:
        """An ONBUILD trigger as an instruction, located at the FROM line that ran it."""
        tree = self.plan.dockerfile.tree
        try:
            nodes = parse(text, file=self.file).nodes
            if len(nodes) != 1:
                raise DockerfileError("onbuild trigger should be a single expression")
            node = replace(nodes[0], start_line=planned.line, end_line=planned.line)
            return ins.build_instruction(node, None)
        except DockerfileError as err:
            raise err.with_location(file=self.file, line=planned.line,
                                    source_line=tree.source_line(planned.line)) from None

    # -- one step -----------------------------------------------------------------------

    def _step(self, planned: PlannedStage, instruction: ins.Instruction, state: StageState,
              step: ev.StepRef, cmd_set: bool) -> StageState:
        started = time.monotonic()
        self.listener(ev.StepStarted(step))
        layers_before = len(state.layers)
        try:
            expanded, env = state.env.apply(instruction)
            ctx = StepContext(self.workspace, self.options, self.listener, step, self.file,
                              self.context, self._opener(planned), planned.display_name)
            if isinstance(expanded, ins.Run):
                state = run.run(expanded, replace(state, env=env), ctx)
            elif isinstance(expanded, (ins.Copy, ins.Add)):
                state = files.copy(expanded, replace(state, env=env), ctx)
            elif isinstance(expanded, ins.Workdir):
                state = files.workdir(expanded, replace(state, env=env), ctx)
            elif isinstance(expanded, config_dispatch.CONFIG_INSTRUCTIONS):
                state = config_dispatch.apply(expanded, state, env, cmd_set)
            else:
                raise DockerfileError(f"{instruction.keyword.upper()} cannot be used here")
        except BaseException as err:
            located = self._locate(err, planned, instruction)
            message = located.message if isinstance(located, ClocheError) else str(err)
            self.listener(ev.StepFailed(step, time.monotonic() - started, message))
            if located is err:
                raise
            raise located from err
        size = state.layers[-1].size if len(state.layers) > layers_before else None
        self.listener(ev.StepFinished(step, time.monotonic() - started, layer_size=size))
        return state

    def _locate(self, err: BaseException, planned: PlannedStage,
                instruction: ins.Instruction) -> BaseException:
        """Every error of a step names the Dockerfile line and the stage."""
        tree = self.plan.dockerfile.tree
        if isinstance(err, DockerfileError):
            return err.with_location(file=self.file, line=instruction.line,
                                     source_line=tree.source_line(instruction.line))
        if isinstance(err, BuildError):
            err.stage = err.stage or planned.display_name
            err.file = err.file or self.file
            err.line = err.line or instruction.line
            return err
        if isinstance(err, ClocheError):
            return BuildError(f"{instruction.keyword.upper()}: {err.message}",
                              stage=planned.display_name, file=self.file,
                              line=instruction.line, hint=err.hint)
        return err

    # -- COPY --from and RUN --mount from= --------------------------------------------------

    def _opener(self, planned: PlannedStage):  # noqa: ANN202 - a SourceOpener
        @contextmanager
        def open_source(reference: str) -> Iterator[SourceTree]:
            index = self._stage_index(reference, planned.index)
            if index is not None:
                state = self._futures[index].result()
                with self.workspace.readonly_view(state.lowers) as root:
                    yield SourceTree.stage(root, self.plan.stages[index].display_name)
                return
            image = self.images.get(reference)
            yield SourceTree.stage(self.workspace.image_rootfs(image), reference)
        return open_source

    def _stage_index(self, reference: str, before: int) -> int | None:
        if reference.isdigit():
            number = int(reference)
            if number >= before:
                raise BuildError(f"invalid stage index {number}: only stages before this "
                                 f"one ({before}) can be copied from")
            return number
        found = self.plan.dockerfile.find_stage(reference, before=before)
        return found.index if found is not None else None


def _title(instruction: ins.Instruction) -> str:
    text = " ".join(instruction.original.split())
    return text if len(text) <= 120 else text[:117] + "..."


def stage_rootfs_lowers(state: StageState) -> tuple[Path, ...]:
    return state.lowers
