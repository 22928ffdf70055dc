"""A counting TCP relay on 127.0.0.1: every byte a client sends or receives, counted.

Put in front of the HTTPS proxy (``HTTPS_PROXY`` of one process) and of the emulator
(``STORAGE_EMULATOR_HOST``), it measures what that process moved over the network: what
TensorFlow's GCS filesystem and google-cloud-storage sent and received, TLS included. Threads
in the process that starts it; every socket has a timeout.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from tests.gcs.proxy import LOOPBACK

SOCKET_TIMEOUT_SECS = 120.0
_BUFFER = 1 << 20
_REQUEST_END = b" HTTP/1.1\r\n"  # the end of a request line (plain HTTP to the emulator)


class Relay:
    """Forwards each connection to ``127.0.0.1:upstream_port``, counting bytes both ways."""

    def __init__(self, upstream_port: int) -> None:
        """Listens on 127.0.0.1 and a free port (``self.port``); call ``close`` when done."""
        self.upstream_port = upstream_port
        self.sent = 0  # client -> upstream
        self.received = 0  # upstream -> client
        self.connections = 0
        self.requests = 0  # plain-HTTP request lines seen going upstream (not inside TLS)
        self._guard = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.5)
        self.port = int(self._listener.getsockname()[1])
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    @property
    def total(self) -> int:
        """Bytes both ways."""
        return self.sent + self.received

    def reset(self) -> None:
        """Starts counting from zero."""
        with self._guard:
            self.sent = self.received = self.connections = self.requests = 0

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._guard:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(SOCKET_TIMEOUT_SECS)
        try:
            upstream = socket.create_connection(
                (LOOPBACK, self.upstream_port), timeout=SOCKET_TIMEOUT_SECS
            )
        except OSError:
            client.close()
            return
        back = threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True)
        back.start()
        self._pump(client, upstream, True)
        back.join(SOCKET_TIMEOUT_SECS)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.close()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        tail = b""
        try:
            while True:
                data = src.recv(_BUFFER)
                if not data:
                    break
                dst.sendall(data)
                with self._guard:
                    if upstream:
                        self.sent += len(data)
                        self.requests += (tail + data).count(_REQUEST_END)
                    else:
                        self.received += len(data)
                tail = data[-(len(_REQUEST_END) - 1) :] if upstream else b""
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stops accepting and waits (bounded) for the open connections."""
        self._closing.set()
        self._listener.close()
        self._accepter.join(5)
        for thread in self._threads:
            thread.join(5)


@contextlib.contextmanager
def relay_to(upstream_port: int) -> Iterator[Relay]:
    """A ``Relay`` in front of ``upstream_port``, closed on exit."""
    relay = Relay(upstream_port)
    try:
        yield relay
    finally:
        relay.close()
