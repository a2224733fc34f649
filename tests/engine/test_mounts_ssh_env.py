"""RUN --mount=type=ssh forwards an agent socket; type=secret,env= sets a step variable."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

from tests.engine.conftest import BASE, Builder, rootfs


def test_ssh_agent_socket_is_forwarded(builder: Builder, tmp_path: Path) -> None:
    sock_path = tmp_path / "agent.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen(1)
    try:
        result = builder.build(
            f"FROM {BASE}\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" "
            "&& echo \"$SSH_AUTH_SOCK\" > /sock.txt\n", ssh=(f"default={sock_path}",))
    finally:
        server.close()
    tree = rootfs(result.image, tmp_path / "tree")
    assert (tree / "sock.txt").read_text() == "/run/buildkit/ssh_agent.0\n"
    assert not (tree / "run" / "buildkit").exists()


def test_required_ssh_without_socket_fails_clearly(builder: Builder) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN --mount=type=ssh,required=true true\n")
    result = builder.cli("build", str(ctx), check=False)
    assert result.returncode != 0 and "no ssh agent socket for id 'default'" in result.stderr


def test_secret_as_environment_variable(builder: Builder, tmp_path: Path) -> None:
    value = uuid.uuid4().hex
    (tmp_path / "tok").write_text(value)
    ctx = builder.context(f"FROM {BASE}\nRUN --mount=type=secret,id=tok,env=TOKEN "
                          "test \"$TOKEN\" = \"$(echo $TOKEN)\" && echo ${#TOKEN} > /len "
                          "&& test ! -e /run/secrets/tok\n")
    builder.cli("build", "-t", "envsecret:1", "--secret", f"id=tok,src={tmp_path / 'tok'}",
                str(ctx))
    image = builder.store.image("envsecret:1")
    assert (rootfs(image, tmp_path / "t") / "len").read_text() == "32\n"
    assert value not in image.config_bytes.decode()


def test_cache_mount_seeded_from_a_stage_then_kept(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE} AS seed\nRUN mkdir -p /seed && echo seeded > /seed/s\n"
                  f"FROM {BASE}\nRUN --mount=type=cache,id=c1,target=/cache,from=seed,source=/seed"
                  " cat /cache/s > /first && echo more >> /cache/s\n")
    first = builder.build(dockerfile)
    assert (rootfs(first.image, tmp_path / "a") / "first").read_text() == "seeded\n"
    second = builder.build(dockerfile.replace("> /first", "> /second"))
    tree = rootfs(second.image, tmp_path / "b")
    assert (tree / "second").read_text() == "seeded\nmore\n"
    assert not (tree / "cache" / "s").exists()
    # another seed is another cache (BuildKit keys it on the snapshot it starts from)
    third = builder.build(dockerfile.replace("echo seeded", "echo reseeded")
                          .replace("> /first", "> /third"))
    assert (rootfs(third.image, tmp_path / "c") / "third").read_text() == "reseeded\n"
