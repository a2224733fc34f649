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
PROGRESS_MODES = ("auto", "tty", "plain", "quiet", "rawjson")
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


CACHE_TYPES = ("registry", "local", "inline")
CACHE_MODES = ("min", "max")
CACHE_COMPRESSIONS = ("gzip", "zstd", "uncompressed")


@dataclass(frozen=True)
class CacheSpec:
    """One ``--cache-to`` or ``--cache-from``, as buildx spells it:
    ``type=registry,ref=REF,mode=max``, ``type=local,dest=DIR``, ``type=inline``, or (for
    ``--cache-from``) a bare image reference, read as ``type=registry,ref=REF``."""

    type: str
    ref: str | None = None  # registry: the artifact's (or, inline, the image's) reference
    path: str | None = None  # local: dest= (export) or src= (import)
    mode: str = "min"
    compression: str = "zstd"  # cloche's cache, read by cloche only: smaller and faster than gzip
    image_manifest: bool = False
    tag: str = "latest"  # local: the name in the layout's index.json
    ignore_error: bool = False  # an export that fails is a warning, not a failed build

    @property
    def source(self) -> str:
        """How progress names it."""
        return self.ref or self.path or self.type


def parse_cache_spec(text: str, flag: str) -> CacheSpec:
    """Parse ``--cache-to`` (``flag``) or ``--cache-from``; ConfigError naming the flag."""
    if "=" not in text:
        if flag == "--cache-to" or not text:
            raise ConfigError(f"{flag} {text!r}: want type=registry,ref=REF, type=local,"
                              f"{'dest' if flag == '--cache-to' else 'src'}=DIR or type=inline")
        return CacheSpec("registry", ref=text)
    attrs = dict(_split_csv(text, flag))
    kind = attrs.pop("type", "registry" if "ref" in attrs else None)
    if kind not in CACHE_TYPES:
        raise ConfigError(f"{flag} {text!r}: unknown or missing type "
                          f"(one of {', '.join(CACHE_TYPES)})")
    if kind == "inline" and flag == "--cache-from":
        raise ConfigError(f"{flag} {text!r}: give the image instead (--cache-from IMAGE)")
    mode = attrs.pop("mode", "min")
    check_choice(mode, CACHE_MODES, f"{flag} mode=")
    if kind == "inline" and mode != "min":
        raise ConfigError(f"{flag} {text!r}: an inline cache holds the image's own steps only "
                          "(mode=min)", hint="use type=registry or type=local for mode=max")
    compression = attrs.pop("compression", CacheSpec.compression)
    check_choice(compression, CACHE_COMPRESSIONS, f"{flag} compression=")
    if attrs.pop("oci-mediatypes", "true").lower() not in ("true", "1"):
        raise ConfigError(f"{flag} {text!r}: cloche writes OCI media types only "
                          "(oci-mediatypes=true)")
    image_manifest = attrs.pop("image-manifest", "false").lower() in ("true", "1")
    ref = attrs.pop("ref", None)
    path = attrs.pop("dest" if flag == "--cache-to" else "src", None)
    tag = attrs.pop("tag", "latest")
    ignore_error = attrs.pop("ignore-error", "false").lower() in ("true", "1")
    for ignored in ("compression-level", "force-compression", "name",
                    "digest", "store"):  # buildx's, with no meaning here
        attrs.pop(ignored, None)
    if attrs:
        raise ConfigError(f"{flag} {text!r}: unknown key {sorted(attrs)[0]!r}")
    if kind == "registry":
        if not ref:
            raise ConfigError(f"{flag} {text!r}: type=registry needs ref=REF")
        check_name(ref, f"{flag} ref=")
    if kind == "local" and not path:
        raise ConfigError(f"{flag} {text!r}: type=local needs "
                          f"{'dest' if flag == '--cache-to' else 'src'}=DIR")
    return CacheSpec(kind, ref=ref, path=path, mode=mode, compression=compression,
                     image_manifest=image_manifest, tag=tag, ignore_error=ignore_error)


@dataclass(frozen=True)
class SecretSpec:
    """One ``--secret id=ID,src=PATH|env=VAR``; never holds the secret's value."""

    id: str
    src: str | None = None
    env: str | None = None


@dataclass(frozen=True)
class ContextSource:
    """What one ``--build-context NAME=VALUE`` names, as buildx reads VALUE.

    ``kind`` is ``dir`` (a local directory, ``path``), ``image`` (``docker-image://REF``:
    ``reference``), ``oci-layout`` (``oci-layout://PATH[:TAG][@DIGEST]``: ``path``, ``tag``
    and ``digest``), ``git`` (a Git URL, ``reference``) or ``http`` (another http(s) URL: one
    file, ``reference``)."""

    name: str
    value: str
    kind: str
    path: str | None = None
    reference: str | None = None
    tag: str = "latest"
    digest: str | None = None

    @property
    def flag(self) -> str:
        """How errors name it: ``--build-context NAME=VALUE``."""
        return f"--build-context {self.name}={self.value}"


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
    # --add-host: (name, ip) lines RUN steps find in /etc/hosts (parse_add_host)
    add_hosts: tuple[tuple[str, str], ...] = ()
    # --annotation [TYPE:]KEY=VALUE, as buildx: (type, key, value), type "manifest" (the
    # default) or "manifest-descriptor"; for every output (engine/annotations.py)
    annotations: tuple[tuple[str, str, str], ...] = ()
    # how RUN steps are isolated (engine/isolation.py): auto, namespaces or chroot; the
    # engine resolves auto once per build
    isolation: str = "auto"
    # named contexts, ``--build-context NAME=VALUE``: normalised NAME -> VALUE (cloche.build()
    # also takes a list of "NAME=VALUE" strings); see ``parse_build_contexts``
    build_contexts: Mapping[str, str] = field(default_factory=dict)
    # a build cache shared through a registry or a folder (engine/remote_cache.py):
    # ``--cache-to``/``--cache-from``; cloche.build() also takes the flags' text
    cache_to: tuple[CacheSpec, ...] = ()
    cache_from: tuple[CacheSpec, ...] = ()
    # SOURCE_DATE_EPOCH (engine/reproducible.py): seconds since 1970; given here, it is also
    # the SOURCE_DATE_EPOCH build arg. None: read from that build arg (a global ARG default
    # is resolved by the engine once the Dockerfile is parsed)
    source_date_epoch: int | None = None

    def __post_init__(self) -> None:
        for name, flag in (("cache_to", "--cache-to"), ("cache_from", "--cache-from")):
            given: object = getattr(self, name)
            items = (given,) if isinstance(given, (str, CacheSpec)) \
                else tuple(given)  # type: ignore[arg-type]
            object.__setattr__(self, name, tuple(
                i if isinstance(i, CacheSpec) else parse_cache_spec(str(i), flag) for i in items))
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
        object.__setattr__(self, "build_contexts", parse_build_contexts(self.build_contexts))
        from cloche.engine.annotations import parse_annotation

        given_notes: object = self.annotations  # cloche.build() may give the flags' text
        object.__setattr__(self, "annotations", tuple(
            a if isinstance(a, tuple) else parse_annotation(str(a))
            for a in ((given_notes,) if isinstance(given_notes, str) else given_notes)))  # type: ignore[attr-defined]
        given_hosts: object = self.add_hosts  # cloche.build() may give "NAME:IP" strings
        object.__setattr__(self, "add_hosts", tuple(
            h if isinstance(h, tuple) else parse_add_host(str(h))
            for h in ((given_hosts,) if isinstance(given_hosts, str) else given_hosts)))  # type: ignore[attr-defined]
        _normalize_limits(self)
        _normalize_epoch(self)
        from cloche.engine.isolation import ISOLATION_MODES, check_chroot_options

        check_choice(self.isolation, ISOLATION_MODES, "--isolation")
        if self.isolation == "chroot":
            check_chroot_options(self.network, self.allow, self.memory, self.pids_limit)

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
    if kind in ("oci", "local", "tar") and not dest:  # type=docker without: --load
        raise ConfigError(f"--output {text!r}: type={kind} needs dest=PATH")
    from cloche.engine.output_attrs import check_output_attrs

    check_output_attrs(kind, attrs, text)  # every other attribute honoured, or refused
    return OutputSpec(type=kind, dest=dest, names=names, push=push,
                      attrs=tuple(sorted(attrs.items())))


def parse_secret(text: str) -> SecretSpec:
    """Parse ``--secret``: ``id=ID,src=PATH``, ``id=ID,env=VAR`` or ``id=ID`` (env var ID),
    as buildx does: ``type=file`` or ``type=env`` (with which ``src=VAR`` names a variable)."""
    attrs = dict(_split_csv(text, "--secret"))
    secret_id = attrs.pop("id", None)
    src = attrs.pop("src", None) or attrs.pop("source", None)
    env = attrs.pop("env", None)
    kind = attrs.pop("type", None)
    if kind not in (None, "file", "env"):
        raise ConfigError(f"--secret {text!r}: unsupported secret type {kind!r}",
                          hint="type=file or type=env")
    if kind == "env" and env is None:  # buildx: type=env,src=VAR reads the variable VAR
        env, src = src, None
    if not secret_id:
        raise ConfigError(f"--secret {text!r}: missing id=")
    if attrs:
        raise ConfigError(f"--secret {text!r}: unknown key {sorted(attrs)[0]!r} "
                          "(want id, src or env)")
    if src is None and env is None:
        env = secret_id
    return SecretSpec(id=secret_id, src=src, env=env)


def secret_value(secrets: Iterable[SecretSpec], secret_id: str) -> bytes | None:
    """The value of ``--secret id=secret_id`` (its file's bytes, or its environment
    variable's), None when no such secret was given or its variable is unset. A file that
    cannot be read raises OSError: the caller names the step or the source."""
    found = next((s for s in secrets if s.id == secret_id), None)
    if found is None:
        return None
    if found.src:
        return Path(found.src).expanduser().read_bytes()
    if found.env and found.env in os.environ:
        return os.environ[found.env].encode()
    return None


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


def context_name(name: str) -> str:
    """The normalised name of a named context, as buildx and BuildKit's frontend spell it:
    ``docker.io/library/alpine:latest`` and ``alpine`` are both ``alpine``. Raises
    InvalidReferenceError for a name that is not an image reference."""
    from cloche.oci.reference import Reference

    ref = Reference.parse(name, default_tag=None)
    familiar = ref.familiar
    return familiar[:-len(":latest")] if familiar.endswith(":latest") else familiar


_GIT_OR_HTTP = ("http://", "https://", "git://", "ssh://", "git@", "github.com/")


def parse_context_source(name: str, value: str) -> ContextSource:
    """One named context's VALUE (buildx's spellings); ConfigError naming the flag."""
    import re

    flag = f"--build-context {name}={value}"
    if not value:
        raise ConfigError(f"{flag}: empty value", hint="give a directory, docker-image://REF "
                                                      "or oci-layout://PATH[:TAG][@DIGEST]")
    if value.startswith("docker-image://"):
        ref = value[len("docker-image://"):]
        try:
            if ref != "scratch":
                from cloche.oci.reference import Reference

                Reference.parse(ref)
        except InvalidReferenceError as err:
            raise ConfigError(f"{flag}: {err.message}", hint=err.hint) from None
        return ContextSource(name, value, "image", reference=ref)
    if value.startswith("oci-layout://"):
        rest = value[len("oci-layout://"):]
        rest, at, digest = rest.partition("@")  # as buildx cuts it: digest, then tag
        path, colon, tag = rest.partition(":")
        if not path:
            raise ConfigError(f"{flag}: no path", hint="oci-layout://PATH[:TAG][@DIGEST]")
        if at:
            from cloche.errors import DigestError
            from cloche.oci.digest import Digest

            try:
                Digest.parse(digest)
            except (DigestError, ValueError) as err:
                raise ConfigError(f"{flag}: invalid digest {digest!r} ({err})") from None
        return ContextSource(name, value, "oci-layout", path=path, tag=tag if colon else "latest",
                             digest=digest if at else None)
    if value.startswith("target:"):
        raise ConfigError(f"{flag}: unsupported context source target",
                          hint="target:STAGE is a `docker buildx bake` feature; `buildx build` "
                               "passes it on and BuildKit refuses it. Name the stage in the "
                               "Dockerfile, or build it first and use docker-image://")
    if value.startswith(_GIT_OR_HTTP):
        from cloche.engine.giturl import GitRefError, parse_git_ref

        try:  # as BuildKit's frontend: a Git URL is a checkout, another http(s) URL a file
            git_ref = parse_git_ref(value, context=True)
        except GitRefError as err:
            raise ConfigError(f"{flag}: {err.message}", hint=err.hint) from None
        if git_ref is not None:
            return ContextSource(name, value, "git", reference=value)
        if value.startswith(("http://", "https://")):
            return ContextSource(name, value, "http", reference=value)
        raise ConfigError(f"{flag}: invalid git context {value}")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", value)
    if scheme:
        raise ConfigError(f"{flag}: unknown scheme {scheme.group(1)!r}",
                          hint="a named context is a directory, docker-image://REF or "
                               "oci-layout://PATH[:TAG][@DIGEST]")
    return ContextSource(name, value, "dir", path=value)


def parse_build_contexts(given: Mapping[str, str] | Iterable[str] | str
                         ) -> dict[str, str]:
    """``--build-context`` items (``NAME=VALUE`` strings, or a NAME -> VALUE mapping) with
    their names normalised (``context_name``) and their values checked; the last of two
    items with one name wins, as in buildx."""
    items: list[tuple[str, str]] = []
    if isinstance(given, Mapping):
        items = [(str(k), str(v)) for k, v in given.items()]
    else:
        for item in (given,) if isinstance(given, str) else given:
            key, sep, value = str(item).partition("=")
            if not sep:
                raise ConfigError(f"--build-context {item!r}: invalid context value, "
                                  "expected NAME=VALUE")
            items.append((key, value))
    result: dict[str, str] = {}
    for key, value in items:
        try:
            name = context_name(key)
        except InvalidReferenceError as err:
            raise ConfigError(f"--build-context {key}={value}: invalid context name {key!r}: "
                              f"{err.message}",
                              hint="a context name is spelled as an image name: lowercase "
                                   "letters, digits, . _ - and /") from None
        parse_context_source(name, value)
        result[name] = value
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


def _normalize_epoch(options: BuildOptions) -> None:
    """``source_date_epoch`` and the SOURCE_DATE_EPOCH build arg: checked before anything
    runs, and made one value (the option, when given, is also the build arg)."""
    name = "SOURCE_DATE_EPOCH"
    if options.source_date_epoch is None and name not in options.build_args:
        return
    from cloche.engine.reproducible import parse_epoch

    if options.source_date_epoch is not None:
        epoch = parse_epoch(options.source_date_epoch)
    else:
        epoch = parse_epoch(options.build_args[name])
    args = dict(options.build_args)
    if epoch is not None:
        args[name] = str(epoch)
    object.__setattr__(options, "source_date_epoch", epoch)
    object.__setattr__(options, "build_args", args)


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


def parse_add_host(text: str) -> tuple[str, str]:
    """``--add-host NAME:IP`` (or ``NAME=IP``, as buildx takes it): a line of RUN's /etc/hosts.
    ``host-gateway`` needs the Docker engine's gateway, which a daemonless build has not."""
    import ipaddress

    sep = "=" if "=" in text else ":"
    name, found, ip = text.partition(sep)
    name, ip = name.strip(), ip.strip().strip("[]")
    if not found or not name or not ip or any(c.isspace() for c in name):
        raise ConfigError(f"--add-host {text!r}: expected NAME:IP (e.g. db:10.0.0.5)")
    if ip == "host-gateway":
        raise ConfigError(f"--add-host {text!r}: host-gateway is the Docker engine's gateway, "
                          "which cloche has not", hint="give the address itself")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise ConfigError(f"--add-host {text!r}: {ip!r} is not an IP address") from None
    return name, ip


def parse_annotation(text: str) -> tuple[str, str, str]:
    """``--annotation [TYPE:]KEY=VALUE`` (engine/annotations.py)."""
    from cloche.engine.annotations import parse_annotation as parse

    return parse(text)
