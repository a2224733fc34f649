"""The plan hands the engine resolved steps: ``--from`` and mount ``from=`` references are
stages (by index) or images, decided once, here; ONBUILD triggers are typed."""

from __future__ import annotations

import textwrap

import pytest

from cloche.dockerfile.args import StageEnv
from cloche.dockerfile.instructions import Copy, Run
from cloche.dockerfile.stages import parse_dockerfile
from cloche.errors import DockerfileError
from cloche.plan import build_plan
from cloche.plan.graph import BuildPlan
from cloche.plan.steps import ImageRef, StageRef


def plan(text: str, **kw: object) -> BuildPlan:
    return build_plan(parse_dockerfile(textwrap.dedent(text).lstrip()), **kw)  # type: ignore[arg-type]


def test_from_with_an_arg_is_resolved_to_a_stage() -> None:
    p = plan("""
        FROM alpine AS one
        FROM alpine AS two
        FROM alpine
        ARG SRC=one
        COPY --from=${SRC} /f /f
        COPY --from=1 /f /g
        COPY --from=$SRC-image:1 /f /h
        RUN --mount=from=two,target=/m --mount=type=tmpfs,target=/t \\
            --mount=from=$SRC,type=cache,target=/c true
    """, build_args={"SRC": "two"})
    steps = p.stages[2].steps
    assert [s.instruction.keyword for s in steps] == ["arg", "copy", "copy", "copy", "run"]
    assert steps[1].from_ == StageRef(1, "two")  # the build arg wins over the default
    assert steps[2].from_ == StageRef(1, "two")
    assert steps[3].from_ == ImageRef("two-image:1")
    assert steps[4].mounts == (StageRef(1, "two"), None, StageRef(1, "two"))
    # the instruction stays as written: the engine expands it at dispatch time
    assert isinstance(steps[1].instruction, Copy) and steps[1].instruction.from_ == "${SRC}"
    assert p.stages[2].depends_on == (1,)
    assert p.stages[2].images == ("alpine", "two-image:1")


def test_parent_stage_triggers_are_typed_steps_at_the_from_line() -> None:
    p = plan("""
        FROM alpine AS assets
        FROM alpine AS parent
        ONBUILD COPY --from=assets /a /a
        ONBUILD RUN make
        FROM parent
        RUN true
    """)
    child = p.stages[2]
    assert [s.trigger for s in child.steps] == [True, True, False]
    assert child.steps[0].from_ == StageRef(0, "assets")
    assert isinstance(child.steps[1].instruction, Run)
    assert [s.line for s in child.steps] == [5, 5, 6]  # triggers run at the child's FROM


def test_image_triggers_resolve_by_the_plan_rules() -> None:
    p = plan("""
        FROM alpine AS assets
        FROM base-with-triggers
        COPY --from=assets /b /b
    """)
    env = StageEnv.start(p.scope, base_env=(("WHERE", "assets"),))
    steps = p.trigger_steps(1, ("COPY --from=$WHERE /a /a", "RUN --mount=from=img,target=/m x"),
                            env)
    assert steps[0].from_ == StageRef(0, "assets") and steps[0].trigger
    assert steps[1].mounts == (ImageRef("img"),)
    assert {s.line for s in steps} == {2}
    assert p.stages[1].steps[0].from_ == StageRef(0, "assets")


@pytest.mark.parametrize("text, message", [
    ("ONBUILD RUN x", "ONBUILD isn't allowed as an ONBUILD trigger"),
    ("FROM y", "FROM isn't allowed as an ONBUILD trigger"),
    ("MAINTAINER me", "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ("RUN a\nRUN b", "single expression"),
    ("COPY --nope a b", "unknown flag"),
])
def test_bad_image_triggers_get_the_front_end_error_at_the_from_line(text: str,
                                                                      message: str) -> None:
    p = plan("# comment\nFROM base-with-triggers\nRUN true\n")
    with pytest.raises(DockerfileError, match=message) as info:
        p.trigger_steps(0, (text,), StageEnv.start(p.scope))
    assert info.value.line == 2 and info.value.source_line == "FROM base-with-triggers"
    assert "of the base image" in info.value.message


def test_image_trigger_naming_a_stage_the_build_does_not_run_is_an_error() -> None:
    p = plan("""
        FROM alpine AS unused
        FROM base-with-triggers AS main
        FROM alpine AS later
    """, target="main")
    env = StageEnv.start(p.scope)
    with pytest.raises(DockerfileError, match="does not run before this stage"):
        p.trigger_steps(1, ("COPY --from=unused /a /a",), env)
    with pytest.raises(DockerfileError, match="does not run before this stage"):
        p.trigger_steps(1, ("COPY --from=later /a /a",), env)
