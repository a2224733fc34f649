"""The leak audit of a final image: credentials in its config and history, files that hold
secrets, VCS folders and source trees, deleted files whose bytes still ship, toolchains and
caches (with their size).

Names are judged by BuildKit's SecretsUsedInArgOrEnv rule (``cloche.plan.checks``, the same
function the build check uses); values by their Shannon entropy (random-looking strings of 20
characters or more). What a ``RUN --mount=type=secret`` read never reaches the image, so it is
never seen here; an ARG a RUN used is in that RUN's history line (``RUN |1 TOKEN=... cmd``).
Values are never printed whole.
"""

from __future__ import annotations

import fnmatch
import math
import posixpath
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from cloche.explainer.model import Finding, is_test_data
from cloche.explainer.weight import Attribution, clean_created_by
from cloche.plan.checks import is_secret_name

if TYPE_CHECKING:
    from cloche.explainer.imagefs import ImageFS
    from cloche.oci.image import Image

__all__ = ["audit", "entropy", "is_secret_path", "looks_random"]

MIN_SECRET_LENGTH = 20
_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-.~]{20,}")
_RUN_ARGS = re.compile(r"^RUN \|(\d+) ")

# files that commonly hold credentials: (pattern on the path, or on the name when no '/')
SECRET_FILES = (
    ".npmrc", ".pypirc", ".git-credentials", ".netrc", "_netrc", ".pgpass", ".vault-token",
    ".s3cfg", ".boto", ".env", ".env.local", ".env.production", ".env.development",
    "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".htpasswd",
    "*/.docker/config.json", "*/.aws/credentials", "*/.aws/config", "*/.kube/config",
    "*/.config/gcloud/application_default_credentials.json",
    "*/.config/gcloud/credentials.db", "*/.config/gcloud/access_tokens.db",
    "*/.azure/accessTokens.json", "*/.azure/msal_token_cache.json",
    "*/.config/gh/hosts.yml", "*/.terraform.d/credentials.tfrc.json",
    "*/.gem/credentials", "*/.cargo/credentials", "*/.cargo/credentials.toml",
    "*/.m2/settings-security.xml", "*/.composer/auth.json",
)
VCS_DIRS = (".git", ".svn", ".hg", ".bzr")
# (rule, pattern of a directory or file, what it is, how to avoid it)
WASTE = (
    ("apt-lists", "var/lib/apt/lists", "apt package lists",
     "end the RUN that calls apt-get with `rm -rf /var/lib/apt/lists/*`, or use a cache mount"),
    ("apt-archives", "var/cache/apt/archives", "downloaded .deb packages",
     "apt-get clean in the same RUN, or RUN --mount=type=cache,target=/var/cache/apt"),
    ("apk-cache", "var/cache/apk", "apk's package cache", "apk add --no-cache"),
    ("pip-cache", "root/.cache/pip", "pip's download cache",
     "pip install --no-cache-dir, or RUN --mount=type=cache,target=/root/.cache/pip"),
    ("pip-cache", "home/*/.cache/pip", "pip's download cache", "pip install --no-cache-dir"),
    ("go-build-cache", "root/.cache/go-build", "the Go build cache",
     "RUN --mount=type=cache,target=/root/.cache/go-build, in a build stage"),
    ("go-build-cache", "home/*/.cache/go-build", "the Go build cache",
     "a cache mount for the Go build cache, in a build stage"),
    ("go-module-cache", "go/pkg/mod", "the Go module cache",
     "RUN --mount=type=cache,target=/go/pkg/mod, in a build stage"),
    ("go-module-cache", "root/go/pkg/mod", "the Go module cache",
     "a cache mount for the Go module cache, in a build stage"),
    ("npm-cache", "root/.npm", "npm's cache", "npm ci --omit=dev && npm cache clean --force"),
    ("yarn-cache", "usr/local/share/.cache/yarn", "yarn's cache", "yarn cache clean"),
    ("cargo-registry", "root/.cargo/registry", "Cargo's registry cache",
     "build in a separate stage and COPY --from only the binary"),
    ("maven-repository", "root/.m2/repository", "the Maven repository",
     "build in a separate stage and COPY --from only the artifact"),
    ("toolchain", "usr/local/go", "the Go toolchain",
     "build in a separate stage and COPY --from only the binary"),
    ("toolchain", "usr/lib/go-*", "the Go toolchain",
     "build in a separate stage and COPY --from only the binary"),
    ("toolchain", "usr/lib/gcc", "the GCC toolchain",
     "build in a separate stage and COPY --from only what runs"),
    ("toolchain", "root/.rustup", "the Rust toolchain",
     "build in a separate stage and COPY --from only the binary"),
)
NODE_DEV_PACKAGES = ("typescript", "eslint", "jest", "webpack", "mocha", "prettier", "ts-node",
                     "nodemon", "@types", "@babel", "vite", "rollup", "esbuild")


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    if not text:
        return 0.0
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def looks_random(token: str) -> bool:
    """A random-looking credential: 20+ characters of a token alphabet, letters and digits
    mixed, and an entropy near the most its length allows (a hex digest, a path or a word
    list stays below)."""
    if len(token) < MIN_SECRET_LENGTH or not _TOKEN.fullmatch(token):
        return False
    if not (re.search(r"[A-Za-z]", token) and re.search(r"[0-9]", token)):
        return False
    if token.count("/") > 2 or token.count(".") > 2:  # a path, a version, a host name
        return False
    return entropy(token) >= 0.85 * math.log2(min(len(token), 64))


def _random_tokens(text: str) -> Iterator[str]:
    for match in _TOKEN.finditer(text):
        token = match.group(0).strip("=")
        if looks_random(token):
            yield token


def redact(value: str) -> str:
    return f"{value[:4]}… ({len(value)} characters)" if len(value) > 8 else "…"


def is_secret_path(path: str) -> bool:
    """Whether a file's path (relative, no leading '/') names a file that commonly holds
    credentials."""
    name = posixpath.basename(path)
    for pattern in SECRET_FILES:
        if "/" in pattern:
            if fnmatch.fnmatchcase("/" + path, pattern) or fnmatch.fnmatchcase(path, pattern[2:]):
                return True
        elif name == pattern:
            return True
    return False


def audit(image: Image, fs: ImageFS, who: Attribution) -> list[Finding]:
    findings: list[Finding] = []
    findings += _config(image, who)
    findings += _files(fs, who)
    findings += _deleted(fs, who)
    findings += _waste(fs, who)
    return findings


def _owner(who: Attribution, index: int) -> str | None:
    return who.history_owner[index] if 0 <= index < len(who.history_owner) else None


def _config(image: Image, who: Attribution) -> list[Finding]:
    config = image.config
    out: list[Finding] = []
    history = config.history

    def env_origin(key: str) -> tuple[str | None, str | None]:
        for j in range(len(history) - 1, -1, -1):
            text = clean_created_by(history[j].created_by)
            if text.startswith("ENV ") and re.search(rf"(^|\s){re.escape(key)}[=\s]", text[4:]):
                return _owner(who, j), text
        return None, None

    for pair in config.env or ():
        key, _, value = pair.partition("=")
        if not value:
            continue
        stage, instruction = env_origin(key)
        if is_secret_name(key):
            out.append(Finding(
                "leak", "secret-env", f"ENV {key} looks like a credential "
                f"(SecretsUsedInArgOrEnv) and ships in the image's config: {redact(value)}",
                stage=stage, instruction=instruction, where="config Env",
                fix="pass it as a secret (RUN --mount=type=secret,id=...) instead of ENV"))
        elif any(True for _ in _random_tokens(value)):
            out.append(Finding(
                "leak", "high-entropy-value", f"ENV {key} holds a random-looking value "
                f"(a token?): {redact(value)}", stage=stage, instruction=instruction,
                where="config Env",
                fix="pass secrets with RUN --mount=type=secret, never through ENV"))
    for key, value in sorted((config.labels or {}).items()):
        if value and is_secret_name(key.replace(".", "_").replace("-", "_")):
            out.append(Finding("leak", "secret-label", f"LABEL {key} looks like a credential: "
                               f"{redact(value)}", where="labels",
                               fix="do not put credentials in labels"))
        elif any(True for _ in _random_tokens(value)):
            out.append(Finding("leak", "high-entropy-value", f"LABEL {key} holds a "
                               f"random-looking value (a token?): {redact(value)}",
                               where="labels", fix="do not put credentials in labels"))
    reported: set[tuple[str, str]] = set()  # a build arg is reported at its first RUN
    for j, entry in enumerate(history):
        text = clean_created_by(entry.created_by)
        if text.startswith(("ENV ", "LABEL ")):
            continue  # their values are judged in the config above
        rest = text
        match = _RUN_ARGS.match(text)
        flagged: set[str] = set()
        pairs: list[str] = []
        if match:  # the build args a RUN saw: `RUN |2 A=1 B=2 cmd`
            count = int(match.group(1))
            words = text[match.end():].split(" ")
            pairs = words[:count]
            rest = " ".join(words[count:])
        elif text.startswith("ARG "):  # BuildKit records an ARG with its value
            pairs = text[4:].split(" ")
            rest = ""
        stage, instruction, line = _owner(who, j), _short(text), None
        if j in who.history_layer:  # a RUN: its instruction as written, and its line
            origin = who.origin(who.history_layer[j])
            if origin.line is not None:
                stage, instruction, line = origin.stage, origin.instruction, origin.line
        if pairs:
            used = "a RUN used it" if match else "the ARG instruction recorded it"
            for item in pairs:
                key, _, value = item.partition("=")
                if not value:
                    continue
                if value in flagged or (key, value) in reported:
                    flagged.add(value)
                    continue
                if is_secret_name(key) or looks_random(value):
                    flagged.add(value)
                    reported.add((key, value))
                    reason = "looks like a credential (SecretsUsedInArgOrEnv)" \
                        if is_secret_name(key) else "holds a random-looking value"
                    out.append(Finding(
                        "leak", "secret-build-arg", f"build arg {key} {reason}; {used}, so "
                        f"its value is in the image's history: {redact(value)}",
                        stage=stage, instruction=instruction, line=line, where="history",
                        fix=f"use a secret mount: RUN --mount=type=secret,id={key.lower()} "
                            f"... and build with --secret id={key.lower()},env={key}"))
        for token in _random_tokens(rest):
            if token in flagged:
                continue
            out.append(Finding("leak", "high-entropy-value", f"a random-looking value (a "
                               f"token?) is in the image's history: {redact(token)}",
                               stage=stage, instruction=instruction, line=line,
                               where="history",
                               fix="pass secrets with RUN --mount=type=secret"))
            break
    return out


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _files(fs: ImageFS, who: Attribution) -> list[Finding]:
    out: list[Finding] = []
    for path, node in fs.files():
        origin = who.origin(node.layer)
        if is_secret_path(path):
            out.append(Finding("leak", "secret-file", f"/{path} commonly holds credentials "
                               f"({node.size} bytes)", path="/" + path, stage=origin.stage,
                               instruction=origin.instruction, line=origin.line,
                               size=node.size, where="file",
                               fix="use RUN --mount=type=secret for it, or keep it out of the "
                                   "context (.dockerignore)"))
        elif node.private_key and not is_test_data(path):
            out.append(Finding("leak", "private-key", f"/{path} holds a private key",
                               path="/" + path, stage=origin.stage,
                               instruction=origin.instruction, line=origin.line,
                               size=node.size, where="file",
                               fix="mount keys as secrets at build time; ship none"))
    for path in fs.dirs():
        name = posixpath.basename(path)
        if name in VCS_DIRS:
            size, files = fs.tree_size(path)
            origin = who.origin(fs.nodes[path].layer)
            out.append(Finding("leak", "vcs-folder", f"/{path}: a {name} folder ships "
                               f"({files} files, {size} bytes): the repository's history, "
                               "maybe its credentials", path="/" + path, stage=origin.stage,
                               instruction=origin.instruction, line=origin.line, size=size,
                               where="file", fix=f"add {name} to .dockerignore"))
    for path, node in fs.files():
        if posixpath.basename(path) in ("Dockerfile", ".dockerignore") and \
                not path.startswith(("usr/share/", "usr/lib/", "usr/local/lib/")) and \
                "/node_modules/" not in path and "/pkg/mod/" not in path:
            folder = posixpath.dirname(path)
            size, files = fs.tree_size(folder) if folder else (0, 0)
            origin = who.origin(node.layer)
            out.append(Finding("leak", "source-tree", f"/{path}: the build context seems to "
                               f"be copied into the image (/{folder or ''}: {files} files, "
                               f"{size} bytes)", path="/" + path, stage=origin.stage,
                               instruction=origin.instruction, line=origin.line, size=size,
                               where="file",
                               fix="COPY only what runs (or build in a stage and COPY "
                                   "--from the artifact); list the rest in .dockerignore"))
    return out


def _deleted(fs: ImageFS, who: Attribution) -> list[Finding]:
    out: list[Finding] = []
    for deletion in fs.deletions:
        if not deletion.size and not deletion.secret:
            continue
        gone = who.origin(deletion.layer)
        wrote = who.origin(deletion.from_layers[0]) if deletion.from_layers else gone
        what = f"{deletion.files} files, {deletion.size} bytes" if deletion.files != 1 \
            else f"{deletion.size} bytes"
        largest = ", ".join("/" + p for p in deletion.largest[:3])
        kind, rule = ("leak", "deleted-secret") if deletion.secret else \
            ("waste", "deleted-file")
        out.append(Finding(
            kind, rule, f"/{deletion.path} is deleted by a later layer ({gone.instruction or '?'}"
            f") but its bytes still ship in the layer that wrote it ({what}"
            + (f": {largest}" if largest and deletion.files > 1 else "") + ")",
            path="/" + deletion.path, stage=wrote.stage, instruction=wrote.instruction,
            line=wrote.line, size=deletion.size, where="layers",
            fix="create and delete it in the same RUN, use a cache or secret mount, or build "
                "it in another stage and COPY --from only the result"))
    return out


def _waste(fs: ImageFS, who: Attribution) -> list[Finding]:
    out: list[Finding] = []
    seen: set[str] = set()
    for rule, pattern, what, fix in WASTE:
        for path in fs.glob(pattern):
            if path in seen:
                continue
            seen.add(path)
            size, files = fs.tree_size(path)
            if not size:
                continue
            origin = who.origin(fs.nodes[path].layer) if path in fs.nodes else who.origin(-1)
            out.append(Finding("waste", rule, f"/{path}: {what} ships ({files} files, "
                               f"{size} bytes)", path="/" + path, stage=origin.stage,
                               instruction=origin.instruction, line=origin.line, size=size,
                               where="file", fix=fix))
    for path in fs.dirs():
        if posixpath.basename(path) != "node_modules" or "/node_modules/" in path + "/" and \
                path.count("node_modules") > 1:
            continue
        for dev in NODE_DEV_PACKAGES:
            sub = f"{path}/{dev}"
            if sub in fs.nodes:
                size, files = fs.tree_size(sub)
                origin = who.origin(fs.nodes[sub].layer)
                out.append(Finding("waste", "node-dev-dependencies", f"/{sub}: a development "
                                   f"dependency ships ({files} files, {size} bytes)",
                                   path="/" + sub, stage=origin.stage,
                                   instruction=origin.instruction, line=origin.line,
                                   size=size, where="file",
                                   fix="npm ci --omit=dev in the stage that ships, or prune "
                                       "dev dependencies before copying node_modules"))
    return out
