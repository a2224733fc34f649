"""Expansion and ARG/ENV scoping, walked step by step as the build engine will walk them."""

from __future__ import annotations

import textwrap

import pytest

from cloche.dockerfile.args import (
    DEFAULT_PATH,
    PROXY_ARGS,
    GlobalScope,
    StageEnv,
    platform_args,
    resolve_global_scope,
)
from cloche.dockerfile.expand import expand_instruction
from cloche.dockerfile.instructions import (
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Onbuild,
    Run,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from cloche.dockerfile.stages import Dockerfile, parse_dockerfile
from cloche.errors import DockerfileError


def parse(text: str) -> Dockerfile:
    return parse_dockerfile(textwrap.dedent(text).lstrip("\n"))


def walk(df: Dockerfile, index: int = 0, build_args: dict | None = None,
         parent: StageEnv | None = None) -> tuple[list[Instruction], StageEnv]:
    scope = resolve_global_scope(df, build_args or {}, target_platform="linux/arm64/v8",
                                 build_platform="linux/amd64")
    env = StageEnv.start(scope, parent=parent)
    out = []
    for instruction in df.stages[index].commands:
        expanded, env = env.apply(instruction)
        out.append(expanded)
    return out, env


def test_expanding_instructions_expand_and_others_do_not() -> None:
    df = parse("""
        FROM scratch
        ENV V=val P=8080 D=/data
        ADD --chown=$V --chmod=0755 --checksum=$V $V.tar /$V/
        COPY --from=$V --chown=${V}:${V} --exclude=*.$V $V /dst/$V
        LABEL "$V"="${V}"
        EXPOSE $P ${P}/udp
        VOLUME $D /x/$V
        USER $V
        WORKDIR /w/$V
        STOPSIGNAL SIG$V
        RUN --mount=type=cache,target=/c/$V,id=$V echo $V
        CMD echo $V
        ENTRYPOINT ["echo", "$V"]
        HEALTHCHECK CMD echo $V
        ONBUILD COPY $V /
        ARG A=$V
    """)
    (_, add, copy, label, expose, volume, user, workdir, stop, run, cmd, entry, health,
     onbuild, arg), _ = walk(df)
    assert isinstance(add, Add) and (add.sources, add.dest, add.chown, add.checksum) == (
        ("val.tar",), "/val/", "val", "val")
    assert isinstance(copy, Copy) and (copy.sources, copy.dest, copy.from_, copy.chown) == (
        ("val",), "/dst/val", "val", "val:val")
    assert copy.excludes == ("*.val",)
    assert isinstance(label, Label) and label.pairs == (("val", "val"),)
    assert isinstance(expose, Expose) and expose.ports == ("8080", "8080/udp")
    assert isinstance(volume, Volume) and volume.paths == ("/data", "/x/val")
    assert isinstance(user, User) and user.user == "val"
    assert isinstance(workdir, Workdir) and workdir.path == "/w/val"
    assert isinstance(stop, StopSignal) and stop.signal == "SIGval"
    assert isinstance(run, Run) and run.command == ("echo $V",)
    assert run.mounts[0].target == "/c/val" and run.mounts[0].id == "val"
    assert isinstance(cmd, Cmd) and cmd.command == ("echo $V",)
    assert isinstance(entry, Entrypoint) and entry.command == ("echo", "$V")
    assert isinstance(health, Healthcheck) and health.test == ("CMD-SHELL", "echo $V")
    assert isinstance(onbuild, Onbuild) and onbuild.trigger.sources == ("$V",)  # type: ignore[attr-defined]
    assert isinstance(arg, Arg) and arg.args[0].default == "val"


def test_env_pairs_see_values_from_before_the_instruction() -> None:
    df = parse("""
        FROM scratch
        ENV a=old
        ENV a=1 b=$a
        ENV c=$a
    """)
    (_, both, after), env = walk(df)
    assert isinstance(both, Env) and both.pairs == (("a", "1"), ("b", "old"))
    assert env.environment == {"PATH": DEFAULT_PATH, "a": "1", "b": "old", "c": "1"}
    assert env.config_env == (("PATH", DEFAULT_PATH), ("a", "1"), ("b", "old"), ("c", "1"))


def test_env_removes_quotes_and_escapes() -> None:
    df = parse("""
        FROM scratch
        ENV name="value value1" other=a\\ b third='x $y'
    """)
    (env_ins,), _ = walk(df)
    assert isinstance(env_ins, Env)
    assert env_ins.pairs == (("name", "value value1"), ("other", "a b"), ("third", "x $y"))


def test_copy_heredoc_expands_unless_the_delimiter_is_quoted() -> None:
    df = parse("""
        FROM scratch
        ENV who=world
        COPY <<EOF /a
        hello "$who"
        EOF
        COPY <<'EOF' /b
        hello $who
        EOF
    """)
    (_, first, second), _ = walk(df)
    assert isinstance(first, Copy) and first.contents[0].content == 'hello "world"\n'
    assert isinstance(second, Copy) and second.contents[0].content == "hello $who\n"


def test_global_args_are_visible_in_from_only() -> None:
    df = parse("""
        ARG IMAGE=alpine
        ARG TAG=3.${MINOR:-19}
        ARG REF=${IMAGE}:${TAG}
        FROM ${REF}
        RUN echo
        COPY ${IMAGE:-none} /x
    """)
    scope = resolve_global_scope(df, {})
    assert scope.expand_from(df.stages[0].from_).image == "alpine:3.19"
    (_, copy), env = walk(df)
    assert isinstance(copy, Copy) and copy.sources == ("none",)
    assert "IMAGE" not in env.environment


def test_arg_without_value_imports_the_global_value() -> None:
    df = parse("""
        ARG VERSION=1.2
        ARG UNSET
        FROM scratch
        ARG VERSION
        ARG UNSET
        COPY v$VERSION/ /x${UNSET-_was_unset}
    """)
    (_, _, copy), env = walk(df)
    assert isinstance(copy, Copy) and copy.sources == ("v1.2/",) and copy.dest == "/x_was_unset"
    assert env.arg_values() == {"VERSION": "1.2"}
    assert env.declared_args == ("VERSION", "UNSET")


def test_arg_is_in_effect_from_its_own_line() -> None:
    df = parse("""
        FROM scratch
        COPY a$X /
        ARG X=1
        COPY b$X /
        ARG X=2 Y=$X
    """)
    (before, _, after, arg), env = walk(df)
    assert before.sources == ("a",) and after.sources == ("b1",)  # type: ignore[attr-defined]
    assert isinstance(arg, Arg) and arg.args[1].default == "1"  # same-line: old value
    assert env.environment == {"PATH": DEFAULT_PATH, "X": "2", "Y": "1"}


def test_an_arg_name_is_never_expanded() -> None:
    """As BuildKit: only the default expands; ``ARG ${src}=x`` declares an ARG literally named
    ``${src}``, so ``$f`` stays empty (issue 11, divergence 3). Meta ARGs alike."""
    df = parse("""
        ARG g=1
        ARG ${g}=meta
        FROM scratch
        ENV src=f
        ARG ${src}=x
        COPY [$f] /
    """)
    (_, arg, copy), env = walk(df)
    assert isinstance(arg, Arg) and arg.args[0].name == "${src}" and arg.args[0].default == "x"
    assert copy.sources == ("[]",)  # type: ignore[attr-defined]
    assert env.environment["${src}"] == "x" and "f" not in env.environment
    scope = resolve_global_scope(df, {}, target_platform="linux/amd64",
                                 build_platform="linux/amd64")
    assert scope.values["${g}"] == "meta" and "1" not in scope.values


def test_build_arg_overrides_defaults_globally_and_in_stages() -> None:
    df = parse("""
        ARG BASE=alpine
        FROM ${BASE}
        ARG MODE=debug
        ARG BASE
        COPY $MODE-$BASE /
    """)
    scope = resolve_global_scope(df, {"BASE": "debian", "MODE": "release"})
    assert scope.expand_from(df.stages[0].from_).image == "debian"
    (_, _, copy), _ = walk(df, build_args={"BASE": "debian", "MODE": "release"})
    assert copy.sources == ("release-debian",)  # type: ignore[attr-defined]
    # an undeclared build arg reaches nothing
    (_, _, copy), env = walk(df, build_args={"OTHER": "x"})
    assert copy.sources == ("debug-alpine",) and "OTHER" not in env.environment  # type: ignore[attr-defined]


def test_env_after_arg_overrides_it_and_arg_never_reaches_the_config() -> None:
    df = parse("""
        FROM scratch
        ARG X=arg
        ENV X=env
        ARG Y=arg
        COPY $X$Y /
    """)
    (*_, copy), env = walk(df)
    assert copy.sources == ("envarg",)  # type: ignore[attr-defined]
    assert env.config_env == (("PATH", DEFAULT_PATH), ("X", "env"))


def test_stage_args_pass_to_child_stages_not_to_siblings() -> None:
    df = parse("""
        FROM scratch AS parent
        ARG P=from-parent
        ENV E=env-parent
        FROM parent AS child
        COPY $P$E /
        FROM scratch AS sibling
        COPY x$P$E /
    """)
    _, parent_env = walk(df, 0)
    (child_copy,), _ = walk(df, 1, parent=parent_env)
    assert child_copy.sources == ("from-parentenv-parent",)  # type: ignore[attr-defined]
    (sibling_copy,), _ = walk(df, 2)
    assert sibling_copy.sources == ("x",)  # type: ignore[attr-defined]


def test_predefined_platform_args() -> None:
    values = platform_args("linux/arm/v7", "linux/amd64")
    assert values == {
        "TARGETPLATFORM": "linux/arm/v7", "TARGETOS": "linux", "TARGETARCH": "arm",
        "TARGETVARIANT": "v7", "BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux",
        "BUILDARCH": "amd64", "BUILDVARIANT": ""}
    df = parse("""
        FROM --platform=$BUILDPLATFORM golang AS build
        ARG TARGETOS TARGETARCH TARGETPLATFORM
        COPY $TARGETOS-$TARGETARCH-$BUILDARCH /
    """)
    scope = resolve_global_scope(df, {}, target_platform="linux/arm64/v8",
                                 build_platform="linux/amd64")
    assert scope.expand_from(df.stages[0].from_).platform == "linux/amd64"
    (_, copy), env = walk(df)
    assert copy.sources == ("linux-arm64-",)  # type: ignore[attr-defined]
    assert env.environment["TARGETPLATFORM"] == "linux/arm64"


def test_proxy_args_need_no_declaration_and_reach_run_only() -> None:
    assert "HTTP_PROXY" in PROXY_ARGS and "no_proxy" in PROXY_ARGS
    df = parse("""
        FROM scratch
        COPY x$HTTP_PROXY /
    """)
    build_args = {"HTTP_PROXY": "http://proxy:3128", "UNDECLARED": "1"}
    (copy,), env = walk(df, build_args=build_args)
    assert copy.sources == ("x",)  # type: ignore[attr-defined]
    assert env.run_environment() == {"PATH": DEFAULT_PATH, "HTTP_PROXY": "http://proxy:3128"}
    scope = resolve_global_scope(df, build_args)
    assert scope.unused_build_args(()) == ("UNDECLARED",)


def test_expansion_errors_point_at_the_instruction() -> None:
    df = parse("""
        FROM scratch
        COPY ${NEEDED:?set-it} /x
    """)
    with pytest.raises(DockerfileError, match="NEEDED: set-it") as info:
        walk(df)
    assert info.value.line == 2 and info.value.column == 6


def test_expand_instruction_leaves_run_body_and_onbuild_alone() -> None:
    df = parse("""
        FROM scratch
        RUN echo ${X:?would fail}
        ONBUILD RUN echo ${X:?would fail}
    """)
    for instruction in df.stages[0].commands:
        assert expand_instruction(instruction, {}) == instruction


def test_global_scope_is_a_value() -> None:
    scope = GlobalScope(values={"A": None, "B": "b"})
    assert scope.from_environment() == {"A": "", "B": "b"}


def test_escape_directive_applies_to_expansion() -> None:
    df = parse_dockerfile("# escape=`\nFROM scratch\nENV A=1\nCOPY C:\\src`$A $A\n")
    (_, copy), _ = walk(df)
    assert isinstance(copy, Copy) and copy.sources == ("C:\\src$A",) and copy.dest == "1"


def test_child_stage_sees_parent_env_over_a_later_parent_arg() -> None:
    # BuildKit re-applies the parent's image Env in the child (checked against the engine)
    df = parse("""
        FROM scratch AS p
        ENV X=env
        ARG X=arg
        COPY f /p-$X
        FROM p
        COPY f /c-$X
    """)
    (_, _, parent_copy), parent_env = walk(df, 0)
    (child_copy,), child_env = walk(df, 1, parent=parent_env)
    assert parent_copy.dest == "/p-arg" and child_copy.dest == "/c-env"  # type: ignore[attr-defined]
    assert "X" in child_env.declared_args


def test_default_path_when_the_base_has_none() -> None:
    df = parse("""
        FROM scratch
        ENV PATH=$PATH:/opt/bin
    """)
    _, env = walk(df)
    assert env.environment["PATH"] == DEFAULT_PATH + ":/opt/bin"
    scope = resolve_global_scope(df, {})
    image_env = StageEnv.start(scope, base_env=(("PATH", "/bin"), ("HOME", "/root")))
    assert image_env.config_env == (("PATH", "/bin"), ("HOME", "/root"))
