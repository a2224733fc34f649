"""Instructions that change only the image config (and history): ENV, ARG, LABEL, EXPOSE,
VOLUME, USER, CMD, ENTRYPOINT, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER.

Each handler takes the instruction as expanded by the stage's scope and the scope after it,
and returns the next StageState with BuildKit's config change and history line.
"""

from __future__ import annotations

import signal as _signal
from dataclasses import replace

from cloche.dockerfile import instructions as ins
from cloche.dockerfile.args import StageEnv
from cloche.engine.dispatch import history as hist
from cloche.engine.state import StageState
from cloche.errors import DockerfileError
from cloche.oci.config import Healthcheck

DEFAULT_SHELL = ("/bin/sh", "-c")


def shell_of(state: StageState) -> tuple[str, ...]:
    return state.config.shell or DEFAULT_SHELL


def command_args(state: StageState, command: tuple[str, ...], shell_form: bool) -> tuple[str, ...]:
    """Exec form as written; shell form wrapped in the stage's SHELL (BuildKit's withShell)."""
    if not shell_form:
        return command
    return shell_of(state) + (" ".join(command),)


def expose_ports(words: tuple[str, ...], where: ins.Instruction) -> list[str]:
    """``80``, ``80/udp``, ``8000-8002/tcp`` as the config's ``port/proto`` keys."""
    ports: list[str] = []
    for word in words:
        port, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise DockerfileError(f"invalid proto: {proto}", line=where.line)
        low, _, high = port.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise DockerfileError(f"invalid containerPort: {port}", line=where.line) from None
        if not (0 < first <= last <= 65535):
            raise DockerfileError(f"invalid port range: {port}", line=where.line)
        ports.extend(f"{p}/{proto}" for p in range(first, last + 1))
    return ports


def check_signal(text: str, where: ins.Instruction) -> None:
    """STOPSIGNAL accepts a number or a signal name with or without SIG (Docker's rule)."""
    if text.isdigit():
        if int(text) > 0:
            return
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if hasattr(_signal.Signals, name) or name.startswith("SIGRTMIN") \
                or name.startswith("SIGRTMAX"):
            return
    raise DockerfileError(f"invalid signal: {text}", line=where.line)


def apply(instruction: ins.Instruction, state: StageState, env: StageEnv,
          cmd_set: bool) -> StageState:
    """The state after a config-only instruction (already expanded); ``env`` is the scope
    after it."""
    state = replace(state, env=env)
    config = state.config
    if isinstance(instruction, ins.Env):
        state = state.with_config(env=tuple(f"{k}={v}" for k, v in env.config_env))
        return state.record("ENV " + " ".join(f"{k}={v}" for k, v in instruction.pairs))
    if isinstance(instruction, ins.Arg):
        values = env.environment
        words = [f"{a.name}={values[a.name]}" if a.name in values else a.name
                 for a in instruction.args]
        return state.record("ARG " + " ".join(words))
    if isinstance(instruction, ins.Label):
        labels = dict(config.labels)
        labels.update(instruction.pairs)
        state = state.with_config(labels=labels)
        return state.record("LABEL " + " ".join(f"{k}={v}" for k, v in instruction.pairs))
    if isinstance(instruction, ins.Expose):
        new = expose_ports(instruction.ports, instruction)
        merged = list(config.exposed_ports) + [p for p in new if p not in config.exposed_ports]
        return state.with_config(exposed_ports=tuple(merged)).record("EXPOSE " + hist.go_v_set(new))
    if isinstance(instruction, ins.Volume):
        if any(not p for p in instruction.paths):
            raise DockerfileError("VOLUME specified can not be an empty string",
                                  line=instruction.line)
        merged = list(config.volumes) + [p for p in instruction.paths if p not in config.volumes]
        return state.with_config(volumes=tuple(merged)).record(
            "VOLUME " + hist.go_v_list(instruction.paths))
    if isinstance(instruction, ins.User):
        return state.with_config(user=instruction.user).record(f"USER {instruction.user}")
    if isinstance(instruction, ins.Cmd):
        args = command_args(state, instruction.command, instruction.shell_form)
        state = state.with_config(cmd=args, args_escaped=True)
        return state.record("CMD " + hist.go_q_list(args))
    if isinstance(instruction, ins.Entrypoint):
        args = command_args(state, instruction.command, instruction.shell_form)
        changes: dict[str, object] = {"entrypoint": args}
        if not cmd_set:
            changes["cmd"] = None
        return state.with_config(**changes).record("ENTRYPOINT " + hist.go_q_list(args))
    if isinstance(instruction, ins.Shell):
        return state.with_config(shell=instruction.shell).record(
            "SHELL " + hist.go_v_list(instruction.shell))
    if isinstance(instruction, ins.StopSignal):
        check_signal(instruction.signal, instruction)
        return state.with_config(stop_signal=instruction.signal).record(
            f"STOPSIGNAL {instruction.signal}")
    if isinstance(instruction, ins.Healthcheck):
        check = Healthcheck(test=instruction.test, interval=instruction.interval,
                            timeout=instruction.timeout, start_period=instruction.start_period,
                            start_interval=instruction.start_interval,
                            retries=instruction.retries)
        return state.with_config(healthcheck=check).record(hist.healthcheck(check))
    if isinstance(instruction, ins.Onbuild):
        return state.with_config(on_build=(config.on_build or ()) + (instruction.expression,))
    if isinstance(instruction, ins.Maintainer):
        return state.with_config(author=instruction.maintainer).record(
            f"MAINTAINER {instruction.maintainer}")
    raise TypeError(f"not a config instruction: {instruction!r}")


CONFIG_INSTRUCTIONS = (ins.Env, ins.Arg, ins.Label, ins.Expose, ins.Volume, ins.User, ins.Cmd,
                       ins.Entrypoint, ins.Shell, ins.StopSignal, ins.Healthcheck, ins.Onbuild,
                       ins.Maintainer)
