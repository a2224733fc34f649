"""``--change`` instructions applied as docker import applies them."""

from __future__ import annotations

from typing import Any

import pytest

from cloche.errors import ConfigError
from cloche.store.changes import ChangeError, apply_changes

CASES: list[tuple[dict[str, Any], list[str], dict[str, Any]]] = [
    ({}, ['CMD ["/bin/sh", "-c", "echo hi"]'], {"Cmd": ["/bin/sh", "-c", "echo hi"]}),
    ({}, ["CMD echo hi"], {"Cmd": ["/bin/sh", "-c", "echo hi"]}),
    ({}, ["cmd [not json"], {"Cmd": ["/bin/sh", "-c", "[not json"]}),
    ({"Cmd": ["old"]}, ['ENTRYPOINT ["/e"]'], {"Cmd": None, "Entrypoint": ["/e"]}),
    ({}, ['CMD ["c"]', 'ENTRYPOINT ["/e"]'], {"Cmd": ["c"], "Entrypoint": ["/e"]}),
    ({"Env": ["PATH=/bin"]}, ["ENV A=1 B=$PATH:/x"], {"Env": ["PATH=/bin", "A=1", "B=/bin:/x"]}),
    ({}, ["ENV A=1 B=$A"], {"Env": ["A=1", "B="]}),  # values from before the line
    ({}, ['ENV GREETING "hello world"'], {"Env": ["GREETING=hello world"]}),
    ({}, ["ENV Q='a $b' R=\"c d\""], {"Env": ["Q=a $b", "R=c d"]}),
    ({"Env": ["A=1"]}, ["ENV A=2"], {"Env": ["A=2"]}),
    ({}, ["EXPOSE 80 53/udp 8000-8002"],
     {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8000-8002/tcp": {}}}),
    ({}, ['LABEL a=b "c d"=e'], {"Labels": {"a": "b", "c d": "e"}}),
    ({}, ["USER 1000:1000"], {"User": "1000:1000"}),
    ({}, ['VOLUME ["/data", "/logs"]'], {"Volumes": {"/data": {}, "/logs": {}}}),
    ({}, ["VOLUME /a /b"], {"Volumes": {"/a": {}, "/b": {}}}),
    ({"WorkingDir": "/srv"}, ["WORKDIR app", "WORKDIR ../x"], {"WorkingDir": "/srv/x"}),
    ({"Env": ["D=/opt"]}, ["WORKDIR $D/app"], {"Env": ["D=/opt"], "WorkingDir": "/opt/app"}),
    ({}, ["STOPSIGNAL SIGKILL"], {"StopSignal": "SIGKILL"}),
    ({}, ["ONBUILD RUN make", "onbuild COPY . /src"], {"OnBuild": ["RUN make", "COPY . /src"]}),
]


@pytest.mark.parametrize(("before", "changes", "after"), CASES)
def test_change(before: dict[str, Any], changes: list[str], after: dict[str, Any]) -> None:
    assert apply_changes(before, changes) == after


def test_input_is_not_modified() -> None:
    before = {"Env": ["A=1"]}
    apply_changes(before, ["ENV A=2"])
    assert before == {"Env": ["A=1"]}


@pytest.mark.parametrize("bad", [
    "RUN echo hi", "FROM busybox", "COPY a b", "HEALTHCHECK NONE", "", "ENV", "ENV novalue",
    "EXPOSE http", "EXPOSE 80/xyz", "USER a b", "WORKDIR", "STOPSIGNAL", "ONBUILD ONBUILD RUN x",
    "ONBUILD FROM x", "CMD", "ENV A='unterminated", "VOLUME",
])
def test_refused(bad: str) -> None:
    with pytest.raises(ChangeError) as info:
        apply_changes({}, [bad])
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
    assert repr(bad) in info.value.render()
