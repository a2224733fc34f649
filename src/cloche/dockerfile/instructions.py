"""Typed instructions: one frozen dataclass per Dockerfile instruction.

This is BuildKit's ``instructions`` layer as values: the words as written, flags validated,
durations and mount specs parsed. ``cloche.dockerfile.from_nodes`` builds them from syntax
nodes and checks what can be checked without running anything. Variables are *not* expanded
here: BuildKit expands at dispatch time with the stage's environment, and so does cloche (see
``cloche.dockerfile.args``). Every instruction keeps its ``Node`` for its location, heredocs
and original text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloche.dockerfile.mounts import Mount
from cloche.dockerfile.node import Heredoc, Node

__all__ = [
    "Instruction", "From", "Run", "Cmd", "Entrypoint", "Copy", "Add", "Env", "ArgDef", "Arg",
    "Label", "Expose", "Volume", "User", "Workdir", "Shell", "StopSignal", "Healthcheck",
    "Onbuild", "Maintainer", "INSTRUCTIONS",
]

INSTRUCTIONS = ("FROM", "RUN", "CMD", "ENTRYPOINT", "COPY", "ADD", "ENV", "ARG", "LABEL",
                "EXPOSE", "VOLUME", "USER", "WORKDIR", "SHELL", "STOPSIGNAL", "HEALTHCHECK",
                "ONBUILD", "MAINTAINER")

@dataclass(frozen=True, kw_only=True)
class Instruction:
    """Fields common to every instruction: the syntax node it came from."""

    node: Node = field(repr=False, compare=False)

    @property
    def keyword(self) -> str:
        return self.node.keyword

    @property
    def line(self) -> int:
        return self.node.start_line

    @property
    def original(self) -> str:
        return self.node.original


@dataclass(frozen=True, kw_only=True)
class From(Instruction):
    image: str
    name: str | None = None
    platform: str | None = None


@dataclass(frozen=True, kw_only=True)
class _CommandLine(Instruction):
    """RUN, CMD, ENTRYPOINT: exec form (``shell_form`` False) or one shell string."""

    command: tuple[str, ...] = ()
    shell_form: bool = True


@dataclass(frozen=True, kw_only=True)
class Run(_CommandLine):
    mounts: tuple[Mount, ...] = ()
    network: str | None = None
    security: str | None = None
    heredocs: tuple[Heredoc, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Cmd(_CommandLine):
    pass


@dataclass(frozen=True, kw_only=True)
class Entrypoint(_CommandLine):
    pass


@dataclass(frozen=True, kw_only=True)
class _SourcesAndDest(Instruction):
    """COPY and ADD: ``sources`` are paths/URLs; ``contents`` are heredoc files (name = path)."""

    sources: tuple[str, ...] = ()
    contents: tuple[Heredoc, ...] = ()
    dest: str = ""
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    excludes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Copy(_SourcesAndDest):
    from_: str | None = None
    parents: bool = False


@dataclass(frozen=True, kw_only=True)
class Add(_SourcesAndDest):
    checksum: str | None = None
    keep_git_dir: bool = False


@dataclass(frozen=True, kw_only=True)
class Env(Instruction):
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ArgDef:
    """``NAME`` or ``NAME=default`` (default kept unexpanded, quotes included)."""

    name: str
    default: str | None = None


@dataclass(frozen=True, kw_only=True)
class Arg(Instruction):
    args: tuple[ArgDef, ...]


@dataclass(frozen=True, kw_only=True)
class Label(Instruction):
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True)
class Expose(Instruction):
    ports: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Volume(Instruction):
    paths: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class User(Instruction):
    user: str


@dataclass(frozen=True, kw_only=True)
class Workdir(Instruction):
    path: str


@dataclass(frozen=True, kw_only=True)
class Shell(Instruction):
    shell: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class StopSignal(Instruction):
    signal: str


@dataclass(frozen=True, kw_only=True)
class Healthcheck(Instruction):
    """``test`` as in the image config: ("NONE",), ("CMD", *argv) or ("CMD-SHELL", cmd).
    Durations are nanoseconds (0 = the engine's default); ``retries`` 0 = default."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True, kw_only=True)
class Onbuild(Instruction):
    trigger: Instruction
    expression: str


@dataclass(frozen=True, kw_only=True)
class Maintainer(Instruction):
    maintainer: str
