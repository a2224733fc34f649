"""``cloche build --call targets|outline``: BuildKit's frontend subrequests, printed as buildx
prints them (tabwriter tables; ``format=json`` gives BuildKit's JSON). The semantics are read
from BuildKit v0.23 (dockerfile2llb ListTargets and outline.go, instructions.getComment):
descriptions are the comment line above that starts with the name; a global ARG is listed
when a needed FROM reads it (and what its default reads); a stage ARG without default that
inherits a global is listed as the global; secrets and SSH ids from RUN --mount."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloche.cli.main import cli as main

DOCKERFILE = """\
# VERSION the Go version
ARG VERSION=1.22
ARG REG=docker.io
ARG BASE=${REG}/golang
ARG UNUSED=1

# build compiles the app
FROM ${BASE}:${VERSION} AS build
# GOFLAGS flags for go build
ARG GOFLAGS=-trimpath
ARG VERSION
RUN --mount=type=secret,id=token,required=true --mount=type=ssh echo hi

# other is never built
FROM alpine AS other
ARG OTHER=x

# runtime is what ships
FROM busybox AS runtime
ARG PORT=8080
COPY --from=build /app /app
RUN --mount=type=secret,target=/run/secrets/npmrc true
"""


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    return tmp_path


def _call(*args: str) -> str:
    result = CliRunner().invoke(main, ["build", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_targets_as_buildx_prints_them(context: Path) -> None:
    assert _call("--call", "targets", str(context)).splitlines() == [
        "TARGET            DESCRIPTION",
        "build             compiles the app",
        "other             is never built",
        "runtime (default) is what ships"]
    listed = json.loads(_call("--call", "targets,format=json", str(context)))
    assert [t.get("name") for t in listed["targets"]] == ["build", "other", "runtime"]
    assert listed["targets"][2]["default"] is True and "default" not in listed["targets"][0]
    assert listed["targets"][0]["base"] == "${BASE}:${VERSION}"  # as written
    assert listed["targets"][0]["location"]["ranges"][0]["start"]["line"] == 8
    assert base64.b64decode(listed["sources"][0]).decode() == DOCKERFILE.rstrip("\n")


def test_outline_of_the_default_target(context: Path) -> None:
    lines = _call("--call", "outline", str(context)).splitlines()
    assert lines[:3] == ["TARGET:      runtime", "DESCRIPTION: is what ships", ""]
    table = [line.rstrip() for line in lines[3:]]
    assert table == [
        "BUILD ARG   VALUE              DESCRIPTION",
        "VERSION     1.22               the Go version",  # global, read by build's FROM
        "REG         docker.io",  # read by BASE's default
        "BASE        docker.io/golang",
        "GOFLAGS     -trimpath          flags for go build",
        "PORT        8080",
        "",
        "SECRET   REQUIRED",
        "token    true",
        "npmrc",  # no id: the target's base name
        "",
        "SSH       REQUIRED",
        "default",
        ""]


def test_outline_json_of_another_target_with_build_args(context: Path) -> None:
    found = json.loads(_call("--call", "outline,format=json", "--target", "build",
                             "--build-arg", "REG=quay.io", "--build-arg", "PORT=9",
                             str(context)))
    assert found["name"] == "build"
    args = {a["name"]: a for a in found["args"]}
    assert list(args) == ["VERSION", "REG", "BASE", "GOFLAGS"]  # no PORT, OTHER, UNUSED
    assert args["REG"]["value"] == "quay.io" and args["BASE"]["value"] == "quay.io/golang"
    assert args["VERSION"]["location"]["ranges"][0]["start"]["line"] == 2  # the global's
    assert found["secrets"] == [{"name": "token", "required": True, "location": {
        "ranges": [{"start": {"line": 12}, "end": {"line": 12}}]}}]
    assert [s["name"] for s in found["ssh"]] == ["default"]


def test_unknown_call_names_the_flag(context: Path) -> None:
    result = CliRunner().invoke(main, ["build", "--call", "lint", str(context)])
    assert result.exit_code != 0 and "--call lint: unknown method 'lint'" in result.output
    result = CliRunner().invoke(main, ["build", "--call", "outline,format=yaml", str(context)])
    assert result.exit_code != 0 and "unknown option 'format=yaml'" in result.output


def test_a_broken_dockerfile_is_located(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN --mount=type=bogus true\n")
    result = CliRunner().invoke(main, ["build", "--call", "outline", str(tmp_path)])
    assert result.exit_code != 0 and "Dockerfile:2:13" in result.output
