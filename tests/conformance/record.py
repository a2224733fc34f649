"""Record the goldens with BuildKit v0.23.2: ``python -m tests.conformance.record [CASE...]``.

Run as root, from the project root, after ``tests/conformance/buildkit.sh build``. It starts a
loopback registry, imports the base image with cloche (golden.make_base) and pushes it there,
starts buildkitd (buildkit.sh start), and for each case (all without arguments) runs
``buildctl build`` with the dockerfile.v0 frontend to an OCI archive, and the lint
subrequest (``--opt requestid=frontend.lint``); it writes tests/conformance/goldens/CASE.json
and stops buildkitd and the registry. Not run in CI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conformance import golden

SCRIPT = golden.HERE / "buildkit.sh"


def buildctl(case: golden.Case, context: Path, base_ref: str, extra: list[str]
             ) -> subprocess.CompletedProcess:
    cmd = [str(SCRIPT), "buildctl", "build", "--progress", "plain",
           "--frontend", "dockerfile.v0", "--local", f"context={context}",
           "--local", f"dockerfile={context}", "--opt", f"build-arg:BASE={base_ref}"]
    for key, value in case.build_args.items():
        cmd += ["--opt", f"build-arg:{key}={value}"]
    if case.target:
        cmd += ["--opt", f"target={case.target}"]
    return subprocess.run(cmd + extra, capture_output=True, text=True, timeout=900)


_ERROR_LINE = re.compile(r"^(?:Dockerfile):(\d+)$", re.M)


def record(case: golden.Case, base: golden.Base, base_ref: str, workdir: Path) -> dict:
    out: dict = {"case": case.name, "source": case.source, "case_sha256": case.digest,
                 "buildkit": golden.BUILDKIT_VERSION}
    if case.build_args:
        out["build_args"] = case.build_args
    if case.target:
        out["target"] = case.target
    tar = workdir / f"{case.name}.tar"
    context = case.context(workdir)
    built = buildctl(case, context, base_ref, ["--no-cache", "--output", f"type=oci,dest={tar}"])
    if built.returncode == 0:
        out["image"] = golden.image_record(tar, base)
        edited = _without_tracing(out["image"])
        if edited:
            out["edited"] = edited
    else:
        # BuildKit prints the failing instruction's location as "Dockerfile:LINE".
        lines = _ERROR_LINE.findall(built.stderr)
        last = [x for x in built.stderr.splitlines() if "failed to solve" in x]
        message = (last or built.stderr.strip().splitlines()[-1:])[-1]
        # Worker and snapshot ids change from one run to the next.
        message = re.sub(r"\bref [a-z0-9]+::[a-z0-9]+", "ref WORKER::REF", message)
        out["error"] = {"line": int(lines[-1]) if lines else 0, "message": message}
    lint = buildctl(case, context, base_ref, ["--opt", "requestid=frontend.lint"])
    if lint.returncode != 0 and "error" not in out:
        raise AssertionError(f"{case.name}: the lint subrequest failed:\n{lint.stderr[-2000:]}")
    out["warnings"] = golden.sort_warnings(golden.parse_lint(lint.stdout))
    return out


# A buildkitd always records traces, so its RUN steps get the OTEL_* and TRACEPARENT variables
# and a /dev/otel-grpc.sock (executor/oci GenerateSpec, with a trace socket). These belong to the
# daemon, not to the Dockerfile (the Docker engine's BuildKit sets none): they are cut from the
# text files a RUN wrote (env and /dev listings), whose size and sha256 are then recomputed;
# the golden's "edited" lists the entries so edited.
_TRACING_LINE = re.compile(r"^(?:OTEL_[A-Z_]+=.*|TRACEPARENT=.*|otel-grpc\.sock)\n", re.M)


def _without_tracing(image: dict) -> list[str]:
    edited = []
    for index, layer in enumerate(image["layers"]):
        for path, entry in layer.items():
            text = entry.get("text")
            if text is None or not _TRACING_LINE.search(text):
                continue
            text = _TRACING_LINE.sub("", text)
            body = text.encode()
            entry.update(text=text, size=len(body), sha256=hashlib.sha256(body).hexdigest())
            edited.append(f"layer {index} {path}")
    return edited


def dumps(data: dict) -> str:
    """JSON with one line per layer entry, history entry and warning (readable diffs)."""
    def compact(value: object) -> str:
        return json.dumps(value, sort_keys=True)

    lines = ["{"]
    items = list(data.items())
    for n, (key, value) in enumerate(items):
        comma = "," if n < len(items) - 1 else ""
        if key == "image":
            lines.append('  "image": {')
            img = list(value.items())
            for m, (k, v) in enumerate(img):
                c2 = "," if m < len(img) - 1 else ""
                if k == "layers":
                    lines.append('    "layers": [')
                    for li, layer in enumerate(v):
                        c3 = "," if li < len(v) - 1 else ""
                        if not layer:
                            lines.append(f"      {{}}{c3}")
                            continue
                        lines.append("      {")
                        entries = list(layer.items())
                        for ei, (path, entry) in enumerate(entries):
                            c4 = "," if ei < len(entries) - 1 else ""
                            lines.append(f"        {compact(path)}: {compact(entry)}{c4}")
                        lines.append(f"      }}{c3}")
                    lines.append(f"    ]{c2}")
                elif k == "history" and v:
                    lines.append('    "history": [')
                    lines += [f"      {compact(h)}{',' if i < len(v) - 1 else ''}"
                              for i, h in enumerate(v)]
                    lines.append(f"    ]{c2}")
                else:
                    lines.append(f"    {compact(k)}: {compact(v)}{c2}")
            lines.append(f"  }}{comma}")
        elif key == "warnings" and value:
            lines.append('  "warnings": [')
            lines += [f"    {compact(w)}{',' if i < len(value) - 1 else ''}"
                      for i, w in enumerate(value)]
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {compact(key)}: {compact(value)}{comma}")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if json.loads(text) != data:
        raise AssertionError("dumps lost data")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance.record",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    args = parser.parse_args(argv)
    from tests.fixtures.services import _stop, start_registry

    chosen = golden.cases(args.cases)
    golden.GOLDENS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cloche-record-") as tmp:
        work = Path(tmp)
        registry, proc = start_registry(work / "registry")
        try:
            store = work / "store"
            base = golden.make_base(store, work)
            base_ref = f"{registry.host}/{golden.BASE_NAME}"
            subprocess.run([sys.executable, "-m", "cloche.cli.main", "push", "-q", "--root",
                            str(store), golden.BASE_NAME, base_ref], check=True,
                           capture_output=True)
            subprocess.run([str(SCRIPT), "start", registry.host], check=True,
                           stdout=subprocess.DEVNULL)
            try:
                for case in chosen:
                    data = record(case, base, base_ref, work)
                    case.golden.write_text(dumps(data))
                    what = (f"error at line {data['error']['line']}" if "error" in data
                            else f"{data['image']['layer_count']} layers")
                    print(f"{case.name}: {what}, {len(data['warnings'])} warnings", flush=True)
            finally:
                subprocess.run([str(SCRIPT), "stop"], check=False)
        finally:
            _stop(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
