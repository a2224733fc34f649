"""What a RUN step sees in cloche's sandbox equals what it sees under Docker's BuildKit.

The busybox rootfs is imported into the Docker engine; the same shell line runs as a RUN
step there (its output copied out with ``-o type=local``) and in cloche's sandbox over an
overlay of the same directory. The line prints what builds depend on: PID, identity and
groups, umask, hostname, /etc/hosts, the environment, capabilities, /dev's nodes and the
mount flags of the special filesystems. (Network interfaces differ on purpose: cloche's
default network is slirp4netns's tap, Docker's a bridge's veth.) ``id`` is compared as current
BuildKit prints it, with the primary group among the groups (v0.8 leaves it out).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloche.fs.users import resolve_user
from cloche.sandbox import RunSpec, mount_overlay, run
from tests.differential.harness import current_buildkit_id_lines
from tests.fixtures.services import require_root

MOUNTS = r"^/(proc|dev|dev/shm|dev/pts|dev/mqueue|sys|etc/hosts|etc/resolv\.conf)$"
FACTS = (
    "echo pid $$; tr '\\0' ' ' </proc/1/cmdline; echo; id; umask; hostname; cat /etc/hosts; "
    "env | sort; grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status; "
    "stat -c '%A %U %G %t,%T %n' /dev/*; "
    "busybox awk '$2 ~ /" + MOUNTS.replace("/", "\\/") + "/ { f=\",\" $4 \",\"; "
    "printf \"%s %s\", $2, ($3 == \"proc\" || $3 == \"tmpfs\" || $3 == \"devpts\" || "
    "$3 == \"mqueue\" || $3 == \"sysfs\") ? $3 : \"hostfs\"; "
    "n = split(\"ro,rw,nosuid,nodev,noexec\", o, \",\"); "
    "for (i = 1; i <= n; i++) if (index(f, \",\" o[i] \",\")) printf \" %s\", o[i]; "
    "print \"\" }' /proc/mounts | sort; pwd"
)
USERS = {"default": "", "root": "root", "app": "app", "numeric": "1000:50", "unknown": "4242"}
# Differences on purpose. /dev is nodev in cloche: runc keeps a step from opening the device
# nodes it makes with the devices cgroup, cloche by mounting everything nodev (its own /dev
# nodes are each bound on themselves, and work); see docs/security.md.
DELIBERATE = {"/dev tmpfs rw nosuid nodev": "/dev tmpfs rw nosuid"}


@pytest.fixture(scope="module")
def parity_rootfs(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox rootfs with root and app in an extra group (USER root adds it, no USER not)."""
    root = tmp_path_factory.mktemp("parity-rootfs") / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    with open(root / "etc" / "group", "a") as f:
        f.write("wheel:x:10:root,app\n")
    return root


def _import(docker: str, parity_rootfs: Path, work: Path) -> str:
    """The parity rootfs as a Docker image with a layer of its own (a marker file makes it
    unique, so no other image or pytest worker shares Docker's layer)."""
    token = uuid.uuid4().hex[:12]
    tar_path = work / f"rootfs-{token}.tar"
    marker = work / f"parity-id-{token}"
    marker.write_text(token + "\n")
    with tarfile.open(tar_path, "w") as tar:
        tar.add(parity_rootfs, arcname=".")
        tar.add(marker, arcname="etc/parity-id")
    name = f"cloche-sandbox-parity:{token}"
    subprocess.run([docker, "import", str(tar_path), name], check=True, capture_output=True)
    return name


@pytest.fixture(scope="module")
def docker_image(docker: str, parity_rootfs: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = _import(docker, parity_rootfs, tmp_path_factory.mktemp("parity"))
    yield name
    subprocess.run([docker, "rmi", "-f", name], capture_output=True)


def _docker_build(docker: str, ctx: Path, out: Path, image: str,
                  dockerfile: Callable[[str], str]) -> subprocess.CompletedProcess[str]:
    """The reference build with Docker's BuildKit (v0.8) of ``dockerfile(image)``."""
    (ctx / "Dockerfile").write_text(dockerfile(image))
    return subprocess.run([docker, "build", "-q", "--no-cache", "-o", f"type=local,dest={out}",
                           str(ctx)], capture_output=True, text=True,
                          env={"DOCKER_BUILDKIT": "1", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def docker_facts(docker: str, docker_image: str,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    ctx = tmp_path_factory.mktemp("parity-ctx")

    def dockerfile(image: str) -> str:
        lines = [f"FROM {image} AS s"]
        for label, spec in USERS.items():
            if spec:
                lines.append(f"USER {spec}")
            lines.append(f"RUN {{ {FACTS}; }} > /tmp/facts-{label} 2>&1")
        lines += ["FROM scratch"] + [f"COPY --from=s /tmp/facts-{label} /" for label in USERS]
        return "\n".join(lines) + "\n"

    out = ctx / "out"
    done = _docker_build(docker, ctx, out, docker_image, dockerfile)
    assert done.returncode == 0, done.stderr
    return {label: (out / f"facts-{label}").read_text() for label in USERS}


@pytest.mark.parametrize("label", list(USERS))
def test_run_step_sees_what_buildkit_shows(label: str, docker_facts: dict[str, str],
                                           parity_rootfs: Path, tmp_path: Path) -> None:
    require_root()
    upper, work, merged = tmp_path / "u", tmp_path / "w", tmp_path / "m"
    for d in (upper, work, merged):
        d.mkdir()
    out: list[bytes] = []
    with mount_overlay([parity_rootfs], upper, work, merged):
        user = resolve_user(merged, USERS[label])
        script = f"{{ {FACTS}; }} 2>&1"
        result = run(RunSpec(merged, ("/bin/sh", "-c", script), user=user, stdout=out.append))
    assert result.ok
    ours = b"".join(out).decode()
    # BuildKit's PID 1 command line is its own RUN line; ours ran the same line minus the
    # redirection into the facts file, so compare that line by its start only.
    # current BuildKit adds the primary group to the supplementary ones, v0.8 does not
    theirs_lines = current_buildkit_id_lines(docker_facts[label].encode()).decode().splitlines()
    our_lines = [DELIBERATE.get(line, line) for line in ours.splitlines()]
    assert theirs_lines[1].startswith("/bin/sh -c") and our_lines[1].startswith("/bin/sh -c")
    assert our_lines[:1] + our_lines[2:] == theirs_lines[:1] + theirs_lines[2:]


CHOWNS = ("4242", "app", "1000:staff", ":staff", "app:4", "app:", "ghost", "ghost:staff",
          "app:ghosts", "0x10", "root:wheel")


def test_chown_resolution_matches_buildkits_copy(docker: str, docker_image: str,
                                                 parity_rootfs: Path, tmp_path: Path) -> None:
    from cloche.fs.users import resolve_chown
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("data")

    def dockerfile(image: str) -> str:
        lines = [f"FROM {image} AS s"]
        lines += [f"COPY --chown={spec} f /c{i}" for i, spec in enumerate(CHOWNS)]
        lines += ["RUN stat -c '%u %g' " + " ".join(f"/c{i}" for i in range(len(CHOWNS)))
                  + " > /owners", "FROM scratch", "COPY --from=s /owners /"]
        return "\n".join(lines) + "\n"

    done = _docker_build(docker, ctx, tmp_path / "out", docker_image, dockerfile)
    assert done.returncode == 0, done.stderr
    theirs = [tuple(map(int, line.split()))
              for line in (tmp_path / "out" / "owners").read_text().splitlines()]
    assert [resolve_chown(parity_rootfs, spec, strict=False) for spec in CHOWNS] == theirs
