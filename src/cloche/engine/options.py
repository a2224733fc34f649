"""Build options: what `cloche build` and `cloche.build()` accept, parsed and validated.

The flags have the names and meanings of ``docker buildx build``; each parser here turns one
flag's text into a value and raises ConfigError naming the flag when the text is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cloche.errors import ConfigError, InvalidReferenceError, did_you_mean
from cloche.sandbox.limits import (
    DEFAULT_PIDS_LIMIT,
    DEFAULT_SHM_SIZE,
    ULIMIT_NAMES,
    UNLIMITED,
    Limits,
    Ulimit,
)

OUTPUT_TYPES = ("oci", "docker", "local", "tar", "image", "registry")
NETWORK_MODES = ("default", "none", "host")
PROGRESS_MODES = ("auto", "tty", "plain", "quiet")
# what ``--allow`` grants (BuildKit's names); cloche.plan.entitlements checks the steps
ENTITLEMENTS = ("network.host", "security.insecure")


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
    # entitlements the caller grants RUN steps (``--allow``): network.host, security.insecure
    allow: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    outputs: tuple[OutputSpec, ...] = ()
    push: bool = False
    iidfile: str | None = None
    metadata_file: str | None = None
    jobs: int = 0  # 0: the number of cores
    root: Path | None = None  # store root; None: $CLOCHE_ROOT or the default
    # what each RUN step may use (sandbox/limits.py); None: the default. cloche.build()
    # also takes the flags' text: memory="512m", shm_size="128m", ulimits=["nofile=1024"]
    pids_limit: int | None = None  # --pids-limit; 0 or -1: unlimited
    memory: int | None = None  # --memory, bytes
    ulimits: tuple[Ulimit, ...] = ()  # --ulimit
    shm_size: int | None = None  # --shm-size, bytes

    def __post_init__(self) -> None:
        # Names are checked before anything runs: a typo in -t must not cost a whole build.
        for name in self.tags:
            check_name(name, "--tag")
        for spec in self.outputs:
            for name in spec.names:
                check_name(name, "--output name=")
        # a list or a string from cloche.build(); "a,b" as buildx reads --allow
        given = (self.allow,) if isinstance(self.allow, str) else self.allow
        object.__setattr__(self, "allow", tuple(
            part.strip() for item in given for part in item.split(",") if part.strip()))
        check_entitlements(self.allow, self.network)
        _normalize_limits(self)

    @property
    def job_count(self) -> int:
        return self.jobs if self.jobs > 0 else (os.cpu_count() or 2)

    def limits(self) -> Limits:
        """What each RUN step may use; limits given explicitly must be enforced."""
        required = frozenset(name for name, given in (("pids", self.pids_limit is not None),
                                                      ("memory", self.memory is not None))
                             if given)
        pids = DEFAULT_PIDS_LIMIT if self.pids_limit is None else (
            self.pids_limit if self.pids_limit > 0 else None)
        return Limits(pids=pids, memory=self.memory, ulimits=self.ulimits,
                      shm_size=DEFAULT_SHM_SIZE if self.shm_size is None else self.shm_size,
                      required=required)


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


def check_entitlements(allow: Iterable[str], network: str) -> None:
    """``--allow`` names known entitlements, and ``--network=host`` is one of them (as for
    ``RUN --network=host``: the host's network is the caller's to give, plan/entitlements.py).
    """
    allow = tuple(allow)
    for name in allow:
        if name not in ENTITLEMENTS:
            raise ConfigError(f"--allow {name!r}: unknown entitlement",
                              hint=did_you_mean(name, ENTITLEMENTS)
                              or f"use one of {', '.join(ENTITLEMENTS)}")
    if network == "host" and "network.host" not in allow:
        raise ConfigError("--network=host needs --allow network.host",
                          hint="the host's network (its loopback services, its traffic) is "
                               "given to RUN steps only with --allow network.host")


def check_choice(value: str, choices: Iterable[str], flag: str) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{flag} {value!r}: want one of {', '.join(choices)}")
    return value


# -- resource limits: --pids-limit, --memory, --ulimit, --shm-size (sandbox/limits.py) -----

MIN_MEMORY = 6 * 1024 * 1024  # Docker's minimum for --memory
_RAM_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_ram_size(text: str, flag: str) -> int:
    """``512m``, ``1g``, ``1.5GiB``, ``1048576`` as bytes: Docker's RAMInBytes (binary units,
    an optional ``b`` or ``ib``), as ``--memory`` and ``--shm-size`` read them."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?) ?([kmgtp]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ConfigError(f"{flag} {text!r}: want a size such as 512m or 2g")
    return int(float(match.group(1)) * _RAM_UNITS[match.group(2).lower()])


def parse_ulimit(text: str) -> Ulimit:
    """``--ulimit NAME=SOFT[:HARD]`` as Docker reads it (go-units ParseUlimit); -1 is
    unlimited, and a soft limit above the hard one is refused."""
    name, sep, values = text.partition("=")
    name = name.strip().lower()
    if not sep or not values:
        raise ConfigError(f"--ulimit {text!r}: want NAME=SOFT[:HARD], e.g. nofile=1024:2048")
    if name not in ULIMIT_NAMES:
        raise ConfigError(f"--ulimit {text!r}: unknown limit {name!r}",
                          hint=did_you_mean(name, ULIMIT_NAMES)
                          or "one of " + ", ".join(ULIMIT_NAMES))
    soft_text, _, hard_text = values.partition(":")
    try:
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
    except ValueError:
        raise ConfigError(f"--ulimit {text!r}: the limits must be whole numbers") from None
    if min(soft, hard) < UNLIMITED:
        raise ConfigError(f"--ulimit {text!r}: a limit is a number of at least -1 (unlimited)")
    if hard != UNLIMITED and (soft == UNLIMITED or soft > hard):
        raise ConfigError(f"--ulimit {text!r}: the soft limit {soft} is above the hard "
                          f"limit {hard}")
    return Ulimit(name, soft, hard)


def _normalize_limits(options: BuildOptions) -> None:
    """Check the limits (and turn the flags' text that cloche.build() may pass into values)."""
    memory: object = options.memory
    if isinstance(memory, str):
        memory = parse_ram_size(memory, "--memory")
    if memory is not None:
        if not isinstance(memory, int) or memory < MIN_MEMORY:
            raise ConfigError(f"--memory {options.memory!r}: the minimum is 6MiB (as Docker's)")
    shm: object = options.shm_size
    if isinstance(shm, str):
        shm = parse_ram_size(shm, "--shm-size")
    if shm is not None and (not isinstance(shm, int) or shm <= 0):
        raise ConfigError(f"--shm-size {options.shm_size!r}: want a size above 0, e.g. 128m")
    given: object = options.ulimits
    items = (given,) if isinstance(given, (str, Ulimit)) else tuple(given)  # type: ignore[arg-type]
    ulimits = tuple(u if isinstance(u, Ulimit) else parse_ulimit(str(u)) for u in items)
    names = [u.name for u in ulimits]
    for name in names:
        if names.count(name) > 1:  # docker: the last one wins, silently; a typo here costs
            raise ConfigError(f"--ulimit {name} is given more than once")
    pids: object = options.pids_limit
    if pids is not None and (not isinstance(pids, int) or isinstance(pids, bool) or pids < -1):
        raise ConfigError(f"--pids-limit {pids!r}: want a number of processes (-1: unlimited)")
    object.__setattr__(options, "memory", memory)
    object.__setattr__(options, "shm_size", shm)
    object.__setattr__(options, "ulimits", ulimits)
