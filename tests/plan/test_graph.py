"""The stage graph: references, errors, target reachability and parallel levels."""

from __future__ import annotations

import textwrap

import pytest

from cloche.dockerfile.stages import parse_dockerfile
from cloche.errors import DockerfileError
from cloche.plan import BuildPlan, CircularDependencyError, build_plan


def plan(text: str, **kw: object) -> BuildPlan:
    return build_plan(parse_dockerfile(textwrap.dedent(text).lstrip("\n")), **kw)  # type: ignore[arg-type]


def test_from_copy_and_mount_references() -> None:
    p = plan("""
        FROM alpine AS Builder
        FROM builder AS child
        FROM scratch AS other
        COPY --from=BUILDER /a /a
        COPY --from=1 /b /b
        COPY --from=nginx:latest /c /c
        RUN --mount=from=child,target=/m,source=/s true
        RUN --mount=type=cache,from=builder,target=/cache true
    """)
    builder, child, other = p.stages
    assert builder.base == "alpine" and builder.base_stage is None
    assert child.base_stage == 0 and child.depends_on == (0,)
    assert other.depends_on == (0, 1)
    kinds = [(d.kind, d.stage, d.image) for d in other.dependencies]
    assert kinds == [("copy", 0, None), ("copy", 1, None), ("copy", None, "nginx:latest"),
                     ("mount", 1, None), ("mount", 0, None)]
    assert other.images == ("nginx:latest",)
    assert p.levels == ((0,), (1,), (2,)) and p.order == (0, 1, 2)


def test_from_index_is_not_a_stage_reference() -> None:
    p = plan("""
        FROM alpine
        FROM 0
        COPY --from=0 /x /x
    """)
    second = p.stages[1]
    assert second.base == "0" and second.base_stage is None
    assert second.dependencies[0].stage == 0  # only --from takes an index


def test_from_matches_only_earlier_stages() -> None:
    p = plan("""
        FROM later AS first
        FROM alpine AS later
    """)
    assert p.stages[0].base_stage is None and p.stages[0].images == ("later",)


def test_from_base_name_uses_global_args() -> None:
    p = plan("""
        ARG STAGE=builder
        FROM alpine AS builder
        FROM ${STAGE}
    """)
    assert p.stages[1].base_stage == 0


def test_copy_from_is_expanded_with_stage_args() -> None:
    p = plan("""
        ARG SRC=builder
        FROM alpine AS builder
        FROM scratch
        ARG SRC
        COPY --from=$SRC /x /x
    """)
    assert p.stages[1].depends_on == (0,)


def test_unknown_from_name_is_an_external_image() -> None:
    p = plan("""
        FROM scratch
        COPY --from=busybox:1.36 /bin/busybox /bin/
    """)
    dep = p.stages[0].dependencies[0]
    assert dep.stage is None and dep.image == "busybox:1.36"


def test_from_naming_a_later_stage_is_an_error_at_that_line() -> None:
    with pytest.raises(DockerfileError, match="needs to be defined before") as info:
        plan("""
            FROM scratch AS first
            COPY --from=second /x /x
            FROM alpine AS second
        """)
    assert info.value.line == 2 and info.value.column == len("COPY --from=") + 1
    with pytest.raises(DockerfileError, match="needs to be defined before"):
        plan("""
            FROM scratch
            RUN --mount=from=1,target=/x true
            FROM alpine
        """)


def test_invalid_stage_index() -> None:
    with pytest.raises(DockerfileError, match="invalid stage index 7"):
        plan("FROM scratch\nCOPY --from=7 /x /x\n")


def test_cycles_name_every_stage() -> None:
    with pytest.raises(CircularDependencyError, match="a -> b -> a") as info:
        plan("""
            FROM scratch AS a
            COPY --from=b /x /x
            FROM scratch AS b
            COPY --from=a /y /y
        """)
    assert info.value.stages == ("a", "b")
    with pytest.raises(CircularDependencyError, match="self -> self"):
        plan("FROM scratch AS self\nCOPY --from=self /x /x\n")


NINE = """
    FROM debian AS base
    FROM base AS toolchain
    FROM toolchain AS deps
    FROM deps AS lint
    FROM deps AS test
    FROM deps AS build
    FROM base AS docs
    FROM build AS debug
    COPY --from=docs /d /d
    FROM scratch AS release
    COPY --from=build /out /
    COPY --from=base /etc/app /etc/app
"""


@pytest.mark.parametrize(("target", "reachable", "levels"), [
    (None, (0, 1, 2, 5, 8), ((0,), (1,), (2,), (5,), (8,))),
    ("release", (0, 1, 2, 5, 8), ((0,), (1,), (2,), (5,), (8,))),
    ("DEBUG", (0, 1, 2, 5, 6, 7), ((0,), (1, 6), (2,), (5,), (7,))),
    ("test", (0, 1, 2, 4), ((0,), (1,), (2,), (4,))),
    ("base", (0,), ((0,),)),
])
def test_target_keeps_only_reachable_stages(target: str | None, reachable: tuple,
                                            levels: tuple) -> None:
    p = plan(NINE, target=target)
    assert p.reachable == reachable and p.levels == levels
    for stage in p.stages:
        assert stage.reachable == (stage.index in reachable)
        assert (stage.skip_reason is None) == stage.reachable
        assert (stage.level is None) == (not stage.reachable)


def test_independent_stages_share_a_level() -> None:
    p = plan("""
        FROM alpine AS a
        FROM alpine AS b
        FROM alpine AS c
        FROM scratch
        COPY --from=a / /
        COPY --from=b / /
        COPY --from=c / /
    """)
    assert p.levels == ((0, 1, 2), (3,))


def test_unknown_target_has_a_hint() -> None:
    with pytest.raises(DockerfileError, match="target stage 'relase' could not be found") as info:
        plan(NINE, target="relase")
    assert info.value.hint == "did you mean 'release'?"


def test_unreachable_stages_are_skipped_even_when_they_would_fail() -> None:
    text = """
        FROM alpine AS broken
        COPY ${MISSING:?boom} /x
        FROM alpine AS fine
    """
    p = plan(text, target="fine")
    assert not p.stages[0].reachable and "fine" in (p.stages[0].skip_reason or "")
    with pytest.raises(DockerfileError, match="MISSING: boom"):
        plan(text, target="broken")


def test_onbuild_triggers_of_a_parent_stage_add_dependencies() -> None:
    p = plan("""
        FROM alpine AS assets
        FROM alpine AS parent
        ONBUILD COPY --from=assets /a /a
        FROM parent
    """)
    assert p.stages[2].depends_on == (0, 1)
    assert p.stages[1].depends_on == ()


def test_build_args_reach_from_lines() -> None:
    p = plan("ARG V=1\nFROM alpine:$V\n", build_args={"V": "2"})
    assert p.stages[0].base == "alpine:2"


def test_no_stages_and_blank_base_are_errors() -> None:
    with pytest.raises(DockerfileError, match="no stages to build"):
        plan("ARG A=1\n")
    with pytest.raises(DockerfileError, match="should not be blank"):
        plan("ARG EMPTY=\nFROM ${EMPTY}\n")


def test_json_shape_has_the_fixed_keys() -> None:
    data = plan(NINE, target="debug").to_dict()
    assert data["target"] == 7
    first = data["stages"][0]  # type: ignore[index]
    assert {"index", "name", "base", "depends_on", "reachable"} <= set(first)
    assert first["base"] == "debian" and first["name"] == "base"


def test_warnings_for_duplicate_names_and_unused_build_args() -> None:
    p = plan("FROM a AS x\nFROM b AS x\n", build_args={"NOPE": "1"})
    assert any("'x'" in w for w in p.warnings)
    assert any("NOPE" in w for w in p.warnings)


def test_empty_platform_expression_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="empty platform value") as info:
        plan("ARG P\nFROM --platform=$P alpine\n")
    assert info.value.line == 2
    assert plan("FROM --platform=$BUILDPLATFORM alpine\n",
                build_platform="linux/arm64").stages[0].platform == "linux/arm64"


def test_commands_stay_unexpanded_for_the_build_engine() -> None:
    p = plan("""
        FROM alpine AS parent
        ONBUILD COPY a /a
        FROM parent
        ENV A='$literal' B=x
        COPY $B /dst
    """)
    child = p.stages[1]
    env, copy = child.commands
    assert env.pairs == (("A", "'$literal'"), ("B", "x"))  # type: ignore[attr-defined]
    assert copy.sources == ("$B",)  # type: ignore[attr-defined]
    assert [t.sources for t in child.triggers] == [("a",)]  # type: ignore[attr-defined]
    trig, env_x, copy_x = child.expanded
    assert env_x.pairs == (("A", "$literal"), ("B", "x"))  # type: ignore[attr-defined]
    assert copy_x.sources == ("x",)  # type: ignore[attr-defined]
