"""ARG and ENV scoping, as BuildKit applies it while it walks a stage.

The build engine calls this step by step::

    scope = resolve_global_scope(dockerfile, build_args, target_platform="linux/amd64")
    base = scope.expand_from(stage.from_)            # FROM image/platform, global ARGs only
    env = StageEnv.start(scope, base_env=image_config_env)   # or parent=<parent's final env>
    for instruction in stage.commands:
        expanded, env = env.apply(instruction)       # expanded words; the scope after it

Rules (BuildKit's, see ../shared/SEMANTICS.md): global ARGs (before the first FROM) are
visible in FROM lines and later global ARGs only; ``ARG X`` without a value inside a stage
brings in the global value; an ARG is in effect from its own line on; ``--build-arg`` beats a
default; a stage's ARGs and ENV carry over to stages built ``FROM`` it, never to siblings;
the platform ARGs are predefined globals; the proxy ARGs may be given as build args without
being declared and then reach RUN's environment only.
"""

from __future__ import annotations

import platform as _platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cloche.dockerfile.expand import expand_instruction
from cloche.dockerfile.instructions import Arg, Env, From, Instruction
from cloche.dockerfile.node import SyntaxTree
from cloche.dockerfile.shell import expand_word
from cloche.dockerfile.stages import Dockerfile

__all__ = ["PLATFORM_ARGS", "PROXY_ARGS", "DEFAULT_PATH", "GlobalScope", "StageEnv", "resolve_global_scope",
           "platform_args", "host_platform"]

PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
                 "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT")
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
              "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
             "armv7l": "arm/v7", "armv6l": "arm/v6", "i386": "386", "i686": "386",
             "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}

Pairs = tuple[tuple[str, str], ...]


def host_platform() -> str:
    """This machine's platform as ``os/arch[/variant]`` (what BUILDPLATFORM says)."""
    machine = _platform.machine().lower()
    return "linux/" + _MACHINES.get(machine, machine)


def platform_args(target: str | None = None, build: str | None = None) -> dict[str, str]:
    """The eight predefined platform ARGs; the target defaults to the build platform."""
    build = build or host_platform()
    target = target or build
    values: dict[str, str] = {}
    for prefix, spec in (("BUILD", build), ("TARGET", target)):
        parts = spec.split("/")
        os_, arch = parts[0], parts[1] if len(parts) > 1 else ""
        variant = parts[2] if len(parts) > 2 else ""
        if arch == "arm64" and variant == "v8":
            variant = ""  # containerd's normalisation: arm64 means v8
        values[f"{prefix}PLATFORM"] = "/".join(p for p in (os_, arch, variant) if p)
        values[f"{prefix}OS"], values[f"{prefix}ARCH"] = os_, arch
        values[f"{prefix}VARIANT"] = variant
    return values


def _set(pairs: Pairs, name: str, value: str) -> Pairs:
    """``pairs`` with ``name`` set to ``value``: replaced in place, or appended."""
    if any(k == name for k, _ in pairs):
        return tuple((k, value if k == name else v) for k, v in pairs)
    return pairs + ((name, value),)


@dataclass(frozen=True)
class GlobalScope:
    """Build-wide values: the build args, and the global ARGs after the meta ARG lines.

    ``values`` maps each global ARG name to its value, or to None when it is declared without
    a value (FROM sees it as empty; ``ARG X`` in a stage then leaves X unset).
    """

    build_args: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, str | None] = field(default_factory=dict)
    escape: str = "\\"
    tree: SyntaxTree | None = None

    def from_environment(self) -> dict[str, str]:
        """What a FROM line sees: the global ARGs (unset ones as empty strings)."""
        return {k: v or "" for k, v in self.values.items()}

    def expand_from(self, instruction: From) -> From:
        """FROM's image and --platform expanded with the global ARGs only."""
        expanded = expand_instruction(instruction, self.from_environment(), escape=self.escape,
                                      tree=self.tree)
        assert isinstance(expanded, From)
        return expanded

    def unused_build_args(self, used: Iterable[str]) -> tuple[str, ...]:
        """Build args that nothing declared (BuildKit warns about them)."""
        known = set(used) | set(self.values) | set(PROXY_ARGS)
        return tuple(sorted(k for k in self.build_args if k not in known))


def resolve_global_scope(
    dockerfile: Dockerfile, build_args: Mapping[str, str] | None = None, *,
    target_platform: str | None = None, build_platform: str | None = None,
) -> GlobalScope:
    """Evaluate the meta ARGs in order: each sees the predefined ARGs and the ones above it."""
    build_args = dict(build_args or {})
    values: dict[str, str | None] = dict(platform_args(target_platform, build_platform))
    for instruction in dockerfile.meta_args:
        for definition in instruction.args:
            env = {k: v or "" for k, v in values.items()}
            expanded = expand_instruction(
                Arg(node=instruction.node, args=(definition,)), env,
                escape=dockerfile.escape, tree=dockerfile.tree)
            assert isinstance(expanded, Arg)
            name, default = expanded.args[0].name, expanded.args[0].default
            values[name] = build_args[name] if name in build_args else default
    return GlobalScope(build_args, values, dockerfile.escape, dockerfile.tree)


@dataclass(frozen=True)
class StageEnv:
    """What the next instruction of a stage can see; a new value after every instruction.

    ``variables``: ENV and ARG values in effect, in order, last write wins: the environment
    for expansion (and, with :meth:`run_environment`, for RUN).
    ``config_env``: ENV only: the image config's Env (ARG values never reach the image).
    ``declared_args``: the ARG names in effect (for RUN's history line and cache key).
    """

    scope: GlobalScope
    variables: Pairs = ()
    config_env: Pairs = ()
    declared_args: tuple[str, ...] = ()

    @classmethod
    def start(
        cls, scope: GlobalScope, *, base_env: Iterable[tuple[str, str]] = (),
        parent: StageEnv | None = None,
    ) -> StageEnv:
        """The scope right after FROM: a parent stage's final scope, or the base image's Env
        (``scratch``: none) with BuildKit's default PATH added when the image has none."""
        if parent is not None:
            # BuildKit re-applies the image config's Env over the inherited state: an ENV
            # beats a same-named ARG value in the child stage (the ARG stays declared).
            variables = parent.variables
            for name, value in parent.config_env:
                variables = _set(variables, name, value)
            return cls(scope, variables, parent.config_env, parent.declared_args)
        pairs = tuple(base_env)
        if not any(name == "PATH" for name, _ in pairs):
            pairs += (("PATH", DEFAULT_PATH),)  # BuildKit adds it to the image config too
        return cls(scope, pairs, pairs, ())

    @property
    def environment(self) -> dict[str, str]:
        """The environment ``${...}`` sees at this point."""
        return dict(self.variables)

    def expand(self, word: str) -> str:
        return expand_word(word, self.environment, self.scope.escape)

    def arg_values(self) -> dict[str, str]:
        """The declared ARGs that have a value, with the value in effect."""
        env = self.environment
        return {name: env[name] for name in self.declared_args if name in env}

    def run_environment(self) -> dict[str, str]:
        """RUN's environment: variables, plus proxy settings given as build args."""
        env = self.environment
        for name in PROXY_ARGS:
            if name in self.scope.build_args and name not in self.declared_args:
                env[name] = self.scope.build_args[name]
        return env

    def apply(self, instruction: Instruction) -> tuple[Instruction, StageEnv]:
        """Expand ``instruction`` in this scope; returns it and the scope after it."""
        expanded = expand_instruction(instruction, self.environment, escape=self.scope.escape,
                                      tree=self.scope.tree)
        if isinstance(expanded, Env):
            variables, config = self.variables, self.config_env
            for name, value in expanded.pairs:
                variables, config = _set(variables, name, value), _set(config, name, value)
            return expanded, StageEnv(self.scope, variables, config, self.declared_args)
        if isinstance(expanded, Arg):
            variables, declared = self.variables, self.declared_args
            for definition in expanded.args:
                name = definition.name
                chosen: str | None
                if name in self.scope.build_args:
                    chosen = self.scope.build_args[name]
                elif definition.default is not None:
                    chosen = definition.default
                else:
                    chosen = self.scope.values.get(name)
                if chosen is not None:
                    variables = _set(variables, name, chosen)
                if name not in declared:
                    declared = declared + (name,)
            return expanded, StageEnv(self.scope, variables, self.config_env, declared)
        return expanded, self
