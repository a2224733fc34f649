"""Benchmark: cloche side by side with BuildKit (Docker engine) and buildah, in one run.

    sudo .venv/bin/python bench/run.py [--quick] [--write-docs]

Cases: a multi-stage build (busybox "compile" stage, scratch release stage), a big context
(40,000 files, ``COPY . /ctx``), a fan-in (four independent stages that each sleep 3 s, a
final stage copying from all) and a big layer (a first stage writing ~305 MB no output ships,
a final stage exporting a ~610 MB layer); with ``--cases ...,go``, examples/go-hello (Go
compiles it in a golang image with a cache-mounted Go build cache, a distroless/static-like
image ships it; both bases made by examples/make-base-images.sh and served to every tool by a
docker-registry on loopback). For each case and tool, in this order: a cold build (the tool's
build cache and cache mounts emptied, base images present: pulled before the clock starts), a
no-op rebuild, a rebuild after one file's content changed, a rebuild after one other file's
mtime alone changed. The whole sequence is repeated (``--repeat``), the tools taking turns
within each repetition, and the median shown.
Then layer export throughput (cloche's tar writer with ISA-L gzip, zstd, none, and Python's
zlib level 6 as the reference) on a ~200 MB tree.

Results: a table on stdout, JSON in bench/results/, and with ``--write-docs`` the markdown
table in docs/benchmarks.md. Timings are wall-clock of whole commands (process start included).
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report, workload  # noqa: E402
from bench.tools import ALL, BuildFailed, Cloche, Tool  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", choices=("builds", "second-machine"), default="builds",
                   help="builds (default): the cases below, tool by tool; second-machine: "
                        "examples/go-hello built on a machine A that exports its cache to a "
                        "loopback registry, then on an empty machine B that imports it, "
                        "cloche against a standalone buildkitd (bench/second_machine.py; "
                        "--repeat, --cloche, --workdir, --keep, --write-docs apply)")
    p.add_argument("--quick", action="store_true",
                   help="one repetition, a 5,000-file context, a 64 MB export tree")
    p.add_argument("--repeat", type=int, help="repetitions of each measurement (default 3)")
    p.add_argument("--files", type=int, help="files in the big context (default 40000)")
    p.add_argument("--export-mb", type=int, help="size of the export tree (default 200)")
    p.add_argument("--slow", type=float, default=90,
                   help="a tool whose first repetition of a case took longer than this many "
                        "seconds is not repeated for that case (default 90)")
    p.add_argument("--tools", default="cloche,buildkit,buildah",
                   help="comma-separated subset of cloche,buildkit,buildah and cloche's "
                        "modes: cloche-chroot, cloche-user, cloche-user-fuse, cloche-image")
    p.add_argument("--cases", default="multistage,context,fanin,biglayer,export",
                   help="comma-separated subset of multistage,context,fanin,biglayer,export,go "
                        "(default: all but go; go compiles examples/go-hello, a cold Go build "
                        "of the standard library for each tool and repetition: 5-10 minutes "
                        "with three tools and three repetitions, more the first time on a machine "
                        "(make-base-images.sh debootstraps); needs docker-registry and "
                        "debootstrap)")
    p.add_argument("--cloche", default=str(ROOT / ".venv" / "bin" / "cloche"),
                   help="the cloche executable")
    p.add_argument("--workdir", default="/var/tmp/cloche-bench", help="scratch directory")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--write-docs", action="store_true",
                   help="write the tables into docs/benchmarks.md")
    p.add_argument("--from-json", metavar="FILE",
                   help="measure nothing: show (and with --write-docs, write) a saved result")
    args = p.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.files = args.files or (5_000 if args.quick else 40_000)
    args.export_mb = args.export_mb or (64 if args.quick else 200)
    return args


def machine() -> dict:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return {"cores": os.cpu_count(), "memory_gb": round(mem / 2**30), "kernel": platform.release(),
            "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg())}


def git_commit() -> str:
    r = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return "?"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.splitlines()
    text = r.stdout.strip()[:80]
    return text + (f" (+{len(dirty)} uncommitted files in src/)" if dirty else "")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _reset(tool: Tool, project: workload.Project, attempts: int = 3) -> None:
    """Untimed preparation, retried: on a shared machine a package install running next to
    the benchmark can briefly take away files such as /etc/containers/policy.json."""
    for attempt in range(attempts):
        try:
            tool.reset()
            for ref in project.pulls:
                tool.pull(ref)
            return
        except BuildFailed as e:
            if attempt == attempts - 1:
                raise
            log(f"{tool.name}: preparing a cold cache failed, retrying: {str(e)[-300:]}")
            time.sleep(3)


def bench_project(project: workload.Project, tools: list[Tool], repeat: int,
                  slow: float) -> dict:
    timings: dict[str, dict[str, list]] = {t.name: {} for t in tools}
    for rep in range(repeat):
        for tool in tools:
            per = timings[tool.name]
            if rep and per.get("first_repetition_seconds", 0) > slow:
                continue  # one repetition of this tool took longer than --slow: keep it to one
            start = time.perf_counter()
            try:
                _reset(tool, project)
                cold = tool.build(project)
                noop = tool.build(project)
                project.change_one_file(generation=rep * 10 + len(per.get("cold", [])))
                one = tool.build(project)
                project.touch_one_file()
                mtime = tool.build(project)
            except (BuildFailed, subprocess.TimeoutExpired) as e:
                log(f"{tool.name} failed on {project.name}: {e}")
                per.setdefault("errors", []).append(str(e)[-1500:])
                continue
            for scenario, t in (("cold", cold), ("noop", noop), ("one-file", one),
                                ("mtime-only", mtime)):
                per.setdefault(scenario, []).append({"seconds": round(t.seconds, 3),
                                                     "image_id": t.image_id})
            per.setdefault("first_repetition_seconds", round(time.perf_counter() - start, 1))
            if cold.image_id and noop.image_id:
                per.setdefault("noop_same_image", []).append(cold.image_id == noop.image_id)
            if one.image_id and mtime.image_id:
                per.setdefault("mtime_same_image", []).append(one.image_id == mtime.image_id)
            log(f"{project.name} #{rep + 1} {tool.name}: cold {cold.seconds:.2f}s, "
                f"no-op {noop.seconds:.2f}s, one file {one.seconds:.2f}s, "
                f"mtime {mtime.seconds:.2f}s")
    return {"project": project.name, "files": project.files, "bytes": project.size,
            "timings": timings}


def bench_export(work: Path, export_mb: int, repeat: int) -> dict:
    from bench import export
    tree = work / "export-tree"
    files, size = workload.make_export_tree(tree, export_mb * 1_000_000)
    log(f"export tree: {files} files, {size / 1e6:.0f} MB")
    results = export.measure(tree, work / "export-out", repeat)
    for name, rs in results.items():
        log(f"export {name}: " + ", ".join(f"{r.mb_per_s:.0f} MB/s" for r in rs))
    first = next(iter(results.values()))[0]
    return {"files": files, "tar_bytes": first.tar_bytes,
            "methods": {m: [{"seconds": round(r.seconds, 3),
                             "cpu_seconds": round(r.cpu_seconds, 3), "tar_bytes": r.tar_bytes,
                             "blob_bytes": r.blob_bytes} for r in rs]
                        for m, rs in results.items()}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        if results.get("scenario") == "second-machine":
            from bench import second_machine
            print(second_machine.text(results))
            if args.write_docs:
                second_machine.write_docs(ROOT / "docs" / "benchmarks.md", results)
                print("docs/benchmarks.md updated")
            return 0
        print(report.print_report(results))
        if args.write_docs:
            report.write_docs(ROOT / "docs" / "benchmarks.md", results)
            print("docs/benchmarks.md updated")
        return 0
    if os.geteuid() != 0:
        print("bench/run.py runs builds that need root (overlay mounts, namespaces): use sudo",
              file=sys.stderr)
        return 2
    if args.scenario == "second-machine":
        from bench import second_machine
        return second_machine.main(args)
    cases = set(args.cases.split(","))
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = dt.datetime.now(dt.UTC)
    results: dict = {"started": started.strftime("%Y-%m-%d %H:%M"), "repeat": args.repeat,
                     "machine": machine(), "commit": git_commit(), "versions": {},
                     "args": vars(args), "builds": [], "skipped": {}}
    tools: list[Tool] = []
    registry: subprocess.Popen | None = None
    try:
        go_bases = None
        if "go" in cases:
            log("go: a registry on loopback and the base images (examples/make-base-images.sh)")
            try:
                host, registry = workload.start_registry(work / "registry")
                go_bases = workload.make_go_base_images(host, work / "go-bases", args.cloche)
            except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
                log(f"skipping the go case: {e}")
                results["skipped"]["go"] = str(e)[-500:]
        if cases & {"multistage", "context", "fanin", "biglayer"} or go_bases:
            base = workload.make_base_rootfs(work / "base" / "rootfs")
            base_tar = work / "base" / "rootfs.tar"
            subprocess.run(["tar", "-C", str(base), "-cf", str(base_tar), "."], check=True)
            for name in args.tools.split(","):
                cls = ALL[name]
                tool = cls(work, base, base_tar, cloche=args.cloche) \
                    if issubclass(cls, Cloche) else cls(work, base, base_tar)
                why = tool.available()
                if why:
                    log(f"skipping {name}: {why}")
                    results["skipped"][name] = why
                    continue
                results["versions"][name] = tool.version()
                tools.append(tool)
            projects = []
            if "multistage" in cases:
                projects.append(workload.make_multistage(work / "multistage"))
            if "context" in cases:
                log(f"generating a {args.files}-file context")
                projects.append(workload.make_big_context(work / "context", files=args.files))
            if "fanin" in cases:
                projects.append(workload.make_fanin(work / "fanin"))
            if "biglayer" in cases:
                projects.append(workload.make_biglayer(work / "biglayer"))
            if go_bases:
                projects.append(workload.make_go(work / "go", *go_bases))
            for project in projects:
                log(f"{project.name}: {project.files} files, {project.size / 1e6:.0f} MB")
                results["builds"].append(bench_project(project, tools, args.repeat, args.slow))
        if "export" in cases:
            results["versions"].setdefault(
                "cloche", subprocess.run([args.cloche, "--version"], capture_output=True,
                                         text=True).stdout.strip())
            results["export"] = bench_export(work, args.export_mb, args.repeat)
    finally:
        for tool in tools:
            try:
                tool.cleanup()
            except Exception as e:  # noqa: BLE001 - cleanup is best effort
                log(f"cleanup of {tool.name}: {e}")
        if registry is not None:
            registry.terminate()
            try:
                registry.wait(10)
            except subprocess.TimeoutExpired:
                registry.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    results["seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds())

    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(report.print_report(results))
    print(f"\n{results['seconds']} s in all; results in {out}")
    if args.write_docs:
        report.write_docs(ROOT / "docs" / "benchmarks.md", results)
        print("docs/benchmarks.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
