"""The report as one self-contained HTML page: inline CSS, an inline SVG stage graph (each
stage with its size and what it ships, FROM and COPY --from edges with their weight), the final
layers and the findings. Nothing is fetched: it opens from a file:// URL with no server."""

from __future__ import annotations

import json
import textwrap
from html import escape

from cloche.explainer.model import KINDS, Report, StageWeight
from cloche.explainer.render_text import human_size

__all__ = ["render_html"]

NODE_W, NODE_H, COL_W, ROW_H, PAD = 230, 86, 330, 112, 30
_COLORS = {"final": "#d9f2d9", "base": "#dbe8fb", "copied": "#fcf1cc", "no": "#eeeeee",
           "skipped": "#ffffff"}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
code,.mono{font-family:ui-monospace,monospace;font-size:12px}
table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top} th{background:#f6f6f6} td.num{text-align:right;white-space:nowrap}
.kind-leak{color:#a40000}.kind-runtime{color:#8a4b00}.kind-waste{color:#555}
.finding{border-left:4px solid #ccc;padding:4px 10px;margin:6px 0}
.finding.leak{border-color:#c00}.finding.runtime{border-color:#e08a00}.finding.waste{border-color:#999}
.fix{color:#145a14} svg text{font:12px system-ui,sans-serif} svg .title{font-weight:bold}
g.stage-node rect{stroke:#555;stroke-width:1} g.stage-node.skipped rect{stroke-dasharray:4 3}
g.stage-node:hover rect{stroke-width:2.5} .edge{stroke:#777;fill:none}
.edge.copy{stroke:#b58900;stroke-dasharray:5 3}
"""

_JS = """
document.querySelectorAll('g.stage-node').forEach(function(node){
  node.addEventListener('click', function(){
    var row = document.getElementById('stage-row-' + node.dataset.stage);
    if (row) { row.scrollIntoView({behavior:'smooth'}); row.style.background='#ffffcc'; }
  });
});
"""


def _levels(stages: tuple[StageWeight, ...]) -> dict[int, int]:
    level: dict[int, int] = {}
    for s in sorted(stages, key=lambda s: s.index):
        level.setdefault(s.index, 0)
        if s.base_stage is not None and s.base_stage in level:
            level[s.index] = max(level[s.index], level[s.base_stage] + 1)
    for _ in range(len(stages)):  # COPY --from edges push the reader right (bounded passes)
        changed = False
        for s in stages:
            for reader in s.copies_to:
                if reader in level and level[reader] <= level[s.index]:
                    level[reader] = level[s.index] + 1
                    changed = True
        if not changed:
            break
    return level


def _graph(report: Report) -> str:
    stages = report.stages
    level = _levels(stages)
    rows: dict[int, int] = {}
    pos: dict[int, tuple[int, int]] = {}
    for s in sorted(stages, key=lambda s: (level[s.index], s.index)):
        col = level[s.index]
        row = rows.get(col, 0)
        rows[col] = row + 1
        pos[s.index] = (PAD + col * COL_W, PAD + row * ROW_H)
    width = PAD * 2 + (max(level.values(), default=0) + 1) * COL_W
    height = PAD * 2 + max(rows.values(), default=1) * ROW_H
    parts = [f'<svg id="stage-graph" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             'aria-label="stage graph">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
             'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
             '<path d="M 0 0 L 10 5 L 0 10 z" fill="#777"/></marker></defs>']
    by_index = {s.index: s for s in stages}
    for s in stages:
        x, y = pos[s.index]
        if s.base_stage is not None and s.base_stage in pos:
            px, py = pos[s.base_stage]
            parts.append(_edge(px + NODE_W, py + NODE_H // 2, x, y + NODE_H // 2, "FROM",
                               "from", s.base_stage, s.index))
        for reader in s.copies_to:
            if reader not in pos:
                continue
            rx, ry = pos[reader]
            size = sum(layer.size for layer in by_index[reader].layers
                       if layer.source in (f"COPY --from={s.name}", f"COPY --from={s.index}"))
            label = "COPY --from" + (f" {human_size(size)}" if size else "")
            parts.append(_edge(x + NODE_W, y + NODE_H // 2 + 10, rx, ry + NODE_H // 2 + 10,
                               label, "copy", s.index, reader))
    for s in stages:
        x, y = pos[s.index]
        name = s.name or f"stage {s.index}"
        if s.ships == "skipped":
            lines = textwrap.wrap(f"skipped: {s.skipped or ''}", 36)[:3]
        else:
            lines = [f"FROM {s.base or '?'}"[:38],
                     f"{human_size(s.size)} ({human_size(s.added_size)} added)",
                     f"ships {human_size(s.shipped_size)} ({s.ships})"]
        color = _COLORS.get(s.ships, "#fff")
        parts.append(f'<g class="stage-node {escape(s.ships)}" data-stage="{s.index}" '
                     f'id="stage-{s.index}"><title>{escape(name)}</title>'
                     f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="8" '
                     f'fill="{color}"/>'
                     f'<text class="title" x="{x + 10}" y="{y + 20}">{escape(name)}</text>')
        for i, text in enumerate(lines):
            parts.append(f'<text x="{x + 10}" y="{y + 40 + i * 16}">{escape(text)}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


def _edge(x1: int, y1: int, x2: int, y2: int, label: str, kind: str, src: int,
          dst: int) -> str:
    mid = (x1 + x2) // 2
    return (f'<g class="stage-edge" data-from="{src}" data-to="{dst}">'
            f'<path class="edge {kind}" marker-end="url(#arrow)" '
            f'd="M {x1} {y1} C {mid} {y1}, {mid} {y2}, {x2} {y2}"/>'
            f'<text x="{x1 + 6}" y="{min(y1, y2) - 6}">{escape(label)}</text></g>')


def render_html(report: Report) -> str:
    title = f"cloche explain: {report.reference or report.image}"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{escape(title)}</title>",
           "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
           "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">",
           f"<style>{_CSS}</style></head><body>",
           f"<h1>{escape(title)}</h1>",
           f'<p class="mono">{escape(report.image)} · {escape(report.platform)} · '
           f"{escape(human_size(report.size))} in {len(report.layers)} layers</p>"]
    counts = " · ".join(f'<span class="kind-{k}">{report.count(k)} {k}</span>' for k in KINDS)
    out.append(f"<p>Findings: {counts}</p>")
    out.append("<h2>Stages</h2>")
    out.append(_graph(report))
    out.append("<table><tr><th>#</th><th>stage</th><th>base</th><th>size</th><th>added</th>"
               "<th>ships</th><th>layers</th></tr>")
    for s in report.stages:
        layers = "<br>".join(f"{escape(human_size(layer.size))} {escape(layer.instruction)}"
                             for layer in s.layers)
        ships = f"skipped: {s.skipped}" if s.ships == "skipped" else \
            f"{human_size(s.shipped_size)} ({s.ships})"
        out.append(f'<tr id="stage-row-{s.index}"><td>{s.index}</td>'
                   f"<td>{escape(s.name or '')}</td><td>{escape(s.base or '')}</td>"
                   f'<td class="num">{escape(human_size(s.size))}</td>'
                   f'<td class="num">{escape(human_size(s.added_size))}</td>'
                   f"<td>{escape(ships)}</td><td class=\"mono\">{layers}</td></tr>")
    out.append("</table>")
    if report.sources:
        out.append("<h2>What the final image is made of</h2><table>"
                   "<tr><th>size</th><th>how</th><th>from</th></tr>")
        for src in report.sources:
            out.append(f'<tr><td class="num">{escape(human_size(src.size))}</td>'
                       f"<td>{escape(src.how)}</td><td>{escape(src.name)}</td></tr>")
        out.append("</table>")
    out.append('<h2>Final layers</h2><table id="final-layers"><tr><th>#</th><th>size</th>'
               "<th>stage</th><th>instruction</th></tr>")
    for layer in report.layers:
        out.append(f'<tr class="layer"><td>{layer.index}</td>'
                   f'<td class="num">{escape(human_size(layer.size))}</td>'
                   f"<td>{escape(layer.stage or '')}</td>"
                   f'<td class="mono">{escape(layer.instruction)}</td></tr>')
    out.append("</table><h2>Findings</h2>")
    if not report.findings:
        out.append("<p>None: no leak found, it should run, no waste found.</p>")
    for f in report.findings:
        origin = " · ".join(escape(x) for x in (f.stage, f.instruction) if x)
        out.append(f'<div class="finding {escape(f.kind)}"><b class="kind-{escape(f.kind)}">'
                   f"{escape(f.kind)} · {escape(f.rule)}</b><br>{escape(f.message)}" +
                   (f'<br><span class="mono">{origin}</span>' if origin else "") +
                   (f'<br><span class="fix">fix: {escape(f.fix)}</span>' if f.fix else "") +
                   "</div>")
    data = json.dumps(report.to_json()).replace("<", "\\u003c")
    out.append(f'<script type="application/json" id="report-data">{data}</script>')
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(out) + "\n"
