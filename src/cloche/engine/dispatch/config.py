"""Instructions that change only the image config (and history): ENV, ARG, LABEL, EXPOSE,
VOLUME, USER, CMD, ENTRYPOINT, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER.

One function per instruction, registered by type in ``APPLY``; each takes the instruction
as expanded by the stage's scope (``state.env`` already the scope after it) and returns the
next StageState with BuildKit's config change and history line. ``CONFIG`` is the family's
handler.
"""

from __future__ import annotations

import ipaddress
import signal as _signal
from collections.abc import Callable
from typing import Any

from cloche.dockerfile import instructions as ins
from cloche.engine.dispatch import history as hist
from cloche.engine.dispatch.context import StepContext
from cloche.engine.dispatch.handler import CacheInputs, Handler
from cloche.engine.state import StageState
from cloche.errors import DockerfileError
from cloche.oci.config import Healthcheck
from cloche.plan.steps import Step

DEFAULT_SHELL = ("/bin/sh", "-c")


def shell_of(state: StageState) -> tuple[str, ...]:
    return state.config.shell or DEFAULT_SHELL


def command_args(state: StageState, command: tuple[str, ...], shell_form: bool) -> tuple[str, ...]:
    """Exec form as written; shell form wrapped in the stage's SHELL (BuildKit's withShell)."""
    if not shell_form:
        return command
    return shell_of(state) + (" ".join(command),)


def _port_range(text: str) -> tuple[int, int] | None:
    """``80`` or ``8000-8002`` as (first, last); None when not numbers (go-connections' rule:
    decimal digits, at most 65535)."""
    low, _, high = text.partition("-")
    high = high.partition("-")[0] if high else low
    if not (low.isascii() and low.isdigit() and high.isascii() and high.isdigit()):
        return None
    first, last = int(low), int(high)
    return (first, last) if last <= 65535 else None


def expose_ports(words: tuple[str, ...], where: ins.Instruction) -> list[str]:
    """``80``, ``80/udp``, ``8000-8002/tcp`` as the config's ``port/proto`` keys.

    A published form (``[IP:]HOST:CONTAINER``) exposes its container port, as BuildKit's
    ``nat.ParsePortSpecs`` takes it (the ExposeInvalidFormat check warns about it); the IP and
    host port are checked, then dropped."""
    ports: list[str] = []
    for word in words:
        parts = word.split(":")
        container = parts[-1]
        host = parts[-2] if len(parts) > 1 else ""
        ip = ":".join(parts[:-2])
        if ip.startswith("[") and ip.endswith("]"):
            ip = ip[1:-1]
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise DockerfileError(f"invalid IP address: {ip}", line=where.line) from None
        port, _, proto = container.partition("/")
        if not port:
            raise DockerfileError(f"no port specified: {word}<empty>", line=where.line)
        proto = (proto or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise DockerfileError(f"invalid proto: {proto}", line=where.line)
        span = _port_range(port)
        if span is None:
            raise DockerfileError(f"invalid containerPort: {port}", line=where.line)
        first, last = span
        if not (0 < first <= last):
            raise DockerfileError(f"invalid port range: {port}", line=where.line)
        if host:
            host_span = _port_range(host)
            if host_span is None or host_span[1] < host_span[0]:
                raise DockerfileError(f"invalid hostPort: {host}", line=where.line)
            if last != first and host_span[1] - host_span[0] != last - first:
                raise DockerfileError(f"invalid ranges specified for container and host Ports: "
                                      f"{port} and {host}", line=where.line)
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


def _env(instruction: ins.Env, state: StageState, ctx: StepContext) -> StageState:
    state = state.with_config(env=tuple(f"{k}={v}" for k, v in state.env.config_env))
    return state.record("ENV " + " ".join(f"{k}={v}" for k, v in instruction.pairs))


def _arg(instruction: ins.Arg, state: StageState, ctx: StepContext) -> StageState:
    values = state.env.environment
    words = [f"{a.name}={values[a.name]}" if a.name in values else a.name
             for a in instruction.args]
    return state.record("ARG " + " ".join(words))


def _label(instruction: ins.Label, state: StageState, ctx: StepContext) -> StageState:
    labels = dict(state.config.labels)
    labels.update(instruction.pairs)
    state = state.with_config(labels=labels)
    return state.record("LABEL " + " ".join(f"{k}={v}" for k, v in instruction.pairs))


def _expose(instruction: ins.Expose, state: StageState, ctx: StepContext) -> StageState:
    current = state.config.exposed_ports
    new = expose_ports(instruction.ports, instruction)
    merged = list(current) + [p for p in new if p not in current]
    return state.with_config(exposed_ports=tuple(merged)).record("EXPOSE " + hist.go_v_set(new))


def _volume(instruction: ins.Volume, state: StageState, ctx: StepContext) -> StageState:
    if any(not p for p in instruction.paths):
        raise DockerfileError("VOLUME specified can not be an empty string",
                              line=instruction.line)
    current = state.config.volumes
    merged = list(current) + [p for p in instruction.paths if p not in current]
    return state.with_config(volumes=tuple(merged)).record(
        "VOLUME " + hist.go_v_list(instruction.paths))


def _user(instruction: ins.User, state: StageState, ctx: StepContext) -> StageState:
    return state.with_config(user=instruction.user).record(f"USER {instruction.user}")


def _cmd(instruction: ins.Cmd, state: StageState, ctx: StepContext) -> StageState:
    args = command_args(state, instruction.command, instruction.shell_form)
    state = state.with_config(cmd=args, args_escaped=True)
    return state.record("CMD " + hist.go_q_list(args))


def _entrypoint(instruction: ins.Entrypoint, state: StageState, ctx: StepContext) -> StageState:
    args = command_args(state, instruction.command, instruction.shell_form)
    changes: dict[str, object] = {"entrypoint": args}
    if not ctx.cmd_set:  # an inherited CMD is dropped; one set in this stage stays
        changes["cmd"] = None
    return state.with_config(**changes).record("ENTRYPOINT " + hist.go_q_list(args))


def _shell(instruction: ins.Shell, state: StageState, ctx: StepContext) -> StageState:
    return state.with_config(shell=instruction.shell).record(
        "SHELL " + hist.go_v_list(instruction.shell))


def _stop_signal(instruction: ins.StopSignal, state: StageState, ctx: StepContext) -> StageState:
    check_signal(instruction.signal, instruction)
    return state.with_config(stop_signal=instruction.signal).record(
        f"STOPSIGNAL {instruction.signal}")


def _healthcheck(instruction: ins.Healthcheck, state: StageState,
                 ctx: StepContext) -> StageState:
    check = Healthcheck(test=instruction.test, interval=instruction.interval,
                        timeout=instruction.timeout, start_period=instruction.start_period,
                        start_interval=instruction.start_interval, retries=instruction.retries)
    return state.with_config(healthcheck=check).record(hist.healthcheck(check))


def _onbuild(instruction: ins.Onbuild, state: StageState, ctx: StepContext) -> StageState:
    return state.with_config(
        on_build=(state.config.on_build or ()) + (instruction.expression,))


def _maintainer(instruction: ins.Maintainer, state: StageState, ctx: StepContext) -> StageState:
    return state.with_config(author=instruction.maintainer).record(
        f"MAINTAINER {instruction.maintainer}")


_Apply = Callable[[Any, StageState, StepContext], StageState]

APPLY: dict[type[ins.Instruction], _Apply] = {
    ins.Env: _env, ins.Arg: _arg, ins.Label: _label, ins.Expose: _expose,
    ins.Volume: _volume, ins.User: _user, ins.Cmd: _cmd, ins.Entrypoint: _entrypoint,
    ins.Shell: _shell, ins.StopSignal: _stop_signal, ins.Healthcheck: _healthcheck,
    ins.Onbuild: _onbuild, ins.Maintainer: _maintainer,
}
"""Each config instruction's change, by instruction type (the instruction comes expanded,
and ``state.env`` is the scope after it)."""


class ConfigHandler(Handler):
    """The config-only instructions: no files, no layer, nothing to cache."""

    writes_files = False

    def cache_inputs(self, step: Step, state: StageState,
                     ctx: StepContext) -> CacheInputs | None:
        return None

    def apply(self, step: Step, state: StageState, ctx: StepContext) -> StageState:
        return APPLY[type(step.instruction)](step.instruction, state, ctx)


CONFIG = ConfigHandler()
CONFIG_INSTRUCTIONS = tuple(APPLY)
