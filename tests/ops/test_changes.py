"""``--change`` instructions applied as docker import applies them: through the Dockerfile
front end and the build's config handlers, so a change means what the same Dockerfile line
means in a build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import cloche
from cloche.errors import ConfigError
from cloche.oci.config import ImageConfig
from cloche.ops.changes import ChangeError, apply_changes


def _run_config(before: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    config = ImageConfig.from_dict({"architecture": "amd64", "os": "linux", "config": before})
    out: dict[str, Any] = apply_changes(config, changes).to_dict()["config"]
    return out


CASES: list[tuple[dict[str, Any], list[str], dict[str, Any]]] = [
    ({}, ['CMD ["/bin/sh", "-c", "echo hi"]'],
     {"Cmd": ["/bin/sh", "-c", "echo hi"], "ArgsEscaped": True}),
    ({}, ["CMD echo hi"], {"Cmd": ["/bin/sh", "-c", "echo hi"], "ArgsEscaped": True}),
    ({}, ["cmd [not json"], {"Cmd": ["/bin/sh", "-c", "[not json"], "ArgsEscaped": True}),
    ({"Cmd": ["old"]}, ['ENTRYPOINT ["/e"]'], {"Entrypoint": ["/e"]}),  # CMD reset
    ({}, ['CMD ["c"]', 'ENTRYPOINT ["/e"]'],
     {"Cmd": ["c"], "Entrypoint": ["/e"], "ArgsEscaped": True}),
    ({"Env": ["PATH=/bin"]}, ["ENV A=1 B=$PATH:/x"], {"Env": ["PATH=/bin", "A=1", "B=/bin:/x"]}),
    ({}, ["ENV A=1 B=$A"], {"Env": ["A=1", "B="]}),  # values from before the line
    ({}, ['ENV GREETING "hello world"'], {"Env": ["GREETING=hello world"]}),
    ({}, ["ENV Q='a $b' R=\"c d\""], {"Env": ["Q=a $b", "R=c d"]}),
    ({"Env": ["A=1"]}, ["ENV A=2"], {"Env": ["A=2"]}),
    ({}, ["EXPOSE 80 53/udp 8000-8002"],
     {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {},
                       "8002/tcp": {}}}),
    ({}, ['LABEL a=b "c d"=e'], {"Labels": {"a": "b", "c d": "e"}}),
    ({}, ["USER 1000:1000"], {"User": "1000:1000"}),
    ({}, ['VOLUME ["/data", "/logs"]'], {"Volumes": {"/data": {}, "/logs": {}}}),
    ({}, ["VOLUME /a /b"], {"Volumes": {"/a": {}, "/b": {}}}),
    ({"WorkingDir": "/srv"}, ["WORKDIR app", "WORKDIR ../x"], {"WorkingDir": "/srv/x"}),
    ({}, ["WORKDIR rel"], {"WorkingDir": "/rel"}),
    ({"Env": ["D=/opt"]}, ["WORKDIR $D/app"], {"Env": ["D=/opt"], "WorkingDir": "/opt/app"}),
    ({}, ["STOPSIGNAL SIGKILL"], {"StopSignal": "SIGKILL"}),
    ({}, ["ONBUILD RUN make", "onbuild COPY . /src"], {"OnBuild": ["RUN make", "COPY . /src"]}),
]


@pytest.mark.parametrize(("before", "changes", "after"), CASES)
def test_change(before: dict[str, Any], changes: list[str], after: dict[str, Any]) -> None:
    assert _run_config(before, changes) == after


def test_history_is_kept_and_input_unchanged() -> None:
    config = ImageConfig.from_dict({"config": {"Env": ["A=1"]},
                                    "history": [{"comment": "Imported from -"}]})
    after = apply_changes(config, ["ENV A=2", "EXPOSE 80"])
    assert config.env == ("A=1",)
    assert after.env == ("A=2",) and [h.comment for h in after.history] == ["Imported from -"]


@pytest.mark.parametrize(("bad", "why"), [
    ("RUN echo hi", "RUN cannot be used with import"),
    ("FROM busybox", "FROM cannot be used with import"),
    ("COPY a b", "COPY cannot be used with import"),
    ("HEALTHCHECK NONE", "HEALTHCHECK cannot be used with import"),
    ("ARG X=1", "ARG cannot be used with import"),
    ("", "no instruction"),
    ("# a comment only", ""),
    ("ENV A=1\nRUN x", "want one instruction, found 2"),
    ("ENV", "ENV requires at least one argument"),
    ("ENV novalue", "ENV must have two arguments"),
    ("EXPOSE http", "invalid containerPort: http"),
    ("EXPOSE 80/xyz", "invalid proto: xyz"),
    ("EXPOSE 90-80", "invalid port range: 90-80"),
    ("EXPOSE 1.2.3:80:80", "invalid IP address: 1.2.3"),  # BuildKit's nat.ParsePortSpec errors
    ("EXPOSE web:80", "invalid hostPort: web"),
    ("EXPOSE 8080:", "no port specified: 8080:<empty>"),
    ("EXPOSE 9000-9002:80-81", "invalid ranges specified for container and host Ports"),
    ("WORKDIR", "WORKDIR requires exactly one argument"),
    ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
    ("STOPSIGNAL NOPE", "invalid signal: NOPE"),
    ("ONBUILD ONBUILD RUN x", "isn't allowed as an ONBUILD trigger"),
    ("ONBUILD FROM x", "isn't allowed as an ONBUILD trigger"),
    ("CMD", "CMD requires at least one argument"),
    ("ENV A='unterminated", "matching single-quote"),
    ("VOLUME", "VOLUME requires at least one argument"),
    ('VOLUME [""]', "VOLUME specified can not be an empty string"),
    ("CMD --bogus=1 x", "--bogus"),  # the build's flag checks
])
def test_refused(bad: str, why: str) -> None:
    with pytest.raises(ChangeError) as info:
        _run_config({}, [bad])
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
    assert repr(bad) in info.value.render() and why in info.value.message


@pytest.mark.root
@pytest.mark.parametrize(("line", "field", "want"), [
    ("EXPOSE 80-82 53/udp", "exposed_ports", ("53/udp", "80/tcp", "81/tcp", "82/tcp")),
    # a published form exposes its container port, as BuildKit (v0.24 adds a warning)
    ("EXPOSE 8080:80 127.0.0.1:53:53/udp [::1]:9000-9001:7000-7001 9000-9009:70",
     "exposed_ports", ("53/udp", "70/tcp", "7000/tcp", "7001/tcp", "80/tcp")),
    ("WORKDIR rel", "working_dir", "/rel"),
    ("WORKDIR /abs/dir/", "working_dir", "/abs/dir/"),
    ("WORKDIR /a/../b/./c", "working_dir", "/a/../b/./c"),
    ("VOLUME /data /logs", "volumes", ("/data", "/logs")),
])
def test_a_change_means_what_the_dockerfile_line_means(tmp_path: Path, line: str, field: str,
                                                       want: object) -> None:
    """The same line built on scratch gives the same config as the change on an import
    (a build on scratch adds its own defaults, PATH and WorkingDir /, which import does not:
    only what the line sets is compared)."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM scratch\n{line}\n")
    built = cloche.build(str(context), root=tmp_path / "store").image.config
    changed = ImageConfig.from_json(apply_changes(ImageConfig(), [line]).to_json())  # as stored
    assert getattr(changed, field) == getattr(built, field) == want
