"""The image configuration (the config blob) as a typed, frozen view that keeps unknown keys.

Builders read and change a handful of fields (Env, Cmd, WorkingDir, history, diff ids); every
other key a config may carry (Docker's ``container_config``, ``Hostname``, vendor extensions)
survives a read-modify-write untouched in ``extra`` and ``config_extra``. Serialisation sorts
keys and is compact, so the same value always gives the same digest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cloche.oci import _json
from cloche.oci._frozen import FrozenMap, freeze, thaw
from cloche.oci.digest import Digest
from cloche.oci.errors import ImageFormatError
from cloche.oci.platform import Platform


@dataclass(frozen=True)
class History:
    """One history entry; ``empty_layer`` entries (ENV, CMD...) have no layer of their own."""

    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (("created", self.created), ("created_by", self.created_by),
                           ("author", self.author), ("comment", self.comment)):
            if value is not None:
                out[key] = value
        if self.empty_layer:
            out["empty_layer"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> History:
        if not isinstance(data, Mapping):
            raise ImageFormatError("history entry is not an object", source=source)
        return cls(created=_opt_str(data, "created", source),
                   created_by=_opt_str(data, "created_by", source),
                   author=_opt_str(data, "author", source),
                   comment=_opt_str(data, "comment", source),
                   empty_layer=bool(data.get("empty_layer", False)))


@dataclass(frozen=True)
class Healthcheck:
    """HEALTHCHECK as the config stores it; durations are nanoseconds, 0 means the default.
    ``test`` is ``("NONE",)``, ``("CMD", ...)`` or ``("CMD-SHELL", cmd)``."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    _KEYS = (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod"),
             ("start_interval", "StartInterval"), ("retries", "Retries"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Test": list(self.test)}
        for attr, key in self._KEYS:
            if getattr(self, attr):
                out[key] = getattr(self, attr)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> Healthcheck:
        if not isinstance(data, Mapping):
            raise ImageFormatError("Healthcheck is not an object", source=source)
        values = {attr: data.get(key) or 0 for attr, key in cls._KEYS}
        if not all(isinstance(v, int) for v in values.values()):
            raise ImageFormatError("Healthcheck durations must be integers", source=source)
        return cls(test=_str_tuple(data.get("Test") or [], "Healthcheck.Test", source), **values)


# Keys of the "config" object that have typed fields here, with the field names.
_RUN_KEYS = {"User": "user", "ExposedPorts": "exposed_ports", "Env": "env", "Cmd": "cmd",
             "Healthcheck": "healthcheck", "ArgsEscaped": "args_escaped", "Volumes": "volumes",
             "WorkingDir": "working_dir", "Entrypoint": "entrypoint", "OnBuild": "on_build",
             "Labels": "labels", "StopSignal": "stop_signal", "Shell": "shell"}
_TOP_KEYS = {"architecture", "os", "variant", "os.version", "os.features", "created", "author",
             "config", "rootfs", "history"}


@dataclass(frozen=True)
class ImageConfig:
    """A typed view of an image config. ``cmd``/``entrypoint``/``shell``/``on_build`` are None
    when unset (different from an empty list, as in Docker)."""

    architecture: str = ""
    os: str = "linux"
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()
    created: str | None = None
    author: str | None = None
    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    labels: Mapping[str, str] = field(default_factory=FrozenMap)
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""
    healthcheck: Healthcheck | None = None
    on_build: tuple[str, ...] | None = None
    shell: tuple[str, ...] | None = None
    args_escaped: bool | None = None
    history: tuple[History, ...] = ()
    diff_ids: tuple[Digest, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=FrozenMap)
    config_extra: Mapping[str, Any] = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        for name in ("env", "exposed_ports", "volumes", "history", "diff_ids", "os_features"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("cmd", "entrypoint", "on_build", "shell"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        for name in ("labels", "extra", "config_extra"):
            value = getattr(self, name)
            if not isinstance(value, FrozenMap):
                object.__setattr__(self, name, freeze(value or {}))

    # --- convenient views -------------------------------------------------------------
    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant, self.os_version,
                        self.os_features)

    @property
    def env_map(self) -> dict[str, str]:
        """Env as an ordered dict (the last of duplicate names wins, as in Docker)."""
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def with_env(self, **values: str) -> ImageConfig:
        """Set variables, replacing an existing entry in place and appending new ones."""
        env = list(self.env)
        for key, value in values.items():
            entry = f"{key}={value}"
            for i, item in enumerate(env):
                if item.partition("=")[0] == key:
                    env[i] = entry
                    break
            else:
                env.append(entry)
        return replace(self, env=tuple(env))

    def with_platform(self, platform: Platform) -> ImageConfig:
        return replace(self, os=platform.os, architecture=platform.architecture,
                       variant=platform.variant, os_version=platform.os_version,
                       os_features=platform.os_features)

    def replace(self, **changes: Any) -> ImageConfig:
        return replace(self, **changes)

    # --- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = thaw(self.extra)
        out["architecture"] = self.architecture
        out["os"] = self.os
        for key, value in (("variant", self.variant), ("os.version", self.os_version),
                           ("created", self.created), ("author", self.author)):
            if value:
                out[key] = value
        if self.os_features:
            out["os.features"] = list(self.os_features)
        run: dict[str, Any] = thaw(self.config_extra)
        if self.user:
            run["User"] = self.user
        if self.exposed_ports:
            run["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.env:
            run["Env"] = list(self.env)
        for key, listed in (("Cmd", self.cmd), ("Entrypoint", self.entrypoint),
                            ("OnBuild", self.on_build), ("Shell", self.shell)):
            if listed is not None:
                run[key] = list(listed)
        if self.healthcheck is not None:
            run["Healthcheck"] = self.healthcheck.to_dict()
        if self.args_escaped is not None:
            run["ArgsEscaped"] = self.args_escaped
        if self.volumes:
            run["Volumes"] = {v: {} for v in self.volumes}
        if self.working_dir:
            run["WorkingDir"] = self.working_dir
        if self.labels:
            run["Labels"] = dict(self.labels)
        if self.stop_signal:
            run["StopSignal"] = self.stop_signal
        out["config"] = run
        out["rootfs"] = {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]}
        if self.history:
            out["history"] = [h.to_dict() for h in self.history]
        return out

    def to_json(self) -> bytes:
        """Canonical bytes: sorted keys, compact, UTF-8."""
        return _json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, data: bytes, *, source: str | None = None) -> ImageConfig:
        doc = _json.loads(data, what="image config", source=source)
        return cls.from_dict(doc, source=source)

    @classmethod
    def from_dict(cls, doc: Any, *, source: str | None = None) -> ImageConfig:
        if not isinstance(doc, Mapping):
            raise ImageFormatError("image config is not a JSON object", source=source)
        run = doc.get("config") or doc.get("Config") or {}
        if not isinstance(run, Mapping):
            raise ImageFormatError("image config 'config' is not an object", source=source)
        rootfs = doc.get("rootfs") or {}
        if not isinstance(rootfs, Mapping):
            raise ImageFormatError("image config 'rootfs' is not an object", source=source)
        try:
            diff_ids = tuple(Digest.parse(d) for d in rootfs.get("diff_ids") or [])
        except ValueError as e:
            raise ImageFormatError(f"bad rootfs diff id: {e}", source=source) from e
        history = doc.get("history") or []
        if not isinstance(history, list):
            raise ImageFormatError("image config history is not a list", source=source)
        labels = run.get("Labels") or {}
        if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
            raise ImageFormatError("Labels must map strings to strings", source=source)
        health = run.get("Healthcheck")
        return cls(
            architecture=_opt_str(doc, "architecture", source) or "",
            os=_opt_str(doc, "os", source) or "",
            variant=_opt_str(doc, "variant", source) or "",
            os_version=_opt_str(doc, "os.version", source) or "",
            os_features=_str_tuple(doc.get("os.features") or [], "os.features", source),
            created=_opt_str(doc, "created", source),
            author=_opt_str(doc, "author", source),
            env=_str_tuple(run.get("Env") or [], "Env", source),
            cmd=_opt_tuple(run, "Cmd", source),
            entrypoint=_opt_tuple(run, "Entrypoint", source),
            working_dir=_opt_str(run, "WorkingDir", source) or "",
            user=_opt_str(run, "User", source) or "",
            labels=FrozenMap(labels),
            exposed_ports=tuple(_keys(run, "ExposedPorts", source)),
            volumes=tuple(_keys(run, "Volumes", source)),
            stop_signal=_opt_str(run, "StopSignal", source) or "",
            healthcheck=Healthcheck.from_dict(health, source) if health else None,
            on_build=_opt_tuple(run, "OnBuild", source),
            shell=_opt_tuple(run, "Shell", source),
            args_escaped=run.get("ArgsEscaped") if isinstance(run.get("ArgsEscaped"), bool)
            else None,
            history=tuple(History.from_dict(h, source) for h in history),
            diff_ids=diff_ids,
            extra=freeze({k: v for k, v in doc.items() if k not in _TOP_KEYS}),
            config_extra=freeze({k: v for k, v in run.items() if k not in _RUN_KEYS}),
        )


def _opt_str(data: Mapping[str, Any], key: str, source: str | None) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ImageFormatError(f"{key} must be a string, not {value!r}", source=source)
    return value


def _str_tuple(value: Any, what: str, source: str | None) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageFormatError(f"{what} must be a list of strings", source=source)
    return tuple(value)


def _opt_tuple(data: Mapping[str, Any], key: str, source: str | None) -> tuple[str, ...] | None:
    value = data.get(key)
    return None if value is None else _str_tuple(value, key, source)


def _keys(data: Mapping[str, Any], key: str, source: str | None) -> list[str]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise ImageFormatError(f"{key} must be an object", source=source)
    return list(value)
