"""``--change`` of ``docker import``: Dockerfile lines applied to an image's config.

``cloche import --change 'ENV PATH=/bin' --change 'CMD ["sh"]'`` accepts the instructions
docker import accepts (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME,
WORKDIR). Each line goes through the build's own parts, so it means exactly what the same line
means in a Dockerfile: the front end parses and types it (same words, flags and errors), the
stage scope expands its variables against the image's Env (as docker import does), and the
engine's config handlers apply it (``EXPOSE 80-82`` gives three ports, ``WORKDIR rel`` joins
the current directory and is cleaned). There is no second Dockerfile reader here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import cast

from cloche.dockerfile import instructions as ins
from cloche.dockerfile.args import GlobalScope, StageEnv
from cloche.dockerfile.from_nodes import build_instruction
from cloche.dockerfile.parser import parse
from cloche.engine.dispatch.config import APPLY
from cloche.engine.dispatch.context import StepContext
from cloche.engine.dispatch.files import WORKDIR
from cloche.engine.state import StageState
from cloche.errors import ConfigError, DockerfileError
from cloche.oci.config import ImageConfig
from cloche.plan.steps import Step

ALLOWED = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER",
           "VOLUME", "WORKDIR")
_TYPES = (ins.Cmd, ins.Entrypoint, ins.Env, ins.Expose, ins.Label, ins.Onbuild, ins.StopSignal,
          ins.User, ins.Volume, ins.Workdir)
MAX_CHANGE = 64 << 10  # one line of a Dockerfile is at most 64 KiB in BuildKit's reader too


class ChangeError(ConfigError):
    """A ``--change`` instruction that docker import would refuse."""

    def __init__(self, change: str, why: str) -> None:
        super().__init__(f"invalid --change {change!r}: {why}",
                         hint="allowed instructions: " + ", ".join(ALLOWED))
        self.change = change


def apply_changes(config: ImageConfig, changes: Iterable[str]) -> ImageConfig:
    """``config`` with every change applied in order, each seeing the Env the previous left.

    Only the runtime config changes: the history stays as given (docker import records one
    entry for the layer, none per change).
    """
    env = StageEnv(GlobalScope(), tuple(_pairs(config.env)), tuple(_pairs(config.env)))
    state = StageState(config=config, layers=(), lowers=(), env=env)
    cmd_set = False
    for change in changes:
        instruction = parse_change(change)
        try:
            expanded, after = state.env.apply(instruction)  # as a build expands the line
            state = replace(state, env=after)
            if isinstance(expanded, ins.Workdir):
                # a file step in a build (it makes the directory); an import only records it,
                # as a build does when the step comes from the cache
                state = WORKDIR.on_hit(Step(expanded), state)
            else:
                state = APPLY[type(expanded)](expanded, state, _surroundings(cmd_set))
        except DockerfileError as err:
            raise ChangeError(change, err.message) from err
        cmd_set = cmd_set or isinstance(expanded, ins.Cmd)
    return state.config.replace(history=config.history)


@dataclass(frozen=True)
class _Surroundings:
    """What the config handlers read of a step's surroundings: whether a CMD came before
    (ENTRYPOINT drops an inherited CMD otherwise). An import has no workspace, sources or
    listener; the tests apply every allowed instruction through this to keep that true."""

    cmd_set: bool


def _surroundings(cmd_set: bool) -> StepContext:
    return cast(StepContext, _Surroundings(cmd_set))


def parse_change(change: str) -> ins.Instruction:
    """One change as the front end types it; refused unless docker import allows it."""
    if len(change) > MAX_CHANGE:
        raise ChangeError(change[:40] + "...", f"longer than {MAX_CHANGE} bytes")
    try:
        tree = parse(change, file="--change")
    except DockerfileError as err:
        raise ChangeError(change, "no instruction" if not change.strip() else err.message) \
            from err
    if len(tree.nodes) != 1:
        raise ChangeError(change, f"want one instruction, found {len(tree.nodes)}")
    node = tree.nodes[0]
    keyword = node.keyword.upper()
    if keyword not in ALLOWED:
        raise ChangeError(change, f"{keyword} cannot be used with import")
    try:
        instruction = build_instruction(node, tree)
    except DockerfileError as err:
        raise ChangeError(change, err.message) from err
    assert isinstance(instruction, _TYPES)
    return instruction


def _pairs(env: Iterable[str]) -> list[tuple[str, str]]:
    """``KEY=value`` entries as pairs, the last of a duplicated name winning (as Docker)."""
    out: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        out[key] = value
    return list(out.items())
