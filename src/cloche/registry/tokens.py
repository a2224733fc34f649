"""Registry authorization: basic credentials, and bearer tokens from a token server.

A registry that wants auth answers 401 with ``WWW-Authenticate``. For ``Basic`` the stored
credentials are sent as they are; for ``Bearer`` a token is asked of the ``realm`` for the
``service`` and the scopes the request needs (``repository:NAME:pull,push``), with the
credentials as basic auth, or an OAuth2 refresh-token grant for an identity token. Tokens are
cached per host and scope; one for a wider scope serves a narrower one, and concurrent requests
share one fetch, so a parallel pull asks the token server once, not once per layer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

from cloche.registry.auth import Challenge, Credentials
from cloche.registry.config import Endpoint
from cloche.registry.errors import AuthError, connection_error, error_from_response, is_retryable_status


class Authorizer:
    """Authorization headers for (host, scope), fetched on demand and cached."""

    def __init__(self, credentials: Callable[[str], Credentials | None],
                 http: Callable[[bool], httpx.Client], retries: int,
                 sleep: Callable[[int, str | None], None]) -> None:
        self._credentials = credentials
        self._http = http
        self.retries = retries
        self._sleep = sleep
        self._headers: dict[tuple[str, str], str] = {}   # (host, scope key) -> Authorization
        self.challenges: dict[str, Challenge] = {}        # host -> last challenge seen
        self._lock = threading.Lock()

    def authenticate(self, ep: Endpoint, challenge: Challenge, scopes: tuple[str, ...],
                      scope_key: str, stale: str | None) -> None:
        """Get an Authorization for (host, scope) unless another thread just did; ``stale`` is
        the header a 401 answered (it is replaced, not reused)."""
        with self._lock:
            current = self.header(ep.reference.api_host, scope_key)
            if current is not None and current != stale:
                return
            self._fetch(ep, challenge, scopes, scope_key)

    def _fetch(self, ep: Endpoint, challenge: Challenge, scopes: tuple[str, ...],
                    scope_key: str) -> None:
        host = ep.reference.api_host
        creds = self._credentials(ep.reference.registry)
        if not challenge.is_bearer:
            if creds is None or not (creds.username or creds.password):
                raise AuthError(f"{ep.reference.name}: the registry wants a user name and "
                                "password (HTTP 401 UNAUTHORIZED) and none is known",
                                reference=ep.reference.name, status=401, codes=("UNAUTHORIZED",),
                                hint=f"log in with: cloche login {ep.reference.registry}")
            self._headers[(host, "*")] = creds.basic_header()
            return
        realm = challenge.get("realm")
        if not realm.startswith(("http://", "https://")):
            raise AuthError(f"{ep.reference.registry}: token realm {realm!r} is not a URL",
                            reference=ep.reference.name, status=401)
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.get("service"):
            params.append(("service", challenge.get("service")))
        for scope in scopes:
            params.append(("scope", scope))
        client = self._http(ep.verify_tls)
        attempt = 0
        while True:
            try:
                if creds is not None and creds.identity_token:
                    form = dict(params) | {"grant_type": "refresh_token", "client_id": "cloche",
                                           "refresh_token": creds.identity_token,
                                           "scope": " ".join(scopes)}
                    resp = client.post(realm, data=form)
                else:
                    hdrs = {"Authorization": creds.basic_header()} if creds and creds.username else {}
                    resp = client.get(realm, params=params, headers=hdrs)
            except httpx.TransportError as err:
                attempt += 1
                if attempt > self.retries:
                    raise connection_error(err, "token", realm) from err
                self._sleep(attempt, None)
                continue
            if is_retryable_status(resp.status_code) and attempt < self.retries:
                attempt += 1
                self._sleep(attempt, resp.headers.get("retry-after"))
                continue
            break
        if resp.status_code != 200:
            answer = error_from_response(resp, "token for", ep.reference.name)
            raise AuthError(answer.message, reference=ep.reference.name, status=resp.status_code,
                            codes=answer.codes or ("UNAUTHORIZED",),
                            hint=f"check the credentials: cloche login {ep.reference.registry}")
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, RecursionError, AttributeError):  # not JSON, nested, not an object
            token = None
        if not token:
            raise AuthError(f"token server {realm} answered without a token",
                            reference=ep.reference.name, status=resp.status_code)
        self._headers[(host, scope_key)] = f"Bearer {token}"

    def header(self, host: str, scope_key: str) -> str | None:
        """The Authorization for a scope: basic auth for the host, the token for that scope,
        or a token for a wider scope (``pull,push`` serves a ``pull``)."""
        found = self._headers.get((host, "*")) or self._headers.get((host, scope_key))
        if found is not None:
            return found
        want = _scope_set(scope_key)
        for (h, key), value in list(self._headers.items()):
            if h == host and want <= _scope_set(key):
                return value
        return None


def _scope_set(scope_key: str) -> set[tuple[str, str]]:
    """``repository:a:pull,push repository:b:pull`` -> {(repository:a, pull), ...}."""
    out: set[tuple[str, str]] = set()
    for scope in scope_key.split():
        resource, _, actions = scope.rpartition(":")
        out.update((resource, action) for action in actions.split(","))
    return out
