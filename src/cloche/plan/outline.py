"""What ``--call targets`` and ``--call outline`` report: BuildKit's frontend subrequests.

``targets`` lists every stage (its name, the description a ``# NAME text`` comment right above
its FROM gives, whether it is the default: the last one). ``outline`` tells what the build of
one target takes: the build args that reach it, with their values and descriptions, the
secrets and SSH sockets its RUN steps mount. As BuildKit's outline:

- a stage's ``ARG`` is listed (its value: the build arg given, else its default expanded);
  ``ARG X`` without a default that inherits a global ``ARG X`` is listed as the global one;
- a global ARG is listed when a FROM line of a stage the target needs reads it, or a stage
  redeclares it, and so is each global its default reads (``ARG B=$A``);
- a description is the comment line right above the ARG (or FROM) that starts with the name;
- entries are sorted by line; the JSON has BuildKit's field names and ``sources``.

Computed from the plan only: nothing is pulled, no step runs.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cloche.dockerfile.instructions import Arg, ArgDef, Instruction, Run
from cloche.dockerfile.shell import expand_word
from cloche.dockerfile.stages import Dockerfile
from cloche.plan.graph import BuildPlan, PlannedStage

__all__ = ["outline", "targets"]


def description(instruction: Instruction, name: str | None) -> str:
    """BuildKit's ``getComment``: the first comment line above that starts with ``NAME ``."""
    if not name:
        return ""
    for line in instruction.node.comments:
        if line.startswith(name + " "):
            return line[len(name) + 1:]
    return ""


def _location(line: int) -> dict[str, Any]:
    return {"ranges": [{"start": {"line": line}, "end": {"line": line}}]}


def _sources(dockerfile: Dockerfile) -> list[str]:
    """The Dockerfile's text, base64 as Go's JSON writes a byte slice."""
    text = "\n".join(dockerfile.tree.lines)
    return [base64.b64encode(text.encode()).decode()] if text else []


def targets(dockerfile: Dockerfile) -> dict[str, Any]:
    """BuildKit's ``targets.List``: every stage, the last one the default."""
    found: list[dict[str, Any]] = []
    last = len(dockerfile.stages) - 1
    for stage in dockerfile.stages:
        entry: dict[str, Any] = {}
        if stage.name:
            entry["name"] = stage.name
        if stage.index == last:
            entry["default"] = True
        text = description(stage.from_, stage.name)
        if text:
            entry["description"] = text
        entry["base"] = stage.base
        if stage.platform:
            entry["platform"] = stage.platform
        entry["location"] = _location(stage.line)
        found.append(entry)
    return {"targets": found, "sources": _sources(dockerfile)}


class _Reads(Mapping[str, str]):
    """An environment that records which names an expansion looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._env = values
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._env[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


def _reads(word: str | None, values: Mapping[str, str], escape: str) -> set[str]:
    if not word:
        return set()
    env = _Reads(values)
    try:
        expand_word(word, env, escape)
    except Exception:  # noqa: BLE001 - a bad word fails the build elsewhere, located
        pass
    return env.read


@dataclass(frozen=True)
class _ArgInfo:
    name: str
    value: str | None
    description: str
    line: int

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name}
        if self.description:
            entry["description"] = self.description
        if self.value:
            entry["value"] = self.value
        entry["location"] = _location(self.line)
        return entry


def _globals(dockerfile: Dockerfile, build_args: Mapping[str, str]
             ) -> tuple[dict[str, _ArgInfo], dict[str, set[str]]]:
    """Each global ARG's info (the last declaration wins) and the globals its default reads."""
    escape = dockerfile.escape
    values: dict[str, str] = {}
    infos: dict[str, _ArgInfo] = {}
    deps: dict[str, set[str]] = {}
    for instruction in dockerfile.meta_args:
        for arg in instruction.args:
            if arg.name in build_args:
                value: str | None = build_args[arg.name]
                reads: set[str] = set()
            elif arg.default is not None:
                reads = _reads(arg.default, values, escape)
                value = expand_word(arg.default, values, escape)
                if arg.name in reads:  # ARG A=$A-more: A's earlier reads too
                    reads = (reads - {arg.name}) | deps.get(arg.name, set())
            else:
                value, reads = None, set()
            if value is not None:
                values[arg.name] = value
            deps[arg.name] = reads
            infos[arg.name] = _ArgInfo(arg.name, value, description(instruction, arg.name),
                                       instruction.line)
    return infos, deps


def outline(plan: BuildPlan, build_args: Mapping[str, str]) -> dict[str, Any]:
    """BuildKit's ``outline.Outline`` of the plan's target."""
    dockerfile = plan.dockerfile
    escape = dockerfile.escape
    infos, deps = _globals(dockerfile, build_args)
    global_values = {k: v.value or "" for k, v in infos.items()}
    args: dict[str, _ArgInfo] = {}
    used_globals: set[str] = set()
    secrets: dict[str, tuple[bool, int]] = {}
    ssh: dict[str, tuple[bool, int]] = {}
    walk = [plan.stages[plan.target]] + [s for s in reversed(plan.stages)
                                         if s.reachable and s.index != plan.target]
    for planned in walk:  # the target's own first: its ARG wins over another stage's
        stage = dockerfile.stages[planned.index]
        used_globals |= _reads(stage.base, global_values, escape)
        used_globals |= _reads(stage.platform, global_values, escape)
        if planned.replaced:
            continue
        for written, expanded in zip(planned.commands, _expanded_commands(planned), strict=False):
            if isinstance(written, Arg):
                _stage_args(written, expanded, build_args, infos, args, used_globals)
            elif isinstance(written, Run):
                _run_mounts(written, secrets, ssh)
    pending = list(used_globals)
    while pending:  # the globals that a used global's default reads, and theirs
        name = pending.pop()
        for dep in deps.get(name, ()):
            if dep not in used_globals:
                used_globals.add(dep)
                pending.append(dep)
    for name in used_globals:
        if name in infos and name not in args:
            args[name] = infos[name]
    target = plan.stages[plan.target]
    stage = dockerfile.stages[target.index]
    result: dict[str, Any] = {}
    if stage.name:
        result["name"] = stage.name
    text = description(stage.from_, stage.name)
    if text:
        result["description"] = text
    ordered = sorted(args.values(), key=lambda a: (a.line, a.name))
    if ordered:
        result["args"] = [a.to_dict() for a in ordered]
    if secrets:
        result["secrets"] = _mounts_json(secrets)
    if ssh:
        result["ssh"] = _mounts_json(ssh)
    result["sources"] = _sources(dockerfile)
    return result


def _expanded_commands(planned: PlannedStage) -> tuple[Instruction, ...]:
    """The plan-time expansion of the stage's own commands (after its triggers)."""
    return planned.expanded[len(planned.triggers):]


def _stage_args(written: Arg, expanded: Instruction, build_args: Mapping[str, str],
                infos: Mapping[str, _ArgInfo], args: dict[str, _ArgInfo],
                used_globals: set[str]) -> None:
    values: tuple[ArgDef, ...] = expanded.args if isinstance(expanded, Arg) else written.args
    for arg, done in zip(written.args, values, strict=False):
        if arg.name in args:
            continue  # an earlier stage of the walk (the target first) has it
        if arg.name in build_args:
            value: str | None = build_args[arg.name]
        elif arg.default is None and arg.name in infos:
            used_globals.add(arg.name)  # inherits the global: listed as the global
            continue
        else:
            value = done.default
        args[arg.name] = _ArgInfo(arg.name, value, description(written, arg.name), written.line)


def _run_mounts(run: Run, secrets: dict[str, tuple[bool, int]],
                ssh: dict[str, tuple[bool, int]]) -> None:
    import posixpath

    for mount in run.mounts:
        if mount.type == "secret":
            name = mount.id or (posixpath.basename(mount.target) if mount.target else "")
            table = secrets
        elif mount.type == "ssh":
            name, table = mount.id or "default", ssh
        else:
            continue
        if name and name not in table:
            table[name] = (mount.required, run.line)
        elif name and mount.required:
            table[name] = (True, table[name][1])


def _mounts_json(found: Mapping[str, tuple[bool, int]]) -> list[dict[str, Any]]:
    out = []
    for name, (required, line) in sorted(found.items(), key=lambda kv: (kv[1][1], kv[0])):
        entry: dict[str, Any] = {"name": name}
        if required:
            entry["required"] = True
        entry["location"] = _location(line)
        out.append(entry)
    return out
