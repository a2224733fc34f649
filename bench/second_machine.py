"""The "second machine" scenario (issue 12): cloche's registry cache against BuildKit's.

    sudo .venv/bin/python -m bench.run --scenario second-machine [--repeat 3] [--write-docs]

examples/go-hello (bench/workload.py: ``make_go``), its two base images made by
examples/make-base-images.sh and pushed to a docker-registry on loopback. Every tool reaches
that registry through a counting HTTP proxy run by this process (``CountingProxy``): image
references, build args and cache references all name the proxy, so every byte a tool pulls
(manifests and blobs, response bodies) is counted the same way for both.

- Machine A (once per tool): an empty cloche store / a buildkitd with an empty ``--root``;
  the build exports its cache to the registry with mode=max (cloche ``--cache-to
  type=registry,ref=P/cache:cloche,mode=max``, BuildKit ``buildctl build --export-cache
  type=registry,ref=P/cache:bk,mode=max``).
- Machine B, same sources: an empty store / buildkitd stopped, its root wiped, started again
  (not timed: a CI machine's daemon is already running); the build imports the cache. Timed:
  the build command's wall time. Counted: bytes pulled, and whether a RUN step ran.
- Machine B, one source file changed (main.go, a comment appended): again from an empty
  store / root, the cache imported; the steps after ``COPY *.go`` run (Go compiles, the Go
  build cache mount being empty there too).

Both tools write the image as an OCI archive file (``-o type=oci,dest=FILE`` /
``--output type=oci,dest=FILE``), so both must have every layer of the result. The machine-B
builds are repeated (``--repeat``), the tools taking turns; medians are reported. BuildKit is
the standalone buildkitd v0.23.2 of tests/conformance/buildkit.sh (its own state directory
here, ``BUILDKIT_ROOT``/``BUILDKIT_RUNDIR``), not the Docker engine's.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import report, workload

ROOT = Path(__file__).resolve().parent.parent
BUILDKIT_SH = ROOT / "tests" / "conformance" / "buildkit.sh"
DOCS_START = "<!-- bench:second-machine:start -->"
DOCS_END = "<!-- bench:second-machine:end -->"
TIMEOUT = 1800
PHASES = ("same", "changed")
PHASE_TITLES = {"same": "second machine, same sources",
                "changed": "second machine, one file changed"}
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the counting proxy ---------------------------------------------------------------------

@dataclass
class Counts:
    """What went through the proxy: response body bytes of GET requests (pulled) by kind,
    request body bytes (pushed), and requests by method."""

    pulled: dict[str, int] = field(default_factory=lambda: {"manifests": 0, "blobs": 0,
                                                             "other": 0})
    pushed: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    gets: list[tuple[str, int]] = field(default_factory=list)  # each GET: path, body bytes

    def as_dict(self) -> dict:
        return {"pulled_bytes": sum(self.pulled.values()), "pulled": dict(self.pulled),
                "pushed_bytes": self.pushed, "requests": dict(self.requests),
                "gets": [list(g) for g in self.gets]}


def _kind(path: str) -> str:
    if "/manifests/" in path:
        return "manifests"
    if "/blobs/" in path:
        return "blobs"
    return "other"


class CountingProxy:
    """A plain-HTTP reverse proxy on loopback in front of ``upstream`` (HOST:PORT) that counts
    the bytes each way. The Host header is passed on as the client sent it, so the URLs the
    registry gives back (upload locations) name the proxy."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.lock = threading.Lock()
        self.counts = Counts()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def handle(self) -> None:
                # BuildKit tries HTTPS first, even with http = true, and falls back to plain
                # HTTP only when the answer to its TLS hello starts with "HTTP/" (as Go's
                # server answers; Python's would send an HTML page without a status line)
                if self.rfile.peek(1)[:1] == b"\x16":  # type: ignore[attr-defined]
                    self.wfile.write(b"HTTP/1.0 400 Bad Request\r\nConnection: close\r\n\r\n")
                    return
                try:
                    super().handle()
                except ConnectionError:
                    pass  # the client closed a kept-alive connection

            def _body(self) -> bytes | None:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _forward(self) -> None:
                body = self._body()
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.upstream, timeout=300)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    self.send_response_only(resp.status, resp.reason)
                    length = resp.getheader("Content-Length")
                    for k, v in resp.getheaders():
                        if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    sent = 0
                    if self.command == "HEAD" or resp.status in (204, 304):
                        if length is not None:
                            self.send_header("Content-Length", length)
                        self.end_headers()
                    elif length is not None:
                        self.send_header("Content-Length", length)
                        self.end_headers()
                        while chunk := resp.read(1 << 20):
                            self.wfile.write(chunk)
                            sent += len(chunk)
                    else:
                        data = resp.read()
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        sent = len(data)
                finally:
                    conn.close()
                with proxy.lock:
                    c = proxy.counts
                    c.requests[self.command] = c.requests.get(self.command, 0) + 1
                    c.pushed += len(body or b"")
                    if self.command == "GET":
                        c.pulled[_kind(self.path)] += sent
                        c.gets.append((self.path, sent))

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self) -> Counts:
        """The counts since the last call, and start again from zero."""
        with self.lock:
            counts, self.counts = self.counts, Counts()
        return counts

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- what each build did --------------------------------------------------------------------

_TITLE = re.compile(r"^#(\d+) \[[^\]]*\] (RUN .*)$")
_STATUS = re.compile(r"^#(\d+) (CACHED|DONE|ERROR)\b(.*)$")


def run_steps(plain: str) -> dict[str, str]:
    """RUN steps of a ``--progress=plain`` log (BuildKit's and cloche's share the form:
    ``#N [stage k/n] RUN ...`` then ``#N CACHED`` or ``#N DONE 1.2s``): title -> "ran" or
    "cached" (cloche's ``DONE (imported from ...)`` is a cache hit)."""
    titles: dict[str, str] = {}
    out: dict[str, str] = {}
    for line in plain.splitlines():
        if m := _TITLE.match(line):
            titles[m[1]] = " ".join(m[2].split())[:80]
        elif (m := _STATUS.match(line)) and m[1] in titles:
            out[titles[m[1]]] = "cached" if m[2] == "CACHED" or "imported from" in m[3] \
                else "ran"
    return out


def archive_digest(path: Path) -> str:
    """The image manifest digest an OCI archive's index.json names."""
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("index.json")
            if member is None:
                return ""
            index = json.load(member)
        return str(index["manifests"][0]["digest"])
    except (OSError, KeyError, IndexError, tarfile.TarError, ValueError):
        return ""


@dataclass
class Build:
    seconds: float
    counts: Counts
    runs: dict[str, str]
    digest: str
    daemon_start: float = 0.0  # buildkitd's start until it answers (a fresh machine's cost)

    def as_dict(self) -> dict:
        return {"seconds": round(self.seconds, 3),
                "daemon_start_seconds": round(self.daemon_start, 3), **self.counts.as_dict(),
                "run_steps": self.runs,
                "run_steps_ran": sorted(t for t, s in self.runs.items() if s == "ran"),
                "digest": self.digest}


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-2000:]}\n"
                           f"{r.stderr[-3000:]}")
    return seconds, r.stdout + r.stderr


# --- the two tools --------------------------------------------------------------------------

class ClocheSide:
    name = "cloche"

    def __init__(self, work: Path, exe: str, proxy: CountingProxy) -> None:
        self.work = work / "cloche"
        self.work.mkdir(parents=True)
        self.exe = exe
        self.proxy = proxy
        self.cache_ref = f"{proxy.host}/cache:cloche"
        self.n = 0
        # as installed: Python's bytecode cache on (bench/tools.py, Cloche.build)
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def version(self) -> str:
        return "cloche " + _run([self.exe, "--version"])[1].split()[-1]  # cloche, version X

    def build(self, project: workload.Project, cache: list[str]) -> Build:
        self.n += 1
        store = self.work / f"store{self.n}"  # an empty store: a machine that never built
        out = self.work / "image.oci.tar"
        out.unlink(missing_ok=True)
        args = [x for k, v in project.build_args for x in ("--build-arg", f"{k}={v}")]
        self.proxy.take()
        try:
            seconds, text = _run([self.exe, "build", "--root", str(store), "--progress", "plain",
                                  *args, *cache, "-f", str(project.dockerfile),
                                  "-o", f"type=oci,dest={out}", str(project.context)],
                                 env=self.env)
            return Build(seconds, self.proxy.take(), run_steps(text), archive_digest(out))
        finally:
            shutil.rmtree(store, ignore_errors=True)

    def machine_a(self, project: workload.Project) -> Build:
        return self.build(project, ["--cache-to", f"type=registry,ref={self.cache_ref},mode=max"])

    def machine_b(self, project: workload.Project) -> Build:
        return self.build(project, ["--cache-from", f"type=registry,ref={self.cache_ref}"])

    def close(self) -> None:
        pass


class BuildKitSide:
    """buildkitd v0.23.2 (tests/conformance/buildkit.sh) with a state directory of its own."""

    name = "buildkit"

    def __init__(self, work: Path, proxy: CountingProxy) -> None:
        self.work = work / "buildkit"
        self.work.mkdir(parents=True)
        self.proxy = proxy
        self.cache_ref = f"{proxy.host}/cache:bk"
        self.env = dict(os.environ, BUILDKIT_ROOT=str(self.work / "root"),
                        BUILDKIT_RUNDIR=str(self.work / "run"))
        self.running = False
        self.started = 0.0  # seconds the last start took, until buildctl got an answer

    def _sh(self, *args: str) -> str:
        return _run(["sh", str(BUILDKIT_SH), *args], env=self.env)[1]

    def version(self) -> str:
        self._sh("build")
        words = self._sh("buildctl", "--version").split()  # buildctl PACKAGE VERSION COMMIT
        return "buildkitd " + (words[2] if len(words) > 2 else "?")

    def fresh(self) -> None:
        """Stop buildkitd, wipe its root (a machine that never built), start it again."""
        self.stop()
        root = self.work / "root"
        prefix = str(root) + "/"
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f]
        for point in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        began = time.perf_counter()
        self._sh("start", self.proxy.host)
        self.started = time.perf_counter() - began
        self.running = True

    def stop(self) -> None:
        if self.running or (self.work / "run" / "buildkitd.pid").exists():
            self._sh("stop")
        self.running = False

    def build(self, project: workload.Project, cache: list[str]) -> Build:
        self.fresh()
        out = self.work / "image.oci.tar"
        out.unlink(missing_ok=True)
        args = [x for k, v in project.build_args for x in ("--opt", f"build-arg:{k}={v}")]
        self.proxy.take()
        seconds, text = _run(["sh", str(BUILDKIT_SH), "buildctl", "build", "--progress=plain",
                              "--frontend", "dockerfile.v0",
                              "--local", f"context={project.context}",
                              "--local", f"dockerfile={project.dockerfile.parent}",
                              "--opt", f"filename={project.dockerfile.name}", *args, *cache,
                              "--output", f"type=oci,dest={out}"], env=self.env)
        return Build(seconds, self.proxy.take(), run_steps(text), archive_digest(out),
                     self.started)

    def machine_a(self, project: workload.Project) -> Build:
        return self.build(project, ["--export-cache",
                                    f"type=registry,ref={self.cache_ref},mode=max"])

    def machine_b(self, project: workload.Project) -> Build:
        return self.build(project, ["--import-cache", f"type=registry,ref={self.cache_ref}"])

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.work / "root", ignore_errors=True)


# --- the run --------------------------------------------------------------------------------

def _proxied(project: workload.Project, registry: str, proxy: str) -> workload.Project:
    """The project with its image references naming the proxy instead of the registry."""
    import dataclasses
    args = tuple((k, v.replace(registry, proxy, 1)) for k, v in project.build_args)
    return dataclasses.replace(project, build_args=args,
                               pulls=tuple(p.replace(registry, proxy, 1) for p in project.pulls))


def measure(work: Path, cloche: str, repeat: int) -> dict:
    results: dict = {"scenario": "second-machine", "versions": {}, "machine_a": {},
                     "phases": {p: {} for p in PHASES}}
    registry_proc: subprocess.Popen | None = None
    proxy: CountingProxy | None = None
    sides: list[ClocheSide | BuildKitSide] = []
    try:
        log("a registry on loopback and the Go base images (examples/make-base-images.sh)")
        registry, registry_proc = workload.start_registry(work / "registry")
        golang, runtime = workload.make_go_base_images(registry, work / "go-bases", cloche)
        proxy = CountingProxy(registry)
        same = _proxied(workload.make_go(work / "go", golang, runtime), registry, proxy.host)
        changed = _proxied(workload.make_go(work / "go-changed", golang, runtime), registry,
                           proxy.host)
        changed.change_one_file(generation=1)
        results["registry"] = {"upstream": registry, "proxy": proxy.host}
        results["images"] = {"golang": golang, "runtime": runtime}
        sides = [ClocheSide(work, cloche, proxy), BuildKitSide(work, proxy)]
        for side in sides:
            results["versions"][side.name] = side.version()
        for side in sides:
            log(f"machine A, {side.name}: cold build, cache exported")
            a = side.machine_a(same)
            results["machine_a"][side.name] = a.as_dict()
            log(f"  {a.seconds:.2f} s, pulled {a.counts.as_dict()['pulled_bytes'] / 1e6:.1f} MB,"
                f" pushed {a.counts.pushed / 1e6:.1f} MB")
        for rep in range(repeat):
            for phase, project in (("same", same), ("changed", changed)):
                for side in sides:
                    b = side.machine_b(project)
                    results["phases"][phase].setdefault(side.name, []).append(b.as_dict())
                    ran = ", ".join(t for t, s in b.runs.items() if s == "ran") or "none"
                    log(f"#{rep + 1} {PHASE_TITLES[phase]}, {side.name}: {b.seconds:.2f} s, "
                        f"pulled {sum(b.counts.pulled.values()) / 1e6:.1f} MB, RUN ran: {ran}")
    finally:
        for side in sides:
            try:
                side.close()
            except Exception as e:  # noqa: BLE001 - cleanup is best effort
                log(f"cleanup of {side.name}: {e}")
        if proxy is not None:
            proxy.close()
        if registry_proc is not None:
            registry_proc.terminate()
            try:
                registry_proc.wait(10)
            except subprocess.TimeoutExpired:
                registry_proc.kill()
    return results


# --- tables ---------------------------------------------------------------------------------

HEADER = ["build", "cloche s", "BuildKit s", "time cloche/BuildKit", "cloche MB pulled",
          "BuildKit MB pulled", "bytes cloche/BuildKit", "RUN steps run (c / bk)", "runs"]


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}"


def _ran(builds: list[dict]) -> str:
    if not builds:
        return "-"
    counts = {len(b["run_steps_ran"]) for b in builds}
    total = len(builds[0]["run_steps"])
    return "/".join(str(c) for c in sorted(counts)) + f" of {total}"


def rows(results: dict) -> list[list[str]]:
    out = []
    for phase in PHASES:
        per = results["phases"].get(phase, {})
        c, bk = per.get("cloche", []), per.get("buildkit", [])
        cs = report.median([b["seconds"] for b in c])
        bs = report.median([b["seconds"] for b in bk])
        cb = report.median([b["pulled_bytes"] for b in c])
        bb = report.median([b["pulled_bytes"] for b in bk])
        out.append([PHASE_TITLES[phase], report._fmt_s(cs), report._fmt_s(bs),
                    report._ratio(cs, bs), _mb(cb), _mb(bb), report._ratio(cb, bb),
                    f"{_ran(c)} / {_ran(bk)}", f"{len(c)}/{len(bk)}"])
        started = report.median([b["seconds"] + b.get("daemon_start_seconds", 0.0) for b in bk])
        if bk and any(b.get("daemon_start_seconds") for b in bk):
            out.append([f"{PHASE_TITLES[phase]}, buildkitd's start counted",
                        report._fmt_s(cs), report._fmt_s(started), report._ratio(cs, started),
                        "", "", "", "", ""])
    a = results.get("machine_a", {})
    ca, ba = a.get("cloche"), a.get("buildkit")
    if ca and ba:
        out.append(["machine A (cold, cache exported; pushed MB)", report._fmt_s(ca["seconds"]),
                    report._fmt_s(ba["seconds"]), report._ratio(ca["seconds"], ba["seconds"]),
                    _mb(ca["pushed_bytes"]), _mb(ba["pushed_bytes"]),
                    report._ratio(ca["pushed_bytes"], ba["pushed_bytes"]),
                    f"{_ran([ca])} / {_ran([ba])}", "1/1"])
    return out


def ratios(results: dict) -> dict:
    """cloche / BuildKit of the medians, per machine-B build: time and bytes pulled."""
    out = {}
    for phase in PHASES:
        per = results["phases"].get(phase, {})
        c, bk = per.get("cloche", []), per.get("buildkit", [])
        if not c or not bk:
            continue
        med = {k: (report.median([b[k] for b in c]), report.median([b[k] for b in bk]))
               for k in ("seconds", "pulled_bytes")}
        med["seconds_with_daemon_start"] = (
            med["seconds"][0],
            report.median([b["seconds"] + b.get("daemon_start_seconds", 0.0) for b in bk]))
        out[phase] = {k: round(a / b, 3) if a is not None and b else None
                      for k, (a, b) in med.items()}
    return out


def same_image(results: dict) -> str:
    """Whether machine B's image (same sources) is machine A's, per tool."""
    notes = []
    for tool in ("cloche", "buildkit"):
        a = results.get("machine_a", {}).get(tool, {}).get("digest")
        bs = [b["digest"] for b in results["phases"].get("same", {}).get(tool, [])]
        if a and bs:
            notes.append(f"{tool} {'yes' if all(d == a for d in bs) else 'no'}")
    return ", ".join(notes)


def text(results: dict) -> str:
    out = [report.text_table(HEADER, rows(results))]
    if note := same_image(results):
        out.append(f"machine B's image is machine A's (same sources): {note}")
    return "\n".join(out)


def markdown(results: dict) -> str:
    m = results["machine"]
    v = results["versions"]
    parts = [f"Run of {results['started']} (UTC), {v.get('cloche', '?')} at commit "
             f"{results.get('commit', '?')} ({results.get('cloche', 'cloche')}), "
             f"{v.get('buildkit', '?')}; {m['cores']} cores, "
             f"{m['memory_gb']} GB, kernel {m['kernel']}; load average {m['load_before']} "
             f"before, {m['load_after']} after; machine-B builds: {results['repeat']} each, "
             "median shown.", "", report.md_table(HEADER, rows(results)), ""]
    if note := same_image(results):
        parts += [f"Machine B's image is machine A's (same sources): {note}.", ""]
    return "\n".join(parts)


def write_docs(doc: Path, results: dict) -> None:
    report.replace_block(doc, DOCS_START, DOCS_END, markdown(results))


def main(args: argparse.Namespace) -> int:
    """``bench.run --scenario second-machine``: ``args`` is bench.run's namespace."""
    import datetime as dt

    from bench.run import git_commit, machine

    cloche, repeat = str(args.cloche), int(args.repeat)
    work = Path(args.workdir) / "second-machine"
    made_parent = not work.parent.exists()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = dt.datetime.now(dt.UTC)
    results = {"started": started.strftime("%Y-%m-%d %H:%M"), "repeat": repeat,
               "machine": machine(), "commit": git_commit(), "cloche": cloche}
    try:
        results |= measure(work, cloche, repeat)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            if made_parent:
                try:
                    work.parent.rmdir()
                except OSError:
                    pass
    results["machine"]["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    results["seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds())
    results["ratios"] = ratios(results)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}-second-machine.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(text(results))
    print(f"\nratios (cloche/BuildKit): {json.dumps(results['ratios'])}")
    print(f"{results['seconds']} s in all; results in {out}")
    if args.write_docs:
        write_docs(ROOT / "docs" / "benchmarks.md", results)
        print("docs/benchmarks.md updated")
    return 0
