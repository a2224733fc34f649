"""What every instruction handler is: its cache inputs and its apply step, side by side.

A handler serves one instruction family (config instructions, RUN, COPY/ADD, WORKDIR) and is
registered by instruction type in ``cloche.engine.dispatch.HANDLERS``. For a family that
writes files, ``cache_inputs`` names everything besides the previous step's key and the
expanded instruction that can change what ``apply`` produces: the key rules sit next to the
code whose result they predict. ``plan/keys.py`` only hashes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cloche.engine.dispatch.context import StepContext
from cloche.engine.state import StageState
from cloche.plan.steps import Step

__all__ = ["CacheInputs", "Handler", "common_inputs"]


@dataclass(frozen=True)
class CacheInputs:
    """A step's key inputs: the variables it sees, and other values (in a fixed order)."""

    variables: Mapping[str, str] = field(default_factory=dict)
    extra: tuple[str, ...] = ()


def common_inputs(state: StageState, ctx: StepContext) -> list[str]:
    """What every file-writing step depends on: USER (owner of what it creates), WORKDIR
    (where relative paths land) and the target platform."""
    config = state.config
    return [config.user, config.working_dir, ctx.platform]


class Handler:
    """One instruction family. ``step.instruction`` is expanded when a handler sees it."""

    writes_files = True  # False: config only; never cached, the stage's key is unchanged

    def cache_inputs(self, step: Step, state: StageState,
                     ctx: StepContext) -> CacheInputs | None:
        """The step's key inputs, or None when its result cannot be known in advance."""
        raise NotImplementedError

    def apply(self, step: Step, state: StageState, ctx: StepContext) -> StageState:
        """Carry the step out; ``state.env`` is already the scope after the instruction."""
        raise NotImplementedError

    def on_hit(self, step: Step, state: StageState) -> StageState:
        """The config change a step reused from the cache still makes (its layer and history
        come from the cache record)."""
        return state
