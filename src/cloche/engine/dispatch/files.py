"""COPY, ADD and WORKDIR: file operations on the stage's root filesystem, one layer each."""

from __future__ import annotations

import posixpath
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

from cloche.dockerfile import instructions as ins
from cloche.engine.add import add_into
from cloche.engine.copy import CopyRequest, copy_into
from cloche.engine.direct_copy import direct_entries
from cloche.engine.dispatch import history as hist
from cloche.engine.dispatch.context import StepContext
from cloche.engine.dockerignore import go_clean
from cloche.engine.fsutil import Owner, mkdir_all, resolve_dest
from cloche.engine.sources import SourceTree, inline_tree
from cloche.engine.state import StageState
from cloche.sandbox.users import resolve_user


def copy(instruction: ins.Copy | ins.Add, state: StageState, ctx: StepContext) -> StageState:
    """One (expanded) COPY or ADD."""
    is_add = isinstance(instruction, ins.Add)
    keyword = "ADD" if is_add else "COPY"
    from_ = None if is_add else instruction.from_
    workdir = state.config.working_dir or "/"
    with ExitStack() as stack:
        tree = stack.enter_context(ctx.open_source(from_)) if from_ else ctx.build_context.tree
        sources = instruction.sources
        if instruction.contents:
            tree, sources = _heredoc_tree(instruction, stack, ctx)
        request = CopyRequest(sources, instruction.dest, workdir, instruction.chown,
                              instruction.chmod, getattr(instruction, "parents", False),
                              instruction.excludes, instruction.link, keyword)
        with ctx.workspace.step(state.lowers) as (merged, upper):
            direct = direct_entries(request, tree, merged) \
                if ctx.files_unread and not instruction.contents else None
            if direct is None and is_add and not instruction.contents:
                # URLs: remote.download makes the client, and copes without CA certificates
                add_into(request, tree, merged, checksum=instruction.checksum,
                         tmp_dir=ctx.workspace.root)
            elif direct is None:
                copy_into(request, tree, merged)
        if direct is not None:  # straight to the layer, from the sources (still open here)
            layer = ctx.workspace.commit_entries(direct, upper)
    created_by = hist.copy(keyword, instruction.sources, [h.name for h in instruction.contents],
                           instruction.dest, chown=instruction.chown, chmod=instruction.chmod,
                           parents=getattr(instruction, "parents", False))
    if direct is None:
        layer = ctx.workspace.commit(upper)
    if layer is None:
        return state.record(created_by, empty_layer=True)
    return state.with_layer(layer, upper, created_by)


def _heredoc_tree(instruction: ins.Copy | ins.Add, stack: ExitStack,
                  ctx: StepContext) -> tuple[SourceTree, tuple[str, ...]]:
    """Heredoc files (``COPY <<EOF /dest``) in a scratch tree, as BuildKit makes them."""
    scratch = Path(tempfile.mkdtemp(prefix="cloche-heredoc-", dir=ctx.workspace.root))
    stack.callback(shutil.rmtree, scratch, True)
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
            user = resolve_user(merged, state.config.user)
            owner = Owner(user.uid, user.gid)
        target = resolve_dest(merged, wd)
        if not target.is_dir():
            mkdir_all(merged, target, mode=0o755, owner=owner)
    layer = ctx.workspace.commit(upper)
    if layer is None:
        return state.record(created_by, empty_layer=True)
    return state.with_layer(layer, upper, created_by)
