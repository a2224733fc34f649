"""``--load`` (``-o type=docker`` without ``dest``): the image into the local Docker engine.

As buildx does it, through the engine's API rather than the docker CLI: the archive
(oci/docker_archive.py, which ``docker load`` reads) is streamed to ``POST /images/load`` on
the engine's socket, ``$DOCKER_HOST`` when it names one (``unix://PATH``; ``tcp://`` is refused:
cloche sends no TLS client certificate), else ``/var/run/docker.sock``. The answer is Docker's
JSON message stream; an ``error`` in it, or no engine at the socket, is a clear error.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

from cloche import events as tev
from cloche.engine import events as ev
from cloche.errors import ClocheError, ConfigError
from cloche.oci.descriptor import Descriptor
from cloche.oci.digest import Digest

DEFAULT_SOCKET = "/var/run/docker.sock"
API_VERSION = "v1.41"  # Docker 20.10; later engines take it too
TIMEOUT = 600.0


class DockerLoadError(ClocheError):
    """The Docker engine could not be reached or refused the image."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def engine_socket(environ: dict[str, str] | None = None) -> str:
    """The engine's socket path from ``$DOCKER_HOST`` (unix:// only), else the default."""
    host = (environ if environ is not None else dict(os.environ)).get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("unix://"):
        return host[len("unix://"):]
    raise ConfigError(f"--load: DOCKER_HOST={host!r} is not a unix socket",
                      hint="cloche loads into a local engine through unix://PATH; use "
                           "-o type=docker,dest=FILE and `docker load -i FILE` otherwise")


class _Hashing:
    """The archive file as ``write`` sees it: what it writes is hashed on the way (the
    upload's progress names the archive by its digest)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self._out.write(data)

    def flush(self) -> None:
        self._out.flush()


def load_into_docker(write: Callable[[BinaryIO], None], scratch: Path,
                     socket_path: str | None = None, *,
                     listener: ev.Listener = ev.ignore) -> list[str]:
    """Write the archive with ``write`` (into a file under ``scratch``), send it to the engine;
    returns the engine's "Loaded image" lines. The upload's bytes go to ``listener`` as
    ``BlobProgress`` (``exporting``, a descriptor of type ``TARBALL``)."""
    path = socket_path or engine_socket()
    with tempfile.TemporaryFile(dir=scratch) as archive:
        hashing = _Hashing(archive)
        write(cast(BinaryIO, hashing))
        size = archive.tell()
        archive.seek(0)
        meter = tev.BlobMeter(listener, "docker", Descriptor(
            ev.TARBALL, Digest.parse("sha256:" + hashing.hash.hexdigest()), size), "exporting")
        conn = _UnixConnection(path, TIMEOUT)
        try:
            conn.putrequest("POST", f"/{API_VERSION}/images/load?quiet=1")
            conn.putheader("Content-Type", "application/x-tar")
            conn.putheader("Content-Length", str(size))
            conn.endheaders()
            while chunk := archive.read(1 << 20):
                conn.send(chunk)
                meter.add(len(chunk))
            meter.finish()
            response = conn.getresponse()
            body = response.read(16 << 20)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise DockerLoadError(f"--load: no Docker engine answers at {path} ({e.strerror})",
                                  hint="start the engine (dockerd), set DOCKER_HOST=unix://PATH, "
                                       "or write an archive: -o type=docker,dest=FILE") from e
        except PermissionError as e:
            raise DockerLoadError(f"--load: {path}: permission denied",
                                  hint="join the docker group, or write an archive: "
                                       "-o type=docker,dest=FILE") from e
        except (OSError, http.client.HTTPException) as e:
            raise DockerLoadError(f"--load: the Docker engine at {path} failed: {e}") from e
        finally:
            conn.close()
    if response.status != 200:
        raise DockerLoadError(f"--load: the Docker engine refused the image "
                              f"(HTTP {response.status}): {_message(body)}")
    loaded = []
    for line in body.decode("utf-8", "replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        if doc.get("error"):
            raise DockerLoadError(f"--load: the Docker engine refused the image: {doc['error']}")
        stream = str(doc.get("stream") or "").strip()
        if stream:
            loaded.append(stream)
    return loaded


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:500]
    return str(doc.get("message", doc)) if isinstance(doc, dict) else str(doc)
