"""RUN: the command in the sandbox over the stage's root filesystem; its changes, a layer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from cloche.dockerfile import instructions as ins
from cloche.dockerfile.dump import go_quote
from cloche.dockerfile.heredoc import parse_heredoc_word
from cloche.engine.dispatch import history as hist
from cloche.engine.dispatch.config import shell_of
from cloche.engine.dispatch.context import LineSink, StepContext
from cloche.engine.dispatch.handler import CacheInputs, Handler, common_inputs
from cloche.engine.dispatch.mounts import prepare_mounts
from cloche.engine.state import StageState
from cloche.errors import BuildError
from cloche.fs.gopath import go_clean
from cloche.fs.rmtree import rmtree
from cloche.fs.users import resolve_user
from cloche.plan.entitlements import check_steps
from cloche.plan.steps import Ref, Step
from cloche.sandbox import runner
from cloche.sandbox.chroot import run_chroot
from cloche.sandbox.limits import Limits, human_bytes
from cloche.sandbox.network import loopback_proxies
from cloche.sandbox.overlay import prune_copied_up
from cloche.sandbox.scratch import make_scratch
from cloche.sandbox.spec import Mount, RunResult, RunSpec

PIPES = "/dev/pipes"  # where BuildKit mounts a heredoc script with a #! line


def run_args(instruction: ins.Run, state: StageState, scripts: Path) -> tuple[tuple[str, ...], list[Mount]]:
    """The argv of a RUN (BuildKit's rules for heredocs), and mounts the argv needs."""
    command, mounts = instruction.command, []
    if instruction.heredocs and instruction.shell_form:
        first = instruction.heredocs[0]
        marker = parse_heredoc_word(command[0].strip()) if len(command) == 1 else None
        if marker is not None and len(instruction.heredocs) == 1:
            if first.content.startswith("#!"):
                script = scripts / first.name
                script.write_text(first.content)
                script.chmod(0o755)
                mounts.append(Mount(target=PIPES, source=scripts, readonly=True))
                command = (f"{PIPES}/{first.name}",)  # run by the shell, as BuildKit does
            else:
                command = (first.content,)
        else:
            text = command[0] + "".join(f"\n{h.content}{h.name}" for h in instruction.heredocs)
            command = (text,)
    if instruction.shell_form:
        return shell_of(state) + (" ".join(command),), mounts
    return command, mounts


def run(instruction: ins.Run, state: StageState, ctx: StepContext,
        refs: tuple[Ref | None, ...] = ()) -> StageState:
    """Carry out one (expanded) RUN and return the stage after it; ``refs`` are its mounts'
    ``from=`` references as the plan resolved them."""
    # the executor checked the stage's steps already; this guard holds for any other caller
    check_steps((Step(instruction),), ctx.options.allow, None)
    network = step_network(instruction, ctx.options.network)
    plain = ctx.workspace.plain  # --isolation=chroot (sandbox/chroot.py)
    if plain:
        _check_chroot(instruction, network, ctx)
    scripts = make_scratch("heredoc", ctx.workspace.root)  # found stale if cloche is killed
    try:
        argv, mounts = run_args(instruction, state, scripts)
        env = state.env
        build_args = [(name, env.environment.get(name, "")) for name in env.declared_args]
        with ctx.workspace.step(state.lowers, command=True) as (merged, upper):
            with prepare_mounts(instruction, state, ctx, merged, refs) as extra:
                user = resolve_user(merged, state.config.user)  # "" = root, no extra groups
                ctx.workspace.creates_as(user.uid, user.gid)  # owner of new files (chroot)
                out = LineSink(ctx, extra.secrets)
                variables = env.run_environment()
                proxies = _proxy_env(env.scope.build_args)
                host_loopback = False
                if network == "default":  # a proxy on the host's loopback: through slirp
                    proxies, host_loopback = loopback_proxies(proxies)
                variables.update(proxies)
                variables.update(extra.env)
                spec = RunSpec(
                    rootfs=merged, argv=argv,
                    env=tuple(f"{k}={v}" for k, v in variables.items()),
                    # WORKDIR keeps an absolute path as written ("/app/"); the step runs
                    # in the cleaned path
                    cwd=go_clean(state.config.working_dir or "/"), user=user,
                    network=network, host_loopback=host_loopback,
                    security=instruction.security or "sandbox",
                    mounts=tuple(mounts) + tuple(extra.mounts), stdout=out, stderr=out,
                    cancel=ctx.cancel, limits=ctx.options.limits(),
                    extra_hosts=ctx.options.add_hosts,
                    cgroup=ctx.workspace.root.name, scratch=ctx.workspace.root)
                result = run_chroot(spec) if plain else runner.run(spec)
                out.flush()
        prune_copied_up(upper, state.lowers, result.stub_parents)
    finally:
        rmtree(scripts, ignore_errors=True)
    if not result.ok:
        rmtree(upper.parent, ignore_errors=True)
        what = (f"killed by signal {result.signal}" if result.signal
                else f"exit code: {result.exit_code}")
        what, hint = _over_limits(result, spec.limits, what)
        raise BuildError(  # BuildKit's words: Go's %q of the arguments joined by spaces
            f"process {go_quote(' '.join(argv))} did not complete successfully: {what}",
            stage=ctx.stage_name, file=ctx.file, line=instruction.line,
            end_line=instruction.node.end_line or None,
            output_tail=_tail(ctx.output_tail), exit_status=result.exit_code, hint=hint)
    created_by = hist.run(argv, build_args)
    layer = ctx.workspace.commit(upper, state.lowers)
    return state.with_layer(layer, upper, created_by)


def _check_chroot(instruction: ins.Run, network: str, ctx: StepContext) -> None:
    """What a RUN asks that chroot isolation cannot give: an error at its line."""
    why = None
    if network == "none":
        why = ("--network=none cannot be enforced with --isolation=chroot: the step would "
               "share the container's network")
    elif instruction.security == "insecure":
        why = "--security=insecure cannot be honoured with --isolation=chroot"
    if why is not None:
        raise BuildError(f"RUN {why}", stage=ctx.stage_name, file=ctx.file,
                         line=instruction.line, hint="build with --isolation=namespaces where "
                         "cloche may create namespaces (docs/isolation.md)")


def _over_limits(result: RunResult, limits: Limits, what: str) -> tuple[str, str | None]:
    """The failure told with the limit the step ran into, if it ran into one."""
    if result.oom_killed and limits.memory is not None:
        return (f"out of memory: the kernel killed a process of the step at the --memory "
                f"limit of {human_bytes(limits.memory)} ({what})",
                "give the steps more with --memory SIZE")
    if result.pids_refused and limits.pids is not None:
        return (f"{what}; the step tried to run more than {limits.pids} processes "
                "(--pids-limit)", "raise it with --pids-limit N (-1: unlimited)")
    return what, None


def step_network(instruction: ins.Run, build_network: str) -> str:
    """The step's network mode: ``RUN --network=default`` (or none given) is the build's
    mode, as under BuildKit, so ``--network=none`` for the build holds for every step."""
    if instruction.network is None or instruction.network == "default":
        return build_network
    return instruction.network


def _tail(lines: Iterable[str], limit: int = 2000) -> str:
    """The last output lines for an error message, at most ``limit`` characters."""
    text = "\n".join(lines)
    return text if len(text) <= limit else "..." + text[-limit:]


class RunHandler(Handler):
    """RUN: its key sees the command's environment, shell, network and bind-mounted files."""

    def cache_inputs(self, step: Step, state: StageState,
                     ctx: StepContext) -> CacheInputs | None:
        instruction = step.instruction
        assert isinstance(instruction, ins.Run)
        extra = common_inputs(state, ctx) + [" ".join(shell_of(state)), ctx.options.network]
        if ctx.options.add_hosts:  # in BuildKit's exec op too (extra hosts)
            extra.append(repr(ctx.options.add_hosts))
        refs = step.mounts + (None,) * (len(instruction.mounts) - len(step.mounts))
        for mount, ref in zip(instruction.mounts, refs):
            if mount.type == "bind":  # what it reads; a cache mount's contents are not inputs
                extra.append(ctx.sources.identity(ref, (mount.source or ".",), ()))
        return CacheInputs(state.env.run_environment(), tuple(extra))

    def apply(self, step: Step, state: StageState, ctx: StepContext) -> StageState:
        assert isinstance(step.instruction, ins.Run)
        return run(step.instruction, state, ctx, step.mounts)


RUN = RunHandler()

__all__ = ["RUN", "RunHandler", "run", "run_args", "step_network"]


_PROXY_KINDS = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")


def _proxy_env(build_args: Mapping[str, str]) -> dict[str, str]:
    """BuildKit's proxy environment for every RUN: a proxy build arg, named in any case and
    declared or not, is set in both spellings (``HTTP_PROXY`` and ``http_proxy``), over the
    step's own variables (dockerfile2llb proxyEnvFromBuildArgs, then the exec op's
    proxyEnvList). When both spellings are given BuildKit picks one at random (a Go map
    walk); the lower-case one wins here."""
    out: dict[str, str] = {}
    for upper in _PROXY_KINDS:
        lower = upper.lower()
        named = sorted((k != lower, k != upper, k) for k in build_args if k.lower() == lower)
        value = build_args[named[0][2]] if named else ""
        if value:
            out[upper] = out[lower] = value
    return out
