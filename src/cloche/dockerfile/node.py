"""The syntax tree of a Dockerfile: one frozen ``Node`` per instruction, with its line range.

This is the contract between the parser (cloche.dockerfile.parser) and everything above it.
The shape follows BuildKit's parser.Node so that ``dump()`` can print BuildKit's test format.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Heredoc:
    """One heredoc body attached to an instruction (``<<EOF`` ... ``EOF``).

    ``expand`` is False when the delimiter was quoted (``<<'EOF'`` / ``<<"EOF"``);
    ``chomp`` is True for ``<<-EOF`` (leading tabs already stripped from ``content``).
    ``content`` ends with a newline when the body had lines.
    """

    name: str
    content: str
    expand: bool = True
    chomp: bool = False


@dataclass(frozen=True)
class Node:
    """One instruction.

    keyword:    lower-cased instruction name ("from", "run", "onbuild"...)
    args:       BuildKit's argument list: the words of exec form, one string for shell form,
                key/value/"=" triples for ENV and LABEL, as in BuildKit's ``result`` files
    flags:      the ``--name=value`` flags as written, e.g. ("--from=builder",)
    json:       True for exec (JSON array) form
    original:   the instruction's text with continuation lines joined, as BuildKit keeps it
    start_line / end_line: 1-based line range in the file (heredoc bodies included)
    heredocs:   heredoc bodies, in the order their ``<<`` markers appear
    child:      for ONBUILD, the nested instruction
    comments:   the comment lines directly above the instruction (without '#')
    """

    keyword: str
    args: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    json: bool = False
    original: str = ""
    start_line: int = 0
    end_line: int = 0
    heredocs: tuple[Heredoc, ...] = ()
    child: Node | None = None
    comments: tuple[str, ...] = ()


@dataclass(frozen=True)
class Directives:
    """Parser directives at the top of the file (``# syntax=``, ``# escape=``, ``# check=``)."""

    syntax: str | None = None
    escape: str = "\\"
    check: str | None = None


@dataclass(frozen=True)
class SyntaxTree:
    """A parsed Dockerfile: its instructions, directives and source lines (for error carets)."""

    nodes: tuple[Node, ...]
    directives: Directives = field(default_factory=Directives)
    file: str = "Dockerfile"
    lines: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def source_line(self, line: int) -> str | None:
        """The text of 1-based ``line``, or None when out of range."""
        return self.lines[line - 1] if 0 < line <= len(self.lines) else None
