"""Fetching a Git repository with the system ``git``: build contexts and ``ADD <git url>``.

As BuildKit's git source (moby/buildkit source/git): the ref is resolved with ``git
ls-remote`` (a branch wins over a tag of the same name; an annotated tag is taken as its
commit; a full commit hash needs no lookup), the commit is fetched shallow (``--depth=1``;
a dumb-HTTP server cannot, and gets a full fetch), checked out, submodules are updated
(``--recursive --depth=1``) unless ``?submodules=false``, and ``.git`` is removed unless it
is kept. Files keep their checkout time (``?mtime=commit``: the commit's time). A checksum
is the commit's hash or a prefix of it, checked against the resolved commit before anything
is fetched, and again against what was checked out.

The repository is hostile input. git runs with no system or user configuration
(``GIT_CONFIG_NOSYSTEM``, ``GIT_CONFIG_GLOBAL=/dev/null``, ``HOME`` an empty directory: no
credential helpers, ``insteadOf`` rewrites nor filters of the host), no prompts
(``GIT_TERMINAL_PROMPT=0``, ssh in batch mode), no hooks (``core.hooksPath=/dev/null``, an
empty template), no ``file://`` nor ``ext::`` submodules (``protocol.file.allow=user``, as
BuildKit; ``protocol.ext.allow=never``), a umask of 022 (modes as BuildKit's daemon makes
them). The proxy variables and ``SSH_AUTH_SOCK`` are passed on: ssh URLs use the caller's
agent, keys and known hosts; https credentials only from the URL itself (shown as
``xxxxx``, and removed from a kept ``.git``'s ``origin``) or from the build secrets
BuildKit reads for Git (``GIT_AUTH_TOKEN``, ``GIT_AUTH_HEADER``, each also ``.<host>``:
``auth_header``), handed to git in its environment only, never in a file, ``.git``, an
argument, a cache key or a message. A subdir must be a chain of real
directories (no symlink). Every git command of one fetch runs under one deadline
(``CLOCHE_GIT_TIMEOUT`` seconds, default 600) and the fetched files under the layer size
bound (``CLOCHE_MAX_LAYER_SIZE``): past either, git's whole process group is killed.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cloche.engine.giturl import GitRef, check_checksum_syntax, checksum_matches
from cloche.errors import ClocheError
from cloche.fs.limits import LayerTooLargeError, human_size, max_layer_size, seconds_from_env
from cloche.fs.rmtree import rmtree
from cloche.fs.usage import tree_blocks

if TYPE_CHECKING:
    from cloche.engine.options import SecretSpec

__all__ = ["DEFAULT_TIMEOUT", "ENV_TIMEOUT", "Checkout", "GitError", "GitTimeoutError",
           "fetch", "git_timeout", "resolve"]

ENV_TIMEOUT = "CLOCHE_GIT_TIMEOUT"
DEFAULT_TIMEOUT = 600.0
_FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_POLL = 0.5  # seconds between checks of the deadline and of the bytes fetched
_PASSED_ON = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
              "no_proxy", "all_proxy", "SSH_AUTH_SOCK")
_CONFIG = ("-c", "protocol.file.allow=user", "-c", "protocol.ext.allow=never",
           "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
           "-c", "init.defaultBranch=main", "-c", "advice.detachedHead=false")


class GitError(ClocheError):
    """A repository that could not be resolved, fetched or checked out."""


class GitTimeoutError(GitError):
    """git did not finish within ``CLOCHE_GIT_TIMEOUT``."""


def git_timeout() -> float:
    """``CLOCHE_GIT_TIMEOUT`` (seconds, > 0), else the default."""
    return seconds_from_env(ENV_TIMEOUT, DEFAULT_TIMEOUT, "1200")


@dataclass(frozen=True)
class Checkout:
    """A checked-out tree: ``root`` (the subdir when one was asked for) and its commit."""

    root: Path
    commit: str


class _Git:
    """git commands for one source: a private HOME, one deadline, one size bound."""

    def __init__(self, ref: GitRef, scratch: Path, secrets: Sequence[SecretSpec] = ()) -> None:
        self.ref = ref
        self.shown = ref.shown
        self.deadline = time.monotonic() + git_timeout()
        self.limit = max_layer_size()
        self.scratch = scratch
        home = scratch / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        env = {k: os.environ[k] for k in _PASSED_ON if k in os.environ}
        env.update(PATH=os.environ.get("PATH", "/usr/bin:/bin"), HOME=str(home), LC_ALL="C",
                   GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1",
                   GIT_CONFIG_GLOBAL=os.devnull, GIT_ASKPASS="/bin/false",
                   GIT_SSH_COMMAND="ssh -o BatchMode=yes", GIT_PROTOCOL_FROM_USER="0")
        self.hidden: str | None = None
        auth = auth_header(ref, secrets)
        if auth is not None:  # in git's environment only: never an argument, a file or .git
            scope, self.hidden = auth
            env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0=f"http.{scope}.extraheader",
                       GIT_CONFIG_VALUE_0=f"Authorization: {self.hidden}")
        self.env = env

    def run(self, *args: str, cwd: Path | None = None, what: str = "") -> str:
        """git ``args``; its output, or a GitError with the end of its error output."""
        timeout_left = self.deadline - time.monotonic()
        if timeout_left <= 0:
            raise self._timeout(what or args[0])
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(["git", *_CONFIG, *args], cwd=cwd, env=self.env,
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        start_new_session=True, umask=0o022)
            except FileNotFoundError:
                raise GitError("git is not installed: cloche needs the git command to fetch "
                               f"{self.shown}", hint="install git (apt-get install git)") \
                    from None
            self._watch(proc, what or args[0])
            self._check_size(what or args[0])
            out.seek(0)
            err.seek(0)
            output = out.read().decode("utf-8", "replace")
            errors = err.read().decode("utf-8", "replace")
        if proc.returncode != 0:
            errors = errors.replace(self.ref.remote, self.shown)
            if self.hidden:
                errors = errors.replace(self.hidden, "xxxxx")
            tail = " ".join(errors.strip().splitlines()[-4:])
            raise GitError(f"{what or 'git ' + args[0]} {self.shown} failed: "
                           f"{tail or f'exit status {proc.returncode}'}")
        return output

    def _watch(self, proc: subprocess.Popen[bytes], what: str) -> None:
        """Wait for ``proc``; kill its process group past the deadline or the size bound."""
        try:
            while True:
                left = self.deadline - time.monotonic()
                try:
                    proc.wait(timeout=max(0.0, min(_POLL, left)))
                    return
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() >= self.deadline:
                    self._kill(proc)
                    raise self._timeout(what)
                self._check_size(what)
        except BaseException:
            self._kill(proc)
            raise

    def _check_size(self, what: str) -> None:
        if tree_blocks(self.scratch) > self.limit:
            raise LayerTooLargeError(f"{what} {self.shown}: the repository takes more than "
                                     f"{human_size(self.limit)} (CLOCHE_MAX_LAYER_SIZE)")

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def _timeout(self, what: str) -> GitTimeoutError:
        return GitTimeoutError(f"{what} {self.shown}: git did not finish within "
                               f"{git_timeout():g} seconds ({ENV_TIMEOUT})",
                               hint=f"a slow server or a big repository: raise {ENV_TIMEOUT}")


@dataclass(frozen=True)
class _Resolved:
    commit: str
    fetch_ref: str  # what to fetch: a full ref name, HEAD, or the commit itself


def _resolve(git: _Git, ref: GitRef) -> _Resolved:
    """The commit ``ref`` names on the remote, as BuildKit's resolveMetadata finds it."""
    if ref.checksum:
        check_checksum_syntax(ref.checksum)
    wanted = ref.ref
    if _FULL_SHA.match(wanted.lower()):
        if ref.checksum and not checksum_matches(wanted, ref.checksum):
            raise GitError(f"{ref.shown}: expected checksum to match {ref.checksum}, "
                           f"got {wanted}")
        return _Resolved(wanted.lower(), wanted.lower())
    if not wanted or wanted == "HEAD":
        listing = git.run("ls-remote", "--", ref.remote, "HEAD", what="git ls-remote")
        sha = next((line.split("\t")[0] for line in listing.splitlines()
                    if line.endswith("\tHEAD")), "")
        if not sha:
            raise GitError(f"{ref.shown} has no default branch (HEAD)")
        used = "HEAD"
        peeled = ""
    else:
        listing = git.run("ls-remote", "--", ref.remote, wanted, wanted + "^{}",
                          what="git ls-remote")
        bare = wanted.removeprefix("refs/")
        partial = "refs/" + bare
        head = "refs/heads/" + wanted.removeprefix("refs/heads/")
        tag = "refs/tags/" + wanted.removeprefix("refs/tags/")
        found: dict[str, str] = {}
        for line in listing.splitlines():
            sha_text, _, name = line.partition("\t")
            found[name] = sha_text
        sha, used, peeled = found.get(partial, ""), partial, ""
        if not sha:
            sha, used = found.get(head, ""), head
        if not sha:
            sha, used = found.get(tag, ""), tag
            peeled = found.get(tag + "^{}", "")
        if not sha:
            if re.match(r"^[0-9a-fA-F]{7,}$", wanted):  # a short hash: fetched as it is
                raise GitError(f"{ref.shown}: {wanted!r} is neither a ref nor a full commit hash",
                               hint="give the commit's full hash")
            raise GitError(f"repository {ref.shown} does not contain ref {wanted}")
    commit = peeled or sha
    if not _FULL_SHA.match(commit):
        raise GitError(f"{ref.shown}: invalid commit sha {commit!r}")
    if ref.checksum and not (checksum_matches(commit, ref.checksum)
                             or checksum_matches(sha, ref.checksum)):
        raise GitError(f"{ref.shown}#{wanted or 'HEAD'}: expected checksum to match "
                       f"{ref.checksum}, got {commit}")
    return _Resolved(commit, used)


def auth_header(ref: GitRef, secrets: Sequence[SecretSpec]) -> tuple[str, str] | None:
    """BuildKit's Git HTTP authentication from build secrets: the first of
    ``GIT_AUTH_HEADER.<host>``, ``GIT_AUTH_TOKEN.<host>``, ``GIT_AUTH_HEADER`` and
    ``GIT_AUTH_TOKEN`` given (a token becomes ``basic base64(x-access-token:TOKEN)``), as
    (the URL prefix git sends it to, the Authorization value). The prefix is the remote itself,
    or ``https://github.com/`` for any repository there (as BuildKit and actions/checkout)."""
    import base64
    from urllib.parse import urlsplit

    from cloche.engine.options import secret_value

    if not secrets:
        return None
    parts = urlsplit(ref.remote)
    if parts.scheme not in ("http", "https"):
        return None
    host = parts.netloc.rpartition("@")[2]
    for name, token in ((f"GIT_AUTH_HEADER.{host}", False), (f"GIT_AUTH_TOKEN.{host}", True),
                        ("GIT_AUTH_HEADER", False), ("GIT_AUTH_TOKEN", True)):
        try:
            value = secret_value(secrets, name)
        except OSError as err:
            raise GitError(f"{ref.shown}: secret {name}: cannot read its file: "
                           f"{err.strerror}") from None
        if value is None:
            continue
        text = value.decode("utf-8", "replace")
        if token:
            text = "basic " + base64.b64encode(b"x-access-token:" + value).decode()
        scope = ref.remote
        for prefix in ("https://github.com/", "https://www.github.com/"):
            if ref.remote.startswith(prefix):
                scope = prefix
        return scope, text
    return None


def resolve(ref: GitRef, secrets: Sequence[SecretSpec] = ()) -> str:
    """The commit ``ref`` names now (``git ls-remote``; no lookup for a full hash)."""
    if _FULL_SHA.match(ref.ref.lower()) and not ref.checksum:
        return ref.ref.lower()
    scratch = Path(tempfile.mkdtemp(prefix="cloche-git-"))
    try:
        return _resolve(_Git(ref, scratch, secrets), ref).commit
    finally:
        rmtree(scratch, ignore_errors=True)


def fetch(ref: GitRef, scratch: Path, *, keep_git_dir: bool = False,
          commit: str | None = None, secrets: Sequence[SecretSpec] = ()) -> Checkout:
    """Check ``ref`` out into ``scratch/checkout`` (``scratch`` exists and is private).

    ``commit``: the commit a cache key was made from (``resolve``); what is checked out must
    be that commit. ``secrets``: the build's, for ``auth_header``."""
    git = _Git(ref, scratch, secrets)
    work = scratch / "checkout"
    work.mkdir(mode=0o755)
    git.run("init", "-q", "--template=", str(work), what="git init")
    git.run("remote", "add", "origin", ref.remote, cwd=work, what="git remote add")
    resolved = _resolve(git, ref)
    if commit is not None and resolved.commit != commit:
        raise GitError(f"{ref.shown}: {ref.ref or 'HEAD'} moved to {resolved.commit} while "
                       f"the build ran (the step's cache key was made for {commit})")
    target = resolved.fetch_ref
    local = target if target.startswith("refs/") else "refs/cloche/fetched"
    spec = target if target == resolved.commit else f"+{target}:{local}"
    try:
        git.run("fetch", "-q", "--update-head-ok", "--depth=1", "--no-tags", "origin", spec,
                cwd=work, what="git fetch")
    except GitTimeoutError:
        raise
    except GitError:  # a dumb-HTTP server (no shallow fetch), or a commit no ref advertises
        if target == resolved.commit:
            git.run("fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*",
                    cwd=work, what="git fetch")
        else:
            git.run("fetch", "-q", "--update-head-ok", "--no-tags", "origin", spec, cwd=work,
                    what="git fetch")
    try:
        git.run("rev-parse", "--verify", "--quiet", resolved.commit + "^{commit}", cwd=work,
                what="git rev-parse")
    except GitError:
        raise GitError(f"{ref.shown}: commit {resolved.commit} was not fetched (did "
                       f"{ref.ref or 'HEAD'} move while it was fetched?)") from None
    git.run("checkout", "-q", "--detach", resolved.commit, cwd=work, what="git checkout")
    if ref.submodules is not False and os.path.lexists(work / ".gitmodules"):
        git.run("submodule", "update", "--init", "--recursive", "--depth=1", cwd=work,
                what="git submodule update")
    when = int(git.run("log", "-1", "--format=%ct", resolved.commit, cwd=work,
                       what="git log").strip()) if ref.mtime == "commit" else None
    if keep_git_dir:
        git.run("remote", "set-url", "origin", ref.shown, cwd=work, what="git remote set-url")
        git.run("reflog", "expire", "--all", "--expire=now", cwd=work, what="git reflog")
        (work / ".git" / "FETCH_HEAD").unlink(missing_ok=True)
    else:
        rmtree(work / ".git")
    if when is not None:  # last: removing .git would change the top folder's mtime
        _set_mtimes(work, when)
    return Checkout(_subdir(work, ref), resolved.commit)


def _subdir(work: Path, ref: GitRef) -> Path:
    """``work/subdir``, every component a real directory (BuildKit: validateDirsOnly)."""
    here = work
    for part in ref.subdir.split("/") if ref.subdir else ():
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            raise GitError(f"{ref.shown}: subdir {ref.subdir!r} does not exist") from None
        if not stat.S_ISDIR(mode):
            raise GitError(f"{ref.shown}: invalid subdir {ref.subdir!r}: {part!r} is not a "
                           "directory")
    return here


def _set_mtimes(top: Path, when: int) -> None:
    """Every entry's mtime (links included, not followed) set to ``when``, as ``mtime=commit``."""
    stack = [top]
    while stack:
        here = stack.pop()
        with os.scandir(here) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                os.utime(entry.path, (when, when), follow_symlinks=False)
    os.utime(top, (when, when), follow_symlinks=False)
