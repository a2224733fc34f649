"""Downloads for ``ADD <url>``: streamed to disk, verified, named and dated as BuildKit does.

BuildKit's http source writes the body to a file with mode 0600, takes its name from the
Dockerfile (the destination's base name when it does not end in ``/``), else from the
response's Content-Disposition filename, else from the last segment of the URL path (else
``download``), and dates it with the Last-Modified header. ``--checksum=sha256:...`` is
checked while the bytes flow, and a mismatch leaves no file behind.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import posixpath
import urllib.parse
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING

from cloche.errors import ClocheError, DigestError
from cloche.oci.digest import Digest, DigestMismatchError

if TYPE_CHECKING:
    import httpx

__all__ = ["Download", "DownloadError", "download", "filename_for", "is_url"]

_CHUNK = 1 << 20
DEFAULT_TIMEOUT = (30.0, 10.0)  # read, connect: httpx is imported only when a URL is added


class DownloadError(ClocheError):
    """An ADD URL that could not be fetched; carries the URL and the HTTP status if any."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass(frozen=True)
class Download:
    """A fetched file: where it is, its name, digest, size and Last-Modified time."""

    path: Path
    filename: str
    digest: Digest
    size: int
    mtime_ns: int | None


def is_url(source: str) -> bool:
    """Whether an ADD source is fetched over HTTP(S) (BuildKit: ``http://`` or ``https://``)."""
    lower = source.lower()
    return lower.startswith("http://") or lower.startswith("https://")


def filename_for(url: str, response_headers: httpx.Headers | None, manual: str | None) -> str:
    """The file name BuildKit gives a download (see the module docstring)."""
    if manual:
        return manual
    disposition = response_headers.get("content-disposition") if response_headers else None
    if disposition:
        msg = Message()
        msg["content-disposition"] = disposition
        name = msg.get_param("filename", header="content-disposition")
        if isinstance(name, str) and name and not name.endswith("/"):
            base = posixpath.basename(name)
            if base and base not in (".", ".."):
                return base
    base = posixpath.basename(urllib.parse.urlsplit(url).path)
    return base if base not in ("", ".", "/", "..") else "download"


def _mtime_ns(headers: httpx.Headers) -> int | None:
    value = headers.get("last-modified")
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return int(when.timestamp()) * 1_000_000_000


def _default_client(url: str) -> httpx.Client:
    """A client for one download; plain http still works when the CA bundle is missing.

    httpx loads CA certificates when a client is made, and fails when SSL_CERT_FILE names a
    missing file. TLS is not involved in an http:// download, so it then gets a client that
    refuses any https request (a redirect included) instead of skipping verification for it.
    """
    import httpx

    timeout = httpx.Timeout(DEFAULT_TIMEOUT[0], connect=DEFAULT_TIMEOUT[1])
    try:
        return httpx.Client(follow_redirects=True, timeout=timeout)
    except OSError as e:
        if not url.lower().startswith("http://"):
            raise DownloadError(f"ADD {url}: cannot load the CA certificates for https ({e})",
                                url=url) from e
        reason = str(e)  # `e` is unbound once the except clause ends; the hook runs later

        def plain_http_only(request: httpx.Request) -> None:
            if request.url.scheme != "http":
                raise DownloadError(f"ADD {url}: redirected to {request.url}, but https cannot "
                                    f"be verified without CA certificates ({reason})", url=url)

        return httpx.Client(follow_redirects=True, timeout=timeout, verify=False,
                            event_hooks={"request": [plain_http_only]})


def download(url: str, into: Path, *, checksum: str | None = None, filename: str | None = None,
             client: httpx.Client | None = None, label: str = "ADD") -> Download:
    """Fetch ``url`` into the directory ``into`` (which must exist and be private).

    ``label`` starts error messages (``ADD``, ``build context``). The body may not exceed the
    layer size bound (``CLOCHE_MAX_LAYER_SIZE``): it would make a layer past it anyway."""
    from cloche.engine.giturl import redact
    from cloche.fs.limits import LayerTooLargeError, human_size, max_layer_size

    limit = max_layer_size()
    shown = redact(url)
    expected = None
    if checksum is not None:
        try:
            expected = Digest.parse(checksum)
        except DigestError as e:
            raise DigestError(f"invalid --checksum {checksum!r} for {url}: {e.message}") from e
    import httpx

    owns_client = client is None
    http = client or _default_client(url)
    part = into / ".download.part"
    try:
        with http.stream("GET", url) as response:
            if response.status_code != 200:
                raise DownloadError(f"{label} {shown}: the server answered HTTP {response.status_code}",
                                    url=url, status=response.status_code)
            name = filename_for(str(response.url), response.headers, filename)
            hasher = hashlib.new(expected.algorithm if expected else "sha256")
            size = 0
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    if size > limit:
                        raise LayerTooLargeError(
                            f"{label} {shown}: the download is larger than "
                            f"{human_size(limit)} (CLOCHE_MAX_LAYER_SIZE)")
            mtime_ns = _mtime_ns(response.headers)
    except httpx.HTTPError as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{label} {shown}: {e}", url=url) from e
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        if owns_client:
            http.close()
    actual = Digest(hasher.name, hasher.hexdigest())
    if expected is not None and actual != expected:
        part.unlink(missing_ok=True)
        raise DigestMismatchError(f"{label} {shown}: checksum mismatch: expected {expected}, got {actual}",
                                  expected=expected, actual=actual)
    path = into / name
    os.replace(part, path)
    os.chmod(path, 0o600)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return Download(path, name, actual, size, mtime_ns)
