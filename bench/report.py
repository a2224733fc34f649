"""Tables from a results dict: plain text for the terminal, markdown for docs/benchmarks.md."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

SCENARIOS = ("cold", "noop", "one-file", "mtime-only")
SCENARIO_TITLES = {"cold": "cold", "noop": "no-op rebuild", "one-file": "one file changed",
                   "mtime-only": "mtime only changed"}
DOCS_START = "<!-- bench:results:start -->"
DOCS_END = "<!-- bench:results:end -->"


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def build_rows(results: dict) -> list[list[str]]:
    rows = []
    for case in results["builds"]:
        name, per_tool = case["project"], case["timings"]
        for scenario in SCENARIOS:
            med = {tool: median([t["seconds"] for t in per_tool.get(tool, {}).get(scenario, [])])
                   for tool in ("cloche", "buildkit", "buildah")}
            n = "/".join(str(len(per_tool.get(t, {}).get(scenario, [])))
                         for t in ("cloche", "buildkit", "buildah"))
            rows.append([name, SCENARIO_TITLES[scenario], _fmt_s(med["cloche"]),
                         _fmt_s(med["buildkit"]), _fmt_s(med["buildah"]),
                         _ratio(med["cloche"], med["buildkit"]),
                         _ratio(med["cloche"], med["buildah"]), n])
    return rows


BUILD_HEADER = ["case", "build", "cloche s", "BuildKit s", "buildah s", "cloche/BuildKit",
                "cloche/buildah", "runs (c/bk/bh)"]
EXPORT_HEADER = ["layer export (same tree)", "MB/s", "MB per CPU s", "s", "blob/tar",
                 "vs zlib 6"]


def export_rows(results: dict) -> list[list[str]]:
    exp = results.get("export")
    if not exp:
        return []
    meds = {m: median([r["seconds"] for r in rs]) for m, rs in exp["methods"].items()}
    ref = next((m for m in meds if m.startswith("zlib")), None)
    rows = []
    for method, rs in exp["methods"].items():
        tar, blob = rs[0]["tar_bytes"], rs[0]["blob_bytes"]
        mbps = tar / 1e6 / meds[method]
        rel = "-" if ref is None else f"{meds[ref] / meds[method]:.1f}x"
        cpu = median([r.get("cpu_seconds", 0.0) for r in rs]) or 0.0
        per_cpu = f"{tar / 1e6 / cpu:.0f}" if cpu else "-"
        rows.append([method, f"{mbps:.0f}", per_cpu, f"{meds[method]:.2f}", f"{blob / tar:.2f}",
                     rel])
    return rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def markdown(results: dict) -> str:
    m = results["machine"]
    version = results["versions"].get("cloche", "?").split()[-1]
    commit = results.get("commit", "?")
    commit = commit.split()[0] + (" +" + commit.split("(+", 1)[1].rstrip(")")
                                  if "(+" in commit else "")
    parts = [f"Run of {results['started']} (UTC), cloche {version} "
             f"at commit {commit}; {m['cores']} cores, {m['memory_gb']} GB, "
             f"kernel {m['kernel']}; load average {m['load_before']} before, "
             f"{m['load_after']} after; repeats: {results['repeat']}, median shown; "
             f"{', '.join(v for k, v in results['versions'].items() if k != 'cloche')}.",
             ""]
    if results["builds"]:
        parts += [md_table(BUILD_HEADER, build_rows(results)), ""]
        ids = same_image_notes(results)
        if ids:
            parts += ["No-op rebuild gives the same image ID as the build before it: " + ids, ""]
        ids = same_image_notes(results, "mtime_same_image")
        if ids:
            parts += ["mtime-only rebuild gives the same image ID as the build before it: "
                      + ids, ""]
    rows = export_rows(results)
    if rows:
        exp = results["export"]
        parts += [f"Layer export of a {exp['tar_bytes'] / 1e6:.0f} MB tree "
                  f"({exp['files']} files, real binaries and text from /usr):", "",
                  md_table(EXPORT_HEADER, rows), ""]
    return "\n".join(parts)


def same_image_notes(results: dict, key: str = "noop_same_image") -> str:
    notes = []
    for case in results["builds"]:
        for tool, per in case["timings"].items():
            same = per.get(key)
            if same is not None:
                notes.append(f"{case['project']}/{tool} {'yes' if all(same) else 'no'}")
    return ", ".join(notes)


def print_report(results: dict) -> str:
    out = []
    if results["builds"]:
        out += [text_table(BUILD_HEADER, build_rows(results)), ""]
        ids = same_image_notes(results)
        if ids:
            out += ["no-op rebuild keeps the image ID: " + ids, ""]
        ids = same_image_notes(results, "mtime_same_image")
        if ids:
            out += ["mtime-only rebuild keeps the image ID: " + ids, ""]
    rows = export_rows(results)
    if rows:
        out += [text_table(EXPORT_HEADER, rows)]
    return "\n".join(out)


def write_docs(doc: Path, results: dict) -> None:
    """Replace the text between the two markers in ``doc`` (appended when they are missing)."""
    replace_block(doc, DOCS_START, DOCS_END, markdown(results))


def replace_block(doc: Path, start: str, end: str, body: str) -> None:
    """Replace the text between the markers ``start`` and ``end`` in ``doc`` with ``body``
    (the block is appended when the markers are missing)."""
    block = f"{start}\n{body}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)
