"""RUN --mount: bind, cache, tmpfs and secret mounts turned into sandbox mounts.

Mounts exist only while the step runs: nothing of them reaches the layer (the sandbox removes
the mount points it had to create). Cache mounts persist in the store under
``cache/mounts/<id>`` (a cache given uid, gid or mode is another one for each set of them,
as in BuildKit); ``sharing=locked`` holds an exclusive file lock while the step runs,
``shared`` (the default) a reader lock, so concurrent steps use the directory together, and
``private`` gives a step its own throw-away directory only when another step holds it.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cloche.dockerfile import instructions as ins
from cloche.dockerfile.mounts import Mount as MountSpec
from cloche.dockerfile.mounts import MountError, check_target
from cloche.engine.copy import CopyRequest, copy_into
from cloche.engine.dispatch.context import StepContext
from cloche.engine.fsutil import resolve_dest
from cloche.engine.sources import SourceTree
from cloche.engine.state import StageState
from cloche.errors import BuildError
from cloche.fs.copytree import copytree
from cloche.fs.owners import set_owner
from cloche.fs.rmtree import rmtree
from cloche.plan.steps import Ref
from cloche.sandbox.spec import Mount
from cloche.store import locked
from cloche.store.lock import LockBusyError

SECRETS_DIR = "/run/secrets"


def _target(spec: MountSpec, state: StageState) -> str:
    target = spec.target
    if spec.type == "secret" and not target:
        target = posixpath.join(SECRETS_DIR, spec.id or "")
    if not target:
        raise BuildError(f"mount {spec.spec!r} needs a target")
    if not target.startswith("/"):
        target = posixpath.join(state.config.working_dir or "/", target)
    return posixpath.normpath(target)


@dataclass
class StepMounts:
    """What RUN --mount adds to a step: mounts, and environment variables (secret env=,
    SSH_AUTH_SOCK)."""

    mounts: list[Mount] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[bytes] = field(default_factory=list)  # values to mask in the step's output


@contextmanager
def prepare_mounts(instruction: ins.Run, state: StageState, ctx: StepContext,
                   rootfs: Path, refs: tuple[Ref | None, ...] = ()) -> Iterator[StepMounts]:
    """The sandbox mounts for the instruction's ``--mount`` specs, released afterwards;
    ``refs`` are their ``from=`` references as the plan resolved them (one per mount)."""
    result = StepMounts()
    mounts = result.mounts
    ssh_count = 0
    refs = refs + (None,) * (len(instruction.mounts) - len(refs))
    with ExitStack() as stack:
        for spec, ref in zip(instruction.mounts, refs):
            if spec.type == "secret":
                mount = _secret(spec, state, ctx, stack, result)
                if mount is not None:
                    mounts.append(mount)
                continue
            if spec.type == "ssh":
                mount = _ssh(spec, ctx, ssh_count, result.env)
                ssh_count += 1
                if mount is not None:
                    mounts.append(mount)
                continue
            target = _target(spec, state)
            if spec.type == "tmpfs":
                mounts.append(Mount(target=target, kind="tmpfs", size=spec.size))
            elif spec.type == "bind":
                mounts.append(_bind(spec, ref, target, ctx, stack))
            elif spec.type == "cache":
                mounts.append(_cache(spec, ref, target, ctx, stack))
            else:
                raise BuildError(f"--mount=type={spec.type} is not supported",
                                 stage=ctx.stage_name, file=ctx.file, line=instruction.line)
        for mount in mounts:  # as expanded, joined to WORKDIR, secret ids included
            _check_target(mount.target, instruction, ctx)
        yield result


def _check_target(target: str, instruction: ins.Run, ctx: StepContext) -> None:
    """No mount inside /proc, /sys or /dev (``dockerfile.mounts.check_target``), located."""
    try:
        check_target(target)
    except MountError as err:
        raise BuildError(f"--mount: {err.message}", stage=ctx.stage_name, file=ctx.file,
                         line=instruction.line, hint=err.hint) from None


def _bind(spec: MountSpec, ref: Ref | None, target: str, ctx: StepContext,
          stack: ExitStack) -> Mount:
    """A directory or file of the context, a stage or an image; writes are thrown away."""
    private = False
    if ref is not None:
        tree = stack.enter_context(ctx.sources.open(ref))
        root = tree.root
        if tree.ignore.patterns:  # a named directory context with its own .dockerignore
            root, private = _filtered_context(ctx, stack, tree), True
    elif ctx.build_context.ignore.patterns:
        root, private = _filtered_context(ctx, stack), True
    else:
        root = ctx.build_context.root
    source = resolve_dest(root, spec.source or "/")
    if not source.exists():
        raise BuildError(f"--mount source {spec.source!r} not found in "
                         f"{spec.from_ or 'the build context'}", stage=ctx.stage_name,
                         file=ctx.file, line=ctx.step.line)
    if not spec.readonly and not private:
        scratch = Path(tempfile.mkdtemp(prefix="cloche-bind-rw-", dir=ctx.workspace.root))
        stack.callback(rmtree, scratch, True)
        copy = scratch / "copy"
        if source.is_dir():
            copytree(source, copy)
        else:
            shutil.copy2(source, copy)
        source = copy
    return Mount(target=target, source=source, readonly=spec.readonly)


def _filtered_context(ctx: StepContext, stack: ExitStack, tree: SourceTree | None = None
                      ) -> Path:
    """The context (or ``tree``, a named context) as BuildKit would have received it:
    .dockerignore applied, owners 0:0.

    A bind of the context directory itself would show ignored files (secrets, .git) to the
    step; this private copy is made only when there are ignore rules, and dropped after.
    """
    scratch = Path(tempfile.mkdtemp(prefix="cloche-bind-ctx-", dir=ctx.workspace.root))
    stack.callback(rmtree, scratch, True)
    tree = tree or ctx.build_context.tree
    copy_into(CopyRequest((".",), "/"), tree, scratch)
    os.chmod(scratch, stat.S_IMODE(os.stat(tree.root).st_mode))  # not mkdtemp's 0700
    return scratch


def _cache(spec: MountSpec, ref: Ref | None, target: str, ctx: StepContext,
           stack: ExitStack) -> Mount:
    """The persistent directory of a cache id, used as its ``sharing`` mode says.

    Every user holds a lock on ``<key>.lock`` while its step runs: ``shared`` a reader lock
    (shared users run together), ``locked`` an exclusive one (waits for every other user),
    ``private`` tries an exclusive one and, when another step holds the directory, gets a
    fresh directory of its own for this step (BuildKit: a new mount when there are several
    writers); otherwise it uses, and keeps, the persistent one.
    """
    cache_id = spec.id or target
    if spec.uid is not None or spec.gid is not None or spec.mode is not None:
        # BuildKit keys a cache on its id and the snapshot it starts from; with uid, gid or
        # mode that is a directory made for them (setCacheUIDGID), so each set is its own
        # cache, apart from the id's plain one
        cache_id += (f"\0uid={spec.uid or 0}\0gid={spec.gid or 0}"
                     f"\0mode={spec.mode if spec.mode is not None else 0o755:o}")
    if ref is not None:  # seeded from=: one cache per snapshot it starts from, as BuildKit
        cache_id += "\0from=" + ctx.sources.identity(ref, (spec.source or "/",), ())
    key = hashlib.sha256(cache_id.encode()).hexdigest()[:32]
    base = ctx.workspace.store.cache_dir / "mounts"
    base.mkdir(parents=True, exist_ok=True)
    directory = base / key
    lock = base / f"{key}.lock"
    if spec.sharing == "locked":
        stack.enter_context(locked(lock))
    elif spec.sharing == "private":
        try:
            stack.enter_context(locked(lock, wait=False))
        except LockBusyError:
            directory = base / f"{key}-private-{uuid.uuid4().hex}"
            stack.callback(rmtree, directory, True)
    else:
        stack.enter_context(locked(lock, shared=True))
    if not directory.exists():
        seed = base / f".seed-{uuid.uuid4().hex}"
        if ref is not None:  # an empty cache starts as a copy of from=STAGE's source=PATH
            tree = stack.enter_context(ctx.sources.open(ref))
            origin = resolve_dest(tree.root, spec.source or "/")
            if origin.is_dir():
                copytree(origin, seed)
        if not seed.exists():
            seed.mkdir()
        os.chmod(seed, spec.mode if spec.mode is not None else 0o755)
        set_owner(seed, spec.uid or 0, spec.gid or 0)  # or recorded (cloche.fs.owners)
        try:
            os.rename(seed, directory)  # a concurrent step may have made it first
        except OSError:
            rmtree(seed, ignore_errors=True)
    return Mount(target=target, source=directory, readonly=spec.readonly)


def _secret(spec: MountSpec, state: StageState, ctx: StepContext,
            stack: ExitStack, result: StepMounts) -> Mount | None:
    """A secret as a read-only file (mode 0400 by default), or an env var.

    The value is read only here and handed to the sandbox in memory; it never reaches a host
    file, a layer, the config, the history or any message.
    """
    from cloche.engine.options import secret_value

    secret_id = spec.id or (posixpath.basename(spec.target) if spec.target else None)
    try:
        value = secret_value(ctx.options.secrets, secret_id or "")
    except OSError as err:
        raise BuildError(f"secret {secret_id}: cannot read its file: {err.strerror}",
                         stage=ctx.stage_name, file=ctx.file, line=ctx.step.line) from None
    if value is None:
        if spec.required:
            raise BuildError(f"secret {secret_id} is required but was not given",
                             stage=ctx.stage_name, file=ctx.file, line=ctx.step.line,
                             hint=f"pass it with --secret id={secret_id},src=PATH")
        return None
    result.secrets.append(value)
    if spec.env:
        # BuildKit: env= exposes the value as a variable of this step only; with no target
        # given, no file is mounted.
        result.env[spec.env] = value.decode("utf-8", "replace")
        if not spec.target:
            return None
    # held in memory and mounted in the step's own namespace only (sandbox/secrets.py): no
    # host file holds it, even when cloche is killed during the step
    return Mount(target=_target(spec, state), kind="secret", data=value, readonly=True,
                 mode=spec.mode if spec.mode is not None else 0o400,
                 uid=spec.uid or 0, gid=spec.gid or 0)


SSH_SOCKET_DIR = "/run/buildkit"


def _ssh(spec: MountSpec, ctx: StepContext, index: int, env: dict[str, str]) -> Mount | None:
    """Forward an ssh agent socket given with ``--ssh ID=SOCKET`` (``default``: $SSH_AUTH_SOCK).

    The socket is bind-mounted at the target (default /run/buildkit/ssh_agent.N) and
    SSH_AUTH_SOCK points at it for the step, as BuildKit does.
    """
    wanted = spec.id or "default"
    sockets: dict[str, str] = {}
    for item in ctx.options.ssh:
        name, _, path = item.partition("=")
        sockets[name] = path or os.environ.get("SSH_AUTH_SOCK", "")
    path = sockets.get(wanted, "")
    if not path:
        if spec.required:
            raise BuildError(f"no ssh agent socket for id {wanted!r}", stage=ctx.stage_name,
                             file=ctx.file, line=ctx.step.line,
                             hint=f"pass --ssh {wanted}=SOCKET (or --ssh default with "
                                  "SSH_AUTH_SOCK set)")
        return None
    if not Path(path).exists():
        raise BuildError(f"ssh agent socket {path} for id {wanted!r} does not exist",
                         stage=ctx.stage_name, file=ctx.file, line=ctx.step.line)
    target = spec.target or f"{SSH_SOCKET_DIR}/ssh_agent.{index}"
    env["SSH_AUTH_SOCK"] = target
    return Mount(target=target, source=Path(path), readonly=False)
