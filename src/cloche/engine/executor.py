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
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace

from cloche.dockerfile import instructions as ins
from cloche.dockerfile.args import StageEnv
from cloche.dockerfile.parser import parse
from cloche.engine import events as ev
from cloche.engine.cache import BuildCache, StatCache
from cloche.engine.context import BuildContext
from cloche.engine.dispatch import config as config_dispatch
from cloche.engine.dispatch import files, run
from cloche.engine.dispatch.config import shell_of
from cloche.engine.dispatch.context import StepContext
from cloche.engine.fastwalk import Prefetch
from cloche.engine.images import ImageResolver, same_platform
from cloche.engine.options import BuildOptions
from cloche.engine.sources import SourceTree, content_hash
from cloche.engine.state import StageState, fill_history_times
from cloche.engine.workspace import Workspace
from cloche.errors import BuildError, ClocheError, DockerfileError
from cloche.oci.config import ImageConfig
from cloche.oci.image import Image
from cloche.oci.mutate import now
from cloche.oci.platform import Platform
from cloche.plan.graph import BuildPlan, PlannedStage
from cloche.plan.keys import base_key, step_key
from cloche.sandbox import linux
from cloche.sandbox.cancel import CancelScope, StepCancelled
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


_FS_STEPS = (ins.Run, ins.Copy, ins.Add, ins.Workdir)  # the instructions that write files


def _exception(future: Future[StageState]) -> BaseException | None:
    """``future.exception()`` for the main thread, in short waits.

    The kernel may hand Ctrl-C's SIGINT to any thread of the process; when a worker takes it,
    Python only flags it, and a main thread blocked in one endless wait would never raise the
    KeyboardInterrupt (a build that ignores Ctrl-C). A timed wait returns to Python code, which
    raises it.
    """
    while True:
        try:
            return future.exception(timeout=0.2)
        except TimeoutError:
            continue


def _join_workers(prefix: str) -> None:
    """Wait for every worker thread of this build's pool, even one the pool lost.

    Ctrl-C during ``pool.submit`` interrupts the new thread's ``start()`` after the thread
    began but before the pool listed it, so the pool's shutdown does not wait for it: the
    build would report "interrupted" (and clean its workspace) while that thread still runs
    its stage. Joined here, it ends first: the build's cancel scope stops its step.
    """
    me = threading.current_thread()
    for thread in threading.enumerate():
        if thread.name.startswith(prefix + "_") and thread is not me:
            thread.join()


class Executor:
    """Runs one plan against one store."""

    def __init__(self, plan: BuildPlan, options: BuildOptions, store: Store,
                 context: BuildContext, listener: ev.Listener, platform: Platform, *,
                 prefetch: Prefetch | None = None) -> None:
        self.plan = plan
        self.options = options
        self.store = store
        self.context = context
        self.listener = listener
        self.platform = platform
        self.file = plan.dockerfile.file
        self.workspace = Workspace(store)
        self.images = ImageResolver(store, platform, pull=options.pull, listener=listener)
        self.cache = BuildCache(store)
        self.stat_cache = StatCache(store, context.root)
        self.prefetch = prefetch  # the context's listing, started before the imports
        self._futures: dict[int, Future[StageState]] = {}
        self._reports: dict[int, StageReport] = {}
        self._cancel = CancelScope()  # this build's steps: a failure or Ctrl-C ends them

    # -- the whole build ---------------------------------------------------------------

    def run(self) -> BuildOutcome:
        started = time.monotonic()
        for stage in self.plan.stages:
            if not stage.reachable:
                self.listener(ev.StageSkipped(stage.index, stage.name, stage.skip_reason or ""))
        prefix = f"cloche-stage-{uuid.uuid4().hex[:8]}"
        try:
            with ThreadPoolExecutor(max_workers=self.options.job_count,
                                    thread_name_prefix=prefix,
                                    initializer=private_mounts) as pool:
                errors = []
                try:
                    for index in self.plan.order:
                        if self.plan.stages[index].reachable:
                            self._futures[index] = pool.submit(self._run_stage, index)
                    for index, future in self._futures.items():
                        err = _exception(future)
                        if err is not None:
                            errors.append(err)
                except BaseException:
                    # Ctrl-C reaches this thread only: stop the running steps, and (through
                    # the event, which the runner checks) any step about to start, before
                    # the pool waits for its workers
                    self._cancel.cancel()
                    raise
            real = [e for e in errors if not isinstance(e, (BuildCancelled, StepCancelled))]
            if real or errors:
                raise (real or errors)[0]
            final = self._futures[self.plan.target].result()
            image = self._image(final)
            return BuildOutcome(image, self.plan.target,
                                tuple(self._reports[i] for i in sorted(self._reports)),
                                time.monotonic() - started)
        finally:
            _join_workers(prefix)
            self.stat_cache.save()
            self.workspace.cleanup()

    def _image(self, state: StageState) -> Image:
        config = state.config
        if self.options.labels:
            labels = dict(config.labels)
            labels.update(self.options.labels)
            config = config.replace(labels=labels)
        history = fill_history_times(config.history, now())
        created = max((h.created for h in history if h.created), default=now())
        config = config.replace(created=created, history=history,
                                diff_ids=tuple(layer.diff_id for layer in state.layers))
        return Image.from_config(config, state.layers)

    # -- one stage ----------------------------------------------------------------------

    def _run_stage(self, index: int) -> StageState:
        planned = self.plan.stages[index]
        for dep in planned.depends_on:
            self._futures[dep].exception()  # wait; failures surface through the scope
        if self._cancel.cancelled:
            raise BuildCancelled("cancelled: another stage failed", stage=planned.display_name)
        try:
            return self._stage_body(planned)
        except BaseException as err:
            if not self._cancel.cancelled and not isinstance(err, (BuildCancelled, StepCancelled)):
                self._cancel.cancel()  # the build stops now, not when its running steps end
            raise

    def _stage_body(self, planned: PlannedStage) -> StageState:
        started = time.monotonic()
        self.listener(ev.StageStarted(planned.index, planned.name, planned.base))
        state, triggers = self._initial_state(planned)
        commands = triggers + tuple(planned.commands)
        total = len(commands) + 1
        cmd_set = False
        base_layers = len(state.layers)
        # the target's last step that writes files: nothing in this build reads them after it
        writes = [i for i, c in enumerate(commands, start=2) if isinstance(c, _FS_STEPS)]
        unread_at = writes[-1] if writes and planned.index == self.plan.target else None
        for number, instruction in enumerate(commands, start=2):
            if self._cancel.cancelled:
                raise BuildCancelled("cancelled: another stage failed",
                                     stage=planned.display_name)
            step = ev.StepRef(planned.index, planned.name, number, total,
                              _title(instruction), instruction.line)
            state = self._step(planned, instruction, state, step, cmd_set,
                               files_unread=number == unread_at)
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
                               parent.lowers, StageEnv.start(scope, parent=parent.env),
                               key=parent.key)
        elif planned.base.lower() == "scratch":
            # BuildKit's empty image: working directory / and the default PATH.
            config = ImageConfig(architecture=self.platform.architecture, os=self.platform.os,
                                 variant=self.platform.variant, working_dir="/",
                                 env=(f"PATH={DEFAULT_PATH}",))
            empty = self.workspace.image_rootfs(Image.from_config(config))
            state = StageState(config, (), (empty,),
                               StageEnv.start(scope, base_env=(("PATH", DEFAULT_PATH),)),
                               key=base_key("scratch", "", str(self.platform)))
            triggers = ()
        else:
            try:
                image = self.images.get(planned.base, planned.platform)
            except ClocheError as err:
                raise BuildError(f"FROM {planned.base}: {err.message}",
                                 stage=planned.display_name, file=self.file, line=planned.line,
                                 hint=err.hint) from err
            wanted = Platform.parse(planned.platform) if planned.platform else self.platform
            got = image.platform
            if not same_platform(got, wanted):  # a registry served another platform
                self.listener(ev.BuildWarning(
                    f"base image {planned.base} has platform {got}, expected {wanted} for this "
                    "build (InvalidBaseImagePlatform); its RUN steps run as that platform",
                    planned.line))
            rootfs = self.workspace.image_rootfs(image)
            config = image.config
            if not any(e.startswith("PATH=") for e in config.env):
                config = config.replace(env=(f"PATH={DEFAULT_PATH}",) + config.env)
            triggers = config.on_build or ()
            base_env = tuple(tuple(e.split("=", 1)) if "=" in e else (e, "")
                             for e in config.env)
            state = StageState(config.replace(on_build=None), image.layers, (rootfs,),
                               StageEnv.start(scope, base_env=base_env),  # type: ignore[arg-type]
                               key=base_key("image", str(image.digest), str(image.platform)))
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
              step: ev.StepRef, cmd_set: bool, *, files_unread: bool = False) -> StageState:
        started = time.monotonic()
        self.listener(ev.StepStarted(step))
        layers_before = len(state.layers)
        try:
            expanded, env = state.env.apply(instruction)
            ctx = StepContext(self.workspace, self.options, self.listener, step, self.file,
                              self.context, self._opener(planned), planned.display_name,
                              cancel=self._cancel, files_unread=files_unread)
            if isinstance(expanded, _FS_STEPS):
                state, cached = self._fs_step(planned, expanded, replace(state, env=env), ctx)
                if cached:
                    self.listener(ev.StepFinished(step, time.monotonic() - started, cached=True))
                    return state
            elif isinstance(expanded, config_dispatch.CONFIG_INSTRUCTIONS):
                state = config_dispatch.apply(expanded, state, env, cmd_set)
            else:
                raise DockerfileError(f"{instruction.keyword.upper()} cannot be used here")
        except StepCancelled as err:
            self.listener(ev.StepFailed(step, time.monotonic() - started, "cancelled"))
            raise BuildCancelled("cancelled: another stage failed",
                                 stage=planned.display_name) from err
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

    # -- the build cache --------------------------------------------------------------------

    def _fs_step(self, planned: PlannedStage, instruction: ins.Instruction, state: StageState,
                 ctx: StepContext) -> tuple[StageState, bool]:
        """Run a filesystem step, or reuse its recorded result; returns (state, cached)."""
        key = self._step_key(planned, instruction, state)
        use_cache = key is not None and not self.options.no_cache and not (
            planned.name and planned.name in self.options.no_cache_filter)
        if isinstance(instruction, ins.Workdir):
            wd = files.workdir_path(state.config.working_dir, instruction.path)
        if key is not None and use_cache:
            record = self.cache.get(key)
            if record is not None:
                if isinstance(instruction, ins.Workdir):
                    state = state.with_config(working_dir=wd)
                if record.layer is None or record.snapshot is None:
                    state = state.record(record.created_by, empty_layer=True)
                else:
                    state = state.with_layer(record.layer, record.snapshot, record.created_by,
                                             created=record.created)
                return replace(state, key=key), True
        layers_before = len(state.layers)
        if isinstance(instruction, ins.Run):
            state = run.run(instruction, state, ctx)
        elif isinstance(instruction, (ins.Copy, ins.Add)):
            state = files.copy(instruction, state, ctx)
        else:
            state = files.workdir(instruction, state, ctx)  # type: ignore[arg-type]
        new_layer = len(state.layers) > layers_before
        entry = state.config.history[-1]
        if key is not None:
            self.cache.put(key, entry.created_by or "", state.layers[-1] if new_layer else None,
                           state.lowers[0] if new_layer else None, entry.created)
        return replace(state, key=key or uuid.uuid4().hex), False

    def _step_key(self, planned: PlannedStage, instruction: ins.Instruction,
                  state: StageState) -> str | None:
        """The step's cache key, or None when its result cannot be known in advance
        (ADD of a URL without --checksum)."""
        config = state.config
        extra: list[str] = [config.user, config.working_dir, str(self.platform)]
        variables: dict[str, str] = {}
        if isinstance(instruction, ins.Run):
            variables = state.env.run_environment()
            extra += [" ".join(shell_of(state)), self.options.network]
            for mount in instruction.mounts:
                if mount.type == "bind":
                    extra.append(self._source_identity(planned, mount.from_,
                                                       (mount.source or ".",), ()))
        elif isinstance(instruction, (ins.Copy, ins.Add)):
            if isinstance(instruction, ins.Add) and instruction.checksum is None and any(
                    s.startswith(("http://", "https://")) for s in instruction.sources):
                return None
            from_ = instruction.from_ if isinstance(instruction, ins.Copy) else None
            local = tuple(s for s in instruction.sources
                          if not s.startswith(("http://", "https://")))
            if local:
                extra.append(self._source_identity(planned, from_, local, instruction.excludes))
        return step_key(state.key, repr(instruction), variables, extra)

    def _source_identity(self, planned: PlannedStage, from_: str | None,
                         sources: tuple[str, ...], excludes: tuple[str, ...]) -> str:
        """What COPY/ADD/--mount read: a stage's key, an image's digest, or a content hash."""
        if from_:
            index = self._stage_index(from_, planned.index)
            if index is not None:
                return "stage:" + self._futures[index].result().key + repr(sources)
            return "image:" + str(self.images.get(from_).digest) + repr(sources)
        return "context:" + content_hash(self.context.tree, sources, excludes=excludes,
                                         cache=self.stat_cache, prefetch=self.prefetch)

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

    def _opener(self, planned: PlannedStage):
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


def private_mounts() -> None:
    """Give the calling worker thread its own mount namespace, private to it.

    Mount namespaces belong to threads on Linux: the overlays a stage mounts are then seen
    only by its thread and the sandboxes it starts, and the kernel drops them all when the
    thread ends, or when the process is killed at any point (kill -9 included): a build
    never leaves mounts behind.
    """
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)


def _title(instruction: ins.Instruction) -> str:
    text = " ".join(instruction.original.split())
    return text if len(text) <= 120 else text[:117] + "..."

