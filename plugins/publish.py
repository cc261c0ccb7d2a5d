"""ZeroMQ sockets of the wire: publishing FlameFrames (one PUB socket per session, owned by the
thread that runs its drivers) and securing every link with CURVE.

CURVE keys live in a key folder (``make_key_folder``): ``worker.key`` / ``worker.key_secret``
and ``server.key`` / ``server.key_secret`` in ZeroMQ's certificate format, secret files 0600
in a 0700 folder. The worker's sockets are CURVE servers that admit only the server's public
key; every server socket (the control link, each session's publisher, the video subscriber) is
a CURVE client that knows the worker's public key. docs/protocol.md, "Authentication".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

from .frame import FlameFrame
from .protocol import ProtocolError, flame_message

# Two seconds of frames at 30 fps: a generator that stalls briefly loses nothing, one that
# stalls longer loses the oldest backlog instead of growing memory. Video sockets use far
# smaller marks (see the generator worker): stale video is worthless, stale poses are cheap.
FLAME_SNDHWM = 64
LINGER_MS = 200

WORKER, SERVER = "worker", "server"


class KeyFolderError(ValueError):
    """A key folder that cannot be used; the message says which file and how to make one."""


@dataclass(frozen=True)
class CurveKeys:
    """One side's CURVE keys, Z85-encoded: its own pair; for the server the worker's public
    key (``peer``), for the worker the client public keys it admits (``allowed``)."""

    public: bytes
    secret: bytes
    peer: bytes | None = None
    allowed: frozenset[bytes] = frozenset()


def make_key_folder(folder: str | os.PathLike) -> Path:
    """Create (or complete) a key folder: a fresh pair for the worker and for the server.
    Existing pairs are kept. The folder is 0700, secret files 0600."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for role in (WORKER, SERVER):
        if not (folder / f"{role}.key_secret").exists():
            public, secret = zmq.curve_keypair()
            _write(folder / f"{role}.key", _certificate(public, None), 0o644)
            _write(folder / f"{role}.key_secret", _certificate(public, secret), 0o600)
    return folder


def load_keys(folder: str | os.PathLike, role: str) -> CurveKeys:
    """The keys ``role`` ("worker" or "server") uses from a key folder."""
    from zmq.auth import load_certificate

    folder = Path(folder)
    peer_role = SERVER if role == WORKER else WORKER
    try:
        _check_private(folder / f"{role}.key_secret")
        public, secret = load_certificate(folder / f"{role}.key_secret")
        peer, _ = load_certificate(folder / f"{peer_role}.key")
    except (OSError, ValueError) as exc:
        raise KeyFolderError(f"key folder {folder}: {exc}; make one with `flamecast generator --make-keys {folder}` "
                        "and copy it to both machines") from None
    if secret is None:
        raise KeyFolderError(f"{folder / f'{role}.key_secret'} holds no secret key")
    if role == WORKER:
        return CurveKeys(public, secret, allowed=frozenset({peer}))
    return CurveKeys(public, secret, peer=peer)


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & 0o077:
        raise KeyFolderError(f"{path} is readable by others (mode {mode & 0o777:o}); run chmod 600 {path}")


def _certificate(public: bytes, secret: bytes | None) -> str:
    lines = ["#   flamecast CURVE certificate (ZeroMQ format)", "metadata", "curve",
             f'    public-key = "{public.decode()}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def secure_client(sock: zmq.Socket, keys: CurveKeys | None) -> None:
    """Make ``sock`` a CURVE client of the worker (before connecting). None: plain text."""
    if keys is None:
        return
    if keys.peer is None:
        raise KeyFolderError("a CURVE client needs the worker's public key")
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.peer


def secure_server(sock: zmq.Socket, keys: CurveKeys | None) -> None:
    """Make ``sock`` a CURVE server (before binding); who may connect is decided by the
    context's authenticator (``start_authenticator``). None: plain text."""
    if keys is None:
        return
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


class _Admit:
    def __init__(self, allowed: frozenset[bytes]) -> None:
        self.allowed = allowed
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.allowed
        self.refused += not ok
        return ok


def start_authenticator(ctx: zmq.Context, keys: CurveKeys):
    """A ZAP handler on ``ctx`` admitting only ``keys.allowed``; call ``.stop()`` before
    terminating the context. Its ``.admit.refused`` counts refused handshakes."""
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx, log=None)
    auth.start()
    auth.admit = _Admit(keys.allowed)
    auth.configure_curve_callback("*", credentials_provider=auth.admit)
    return auth


class FramePublisher:
    """PUB socket that connects to a generator worker's flame endpoint.

    Its socket is made by the first ``send``, in the thread that sends (a session's driver
    thread), and never blocks: past the mark a frame is dropped and counted. ``close`` once
    that thread is done.
    """

    def __init__(self, endpoint: str, context: zmq.Context | None = None, keys: CurveKeys | None = None) -> None:
        self.endpoint = endpoint
        self._ctx = zmq.Context.shadow(context.underlying) if context is not None else zmq.Context.instance()
        self._keys = keys
        self._sock: zmq.Socket | None = None
        self._closed = False
        self.sent = 0
        self.dropped = 0
        self.unsendable = 0

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.PUB)
            sock.setsockopt(zmq.SNDHWM, FLAME_SNDHWM)
            sock.setsockopt(zmq.LINGER, LINGER_MS)
            secure_client(sock, self._keys)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    async def send(self, frame: FlameFrame) -> None:
        if self._closed:
            return
        try:
            self._socket().send_multipart(flame_message(frame, sent_ns=time.time_ns()), flags=zmq.NOBLOCK, copy=False)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1
        except ProtocolError:  # a frame the wire refuses (cannot happen for a valid FlameFrame)
            self.unsendable += 1

    def close(self) -> None:
        self._closed = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None
