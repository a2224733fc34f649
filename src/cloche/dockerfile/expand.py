"""Which parts of which instruction BuildKit expands, and the expansion itself.

BuildKit expands ``${...}`` at dispatch time, in the words of ADD, COPY, ENV, EXPOSE, FROM,
LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR and ARG, in the flags of COPY/ADD (``--from``,
``--chown``, ``--chmod``, ``--checksum``, ``--exclude``) and RUN ``--mount``, and in the
bodies of COPY/ADD heredocs whose delimiter is unquoted. RUN, CMD, ENTRYPOINT, SHELL and
HEALTHCHECK are left to the shell of the container (exec form gets no expansion at all);
ONBUILD is expanded when its trigger runs, as the triggered instruction. Every part of one
instruction sees the same environment: the one from before the instruction, which is why
``ENV a=1 b=$a`` gives ``b`` the old value of ``a``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from cloche.dockerfile.flags import error_at
from cloche.dockerfile.instructions import (
    Add,
    Arg,
    ArgDef,
    Copy,
    Env,
    Expose,
    From,
    Instruction,
    Label,
    Run,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from cloche.dockerfile.mounts import parse_mount
from cloche.dockerfile.node import SyntaxTree
from cloche.dockerfile.shell import expand_heredoc, expand_word, expand_words
from cloche.errors import DockerfileError

__all__ = ["expand_instruction", "EXPANDING_INSTRUCTIONS"]

EXPANDING_INSTRUCTIONS = frozenset({"add", "copy", "env", "expose", "from", "label", "stopsignal",
                                    "user", "volume", "workdir", "arg", "run"})


def expand_instruction(
    instruction: Instruction, env: Mapping[str, str], *, escape: str = "\\",
    tree: SyntaxTree | None = None,
) -> Instruction:
    """``instruction`` with its expandable parts expanded in ``env``.

    Instructions that do not expand come back unchanged. A failing expansion is a
    DockerfileError located at the instruction (and at the word, when it can be found).
    """
    current = ""

    def word(text: str) -> str:
        nonlocal current
        current = text
        return expand_word(text, env, escape)

    def opt(text: str | None) -> str | None:
        return None if text is None else word(text)

    try:
        return _expand(instruction, word, opt, env, escape)
    except DockerfileError as err:
        raise error_at(instruction.node, tree, f"{instruction.keyword.upper()}: {err.message}",
                       needle=current or None, hint=err.hint) from None


def _expand(
    ins: Instruction, word: Callable[[str], str], opt: Callable[[str | None], str | None],
    env: Mapping[str, str], escape: str,
) -> Instruction:
    replace = dataclasses.replace
    if isinstance(ins, From):
        return replace(ins, image=word(ins.image), platform=opt(ins.platform))
    if isinstance(ins, (Copy, Add)):
        contents = tuple(
            replace(h, content=expand_heredoc(h.content, env, escape)) if h.expand else h
            for h in ins.contents)
        changes: dict[str, object] = dict(
            sources=tuple(word(s) for s in ins.sources), dest=word(ins.dest),
            chown=opt(ins.chown), chmod=opt(ins.chmod), contents=contents,
            excludes=tuple(word(e) for e in ins.excludes))
        if isinstance(ins, Copy):
            changes["from_"] = opt(ins.from_)
        else:
            changes["checksum"] = opt(ins.checksum)
        return replace(ins, **changes)
    if isinstance(ins, (Env, Label)):
        return replace(ins, pairs=tuple((word(k), word(v)) for k, v in ins.pairs))
    if isinstance(ins, Arg):
        # the default only: BuildKit never expands an ARG's name (``ARG ${x}=1`` names "${x}")
        return replace(ins, args=tuple(ArgDef(a.name, opt(a.default)) for a in ins.args))
    if isinstance(ins, Expose):
        ports: list[str] = []
        for port in ins.ports:
            ports.extend(expand_words(port, env, escape))
        return replace(ins, ports=tuple(ports))
    if isinstance(ins, Volume):
        return replace(ins, paths=tuple(word(p) for p in ins.paths))
    if isinstance(ins, User):
        return replace(ins, user=word(ins.user))
    if isinstance(ins, Workdir):
        return replace(ins, path=word(ins.path))
    if isinstance(ins, StopSignal):
        return replace(ins, signal=word(ins.signal))
    if isinstance(ins, Run) and ins.mounts:
        return replace(ins, mounts=tuple(parse_mount(m.spec, word) for m in ins.mounts))
    return ins
