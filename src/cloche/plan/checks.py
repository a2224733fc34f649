"""BuildKit's build checks (its Dockerfile linter): rules, the ``# check=`` configuration, and
the walk that raises them.

The rules, their names, messages and links are BuildKit's (moby/buildkit
frontend/dockerfile/linter/ruleset.go); where and when each one is raised follows its front
end (instructions/parse.go, dockerfile2llb/convert.go, validations.go, convert_expose.go):

- while the instructions are typed, for every node of the file: MaintainerDeprecated,
  StageNameCasing, FromAsCasing, InvalidDefinitionDescription (experimental);
- over all stages: ReservedStageName, DuplicateStageName, ConsistentInstructionCasing,
  InvalidDefaultArgInFrom (the meta ARGs' defaults, no build args), and for each FROM line
  UndefinedArgInFrom, RedundantTargetPlatform, FromPlatformFlagConstDisallowed;
- while the stages are dispatched (those the build runs, every stage for ``--check`` without
  a target): UndefinedVar, LegacyKeyValueFormat, SecretsUsedInArgOrEnv, JSONArgsRecommended,
  MultipleInstructionsDisallowed, WorkdirRelativePath, ExposeProtoCasing,
  ExposeInvalidFormat, CopyIgnoredFile;
- NoEmptyContinuation comes from the parser. InvalidBaseImagePlatform is listed (a
  ``# check=skip=`` naming it is valid) but never raised: where BuildKit warns, a base pulled
  for another platform, cloche's engine fails the build (one platform per build).

The configuration is BuildKit's: the ``# check=`` directive, replaced as a whole by the
``BUILDKIT_DOCKERFILE_CHECK`` build arg, and ``# check=`` comments right above an
instruction, which add skipped and experimental rules for that instruction only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from cloche.dockerfile.args import PLATFORM_ARGS, GlobalScope, StageEnv, resolve_global_scope
from cloche.dockerfile.directives import DirectiveScanner
from cloche.dockerfile.expand import expand_instruction
from cloche.dockerfile.instructions import (
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from cloche.dockerfile.node import Node
from cloche.dockerfile.shell import expand_heredoc, expand_word
from cloche.dockerfile.stages import Dockerfile, Stage
from cloche.errors import ConfigError, DockerfileError

__all__ = ["CHECK_ARG", "RULES", "CheckConfig", "CheckWarning", "Rule", "check_config",
           "is_secret_name", "run_checks", "unused_build_args_message"]

CHECK_ARG = "BUILDKIT_DOCKERFILE_CHECK"
_DOCS = "https://docs.docker.com/go/dockerfile/rule/"


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    url: str
    experimental: bool = False


def _rule(name: str, description: str, *, experimental: bool = False, url: bool = True) -> Rule:
    kebab = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name).lower()
    return Rule(name, description, f"{_DOCS}{kebab}/" if url else "", experimental)


RULES: dict[str, Rule] = {r.name: r for r in (
    _rule("StageNameCasing", "Stage names should be lowercase"),
    _rule("FromAsCasing", "The 'as' keyword should match the case of the 'from' keyword"),
    _rule("NoEmptyContinuation",
          "Empty continuation lines will become errors in a future release"),
    _rule("ConsistentInstructionCasing", "All commands within the Dockerfile should use the "
          "same casing (either upper or lower)"),
    _rule("DuplicateStageName", "Stage names should be unique"),
    _rule("ReservedStageName", "Reserved words should not be used as stage names"),
    _rule("JSONArgsRecommended", "JSON arguments recommended for ENTRYPOINT/CMD to prevent "
          "unintended behavior related to OS signals"),
    _rule("MaintainerDeprecated", "The MAINTAINER instruction is deprecated, use a label "
          "instead to define an image author"),
    _rule("UndefinedArgInFrom", "FROM command must use declared ARGs"),
    _rule("WorkdirRelativePath", "Relative workdir without an absolute workdir declared within "
          "the build can have unexpected results if the base image changes"),
    _rule("UndefinedVar", "Variables should be defined before their use"),
    _rule("MultipleInstructionsDisallowed", "Multiple instructions of the same type should not "
          "be used in the same stage"),
    _rule("LegacyKeyValueFormat",
          "Legacy key/value format with whitespace separator should not be used"),
    _rule("InvalidBaseImagePlatform",
          "Base image platform does not match expected target platform", url=False),
    _rule("RedundantTargetPlatform", "Setting platform to predefined $TARGETPLATFORM in FROM "
          "is redundant as this is the default behavior"),
    _rule("SecretsUsedInArgOrEnv", "Sensitive data should not be used in the ARG or ENV "
          "commands"),
    _rule("InvalidDefaultArgInFrom", "Default value for global ARG results in an empty or "
          "invalid base image name"),
    _rule("FromPlatformFlagConstDisallowed",
          "FROM --platform flag should not use a constant value"),
    _rule("CopyIgnoredFile", "Attempting to Copy file that is excluded by .dockerignore"),
    _rule("InvalidDefinitionDescription", "Comment for build stage or argument should follow "
          "the format: `# <arg/stage name> <description>`. If this is not intended to be a "
          "description comment, add an empty line or comment between the instruction and the "
          "comment.", experimental=True),
    _rule("ExposeProtoCasing", "Protocol in EXPOSE instruction should be lowercase"),
    _rule("ExposeInvalidFormat", "IP address and host-port mapping should not be used in "
          "EXPOSE instruction. This will become an error in a future release"),
)}


@dataclass(frozen=True)
class CheckWarning:
    """One raised rule: its message and where (1-based lines of ``file``)."""

    rule: str
    message: str
    line: int = 0
    end_line: int = 0
    file: str = "Dockerfile"

    @property
    def url(self) -> str:
        return RULES[self.rule].url if self.rule in RULES else ""

    @property
    def description(self) -> str:
        return RULES[self.rule].description if self.rule in RULES else ""

    @property
    def short(self) -> str:
        """BuildKit's one-line form: ``RULE: message (line N)``."""
        text = f"{self.rule}: {self.message}"
        return f"{text} (line {self.line})" if self.line > 0 else text


@dataclass(frozen=True)
class CheckConfig:
    """Which rules run and whether a warning fails the build (``skip=``, ``experimental=``,
    ``error=``)."""

    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    experimental: frozenset[str] = frozenset()
    experimental_all: bool = False
    error: bool = False

    @classmethod
    def parse(cls, text: str) -> CheckConfig:
        """``skip=A,B;error=true;experimental=all`` as BuildKit reads it (at most 3 parts)."""
        text = text.strip()
        if not text:
            return cls()
        parts = text.split(";", 2)
        values: dict[str, object] = {}
        for part in parts:
            key, eq, value = part.partition("=")
            if not eq:
                raise ConfigError(f"invalid check option {_go_quote(part)}")
            key, value = key.strip(), value.strip()
            if key in ("skip", "experimental"):
                if value == "all":
                    values[f"{key}_all"] = True
                else:
                    values[key] = frozenset(r.strip() for r in value.split(","))
            elif key == "error":
                parsed = _go_bool(value)
                if parsed is None:
                    raise ConfigError(f"failed to parse check option {_go_quote(part)}: "
                                      f"strconv.ParseBool: parsing {_go_quote(value)}: "
                                      "invalid syntax")
                values["error"] = parsed
            else:
                raise ConfigError(f"invalid check option {_go_quote(key)}")
        return cls(**values)  # type: ignore[arg-type]

    def merged(self, other: CheckConfig) -> CheckConfig:
        """``other`` added (a ``# check=`` comment above an instruction): never less skipped."""
        return replace(self, skip=self.skip | other.skip, skip_all=self.skip_all or other.skip_all,
                       experimental=self.experimental | other.experimental,
                       experimental_all=self.experimental_all or other.experimental_all)

    def enabled(self, rule: str) -> bool:
        known = RULES.get(rule)
        if known is not None and known.experimental:
            return self.experimental_all or rule in self.experimental
        return not (self.skip_all or rule in self.skip)


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _go_bool(text: str) -> bool | None:
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def check_config(directive: str | None, build_args: Mapping[str, str]) -> CheckConfig:
    """The build's configuration: the ``BUILDKIT_DOCKERFILE_CHECK`` build arg if given (it
    replaces the directive), else the ``# check=`` directive."""
    if CHECK_ARG in build_args:
        try:
            return CheckConfig.parse(build_args[CHECK_ARG])
        except ConfigError as err:
            raise ConfigError(f"failed to parse build-arg:{CHECK_ARG}: {err.message}") from None
    try:
        return CheckConfig.parse(directive or "")
    except ConfigError as err:
        raise ConfigError(f"failed to parse check options: {err.message}") from None


def unused_build_args_message(names: tuple[str, ...] | list[str]) -> str:
    """The legacy builder's warning for build args nothing declared (current BuildKit has
    none: moby/buildkit#2128)."""
    return f"[Warning] One or more build-args [{' '.join(sorted(names))}] were not consumed"


# -- the walk -------------------------------------------------------------------------------

_NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})
_PREDEFINED = PLATFORM_ARGS + ("BUILDOSVERSION", "TARGETOSVERSION", "TARGETSTAGE")
_RESERVED_STAGE_NAMES = ("context", "scratch")
_SECRET = re.compile(r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|"
                     r"passwd|secret|token)(?:_|$)")
_NOT_SECRET = re.compile(r"(?i)(?:_|^)(?:public|file|version)(?:_|$)")
_ARCHES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm",
           "armel": "arm", "i386": "386", "i686": "386"}
_OSES = {"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos",
         "android", "ios", "aix", "plan9", "dragonfly", "js", "wasip1"}

#: (base reference as expanded, platform or None) -> the image config's Env, or None when
#: the image is not known without pulling it (UndefinedVar is then not checked there).
BaseEnv = Callable[[str, str | None], "tuple[tuple[str, str], ...] | None"]
#: A COPY/ADD source path -> whether .dockerignore excludes it (None: no usable rules).
Ignored = Callable[[str], bool]


class _Recorder(Mapping[str, str]):
    """An environment that notes which names an expansion found and which it missed."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.matched: dict[str, None] = {}
        self.unmatched: dict[str, None] = {}

    def __contains__(self, name: object) -> bool:
        found = name in self.env
        if isinstance(name, str):
            (self.matched if found else self.unmatched)[name] = None
        return found

    def __getitem__(self, name: str) -> str:
        return self.env[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)


@dataclass
class _Linter:
    config: CheckConfig
    file: str
    out: list[CheckWarning] = field(default_factory=list)

    def for_comments(self, comments: tuple[str, ...]) -> _Linter:
        """This linter with a ``check=`` comment above an instruction merged in."""
        for comment in comments:
            hit = _comment_directive(comment)
            if hit is None:
                continue
            try:
                extra = CheckConfig.parse(hit.split(" ", 1)[0])
            except ConfigError:
                return self
            return _Linter(self.config.merged(extra), self.file, self.out)
        return self

    def run(self, rule: str, node: Node | None, message: str) -> None:
        if not self.config.enabled(rule):
            return
        start = node.start_line if node is not None else 0
        end = node.end_line if node is not None else 0
        self.out.append(CheckWarning(rule, message, start, end or start, self.file))


def _comment_directive(comment: str) -> str | None:
    scanner = DirectiveScanner(prefix="")
    try:
        hit = scanner.feed(comment)
    except DockerfileError:
        return None
    return hit[1] if hit is not None and hit[0] == "check" else None


def run_checks(
    dockerfile: Dockerfile, config: CheckConfig, *, build_args: Mapping[str, str] | None = None,
    target: str | None = None, platform: str | None = None, all_stages: bool = False,
    base_env: BaseEnv | None = None, ignored: Ignored | None = None,
) -> list[CheckWarning]:
    """The warnings BuildKit's checks raise for ``dockerfile``, in the order it raises them.

    ``target``: the stages dispatched are those it reaches (``all_stages``: every stage, as
    ``--check`` without a target). Expansion errors end the walk of that stage quietly (the
    build reports them)."""
    build_args = dict(build_args or {})
    lint = _Linter(config, dockerfile.file)
    tree = dockerfile.tree
    _empty_continuations(dockerfile, lint)
    for node in tree.nodes:
        _node_rules(node, lint.for_comments(node.comments))
    stages = dockerfile.stages
    _stage_names(stages, lint)
    _command_casing(stages, lint)
    try:
        scope = resolve_global_scope(dockerfile, build_args, target_platform=platform)
        defaults = resolve_global_scope(dockerfile, {}, target_platform=platform)
    except DockerfileError:
        return lint.out
    _default_base_names(dockerfile, defaults, lint)
    _from_lines(dockerfile, scope, target, lint)
    wanted = range(len(stages)) if all_stages else _reachable(dockerfile, target)
    _dispatch(dockerfile, scope, sorted(wanted), lint, base_env, ignored)
    return lint.out


def _empty_continuations(dockerfile: Dockerfile, lint: _Linter) -> None:
    prefix = f"{dockerfile.tree.file}:"
    for text in dockerfile.tree.warnings:
        if not text.startswith(prefix):
            continue
        number = text[len(prefix):].partition(":")[0]
        if number.isdigit():
            line = int(number)
            lint.run("NoEmptyContinuation", Node("", start_line=line, end_line=line),
                     "Empty continuation line")


def _command_word(node: Node) -> str:
    """The instruction word as written (BuildKit's ``node.Value``)."""
    words = node.original.split(None, 1)
    return words[0] if words else node.keyword


def _node_rules(node: Node, lint: _Linter) -> None:
    if node.keyword == "maintainer":
        lint.run("MaintainerDeprecated", node,
                 "Maintainer instruction is deprecated in favor of using label")
    elif node.keyword == "from":
        args, word = node.args, _command_word(node)
        if len(args) == 3 and args[2] != args[2].lower():
            lint.run("StageNameCasing", node, f"Stage name '{args[2]}' should be lowercase")
        if len(args) >= 3 and word in (word.lower(), word.upper()):
            as_word = args[1]
            wanted = as_word.lower() if word == word.lower() else as_word.upper()
            if as_word != wanted:
                lint.run("FromAsCasing", node,
                         f"'{as_word}' and '{word}' keywords' casing do not match")
        if len(args) == 3 and args[1].lower() == "as" and args[2]:
            _definition_description("FROM", [args[2].lower()], node, lint)
    elif node.keyword == "arg":
        keys = [a.partition("=")[0] for a in node.args]
        _definition_description("ARG", keys, node, lint)


def _definition_description(instruction: str, keys: list[str], node: Node,
                            lint: _Linter) -> None:
    if not node.comments or not keys:
        return
    if node.comments[-1].split(" ")[0] in keys:
        return
    example = keys[0] if len(keys) == 1 else "<arg_key>"
    lint.run("InvalidDefinitionDescription", node,
             f"Comment for {instruction} should follow the format: `# {example} <description>`")


def _stage_names(stages: tuple[Stage, ...], lint: _Linter) -> None:
    seen: set[str] = set()
    for stage in stages:
        name = stage.name
        if not name:
            continue
        if name in _RESERVED_STAGE_NAMES:
            lint.run("ReservedStageName", stage.from_.node,
                     f'Stage name should not use the same name as reserved stage "{name}"')
        if name in seen:
            lint.run("DuplicateStageName", stage.from_.node,
                     f'Duplicate stage name "{name}", stage names should be unique')
        seen.add(name)


def _command_casing(stages: tuple[Stage, ...], lint: _Linter) -> None:
    nodes = [n for s in stages for n in (s.from_.node, *(c.node for c in s.commands))]
    words = [_command_word(n) for n in nodes]
    lower = sum(1 for w in words if w == w.lower())
    upper = sum(1 for w in words if w != w.lower() and w == w.upper())
    majority_lower = lower > upper
    for node, word in zip(nodes, words):
        if majority_lower and word != word.lower():
            casing = "lowercase"
        elif not majority_lower and word != word.upper():
            casing = "uppercase"
        else:
            continue
        lint.run("ConsistentInstructionCasing", node,
                 f"Command '{word}' should match the case of the command majority ({casing})")


def _global_env(scope: GlobalScope) -> dict[str, str]:
    env = {k: v for k, v in scope.values.items() if v is not None}
    for name in _PREDEFINED:
        env.setdefault(name, "")
    return env


def _default_base_names(dockerfile: Dockerfile, defaults: GlobalScope, lint: _Linter) -> None:
    env = _global_env(defaults)
    for stage in dockerfile.stages:
        try:
            name = expand_word(stage.base, env, dockerfile.escape)
        except DockerfileError:
            return
        if not _valid_reference(name):
            lint.run("InvalidDefaultArgInFrom", stage.from_.node,
                     f"Default value for ARG {stage.base} results in empty or invalid base "
                     "image name")


_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
           r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])"
           r"(?::[0-9]+)?")
_REFERENCE = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")


def _valid_reference(name: str) -> bool:
    """Whether distribution's ParseNormalizedNamed accepts ``name`` (its grammar; a bare
    64-hex name is an image ID, not a name)."""
    if not name or len(name) > 255 + 200 or re.fullmatch(r"[a-f0-9]{64}", name):
        return False
    return _REFERENCE.fullmatch(name) is not None


def _suggest(name: str, options: list[str]) -> str:
    """BuildKit's suggest.Search (case-sensitive): the closest option under distance 3."""
    best, least = "", 3
    for option in options:
        if option == name:
            return ""
        distance = _levenshtein(name, option)
        if distance < least:
            best, least = option, distance
    return best


def _levenshtein(a: str, b: str) -> int:
    if len(a) > 256 or len(b) > 256:  # hostile names: no quadratic work, no suggestion
        return 3
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _from_lines(dockerfile: Dockerfile, scope: GlobalScope, target: str | None,
                lint: _Linter) -> None:
    env = _global_env(scope)
    if target:
        env["TARGETSTAGE"] = target
    declared = list(dict.fromkeys(
        [d.name for a in dockerfile.meta_args for d in a.args] + list(env)))
    for stage in dockerfile.stages:
        node = stage.from_.node
        stage_lint = lint.for_comments(node.comments)
        words = [stage.base] + ([stage.platform] if stage.platform else [])
        for index, word in enumerate(words):
            recorder = _Recorder(env)
            try:
                result = expand_word(word, recorder, dockerfile.escape)
            except DockerfileError:
                break
            for name in recorder.unmatched:
                if name in declared:
                    continue
                hint = _suggest(name, declared)
                message = f"FROM argument '{name}' is not declared"
                stage_lint.run("UndefinedArgInFrom", node,
                               message + (f" (did you mean {hint}?)" if hint else ""))
            if index == 1:
                _platform_rules(stage, word, result, recorder, env, node, stage_lint)


def _platform_rules(stage: Stage, word: str, result: str, recorder: _Recorder,
                    env: Mapping[str, str], node: Node, lint: _Linter) -> None:
    matched, unmatched = set(recorder.matched), set(recorder.unmatched)
    if matched == {"TARGETPLATFORM"} and not unmatched and result == env["TARGETPLATFORM"]:
        lint.run("RedundantTargetPlatform", node, f"Setting platform to predefined {word} in "
                 "FROM is redundant as this is the default behavior")
    if matched or unmatched:
        return
    parsed = _parse_platform(result)
    if parsed is None:
        return
    name = stage.name or ""
    if parsed[0] in name or parsed[1] in name:
        return
    lint.run("FromPlatformFlagConstDisallowed", node,
             f'FROM --platform flag should not use constant value "{result}"')


def _parse_platform(text: str) -> tuple[str, str] | None:
    """(os, architecture) as containerd's platforms.Parse normalises them, or None."""
    parts = text.split("/")
    if not text or len(parts) > 3 or any(not re.fullmatch(r"[A-Za-z0-9_.-]+", p)
                                         for p in parts):
        return None
    first = parts[0].lower()
    if len(parts) == 1:
        if first in _OSES:
            return first, "amd64"
        return "linux", _ARCHES.get(first, first)
    return first, _ARCHES.get(parts[1].lower(), parts[1].lower())


def _reachable(dockerfile: Dockerfile, target: str | None) -> set[int]:
    """Stages the build dispatches: the target and what it needs (FROM, --from, mounts)."""
    stages = dockerfile.stages
    if not stages:
        return set()
    start = len(stages) - 1
    if target:
        found = dockerfile.find_stage(target)
        if found is None:
            return set()
        start = found.index
    seen: set[int] = set()
    todo = [start]
    while todo:
        index = todo.pop()
        if index in seen:
            continue
        seen.add(index)
        stage = stages[index]
        refs = [stage.base]
        for command in stage.commands:
            if isinstance(command, Copy) and command.from_:
                refs.append(command.from_)
            if isinstance(command, Run):
                refs.extend(m.from_ for m in command.mounts if m.from_)
        for ref in refs:
            if ref.isdigit() and int(ref) < index:
                todo.append(int(ref))
                continue
            named = dockerfile.find_stage(ref, before=index)
            if named is not None:
                todo.append(named.index)
    return seen


@dataclass
class _StageState:
    env: StageEnv | None  # None: the base image's Env is unknown
    shell: bool = False
    workdir_set: bool = False


def _dispatch(dockerfile: Dockerfile, scope: GlobalScope, indexes: list[int], lint: _Linter,
              base_env: BaseEnv | None, ignored: Ignored | None) -> None:
    finals: dict[int, _StageState] = {}
    for index in indexes:
        stage = dockerfile.stages[index]
        state = _start(dockerfile, scope, stage, finals, base_env)
        try:
            finals[index] = _walk(dockerfile, stage, state, lint, ignored)
        except DockerfileError:
            finals[index] = _StageState(None)


def _start(dockerfile: Dockerfile, scope: GlobalScope, stage: Stage,
           finals: Mapping[int, _StageState], base_env: BaseEnv | None) -> _StageState:
    try:
        base = scope.expand_from(stage.from_)
    except DockerfileError:
        return _StageState(None)
    parent = dockerfile.find_stage(base.image, before=stage.index)
    if parent is not None and parent.index in finals:
        got = finals[parent.index]
        return _StageState(got.env, got.shell, got.workdir_set)
    if base.image.lower() == "scratch":
        return _StageState(StageEnv.start(scope))
    pairs = base_env(base.image, base.platform) if base_env is not None else None
    return _StageState(StageEnv.start(scope, base_env=pairs) if pairs is not None else None)


def _walk(dockerfile: Dockerfile, stage: Stage, state: _StageState, lint: _Linter,
          ignored: Ignored | None) -> _StageState:
    used_once: dict[type, Instruction] = {}
    env = state.env
    for command in stage.commands:
        here = lint.for_comments(command.node.comments)
        if env is not None:
            _undefined_vars(command, env, dockerfile.escape, here)
            try:
                expanded, after = env.apply(command)
            except DockerfileError:
                return _StageState(None, state.shell, state.workdir_set)
        else:
            try:
                expanded = expand_instruction(command, {}, escape=dockerfile.escape)
            except DockerfileError:
                expanded = command
            after = None
        _command_rules(command, expanded, state, used_once, here, ignored)
        env = after
    state.env = env
    return state


def _command_rules(command: Instruction, expanded: Instruction, state: _StageState,
                   used_once: dict[type, Instruction], lint: _Linter,
                   ignored: Ignored | None) -> None:
    node, name = command.node, _command_word(command.node)
    if isinstance(command, (Env, Label)):
        legacy = node.args[2::3]
        for i in range(len(command.pairs)):
            if i < len(legacy) and legacy[i] == "":
                lint.run("LegacyKeyValueFormat", node, f'"{name} key=value" should be used '
                         f'instead of legacy "{name} key value" format')
            if isinstance(expanded, Env):
                _secret("ENV", expanded.pairs[i][0], node, lint)
    elif isinstance(command, Arg):
        for definition in command.args:
            _secret("ARG", definition.name, node, lint)
    elif isinstance(command, (Cmd, Entrypoint, Healthcheck)):
        previous = used_once.get(type(command))
        if previous is not None:
            lint.run("MultipleInstructionsDisallowed", previous.node,
                     f"Multiple {name} instructions should not be used in the same stage "
                     "because only the last one will be used")
        used_once[type(command)] = command
        if isinstance(command, (Cmd, Entrypoint)) and command.shell_form and not state.shell:
            lint.run("JSONArgsRecommended", node, f"JSON arguments recommended for {name} to "
                     "prevent unintended behavior related to OS signals")
    elif isinstance(command, Shell):
        state.shell = bool(command.shell)
    elif isinstance(command, Workdir) and isinstance(expanded, Workdir):
        if not state.workdir_set and not expanded.path.startswith("/"):
            lint.run("WorkdirRelativePath", node, f"Relative workdir {_go_quote(expanded.path)} "
                     "can have unexpected results if the base image changes")
        state.workdir_set = True
    elif isinstance(command, Expose) and isinstance(expanded, Expose):
        for port in expanded.ports:
            _expose(port, node, lint)
    elif isinstance(expanded, (Copy, Add)) and ignored is not None:
        if isinstance(expanded, Copy) and expanded.from_:
            return
        verb = "Add" if isinstance(expanded, Add) else "Copy"
        for source in expanded.sources:
            if isinstance(expanded, Add) and _remote(source):
                continue
            clean = _go_clean(source)
            if ignored(clean):
                lint.run("CopyIgnoredFile", node,
                         f"Attempting to {verb} file {_go_quote(clean)} that is excluded by "
                         ".dockerignore")


def _remote(source: str) -> bool:
    return source.startswith(("http://", "https://", "git@")) or ".git#" in source \
        or source.endswith(".git") and "://" in source


def _go_clean(path: str) -> str:
    """Go's filepath.Clean of a relative or absolute slash path."""
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    text = "/".join(out)
    return ("/" + text) if rooted else (text or ".")


def is_secret_name(key: str) -> bool:
    """SecretsUsedInArgOrEnv's test of an ARG or ENV name (``cloche explain`` uses it too)."""
    return bool(_SECRET.search(key)) and not _NOT_SECRET.search(key)


def _secret(instruction: str, key: str, node: Node, lint: _Linter) -> None:
    if is_secret_name(key):
        lint.run("SecretsUsedInArgOrEnv", node, f"Do not use ARG or ENV instructions for "
                 f"sensitive data ({instruction} {_go_quote(key)})")


def _expose(raw: str, node: Node, lint: _Linter) -> None:
    parts = raw.split(":")
    if len(parts) == 1:
        ip, host, container = "", "", parts[0]
    elif len(parts) == 2:
        ip, host, container = "", parts[0], parts[1]
    else:
        ip, host, container = ":".join(parts[:-2]), parts[-2], parts[-1]
    port, _, proto = container.partition("/")
    if not port or proto.lower() not in ("", "tcp", "udp", "sctp"):
        return  # an error when the step runs
    if proto != proto.lower():
        lint.run("ExposeProtoCasing", node,
                 f"Defined protocol '{raw}' in EXPOSE instruction should be lowercase")
    if ip or host:
        lint.run("ExposeInvalidFormat", node, "EXPOSE instruction should not define an IP "
                 f"address or host-port mapping, found '{raw}'")


def _words(command: Instruction) -> list[tuple[str, bool]]:
    """The words BuildKit expands with the linter watching: (word, heredoc body)."""
    if isinstance(command, (Env, Label)):
        return [(w, False) for pair in command.pairs for w in pair]
    if isinstance(command, (Copy, Add)):
        words = [w for w in (command.chown, command.chmod) if w]
        if isinstance(command, Add) and command.checksum:
            words.append(command.checksum)
        words += [*command.sources, command.dest]
        return [(w, False) for w in words] + [(h.content, True) for h in command.contents
                                              if h.expand]
    if isinstance(command, Workdir):
        return [(command.path, False)]
    if isinstance(command, User):
        return [(command.user, False)]
    if isinstance(command, Volume):
        return [(p, False) for p in command.paths]
    if isinstance(command, StopSignal):
        return [(command.signal, False)]
    if isinstance(command, Run):
        return [(m.spec, False) for m in command.mounts]
    return []


def _undefined_vars(command: Instruction, env: StageEnv, escape: str, lint: _Linter) -> None:
    current = env.environment
    words = _words(command)
    if isinstance(command, Arg):
        words = [(d.default, False) for d in command.args
                 if d.default is not None and d.name not in env.scope.build_args]
    missing: dict[str, None] = {}
    for word, heredoc in words:
        recorder = _Recorder(current)
        try:
            if heredoc:
                expand_heredoc(word, recorder, escape)
            else:
                expand_word(word, recorder, escape)
        except DockerfileError:
            pass
        missing.update(recorder.unmatched)
    options = list(current)
    for name in missing:
        if name in env.declared_args or name in _NON_ENV_ARGS:
            continue
        hint = _suggest(name, options)
        lint.run("UndefinedVar", command.node, f"Usage of undefined variable '${name}'"
                 + (f" (did you mean ${hint}?)" if hint else ""))

