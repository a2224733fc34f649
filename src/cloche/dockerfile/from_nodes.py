"""Syntax nodes to typed instructions, with BuildKit's checks.

Each builder validates one instruction's flags (against BuildKit's stable set), its argument
count and the values that can be checked before anything runs (durations, mount specs,
network and security modes, stage names), and raises a located DockerfileError otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from cloche.dockerfile.flags import FlagKind, error_at, parse_duration, parse_flags
from cloche.dockerfile.instructions import (
    INSTRUCTIONS,
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
    Instruction,
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
from cloche.dockerfile.mounts import parse_mount
from cloche.dockerfile.node import Heredoc, Node, SyntaxTree
from cloche.errors import DockerfileError, did_you_mean

__all__ = ["FLAGS", "build_instruction", "parse_trigger"]

_Builder = Callable[[Node, SyntaxTree | None], Instruction]
S, SS, B = FlagKind.STRING, FlagKind.STRINGS, FlagKind.BOOL
FLAGS: dict[str, dict[str, FlagKind]] = {
    "from": {"platform": S},
    "run": {"mount": SS, "network": S, "security": S},
    "copy": {"from": S, "chown": S, "chmod": S, "link": B, "parents": B, "exclude": SS},
    "add": {"chown": S, "chmod": S, "link": B, "checksum": S, "keep-git-dir": B, "exclude": SS},
    "healthcheck": {"interval": S, "timeout": S, "start-period": S, "start-interval": S,
                    "retries": S},
}
NETWORK_MODES = ("default", "none", "host")
SECURITY_MODES = ("sandbox", "insecure")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_CHMOD = re.compile(r"^([0-7]{1,4}|([ugoa]*[-+=][rwxXst]*)(,[ugoa]*[-+=][rwxXst]*)*)$")


def _fail(node: Node, tree: SyntaxTree | None, message: str, **kw: object) -> DockerfileError:
    return error_at(node, tree, message, **kw)  # type: ignore[arg-type]


def _exactly_one(node: Node, tree: SyntaxTree | None) -> str:
    if len(node.args) != 1:
        raise _fail(node, tree, f"{node.keyword.upper()} requires exactly one argument")
    return node.args[0]


def _at_least_one(node: Node, tree: SyntaxTree | None) -> None:
    if not node.args:
        raise _fail(node, tree, f"{node.keyword.upper()} requires at least one argument")


def _pairs(node: Node, tree: SyntaxTree | None) -> tuple[tuple[str, str], ...]:
    _at_least_one(node, tree)
    if len(node.args) % 3:
        raise _fail(node, tree, f"{node.keyword.upper()}: bad key/value arguments")
    pairs = tuple((node.args[i], node.args[i + 1]) for i in range(0, len(node.args), 3))
    for key, _ in pairs:
        if not key:
            raise _fail(node, tree, f"{node.keyword.upper()} names can not be blank")
    return pairs


def _from(node: Node, tree: SyntaxTree | None) -> From:
    flags = parse_flags(node, FLAGS["from"], tree)
    args = node.args
    if len(args) not in (1, 3):
        raise _fail(node, tree, "FROM requires either one or three arguments",
                    hint="FROM [--platform=P] IMAGE [AS NAME]")
    name = None
    if len(args) == 3:
        if args[1].lower() != "as":
            raise _fail(node, tree, f"FROM: expected 'AS', found {args[1]!r}", needle=args[1])
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise _fail(node, tree, f"invalid name for build stage: {args[2]!r}, name can't "
                        "start with a number or contain symbols", needle=args[2])
    platform = flags.string("platform")
    return From(node=node, image=args[0], name=name, platform=platform or None)


def _run(node: Node, tree: SyntaxTree | None) -> Run:
    flags = parse_flags(node, FLAGS["run"], tree)
    if not node.args and not node.heredocs:
        raise _fail(node, tree, "RUN requires at least one argument")
    network, security = flags.string("network"), flags.string("security")
    if network is not None and network not in NETWORK_MODES:
        raise _fail(node, tree, f"unsupported network mode {network!r}", needle="--network",
                    hint=f"use one of {', '.join(NETWORK_MODES)}")
    if security is not None and security not in SECURITY_MODES:
        raise _fail(node, tree, f"unsupported security mode {security!r}", needle="--security",
                    hint=f"use one of {', '.join(SECURITY_MODES)}")
    mounts = []
    for spec in flags.strings("mount"):
        try:
            mounts.append(parse_mount(spec))
        except DockerfileError as err:
            raise _fail(node, tree, f"--mount={spec}: {err.message}", needle=spec,
                        hint=err.hint) from None
    return Run(node=node, command=node.args, shell_form=not node.json, mounts=tuple(mounts),
               network=network, security=security, heredocs=node.heredocs)


def _command(cls: type[Cmd] | type[Entrypoint]) -> _Builder:
    def build(node: Node, tree: SyntaxTree | None) -> Cmd | Entrypoint:
        parse_flags(node, {}, tree)
        if not node.args and not node.json:
            raise _fail(node, tree, f"{node.keyword.upper()} requires at least one argument")
        return cls(node=node, command=node.args, shell_form=not node.json)
    return build


def _split_sources(node: Node, tree: SyntaxTree | None) -> tuple[tuple[str, ...], tuple[Heredoc, ...], str]:
    keyword = node.keyword.upper()
    if len(node.args) < 2:
        raise _fail(node, tree, f"{keyword} requires at least two arguments, but only one was "
                    "provided. Destination could not be determined.")
    *sources, dest = node.args
    paths, contents = [], []
    heredocs = list(node.heredocs)
    for source in sources:
        if source.startswith("<<") and heredocs:
            contents.append(heredocs.pop(0))
        else:
            paths.append(source)
    return tuple(paths), tuple(contents), dest


def _check_chmod(node: Node, tree: SyntaxTree | None, chmod: str | None) -> None:
    if chmod is not None and "$" not in chmod and not _CHMOD.match(chmod):
        raise _fail(node, tree, f"invalid --chmod value {chmod!r}", needle="--chmod",
                    hint="use an octal mode such as 0755 or a symbolic one such as u+x,g-w")


def _copy(node: Node, tree: SyntaxTree | None) -> Copy:
    flags = parse_flags(node, FLAGS["copy"], tree)
    paths, contents, dest = _split_sources(node, tree)
    _check_chmod(node, tree, flags.string("chmod"))
    source_stage = flags.string("from")
    if source_stage == "":
        raise _fail(node, tree, "COPY --from needs a stage name, index or image",
                    needle="--from")
    return Copy(node=node, sources=paths, contents=contents, dest=dest,
                chown=flags.string("chown"), chmod=flags.string("chmod"),
                link=flags.boolean("link"), excludes=flags.strings("exclude"),
                from_=source_stage, parents=flags.boolean("parents"))


def _add(node: Node, tree: SyntaxTree | None) -> Add:
    flags = parse_flags(node, FLAGS["add"], tree)
    paths, contents, dest = _split_sources(node, tree)
    _check_chmod(node, tree, flags.string("chmod"))
    return Add(node=node, sources=paths, contents=contents, dest=dest,
               chown=flags.string("chown"), chmod=flags.string("chmod"),
               link=flags.boolean("link"), excludes=flags.strings("exclude"),
               checksum=flags.string("checksum"), keep_git_dir=flags.boolean("keep-git-dir"))


def _env(node: Node, tree: SyntaxTree | None) -> Env:
    parse_flags(node, {}, tree)
    return Env(node=node, pairs=_pairs(node, tree))


def _label(node: Node, tree: SyntaxTree | None) -> Label:
    parse_flags(node, {}, tree)
    return Label(node=node, pairs=_pairs(node, tree))


def _arg(node: Node, tree: SyntaxTree | None) -> Arg:
    parse_flags(node, {}, tree)
    _at_least_one(node, tree)
    defs = []
    for word in node.args:
        name, sep, default = word.partition("=")
        if not name:
            raise _fail(node, tree, "ARG names can not be blank", needle=word)
        defs.append(ArgDef(name, default if sep else None))
    return Arg(node=node, args=tuple(defs))


def _expose(node: Node, tree: SyntaxTree | None) -> Expose:
    parse_flags(node, {}, tree)
    _at_least_one(node, tree)
    return Expose(node=node, ports=node.args)


def _volume(node: Node, tree: SyntaxTree | None) -> Volume:
    parse_flags(node, {}, tree)
    _at_least_one(node, tree)
    paths = tuple(p.strip() for p in node.args)
    if any(not p for p in paths):
        raise _fail(node, tree, "VOLUME specified can not be an empty string")
    return Volume(node=node, paths=paths)


def _single(cls: type[Instruction], attr: str) -> _Builder:
    def build(node: Node, tree: SyntaxTree | None) -> Instruction:
        parse_flags(node, {}, tree)
        return cls(node=node, **{attr: _exactly_one(node, tree)})
    return build


def _shell(node: Node, tree: SyntaxTree | None) -> Shell:
    parse_flags(node, {}, tree)
    if not node.args:
        raise _fail(node, tree, "SHELL requires at least one argument")
    if not node.json:
        raise _fail(node, tree, "SHELL requires the arguments to be in JSON form",
                    hint='SHELL ["/bin/sh", "-c"]')
    return Shell(node=node, shell=node.args)


def _duration(node: Node, tree: SyntaxTree | None, name: str, value: str | None) -> int:
    if not value:
        return 0
    try:
        nanos = parse_duration(value)
    except ValueError:
        raise _fail(node, tree, f"HEALTHCHECK --{name}: invalid duration {value!r}",
                    needle=f"--{name}", hint="use a duration such as 30s, 1m30s or 500ms") from None
    if nanos < 0:
        raise _fail(node, tree, f"Interval --{name} cannot be negative", needle=f"--{name}")
    if 0 < nanos < 1_000_000:
        raise _fail(node, tree, f"Interval --{name} cannot be less than 1ms", needle=f"--{name}")
    return nanos


def _healthcheck(node: Node, tree: SyntaxTree | None) -> Healthcheck:
    flags = parse_flags(node, FLAGS["healthcheck"], tree)
    _at_least_one(node, tree)
    kind, rest = node.args[0].upper(), node.args[1:]
    if kind == "NONE":
        if rest:
            raise _fail(node, tree, "HEALTHCHECK NONE takes no arguments")
        return Healthcheck(node=node, test=("NONE",))
    if kind != "CMD":
        raise _fail(node, tree, f"Unknown type {node.args[0]!r} in HEALTHCHECK (try CMD)",
                    needle=node.args[0])
    if not rest:
        raise _fail(node, tree, "Missing command after HEALTHCHECK CMD")
    test = ("CMD", *rest) if node.json else ("CMD-SHELL", rest[0])
    retries_text = flags.string("retries")
    retries = 0
    if retries_text:
        try:
            retries = int(retries_text)
        except ValueError:
            raise _fail(node, tree, f"HEALTHCHECK --retries: invalid number {retries_text!r}",
                        needle="--retries") from None
        if retries < 0:
            raise _fail(node, tree, f"--retries cannot be negative ({retries})",
                        needle="--retries")
    return Healthcheck(
        node=node, test=test, retries=retries,
        interval=_duration(node, tree, "interval", flags.string("interval")),
        timeout=_duration(node, tree, "timeout", flags.string("timeout")),
        start_period=_duration(node, tree, "start-period", flags.string("start-period")),
        start_interval=_duration(node, tree, "start-interval", flags.string("start-interval")),
    )


def _onbuild(node: Node, tree: SyntaxTree | None) -> Onbuild:
    parse_flags(node, {}, tree)
    child = node.child
    if child is None:
        raise _fail(node, tree, "ONBUILD requires at least one argument")
    if child.keyword in ("onbuild", "maintainer", "from"):
        raise _fail(node, tree, f"{child.keyword.upper()} isn't allowed as an ONBUILD trigger",
                    needle=child.keyword.upper() if tree else None)
    trigger = build_instruction(child, tree)
    expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original)
    return Onbuild(node=node, trigger=trigger, expression=expression)


_BUILDERS: dict[str, _Builder] = {
    "from": _from, "run": _run, "cmd": _command(Cmd), "entrypoint": _command(Entrypoint),
    "copy": _copy, "add": _add, "env": _env, "arg": _arg, "label": _label, "expose": _expose,
    "volume": _volume, "user": _single(User, "user"), "workdir": _single(Workdir, "path"),
    "shell": _shell, "stopsignal": _single(StopSignal, "signal"),
    "healthcheck": _healthcheck, "onbuild": _onbuild,
    "maintainer": _single(Maintainer, "maintainer"),
}


def build_instruction(node: Node, tree: SyntaxTree | None = None) -> Instruction:
    """The typed instruction for ``node``; DockerfileError (located) when it is invalid."""
    builder = _BUILDERS.get(node.keyword.lower())
    if builder is None:
        raise _fail(node, tree, f"unknown instruction: {node.keyword.upper()}",
                    hint=did_you_mean(node.keyword.upper(), INSTRUCTIONS))
    return builder(node, tree)


def parse_trigger(text: str, file: str = "ONBUILD trigger", line: int | None = None,
                  source_line: str | None = None) -> Instruction:
    """One ONBUILD trigger from an image config (``"RUN make"``) as a typed instruction.

    A base image's config is input like any other: BuildKit parses each stored trigger as a
    one-line Dockerfile, and the checks of the Dockerfile's own ONBUILD apply (no ONBUILD,
    FROM or MAINTAINER as a trigger; every instruction's own checks). A trigger has no line
    of its own in the Dockerfile being built, so ``line`` (the FROM line that runs it) and
    ``source_line`` locate both the instruction and any error about it.
    """
    from dataclasses import replace

    from cloche.dockerfile.parser import parse

    try:
        tree = parse(text, file=file)
        if len(tree.nodes) != 1:
            raise DockerfileError(f"onbuild trigger should be a single expression: {text!r}",
                                  file=file)
        node = tree.nodes[0]
        if node.keyword in ("onbuild", "maintainer", "from"):
            raise _fail(node, tree, f"{node.keyword.upper()} isn't allowed as an ONBUILD trigger")
        if line is None:
            return build_instruction(node, tree)
        return build_instruction(replace(node, start_line=line, end_line=line), None)
    except DockerfileError as err:
        if line is None:
            raise
        raise DockerfileError(f"ONBUILD trigger {text[:200]!r} of the base image: {err.message}",
                              file=file, line=line, source_line=source_line,
                              hint=err.hint) from None
