"""A BuildPlan as text for people, JSON for scripts, and DOT / Mermaid for diagrams.

These functions return strings; printing is the CLI's job. The text form answers, in this
order, what a person asks first: what will be built, from which bases, what each stage takes
from where, what is skipped and why, and what can run at the same time.
"""

from __future__ import annotations

import json

from cloche.plan.graph import BuildPlan, Dependency, PlannedStage

__all__ = ["render_text", "render_json", "render_dot", "render_mermaid", "RENDERERS"]


def _label(stage: PlannedStage) -> str:
    return f"{stage.index} ({stage.name})" if stage.name else str(stage.index)


def _source(plan: BuildPlan, dep: Dependency) -> str:
    if dep.stage is not None:
        return f"stage {_label(plan.stages[dep.stage])}"
    return f"image {dep.image}"


def render_text(plan: BuildPlan) -> str:
    target = plan.stages[plan.target]
    lines = [f"{plan.dockerfile.file}: {len(plan.stages)} stages, target {_label(target)}, "
             f"{len(plan.reachable)} to build", ""]
    for stage in plan.stages:
        if not stage.reachable:
            continue
        base = (f"stage {_label(plan.stages[stage.base_stage])}"
                if stage.base_stage is not None else
                f"context {stage.base_context}" if stage.base_context is not None
                else stage.base)
        platform = f" --platform={stage.platform}" if stage.platform else ""
        lines.append(f"stage {_label(stage)}  (line {stage.line}, level {stage.level})")
        lines.append(f"    from {base}{platform}")
        for dep in stage.dependencies:
            if dep.kind == "from":
                continue
            what = " ".join(dep.sources) or "/"
            verb = "copies" if dep.kind == "copy" else "mounts"
            lines.append(f"    {verb} {what} -> {dep.dest} from {_source(plan, dep)}"
                         f"  (line {dep.line})")
    skipped = [s for s in plan.stages if not s.reachable]
    if skipped:
        lines += ["", "skipped:"]
        lines += [f"    stage {_label(s)}: {s.skip_reason}" for s in skipped]
    lines += ["", "parallel levels:"]
    for number, level in enumerate(plan.levels):
        lines.append(f"    {number}: " + ", ".join(_label(plan.stages[i]) for i in level))
    images = sorted({img for s in plan.stages if s.reachable for img in s.images})
    if images:
        lines += ["", "images: " + ", ".join(images)]
    if plan.warnings:
        lines += [""] + [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def render_json(plan: BuildPlan) -> str:
    return json.dumps(plan.to_dict(), indent=2)


def _node_id(stage: PlannedStage) -> str:
    return f"s{stage.index}"


def render_dot(plan: BuildPlan) -> str:
    lines = ["digraph stages {", "  rankdir=LR;"]
    for stage in plan.stages:
        style = "" if stage.reachable else ", style=dashed, color=gray"
        if stage.index == plan.target:
            style += ", peripheries=2"
        lines.append(f'  {_node_id(stage)} [label={json.dumps(_label(stage))}{style}];')
    images: dict[str, str] = {}
    for stage in plan.stages:
        for image in stage.images:
            images.setdefault(image, f"i{len(images)}")
    for image, ident in images.items():
        lines.append(f"  {ident} [label={json.dumps(image)}, shape=box];")
    for stage in plan.stages:
        if stage.base_stage is None and stage.base in images:
            lines.append(f'  {images[stage.base]} -> {_node_id(stage)} [label="from"];')
        for dep in stage.dependencies:
            start = _node_id(plan.stages[dep.stage]) if dep.stage is not None \
                else images[dep.image or ""]
            lines.append(f'  {start} -> {_node_id(stage)} [label="{dep.kind}"];')
    lines.append("}")
    return "\n".join(lines)


def render_mermaid(plan: BuildPlan) -> str:
    lines = ["graph LR"]
    for stage in plan.stages:
        text = _label(stage).replace('"', "'")
        lines.append(f'  {_node_id(stage)}["{text}"]')
        if not stage.reachable:
            lines.append(f"  style {_node_id(stage)} stroke-dasharray: 5 5")
    images: dict[str, str] = {}
    for stage in plan.stages:
        for image in stage.images:
            if image not in images:
                images[image] = f"i{len(images)}"
                lines.append(f'  {images[image]}[("{image}")]')
    for stage in plan.stages:
        if stage.base_stage is None and stage.base in images:
            lines.append(f"  {images[stage.base]} -->|from| {_node_id(stage)}")
        for dep in stage.dependencies:
            start = _node_id(plan.stages[dep.stage]) if dep.stage is not None \
                else images[dep.image or ""]
            lines.append(f"  {start} -->|{dep.kind}| {_node_id(stage)}")
    return "\n".join(lines)


RENDERERS = {"text": render_text, "json": render_json, "dot": render_dot,
             "mermaid": render_mermaid}
