"""COPY, ADD and WORKDIR: file operations on the stage's root filesystem, one layer each.

``COPY`` (for COPY and ADD) and ``WORKDIR`` are the families' handlers: their cache inputs
beside the code whose result the key predicts.
"""

from __future__ import annotations

import posixpath
import tempfile
from contextlib import ExitStack
from pathlib import Path

from cloche.dockerfile import instructions as ins
from cloche.engine.add import add_into, git_commit
from cloche.engine.copy import CopyRequest, copy_into
from cloche.engine.direct_copy import direct_entries
from cloche.engine.dispatch import history as hist
from cloche.engine.dispatch.context import StepContext
from cloche.engine.dispatch.handler import CacheInputs, Handler, common_inputs
from cloche.engine.fsutil import Owner, mkdir_all, resolve_dest
from cloche.engine.giturl import is_git_source
from cloche.engine.sources import SourceTree, inline_tree
from cloche.engine.state import StageState
from cloche.fs.gopath import go_clean
from cloche.fs.rmtree import rmtree
from cloche.fs.users import workdir_owner
from cloche.oci.image import Layer
from cloche.plan.steps import Ref, Step


def copy(instruction: ins.Copy | ins.Add, state: StageState, ctx: StepContext,
         from_: Ref | None = None) -> StageState:
    """One (expanded) COPY or ADD; ``from_`` is its ``--from``, as the plan resolved it."""
    is_add = isinstance(instruction, ins.Add)
    keyword = "ADD" if is_add else "COPY"
    workdir = state.config.working_dir or "/"
    with ExitStack() as stack:
        tree = stack.enter_context(ctx.sources.open(from_)) if from_ else ctx.build_context.tree
        sources = instruction.sources
        if instruction.contents:
            tree, sources = _heredoc_tree(instruction, stack, ctx)
        request = CopyRequest(sources, instruction.dest, workdir, instruction.chown,
                              instruction.chmod, getattr(instruction, "parents", False),
                              instruction.excludes, instruction.link, keyword)
        with ctx.workspace.step(state.lowers) as (merged, upper):
            direct = direct_entries(request, tree, merged) \
                if ctx.files_unread and not instruction.contents else None
            if direct is None and isinstance(instruction, ins.Add) and not instruction.contents:
                # URLs: remote.download makes the client, and copes without CA certificates
                add_into(request, tree, merged, checksum=instruction.checksum,
                         tmp_dir=ctx.workspace.root, keep_git_dir=instruction.keep_git_dir,
                         commits=ctx.git_commits, secrets=ctx.options.secrets)
            elif direct is None:
                copy_into(request, tree, merged)
        layer: Layer | None = None
        if direct is not None:  # straight to the layer, from the sources (still open here)
            layer = ctx.workspace.commit_entries(direct, upper)
    created_by = hist.copy(keyword, instruction.sources, [h.name for h in instruction.contents],
                           instruction.dest, chown=instruction.chown, chmod=instruction.chmod,
                           parents=getattr(instruction, "parents", False))
    if direct is None:
        layer = ctx.workspace.commit(upper, state.lowers)
    assert layer is not None
    return state.with_layer(layer, upper, created_by)


def _heredoc_tree(instruction: ins.Copy | ins.Add, stack: ExitStack,
                  ctx: StepContext) -> tuple[SourceTree, tuple[str, ...]]:
    """Heredoc files (``COPY <<EOF /dest``) in a scratch tree, as BuildKit makes them."""
    scratch = Path(tempfile.mkdtemp(prefix="cloche-heredoc-", dir=ctx.workspace.root))
    stack.callback(rmtree, scratch, True)
    docs = [(posixpath.basename(d.name) or "heredoc", d.content.encode()) for d in instruction.contents]
    return inline_tree(docs, scratch.resolve()), tuple(name for name, _ in docs)


def workdir_path(current: str, path: str) -> str:
    """BuildKit's NormalizeWorkdir: relative paths join the current working directory
    (filepath.Join, which cleans); an absolute path is kept as written, trailing ``/`` and
    all, in the config and the history (util/system NormalizePath, v0.8 to current)."""
    if path.startswith("/"):
        return path
    return go_clean(posixpath.join("/", current or "/", path))


def workdir(instruction: ins.Workdir, state: StageState, ctx: StepContext) -> StageState:
    """WORKDIR: set the directory and create it (0755, owned by USER) when missing."""
    wd = workdir_path(state.config.working_dir, instruction.path)
    state = state.with_config(working_dir=wd)
    created_by = f"WORKDIR {wd}"
    if wd == "/":
        return state.record(created_by, empty_layer=True)
    with ctx.workspace.step(state.lowers) as (merged, upper):
        owner = None
        if state.config.user:
            owner = Owner(*workdir_owner(merged, state.config.user))
        target = resolve_dest(merged, wd)
        epoch = ctx.options.source_date_epoch  # BuildKit's mkdir: made at SOURCE_DATE_EPOCH
        if not target.is_dir():
            mkdir_all(merged, target, mode=0o755, owner=owner,
                      mtime_ns=None if epoch is None else epoch * 1_000_000_000)
    layer = ctx.workspace.commit(upper, state.lowers)
    return state.with_layer(layer, upper, created_by)


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _is_remote(source: str) -> bool:
    return _is_url(source) or is_git_source(source)


class CopyHandler(Handler):
    """COPY and ADD: the key sees what the sources are (content hash, or the stage's key, or
    the image's digest), never when they were written."""

    def cache_inputs(self, step: Step, state: StageState,
                     ctx: StepContext) -> CacheInputs | None:
        instruction = step.instruction
        assert isinstance(instruction, (ins.Copy, ins.Add))
        add = instruction if isinstance(instruction, ins.Add) and not instruction.contents \
            else None
        gits = [s for s in instruction.sources if is_git_source(s)] if add else []
        if add and add.checksum is None and any(
                _is_url(s) and s not in gits for s in instruction.sources):
            return None  # what a URL serves is known only once it is downloaded
        extra = common_inputs(state, ctx)
        local = tuple(s for s in instruction.sources
                      if not (_is_remote(s) if add else _is_url(s)))
        if local:
            extra.append(ctx.sources.identity(step.from_, local, instruction.excludes))
        for source in gits:  # BuildKit's key for a Git source: the commit the ref names now
            assert add is not None
            commit = git_commit(source, add.checksum, add.keep_git_dir, ctx.options.secrets)
            ctx.git_commits[source] = commit
            extra.append(f"git {source} {commit}")
        return CacheInputs({}, tuple(extra))

    def apply(self, step: Step, state: StageState, ctx: StepContext) -> StageState:
        assert isinstance(step.instruction, (ins.Copy, ins.Add))
        return copy(step.instruction, state, ctx, step.from_)


class WorkdirHandler(Handler):
    """WORKDIR: a config change, and a layer when the directory has to be made."""

    def cache_inputs(self, step: Step, state: StageState,
                     ctx: StepContext) -> CacheInputs | None:
        extra = common_inputs(state, ctx)
        if ctx.options.source_date_epoch is not None:  # the directory's time (see workdir)
            extra.append(f"epoch {ctx.options.source_date_epoch}")
        return CacheInputs({}, tuple(extra))

    def apply(self, step: Step, state: StageState, ctx: StepContext) -> StageState:
        assert isinstance(step.instruction, ins.Workdir)
        return workdir(step.instruction, state, ctx)

    def on_hit(self, step: Step, state: StageState) -> StageState:
        assert isinstance(step.instruction, ins.Workdir)
        return state.with_config(
            working_dir=workdir_path(state.config.working_dir, step.instruction.path))


COPY = CopyHandler()
WORKDIR = WorkdirHandler()
