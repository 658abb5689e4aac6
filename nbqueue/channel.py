"""The live channel: progress and output chunks from workers to their dispatcher.

Workers never open the queue directory. A dispatcher listens on a TCP socket
(``multiprocessing.connection``, authenticated with a random key); a worker
process, local (loky) or remote (dask), connects once and sends small messages.
The dispatcher keeps the latest progress and the new output per job in memory
and writes them to the store about once a second.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
from multiprocessing.connection import Client, Connection, Listener, address_type
from typing import Any

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # seconds for a worker to reach its dispatcher


class ChannelServer:
    """Accepts worker connections and gathers their messages (in the dispatcher)."""

    def __init__(self, host: str = "127.0.0.1", *, advertise: str | None = None) -> None:
        self.authkey = secrets.token_bytes(16)
        self._listener = Listener((host, 0), authkey=self.authkey)
        # the address workers connect to: a listener on 0.0.0.0 is reached at a real address
        self.address: tuple[str, int] = (advertise or host, self._listener.address[1])
        self._lock = threading.Lock()
        self._progress: dict[str, dict[str, Any]] = {}
        self._logs: dict[str, list[str]] = {}
        self._closed = False
        self._conns: list[Connection] = []
        threading.Thread(target=self._accept, name="nbqueue-channel", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn = self._listener.accept()
            except Exception:  # closed, or a peer without the key
                if self._closed:
                    return
                continue
            self._conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), name="nbqueue-channel-reader",
                             daemon=True).start()

    def _read(self, conn: Connection) -> None:
        while not self._closed:
            try:
                kind, job_id, value = conn.recv()
            except (EOFError, OSError):
                return
            except Exception:
                log.debug("bad channel message", exc_info=True)
                continue
            with self._lock:
                if kind == "progress":
                    self._progress[job_id] = value
                elif kind == "log":
                    self._logs.setdefault(job_id, []).append(value)

    def drain(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Take what arrived since the last drain."""
        with self._lock:
            progress, logs = self._progress, self._logs
            self._progress, self._logs = {}, {}
        return progress, {k: "".join(v) for k, v in logs.items()}

    def discard(self, job_id: str) -> None:
        if not (self._progress or self._logs):  # nothing kept (the usual case): no lock
            return
        with self._lock:
            self._progress.pop(job_id, None)
            self._logs.pop(job_id, None)

    @property
    def endpoint(self) -> tuple[tuple[str, int], bytes]:
        return self.address, self.authkey

    def close(self) -> None:
        self._closed = True
        close_listener(self._listener)
        for conn in self._conns:
            try:
                conn.close()
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

    def __init__(self, address: tuple[str, int], authkey: bytes) -> None:
        self._address = address
        self._authkey = authkey
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._broken = False

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
            if self._broken:
                return
            try:
                if self._conn is None:
                    # Client() has no timeout: a dispatcher behind a firewall that drops
                    # packets would stall the job for minutes. Give up after a few seconds.
                    socket.create_connection(self._address, timeout=CONNECT_TIMEOUT).close()
                    self._conn = Client(self._address, authkey=self._authkey)
                self._conn.send((kind, job_id, value))
            except Exception:  # the dispatcher is gone: the job goes on without live updates
                self._broken = True
                self._conn = None
