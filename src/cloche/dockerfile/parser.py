"""Dockerfile text -> ``SyntaxTree``, reading it exactly as BuildKit's parser does.

The reading is line based, as in BuildKit (moby/buildkit frontend/dockerfile/parser):

1. Each line is split off at ``\\n`` only (``\\r\\n`` endings are trimmed later). Leading
   whitespace is dropped from the first line of an instruction, not from continuation lines.
2. Directives are looked for until the first line that is not one (see directives.py).
3. A comment line is skipped; its text is kept for the next instruction (``Node.comments``).
4. A line ending in the escape character (plus spaces/tabs) continues on the next line;
   comment lines and blank lines inside a continuation are skipped (blank ones with a warning).
5. The joined line is split into the instruction word, its ``--flags`` and the arguments,
   which are read according to the instruction (_parse_args.py).
6. For RUN, COPY and ADD in shell form (also under ONBUILD), heredoc markers on the line
   make the following lines heredoc bodies, one after the other (heredoc.py).

Errors are ``DockerfileError`` leaves with the file, line, column and source line.
"""

from __future__ import annotations

import dataclasses
import re

from cloche.dockerfile import _parse_args
from cloche.dockerfile._parse_errors import (
    DockerfileSyntaxError,
    EmptyDockerfileError,
    HeredocError,
    LineTooLongError,
)
from cloche.dockerfile._parse_words import split_command, trim_left_space, trim_space
from cloche.dockerfile.directives import DirectiveScanner, directives_for
from cloche.dockerfile.heredoc import chomp_tabs, heredocs_in_line
from cloche.dockerfile.node import Heredoc, Node, SyntaxTree
from cloche.errors import DockerfileError

__all__ = ["parse", "MAX_LINE_BYTES", "MAX_ONBUILD_DEPTH"]

MAX_LINE_BYTES = 65535  # bufio.Scanner's limit in BuildKit
MAX_ONBUILD_DEPTH = 32  # ONBUILD ONBUILD ... is rejected later anyway; this bounds recursion


def _continuation_regex(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    # The escape token at the end (then spaces/tabs) continues the line, unless the
    # character before it is itself the escape token; alone on a line it continues too.
    return re.compile(rf"([^{e}]){e}[ \t]*\Z|^{e}[ \t]*\Z", re.DOTALL)


def _is_comment(line: str) -> bool:
    return trim_left_space(line).startswith("#")


def _trim_newline(line: str) -> str:
    return line.rstrip("\r\n")


class _Reader:
    """The state of one parse: lines, position, escape token, directives."""

    def __init__(self, text: str, file: str) -> None:
        self.file = file
        self.raw = text.split("\n")
        # keep the line endings, as BuildKit's scanner does (heredoc bodies need them)
        self.raw = [ln + "\n" for ln in self.raw[:-1]] + ([self.raw[-1]] if self.raw[-1] else [])
        if self.raw and self.raw[0].startswith("\ufeff"):
            self.raw[0] = self.raw[0][1:]
        self.source = tuple(_trim_newline(ln) for ln in self.raw)
        self.pos = 0
        self.escape = "\\"
        self.continuation = _continuation_regex(self.escape)
        self.directives = DirectiveScanner()

    def error(self, err: DockerfileError, line: int, column: int | None = None) -> DockerfileError:
        source = self.source[line - 1] if 0 < line <= len(self.source) else None
        if column is None and source is not None:
            column = len(source) - len(trim_left_space(source)) + 1
            token = getattr(err, "token", None)
            if token:
                found = source.find(token)
                if found >= 0:
                    column = found + 1
        return err.with_location(file=self.file, line=line, column=column, source_line=source)

    def next_line(self) -> str | None:
        if self.pos >= len(self.raw):
            return None
        line = self.raw[self.pos]
        self.pos += 1
        if len(_trim_newline(line).encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
            raise self.error(LineTooLongError(  # shown cut: the caret block stays one screen
                f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES}",
                source_line=_trim_newline(line)[:100] + " ..."), self.pos, 1)
        return line

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        """(line without the continuation token, whether the instruction ends here)."""
        m = self.continuation.search(line)
        if m is None:
            return line, True
        return line[:m.start()] + (m.group(1) or ""), False


def _node_from_line(line: str, escape: str, depth: int = 0) -> Node:
    cmd, flags, rest = split_command(line, escape)
    keyword = cmd.lower()
    child = None
    if keyword == "onbuild":
        args: tuple[str, ...] = ()
        is_json = False
        if rest:
            if depth >= MAX_ONBUILD_DEPTH:
                raise DockerfileSyntaxError("ONBUILD instructions nested too deeply")
            child = _node_from_line(rest, escape, depth + 1)
    else:
        reader = _parse_args.READERS.get(keyword, _parse_args.ignore)
        args, is_json = reader(rest, escape)
    return Node(keyword=keyword, args=args, flags=tuple(flags), json=is_json, original=line,
                child=child)


def _can_contain_heredoc(node: Node) -> bool:
    target = node.child if node.keyword == "onbuild" and node.child is not None else node
    return target.keyword in _parse_args.HEREDOC_INSTRUCTIONS and not target.json


def parse(text: str, file: str = "Dockerfile") -> SyntaxTree:
    """Parse Dockerfile ``text``; ``file`` names it in errors.

    Raises DockerfileError (a leaf from _parse_errors) with file, line and column for text
    that BuildKit's parser rejects: no instruction at all, a repeated or invalid directive,
    ENV/LABEL without a value, exec form with a non-string element, an unterminated heredoc.
    """
    r = _Reader(text, file)
    nodes: list[Node] = []
    comments: list[str] = []
    warnings: list[str] = []
    while (raw := r.next_line()) is not None:
        lineno = r.pos
        if _is_comment(raw):
            comment = trim_space(trim_left_space(raw)[1:])
            comments = comments + [comment] if comment else []
        token = trim_left_space(_trim_newline(raw))
        try:
            directive = r.directives.feed(token, lineno)
        except DockerfileError as e:
            raise r.error(e, lineno) from None
        if directive is not None:
            if comments:
                comments.pop()
            if directive[0] == "escape":
                r.escape = directive[1]
                r.continuation = _continuation_regex(r.escape)
        if _is_comment(token):
            token = ""
        line, ended = r.trim_continuation(token)
        if ended and line == "":
            continue
        start = lineno
        parts = [line]
        empty_continuation = False
        while not ended and (raw := r.next_line()) is not None:
            if _is_comment(raw):
                continue
            piece = _trim_newline(raw)
            if trim_left_space(piece) == "":
                empty_continuation = True
                continue
            piece, ended = r.trim_continuation(piece)
            parts.append(piece)
        line = "".join(parts)
        if empty_continuation:
            warnings.append(f"{file}:{r.pos}: Empty continuation line found in: {line}")
        try:
            node = _node_from_line(line, r.escape)
        except DockerfileError as e:
            raise r.error(e, start) from None
        heredocs: list[Heredoc] = []
        if _can_contain_heredoc(node) and "<<" in line:
            try:
                markers = heredocs_in_line(line)
            except DockerfileError as e:
                raise r.error(e, start) from None
            for marker in markers:
                body: list[str] = []
                while (raw := r.next_line()) is not None:
                    candidate = _trim_newline(raw)
                    if marker.chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == marker.name:
                        break
                    body.append(raw)
                else:
                    src = r.source[start - 1]
                    column = src.find("<<") + 1 or None
                    raise r.error(HeredocError(f"unterminated heredoc {marker.name!r}",
                                               name=marker.name), start, column)
                content = "".join(body)
                heredocs.append(Heredoc(name=marker.name,
                                        content=chomp_tabs(content) if marker.chomp else content,
                                        expand=marker.expand, chomp=marker.chomp))
        docs = tuple(heredocs)
        child = node.child
        if child is not None:
            child = dataclasses.replace(child, start_line=start, end_line=r.pos,
                                        heredocs=docs if _can_contain_heredoc(node) else ())
        nodes.append(dataclasses.replace(node, start_line=start, end_line=r.pos, heredocs=docs,
                                         child=child, comments=tuple(comments)))
        comments = []
    if not nodes:
        err = EmptyDockerfileError("file with no instructions",
                                   hint="a Dockerfile needs at least a FROM instruction")
        raise err.with_location(file=file, line=r.pos or None)
    return SyntaxTree(nodes=tuple(nodes), directives=directives_for(text, r.escape), file=file,
                      lines=r.source, warnings=tuple(warnings))
