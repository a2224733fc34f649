"""Typed instructions from real parsed Dockerfiles: values, flags, argument counts, errors."""

from __future__ import annotations

import textwrap

import pytest

from cloche.dockerfile.instructions import (
    Add,
    Arg,
    ArgDef,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from cloche.dockerfile.mounts import Mount
from cloche.dockerfile.stages import Dockerfile, parse_dockerfile
from cloche.errors import DockerfileError


def parse(text: str) -> Dockerfile:
    return parse_dockerfile(textwrap.dedent(text).lstrip("\n"), file="Dockerfile.test")


def only(text: str):
    return parse("FROM scratch\n" + textwrap.dedent(text).lstrip("\n")).stages[0].commands[0]


def fails(text: str, match: str) -> DockerfileError:
    with pytest.raises(DockerfileError, match=match) as info:
        parse("FROM scratch\n" + textwrap.dedent(text).lstrip("\n"))
    return info.value


def test_every_instruction_has_its_type() -> None:
    df = parse("""
        ARG V=1
        FROM --platform=linux/amd64 alpine:3 AS Builder
        RUN echo hi
        CMD ["a", "b"]
        ENTRYPOINT /bin/sh
        COPY --from=x --chown=1:2 --chmod=0755 --link a b /dst/
        ADD --checksum=sha256:abc --keep-git-dir=true https://x/y.tar /y
        ENV A=1 B="two words"
        ARG X Y=2
        LABEL a=b
        EXPOSE 80/tcp 443
        VOLUME ["/data", "/logs"]
        USER app:app
        WORKDIR /src
        SHELL ["/bin/bash", "-c"]
        STOPSIGNAL SIGTERM
        HEALTHCHECK --interval=1m30s --retries=3 CMD curl -f http://localhost/
        ONBUILD COPY . /app
        MAINTAINER someone
    """)
    assert df.meta_args[0].args == (ArgDef("V", "1"),)
    stage = df.stages[0]
    assert (stage.name, stage.base, stage.platform, stage.index) == (
        "builder", "alpine:3", "linux/amd64", 0)
    kinds = [type(c) for c in stage.commands]
    assert kinds == [Run, Cmd, Entrypoint, Copy, Add, Env, Arg, Label, Expose, Volume, User,
                     Workdir, Shell, StopSignal, Healthcheck, Onbuild, Maintainer]
    run, cmd, entry, copy, add, env, arg, label, expose, volume, user, workdir, shell, \
        stop, health, onbuild, maint = stage.commands
    assert run.command == ("echo hi",) and run.shell_form
    assert cmd.command == ("a", "b") and not cmd.shell_form
    assert entry.shell_form
    assert copy.sources == ("a", "b") and copy.dest == "/dst/" and copy.from_ == "x"
    assert (copy.chown, copy.chmod, copy.link, copy.parents) == ("1:2", "0755", True, False)
    assert add.checksum == "sha256:abc" and add.keep_git_dir and not add.link
    assert env.pairs == (("A", "1"), ("B", '"two words"'))
    assert arg.args == (ArgDef("X"), ArgDef("Y", "2"))
    assert label.pairs == (("a", "b"),)
    assert expose.ports == ("80/tcp", "443")
    assert volume.paths == ("/data", "/logs")
    assert (user.user, workdir.path, stop.signal) == ("app:app", "/src", "SIGTERM")
    assert shell.shell == ("/bin/bash", "-c")
    assert health.test == ("CMD-SHELL", "curl -f http://localhost/")
    assert (health.interval, health.retries) == (90_000_000_000, 3)
    assert isinstance(onbuild.trigger, Copy) and onbuild.expression == "COPY . /app"
    assert maint.maintainer == "someone"
    assert run.line == 3 and run.node.original.startswith("RUN")


def test_instruction_keeps_its_node_and_heredocs() -> None:
    copy = only("""
        COPY <<EOF /etc/motd
        hello $USER
        EOF
    """)
    assert isinstance(copy, Copy)
    assert copy.sources == () and copy.dest == "/etc/motd"
    assert copy.contents[0].name == "EOF" and copy.contents[0].content == "hello $USER\n"
    assert (copy.node.start_line, copy.node.end_line) == (2, 4)


def test_healthcheck_none_and_exec_form() -> None:
    assert only("HEALTHCHECK NONE").test == ("NONE",)
    assert only('HEALTHCHECK --timeout=3s CMD ["check", "-q"]').test == ("CMD", "check", "-q")
    assert only('HEALTHCHECK --timeout=3s CMD ["check"]').timeout == 3_000_000_000


def test_run_mounts_are_typed() -> None:
    run = only("RUN --mount=type=cache,target=/root/.cache,sharing=locked,id=go "
               "--mount=type=secret,id=tok,required --mount=type=bind,from=builder,"
               "source=/out,target=/in,rw --mount=type=tmpfs,target=/t,size=64m "
               "--mount=type=ssh --network=none make")
    assert isinstance(run, Run) and run.network == "none"
    cache, secret, bind, tmpfs, ssh = run.mounts
    assert cache == Mount(type="cache", target="/root/.cache", sharing="locked", id="go",
                          readonly=False, spec=cache.spec)
    assert secret.type == "secret" and secret.id == "tok" and secret.required and secret.readonly
    assert (bind.from_, bind.source, bind.target, bind.readonly) == ("builder", "/out", "/in", False)
    assert tmpfs.size == 64 * 1024 * 1024 and not tmpfs.readonly
    assert ssh.type == "ssh" and ssh.target is None


@pytest.mark.parametrize(("line", "message"), [
    ("RUN --mount=type=nfs,target=/x true", "unsupported mount type"),
    ("RUN --mount=type=cache true", "mount target required"),
    ("RUN --mount=type=bind,target=/x,mode=0700 true", "mode not allowed"),
    ("RUN --mount=type=cache,target=/x,sharing=maybe true", "unsupported sharing value"),
    ("RUN --mount=type=bind,target=/x,sharing=locked true", "invalid cache sharing"),
    ("RUN --mount=type=secret,id=a,from=b true", "should not have a from"),
    ("RUN --mount=type=cache,target=/x,uid=me true", "invalid value me for uid"),
    ("RUN --mount=type=cache,target=/x,size=1g true", "unexpected key 'size'"),
    ("RUN --mount=type=bind,target=/x,bogus=1 true", "unexpected key 'bogus'"),
    ("RUN --mount=type=bind,target=/x,required true", "unexpected key 'required'"),
    ("RUN --mount=type=bind,target=/x,noequals true", "must be a key=value pair"),
    ("RUN --network=bridge true", "unsupported network mode"),
    ("RUN --security=yes true", "unsupported security mode"),
])
def test_bad_run_flags(line: str, message: str) -> None:
    err = fails(line, message)
    assert err.line == 2 and err.file == "Dockerfile.test"


@pytest.mark.parametrize(("line", "message", "hint"), [
    ("COPY --chwon=1 a b", "unknown flag for COPY: --chwon", "--chown"),
    ("ADD --from=x a b", "unknown flag for ADD: --from", None),
    ("RUN --mnt=type=cache,target=/x true", "unknown flag for RUN: --mnt", "--mount"),
    ("HEALTHCHECK --interva=5s CMD true", "unknown flag for HEALTHCHECK", "--interval"),
    ("ENV --x=1 a=b", "unknown flag for ENV: --x", None),
])
def test_unknown_flag_points_at_it_with_a_hint(line: str, message: str, hint: str | None) -> None:
    err = fails(line, message)
    flag = line.split()[1].split("=")[0]
    assert err.line == 2 and err.column == line.index(flag) + 1
    assert err.source_line is not None and flag in err.source_line
    if hint:
        assert err.hint is not None and hint in err.hint
    assert "^" in err.render() and "Dockerfile.test:2:" in err.render()


@pytest.mark.parametrize(("line", "message"), [
    ("COPY --link=maybe a b", "expecting boolean value for flag --link"),
    ("COPY --link= a b", "missing a value on flag: --link"),
    ("COPY --from a b", "missing a value on flag: --from"),
    ("COPY --chown=1 --chown=2 a b", "duplicate flag specified: --chown"),
    ("COPY --chmod=999 a b", "invalid --chmod value"),
    ("COPY onlyone", "requires at least two arguments"),
    ("ADD onlyone", "requires at least two arguments"),
    ("HEALTHCHECK --interval=5 CMD true", "invalid duration"),
    ("HEALTHCHECK --interval=100us CMD true", "cannot be less than 1ms"),
    ("HEALTHCHECK --retries=-1 CMD true", "cannot be negative"),
    ("HEALTHCHECK --retries=x CMD true", "invalid number"),
    ("HEALTHCHECK NONE extra", "takes no arguments"),
    ("HEALTHCHECK CMD", "Missing command"),
    ("HEALTHCHECK PING x", "Unknown type"),
    ("SHELL /bin/sh -c", "requires the arguments to be in JSON form"),
    ("ONBUILD ONBUILD RUN x", "isn't allowed as an ONBUILD trigger"),
    ("ONBUILD FROM alpine", "isn't allowed as an ONBUILD trigger"),
    ("ONBUILD MAINTAINER me", "isn't allowed as an ONBUILD trigger"),
    ("ONBUILD COPY --chwon=1 a b", "unknown flag for COPY"),
    ("EXPOSE", "requires at least one argument|EXPOSE"),
    ("ARG =x", "ARG names can not be blank"),
])
def test_invalid_values_and_counts(line: str, message: str) -> None:
    assert fails(line, message).line == 2


def test_from_argument_count_and_stage_name() -> None:
    with pytest.raises(DockerfileError, match="one or three arguments"):
        parse("FROM a b")
    with pytest.raises(DockerfileError, match="expected 'AS'"):
        parse("FROM a IS b")
    with pytest.raises(DockerfileError, match="invalid name for build stage"):
        parse("FROM a AS 1st")
    with pytest.raises(DockerfileError, match="unknown flag for FROM: --platfrom") as info:
        parse("FROM --platfrom=linux/amd64 a")
    assert info.value.hint and "--platform" in info.value.hint


def test_misspelled_instruction_has_a_hint() -> None:
    with pytest.raises(DockerfileError, match="unknown instruction: CPOY") as info:
        parse_dockerfile("FROM scratch\n  CPOY a b\n")
    err = info.value
    assert err.hint == "did you mean 'COPY'?" and (err.line, err.column) == (2, 3)


def test_instruction_before_from_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="no build stage") as info:
        parse("ARG A=1\nRUN true\nFROM scratch")
    assert info.value.line == 2


def test_meta_args_and_stage_grouping() -> None:
    df = parse("""
        ARG A=1
        ARG B
        FROM a AS One
        RUN x
        FROM b
        RUN y
        RUN z
    """)
    assert [a.args for a in df.meta_args] == [(ArgDef("A", "1"),), (ArgDef("B"),)]
    assert [(s.index, s.name, s.display_name, len(s.commands)) for s in df.stages] == [
        (0, "one", "one", 1), (1, None, "stage-1", 2)]
    assert df.find_stage("ONE") is df.stages[0]
    assert isinstance(df.stages[1].from_, From) and df.stages[1].line == 5


def test_instructions_are_frozen_values() -> None:
    env = only("ENV A=1")
    assert isinstance(env, Env)
    with pytest.raises(AttributeError):
        env.pairs = ()  # type: ignore[misc]
    assert only("ENV A=1") == env  # equal by value, the node is not compared


def test_parse_trigger_from_an_image_config() -> None:
    from cloche.dockerfile.from_nodes import parse_trigger

    trigger = parse_trigger("COPY --chown=app . /src")
    assert isinstance(trigger, Copy) and trigger.chown == "app" and trigger.dest == "/src"
    with pytest.raises(DockerfileError, match="isn't allowed as an ONBUILD trigger"):
        parse_trigger("FROM alpine")
    with pytest.raises(DockerfileError, match="single expression"):
        parse_trigger("RUN a\nRUN b")
    # located at the FROM line that runs it: the trigger has no line in the Dockerfile
    located = parse_trigger("RUN make", "Dockerfile", 7, "FROM base")
    assert located.line == 7
    with pytest.raises(DockerfileError, match="ONBUILD isn't allowed") as info:
        parse_trigger("ONBUILD RUN x", "Dockerfile", 7, "FROM base")
    assert (info.value.file, info.value.line, info.value.source_line) == (
        "Dockerfile", 7, "FROM base")


def test_mount_size_and_durations() -> None:
    from cloche.dockerfile.flags import parse_duration
    from cloche.dockerfile.mounts import parse_size

    assert parse_size("1024") == 1024 and parse_size("1k") == 1024
    assert parse_size("1.5g") == 1536 * 1024 * 1024 and parse_size("10MiB") == 10 * 1024**2
    assert parse_duration("1h2m3.5s") == 3_723_500_000_000 and parse_duration("0") == 0
    assert parse_duration("250ms") == 250_000_000 and parse_duration("-1s") == -1_000_000_000
    for bad in ("", "5", "s", "1x", "1.s.", "1m5"):
        with pytest.raises(ValueError):
            parse_duration(bad)
