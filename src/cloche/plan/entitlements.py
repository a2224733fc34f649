"""Entitlements: the privileges a RUN step may ask for only when the caller grants them.

``RUN --security=insecure`` (every capability, the host's devices, writable /proc/sys and
/sys: the host is the step's) and ``RUN --network=host`` (the host's network namespace, its
loopback services and its traffic) are decided by whoever runs ``cloche build``, never by the
Dockerfile, and even less by a base image's ONBUILD trigger. As BuildKit does, they need
``--allow security.insecure`` / ``--allow network.host``; a step that asks without it is
refused before anything runs, cache hit or not, with an error located at its line (the FROM
line for a trigger) that names the flag.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from cloche.dockerfile.flags import error_at
from cloche.dockerfile.instructions import Instruction, Run
from cloche.dockerfile.node import SyntaxTree
from cloche.errors import DockerfileError
from cloche.plan.steps import Step

if TYPE_CHECKING:
    from cloche.plan.graph import BuildPlan

NETWORK_HOST = "network.host"
SECURITY_INSECURE = "security.insecure"
ENTITLEMENTS = (NETWORK_HOST, SECURITY_INSECURE)

__all__ = ["ENTITLEMENTS", "NETWORK_HOST", "SECURITY_INSECURE", "EntitlementError",
           "check_plan", "check_steps", "required"]


class EntitlementError(DockerfileError):
    """A RUN step asks for a privilege (``entitlement``) the caller did not grant."""

    def __init__(self, message: str, *, entitlement: str, file: str | None = None,
                 line: int | None = None, column: int | None = None,
                 source_line: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, file=file, line=line, column=column,
                         source_line=source_line, hint=hint)
        self.entitlement = entitlement


def required(instruction: Instruction) -> tuple[tuple[str, str], ...]:
    """The entitlements ``instruction`` needs, each with the flag that asks for it."""
    if not isinstance(instruction, Run):
        return ()
    found = []
    if instruction.security == "insecure":
        found.append((SECURITY_INSECURE, "--security=insecure"))
    if instruction.network == "host":
        found.append((NETWORK_HOST, "--network=host"))
    return tuple(found)


def check_plan(plan: BuildPlan, allowed: Collection[str]) -> None:
    """Every step of the stages the build runs, before any runs (BuildKit checks the whole
    graph as it loads it); a base image's triggers are checked when it is pulled."""
    check_steps((step for index in plan.reachable for step in plan.stages[index].steps),
                allowed, plan.dockerfile.tree)


def check_steps(steps: Iterable[Step], allowed: Collection[str],
                tree: SyntaxTree | None) -> None:
    """Raise EntitlementError for the first step that needs an entitlement not in
    ``allowed``; ``tree`` locates it (a caret under the flag; a trigger at its FROM line)."""
    for step in steps:
        instruction, trigger = step.instruction, step.trigger
        for entitlement, flag in required(instruction):
            if entitlement in allowed:
                continue
            text = " ".join(instruction.original.split())
            what = (f"ONBUILD trigger {text[:200]!r} of the base" if trigger
                    else f"RUN {flag}")
            message = (f"{what} needs the {entitlement} entitlement, which this build does "
                       f"not grant (--allow {entitlement})")
            hint = (f"pass --allow {entitlement} to cloche build (allow=[{entitlement!r}] in "
                    "cloche.build()) only if you trust this Dockerfile and its base images")
            # a trigger is located at its FROM line, which does not hold the flag
            at = error_at(instruction.node, tree, message, needle=None if trigger else flag)
            raise EntitlementError(message, entitlement=entitlement, file=at.file,
                                   line=at.line, column=at.column,
                                   source_line=at.source_line, hint=hint)
