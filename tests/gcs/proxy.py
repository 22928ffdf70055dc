"""The loopback HTTPS proxy between TensorFlow's GCS filesystem and fake-gcs-server.

Run as a script, standard library only (``python tests/gcs/proxy.py --upstream_port=P --cert=...
--key=...``): it listens on 127.0.0.1 and a free port, prints the port on its first line of
standard output, and serves until its standard input closes (the parent is gone) or SIGTERM.

What it does to each connection: accepts ``CONNECT`` for ``GOOGLE_STORAGE_HOSTS`` port 443 only
(anything else gets 403 or 405), terminates TLS with the given certificate, and forwards every
request over plain HTTP to the emulator on ``127.0.0.1:P``, keeping the ``Host`` header (the
emulator routes ``storage.googleapis.com`` requests as ``/<bucket>/<object>`` downloads). It
handles what a plain tunnel gets wrong, each of which stalls TensorFlow until curl gives up:

* TensorFlow sends ``Transfer-Encoding: identity`` on empty POST/PUT bodies, which the emulator
  (Go's net/http) answers with 501; uploads carry ``Transfer-Encoding: chunked`` *and* a
  ``Content-Length``. Every request is read whole (chunked first, as RFC 9112 says) and
  forwarded with a ``Content-Length`` only.
* ``Expect: 100-continue`` is answered here, not forwarded.
* The resumable-upload ``Location`` header points at the emulator (``http://127.0.0.1:P/...``)
  or at ``http://www.googleapis.com/...``: it is rewritten to ``https://www.googleapis.com/...``
  so the upload comes back through this proxy.

Responses are read whole and re-framed with a ``Content-Length``. An emulator that does not
answer gets the client a 502. Every socket has a timeout, so no thread waits forever.
"""

from __future__ import annotations

import argparse
import http.client
import io
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable

# The host names TensorFlow's GCS filesystem connects to; nothing else is tunnelled.
GOOGLE_STORAGE_HOSTS = ("www.googleapis.com", "storage.googleapis.com")
JSON_API = "https://www.googleapis.com"
LOOPBACK = "127.0.0.1"
SOCKET_TIMEOUT_SECS = 60.0
_MAX_HEAD_LINES = 200
_MAX_LINE = 65536
# Never forwarded as received: framing is redone, the rest is per connection.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "content-length",
    }
)


class BadRequest(Exception):
    """A message the proxy cannot read; the connection is closed."""


def read_head(rfile: io.BufferedIOBase) -> tuple[str, list[tuple[str, str]]] | None:
    """The start line and headers of one HTTP message; None at a clean end of stream."""
    start = rfile.readline(_MAX_LINE)
    if not start:
        return None
    headers: list[tuple[str, str]] = []
    for _ in range(_MAX_HEAD_LINES):
        line = rfile.readline(_MAX_LINE)
        if line in (b"\r\n", b"\n"):
            return start.decode("latin-1").rstrip("\r\n"), headers
        if not line:
            raise BadRequest("connection closed inside the headers")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise BadRequest(f"malformed header line {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    raise BadRequest("too many header lines")


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first value of header ``name`` (lower case), or None."""
    return next((v for k, v in headers if k.lower() == name), None)


def read_exactly(rfile: io.BufferedIOBase, n: int) -> bytes:
    """``n`` bytes, or BadRequest if the stream ends first."""
    data = rfile.read(n)
    if len(data) != n:
        raise BadRequest(f"body ended after {len(data)} of {n} bytes")
    return data


def read_chunked(rfile: io.BufferedIOBase) -> bytes:
    """A chunked body, decoded; trailers are read and dropped."""
    body = bytearray()
    while True:
        size_line = rfile.readline(_MAX_LINE)
        if not size_line:
            raise BadRequest("connection closed inside a chunked body")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            for _ in range(_MAX_HEAD_LINES):
                if rfile.readline(_MAX_LINE) in (b"\r\n", b"\n", b""):
                    return bytes(body)
            raise BadRequest("too many trailer lines")
        body += read_exactly(rfile, size)
        rfile.readline(_MAX_LINE)  # the CRLF after the chunk


def send(
    wfile: io.BufferedIOBase, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    """One HTTP/1.1 response, exactly as given."""
    head = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers), "", ""]
    wfile.write("\r\n".join(head).encode("latin-1") + body)
    wfile.flush()


def send_error(wfile: io.BufferedIOBase, status: int, message: str) -> None:
    """A short plain-text error response that closes the connection."""
    body = (message + "\n").encode()
    reason = http.client.responses.get(status, "Error")
    send(wfile, status, reason, [("Content-Length", str(len(body))), ("Connection", "close")], body)


def public_location(location: str, internal: str) -> str:
    """A ``Location`` the emulator wrote, as the real service writes it: https, a Google host.

    The emulator builds it from ``-external-url`` (``internal``, ``http://127.0.0.1:P``) or from
    the request's host with its own scheme (``http://www.googleapis.com/...``); either way the
    client must come back through the proxy. Does not perform I/O.
    """
    if location.startswith(internal + "/"):
        return JSON_API + location[len(internal) :]
    for host in GOOGLE_STORAGE_HOSTS:
        if location.startswith(f"http://{host}/"):
            return "https" + location[len("http") :]
    return location


class ProxyServer(socketserver.ThreadingTCPServer):
    """A thread per connection, on 127.0.0.1 and a free port."""

    daemon_threads = True

    def __init__(
        self,
        upstream_port: int,
        context: ssl.SSLContext,
        log: Callable[[str], None],
        *,
        verbose: bool,
    ) -> None:
        super().__init__((LOOPBACK, 0), ProxyHandler)
        self.upstream_port = upstream_port
        self.context = context
        self.log = log
        self.verbose = verbose


class ProxyHandler(socketserver.StreamRequestHandler):
    """One client connection: ``CONNECT`` to a Google storage host, then requests over TLS."""

    server: ProxyServer

    def handle(self) -> None:
        self.connection.settimeout(SOCKET_TIMEOUT_SECS)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            head = read_head(self.rfile)
            if head is None:
                return
            method, _, rest = head[0].partition(" ")
            target = rest.partition(" ")[0]
            host, _, port = target.rpartition(":")
            if method != "CONNECT":
                send_error(self.wfile, 405, "this proxy only tunnels CONNECT")
                return
            if host not in GOOGLE_STORAGE_HOSTS or port != "443":
                self.server.log(f"refused CONNECT {target}")
                send_error(self.wfile, 403, f"not a Google storage host: {target}")
                return
            send(self.wfile, 200, "Connection established", [], b"")
            if self.server.verbose:
                self.server.log(f"CONNECT {target}")
            with self.server.context.wrap_socket(self.connection, server_side=True) as tls:
                self._serve(tls)
        except (OSError, BadRequest, ValueError) as e:
            self.server.log(f"connection ended: {type(e).__name__}: {e}")

    def _serve(self, tls: ssl.SSLSocket) -> None:
        rfile, wfile = tls.makefile("rb"), tls.makefile("wb")
        while True:
            head = read_head(rfile)
            if head is None:
                return
            start, headers = head
            method, path, version = start.split(" ", 2)
            if (header(headers, "expect") or "").lower() == "100-continue":
                send(wfile, 100, "Continue", [], b"")
            length = header(headers, "content-length")
            encoding = (header(headers, "transfer-encoding") or "").lower()
            # Uploads come as "chunked" with a Content-Length: chunked wins (RFC 9112).
            if encoding.endswith("chunked"):
                body = read_chunked(rfile)
            elif length is not None:
                body = read_exactly(rfile, int(length))
            else:  # "identity" on an empty body, or no framing at all: nothing follows
                body = b""
            close = version == "HTTP/1.0" or (header(headers, "connection") or "") == "close"
            self._forward(wfile, method, path, headers, body, close=close)
            if close:
                return

    def _forward(
        self,
        wfile: io.BufferedIOBase,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        close: bool,
    ) -> None:
        upstream = http.client.HTTPConnection(
            LOOPBACK, self.server.upstream_port, timeout=SOCKET_TIMEOUT_SECS
        )
        try:
            upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP:
                    upstream.putheader(name, value)
            if body or method in ("POST", "PUT", "PATCH"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            data = response.read()
        except OSError as e:
            self.server.log(f"{method} {path}: emulator unreachable: {e}")
            send_error(wfile, 502, f"emulator unreachable: {e}")
            raise
        finally:
            upstream.close()
        if self.server.verbose:
            self.server.log(f"{method} {path} [{len(body)} B] -> {response.status} [{len(data)} B]")
        internal = f"http://{LOOPBACK}:{self.server.upstream_port}"
        out: list[tuple[str, str]] = []
        for name, value in response.getheaders():
            lower = name.lower()
            if lower == "location":
                out.append((name, public_location(value, internal)))
            elif lower not in _HOP_BY_HOP or (lower == "content-length" and method == "HEAD"):
                out.append((name, value))
        if method != "HEAD" and response.status not in (204, 304):
            out.append(("Content-Length", str(len(data))))
        out.append(("Connection", "close" if close else "keep-alive"))
        send(wfile, response.status, response.reason, out, data)


def serve(upstream_port: int, cert: str, key: str, *, verbose: bool) -> int:
    """Serves until standard input closes or SIGTERM; the port goes to standard output first."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    context.num_tickets = 0  # TensorFlow opens a connection per request and resumes no session
    log_lock = threading.Lock()

    def log(message: str) -> None:
        with log_lock:
            now = time.time()
            stamp = f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now * 1000) % 1000:03d}"
            print(f"{stamp} {message}", file=sys.stderr, flush=True)

    server = ProxyServer(upstream_port, context, log, verbose=verbose)

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()  # returns when the parent closes the pipe or dies
        stop()

    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=watch_stdin, daemon=True).start()
    print(server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--upstream_port", type=int, required=True, help="the emulator's port")
    parser.add_argument("--cert", required=True, help="PEM certificate for the Google hosts")
    parser.add_argument("--key", required=True, help="its PEM private key")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    return serve(args.upstream_port, args.cert, args.key, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
