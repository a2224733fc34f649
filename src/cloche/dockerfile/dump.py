"""Print a ``SyntaxTree``: BuildKit's test format (``dump``) and Dockerfile text (``to_dockerfile``).

``dump`` writes what BuildKit's parser tests compare against, one instruction a line:
``(copy ["--from=builder"] "/app" "/app")``: the lower-cased instruction, the flags as a Go
``%q`` slice, then each argument Go-quoted; ONBUILD nests its instruction in parentheses.

``to_dockerfile`` renders a tree back to a Dockerfile that parses to the same tree (same
``dump``): flags are re-quoted, exec form is written as JSON, heredoc bodies follow their
instruction, and the escape directive is kept. Comments are written above their instruction.
"""

from __future__ import annotations

import json
import re

from cloche.dockerfile._parse_args import KNOWN
from cloche.dockerfile._parse_words import GO_SPACES, go_quote
from cloche.dockerfile.node import Node, SyntaxTree

__all__ = ["dump", "dump_node", "go_quote", "to_dockerfile"]


def dump_node(node: Node) -> str:
    """One instruction in BuildKit's s-expression form, without the outer parentheses."""
    text = node.keyword
    if node.flags:
        text += " [" + " ".join(go_quote(f) for f in node.flags) + "]"
    if node.child is not None:
        text += " (" + dump_node(node.child) + ")"
    for arg in node.args:
        text += " " + go_quote(arg)
    return text.lstrip(" ")  # an empty instruction word (a lone "\\" at the end) prints as ("")


def dump(tree: SyntaxTree) -> str:
    """The whole tree, one ``(instruction ...)`` a line, as in BuildKit's ``result`` files."""
    return "".join(f"({dump_node(node)})\n" for node in tree.nodes)


# --- back to Dockerfile text -------------------------------------------------------------

def _flag(flag: str, escape: str) -> str:
    body = flag[2:]
    if not any(ch in GO_SPACES or ch in "'\"" or ch == escape for ch in body):
        return flag
    quoted = "".join(escape + ch if ch in ('"', escape) else ch for ch in body)
    return '--"' + quoted + '"'


def _exec_form(args: tuple[str, ...]) -> str:
    return json.dumps(list(args))


def _arguments(node: Node) -> str:
    """The argument text of a known instruction, such that it reads back to ``node.args``."""
    kw, args = node.keyword, node.args
    if node.json and kw != "healthcheck":
        return _exec_form(args)
    if kw in ("env", "label"):
        triples = [args[i:i + 3] for i in range(0, len(args), 3)]
        if len(triples) == 1 and triples[0][2] == "":
            return f"{triples[0][0]} {triples[0][1]}"
        return " ".join(f"{k}={v}" for k, v, _ in triples)
    if kw == "healthcheck":
        if not args:
            return ""
        if node.json:
            return f"{args[0]} {_exec_form(args[1:])}"
        return " ".join(args)
    if kw in ("add", "copy", "volume") and args and args[0].startswith("["):
        # these words did not form valid JSON; \v between them keeps it so (JSON forbids \v)
        return "\v".join(args)
    return " ".join(args)


def _instruction(node: Node, escape: str) -> str:
    if node.keyword == "":
        return escape  # only a continuation that ran into the end of the file makes this
    if node.keyword not in KNOWN:
        return node.original
    head = node.keyword.upper()
    if node.flags:
        head += " " + " ".join(_flag(f, escape) for f in node.flags)
    if node.keyword == "onbuild":
        rest = _instruction(node.child, escape) if node.child is not None else ""
    else:
        rest = _arguments(node)
    if rest.startswith("--"):
        rest = "-- " + rest
    return f"{head} {rest}" if rest else head


def _line(node: Node, escape: str) -> str:
    """The instruction line, guarded so that a final escape character does not continue it."""
    line = _instruction(node, escape)
    if node.keyword == "":
        return line
    continuation = re.compile(rf"(^|[^{re.escape(escape)}]){re.escape(escape)}[ \t]*\Z")
    if continuation.search(line):
        # The arguments end with the escape token: BuildKit saw it followed by a Unicode
        # space that trimming removed. Put such a space back so it reads the same.
        guard = "\u00a0"
        if node.heredocs and node.heredocs[-1].name[-1:] in GO_SPACES:
            guard = node.heredocs[-1].name[-1]
        line += guard
    return line


def to_dockerfile(tree: SyntaxTree) -> str:
    """Dockerfile text for ``tree``; ``parse`` of it gives a tree with the same ``dump``."""
    out: list[str] = []
    d = tree.directives
    if d.syntax is not None:
        out.append(f"# syntax={d.syntax}")
    if d.escape != "\\":
        out.append(f"# escape={d.escape}")
    if d.check is not None:
        out.append(f"# check={d.check}")
    out.append("")  # a blank line ends the directives: comments below stay comments
    for node in tree.nodes:
        out.extend(f"# {c}" for c in node.comments)
        out.append(_line(node, d.escape))
        for doc in node.heredocs:
            out.append(doc.content + doc.name)
    return "\n".join(out) + "\n"
