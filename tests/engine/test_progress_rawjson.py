"""``cloche build --progress=rawjson``: BuildKit's status stream, one SolveStatus JSON a line.

Real builds through the command line; stderr is parsed line by line as a tool reading
buildx's rawjson output would (client/graph.go's field names, omitempty, base64 bytes)."""

from __future__ import annotations

import base64
import json
import os
import re
from typing import Any

from tests.engine.conftest import BASE, Builder

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
KEYS = {"vertexes", "statuses", "logs", "warnings"}
VERTEX_KEYS = {"digest", "inputs", "name", "started", "completed", "cached", "error"}

DOCKERFILE = f"""\
FROM {BASE} AS build
RUN echo hello-rawjson && echo second line
ENV GREETING=hi
COPY a.txt /a.txt
FROM build
RUN cat /a.txt
"""


def _lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of stderr as JSON (fails on a line that is not one object)."""
    docs = []
    for line in stderr.splitlines():
        doc = json.loads(line)
        assert isinstance(doc, dict) and doc and set(doc) <= KEYS, line
        docs.append(doc)
    return docs


def _vertexes(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """digest -> its vertex records in the order sent."""
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        for v in doc.get("vertexes", ()):
            assert set(v) <= VERTEX_KEYS, v
            assert v["digest"].startswith("sha256:") and len(v["digest"]) == 71
            for key in ("started", "completed"):
                if key in v:
                    assert STAMP.match(v[key]), v[key]
            out.setdefault(v["digest"], []).append(v)
    return out


def _logs(docs: list[dict[str, Any]], vertex: str) -> bytes:
    data = b""
    for doc in docs:
        for log in doc.get("logs", ()):
            assert STAMP.match(log["timestamp"]) and log["stream"] == 1
            if log.get("vertex") == vertex:
                data += base64.b64decode(log["data"])
    return data


def _by_name(vertexes: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    names = {}
    for records in vertexes.values():
        assert len({r["name"] for r in records}) == 1, records
        names[records[0]["name"]] = records
    return names


def test_rawjson_build_then_cached_rebuild(builder: Builder) -> None:
    ctx = builder.context(DOCKERFILE, {"a.txt": "from-a\n"})
    first = builder.cli("build", "--progress=rawjson", "-t", "raw:1", str(ctx))
    docs = _lines(first.stderr)
    vertexes = _vertexes(docs)
    names = _by_name(vertexes)
    # the plain renderer's titles; ENV (config-only) is no vertex
    assert sorted(names) == sorted([
        f"[build 1/3] FROM {BASE}", "[build 2/3] RUN echo hello-rawjson && echo second line",
        "[build 3/3] COPY a.txt /a.txt", "[stage-1 1/1] RUN cat /a.txt"]), names
    run = names["[build 2/3] RUN echo hello-rawjson && echo second line"]
    # started first, then the same vertex completed (no error, not cached)
    assert "completed" not in run[0] and run[0]["started"]
    assert run[-1]["completed"] >= run[-1]["started"] == run[0]["started"]
    assert not any(r.get("cached") or r.get("error") for r in run)
    # inputs chain the stage's steps; the second stage starts from the first's last step
    frm = names[f"[build 1/3] FROM {BASE}"][0]
    copy = names["[build 3/3] COPY a.txt /a.txt"][0]
    cat = names["[stage-1 1/1] RUN cat /a.txt"][0]
    assert run[0]["inputs"] == [frm["digest"]] and copy["inputs"] == [run[0]["digest"]]
    assert cat["inputs"] == [copy["digest"]]
    # every vertex completes after it starts, and no line comes after its completion
    for records in vertexes.values():
        assert "completed" in records[-1]
    # logs decode to the RUN output, under the RUN's vertex
    assert _logs(docs, run[0]["digest"]) == b"hello-rawjson\nsecond line\n"
    assert _logs(docs, cat["digest"]) == b"from-a\n"
    # rawjson writes only the stream: no "built ..." line, no plain text
    assert "built sha256" not in first.stderr

    # a plain rebuild records the no-op fast path's plain lines: rawjson must not replay them
    builder.cli("build", "--progress=plain", "-t", "raw:1", str(ctx))
    second = builder.cli("build", "--progress", "rawjson", "-t", "raw:1", str(ctx))
    again = _vertexes(_lines(second.stderr))
    assert set(again) == set(vertexes)  # stable digests
    for name in ("[build 2/3] RUN echo hello-rawjson && echo second line",
                 "[build 3/3] COPY a.txt /a.txt", "[stage-1 1/1] RUN cat /a.txt"):
        records = _by_name(again)[name]
        assert records[-1].get("cached") is True and "completed" in records[-1], records
    assert not any(d.get("logs") for d in _lines(second.stderr))


def test_rawjson_from_the_environment_and_a_failing_step(builder: Builder) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN echo before-fail && exit 3\n")
    failed = builder.cli("build", str(ctx), check=False,
                         env={**os.environ, "BUILDKIT_PROGRESS": "rawjson"})
    assert failed.returncode != 0
    # the JSON stream, then the error as cloche prints it (buildx prints its ERROR line too)
    lines = failed.stderr.splitlines()
    stream = [line for line in lines if line.startswith("{")]
    assert stream and lines[:len(stream)] == stream
    docs = _lines("\n".join(stream))
    run = _by_name(_vertexes(docs))["[2/2] RUN echo before-fail && exit 3"]
    assert "error" not in run[0]
    assert run[-1]["completed"] and "exit code: 3" in run[-1]["error"], run[-1]
    assert _logs(docs, run[0]["digest"]) == b"before-fail\n"


def test_rawjson_warnings(builder: Builder) -> None:
    # a build check (BuildKit's lint rule) and the unused build arg notice
    ctx = builder.context(f"FROM {BASE} as base\nRUN true\n")
    out = builder.cli("build", "--progress=rawjson", "--build-arg", "UNUSED=1", str(ctx))
    docs = _lines(out.stderr)
    warnings = [w for d in docs for w in d.get("warnings", ())]
    shorts = [base64.b64decode(w["short"]).decode() for w in warnings]
    check = next(w for w, s in zip(warnings, shorts) if s.startswith("FromAsCasing: "))
    assert check["level"] == 1 and check["url"].startswith("https://docs.docker.com/")
    assert check["sourceInfo"]["filename"] == "Dockerfile"
    assert check["range"] == [{"start": {"line": 1}, "end": {"line": 1}}]
    assert any("UNUSED" in s for s in shorts), shorts
    assert "WARNING:" not in out.stderr  # buildx lists no warnings after a rawjson stream


def test_rawjson_export_vertex_and_blob_statuses(builder: Builder) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN echo x > /x\n")
    dest = builder.dir / "out.tar"
    out = builder.cli("build", "--progress=rawjson", "-o", f"type=oci,dest={dest}", str(ctx))
    docs = _lines(out.stderr)
    export = _by_name(_vertexes(docs))["exporting to oci image format"]
    assert "inputs" not in export[0] and "completed" not in export[0]
    assert export[-1]["completed"] >= export[-1]["started"]
    statuses: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        for status in doc.get("statuses", ()):
            assert status["vertex"] == export[0]["digest"], status
            assert STAMP.match(status["timestamp"]) and STAMP.match(status["started"])
            statuses.setdefault(status["id"], []).append(status)
    # the config, the manifest and each layer, by digest, each ending complete
    assert len(statuses) >= 4 and all(i.startswith("sha256:") for i in statuses)
    for updates in statuses.values():
        last = updates[-1]
        assert last["current"] == last["total"] and "completed" in last, updates


def test_rawjson_pull_statuses_join_their_from_step() -> None:
    """A base image is pulled before its FROM step has a number: its blobs' statuses go out
    at once without a vertex, then again under the FROM vertex once the step is known."""
    import io
    import time

    from cloche import events as tev
    from cloche.cli._rawjson import RawJSONRenderer
    from cloche.engine import events as ev
    from cloche.oci.descriptor import Descriptor
    from cloche.oci.digest import Digest

    out = io.StringIO()
    render = RawJSONRenderer(out)
    blob = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip",
                      Digest.parse("sha256:" + "ab" * 32), 100)
    started = time.monotonic()
    render(tev.BlobProgress("docker.io/library/alpine:3.20", blob, "pulling", 40, 100, started))
    render(tev.BlobProgress("docker.io/library/alpine:3.20", blob, "pulling", 100, 100, started))
    step = ev.StepRef(0, None, 1, 2, "FROM alpine:3.20", 1, single=True)
    render(ev.BaseResolved(step, 0.5, cached=False))
    docs = _lines(out.getvalue())
    assert [s["current"] for s in docs[0]["statuses"]] == [40]
    assert "vertex" not in docs[0]["statuses"][0] and "completed" not in docs[0]["statuses"][0]
    vertex = docs[2]["vertexes"][0]
    assert vertex["name"] == "[1/2] FROM alpine:3.20" and "cached" not in vertex
    again = docs[2]["statuses"]
    assert again == [{**docs[1]["statuses"][0], "vertex": vertex["digest"]}]
    assert list(again[0])[:2] == ["id", "vertex"]


def test_rawjson_timestamps_and_escapes() -> None:
    """Go's forms: RFC 3339 UTC with the nanoseconds' trailing zeros cut; <, > and & as
    \\u escapes (buildx's encoder escapes HTML)."""
    import io

    from cloche.cli._rawjson import RawJSONRenderer, timestamp
    from cloche.engine import events as ev

    assert timestamp(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert timestamp(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert timestamp(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"
    out = io.StringIO()
    RawJSONRenderer(out)(ev.StepStarted(ev.StepRef(0, None, 2, 2, "RUN a<b && c>d", 2,
                                                   single=True)))
    line = out.getvalue()
    assert "\\u003c" in line and "\\u0026\\u0026" in line and "<" not in line
    assert json.loads(line)["vertexes"][0]["name"] == "[2/2] RUN a<b && c>d"
