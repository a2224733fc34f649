"""RUN through the engine: its forms, the stage's SHELL/USER/WORKDIR/ENV/ARG, the network
switch, heredocs, and the layer a RUN makes (whiteouts for deletions, none for no change)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.engine.conftest import BASE, Builder, layer_members, rootfs


def test_shell_and_exec_forms(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE}\n"
                  "RUN echo shell $((1 + 2)) > /shell\n"
                  'RUN ["/bin/sh", "-c", "echo exec $HOME > /exec"]\n'
                  'RUN ["/bin/touch", "/$NOT_EXPANDED"]\n')
    result = builder.build(dockerfile)
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "shell").read_text() == "shell 3\n"
    assert (root / "exec").read_text() == "exec /root\n"
    assert (root / "$NOT_EXPANDED").exists()  # exec form: no shell, no expansion
    created = [h.created_by for h in result.image.config.history[1:]]
    assert created[0] == "RUN /bin/sh -c echo shell $((1 + 2)) > /shell # buildkit"
    assert created[1] == "RUN /bin/sh -c echo exec $HOME > /exec # buildkit"


def test_shell_instruction_changes_the_shell(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE}\n"
                  "RUN printf '#!/bin/sh\\necho \"wrapped $*\" > /wrapped\\n' > /bin/mysh "
                  "&& chmod 755 /bin/mysh\n"
                  'SHELL ["/bin/mysh", "-c"]\n'
                  "RUN hello world\n"
                  "CMD run me\n")
    result = builder.build(dockerfile)
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "wrapped").read_text() == "wrapped -c hello world\n"
    config = result.image.config
    assert config.shell == ("/bin/mysh", "-c")
    assert config.cmd == ("/bin/mysh", "-c", "run me")


def test_user_by_name_and_workdir_owned_by_user(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE}\n"
                  "USER app\n"
                  "WORKDIR /srv/app\n"
                  "RUN id -u > /tmp/uid && id -g > /tmp/gid && pwd > /tmp/pwd "
                  "&& stat -c %u:%g:%a /srv/app > /tmp/owner\n"
                  "USER app:staff\n"
                  "RUN id -g > /tmp/gid2\n")
    result = builder.build(dockerfile)
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "tmp/uid").read_text() == "1000\n"
    assert (root / "tmp/gid").read_text() == "1000\n"
    assert (root / "tmp/pwd").read_text() == "/srv/app\n"
    assert (root / "tmp/owner").read_text() == "1000:1000:755\n"
    assert (root / "tmp/gid2").read_text() == "50\n"
    st = os.lstat(root / "srv/app")
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert result.image.config.user == "app:staff"
    assert result.image.config.working_dir == "/srv/app"


def test_env_and_arg_are_visible_to_run(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE}\n"
                  "ARG GREETING=hello\n"
                  "ARG WHO\n"
                  "ENV PLACE=world MIXED=${GREETING}-env\n"
                  'RUN echo "$GREETING $WHO $PLACE $MIXED" > /seen\n')
    result = builder.build(dockerfile, build_args={"WHO": "tester"})
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "seen").read_text() == "hello tester world hello-env\n"
    env = dict(e.split("=", 1) for e in result.image.config.env)
    assert env["PLACE"] == "world" and env["MIXED"] == "hello-env"
    assert "GREETING" not in env and "WHO" not in env  # ARGs stay out of the config
    run_line = result.image.config.history[-1].created_by
    assert run_line.startswith("RUN |2 GREETING=hello WHO=tester /bin/sh -c ")


def test_an_arg_named_with_a_variable_is_not_expanded(builder: Builder, tmp_path: Path) -> None:
    """BuildKit declares ``ARG ${src}=x`` under the literal name: ``$f`` stays empty."""
    dockerfile = (f"FROM {BASE}\n"
                  "ENV src=f\n"
                  "ARG ${src}=x\n"
                  'RUN echo "[$f]" > /seen\n')
    result = builder.build(dockerfile)
    assert (rootfs(result.image, tmp_path / "out") / "seen").read_text() == "[]\n"
    assert result.image.config.history[-1].created_by.startswith("RUN |1 ${src}=x /bin/sh -c ")


def test_workdir_owners_in_an_image_without_passwd(builder: Builder) -> None:
    """As BuildKit: USER root works without /etc/passwd (0:0), a bare number owns N:N."""
    dockerfile = (f"FROM {BASE}\n"
                  "RUN rm /etc/passwd /etc/group\n"
                  "USER root\n"
                  "WORKDIR /r\n"
                  "USER 1234\n"
                  "WORKDIR /n\n")
    result = builder.build(dockerfile)
    owners = {m.name.strip("./").rstrip("/"): (m.uid, m.gid)
              for layer in result.image.layers[-2:] for m in layer_members(layer)}
    assert owners["r"] == (0, 0) and owners["n"] == (1234, 1234)


def test_network_none_leaves_only_loopback(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE}\n"
                  "RUN --network=none ls /sys/class/net > /none\n"
                  "RUN ls /sys/class/net > /default\n")
    result = builder.build(dockerfile)
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "none").read_text().split() == ["lo"]
    assert (root / "default").read_text().split() == ["lo", "tap0"]  # slirp4netns's


def test_network_none_for_the_whole_build(builder: Builder, tmp_path: Path) -> None:
    result = builder.build(f"FROM {BASE}\nRUN ls /sys/class/net > /n\n", network="none")
    assert (rootfs(result.image, tmp_path / "out") / "n").read_text().split() == ["lo"]


def test_heredoc_run_plain(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE}\n"
                  "RUN <<EOF\n"
                  "echo one > /plain\n"
                  "echo two >> /plain\n"
                  "EOF\n"
                  "RUN cat <<A > /catted\n"
                  "from cat\n"
                  "A\n")
    result = builder.build(dockerfile)
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "plain").read_text() == "one\ntwo\n"
    assert (root / "catted").read_text() == "from cat\n"


def test_heredoc_run_script(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE}\n"
                  "RUN <<EOT\n"
                  "#!/bin/sh -e\n"
                  "echo \"script $0\" > /script\n"
                  "EOT\n")
    result = builder.build(dockerfile)
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "script").read_text() == "script /dev/pipes/EOT\n"
    assert not (root / "dev/pipes").exists()  # the script's mount leaves nothing behind
    # BuildKit runs the script through the shell, and its history line says so
    assert result.image.config.history[-1].created_by == "RUN /bin/sh -c /dev/pipes/EOT # buildkit"


def test_deleting_a_base_file_makes_a_whiteout(builder: Builder, tmp_path: Path) -> None:
    dockerfile = f"FROM {BASE}\nRUN rm /etc/group && rm -r /home/app\n"
    result = builder.build(dockerfile)
    names = {m.name.rstrip("/") for m in layer_members(result.image.layers[-1])}
    assert "etc/.wh.group" in names and "home/.wh.app" in names
    assert not any(n.startswith("etc/") and ".wh." not in n for n in names - {"etc"})
    root = rootfs(result.image, tmp_path / "out")
    assert not (root / "etc/group").exists() and (root / "etc/passwd").exists()
    assert not (root / "home/app").exists()


def test_replacing_a_directory_writes_a_whiteout_per_removed_entry(builder: Builder,
                                                                   tmp_path: Path) -> None:
    """As BuildKit's overlay differ (checkOpaque): the directory made again is compared with
    the lower one, not written opaque (layers/unchanged.py)."""
    dockerfile = f"FROM {BASE}\nRUN rm -r /home && mkdir /home && echo new > /home/only\n"
    result = builder.build(dockerfile)
    names = {m.name.rstrip("/") for m in layer_members(result.image.layers[-1])}
    assert names == {"home", "home/.wh.app", "home/only"}
    root = rootfs(result.image, tmp_path / "out")
    assert sorted(p.name for p in (root / "home").iterdir()) == ["only"]


EMPTY_TAR = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


def test_run_that_changes_nothing_makes_an_empty_layer(builder: Builder, tmp_path: Path) -> None:
    # current BuildKit (overlay differ): every RUN has a layer; one that changed nothing (or
    # only a directory's mtime) has the empty tar, and its history entry is not empty_layer
    dockerfile = (f"FROM {BASE}\nRUN true\nRUN cat /etc/passwd > /dev/null && ls /tmp\n"
                  "RUN touch /tmp/x && rm /tmp/x\nWORKDIR /tmp\nWORKDIR /\n")
    result = builder.build(dockerfile)
    diff_ids = [str(d) for d in result.image.config.diff_ids]
    assert diff_ids[1:] == [EMPTY_TAR] * 4
    history = result.image.config.history
    assert [h.empty_layer for h in history[1:]] == [False, False, False, False, True]
    assert [layer_members(layer) for layer in result.image.layers[1:]] == [[]] * 4


def test_rewritten_but_unchanged_files_stay_out_of_the_layer(builder: Builder,
                                                            tmp_path: Path) -> None:
    # BuildKit's sameDirent: same mode, owner, size and mtime (whole seconds, as unpacked from a
    # tar: the content is compared) is no change; the directories above are written only as
    # parents of something that is
    dockerfile = (f"FROM {BASE}\n"
                  "RUN cp -p /etc/passwd /tmp/p && cp -p /tmp/p /etc/passwd && rm /tmp/p"
                  " && chmod 755 /etc && mkdir -p /opt/a/b && echo new > /opt/a/b/n\n"
                  "RUN cp -p /etc/group /tmp/o && tr a b < /tmp/o > /etc/group"
                  " && touch -r /tmp/o /etc/group && rm /tmp/o\n")
    result = builder.build(dockerfile)
    first, second = ([m.name.strip("/").removeprefix("./") for m in layer_members(layer)]
                     for layer in result.image.layers[-2:])
    assert sorted(first) == ["opt", "opt/a", "opt/a/b", "opt/a/b/n"]
    assert sorted(second) == ["etc", "etc/group"]  # same size and time, new bytes: a change


def test_sandbox_basics_as_buildkit_provides_them(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE}\n"
                  "RUN echo $$ > /pid && hostname > /host && ls /dev > /devs "
                  "&& grep -c localhost /etc/hosts > /hosts\n")
    result = builder.build(dockerfile)
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "pid").read_text() == "1\n"  # a new PID namespace, the command is PID 1
    assert (root / "host").read_text() == "buildkitsandbox\n"
    devs = set((root / "devs").read_text().split())
    assert {"null", "zero", "random", "urandom", "tty", "shm", "pts"} <= devs
    assert int((root / "hosts").read_text()) >= 1
    # the generated files and device nodes are not part of the layer
    names = {m.name.rstrip("/") for m in layer_members(result.image.layers[-1])}
    assert not any(n.startswith("dev/") or n == "etc/hosts" for n in names), names


def test_a_relative_store_root_works(builder: Builder) -> None:
    """``--root store`` relative to the working directory: the sandbox's bind mounts once
    failed with "open_tree: No such file or directory" for every RUN."""
    import subprocess

    from tests.engine.conftest import CLOCHE

    ctx = builder.context(f"FROM {BASE}\nRUN echo hi > /hi.txt\n")
    rel = os.path.relpath(builder.root, builder.dir)
    result = subprocess.run(CLOCHE + ["build", "--root", rel, "--progress", "plain", str(ctx)],
                            cwd=builder.dir, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_add_host_lines_reach_the_steps_hosts_file(builder: Builder, tmp_path: Path) -> None:
    """`--add-host NAME:IP` (buildx's): a line of each RUN's /etc/hosts, after BuildKit's own
    two, and part of the step's cache key; bad values are refused before the build."""
    ctx = builder.context(f"FROM {BASE}\nRUN cat /etc/hosts > /hosts\n")
    builder.cli("build", "--add-host", "db:10.0.0.5", "--add-host", "v6=fd00::1",
                "-t", "hosts:1", str(ctx))
    root = rootfs(builder.store.image("hosts:1"), tmp_path / "out")
    lines = (root / "hosts").read_text().splitlines()
    assert lines[-2:] == ["10.0.0.5\tdb", "fd00::1\tv6"], lines
    plain = builder.cli("build", "-t", "hosts:2", str(ctx))  # another key: the step runs
    assert builder.store.image("hosts:2").digest != builder.store.image("hosts:1").digest
    assert plain.returncode == 0
    for bad, says in (("db", "expected NAME:IP"), ("db:nowhere", "not an IP address"),
                      ("gw:host-gateway", "host-gateway")):
        done = builder.cli("build", "--add-host", bad, str(ctx), check=False)
        assert done.returncode != 0 and says in done.stderr, done.stderr
