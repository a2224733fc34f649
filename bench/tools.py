"""The three builders under test, each behind the same small interface.

``reset()`` empties the tool's build cache (cache mounts included) and leaves the base image
present, ``pull(ref)`` puts a registry image in the tool's image store, unpacked as the tool
keeps a base it builds on, both untimed (a cold build measures building, not pulling);
``build(project)`` runs one build to completion and returns its wall time and image ID. Every
build writes its image where the tool keeps images: cloche's store, the Docker engine's image
store, buildah's containers/storage.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.workload import BASE_REF, Project

DOCKER = "/usr/bin/docker"
TIMEOUT = 900


class BuildFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Timing:
    seconds: float
    image_id: str


def _run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = TIMEOUT,
         check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise BuildFailed(f"{' '.join(cmd)} exited {result.returncode}:\n"
                          f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def _timed(cmd: list[str], iidfile: Path, env: dict[str, str] | None = None) -> Timing:
    iidfile.unlink(missing_ok=True)
    start = time.perf_counter()
    _run(cmd, env=env)
    seconds = time.perf_counter() - start
    image_id = iidfile.read_text().strip() if iidfile.exists() else ""
    return Timing(seconds, image_id)


def _build_args(project: Project) -> list[str]:
    return [x for name, value in project.build_args for x in ("--build-arg", f"{name}={value}")]


def _version(cmd: list[str]) -> str:
    try:
        return _run(cmd, timeout=60).stdout.strip().splitlines()[0]
    except (BuildFailed, OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


class Tool:
    name = "?"

    def __init__(self, workdir: Path, base_rootfs: Path, base_tar: Path) -> None:
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.base_rootfs = base_rootfs
        self.base_tar = base_tar
        self.iidfile = self.workdir / "iid"

    def version(self) -> str:
        raise NotImplementedError

    def available(self) -> str | None:
        """None when the tool can run here, else why not."""
        return None

    def reset(self) -> None:
        raise NotImplementedError

    def pull(self, ref: str) -> None:
        raise NotImplementedError

    def build(self, project: Project) -> Timing:
        raise NotImplementedError

    def cleanup(self) -> None:
        pass


class Cloche(Tool):
    """cloche with its own store (``--root``); a fresh store is a cold cache."""

    name = "cloche"
    extra: tuple[str, ...] = ()  # build flags of a mode (ClocheChroot)

    def __init__(self, *args, cloche: str, **kw) -> None:
        super().__init__(*args, **kw)
        self.exe = cloche
        self.generation = 0
        self.root = self.workdir / "root0"

    def version(self) -> str:
        return _version([self.exe, "--version"])

    def available(self) -> str | None:
        return None if os.access(self.exe, os.X_OK) else f"{self.exe} not found (make venv)"

    def reset(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.generation += 1
        self.root = self.workdir / f"root{self.generation}"
        _run([self.exe, "import", "--root", str(self.root), str(self.base_rootfs), BASE_REF])

    def pull(self, ref: str) -> None:
        _run([self.exe, "pull", "--root", str(self.root), "-q", ref])
        # Docker and buildah unpack a base image's layers when they pull it, cloche when a build
        # first uses it (once per store): a build of just FROM does that here, untimed, like
        # theirs, and leaves no build cache record
        from_only = self.workdir / "from-only"
        from_only.mkdir(exist_ok=True)
        (from_only / "Dockerfile").write_text(f"FROM {ref}\n")
        _run([self.exe, "build", "--root", str(self.root), "--progress", "quiet", str(from_only)])

    def build(self, project: Project) -> Timing:
        # as installed: Python's bytecode cache on (a sandbox may set PYTHONDONTWRITEBYTECODE,
        # which makes every run compile cloche's modules again, ~0.3 s)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return _timed([self.exe, "build", "--root", str(self.root), "--progress", "quiet",
                       *self.extra, *_build_args(project), "-f", str(project.dockerfile),
                       "-t", f"cloche-bench/{project.name}:cloche",
                       "--iidfile", str(self.iidfile), str(project.context)], self.iidfile,
                      env=env)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class BuildKit(Tool):
    """The Docker engine's BuildKit; ``docker builder prune -af`` empties its cache (cache
    mounts included). Images pulled for a case stay in the engine until cleanup."""

    name = "buildkit"

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.env = dict(os.environ, DOCKER_BUILDKIT="1")
        self.images: set[str] = set()
        self.pulled: set[str] = set()

    def version(self) -> str:
        return "docker " + _version([DOCKER, "version", "-f", "{{.Server.Version}}"])

    def available(self) -> str | None:
        if not os.access(DOCKER, os.X_OK):
            return f"{DOCKER} not found"
        if _run([DOCKER, "info"], check=False, timeout=60).returncode != 0:
            return "the Docker engine is not running"
        return None

    def reset(self) -> None:
        _run([DOCKER, "builder", "prune", "-af"])
        if _run([DOCKER, "image", "inspect", BASE_REF], check=False).returncode != 0:
            _run([DOCKER, "import", str(self.base_tar), BASE_REF])

    def pull(self, ref: str) -> None:
        # like the busybox base: pulled once, kept across resets (the engine's image store is
        # not its build cache); a loopback registry is plain HTTP to the engine by default
        if _run([DOCKER, "image", "inspect", ref], check=False).returncode != 0:
            _run([DOCKER, "pull", "-q", ref])
        self.pulled.add(ref)

    def build(self, project: Project) -> Timing:
        timing = _timed([DOCKER, "build", "-q", *_build_args(project),
                         "-f", str(project.dockerfile), "-t", f"cloche-bench/{project.name}:buildkit",
                         "--iidfile", str(self.iidfile), str(project.context)],
                        self.iidfile, env=self.env)
        if timing.image_id:
            self.images.add(timing.image_id)
        return timing

    def cleanup(self) -> None:
        tags = [f"cloche-bench/{n}:buildkit"
                for n in ("multistage", "fan-in", "big-layer", "go-hello")]
        out = _run([DOCKER, "images", "-q", "--filter", "reference=cloche-bench/*"], check=False)
        ids = set(out.stdout.split()) | self.images
        _run([DOCKER, "rmi", "-f", *tags, *sorted(ids)], check=False)
        if self.pulled:  # their registry goes away with the run
            _run([DOCKER, "rmi", *sorted(self.pulled)], check=False)


class Buildah(Tool):
    """buildah bud with ``--layers`` (its build cache) and chroot isolation, in its own
    storage root, its cache mounts (``$TMPDIR/buildah-cache``) in that root too; a fresh
    root is a cold cache."""

    name = "buildah"

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.generation = 0
        self.root = self.workdir / "store0"
        self.docker_archive = self.workdir / "base-docker.tar"

    def _g(self) -> list[str]:
        return ["buildah", "--root", str(self.root / "root"), "--runroot", str(self.root / "run")]

    def _env(self) -> dict[str, str]:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return dict(os.environ, TMPDIR=str(tmp))

    def version(self) -> str:
        return _version(["buildah", "--version"])

    def available(self) -> str | None:
        return None if shutil.which("buildah") else "buildah not installed"

    def _drop_store(self) -> None:
        if not self.root.exists():
            return
        _run([*self._g(), "rm", "-a"], check=False)
        _run([*self._g(), "rmi", "-a", "-f"], check=False)
        prefix = str(self.root) + "/"
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f]
        for point in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def reset(self) -> None:
        self._drop_store()
        self.generation += 1
        self.root = self.workdir / f"store{self.generation}"
        if not self.docker_archive.exists():
            # the same base bytes the others use, as a docker-archive buildah can pull
            _run(["skopeo", "--insecure-policy", "copy", "-q", f"tarball:{self.base_tar}",
                  f"docker-archive:{self.docker_archive}:{BASE_REF}"])
        _run([*self._g(), "pull", "-q", f"docker-archive:{self.docker_archive}"])

    def pull(self, ref: str) -> None:
        _run([*self._g(), "pull", "-q", "--tls-verify=false", ref], env=self._env())

    def build(self, project: Project) -> Timing:
        return _timed([*self._g(), "bud", "--isolation", "chroot", "--layers", "-q",
                       *_build_args(project), "-f", str(project.dockerfile),
                       "-t", f"cloche-bench/{project.name}:buildah",
                       "--iidfile", str(self.iidfile), str(project.context)], self.iidfile,
                      env=self._env())

    def cleanup(self) -> None:
        self._drop_store()


class ClocheChroot(Cloche):
    """cloche as root with ``--isolation=chroot`` (proot, plain directories; docs/isolation.md)."""

    name = "cloche-chroot"
    extra = ("--isolation=chroot",)


class ClocheUser(Cloche):
    """cloche run by an ordinary user (rootless: a user namespace with the user's subordinate
    ids, docs/rootless.md), as the user ``cloche-bench`` (made here: useradd, /etc/subuid,
    /etc/subgid), with the same cloche (a copy of its package where the user can read it)."""

    name = "cloche-user"
    user = "cloche-bench"
    overlay = "kernel"

    def __init__(self, *args, cloche: str, **kw) -> None:
        super().__init__(*args, cloche=cloche, **kw)
        os.chmod(self.workdir, 0o777)
        for parent in self.workdir.parents:  # the user reaches its store and the contexts
            if parent == Path("/"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o005)

    def available(self) -> str | None:
        if shutil.which("newuidmap") is None or shutil.which("runuser") is None:
            return "needs newuidmap (uidmap) and runuser"
        if subprocess.run(["id", "-u", self.user], capture_output=True).returncode != 0:
            _run(["useradd", "--create-home", self.user])
        for path in ("/etc/subuid", "/etc/subgid"):
            if f"{self.user}:" not in Path(path).read_text():
                with open(path, "a") as f:
                    f.write(f"{self.user}:300000:65536\n")
        if os.path.exists("/dev/net/tun"):
            os.chmod("/dev/net/tun", 0o666)
        if os.path.exists("/dev/fuse"):
            os.chmod("/dev/fuse", 0o666)
        return None

    def _as_user(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", "env", f"CLOCHE_OVERLAY={self.overlay}",
                f"HOME=/home/{self.user}", self.exe, *args]

    def reset(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.generation += 1
        self.root = self.workdir / f"root{self.generation}"
        _run(self._as_user(["import", "--root", str(self.root), str(self.base_rootfs),
                            BASE_REF]))

    def pull(self, ref: str) -> None:
        _run(self._as_user(["pull", "--root", str(self.root), "-q", ref]))
        from_only = self.workdir / "from-only"
        from_only.mkdir(exist_ok=True)
        (from_only / "Dockerfile").write_text(f"FROM {ref}\n")
        _run(self._as_user(["build", "--root", str(self.root), "--progress", "quiet",
                            str(from_only)]))

    def build(self, project: Project) -> Timing:
        os.chmod(self.workdir, 0o777)
        return _timed(self._as_user(["build", "--root", str(self.root), "--progress", "quiet",
                                     *_build_args(project), "-f", str(project.dockerfile),
                                     "-t", f"cloche-bench/{project.name}:cloche",
                                     "--iidfile", str(self.iidfile), str(project.context)]),
                      self.iidfile)

    def cleanup(self) -> None:
        _run(["rm", "-rf", str(self.root)], check=False)


class ClocheUserFuse(ClocheUser):
    """The same user with fuse-overlayfs (``CLOCHE_OVERLAY=fuse``), the kernel's fallback."""

    name = "cloche-user-fuse"
    overlay = "fuse"


class ClocheImage(Cloche):
    """cloche's own image (``make image``: cloche:dev) in ``docker run`` with Docker's
    defaults, as its default user (uid 1000): no namespaces may be made there, so RUN steps
    run under proot and owners are recorded (docs/isolation.md). The store is a host folder
    mounted where the image keeps it; the network is the host's (the loopback registry)."""

    name = "cloche-image"
    image = "cloche:dev"

    def __init__(self, *args, cloche: str, **kw) -> None:
        super().__init__(*args, cloche=cloche, **kw)
        os.chmod(self.workdir, 0o777)

    def version(self) -> str:
        return _version(self._docker(["--version"]))

    def available(self) -> str | None:
        if _run([DOCKER, "image", "inspect", self.image], check=False).returncode != 0:
            return f"no {self.image} in the Docker engine (make image)"
        return None

    def _docker(self, args: list[str], mounts: tuple[Path, ...] = ()) -> list[str]:
        volumes = [x for m in {self.base_rootfs, self.workdir, *mounts}
                   for x in ("-v", f"{m}:{m}")]
        return [DOCKER, "run", "--rm", "--network", "host",
                "-v", f"{self.root}:/home/cloche/.local/share/cloche", *volumes,
                self.image, *args]

    def reset(self) -> None:
        _run(["rm", "-rf", str(self.root)], check=False)
        self.generation += 1
        self.root = self.workdir / f"root{self.generation}"
        self.root.mkdir()
        os.chown(self.root, 1000, 1000)
        _run(self._docker(["import", str(self.base_rootfs), BASE_REF]))

    def pull(self, ref: str) -> None:
        _run(self._docker(["pull", "-q", ref]))
        from_only = self.workdir / "from-only"
        from_only.mkdir(exist_ok=True)
        (from_only / "Dockerfile").write_text(f"FROM {ref}\n")
        _run(self._docker(["build", "--progress", "quiet", str(from_only)]))

    def build(self, project: Project) -> Timing:
        return _timed(self._docker(
            ["build", "--progress", "quiet", *_build_args(project), "-f",
             str(project.dockerfile), "-t", f"cloche-bench/{project.name}:cloche",
             "--iidfile", str(self.iidfile), str(project.context)],
            (project.context, project.dockerfile.parent)), self.iidfile)

    def cleanup(self) -> None:
        _run(["rm", "-rf", str(self.root)], check=False)


ALL = {"cloche": Cloche, "buildkit": BuildKit, "buildah": Buildah,
       "cloche-image": ClocheImage,
       "cloche-chroot": ClocheChroot, "cloche-user": ClocheUser,
       "cloche-user-fuse": ClocheUserFuse}
