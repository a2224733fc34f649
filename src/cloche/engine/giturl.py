"""Git references as BuildKit reads them: build contexts and ``ADD`` sources.

A string names a Git repository (moby/buildkit ``dfgitutil.ParseGitRef``) when it is

- a URL with the scheme ``git://`` or ``ssh://``, or ``http(s)://`` whose path ends in ``.git``;
- an scp-like address ``user@host:path`` (``git@github.com:moby/buildkit.git``);
- ``github.com/owner/repo`` (build contexts only; deprecated by BuildKit, kept for contexts).

The fragment is ``#ref:subdir`` (``ref`` a branch, a tag, a full ref name or a commit), and
the query form of current BuildKit gives the same and more: ``?ref=``, ``?branch=``,
``?tag=``, ``?subdir=``, ``?checksum=`` (or ``?commit=``), ``?keep-git-dir=``,
``?submodules=``, ``?mtime=checkout|commit``. What git fetches is the URL without fragment
and query. This module only reads strings; ``gitsource.py`` fetches.
"""

from __future__ import annotations

import os
import posixpath
import re
import urllib.parse
from dataclasses import dataclass

from cloche.errors import ConfigError

__all__ = ["GitRef", "GitRefError", "check_checksum_syntax", "checksum_matches", "is_git_source",
           "is_remote_context", "parse_git_ref", "redact"]

_SCHEME = re.compile(r"^[a-zA-Z0-9]+://")
_GIT_SCHEMES = ("http", "https", "ssh", "git")
_SCP = re.compile(r"^([A-Za-z0-9_-]+)@([A-Za-z0-9.-]+):(.*?)(?:\?(.*?))?(?:#(.*))?$", re.DOTALL)
_HEX = re.compile(r"^[a-fA-F0-9]+$")
_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class GitRefError(ConfigError):
    """A Git URL whose options cannot be used (unknown query key, conflicting refs...)."""


@dataclass(frozen=True)
class GitRef:
    """A parsed Git reference. ``remote`` is what git fetches; ``ref`` is empty for the
    remote's default branch; ``subdir`` is clean and relative ("" for the root)."""

    remote: str
    ref: str = ""
    subdir: str = ""
    checksum: str = ""
    keep_git_dir: bool | None = None
    submodules: bool | None = None
    mtime: str = "checkout"
    shorthand: bool = False  # github.com/owner/repo: a context only, never an ADD source
    unencrypted: bool = False  # git:// and http://

    @property
    def shown(self) -> str:
        """The remote with any password replaced, for messages."""
        return redact(self.remote)


def redact(url: str) -> str:
    """``url`` with the password of its user info (or a token alone) replaced by ``xxxxx``."""
    parts = urllib.parse.urlsplit(url) if _SCHEME.match(url) else None
    if parts is None or "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    hidden = f"{user}:xxxxx" if colon else "xxxxx"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{hidden}@{host}"))


def _clean_subdir(subdir: str) -> str:
    """BuildKit's path.Join("/", subdir) without its leading slash."""
    return posixpath.normpath("/" + subdir).lstrip("/") if subdir else ""


def _bool(key: str, values: list[str]) -> bool:
    if not values or values[0] == "":
        return True
    if values[0] in _TRUE:
        return True
    if values[0] in _FALSE:
        return False
    raise GitRefError(f"invalid {key} value: {values[0]!r}")


def _apply_query(query: str, ref: str, subdir: str) -> dict[str, object]:
    """The options of BuildKit's query form (``loadQuery``), checked as it checks them."""
    found: dict[str, object] = {"ref": ref, "subdir": subdir}
    tag = branch = ""
    pairs = urllib.parse.parse_qs(query, keep_blank_values=True)
    for key, values in pairs.items():
        if len(values) > 1:
            raise GitRefError(f"query {key!r} has multiple values")
        if values[0] == "" and key not in ("submodules", "keep-git-dir", "fetch-by-commit"):
            raise GitRefError(f"query {key!r} has no value")
        value = values[0]
        if key == "ref":
            if found["ref"] and found["ref"] != value:
                raise GitRefError(f"ref conflicts: {found['ref']!r} vs {value!r}")
            found["ref"] = value
        elif key == "tag":
            tag = value
        elif key == "branch":
            branch = value
        elif key == "subdir":
            if found["subdir"] and found["subdir"] != value:
                raise GitRefError(f"subdir conflicts: {found['subdir']!r} vs {value!r}")
            found["subdir"] = value
        elif key in ("checksum", "commit"):
            found["checksum"] = value
        elif key in ("keep-git-dir", "submodules"):
            found[key] = _bool(key, values)
        elif key == "mtime":
            if value not in ("checkout", "commit"):
                raise GitRefError(f'invalid mtime value: {value!r} (must be "checkout" or '
                                  f'"commit")')
            found["mtime"] = value
        elif key == "fetch-by-commit":
            _bool(key, values)  # accepted; cloche checks the commit whichever way it fetches
        else:
            raise GitRefError(f"unexpected query {key!r}")
    if tag:
        full = tag if tag.startswith("refs/tags/") else "refs/tags/" + tag
        if found["ref"] and found["ref"] != full:
            raise GitRefError(f"ref conflicts: {found['ref']!r} vs {full!r}")
        found["ref"] = full
    if branch:
        if tag:
            raise GitRefError("branch conflicts with tag")
        full = branch if branch.startswith("refs/heads/") else "refs/heads/" + branch
        if found["ref"] and found["ref"] != full:
            raise GitRefError(f"ref conflicts: {found['ref']!r} vs {full!r}")
        found["ref"] = full
    if found.get("checksum") and not found["ref"]:
        found["ref"] = found["checksum"]
    return found


def parse_git_ref(text: str, *, context: bool = False) -> GitRef | None:
    """``text`` as a Git reference, or None when it names no repository.

    ``context``: a build context, where ``github.com/owner/repo`` is accepted too. Raises
    ``GitRefError`` for a Git URL whose options are wrong (BuildKit fails those too)."""
    if text.startswith(("./", "../")):
        return None
    shorthand = False
    match = _SCHEME.match(text)
    if text.startswith("github.com/"):
        if not context:
            return None
        shorthand = True
        text = "https://" + text
        match = _SCHEME.match(text)
    if match:
        scheme = match.group(0)[:-3].lower()
        if scheme not in _GIT_SCHEMES:
            return None
        head, _, fragment = text.partition("#")
        remote, _, query = head.partition("?")
        path = urllib.parse.urlsplit(remote).path
        if scheme in ("http", "https") and not shorthand \
                and not urllib.parse.unquote(path).endswith(".git"):
            return None
        fragment = urllib.parse.unquote(fragment)
        unencrypted = scheme in ("http", "git")
    else:
        scp = _SCP.match(text)
        if scp is None:
            return None
        user, host, path, query, fragment = scp.groups()
        remote = f"{user}@{host}:{path}"
        query, fragment = query or "", fragment or ""
        unencrypted = False
    ref, _, subdir = fragment.partition(":")
    options = _apply_query(query, ref, subdir)
    checksum = str(options.get("checksum") or "")
    keep = options.get("keep-git-dir")
    submodules = options.get("submodules")
    return GitRef(remote, str(options["ref"]), _clean_subdir(str(options["subdir"])), checksum,
                  keep if isinstance(keep, bool) else None,
                  submodules if isinstance(submodules, bool) else None,
                  str(options.get("mtime") or "checkout"), shorthand, unencrypted)


def is_git_source(source: str) -> bool:
    """Whether an ADD source is a Git repository (a malformed Git URL counts: it fails later,
    at its line, with the reason)."""
    try:
        return parse_git_ref(source) is not None
    except GitRefError:
        return True


def is_remote_context(spec: str) -> bool:
    """Whether a build context argument is a URL (Git or HTTP) rather than a local path.

    A URL is taken as written, never as a path (``https://`` stays whole); ``user@host:path``
    and ``github.com/...`` are remote only when no such local path exists, as buildx checks
    the local directory first."""
    if spec.lower().startswith(("http://", "https://", "git://", "ssh://")):
        return True
    if _SCHEME.match(spec):
        return False
    try:
        if parse_git_ref(spec, context=True) is None:
            return False
    except GitRefError:
        pass
    return not os.path.exists(spec)


def checksum_matches(commit: str, checksum: str) -> bool:
    """BuildKit's rule: the checksum is the commit's hash or a prefix of it (hex only)."""
    return bool(_HEX.match(checksum)) and commit.lower().startswith(checksum.lower())


def check_checksum_syntax(checksum: str) -> None:
    if not _HEX.match(checksum):
        raise GitRefError(f"invalid checksum {checksum} for Git URL, expected hex commit hash")
