"""Strangers on the live channel: connections that never authenticate (silent, garbage,
a huge length prefix) hold up neither the dispatcher's channel nor the jobs that print.

Real queues with real workers (loky, and a one-worker dask ``LocalCluster``), real TCP
connections to the dispatcher's channel. Timeouts are generous deadlines: a channel
that a stranger could block would hit them.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import jobs
import pytest
from conftest import local_dask_client, wait_for

import nbqueue
from nbqueue.channel import MAX_UNAUTHENTICATED, ChannelClient, ChannelServer, connect


class Strangers:
    """Connections to a channel that never authenticate: silent ones, ones that send
    garbage (and keep sending), one that announces a huge message."""

    def __init__(self, address: tuple[str, int], *, silent: int = 10, garbage: int = 5) -> None:
        self.socks: list[socket.socket] = []
        self._stop = threading.Event()
        for _ in range(silent):
            self.socks.append(socket.create_connection(address, timeout=30))
        for i in range(garbage):
            s = socket.create_connection(address, timeout=30)
            self.socks.append(s)
            threading.Thread(target=self._babble, args=(s, i), daemon=True).start()
        huge = socket.create_connection(address, timeout=30)
        huge.sendall(struct.pack("!i", 0x7FFFFFF0))  # "2 GB follow", and nothing does
        self.socks.append(huge)
        longer = socket.create_connection(address, timeout=30)
        longer.sendall(struct.pack("!i", -1) + struct.pack("!Q", 2 ** 60))  # the 8-byte form
        self.socks.append(longer)

    def _babble(self, sock: socket.socket, seed: int) -> None:
        junk = bytes((seed * 37 + i * 11) % 256 for i in range(64))
        while not self._stop.wait(0.05):
            try:
                sock.sendall(junk)
            except OSError:  # the channel closed it: as it should
                return

    def close(self) -> None:
        self._stop.set()
        for s in self.socks:
            s.close()


def channel_of(q: nbqueue.Queue) -> ChannelServer:
    assert q.dispatcher is not None
    channel = q.dispatcher._channel
    assert channel is not None
    return channel


def live_despite_strangers(q: nbqueue.Queue, tmp_path: Path) -> None:
    """With strangers on the channel, a job's output and progress arrive while it runs,
    and jobs that print run to their end."""
    strangers = Strangers(channel_of(q).address)
    try:
        gate = tmp_path / "gate"
        printer = q.submit(jobs.print_then_wait, gate, key=None)
        reporter = q.submit(jobs.progress_then_wait, gate, key=None)
        wait_for(lambda: "first line" in printer.logs, timeout=90,
                 message="the printing job's first line, live")
        wait_for(lambda: reporter.progress is not None, timeout=90,
                 message="the reporting job's progress, live")
        assert printer.state == "running" and reporter.state == "running"
        assert "last line" not in printer.logs
        assert reporter.progress["message"] == "a quarter"
        gate.touch()
        assert printer.result(timeout=90) == "printed"
        assert reporter.result(timeout=90) == "progressed"
        chatty = q.map(jobs.chatty, [3, 4], key=None)
        assert [h.result(timeout=90) for h in chatty] == [3, 4]
        assert chatty[1].logs == "line 0\nline 1\nline 2\nline 3\n"
        assert "first line" in printer.logs and "last line" in printer.logs
    finally:
        strangers.close()


def test_strangers_do_not_hold_up_live_updates(queue, tmp_path):
    live_despite_strangers(queue, tmp_path)


def test_strangers_are_closed_and_a_worker_still_gets_in(tmp_path):
    channel = ChannelServer(auth_timeout=0.5)
    try:
        silent = socket.create_connection(channel.address, timeout=60)
        garbage = socket.create_connection(channel.address, timeout=60)
        garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

        def read_to_end(s: socket.socket) -> bytes:
            data = b""
            try:
                while chunk := s.recv(4096):  # socket.timeout: the channel kept it open
                    data += chunk
            except ConnectionResetError:  # closed with what it sent still unread
                pass
            return data

        assert b"#CHALLENGE#" in read_to_end(garbage)  # its challenge, then closed
        assert read_to_end(silent)  # the challenge, then closed after auth_timeout
        conn = connect(channel.address, channel.authkey)  # a worker still gets in
        conn.send(("log", "job-1", "hello\n"))
        wait_for(lambda: channel._logs, timeout=60, message="the worker's message")
        assert channel.drain()[1] == {"job-1": "hello\n"}
        conn.close()
        silent.close()
        garbage.close()
    finally:
        channel.close()


def test_wrong_key_is_refused(tmp_path):
    channel = ChannelServer()
    try:
        with pytest.raises(Exception, match="digest"):
            connect(channel.address, b"not the key" * 2)
    finally:
        channel.close()


def test_too_many_strangers_cost_live_updates_not_the_job(queue, tmp_path):
    channel = channel_of(queue)
    silent = [socket.create_connection(channel.address, timeout=60)
              for _ in range(MAX_UNAUTHENTICATED + 5)]
    try:
        wait_for(lambda: channel.refused >= 5, timeout=60, message="strangers past the cap "
                 "to be refused")
        h = queue.submit(jobs.chatty, 3, key=None)  # its worker is refused too, at once
        assert h.result(timeout=90) == 3
        assert h.logs == "line 0\nline 1\nline 2\n"  # the final log is stored all the same
    finally:
        for s in silent:
            s.close()


def test_a_dispatcher_that_never_answers_costs_a_worker_no_hang():
    # a listener that accepts (the kernel does) but never speaks: the handshake times out
    with socket.create_server(("127.0.0.1", 0)) as mute:
        client = ChannelClient(mute.getsockname()[:2], b"k" * 16, connect_timeout=0.5)
        sender = threading.Thread(target=client.send, args=("log", "job-1", "x"), daemon=True)
        sender.start()
        sender.join(timeout=60)
        assert not sender.is_alive(), "a worker's send hung on a dispatcher that never answers"
        client.send("log", "job-1", "y")  # backing off: returns at once, no second attempt
        assert client._conn is None


# -- dask ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real LocalCluster of one worker process (two threads) on 127.0.0.1."""
    with local_dask_client(tmp_path_factory.mktemp("dask"), n_workers=1,
                           threads_per_worker=2) as client:
        yield client


def test_strangers_on_a_dask_queue(dask_client, tmp_path):
    q = nbqueue.Queue(tmp_path / "q", workers=2, executor=dask_client)
    try:
        live_despite_strangers(q, tmp_path)
    finally:
        q.stop()
