"""The live channel: progress and output chunks from workers to their dispatcher, and
from each dask task that runs one job word that its job starts and, as it ends, its
outcome (sooner than through the scheduler; dask gets the outcome as well). A dask
slot's loop (``daskloop``) connects here too: its first message (``"serve"`` and its
token) hands its connection over to the dispatcher's ``WorkerHub`` (``on_worker``),
which then sends it jobs as to a local worker.

Workers never open the queue directory. A dispatcher listens on a TCP socket; a worker
process, local (loky) or remote (dask), connects once and sends small messages
(``multiprocessing.connection`` framing, authenticated with a random key by its
challenge/response). The dispatcher keeps the latest progress and the new output per
job in memory and writes them to the store about once a second.

Anyone who can reach the port can connect, so a peer is a stranger until it has
answered the challenge: each is authenticated in a thread of its own, within
``AUTH_TIMEOUT``, and at most ``MAX_UNAUTHENTICATED`` are held at once (more are closed
unread). A connection that sends nothing, or garbage, costs the accept loop nothing.
A worker's connect and handshake have a deadline too: if the dispatcher cannot be
reached in time the job runs on without live updates (its whole log is stored when it
ends), and the worker tries again a while later.
"""

from __future__ import annotations

import logging
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import (
    Connection,
    Listener,
    address_type,
    answer_challenge,
    deliver_challenge,
)
from typing import Any

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # seconds for a worker to reach its dispatcher and authenticate
AUTH_TIMEOUT = 5.0  # seconds a peer of the channel has to answer the challenge
MAX_UNAUTHENTICATED = 32  # peers being authenticated at once; more are closed at once
RETRY_AFTER = 10.0  # a worker that could not connect tries again after this (then doubling)
RETRY_AFTER_MAX = 600.0


class _Handshake:
    """``send_bytes``/``recv_bytes`` of ``multiprocessing.connection``'s framing over a
    socket, each within what is left of one deadline: what ``deliver_challenge`` and
    ``answer_challenge`` need. ``Connection`` itself reads with no timeout, so a peer
    that sends nothing would hold it forever."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._deadline = time.monotonic() + timeout

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the channel handshake took too long")
        self._sock.settimeout(left)

    def send_bytes(self, data: bytes) -> None:
        self._arm()
        self._sock.sendall(struct.pack("!i", len(data)) + data)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        (size,) = struct.unpack("!i", self._recv_exactly(4))
        # the handshake's messages are short: a negative (8-byte) or long size is garbage
        if size < 0 or (maxlength is not None and size > maxlength):
            raise OSError(f"bad message length {size} in the channel handshake")
        return self._recv_exactly(size)

    def _recv_exactly(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            self._arm()
            chunk = self._sock.recv(n - got)
            if not chunk:
                raise EOFError("the peer closed the channel during the handshake")
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)


def _connection(sock: socket.socket) -> Connection:
    """An authenticated socket as a blocking ``Connection`` (which owns it from now on).
    Small messages go out at once (no Nagle): a slot's loop and its dispatcher exchange
    a message per job, each waiting for the other's."""
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Connection(sock.detach())


def authenticate_peer(sock: socket.socket, authkey: bytes, *,
                      timeout: float = AUTH_TIMEOUT) -> Connection:
    """The server side: challenge the peer on ``sock``, then answer its challenge, all
    within ``timeout`` seconds. Raises (``AuthenticationError``, ``OSError``,
    ``EOFError``, ``TimeoutError``) if it does not prove it has the key in time."""
    handshake = _Handshake(sock, timeout)
    deliver_challenge(handshake, authkey)  # type: ignore[arg-type]
    answer_challenge(handshake, authkey)  # type: ignore[arg-type]
    return _connection(sock)


def connect(address: tuple[str, int], authkey: bytes, *,
            timeout: float = CONNECT_TIMEOUT) -> Connection:
    """The worker side: connect to a channel and authenticate within ``timeout`` seconds
    (``multiprocessing.connection.Client`` has no timeout: a dispatcher behind a firewall
    that drops packets, or one slow to answer, would stall the job)."""
    deadline = time.monotonic() + timeout
    sock = socket.create_connection(address, timeout=timeout)
    try:
        handshake = _Handshake(sock, max(deadline - time.monotonic(), 0.001))
        answer_challenge(handshake, authkey)  # type: ignore[arg-type]
        deliver_challenge(handshake, authkey)  # type: ignore[arg-type]
        return _connection(sock)
    except BaseException:
        sock.close()
        raise


class ChannelServer:
    """Accepts worker connections and gathers their messages (in the dispatcher)."""

    def __init__(self, host: str = "127.0.0.1", *, advertise: str | None = None,
                 auth_timeout: float = AUTH_TIMEOUT) -> None:
        self.authkey = secrets.token_bytes(16)
        self.auth_timeout = auth_timeout
        self._socket = socket.create_server((host, 0), backlog=64)
        # the address workers connect to: a listener on 0.0.0.0 is reached at a real address
        self.address: tuple[str, int] = (advertise or host, self._socket.getsockname()[1])
        self._lock = threading.Lock()
        self._progress: dict[str, dict[str, Any]] = {}
        self._logs: dict[str, list[str]] = {}
        self._started: dict[str, int] = {}  # job id -> claim, of dask tasks that started
        self.starts_seen = False  # whether any dask task ever said it started
        self._ended: dict[str, tuple[int, bytes]] = {}  # job id -> (claim, pickled outcome)
        self.on_ended: Callable[[], None] | None = None  # called when an outcome arrives
        # given the connection of a dask slot's loop (its first message says so) with the
        # loop's token and what it says of itself; the connection is no longer read here
        self.on_worker: Callable[[str, Connection, Any], None] | None = None
        self._closed = False
        self._conns: list[Connection] = []
        self._unauthenticated = 0  # peers being authenticated now
        self.refused = 0  # peers closed unread because too many were being authenticated
        threading.Thread(target=self._accept, name="nbqueue-channel", daemon=True).start()

    def _accept(self) -> None:
        # only accepts: a peer is authenticated in a thread of its own, so one that sends
        # nothing (or garbage, slowly) holds up no one
        while not self._closed:
            try:
                sock, _ = self._socket.accept()
            except OSError:
                if self._closed:
                    return
                log.debug("channel: accept failed", exc_info=True)
                time.sleep(0.05)  # out of file descriptors, say: do not spin
                continue
            with self._lock:
                if self._closed:
                    sock.close()
                    return
                admitted = self._unauthenticated < MAX_UNAUTHENTICATED
                if admitted:
                    self._unauthenticated += 1
                else:
                    self.refused += 1
            if not admitted:
                sock.close()
                continue
            threading.Thread(target=self._admit, args=(sock,), name="nbqueue-channel-reader",
                             daemon=True).start()

    def _admit(self, sock: socket.socket) -> None:
        try:
            conn = authenticate_peer(sock, self.authkey, timeout=self.auth_timeout)
        except Exception as exc:  # a stranger, or a peer too slow: close it
            log.debug("channel: a peer did not authenticate: %r", exc)
            sock.close()
            return
        finally:
            with self._lock:
                self._unauthenticated -= 1
        with self._lock:
            if self._closed:
                conn.close()
                return
            self._conns.append(conn)
        handed = False
        try:
            handed = self._read(conn)
        finally:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            if not handed:
                conn.close()

    def _read(self, conn: Connection) -> bool:
        """Read a worker's messages until it leaves; True if the connection was handed
        over (a dask slot's loop: ``on_worker``)."""
        while not self._closed:
            try:
                kind, job_id, value = conn.recv()
            except (EOFError, OSError):
                return False
            except Exception:
                log.debug("bad channel message", exc_info=True)
                continue
            if kind == "serve":
                if self.on_worker is None:
                    return False
                with self._lock:
                    if conn in self._conns:
                        self._conns.remove(conn)
                self.on_worker(job_id, conn, value)
                return True
            with self._lock:
                if kind == "progress":
                    self._progress[job_id] = value
                elif kind == "log":
                    self._logs.setdefault(job_id, []).append(value)
                elif kind == "started":
                    self._started[job_id] = value
                    self.starts_seen = True
                elif (kind == "ended" and isinstance(value, tuple) and len(value) == 2
                      and self._started.get(job_id) == value[0]):
                    # (a job discarded meanwhile, stopped or settled, keeps nothing here)
                    self._ended[job_id] = value
            if kind == "ended" and self.on_ended is not None:
                self.on_ended()
        return False

    def drain(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Take what arrived since the last drain."""
        with self._lock:
            progress, logs = self._progress, self._logs
            self._progress, self._logs = {}, {}
        return progress, {k: "".join(v) for k, v in logs.items()}

    def started(self, job_id: str, claim: int) -> bool:
        """Whether this claim of the job said it started (a dask task, before the job's
        code runs)."""
        return self._started.get(job_id) == claim

    def ended(self, job_id: str, claim: int) -> bytes | None:
        """The pickled outcome this claim of the job sent (a dask task, as it ended), if
        it came; the task returns it to dask as well, so one that did not come is not lost."""
        with self._lock:
            sent = self._ended.get(job_id)
            if sent is None or sent[0] != claim:
                return None
            del self._ended[job_id]
        return sent[1]

    def has_ended(self, job_id: str, claim: int) -> bool:
        sent = self._ended.get(job_id)
        return sent is not None and sent[0] == claim

    def discard(self, job_id: str) -> None:
        if not (self._progress or self._logs or self._started or self._ended):
            return  # nothing kept (the usual case for local workers): no lock
        with self._lock:
            self._progress.pop(job_id, None)
            self._logs.pop(job_id, None)
            self._started.pop(job_id, None)
            self._ended.pop(job_id, None)

    @property
    def endpoint(self) -> tuple[tuple[str, int], bytes]:
        return self.address, self.authkey

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        close_accepting(self._socket)
        for conn in conns:
            try:
                conn.close()
            except OSError:
                pass


def close_accepting(sock: socket.socket) -> None:
    """Close a listening TCP socket whose accepting thread may be blocked in ``accept()``:
    closing the socket does not wake that call, a connection does."""
    try:
        host, port = sock.getsockname()[:2]
        with socket.create_connection(("127.0.0.1" if host in ("0.0.0.0", "") else host, port),
                                      timeout=1.0):
            pass
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def close_listener(listener: Listener) -> None:
    """Close a listener whose accepting thread may be blocked in ``accept()``: closing the
    socket does not wake that call, a connection does (it fails authentication, and the
    thread, seeing its owner closed, returns)."""
    address = listener.address
    try:
        with socket.socket(getattr(socket, address_type(address))) as poke:
            poke.settimeout(1.0)
            poke.connect(address)
    except OSError:
        pass
    try:
        listener.close()
    except OSError:
        pass


class ChannelClient:
    """A worker's connection to its dispatcher; never raises into job code."""

    _clients: dict[tuple[Any, bytes], ChannelClient] = {}
    _clients_lock = threading.Lock()

    def __init__(self, address: tuple[str, int], authkey: bytes, *,
                 connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self._address = address
        self._authkey = authkey
        self._connect_timeout = connect_timeout
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._retry_at = 0.0  # while connecting failed: not before this (monotonic)
        self._backoff = RETRY_AFTER

    @classmethod
    def get(cls, endpoint: tuple[tuple[str, int], bytes] | None) -> ChannelClient | None:
        if endpoint is None:
            return None
        address, authkey = endpoint
        key = (tuple(address), authkey)
        with cls._clients_lock:
            client = cls._clients.get(key)
            if client is None:
                client = cls._clients[key] = cls(tuple(address), authkey)  # type: ignore[arg-type]
            return client

    def send(self, kind: str, job_id: str, value: Any) -> None:
        with self._lock:
            try:
                if self._conn is None:
                    if time.monotonic() < self._retry_at:
                        return  # no live updates for now; the whole log is stored at the end
                    self._conn = connect(self._address, self._authkey,
                                         timeout=self._connect_timeout)
                    self._backoff = RETRY_AFTER
                self._conn.send((kind, job_id, value))
            except Exception as exc:  # unreachable, too slow, or gone: go on without
                log.debug("channel to %s: %r; no live updates for %.0fs", self._address, exc,
                          self._backoff)
                conn, self._conn = self._conn, None
                if conn is not None:
                    try:
                        conn.close()
                    except OSError:
                        pass
                self._retry_at = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, RETRY_AFTER_MAX)
