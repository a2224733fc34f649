"""A loopback HTTP proxy in front of the real docker-registry, for tests.

It can play a token (bearer) auth server, as Docker Hub does, and inject faults into the
answers of the real registry: 500s and 429s, dropped connections, truncated bodies and wrong
bytes. Faults are rules matched on method and path, each firing a given number of times, so a
test can say "the first GET of this blob is cut in half" and check the client recovers.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    method: str
    path: str                   # a regular expression searched in the request path
    action: str                 # "500", "429", "drop", "truncate", "wrong", "ignore-range",
                                # "slow" (the body in 64 KiB pieces, 25 ms apart)
    times: int = 1
    fired: int = 0


@dataclass
class TokenAuth:
    """Bearer auth: /token issues tokens for the requested scopes, to anyone or to one user."""

    user: str | None = None
    password: str | None = None
    service: str = "cloche-test"
    tokens: dict[str, set[str]] = field(default_factory=dict)   # token -> granted scopes
    issued: list[str] = field(default_factory=list)             # scopes asked for, in order
    refresh_token: str | None = None                            # accepted by POST /token


class Proxy:
    """Forwards to ``upstream`` (``127.0.0.1:PORT``); see the module docstring."""

    def __init__(self, upstream: str, *, token_auth: TokenAuth | None = None) -> None:
        self.upstream = upstream
        self.token_auth = token_auth
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None: proxy.handle(self)
            def do_HEAD(self) -> None: proxy.handle(self)
            def do_PUT(self) -> None: proxy.handle(self)
            def do_POST(self) -> None: proxy.handle(self)
            def do_PATCH(self) -> None: proxy.handle(self)
            def do_DELETE(self) -> None: proxy.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, method: str, path: str, action: str, times: int = 1) -> Fault:
        fault = Fault(method, path, action, times)
        with self.lock:
            self.faults.append(fault)
        return fault

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.method == method and re.search(f.path, path) and f.fired < f.times:
                    f.fired += 1
                    return f
        return None

    # --- the request handler -----------------------------------------------------------

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _read_chunked(h)
        path = h.path
        self._body = body
        if self.token_auth and path.startswith("/token"):
            return self._token(h)
        if self.token_auth and not self._authorized(h):
            return self._challenge(h)
        fault = self._fault_for(h.command, path)
        if fault and fault.action in ("500", "429"):
            return self._send(h, int(fault.action), {"Retry-After": "0"} if fault.action == "429" else {},
                              b'{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}')
        if fault and fault.action == "drop":
            h.close_connection = True
            h.connection.shutdown(2)
            return
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() not in ("host", "authorization", "connection")}
        if fault and fault.action == "ignore-range":
            headers.pop("Range", None)
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        conn.request(h.command, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        status = resp.status
        out = {k: v for k, v in resp.getheaders()
               if k.lower() not in ("transfer-encoding", "connection", "content-length")}
        conn.close()
        with self.lock:
            self.log.append((h.command, path, status))
        if "Location" in out:
            out["Location"] = out["Location"].replace(f"http://{self.upstream}", f"http://{self.host}")
        if fault and fault.action == "wrong" and data:
            data = bytes(b ^ 0x55 for b in data)
        if fault and fault.action == "truncate" and h.command == "GET":
            h.send_response(status)
            for k, v in out.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
            return
        if fault and fault.action == "slow" and h.command == "GET":
            h.send_response(status)
            for k, v in out.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            for at in range(0, len(data), 64 << 10):
                h.wfile.write(data[at:at + (64 << 10)])
                h.wfile.flush()
                time.sleep(0.025)
            return
        self._send(h, status, out, data, head=h.command == "HEAD",
                   length=resp.getheader("Content-Length"))

    def _send(self, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes,
              *, head: bool = False, length: str | None = None) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        head = head or h.command == "HEAD"
        h.send_header("Content-Length", length if head and length else str(len(data)))
        h.end_headers()
        if not head:
            h.wfile.write(data)

    # --- token auth --------------------------------------------------------------------

    def _challenge(self, h: BaseHTTPRequestHandler) -> None:
        ta = self.token_auth
        assert ta is not None
        m = re.match(r"^/v2/(.+)/(manifests|blobs|tags)/", h.path)
        params = f'realm="http://{self.host}/token",service="{ta.service}"'
        if m:
            action = "pull" if h.command in ("GET", "HEAD") else "pull,push"
            params += f',scope="repository:{m.group(1)}:{action}"'
        self._send(h, 401, {"WWW-Authenticate": f"Bearer {params}",
                            "Content-Type": "application/json"},
                   b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')

    def _authorized(self, h: BaseHTTPRequestHandler) -> bool:
        ta = self.token_auth
        assert ta is not None
        header = h.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        granted = ta.tokens.get(header[7:])
        if granted is None:
            return False
        m = re.match(r"^/v2/(.+?)/(manifests|blobs|tags)/", h.path)
        if not m:
            return True
        repo = m.group(1)
        need = "pull" if h.command in ("GET", "HEAD") else "push"
        if h.command == "POST" and "from=" in h.path:
            from urllib.parse import unquote
            src = unquote(re.search(r"from=([^&]+)", h.path).group(1))  # type: ignore[union-attr]
            if f"repository:{src}:pull" not in granted:
                return False
        return f"repository:{repo}:{need}" in granted

    def _token(self, h: BaseHTTPRequestHandler) -> None:
        ta = self.token_auth
        assert ta is not None
        from urllib.parse import parse_qs, urlparse
        query = parse_qs(urlparse(h.path).query)
        if h.command == "POST":     # OAuth2: a refresh token (Docker's identity token) in a form
            form = parse_qs(self._body.decode())
            if form.get("grant_type") != ["refresh_token"] or \
                    form.get("refresh_token") != [ta.refresh_token]:
                return self._send(h, 401, {"Content-Type": "application/json"},
                                  b'{"errors":[{"code":"UNAUTHORIZED","message":"bad token"}]}')
            query = {"service": form.get("service", []), "scope": form.get("scope", [])}
        elif ta.user is not None:
            header = h.headers.get("Authorization", "")
            want = "Basic " + base64.b64encode(f"{ta.user}:{ta.password}".encode()).decode()
            if header != want:
                return self._send(h, 401, {"Content-Type": "application/json"},
                                  b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}')
        if query.get("service") != [ta.service]:
            return self._send(h, 400, {}, b"wrong service")
        granted: set[str] = set()
        for scope in query.get("scope", []):
            for one in scope.split(" "):
                ta.issued.append(one)
                kind, _, rest = one.partition(":")
                repo, _, actions = rest.rpartition(":")
                for action in actions.split(","):
                    granted.add(f"{kind}:{repo}:{action}")
        token = secrets.token_hex(16)
        ta.tokens[token] = granted
        key = "access_token" if h.command == "POST" else "token"
        self._send(h, 200, {"Content-Type": "application/json"},
                   json.dumps({key: token, "expires_in": 300}).encode())


def _read_chunked(h: BaseHTTPRequestHandler) -> bytes:
    out = b""
    while True:
        size = int(h.rfile.readline().strip().split(b";")[0], 16)
        if size == 0:
            h.rfile.readline()
            return out
        out += h.rfile.read(size)
        h.rfile.readline()
