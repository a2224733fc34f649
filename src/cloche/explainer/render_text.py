"""The report as text for people (``cloche explain``) and as the short summary
``cloche build --explain`` prints."""

from __future__ import annotations

import json

from cloche.explainer.model import KINDS, Finding, Report

__all__ = ["human_size", "render_summary", "render_text"]


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _finding_lines(f: Finding) -> list[str]:
    head = f"  [{f.kind}] {f.rule}: {f.message}"
    lines = [head]
    origin = []
    if f.stage:
        origin.append(f"stage {f.stage}" if not f.stage.startswith(("stage ", "base "))
                      else f.stage)
    if f.instruction:
        where = f" (line {f.line})" if f.line else ""
        origin.append(f"{f.instruction}{where}")
    if origin:
        lines.append("      from: " + ": ".join(origin))
    if f.fix:
        lines.append(f"      fix:  {f.fix}")
    return lines


def render_text(report: Report) -> str:
    out: list[str] = []
    name = f"{report.reference} " if report.reference else ""
    out.append(f"image {name}{report.image} ({report.platform}, {human_size(report.size)} in "
               f"{len(report.layers)} layers)")
    if report.entrypoint:
        out.append(f"runs {json.dumps(list(report.entrypoint))}" +
                   (f" as {report.user}" if report.user else ""))
    out.append("")
    if report.built:
        out.append("stages:")
        for s in report.stages:
            label = s.name or f"stage {s.index}"
            if s.ships == "skipped":
                out.append(f"  {s.index} {label}: skipped ({s.skipped})")
                continue
            ships = {"final": "the final image", "base": "the final image is built on it",
                     "copied": f"{human_size(s.shipped_size)} copied into the final image",
                     "no": "nothing of it ships"}[s.ships]
            out.append(f"  {s.index} {label}: FROM {s.base or '?'}: "
                       f"{human_size(s.size)} ({human_size(s.base_size)} base + "
                       f"{human_size(s.added_size)} added); {ships}")
            for layer in s.layers:
                line = f" (line {layer.line})" if layer.line else ""
                out.append(f"      {human_size(layer.size):>9}  {layer.instruction}{line}")
        out.append("")
        if report.sources:
            out.append("the final image is made of:")
            for src in report.sources:
                out.append(f"  {human_size(src.size):>9}  {src.how} {src.name}")
            out.append("")
    out.append("final layers:")
    for layer in report.layers:
        who = f"[{layer.stage}] " if layer.stage else ""
        out.append(f"  {layer.index:>3} {human_size(layer.size):>9}  {who}{layer.instruction}")
    out.append("")
    if not report.findings:
        out.append("findings: none (no leak, it should run, no waste found)")
    else:
        counts = ", ".join(f"{report.count(k)} {k}" for k in KINDS)
        out.append(f"findings: {counts}")
        for f in report.findings:
            out.extend(_finding_lines(f))
    return "\n".join(out) + "\n"


def render_summary(report: Report, limit: int = 5) -> str:
    """A few lines after a build: what ships from where, and the first findings."""
    out = [f"explain: {human_size(report.size)} in {len(report.layers)} layers; " +
           "; ".join(f"{human_size(s.size)} {s.how} {s.name}" for s in report.sources)]
    if not report.findings:
        out.append("explain: no finding (no leak, it should run, no waste found)")
        return "\n".join(out) + "\n"
    counts = ", ".join(f"{report.count(k)} {k}" for k in KINDS if report.count(k))
    out.append(f"explain: {counts}")
    for f in report.findings[:limit]:
        where = f" ({f.instruction})" if f.instruction else ""
        out.append(f"  [{f.kind}] {f.rule}: {f.message}{where}")
    if len(report.findings) > limit:
        out.append(f"  ... {len(report.findings) - limit} more: cloche explain "
                   f"{report.reference or report.image}")
    return "\n".join(out) + "\n"
