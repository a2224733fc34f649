"""The build engine: runs the stages of a plan, in parallel where the graph allows.

Every reachable stage gets a thread of its own at the start of the build, and every image
the plan names starts pulling at once (see images.py). A stage thread first waits for the
stages and images it needs, holding nothing; what is bounded by ``--jobs`` (default: the
number of cores) is CPU-bound work (slots.py): each step but RUN holds a slot, and a RUN step
takes one only to write its layer, so the user's processes run at once, as BuildKit runs
them. Tasks are submitted in topological order, so a waiting stage only ever waits for
threads already running. The first failure stops the other stages at their next step and is
the error the caller sees. Only the target stage's layers and config make the result, and
only the stages the image ships (the target and the stages it is built FROM) write their
layer blobs as they go; the others' are written lazily, if ever (workspace.py).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from cloche.dockerfile import instructions as ins
from cloche.dockerfile.args import StageEnv
from cloche.engine import events as ev
from cloche.engine.cache import BuildCache, StatCache
from cloche.engine.context import BuildContext
from cloche.engine.fastwalk import Prefetch
from cloche.engine.giturl import is_git_source
from cloche.engine.images import ImageResolver, same_platform
from cloche.engine.named import ContextResolver, NamedContexts
from cloche.engine.options import BuildOptions
from cloche.engine.remote_cache import RemoteCache
from cloche.engine.slots import CpuSlots
from cloche.engine.state import StageState, fill_history_times
from cloche.engine.steps import (
    BuildCancelled,
    BuildSources,
    StepRunner,
    stage_steps,
    title,
    writes_files,
)
from cloche.engine.workspace import Workspace
from cloche.errors import BuildError, ClocheError
from cloche.oci.config import ImageConfig
from cloche.oci.image import Image
from cloche.oci.mutate import now
from cloche.oci.platform import Platform
from cloche.plan.entitlements import check_steps
from cloche.plan.graph import BuildPlan, PlannedStage
from cloche.plan.keys import base_key
from cloche.plan.steps import Step
from cloche.sandbox import linux
from cloche.sandbox.cancel import CancelScope, StepCancelled
from cloche.sandbox.spec import DEFAULT_PATH
from cloche.store import Store


@dataclass(frozen=True)
class StageReport:
    """What one stage did, for progress and for explaining the build."""

    index: int
    name: str | None
    seconds: float
    layers: int
    new_layers: int
    size: int
    # for explaining the build (cloche.explain): the base as written in FROM, the stage's
    # final config (its history) and each layer's diff id and shown size, base layers first
    base: str = ""
    base_stage: int | None = None
    config: ImageConfig | None = None
    layer_diff_ids: tuple[str, ...] = ()
    layer_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class BuildOutcome:
    image: Image
    target: int
    stages: tuple[StageReport, ...]
    seconds: float
    # how many layers and history entries of the image are its base image's (FROM an
    # image or a named context, through the stages it is built FROM): SOURCE_DATE_EPOCH
    # and rewrite-timestamp leave those as they are (engine/reproducible.py)
    base: tuple[int, int] = (0, 0)


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
                 prefetch: Prefetch | None = None, contexts: NamedContexts | None = None,
                 remote: RemoteCache | None = None) -> None:
        self.plan = plan
        self.options = options
        self.store = store
        self.context = context
        self.listener = listener
        self.platform = platform
        self.file = plan.dockerfile.file
        self.cpu = CpuSlots(options.job_count)  # CPU-bound work at once; waiting is free
        self.workspace = Workspace(store, cpu=self.cpu, isolation=options.isolation)
        # with --cache-from, a base image's layers are pulled only when needed (images.py)
        lazy = remote is not None and bool(options.cache_from) and not options.no_cache
        self.images = ImageResolver(store, platform, pull=options.pull, listener=listener,
                                    lazy=lazy)
        self.cache = BuildCache(store)
        self.remote = remote  # --cache-from/--cache-to (remote_cache.py)
        if remote is not None:
            remote.shipped = plan.shipped
            self.workspace.fetch_layer = remote.fetch_layer  # imported layers, on first need
        # --build-context: named contexts, opened for the steps that name them
        self.contexts = ContextResolver(contexts or NamedContexts({}), store, self.images,
                                        self.workspace, platform, secrets=options.secrets)
        self.stat_cache = StatCache(store, context.root)
        self.prefetch = prefetch  # the context's listing, started before the imports
        self._futures: dict[int, Future[StageState]] = {}
        self._reports: dict[int, StageReport] = {}
        self._pulls: dict[int, list[Future[Image]]] = {}  # the images each stage needs
        self._ships = plan.shipped  # the stages whose layers the image is made of
        self._bases: dict[int, tuple[int, int]] = {}  # stage -> its base's (layers, history)
        self._cancel = CancelScope()  # this build's steps: a failure or Ctrl-C ends them

    # -- the whole build ---------------------------------------------------------------

    def run(self) -> BuildOutcome:
        started = time.monotonic()
        for stage in self.plan.stages:
            if not stage.reachable:
                self.listener(ev.StageSkipped(stage.index, stage.name, stage.skip_reason or ""))
        prefix = f"cloche-stage-{uuid.uuid4().hex[:8]}"
        reachable = [i for i in self.plan.order if self.plan.stages[i].reachable]
        self._prefetch(reachable)
        try:
            # a thread per stage: stages wait for stages and images, never for a free worker
            with ThreadPoolExecutor(max_workers=max(1, len(reachable)),
                                    thread_name_prefix=prefix,
                                    initializer=None if self.workspace.plain
                                    else private_mounts) as pool:
                errors = []
                try:
                    for index in reachable:
                        self._futures[index] = pool.submit(self._run_stage, index)
                    for future in self._futures.values():
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
            base = self._bases.get(self.plan.target, (0, 0))
            image = self._image(final, base[1])
            return BuildOutcome(image, self.plan.target,
                                tuple(self._reports[i] for i in sorted(self._reports)),
                                time.monotonic() - started, base)
        finally:
            _join_workers(prefix)
            self.stat_cache.save()
            self.contexts.save()
            self.workspace.cleanup()

    def _image(self, state: StageState, base_history: int = 0) -> Image:
        config = state.config
        if self.options.labels:
            labels = dict(config.labels)
            labels.update(self.options.labels)
            config = config.replace(labels=labels)
        history = fill_history_times(config.history, now())
        created = max((h.created for h in history if h.created), default=now())
        config = config.replace(created=created, history=history,
                                diff_ids=tuple(layer.diff_id for layer in state.layers))
        if self.options.source_date_epoch is not None:  # the build's own entries: the epoch
            from cloche.engine.reproducible import stamp_history

            config = stamp_history(config, self.options.source_date_epoch, base_history)
        return Image.from_config(config, state.layers)

    def _prefetch(self, stages: list[int]) -> None:
        """Start pulling every image the stages name (bases, ``--from`` images), all at once.

        A stage finds its errors when it asks for the image (``ImageResolver.get``), located
        at its own line, as if it had pulled the image itself."""
        for index in stages:
            planned = self.plan.stages[index]
            pulls = self._pulls.setdefault(index, [])
            if planned.base_context is not None:
                found = self.contexts.prefetch(planned.base_context, planned.platform)
                if found is not None:
                    pulls.append(found)
            elif planned.base_stage is None and planned.base.lower() != "scratch":
                # a shipped stage's base layers are in the image: pulled whole, at once
                resolve = self.images.prefetch if index in self._ships \
                    else self.images.prefetch_light
                pulls.append(resolve(planned.base, planned.platform))
            for dep in planned.dependencies:
                if dep.context is not None:
                    found = self.contexts.prefetch(dep.context)
                    if found is not None:
                        pulls.append(found)
                elif dep.image and dep.stage is None:  # its digest keys the step
                    pulls.append(self.images.prefetch_light(dep.image))

    # -- one stage ----------------------------------------------------------------------

    def _run_stage(self, index: int) -> StageState:
        planned = self.plan.stages[index]
        for dep in planned.depends_on:
            self._futures[dep].exception()  # wait; failures surface through the scope
        for pull in self._pulls.get(index, ()):  # its images, before any step holds a slot
            while not self._cancel.cancelled:
                try:
                    pull.exception(timeout=0.2)  # its error is raised, located, by its step
                    break
                except TimeoutError:
                    continue
        if self._cancel.cancelled:
            raise BuildCancelled("cancelled: another stage failed", stage=planned.display_name)
        try:
            with self.workspace.shipping(index in self._ships):
                return self._stage_body(planned)
        except BaseException as err:
            if not self._cancel.cancelled and not isinstance(err, (BuildCancelled, StepCancelled)):
                self._cancel.cancel()  # the build stops now, not when its running steps end
            raise

    def _stage_body(self, planned: PlannedStage) -> StageState:
        started = time.monotonic()
        self.listener(ev.StageStarted(planned.index, planned.name, planned.base))
        from_started = time.monotonic()
        state, triggers = self._initial_state(planned)
        # what of the stage is its base image's (a parent stage's base, for FROM a stage)
        if planned.base_stage is not None:
            self._bases[planned.index] = self._bases.get(planned.base_stage, (0, 0))
        else:
            self._bases[planned.index] = (len(state.layers), len(state.config.history))
        steps = stage_steps(self.plan, planned, triggers, state.env)
        # a base image's ONBUILD triggers are known only now: none runs without its --allow
        check_steps(steps, self.options.allow, self.plan.dockerfile.tree)
        # BuildKit's numbering: FROM of an image is 1, then only RUN, COPY, ADD and WORKDIR
        # (dockerfile2llb prefixCommand); one-stage Dockerfiles name no stage
        from_image = (planned.base_stage is None and planned.base_context is None
                      and planned.base.lower() != "scratch")
        numbered = [_numbered(s.instruction) for s in steps]
        total = int(from_image) + sum(numbered)
        single = len(self.plan.dockerfile.stages) == 1
        if from_image:
            ref = ev.StepRef(planned.index, planned.name, 1, total, f"FROM {planned.base}",
                             planned.line, single=single)
            self.listener(ev.BaseResolved(ref, time.monotonic() - from_started,
                                          cached=planned.base not in self.images.pulled))
        shown = int(from_image)
        cmd_set = False
        base_layers = len(state.layers)
        # the target's last step that writes files: nothing in this build reads them after it
        writes = [i for i, s in enumerate(steps, start=2) if writes_files(s.instruction)]
        unread_at = writes[-1] if writes and planned.index == self.plan.target else None
        for (number, item), counted in zip(enumerate(steps, start=2), numbered):
            instruction = item.instruction
            if self._cancel.cancelled:
                raise BuildCancelled("cancelled: another stage failed",
                                     stage=planned.display_name)
            shown += counted
            step = ev.StepRef(planned.index, planned.name, shown if counted else 0, total,
                              title(instruction), instruction.line, single=single)
            with _cpu_slot(self.cpu, instruction):
                state = self._step(planned, item, state, step, cmd_set,
                                   files_unread=number == unread_at)
            cmd_set = cmd_set or isinstance(instruction, ins.Cmd)
        seconds = time.monotonic() - started
        new_layers = len(state.layers) - base_layers
        self._reports[planned.index] = StageReport(
            planned.index, planned.name, seconds, len(state.layers), new_layers, state.size,
            base=planned.base, base_stage=planned.base_stage, config=state.config,
            layer_diff_ids=tuple(str(layer.diff_id) for layer in state.layers),
            layer_sizes=tuple(layer.shown_size for layer in state.layers))
        self.listener(ev.StageFinished(planned.index, planned.name, seconds, len(state.layers),
                                       state.size))
        return state

    def _initial_state(self, planned: PlannedStage) -> tuple[StageState, tuple[str, ...]]:
        """The state right after FROM, and the ONBUILD triggers the base asks for (as stored
        in its config: a parent stage's come typed in the plan's steps instead)."""
        scope = self.plan.scope
        if planned.base_stage is not None:
            parent = self._futures[planned.base_stage].result()
            triggers = parent.config.on_build or ()
            state = StageState(parent.config.replace(on_build=None), parent.layers,
                               parent.lowers, StageEnv.start(scope, parent=parent.env),
                               key=parent.key)
        elif planned.base_context is not None:
            state, triggers = self._context_state(planned, planned.base_context)
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
                image = self.images.get(planned.base, planned.platform) \
                    if planned.index in self._ships \
                    else self.images.get_light(planned.base, planned.platform)
            except ClocheError as err:
                raise BuildError(f"FROM {planned.base}: {err.message}",
                                 stage=planned.display_name, file=self.file, line=planned.line,
                                 hint=err.hint) from err
            wanted = Platform.parse(planned.platform) if planned.platform else self.platform
            got = image.platform
            if not same_platform(got, wanted):  # a registry served another platform
                # BuildKit warns (InvalidBaseImagePlatform) and builds an image whose config
                # says `wanted` over the base's `got` binaries; one platform per build, cloche
                # refuses it, in BuildKit's words
                raise BuildError(
                    f"Base image {planned.base} was pulled with platform \"{got}\", "
                    f"expected \"{wanted}\" for current build",
                    stage=planned.display_name, file=self.file, line=planned.line,
                    hint=f"the image has no {wanted} variant: build with --platform {got}, or "
                         f"use a base image whose index lists {wanted}")
            # flattened (and, resolved by manifest and config only, pulled) when a step first
            # needs its files: a stage whose steps all hit a cache never unpacks its base
            if self.images.pending(image):
                pending = image
                rootfs = self.workspace.lazy_rootfs(image, lambda: self._base_rootfs(
                    planned, lambda: self.images.complete(pending)))
            else:
                whole = image
                rootfs = self.workspace.lazy_rootfs(image, lambda: self._base_rootfs(
                    planned, whole))
            config = image.config
            if not any(e.startswith("PATH=") for e in config.env):
                config = config.replace(env=(f"PATH={DEFAULT_PATH}",) + config.env)
            triggers = config.on_build or ()
            base_env = tuple(tuple(e.split("=", 1)) if "=" in e else (e, "")
                             for e in config.env)
            state = StageState(config.replace(on_build=None), image.layers, (rootfs,),
                               StageEnv.start(scope, base_env=base_env),  # type: ignore[arg-type]
                               key=base_key("image", str(image.digest), str(image.platform)))
        return state, tuple(triggers)

    def _base_rootfs(self, planned: PlannedStage, image: Image | Callable[[], Image]
                     ) -> Path:
        """The base image's root filesystem, errors located at FROM (the layers are checked
        against the config's diff ids as they unpack). ``image`` may be a function that pulls
        it, for a base resolved by manifest and config only (called when a step needs it)."""
        if not isinstance(image, Image):
            try:
                image = image()
            except ClocheError as err:
                raise BuildError(f"FROM {planned.base}: {err.message}",
                                 stage=planned.display_name, file=self.file, line=planned.line,
                                 hint=err.hint) from err
        try:
            return self.workspace.image_rootfs(image, planned.base)
        except ClocheError as err:
            raise BuildError(err.message, stage=planned.display_name, file=self.file,
                             line=planned.line, hint=err.hint) from err

    def _context_state(self, planned: PlannedStage, name: str
                       ) -> tuple[StageState, tuple[str, ...]]:
        """The state right after FROM when the base is a named context (``--build-context``):
        its image (a directory's is one layer on the empty image), keyed by its content hash
        or digest. BuildKit checks no platform here (InvalidBaseImagePlatform)."""
        try:
            image = self.contexts.image(name, planned.platform)
            rootfs = self.workspace.image_rootfs(image, name)
            identity = self.contexts.base_key(name, planned.platform)
        except ClocheError as err:
            raise BuildError(f"FROM {planned.base}: {err.message}", stage=planned.display_name,
                             file=self.file, line=planned.line, hint=err.hint) from err
        config = image.config
        if not any(e.startswith("PATH=") for e in config.env):
            config = config.replace(env=(f"PATH={DEFAULT_PATH}",) + config.env)
        base_env = tuple(tuple(e.split("=", 1)) if "=" in e else (e, "") for e in config.env)
        state = StageState(config.replace(on_build=None), image.layers, (rootfs,),
                           StageEnv.start(self.plan.scope,
                                          base_env=base_env),  # type: ignore[arg-type]
                           key=base_key("context", identity, str(image.platform)))
        # a stage the context replaces runs nothing, its image's triggers included (BuildKit)
        return state, () if planned.replaced else tuple(config.on_build or ())

    # -- one step -----------------------------------------------------------------------

    def _step(self, planned: PlannedStage, item: Step, state: StageState,
              step: ev.StepRef, cmd_set: bool, *, files_unread: bool = False) -> StageState:
        """One step, run by engine/steps.py (handlers, the build cache, located errors)."""
        sources = BuildSources(lambda index: self._futures[index].result(), self.images,
                               self.workspace, self.context, self.stat_cache, self.prefetch,
                               self.contexts)
        runner = StepRunner(self.plan, self.options, self.listener, self.workspace, self.cache,
                            self.context, sources, str(self.platform), self._cancel,
                            remote=self.remote)
        return runner.run(planned, item, state, step, cmd_set, files_unread=files_unread)




def _cpu_slot(cpu: CpuSlots, instruction: ins.Instruction) -> AbstractContextManager[None]:
    """The slot a step holds: COPY, ADD and WORKDIR copy and hash files; RUN runs the user's
    process, which may wait as long as it likes (it takes a slot only to write its layer),
    and so does an ADD of a URL, which waits for the network."""
    if isinstance(instruction, ins.Run) or not isinstance(instruction, _FS_STEPS):
        return nullcontext()
    if isinstance(instruction, ins.Add) and any("://" in s or is_git_source(s)
                                                for s in instruction.sources):
        return nullcontext()  # a URL or a Git repository (git@host:repo too)
    return cpu.slot()


def private_mounts() -> None:
    """Give the calling worker thread its own mount namespace, private to it.

    Mount namespaces belong to threads on Linux: the overlays a stage mounts are then seen
    only by its thread and the sandboxes it starts, and the kernel drops them all when the
    thread ends, or when the process is killed at any point (kill -9 included): a build
    never leaves mounts behind.
    """
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)


def _numbered(instruction: ins.Instruction) -> bool:
    """Whether BuildKit numbers the step in its progress (it makes an LLB vertex)."""
    return isinstance(instruction, (ins.Run, ins.Copy, ins.Add, ins.Workdir))
