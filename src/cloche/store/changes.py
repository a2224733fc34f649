"""``--change`` instructions of ``docker import``: Dockerfile lines that only set the config.

``docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]'`` accepts CMD, ENTRYPOINT, ENV,
EXPOSE, LABEL, USER, VOLUME, WORKDIR, ONBUILD and STOPSIGNAL, with the Dockerfile meaning of
each. They are applied here to the ``config`` object of an image configuration (the JSON
dictionary with ``Env``, ``Cmd``...), in order, each seeing the environment the previous ones
left, as the builder would. The front end's parser is not used because a change is always one
line with no continuation, heredoc or stage; the word rules (quotes, backslashes, ``$VAR``
expansion) are BuildKit's for these instructions.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable
from typing import Any

from cloche.errors import ConfigError

ALLOWED = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER",
           "VOLUME", "WORKDIR")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class ChangeError(ConfigError):
    """A ``--change`` instruction that docker import would refuse."""

    def __init__(self, change: str, why: str) -> None:
        super().__init__(f"invalid --change {change!r}: {why}",
                         hint="allowed instructions: " + ", ".join(ALLOWED))
        self.change = change


def apply_changes(config: dict[str, Any], changes: Iterable[str]) -> dict[str, Any]:
    """A new config dictionary with every change applied in order (the input is not changed)."""
    out = json.loads(json.dumps(config))
    cmd_set = False
    for change in changes:
        cmd_set = _apply(out, change, cmd_set)
    return out


def _apply(config: dict[str, Any], change: str, cmd_set: bool) -> bool:
    """Apply one change; returns whether CMD has been set by the changes so far."""
    text = change.strip()
    keyword, _, rest = text.partition(" ")
    keyword, rest = keyword.upper(), rest.strip()
    if keyword not in ALLOWED:
        raise ChangeError(change, f"{keyword or 'empty'} cannot be used with import")
    env = _env_dict(config)
    if keyword in ("CMD", "ENTRYPOINT"):
        key = "Cmd" if keyword == "CMD" else "Entrypoint"
        config[key] = _command(rest, change)
        if keyword == "CMD":
            return True
        if not cmd_set:
            config["Cmd"] = None  # a new ENTRYPOINT resets an inherited CMD, as the builder does
    elif keyword == "ENV":
        pairs = _pairs(rest, change, env, legacy_ok=True)
        for k, v in pairs:
            env[k] = v
        config["Env"] = [f"{k}={v}" for k, v in env.items()]
    elif keyword == "LABEL":
        labels = dict(config.get("Labels") or {})
        labels.update(_pairs(rest, change, env, legacy_ok=True))
        config["Labels"] = labels
    elif keyword == "EXPOSE":
        ports = dict(config.get("ExposedPorts") or {})
        for word in _words(rest, change, env):
            port, _, proto = word.partition("/")
            proto = (proto or "tcp").lower()
            if not re.fullmatch(r"\d+(-\d+)?", port) or proto not in ("tcp", "udp", "sctp"):
                raise ChangeError(change, f"invalid port {word!r}")
            ports[f"{port}/{proto}"] = {}
        config["ExposedPorts"] = ports
    elif keyword == "USER":
        words = _words(rest, change, env)
        if len(words) != 1:
            raise ChangeError(change, "USER takes exactly one argument")
        config["User"] = words[0]
    elif keyword == "VOLUME":
        vols = dict(config.get("Volumes") or {})
        items = _json_list(rest) if _is_json_list(rest) else _words(rest, change, env)
        if not items or any(not v for v in items):
            raise ChangeError(change, "VOLUME needs at least one non-empty path")
        for v in items:
            vols[_expand(v, env) if _is_json_list(rest) else v] = {}
        config["Volumes"] = vols
    elif keyword == "WORKDIR":
        words = _words(rest, change, env)
        if len(words) != 1:
            raise ChangeError(change, "WORKDIR takes exactly one argument")
        base = config.get("WorkingDir") or "/"
        config["WorkingDir"] = posixpath.normpath(posixpath.join(base, words[0]))
    elif keyword == "STOPSIGNAL":
        words = _words(rest, change, env)
        if len(words) != 1 or not re.fullmatch(r"(SIG)?[A-Z0-9+-]+|\d+", words[0]):
            raise ChangeError(change, "STOPSIGNAL takes one signal name or number")
        config["StopSignal"] = words[0]
    elif keyword == "ONBUILD":
        inner = rest.partition(" ")[0].upper()
        if not rest or inner in ("ONBUILD", "FROM", "MAINTAINER"):
            raise ChangeError(change, f"ONBUILD {inner or '(empty)'} is not allowed")
        config["OnBuild"] = list(config.get("OnBuild") or []) + [rest]
    return cmd_set


def _env_dict(config: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    return env


def _is_json_list(text: str) -> bool:
    return _json_list(text) is not None


def _json_list(text: str) -> list[str] | None:
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _command(rest: str, change: str) -> list[str]:
    exec_form = _json_list(rest)
    if exec_form is not None:
        return exec_form
    if not rest:
        raise ChangeError(change, "missing command")
    return ["/bin/sh", "-c", rest]


def _expand(text: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


def _words(text: str, change: str, env: dict[str, str]) -> list[str]:
    """Split on unquoted blanks; quotes group, backslash escapes, $VAR expands outside '...'."""
    words: list[str] = []
    cur: list[str] = []
    started = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            if started:
                words.append("".join(cur))
                cur, started = [], False
            i += 1
            continue
        started = True
        if c == "\\" and i + 1 < n:
            cur.append(text[i + 1])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ChangeError(change, "unterminated single quote")
            cur.append(text[i + 1:end])
            i = end + 1
        elif c == '"':
            j, part = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n and text[j + 1] in '"\\$':
                    part.append(text[j + 1])
                    j += 2
                    continue
                part.append(text[j])
                j += 1
            if j >= n:
                raise ChangeError(change, "unterminated double quote")
            cur.append(_expand("".join(part), env))
            i = j + 1
        elif c == "$":
            m = _VAR.match(text, i)
            if m:
                cur.append(env.get(m.group(1) or m.group(2), ""))
                i = m.end()
            else:
                cur.append(c)
                i += 1
        else:
            cur.append(c)
            i += 1
    if started:
        words.append("".join(cur))
    return words


def _pairs(text: str, change: str, env: dict[str, str], *,
           legacy_ok: bool) -> list[tuple[str, str]]:
    """``k=v k2="v 2"`` pairs, or the legacy ``ENV key value with spaces`` form.

    Values see the environment from before the line, as ``ENV a=1 b=$a`` does in BuildKit.
    """
    words = _words(text, change, env)
    if not words:
        raise ChangeError(change, "missing key=value")
    if "=" not in words[0]:
        if not legacy_ok or len(words) < 2:
            raise ChangeError(change, "want key=value")
        key, _, value = text.strip().partition(" ")
        return [(key, " ".join(_words(value.strip(), change, env)))]
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise ChangeError(change, f"{word!r} is not key=value")
        pairs.append((key, value))
    return pairs
