"""A Dockerfile as stages: the meta ARGs before the first FROM, then one Stage per FROM.

This is the shape BuildKit's ``instructions.Parse`` gives the rest of the build: ARGs before
the first FROM are global (usable in FROM lines only), every other instruction belongs to the
stage opened by the FROM above it. Names are lower-cased (stage names are case-insensitive).
"""

from __future__ import annotations

from dataclasses import dataclass

from cloche.dockerfile.flags import error_at
from cloche.dockerfile.from_nodes import build_instruction
from cloche.dockerfile.instructions import Arg, From, Instruction
from cloche.dockerfile.node import SyntaxTree

__all__ = ["Stage", "Dockerfile", "parse_dockerfile", "dockerfile_from_tree"]


@dataclass(frozen=True)
class Stage:
    """One build stage: ``FROM base [AS name]`` and the instructions under it.

    ``base`` and ``platform`` are as written (expanded later with the global ARGs).
    """

    index: int
    from_: From
    commands: tuple[Instruction, ...]

    @property
    def name(self) -> str | None:
        return self.from_.name

    @property
    def base(self) -> str:
        return self.from_.image

    @property
    def platform(self) -> str | None:
        return self.from_.platform

    @property
    def line(self) -> int:
        return self.from_.line

    @property
    def display_name(self) -> str:
        """The name, or ``stage-N`` as BuildKit calls an unnamed stage."""
        return self.name or f"stage-{self.index}"


@dataclass(frozen=True)
class Dockerfile:
    """A typed Dockerfile: global ARGs, stages, and the syntax tree they came from."""

    meta_args: tuple[Arg, ...]
    stages: tuple[Stage, ...]
    tree: SyntaxTree

    @property
    def file(self) -> str:
        return self.tree.file

    @property
    def escape(self) -> str:
        return self.tree.directives.escape

    def find_stage(self, name: str, before: int | None = None) -> Stage | None:
        """The stage called ``name`` (case-insensitive), the last one before ``before``."""
        wanted = name.lower()
        found = None
        for stage in self.stages[:before]:
            if stage.name == wanted:
                found = stage
        return found


def dockerfile_from_tree(tree: SyntaxTree) -> Dockerfile:
    """Type every node of ``tree`` and group the instructions into stages."""
    meta_args: list[Arg] = []
    stages: list[tuple[From, list[Instruction]]] = []
    for node in tree.nodes:
        instruction = build_instruction(node, tree)
        if isinstance(instruction, From):
            stages.append((instruction, []))
        elif not stages:
            if not isinstance(instruction, Arg):
                raise error_at(node, tree, f"{node.keyword.upper()} before the first FROM: "
                               "no build stage in current context",
                               hint="only ARG may come before the first FROM")
            meta_args.append(instruction)
        else:
            stages[-1][1].append(instruction)
    return Dockerfile(
        meta_args=tuple(meta_args),
        stages=tuple(Stage(i, frm, tuple(cmds)) for i, (frm, cmds) in enumerate(stages)),
        tree=tree,
    )


def parse_dockerfile(text: str, file: str = "Dockerfile") -> Dockerfile:
    """Parse and type a Dockerfile; every problem is a located ``DockerfileError``."""
    from cloche.dockerfile.parser import parse  # the parser module is the layer below

    return dockerfile_from_tree(parse(text, file=file))
