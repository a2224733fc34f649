"""Bad input to every cloche command gets one clear, located message, never a traceback.

A table: the argv (with the input files it needs) and what must come out: the exit code and
fragments of the message (the file and line, the flag, the reference, the registry). Each row
runs the real console script as a subprocess against its own copy of a store that holds a
busybox image, and also checks that nothing was lost or written where it should not be.
"""

from __future__ import annotations

import http.server
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures.services import free_port, require_root

PROJECT = Path(__file__).resolve().parents[1]
CLOCHE = [str(PROJECT / ".venv" / "bin" / "cloche")]
if not os.access(CLOCHE[0], os.X_OK):  # CI may install cloche elsewhere
    CLOCHE = [sys.executable, "-m", "cloche.cli.main"]
BASE = "busybox-test:1"


def _tar(entries: list[tuple[str, bytes | None, dict]]) -> bytes:
    """A tar of (name, data, TarInfo attributes); data None for links and directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, attrs in entries:
            info = tarfile.TarInfo(name)
            for key, value in attrs.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


ESCAPE = f"cloche-escape-{uuid.uuid4().hex[:12]}.txt"  # a name no other test writes
TAR_DOTDOT = _tar([("Dockerfile", f"FROM {BASE}\nCOPY . /c\n".encode(), {}),
                   (f"../{ESCAPE}", b"evil", {})])
TAR_HARDLINK_OUT = _tar([("Dockerfile", f"FROM {BASE}\n".encode(), {}),
                         ("h", None, {"type": tarfile.LNKTYPE,
                                      "linkname": "../../../../etc/passwd"})])
ROOTFS_DOTDOT = _tar([("bin/", None, {"type": tarfile.DIRTYPE, "mode": 0o755}),
                      (f"../../{ESCAPE}", b"evil", {})])
NOT_A_TAR = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8
CUT_ARCHIVE = _tar([("oci-layout", b'{"imageLayoutVersion": "1.0.0"}', {}),
                   ("blobs/sha256/" + "a" * 64, b"layer bytes " * 1000, {})])[:4000]
ZSTD_GARBAGE = b"\x28\xb5\x2f\xfd" + b"garbage, not a zstd frame" * 4

OK = f"FROM {BASE}\nRUN true\n"


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` after ``cloche`` ({root}, {tmp}, {ctx}, {port} filled in), the
    files of the context directory {ctx}, what must be printed, and what must not change."""

    id: str
    argv: tuple[str, ...]
    code: int
    says: tuple[str, ...]
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    stdin: bytes = b""
    needs_root: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    unchanged: tuple[str, ...] = ()   # paths under {tmp} whose bytes must survive
    absent: tuple[str, ...] = ()      # paths that must not exist afterwards
    max_seconds: float | None = None
    xfail: str | None = None          # a known defect, reported to its owner (strict)


def build(id: str, dockerfile: str | bytes | None, code: int, says: tuple[str, ...],
          *flags: str, **kw: object) -> Case:
    files = dict(kw.pop("files", {}))  # type: ignore[arg-type]
    if dockerfile is not None:
        files["Dockerfile"] = dockerfile
    return Case(id, ("build", "--root", "{root}", "--progress", "plain", *flags, "{ctx}"),
                code, says, files=files, needs_root=True, **kw)  # type: ignore[arg-type]


def plan(id: str, dockerfile: str | bytes, code: int, says: tuple[str, ...],
         *flags: str) -> Case:
    return Case(id, ("plan", *flags, "{ctx}"), code, says, files={"Dockerfile": dockerfile})


def store_cmd(id: str, argv: tuple[str, ...], code: int, says: tuple[str, ...],
              **kw: object) -> Case:
    return Case(id, (argv[0], "--root", "{root}", *argv[1:]), code, says, **kw)  # type: ignore[arg-type]


TYPO = f"FROM {BASE}\nRUNN echo hi\n"
FORM = f"FROM {BASE}\nCOPY --form=x a /b\n"
CHMOD = f"FROM {BASE}\nCOPY --chmod=999 Dockerfile /b\n"
HEALTH = f"FROM {BASE}\nHEALTHCHECK --interval=abc CMD true\n"
CYCLE = (f"FROM {BASE} AS a\nCOPY --from=b /x /y\n"
         f"FROM {BASE} AS b\nCOPY --from=a /x /y\n")
ONLY_ARGS = "ARG A=1\nARG B\n"
UNREACHABLE_ENV = {"HTTPS_PROXY": "http://127.0.0.1:{port}", "https_proxy": "http://127.0.0.1:{port}",
                   "NO_PROXY": "", "no_proxy": "", "CLOCHE_CONFIG": "{tmp}/no-config.toml"}

CASES = [
    # --- cloche build: where the input is, and the Dockerfile's own mistakes
    Case("build-missing-context", ("build", "--root", "{root}", "{tmp}/no-such-dir"), 1,
         ("error: build context", "no-such-dir", "does not exist"), needs_root=True),
    build("build-missing-f", OK, 1, ("no Dockerfile at", "no-such-file"),
          "-f", "{tmp}/no-such-file"),
    build("build-f-is-a-directory", OK, 1, ("{ctx}", "is a directory"), "-f", "{ctx}"),
    build("build-typo", TYPO, 2, ("Dockerfile:2:1: unknown instruction: RUNN",
                                  " 2 | RUNN echo hi\n     ^", "hint: did you mean 'RUN'?")),
    build("build-unknown-flag", FORM, 2, ("Dockerfile:2:6: unknown flag for COPY: --form",
                                          "\n          ^", "did you mean '--from'?")),
    build("build-chmod-999", CHMOD, 2, ("Dockerfile:2:6", "invalid --chmod value '999'")),
    build("build-healthcheck-interval", HEALTH, 2,
          ("Dockerfile:2:13", "HEALTHCHECK --interval: invalid duration 'abc'")),
    build("build-unknown-target", OK, 2, ("target stage 'nosuch' could not be found",),
          "--target", "nosuch"),
    build("build-copy-from-unknown-image", f"FROM {BASE}\nCOPY --from=nosuchstage /x /y\n", 1,
          ("Dockerfile:2", "COPY", "nosuchstage", "cannot reach the registry docker.io"),
          env=UNREACHABLE_ENV, max_seconds=60),
    build("build-copy-from-unreachable-registry",
          f"FROM {BASE}\nCOPY --from=127.0.0.1:{{port}}/nosuch:1 /x /y\n", 1,
          ("Dockerfile:2", "COPY", "cannot reach the registry 127.0.0.1:{port}",
           "127.0.0.1:{port}/nosuch:1"), max_seconds=60),
    build("build-from-unreachable-registry", "FROM 127.0.0.1:{port}/nosuch:1\nRUN true\n", 1,
          ("cannot reach the registry 127.0.0.1:{port}", "127.0.0.1:{port}/nosuch:1"),
          max_seconds=60),
    build("build-from-failure-names-the-line", "FROM 127.0.0.1:{port}/nosuch:1\nRUN true\n", 1,
          ("Dockerfile:1", "127.0.0.1:{port}/nosuch:1"), max_seconds=60),
    build("build-copy-missing-source", f"FROM {BASE}\n\nCOPY nothere /y\n", 1,
          ("Dockerfile:3", "COPY", "'nothere' not found in the build context")),
    build("build-unknown-user", f"FROM {BASE}\nUSER nosuchuser\nRUN id\n", 1,
          ("Dockerfile:3", "unable to find user nosuchuser")),
    build("build-failing-run", f"FROM {BASE} AS b\nRUN echo out1; echo out2; exit 7\n", 1,
          ("Dockerfile:2: [stage b]", "exit code: 7", "output (last lines):\n  out1\n  out2")),
    build("build-failing-run-long-output-line",
          f"FROM {BASE}\nRUN head -c 300000 /dev/zero | tr '\\0' x; exit 4\n", 1,
          ("Dockerfile:2", "exit code: 4", "xxxxxxxxxx")),
    build("build-arg-malformed", OK, 1, ("--build-arg '=x'", "KEY=VALUE"), "--build-arg", "=x"),
    build("build-secret-without-id", OK, 1, ("--secret 'src=/etc/hostname'", "missing id="),
          "--secret", "src=/etc/hostname"),
    build("build-secret-missing-file", OK, 1,
          ("--secret 'id=tok,src={tmp}/no-secret'", "cannot read", "No such file"),
          "--secret", "id=tok,src={tmp}/no-secret"),
    build("build-secret-unset-env", OK, 1,
          ("--secret 'id=CLOCHE_NO_SUCH_VAR'", "no environment variable CLOCHE_NO_SUCH_VAR"),
          "--secret", "id=CLOCHE_NO_SUCH_VAR"),
    build("build-ssh-missing-socket", OK, 1, ("--ssh 'key={tmp}/no-agent'", "does not exist"),
          "--ssh", "key={tmp}/no-agent"),
    build("build-output-bogus", OK, 1, ("--output 'type=bogus'", "unknown type 'bogus'"),
          "--output", "type=bogus"),
    build("build-push-without-tag", f"FROM {BASE}\nRUN echo step-ran\n", 1,
          ("--push needs a name",), "--push"),
    build("build-image-output-without-name", f"FROM {BASE}\nRUN echo step-ran\n", 1,
          ("--output type=image needs name=",), "-o", "type=image,push=true"),
    build("build-output-oci-no-dest", OK, 1, ("type=oci needs dest=PATH",), "-o", "type=oci"),
    build("build-platform-invalid", OK, 1,
          ("--platform 'not/a/platform'", "unknown operating system 'not'"),
          "--platform", "not/a/platform"),
    build("build-platform-not-the-base-image", OK, 1, ("linux/arm64", BASE), "--platform",
          "linux/arm64"),
    build("build-bad-tag", OK, 1, ("--tag 'Bad Tag'", "invalid reference format"),
          "-t", "Bad Tag"),
    build("build-platform-unknown-arch", OK, 1,
          ("--platform 'linux/bogus'", "unknown architecture 'bogus'"),
          "--platform", "linux/bogus"),
    build("build-jobs-negative", OK, 2, ("--jobs", "-3"), "--jobs", "-3"),
    build("build-binary-dockerfile", NOT_A_TAR, 1, ("Dockerfile is not a text file",)),
    build("build-empty-dockerfile", "", 2, ("file with no instructions",
                                            "hint: a Dockerfile needs at least a FROM")),
    build("build-line-too-long", f"FROM {BASE}\nRUN echo {'a' * 70000}\n", 2,
          ("Dockerfile:2:1: dockerfile line greater than max allowed size of 65535",)),
    build("build-only-args", ONLY_ARGS, 2, ("no stages to build",)),
    build("build-cycle", CYCLE, 2, ("Dockerfile:4:13: circular dependency detected on stages: "
                                    "a -> b -> a", " 4 | COPY --from=a /x /y")),
    Case("build-stdin-dockerfile-binary",
         ("build", "--root", "{root}", "-f", "-", "{ctx}"), 1,
         ("Dockerfile on standard input (-f -) is not UTF-8",),
         files={"a": "a"}, stdin=NOT_A_TAR, needs_root=True),
    Case("build-stdin-not-a-tar", ("build", "--root", "{root}", "-"), 2,
         ("Dockerfile:1:1: unknown instruction: HELLO",),
         stdin=b"hello, this is not a tar\n", needs_root=True),
    Case("build-stdin-tar-dotdot", ("build", "--root", "{root}", "-"), 1,
         ("context tar from stdin", f"'../{ESCAPE}' climbs out of the root"),
         stdin=TAR_DOTDOT, needs_root=True,
         absent=(f"/tmp/{ESCAPE}", f"{{tmp}}/../{ESCAPE}")),
    Case("build-stdin-tar-hardlink-out", ("build", "--root", "{root}", "-"), 1,
         ("context tar from stdin", "'../../../../etc/passwd' climbs out of the root"),
         stdin=TAR_HARDLINK_OUT, needs_root=True),
    Case("build-stdin-tar-truncated", ("build", "--root", "{root}", "-"), 1,
         ("context tar from stdin", "cannot read the tar"),
         stdin=TAR_DOTDOT[:700], needs_root=True),

    # --- cloche plan: the same broken Dockerfiles, without a build
    plan("plan-typo", TYPO, 2, ("Dockerfile:2:1: unknown instruction: RUNN", "did you mean 'RUN'")),
    plan("plan-unknown-flag", FORM, 2, ("Dockerfile:2:6: unknown flag for COPY: --form",)),
    plan("plan-chmod-999", CHMOD, 2, ("Dockerfile:2:6", "invalid --chmod value '999'")),
    plan("plan-healthcheck", HEALTH, 2, ("Dockerfile:2:13", "invalid duration 'abc'")),
    plan("plan-empty", "", 2, ("Dockerfile", "file with no instructions")),
    plan("plan-only-args", ONLY_ARGS, 2, ("no stages to build",)),
    plan("plan-cycle", CYCLE, 2, ("Dockerfile:4:13", "circular dependency", "a -> b -> a")),
    plan("plan-binary", NOT_A_TAR, 1, ("Dockerfile", "is not UTF-8 text")),
    plan("plan-unknown-target", OK, 2, ("target stage 'nosuch' could not be found",),
         "--target", "nosuch"),
    plan("plan-platform-invalid", OK, 1, ("--platform 'a//b'", "invalid platform"),
         "--platform", "a//b"),
    plan("plan-build-arg", OK, 1, ("--build-arg '=x'",), "--build-arg", "=x"),
    Case("plan-missing-f", ("plan", "-f", "{tmp}/no-such-file", "{ctx}"), 1,
         ("cannot read the Dockerfile", "no-such-file", "No such file")),
    Case("plan-stdin-binary", ("plan", "-f", "-", "{ctx}"), 1,
         ("standard input (-f -) is not UTF-8",), stdin=NOT_A_TAR),

    # --- registries
    store_cmd("pull-invalid-reference", ("pull", "Bad Ref!!"), 1,
              ("invalid reference format", "Bad Ref!!")),
    store_cmd("pull-invalid-digest", ("pull", "app@sha256:xyz"), 1,
              ("invalid reference format", "app@sha256:xyz")),
    store_cmd("pull-unreachable-registry", ("pull", "127.0.0.1:{port}/app:1"), 1,
              ("cannot reach the registry 127.0.0.1:{port}", "127.0.0.1:{port}/app:1"),
              max_seconds=30),
    store_cmd("pull-refused-connection-fails-fast", ("pull", "127.0.0.1:{port}/app:1"), 1,
              ("cannot reach the registry 127.0.0.1:{port}",), max_seconds=8),
    store_cmd("pull-platform-invalid", ("pull", "--platform", "bogus", "127.0.0.1:{port}/app:1"),
              1, ("--platform 'bogus'", "unknown architecture")),
    Case("login-unreachable-registry", ("login", "127.0.0.1:{port}", "-u", "me", "-p", "pw"), 1,
         ("cannot reach the registry 127.0.0.1:{port} to log in", "Connection refused"),
         env={"HOME": "{tmp}/home", "DOCKER_CONFIG": "{tmp}/docker"}, max_seconds=30,
         absent=("{tmp}/home/.docker/config.json", "{tmp}/docker/config.json")),
    store_cmd("push-unknown-image", ("push", "nosuch:1", "127.0.0.1:{port}/app:1"), 1,
              ("no such image: nosuch:1",)),
    store_cmd("push-unreachable-registry", ("push", BASE, "127.0.0.1:{port}/app:1"), 1,
              ("cannot reach the registry 127.0.0.1:{port}",), max_seconds=30),

    # --- the store
    store_cmd("inspect-unknown", ("inspect", "nosuch:1"), 1, ("no such image: nosuch:1",)),
    store_cmd("rmi-unknown", ("rmi", "nosuch:1"), 1, ("no such image: nosuch:1",)),
    store_cmd("rmi-unknown-among-known", ("rmi", "nosuch:1", "nosuch:2"), 1,
              ("no such images: nosuch:1, nosuch:2",)),
    store_cmd("tag-unknown", ("tag", "nosuch:1", "other:1"), 1, ("no such image: nosuch:1",)),
    store_cmd("tag-invalid-target", ("tag", BASE, "BAD Name"), 1,
              ("invalid reference format", "BAD Name")),
    store_cmd("save-unknown", ("save", BASE, "nosuch:1", "-o", "{tmp}/kept.tar"), 1,
              ("no such image: nosuch:1",), files={"../kept.tar": b"old archive"},
              unchanged=("kept.tar",)),
    store_cmd("save-missing-directory", ("save", BASE, "-o", "{tmp}/no-dir/out.tar"), 1,
              ("cannot write the archive {tmp}/no-dir/out.tar (-o)", "No such file or directory")),
    store_cmd("load-not-an-archive", ("load", "-i", "{tmp}/notes.txt"), 1,
              ("{tmp}/notes.txt: not a tar archive",), files={"../notes.txt": b"hello\n"}),
    store_cmd("load-truncated", ("load", "-i", "{tmp}/cut.tar"), 1,
              ("{tmp}/cut.tar", "truncated"), files={"../cut.tar": CUT_ARCHIVE}),
    store_cmd("load-corrupt-zstd", ("load", "-i", "{tmp}/bad.tar.zst"), 1,
              ("{tmp}/bad.tar.zst: corrupt or truncated compressed archive",),
              files={"../bad.tar.zst": ZSTD_GARBAGE}),
    store_cmd("load-missing-file", ("load", "-i", "{tmp}/nothing.tar"), 1,
              ("{tmp}/nothing.tar", "No such file")),
    store_cmd("load-empty-stdin", ("load",), 1, ("standard input: not a tar archive",)),
    store_cmd("import-missing", ("import", "{tmp}/no-rootfs", "app:1"), 1,
              ("{tmp}/no-rootfs: no such file or directory",)),
    store_cmd("import-dotdot", ("import", "{tmp}/evil.tar", "app:1"), 1,
              ("{tmp}/evil.tar", f"'../../{ESCAPE}'", "climbs out of the root"),
              files={"../evil.tar": ROOTFS_DOTDOT},
              absent=(f"/{ESCAPE}", f"/tmp/{ESCAPE}", f"{{tmp}}/../{ESCAPE}")),
    store_cmd("import-hardlink-out", ("import", "{tmp}/evil.tar", "app:1"), 1,
              ("{tmp}/evil.tar", "hard link", "climbs out of the root"),
              files={"../evil.tar": TAR_HARDLINK_OUT}),
    store_cmd("import-bad-change", ("import", "{tmp}/ctx", "app:1", "--change", "RUN true"), 1,
              ("invalid --change 'RUN true'",)),
    store_cmd("import-platform-invalid", ("import", "{tmp}/ctx", "app:1", "--platform", "bogus"),
              1, ("--platform 'bogus'",)),
    store_cmd("prune-bad-filter", ("prune", "--force", "--filter", "bogus"), 1,
              ("--filter 'bogus'", "until=DURATION")),
    store_cmd("prune-bad-size", ("prune", "--force", "--keep-storage", "lots"), 1,
              ("--keep-storage", "invalid size 'lots'")),
    Case("du-missing-root", ("du", "--root", "{tmp}/no-store"), 1,
         ("{tmp}/no-store", "does not exist"), absent=("{tmp}/no-store",)),
    Case("images-root-not-a-store", ("images", "--root", "{ctx}"), 1,
         ("{ctx}", "not a cloche store"), files={"keep.txt": "x"},
         absent=("{ctx}/oci-layout", "{ctx}/index.json")),
]


@pytest.fixture(scope="session")
def cli_template_store(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cloche.ops.importer import import_rootfs
    from cloche.store import Store

    root = tmp_path_factory.mktemp("cli-errors-template") / "store"
    import_rootfs(Store.open(root), busybox_rootfs, names=[BASE])
    return root


def _fill(text: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
    for c in CASES])
def test_bad_input_gets_a_clear_located_error(case: Case, cli_template_store: Path,
                                              tmp_path: Path) -> None:
    if case.needs_root:
        require_root()
    root = tmp_path / "store"
    shutil.copytree(cli_template_store, root, symlinks=True)
    work = tmp_path / "w"
    ctx = work / "ctx"
    ctx.mkdir(parents=True)
    values = {"root": str(root), "tmp": str(work), "ctx": str(ctx), "port": str(free_port())}
    for name, content in case.files.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(_fill(content, values))
    before = {p: (work / p).read_bytes() for p in case.unchanged}
    env = dict(os.environ, **{k: _fill(v, values) for k, v in case.env.items()})
    env.pop("CLOCHE_DEBUG", None)
    argv = CLOCHE + [_fill(a, values) for a in case.argv]
    started = time.monotonic()
    result = subprocess.run(argv, input=case.stdin, capture_output=True, timeout=180,
                            cwd=work, env=env)
    took = time.monotonic() - started
    out = result.stdout.decode(errors="replace")
    err = result.stderr.decode(errors="replace")
    shown = f"$ {' '.join(argv)}\nexit {result.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err and "Traceback" not in out, shown
    assert "internal error" not in err, shown
    assert result.returncode == case.code, shown
    # the message is one block at the end of stderr, after any progress lines; click prints
    # its usage errors as "Error: ..."
    starts = [i for i, line in enumerate(err.splitlines()) if line.startswith(("error: ", "Error: "))]
    assert starts, f"no error line\n{shown}"
    block = "\n".join(err.splitlines()[starts[0]:])
    if case.needs_root and case.code == 1 and "step-ran" in str(case.files.get("Dockerfile")):
        assert "#1 " not in err, f"a step ran before the flag was refused\n{shown}"
    assert len(block) < 4000, f"the error block is {len(block)} characters long"
    for fragment in case.says:
        assert _fill(fragment, values) in block, f"missing {_fill(fragment, values)!r}\n{shown}"
    for name, data in before.items():
        assert (work / name).read_bytes() == data, f"{name} was changed\n{shown}"
    for path in case.absent:
        assert not os.path.lexists(_fill(path, values)), f"{path} was written\n{shown}"
    if case.max_seconds is not None:
        assert took < case.max_seconds, f"took {took:.1f}s\n{shown}"


def test_ctrl_c_during_build_exits_130_with_one_line(cli_template_store: Path,
                                                     tmp_path: Path) -> None:
    """SIGINT at any moment of `cloche build` (starting up, parsing, the moment a step starts,
    running a step) ends it with 130 and the one line ``interrupted``.

    The moment a step starts is where two races were: a step set up just after Ctrl-C had
    killed the running ones, and the kernel handing SIGINT to a worker thread while the main
    thread waited. Either one left the build running its ``sleep``."""
    require_root()
    root = tmp_path / "store"
    shutil.copytree(cli_template_store, root, symlinks=True)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nRUN sleep 4{os.getpid() % 1000:03d}\n")
    for when in (0.5, 3.0, "step", "step", "step", "step", "step", "step"):
        proc = subprocess.Popen(
            CLOCHE + ["build", "--root", str(root), "--no-cache", "--progress", "plain", str(ctx)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        seen = b""
        try:
            if when == "step":
                assert proc.stderr is not None
                while b"RUN sleep" not in seen:
                    chunk = os.read(proc.stderr.fileno(), 4096)
                    if not chunk:
                        pytest.fail(f"the build ended before its step: {seen!r}")
                    seen += chunk
            else:
                time.sleep(when)
            if proc.poll() is not None:
                pytest.fail(f"the build ended before SIGINT: {proc.communicate()}")
            proc.send_signal(signal.SIGINT)
            _, rest = proc.communicate(timeout=20)  # a timeout only, not a speed claim
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = (seen + rest).decode(errors="replace")
        assert proc.returncode == 130, (when, err)
        assert "Traceback" not in err, (when, err)
        assert err.rstrip().splitlines()[-1] == "interrupted", (when, err)


def test_ctrl_c_while_the_cli_still_imports_is_one_line() -> None:
    """The window before click and the subcommands are imported: the handler cloche.cli
    installs for the console script answers SIGINT with 130 and one line."""
    code = ("import sys; sys.argv[0] = 'cloche'; import cloche.cli, os, signal, time\n"
            "os.kill(os.getpid(), signal.SIGINT); time.sleep(10); print('survived')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 130, result
    assert result.stderr == "interrupted\n" and "survived" not in result.stdout, result


class _LyingRegistry(http.server.BaseHTTPRequestHandler):
    """Answers /v2/ like a registry, then serves a "manifest" that is not JSON."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b"" if self.path == "/v2/" else b"<html>not a manifest</html>"
        self.send_response(200 if self.path == "/v2/" or "/manifests/" in self.path else 404)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET


def test_a_lying_registry_is_named_and_nothing_is_stored(cli_template_store: Path,
                                                         tmp_path: Path) -> None:
    root = tmp_path / "store"
    shutil.copytree(cli_template_store, root, symlinks=True)
    index_before = (root / "index.json").read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LyingRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ref = f"127.0.0.1:{server.server_address[1]}/app:1"
        result = subprocess.run(CLOCHE + ["pull", "--root", str(root), ref], capture_output=True,
                                text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and ref in last and "not valid JSON" in last, result.stderr
    assert (root / "index.json").read_bytes() == index_before  # no name for a bad pull


_CONFIG = (b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:'
           + b"1" * 64 + b'"]}}')
_LAYER = b"layer bytes that never all arrive" * 40
_RELEASE = threading.Event()


class _StallingRegistry(http.server.BaseHTTPRequestHandler):
    """Serves a manifest and its config, then stalls in the middle of the layer."""

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, body: bytes, media_type: str = "application/octet-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        import hashlib
        import json

        if self.path == "/v2/":
            self._send(b"")
        elif "/manifests/" in self.path:
            manifest = {"schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": "sha256:" + hashlib.sha256(_CONFIG).hexdigest(),
                                   "size": len(_CONFIG)},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                    "digest": "sha256:" + hashlib.sha256(_LAYER).hexdigest(),
                                    "size": len(_LAYER)}]}
            self._send(json.dumps(manifest).encode(), manifest["mediaType"])
        elif hashlib.sha256(_CONFIG).hexdigest() in self.path:
            self._send(_CONFIG)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(_LAYER)))
            self.end_headers()
            self.wfile.write(_LAYER[:100])
            self.wfile.flush()
            _RELEASE.wait(90)


def test_ctrl_c_during_a_stalled_pull_ends_it_promptly(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StallingRegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _RELEASE.clear()
    ref = f"127.0.0.1:{server.server_address[1]}/stall:1"
    proc = subprocess.Popen(CLOCHE + ["pull", "--root", str(tmp_path / "store"), ref],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    partial = tmp_path / "store" / "tmp"
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline and not (
                partial.is_dir() and any(partial.iterdir())):
            time.sleep(0.2)  # until the layer's download is under way
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)  # a timeout only, not a speed claim
        except subprocess.TimeoutExpired:
            pytest.fail("cloche pull still runs 10 s after SIGINT")
    finally:
        _RELEASE.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.shutdown()
        server.server_close()
    assert proc.returncode == 130 and "Traceback" not in err, err
