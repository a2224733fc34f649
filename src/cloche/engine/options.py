"""Build options: what `cloche build` and `cloche.build()` accept, parsed and validated.

The flags have the names and meanings of ``docker buildx build``; each parser here turns one
flag's text into a value and raises ConfigError naming the flag when the text is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cloche.errors import ConfigError, InvalidReferenceError

OUTPUT_TYPES = ("oci", "docker", "local", "tar", "image", "registry")
NETWORK_MODES = ("default", "none", "host")
PROGRESS_MODES = ("auto", "tty", "plain", "quiet")


@dataclass(frozen=True)
class OutputSpec:
    """One ``--output`` (``-o``): ``type=oci,dest=out.tar,name=app:1,push=true``."""

    type: str
    dest: str | None = None
    names: tuple[str, ...] = ()
    push: bool = False
    attrs: tuple[tuple[str, str], ...] = ()

    def attr(self, key: str, default: str | None = None) -> str | None:
        return dict(self.attrs).get(key, default)


@dataclass(frozen=True)
class SecretSpec:
    """One ``--secret id=ID,src=PATH|env=VAR``; never holds the secret's value."""

    id: str
    src: str | None = None
    env: str | None = None


@dataclass(frozen=True)
class BuildOptions:
    """Everything a build needs besides the Dockerfile and the context."""

    context: str = "."
    dockerfile: str | None = None  # path, "-" for stdin text given in dockerfile_text
    dockerfile_text: str | None = None
    tags: tuple[str, ...] = ()
    target: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[SecretSpec, ...] = ()
    ssh: tuple[str, ...] = ()
    platform: str | None = None
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()  # stage names whose steps skip the cache
    pull: bool = False
    network: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    outputs: tuple[OutputSpec, ...] = ()
    push: bool = False
    iidfile: str | None = None
    metadata_file: str | None = None
    jobs: int = 0  # 0: the number of cores
    root: Path | None = None  # store root; None: $CLOCHE_ROOT or the default

    def __post_init__(self) -> None:
        # Names are checked before anything runs: a typo in -t must not cost a whole build.
        for name in self.tags:
            check_name(name, "--tag")
        for spec in self.outputs:
            for name in spec.names:
                check_name(name, "--output name=")

    @property
    def job_count(self) -> int:
        return self.jobs if self.jobs > 0 else (os.cpu_count() or 2)


def _split_csv(text: str, flag: str) -> list[tuple[str, str]]:
    """``a=b,c=d`` into pairs; a bare word is a (key, "") pair."""
    pairs = []
    for item in (part for part in _csv_fields(text) if part):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not key:
            raise ConfigError(f"{flag}: empty key in {text!r}")
        pairs.append((key, value if sep else ""))
    return pairs


def _csv_fields(text: str) -> list[str]:
    """Comma-separated fields, where a double-quoted field may contain commas (as buildx)."""
    fields: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise ConfigError(f"unterminated quote in {text!r}")
    fields.append("".join(current))
    return fields


def parse_output(text: str) -> OutputSpec:
    """Parse ``--output``; a bare path means ``type=local,dest=PATH`` as buildx does."""
    if "=" not in text and "," not in text:
        if text == "-":
            return OutputSpec(type="tar", dest="-")
        return OutputSpec(type="local", dest=text)
    pairs = _split_csv(text, "--output")
    attrs = dict(pairs)
    kind = attrs.pop("type", None)
    if kind is None:
        raise ConfigError(f"--output {text!r}: missing type= (one of {', '.join(OUTPUT_TYPES)})")
    if kind not in OUTPUT_TYPES:
        raise ConfigError(f"--output {text!r}: unknown type {kind!r} "
                          f"(one of {', '.join(OUTPUT_TYPES)})")
    dest = attrs.pop("dest", None)
    names = tuple(n for n in attrs.pop("name", "").split(",") if n)
    push = attrs.pop("push", "false").lower() in ("true", "1", "")
    if kind == "registry":
        kind, push = "image", True
    if kind in ("oci", "docker", "local", "tar") and not dest:
        raise ConfigError(f"--output {text!r}: type={kind} needs dest=PATH")
    return OutputSpec(type=kind, dest=dest, names=names, push=push,
                      attrs=tuple(sorted(attrs.items())))


def parse_secret(text: str) -> SecretSpec:
    """Parse ``--secret``: ``id=ID,src=PATH``, ``id=ID,env=VAR`` or ``id=ID`` (env var ID)."""
    attrs = dict(_split_csv(text, "--secret"))
    secret_id = attrs.pop("id", None)
    src = attrs.pop("src", None) or attrs.pop("source", None)
    env = attrs.pop("env", None)
    attrs.pop("type", None)
    if not secret_id:
        raise ConfigError(f"--secret {text!r}: missing id=")
    if attrs:
        raise ConfigError(f"--secret {text!r}: unknown key {sorted(attrs)[0]!r} "
                          "(want id, src or env)")
    if src is None and env is None:
        env = secret_id
    return SecretSpec(id=secret_id, src=src, env=env)


def parse_key_values(items: Iterable[str], flag: str, *, from_env: bool = False) -> dict[str, str]:
    """``K=V`` items into a dict; with ``from_env`` a bare ``K`` takes the environment's value
    (as ``--build-arg K`` does) and is left out when the environment has none."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise ConfigError(f"{flag} {item!r}: want KEY=VALUE")
        if not sep:
            if not from_env:
                raise ConfigError(f"{flag} {item!r}: want KEY=VALUE")
            if key not in os.environ:
                continue
            value = os.environ[key]
        result[key] = value
    return result


def check_name(name: str, flag: str) -> None:
    """Raise InvalidReferenceError (naming the flag) unless ``name`` can name an image."""
    from cloche.store.store import canonical_name

    try:
        canonical_name(name)
    except InvalidReferenceError as err:
        raise InvalidReferenceError(f"{flag} {name!r}: {err.message}", hint=err.hint) from None


def check_choice(value: str, choices: Iterable[str], flag: str) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{flag} {value!r}: want one of {', '.join(choices)}")
    return value
