"""The part of Go's text/template that `docker inspect --format` users write.

Actions: ``{{.Field.Sub}}`` (``{{.}}`` the current value), functions ``json``, ``index``,
``join``, ``len``, ``lower``, ``upper``, ``title``, ``split``, ``print``, ``println``,
``printf`` (``%s``, ``%d``, ``%v``, ``%q``), pipelines (``{{.Config | json}}``),
``{{range PIPELINE}}...{{else}}...{{end}}``, ``{{if PIPELINE}}...{{else}}...{{end}}``,
``{{with PIPELINE}}...{{end}}`` and trim markers (``{{- ... -}}``). Values print as Go's fmt
prints them (``[a b]``, ``map[k:v]``, ``<no value>`` for a missing key) and ``json`` as
Docker's template function does. The template is parsed once, iteratively (nesting depth is
bounded), and a template error names the position, as Go's does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TemplateError", "render"]

MAX_DEPTH = 64
_TOKEN = re.compile(r'\s*(?:(\|)|("(?:[^"\\]|\\.)*")|(`[^`]*`)|(-?\d+)|(\.[\w.]*|\$[\w.]*)'
                    r'|(\()|(\))|([A-Za-z_]\w*))')


class TemplateError(ValueError):
    """A template that does not parse or cannot run on the value."""


@dataclass
class _Block:
    kind: str  # "root", "range", "if", "with"
    pipeline: str
    body: list[Any] = field(default_factory=list)
    alternative: list[Any] | None = None
    in_else: bool = False

    def add(self, node: Any) -> None:
        (self.alternative if self.in_else and self.alternative is not None
         else self.body).append(node)


def _parse(text: str) -> list[Any]:
    root = _Block("root", "")
    stack = [root]
    pos = 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            stack[-1].add(text[pos:])
            break
        end = text.find("}}", start + 2)
        if end < 0:
            raise TemplateError(f"template: unclosed action at offset {start}")
        literal = text[pos:start]
        action = text[start + 2:end]
        if action.startswith("-"):
            literal = literal.rstrip()
            action = action[1:]
        pos = end + 2
        if action.endswith("-"):
            action = action[:-1]
            pos = len(text) - len(text[pos:].lstrip())
        stack[-1].add(literal)
        action = action.strip()
        word = action.split(None, 1)[0] if action else ""
        rest = action[len(word):].strip()
        if action.startswith("/*"):
            continue
        if word in ("range", "if", "with"):
            if len(stack) >= MAX_DEPTH:
                raise TemplateError("template: nested too deeply")
            block = _Block(word, rest)
            stack[-1].add(block)
            stack.append(block)
        elif word == "else":
            if len(stack) == 1 or stack[-1].in_else:
                raise TemplateError(f"template: unexpected {{{{else}}}} at offset {start}")
            stack[-1].alternative, stack[-1].in_else = [], True
        elif word == "end":
            if len(stack) == 1:
                raise TemplateError(f"template: unexpected {{{{end}}}} at offset {start}")
            stack.pop()
        else:
            stack[-1].add(("action", action))
    if len(stack) > 1:
        raise TemplateError(f"template: unexpected EOF: {{{{{stack[-1].kind}}}}} not ended")
    return root.body


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None or m.end() == pos:
            raise TemplateError(f"template: bad syntax at {expr[pos:]!r}")
        pos = m.end()
        kinds = ("pipe", "string", "raw", "number", "field", "open", "close", "ident")
        kind = next(k for k, g in zip(kinds, m.groups()) if g is not None)
        out.append((kind, m.group(m.lastindex or 0)))
    return out


_MISSING = object()


def _field(value: Any, path: str, dot: Any, root: Any) -> Any:
    current = root if path.startswith("$") else dot
    for name in (p for p in path.lstrip("$").split(".") if p):
        if isinstance(current, dict):
            current = current.get(name, _MISSING) if current is not _MISSING else _MISSING
        else:
            raise TemplateError(f"template: can't evaluate field {name} in type "
                                f"{_go_type(current)}")
        if current is _MISSING:
            return None
    return current


def _go_type(value: Any) -> str:
    return {dict: "map[string]interface {}", list: "[]interface {}", str: "string",
            int: "int", bool: "bool", float: "float64"}.get(type(value), "interface {}")


def format_value(value: Any) -> str:
    """A value as Go's fmt %v prints what docker inspect holds."""
    if value is None or value is _MISSING:
        return "<no value>"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_inner(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_inner(v) for v in value) + "]"
    return str(value)


def _inner(value: Any) -> str:
    return "<nil>" if value is None else format_value(value)


def _printf(fmt: str, *args: Any) -> str:
    values = list(args)

    def one(m: re.Match[str]) -> str:
        verb = m.group(1)
        if verb == "%":
            return "%"
        if not values:
            return f"%!{verb}(MISSING)"
        v = values.pop(0)
        if verb == "q":
            return json.dumps(v if isinstance(v, str) else format_value(v))
        if verb == "d" and isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        return format_value(v)
    return re.sub(r"%([sdvq%])", one, fmt)


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, list) and isinstance(key, int):
            if not 0 <= key < len(value):
                raise TemplateError(f"template: index out of range: {key}")
            value = value[key]
        elif isinstance(value, dict):
            value = value.get(str(key))
        elif value is None:
            return None
        else:
            raise TemplateError(f"template: can't index item of type {_go_type(value)}")
    return value


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


_FUNCS: dict[str, Any] = {
    "json": _json,
    "index": _index,
    "join": lambda items, sep: sep.join(format_value(i) for i in (items or [])),
    "split": lambda s, sep: s.split(sep),
    "len": lambda v: len(v or ()),
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
    "title": lambda s: str(s).title(),
    "print": lambda *a: "".join(format_value(v) for v in a),
    "println": lambda *a: " ".join(format_value(v) for v in a) + "\n",
    "printf": _printf,
}


def _eval(expr: str, dot: Any, root: Any) -> Any:
    tokens = _tokens(expr)
    if not tokens:
        raise TemplateError("template: missing value for command")
    result: Any = _MISSING
    commands: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for token in tokens:
        if token[0] == "pipe" and depth == 0:
            commands.append([])
        else:
            depth += {"open": 1, "close": -1}.get(token[0], 0)
            commands[-1].append(token)
    for command in commands:
        if not command:
            raise TemplateError(f"template: missing command in {expr!r}")
        args = _arguments(command, dot, root)
        if command[0][0] == "ident":
            func = _FUNCS.get(command[0][1])
            if func is None:
                raise TemplateError(f'template: function "{command[0][1]}" not defined')
            call = args[1:] + ([] if result is _MISSING else [result])
            try:
                result = func(*call)
            except TypeError as e:
                raise TemplateError(f"template: wrong arguments for {command[0][1]}: {e}") from e
        elif len(args) == 1 and result is _MISSING:
            result = args[0]
        else:
            raise TemplateError(f"template: can't give argument to non-function {expr!r}")
    return result


def _arguments(command: list[tuple[str, str]], dot: Any, root: Any) -> list[Any]:
    args: list[Any] = []
    i = 0
    while i < len(command):
        kind, text = command[i]
        if kind == "open":
            depth, j = 1, i + 1
            while j < len(command) and depth:
                depth += {"open": 1, "close": -1}.get(command[j][0], 0)
                j += 1
            inner = " ".join(t for _, t in command[i + 1:j - 1])
            args.append(_eval(inner, dot, root))
            i = j
            continue
        if kind == "string":
            args.append(json.loads(text))
        elif kind == "raw":
            args.append(text[1:-1])
        elif kind == "number":
            args.append(int(text))
        elif kind == "field":
            args.append(dot if text == "." else _field(None, text, dot, root))
        elif kind == "ident":
            args.append(text if i == 0 else _FUNCS.get(text, text))
        else:
            raise TemplateError(f"template: unexpected {text!r}")
        i += 1
    return args


def _truth(value: Any) -> bool:
    return value not in (None, _MISSING, False, 0, "", [], {})


def _run(nodes: list[Any], dot: Any, root: Any, out: list[str]) -> None:
    # an explicit stack: (nodes, index, dot); blocks push their bodies
    stack: list[tuple[list[Any], int, Any]] = [(nodes, 0, dot)]
    while stack:
        items, i, here = stack.pop()
        if i >= len(items):
            continue
        stack.append((items, i + 1, here))
        node = items[i]
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, tuple):
            value = _eval(node[1], here, root)
            out.append(value if isinstance(value, str) else format_value(value))
        else:
            value = _eval(node.pipeline, here, root)
            if node.kind == "range":
                seq = list(value.values()) if isinstance(value, dict) else (value or [])
                if seq:
                    for item in reversed(seq):
                        stack.append((node.body, 0, item))
                elif node.alternative:
                    stack.append((node.alternative, 0, here))
            elif _truth(value):
                stack.append((node.body, 0, value if node.kind == "with" else here))
            elif node.alternative:
                stack.append((node.alternative, 0, here))


def render(template: str, value: Any) -> str:
    """``template`` applied to ``value`` (a JSON-like document)."""
    nodes = _parse(template)
    out: list[str] = []
    _run(nodes, value, value, out)
    return "".join(out)
