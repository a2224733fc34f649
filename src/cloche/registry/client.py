"""The OCI distribution API over httpx: manifests, blobs, uploads, tags, auth and retries.

One ``RegistryClient`` talks to any number of registries; each call names an ``Endpoint`` (a
reference as one host sees it, and the scheme to use). The HTTP transport is a constructor
argument so tests can route everything anywhere. What comes in is verified: a manifest against
the digest asked for (or the one the registry announced), a blob against its digest while it
streams, and a blob download that breaks off resumes with ``Range`` where it stopped.
Transient failures (429, 5xx, dropped connections) are retried a bounded number of times.
Every request has an overall deadline (``deadline.py``: ``CLOCHE_REGISTRY_TIMEOUT``), which a
registry that trickles its answers cannot stretch: it then fails, naming the registry.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin

import httpx

from cloche.errors import ConfigError, RegistryError
from cloche.oci import mediatypes as mt
from cloche.oci.digest import Digest, Digester
from cloche.registry.auth import Credentials, get_credentials, parse_challenge
from cloche.registry.config import Endpoint, RegistryConfig
from cloche.registry.deadline import (
    Deadline,
    RegistryTimeoutError,
    check_current,
    on_request,
    registry_timeout,
)
from cloche.registry.errors import (
    BlobVerificationError,
    NotFoundError,
    connection_error,
    error_from_response,
    is_retryable_status,
)
from cloche.registry.tokens import Authorizer
from cloche.registry.wire import backoff_delay, digest_or_none, file_chunks, range_start

MANIFEST_ACCEPT = ", ".join(mt.MANIFEST_ACCEPT)
MAX_MANIFEST_SIZE = 4 << 20     # the spec's suggested limit; refuse bigger "manifests"
CHUNK = 1 << 20
DEFAULT_CHUNKED_THRESHOLD = 64 << 20

Body = bytes | Callable[[], Iterable[bytes]] | None


@dataclass(frozen=True)
class FetchedManifest:
    """Manifest bytes as received and verified, with their media type and digest."""

    data: bytes
    media_type: str
    digest: Digest

    @property
    def size(self) -> int:
        return len(self.data)


class RegistryClient:
    """A client for the distribution API, sharing connections and tokens across calls."""

    def __init__(
        self, config: RegistryConfig | None = None, *,
        transport: httpx.BaseTransport | None = None,
        credentials: Callable[[str], Credentials | None] | None = None,
        docker_config: Path | None = None,
        retries: int = 4, backoff: float = 0.5, timeout: float = 60.0,
        chunked_threshold: int = DEFAULT_CHUNKED_THRESHOLD, chunk_size: int = 16 << 20,
        deadline: float | None = None,
    ) -> None:
        """``timeout`` bounds each socket operation; ``deadline`` (seconds; default
        ``CLOCHE_REGISTRY_TIMEOUT``, 300) a whole request, see ``deadline.py``."""
        self.config = config if config is not None else RegistryConfig.load()
        self.deadline = deadline if deadline is not None else registry_timeout()
        self.retries = retries
        self.backoff = backoff
        self.chunked_threshold = chunked_threshold
        self.chunk_size = chunk_size
        self._credentials = credentials or (lambda host: get_credentials(host, docker_config))
        self._transport = transport
        self._timeout = timeout
        self._clients: dict[bool, httpx.Client] = {}
        self._clients_lock = threading.Lock()
        self._auth = Authorizer(self._credentials, self._http, retries, self._sleep)

    def _http(self, verify_tls: bool) -> httpx.Client:
        """The HTTP client for verified or unverified TLS, made on first use (so a machine
        without CA certificates can still talk to plain-HTTP registries)."""
        with self._clients_lock:
            key = verify_tls and self._transport is None
            client = self._clients.get(key)
            if client is None:
                timeout = httpx.Timeout(self._timeout, connect=15.0)
                headers = {"User-Agent": "cloche"}
                # each request under its thread's deadline, on a connection of its own
                hooks = {"request": [on_request]}
                limits = httpx.Limits(max_keepalive_connections=0)
                if self._transport is not None:
                    client = httpx.Client(transport=self._transport, follow_redirects=True,
                                          headers=headers, timeout=timeout, event_hooks=hooks)
                else:
                    try:
                        client = httpx.Client(verify=verify_tls, follow_redirects=True,
                                              headers=headers, timeout=timeout,
                                              event_hooks=hooks, limits=limits)
                    except (OSError, ssl.SSLError) as err:
                        raise ConfigError(
                            f"cannot load the CA certificates for HTTPS: {err}",
                            hint="install ca-certificates, or check SSL_CERT_FILE") from err
                self._clients[key] = client
            return client

    def close(self) -> None:
        with self._clients_lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _deadline(self, ep: Endpoint, what: str) -> Iterator[Deadline]:
        """The block's requests (retries and token requests included) under one deadline;
        RegistryTimeoutError, naming the registry, when it passes."""
        with Deadline(self.deadline, ep.reference.registry, what) as deadline:
            try:
                yield deadline
            except (httpx.TransportError, RegistryError):
                deadline.check()  # a connection the deadline cut: say so
                raise
            if deadline.expired:  # a cut that read as a clean end
                raise deadline.error()

    # --- the API ----------------------------------------------------------------------

    def ping(self, ep: Endpoint) -> None:
        """GET /v2/: proves the endpoint speaks the API (401 counts: it wants auth)."""
        try:
            with self._deadline(ep, f"ping {ep.base_url}/v2/"):
                resp = self._send(ep, "GET", "/v2/", scopes=(), what="ping", ok=(200, 401),
                                  auth=False)
                resp.close()
        except RegistryError as err:
            if isinstance(err, RegistryTimeoutError):
                raise
            if err.status is not None:
                raise
            cause = err.__cause__ or err
            raise RegistryError(
                f"cannot reach the registry {ep.reference.registry} for {ep.reference} at "
                f"{ep.base_url}/v2/: {cause}", reference=str(ep.reference), retryable=True,
                hint="check the network, or configure a mirror for it "
                     "([registry.\"HOST\"] mirrors = [...] in the cloche config file)") from err

    def check_login(self, ep: Endpoint) -> None:
        """GET /v2/ with credentials (basic, or a token fetched with them); AuthError if refused."""
        with self._deadline(ep, f"login to {ep.reference.registry}"):
            resp = self._send(ep, "GET", "/v2/", scopes=(), what="login to", ok=(200,))
            resp.close()

    def get_manifest(self, ep: Endpoint, identifier: str | None = None) -> FetchedManifest:
        """The manifest or index at a tag or digest, verified against that digest, or against
        the ``Docker-Content-Digest`` the registry sent for a tag."""
        ident = identifier or ep.reference.identifier
        with self._deadline(ep, f"manifest {self._ref(ep, ident)}"):
            resp = self._send(ep, "GET", self._path(ep, "manifests", ident), what="manifest",
                              headers={"Accept": MANIFEST_ACCEPT}, ok=(200,))
            try:
                data = self._read_limited(resp, MAX_MANIFEST_SIZE, ep, ident)
            finally:
                resp.close()
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        expected = digest_or_none(ident) or digest_or_none(resp.headers.get("docker-content-digest"))
        actual = Digest.from_bytes(data, expected.algorithm if expected else "sha256")
        if expected is not None and expected != actual:
            raise BlobVerificationError(
                f"manifest {self._ref(ep, ident)}: the registry served bytes with digest {actual},"
                f" not {expected}; refusing it", expected=expected, actual=actual,
                reference=self._ref(ep, ident))
        return FetchedManifest(data, media_type, actual)

    def head_manifest(self, ep: Endpoint, identifier: str | None = None) -> FetchedManifest | None:
        """Digest and type of a manifest without its body (data is empty); None when absent."""
        ident = identifier or ep.reference.identifier
        with self._deadline(ep, f"manifest {self._ref(ep, ident)}"):
            resp = self._send(ep, "HEAD", self._path(ep, "manifests", ident), what="manifest",
                              headers={"Accept": MANIFEST_ACCEPT}, ok=(200, 404))
            resp.close()
        if resp.status_code == 404:
            return None
        digest = digest_or_none(resp.headers.get("docker-content-digest")) or digest_or_none(ident)
        if digest is None:
            return None
        return FetchedManifest(b"", resp.headers.get("content-type", ""), digest)

    def put_manifest(self, ep: Endpoint, identifier: str, data: bytes, media_type: str) -> Digest:
        with self._deadline(ep, f"manifest {self._ref(ep, identifier)}"):
            resp = self._send(ep, "PUT", self._path(ep, "manifests", identifier),
                              what="manifest", push=True, content=data,
                              headers={"Content-Type": media_type}, ok=(200, 201, 202))
            resp.close()
        digest = Digest.from_bytes(data)
        answered = digest_or_none(resp.headers.get("docker-content-digest"))
        if answered is not None and answered.algorithm == digest.algorithm and answered != digest:
            raise RegistryError(f"manifest {self._ref(ep, identifier)}: the registry stored it "
                                f"as {answered}, not {digest}", reference=self._ref(ep, identifier),
                                status=resp.status_code)
        return digest

    def blob_exists(self, ep: Endpoint, digest: Digest) -> bool:
        with self._deadline(ep, f"blob {self._ref(ep, str(digest))}"):
            resp = self._send(ep, "HEAD", self._path(ep, "blobs", str(digest)), what="blob",
                              ok=(200, 404))
            resp.close()
        return resp.status_code == 200

    def fetch_blob(self, ep: Endpoint, digest: Digest, size: int | None,
                   sink: Callable[[bytes], object]) -> int:
        """Stream a blob into ``sink``, verifying it; resumes with Range after a break.

        Raises BlobVerificationError when the bytes are not the blob asked for (the caller's
        sink, a store writer, then discards what it got)."""
        ref = self._ref(ep, str(digest))
        digester = Digester(digest.algorithm)
        breaks = 0
        while True:
            received = digester.size
            headers = {"Accept-Encoding": "identity"}
            if received:
                headers["Range"] = f"bytes={received}-"
            try:
                with self._deadline(ep, f"blob {ref}") as deadline:
                    self._fetch_once(ep, digest, size, sink, digester, headers, deadline)
            except httpx.TransportError as err:
                breaks += 1
                if breaks > self.retries:
                    raise connection_error(err, "blob", ref) from err
                self._sleep(breaks)
                continue
            if size is not None and digester.size < size:
                breaks += 1
                if breaks > self.retries:
                    raise RegistryError(f"blob {ref}: the connection ended after {digester.size}"
                                        f" of {size} bytes", reference=ref, retryable=True)
                self._sleep(breaks)
                continue
            break
        actual = digester.digest()
        if actual != digest:
            raise BlobVerificationError(
                f"blob {ref}: the registry served bytes with digest {actual}; refusing them"
                " (nothing was stored)", expected=digest, actual=actual, reference=ref)
        return digester.size

    def _fetch_once(self, ep: Endpoint, digest: Digest, size: int | None,
                    sink: Callable[[bytes], object], digester: Digester,
                    headers: dict[str, str], deadline: Deadline) -> None:
        """One GET of a blob (from where ``digester`` stopped) into ``sink``; the deadline
        grows with the bytes that arrive (see ``Deadline.progress``)."""
        ref = self._ref(ep, str(digest))
        received = digester.size
        resp = self._send(ep, "GET", self._path(ep, "blobs", str(digest)), what="blob",
                          headers=headers, ok=(200, 206))
        try:
            skip = received - range_start(resp) if received else 0
            if skip < 0:
                raise RegistryError(f"blob {ref}: the registry resumed at the wrong offset",
                                    reference=ref, status=resp.status_code)
            for chunk in resp.iter_raw():  # as it arrives: the deadline sees progress
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                if size is not None and digester.size + len(chunk) > size:
                    raise BlobVerificationError(
                        f"blob {ref}: the registry sent more than the {size} bytes announced",
                        expected=digest, actual=digester.digest(), reference=ref)
                digester.update(chunk)
                sink(chunk)
                deadline.progress(digester.size - received)
        finally:
            resp.close()

    def start_upload(self, ep: Endpoint, digest: Digest | None = None,
                     mount_from: str | None = None) -> str | None:
        """POST an upload; None when the blob was mounted from ``mount_from`` (201)."""
        params = {"mount": str(digest), "from": mount_from} if mount_from and digest else None
        extra = (f"repository:{mount_from}:pull",) if params else ()
        with self._deadline(ep, f"blob upload {self._ref(ep, '')}"):
            resp = self._send(ep, "POST", self._path(ep, "blobs", "uploads/"),
                              what="blob upload", push=True, params=params,
                              extra_scopes=extra, ok=(201, 202), content=b"")
            resp.close()
        if resp.status_code == 201 and params:
            return None
        location: str | None = resp.headers.get("location")
        if not location:
            raise RegistryError(f"blob upload {self._ref(ep, '')}: no Location in the answer",
                                reference=self._ref(ep, ""), status=resp.status_code)
        return urljoin(str(resp.url), location)

    def upload_blob(self, ep: Endpoint, digest: Digest, size: int,
                    opener: Callable[[], BinaryIO], *, mount_from: str | None = None,
                    progress: Callable[[int], object] | None = None) -> str:
        """Upload a blob (mount, monolithic PUT, or PATCH chunks then PUT for big ones).
        ``progress`` is told the bytes sent so far as the body goes out (from 0 again when a
        request is retried).

        Returns ``"mounted"`` or ``"uploaded"``."""
        location = self.start_upload(ep, digest, mount_from)
        if location is None:
            return "mounted"
        if size > self.chunked_threshold:
            offset = 0
            with opener() as f:
                while chunk := f.read(self.chunk_size):
                    end = offset + len(chunk) - 1
                    with self._deadline(ep, f"blob upload {self._ref(ep, str(digest))}") as dl:
                        dl.extend(len(chunk))
                        resp = self._send_url(
                            ep, "PATCH", location, what="blob upload", push=True,
                            content=chunk, ok=(202, 204), headers={
                                "Content-Type": "application/octet-stream",
                                "Content-Range": f"{offset}-{end}",
                                "Content-Length": str(len(chunk))})
                        resp.close()
                    location = urljoin(str(resp.url), resp.headers.get("location", location))
                    offset = end + 1
                    if progress is not None:
                        progress(offset)
            body: Body = b""
            headers = {"Content-Length": "0"}
        else:
            body = file_chunks(opener, progress)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        url = httpx.URL(location).copy_merge_params({"digest": str(digest)})
        with self._deadline(ep, f"blob upload {self._ref(ep, str(digest))}") as dl:
            if size <= self.chunked_threshold:
                dl.extend(size)
            resp = self._send_url(ep, "PUT", str(url), what="blob upload", push=True,
                                  content=body, headers=headers, ok=(201, 204))
            resp.close()
        return "uploaded"

    def list_tags(self, ep: Endpoint, page_size: int | None = None) -> list[str]:
        """Every tag of the repository, following ``Link: <...>; rel="next"`` pages."""
        tags: list[str] = []
        url: str | None = ep.base_url + self._path(ep, "tags", "list")
        params = {"n": str(page_size)} if page_size else None
        while url:
            with self._deadline(ep, f"tag list {self._ref(ep, '')}"):
                resp = self._send_url(ep, "GET", url, what="tag list", params=params,
                                      ok=(200,))
                try:
                    data = resp.read()
                finally:
                    resp.close()
            try:
                tags.extend(httpx.Response(200, content=data).json().get("tags") or [])
            except (ValueError, RecursionError, AttributeError) as err:
                raise RegistryError(f"tag list {self._ref(ep, '')}: invalid JSON",
                                    reference=self._ref(ep, "")) from err
            nxt = resp.links.get("next", {}).get("url")
            url, params = (urljoin(str(resp.url), nxt), None) if nxt else (None, None)
        return tags

    # --- plumbing ---------------------------------------------------------------------

    @staticmethod
    def _path(ep: Endpoint, kind: str, ident: str) -> str:
        return f"/v2/{ep.reference.repository}/{kind}/{ident}"

    @staticmethod
    def _ref(ep: Endpoint, ident: str) -> str:
        sep = "@" if ident.count(":") == 1 and ident.startswith("sha") else ":"
        return f"{ep.reference.name}{sep}{ident}" if ident else ep.reference.name

    def _read_limited(self, resp: httpx.Response, limit: int, ep: Endpoint, ident: str) -> bytes:
        parts: list[bytes] = []
        total = 0
        try:
            for chunk in resp.iter_bytes():
                total += len(chunk)
                if total > limit:
                    raise RegistryError(f"manifest {self._ref(ep, ident)} is larger than "
                                        f"{limit} bytes; refusing it", reference=self._ref(ep, ident))
                parts.append(chunk)
        except httpx.TransportError as err:
            check_current()
            raise connection_error(err, "manifest", self._ref(ep, ident)) from err
        return b"".join(parts)

    def _send(self, ep: Endpoint, method: str, path: str, **kw: object) -> httpx.Response:
        return self._send_url(ep, method, ep.base_url + path, **kw)  # type: ignore[arg-type]

    def _send_url(
        self, ep: Endpoint, method: str, url: str, *, what: str, ok: tuple[int, ...],
        headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
        content: Body = None, push: bool = False, extra_scopes: tuple[str, ...] = (),
        scopes: tuple[str, ...] | None = None, auth: bool = True,
    ) -> httpx.Response:
        """Send with auth and retries; returns an open streaming response whose status is in
        ``ok`` (the caller closes it), or raises a RegistryError."""
        host = ep.reference.api_host
        repo = ep.reference.repository
        if scopes is None:
            scopes = (f"repository:{repo}:{'pull,push' if push else 'pull'}",) + extra_scopes
        scope_key = " ".join(scopes)
        reference = self._ref(ep, url.rsplit("/", 1)[-1] if what in ("manifest", "blob") else "")
        client = self._http(ep.verify_tls)
        attempt = 0
        authenticated = False
        known = self._auth.challenges.get(host)
        if auth and known is not None and self._auth.header(host, scope_key) is None:
            self._auth.authenticate(ep, known, scopes, scope_key, stale=None)
        while True:
            hdrs = dict(headers or {})
            cached = self._auth.header(host, scope_key) if auth else None
            if cached is not None:
                hdrs["Authorization"] = cached
            body = content() if callable(content) else content
            try:
                request = client.build_request(method, url, headers=hdrs, params=params,
                                               content=body)
                resp = client.send(request, stream=True)
            except httpx.TransportError as err:
                check_current()  # cut by the deadline: no retry
                attempt += 1
                # Nothing listening (refused, unknown host) is rarely cured by waiting: one
                # quick retry, not the full backoff meant for dropped and reset connections.
                limit = min(self.retries, 1) if isinstance(err, httpx.ConnectError) else self.retries
                if attempt > limit:
                    raise connection_error(err, what, reference) from err
                self._sleep(attempt)
                continue
            if resp.status_code in ok:
                return resp
            resp.read()
            resp.close()
            if resp.status_code == 401 and auth and not authenticated:
                header = resp.headers.get("www-authenticate")
                if header:
                    challenge = parse_challenge(header)
                    self._auth.challenges[host] = challenge
                    self._auth.authenticate(ep, challenge, scopes, scope_key,
                                            stale=hdrs.get("Authorization"))
                    authenticated = True
                    continue
            if is_retryable_status(resp.status_code) and attempt < self.retries:
                attempt += 1
                self._sleep(attempt, resp.headers.get("retry-after"))
                continue
            raise error_from_response(resp, what, reference)

    def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        time.sleep(backoff_delay(self.backoff, attempt, retry_after))


__all__ = ["FetchedManifest", "RegistryClient", "MANIFEST_ACCEPT", "NotFoundError"]
