"""Registry error leaves and the translation of a registry's error body into one.

The distribution spec's error body is ``{"errors": [{"code", "message", "detail"}]}``; its codes
(``MANIFEST_UNKNOWN``, ``BLOB_UNKNOWN``, ``UNAUTHORIZED``, ``DENIED``...) are kept on the error so
callers can branch on them, and the status says whether trying again can help.
"""

from __future__ import annotations

import json

import httpx

from cloche.errors import RegistryError
from cloche.oci.digest import Digest, DigestMismatchError


class BlobVerificationError(DigestMismatchError):
    """A registry served bytes whose digest (or length) is not the one asked for."""

    def __init__(self, message: str, *, expected: Digest, actual: Digest, reference: str) -> None:
        super().__init__(message, expected=expected, actual=actual)
        self.reference = reference


class NotFoundError(RegistryError, LookupError):
    """The registry does not have the manifest, blob or repository (404)."""


class AuthError(RegistryError):
    """The registry refused the credentials, or wants some and none are known (401/403)."""


def is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def error_from_response(response: httpx.Response, what: str, reference: str) -> RegistryError:
    """A typed error for a failed response; the body must already have been read."""
    status = response.status_code
    codes: list[str] = []
    messages: list[str] = []
    try:
        body = json.loads(response.content or b"{}")
        for item in body.get("errors", []) if isinstance(body, dict) else []:
            if isinstance(item, dict):
                if item.get("code"):
                    codes.append(str(item["code"]))
                if item.get("message"):
                    messages.append(str(item["message"]))
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        pass
    detail = "; ".join(f"{c}: {m}" if m else c for c, m in zip(codes, messages + [""] * len(codes)))
    if not detail:
        detail = response.reason_phrase or "error"
    message = f"{what} {reference}: HTTP {status} {detail}"
    host = reference.split("/", 1)[0]
    retryable = is_retryable_status(status)
    if status in (401, 403) or "UNAUTHORIZED" in codes or "DENIED" in codes:
        return AuthError(message, hint=f"log in with: cloche login {host}", reference=reference,
                         status=status, codes=tuple(codes), retryable=retryable)
    kind = NotFoundError if status == 404 else RegistryError
    return kind(message, reference=reference, status=status, codes=tuple(codes),
                retryable=retryable)


def connection_error(err: Exception, what: str, reference: str) -> RegistryError:
    return RegistryError(f"{what} {reference}: {type(err).__name__}: {err}", reference=reference,
                         retryable=True)
