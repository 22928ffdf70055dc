"""Server-side copies and the lock object on ``gs://`` (the ``gcs`` extra), against the emulator.

Repairs run as separate processes with their network traffic counted by ``tests/gcs/relay.py``
(one relay in front of the HTTPS proxy for TensorFlow, one in front of the emulator for
google-cloud-storage), so "moved only the index, the step and the state file" is measured, not
taken from the report. The stream fallback is the real CLI with ``google.cloud.storage``
unimportable (``tests/gcs/without_client.py``). The lock is driven through the client itself.

What fake-gcs-server enforces, measured here and in tools/bench_gcs.py: ``ifGenerationMatch`` on
multipart uploads (what the client uses for objects under 8 MiB, so for the lock), not on
resumable uploads, deletes, rewrites or copies, nor ``ifSourceGenerationMatch`` on a rewrite.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from google.api_core import exceptions as api  # the gcs extra (make setup installs it)
from google.cloud import storage

from estimator_fix import errors
from estimator_fix.storage import atomic, gcs
from estimator_fix.storage.names import HOST, LOCK_NAME
from tests import gcs as gcs_testing
from tests.conftest import (
    REPO,
    TESTDATA,
    assert_int64_step,
    assert_same_tensors,
    cli_command,
    cli_env,
    run_cli,
    temporaries,
)
from tests.gcs.relay import Relay, relay_to

WITHOUT_CLIENT = str(REPO / "tests" / "gcs" / "without_client.py")
STEP = 100
PREFIX = f"model.ckpt-{STEP}"
FIXED = f"model.ckpt-fixed-{STEP}"
KERNEL_ELEMENTS = 2 * 1024 * 1024  # 8 MiB of float32: far above any request's overhead
gfile = tf.io.gfile


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def root(gcs_env: gcs_testing.Server, request: pytest.FixtureRequest) -> str:
    """This test's own prefix in the run's bucket."""
    return f"{gcs_env.root}/{request.node.originalname}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(gcs_env: gcs_testing.Server) -> Iterator[storage.Client]:
    """A client of the emulator; ``gcs.client()`` made afresh for this test's environment."""
    gcs.client.cache_clear()
    yield storage.Client()
    gcs.client.cache_clear()


def write_model(path: Path) -> int:
    """A checkpoint without a step (an 8 MiB kernel, a bias) and its state file; data bytes."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(7)
    tf.raw_ops.SaveV2(
        prefix=str(path / PREFIX),
        tensor_names=["dense/kernel", "dense/bias"],
        shape_and_slices=["", ""],
        tensors=[
            rng.standard_normal(KERNEL_ELEMENTS).astype(np.float32),
            rng.standard_normal(16).astype(np.float32),
        ],
    )
    (path / "checkpoint").write_text(
        f'model_checkpoint_path: "{PREFIX}"\nall_model_checkpoint_paths: "{PREFIX}"\n'
    )
    return sum(p.stat().st_size for p in path.glob(f"{PREFIX}.data-*"))


def upload(src: Path, dst: str) -> str:
    """A local directory's files uploaded to ``dst`` through gfile; returns ``dst``."""
    gfile.makedirs(dst)
    for p in sorted(src.iterdir()):
        gfile.copy(str(p), f"{dst}/{p.name}", overwrite=False)
    return dst


def digest(model_dir: str) -> dict[str, bytes]:
    """Every file of a gs:// or local directory with its bytes, through gfile."""
    out = {}
    for name in gfile.listdir(model_dir):
        if not name.endswith("/"):
            with gfile.GFile(f"{model_dir.rstrip('/')}/{name}", "rb") as f:
                out[name] = f.read()
    return out


@contextlib.contextmanager
def counted(server: gcs_testing.Server) -> Iterator[tuple[dict[str, str], Relay, Relay]]:
    """A child environment whose gs:// traffic goes through two counting relays."""
    with relay_to(server.proxy.port) as tf_relay, relay_to(server.emulator_port) as client_relay:
        env = server.client_env(proxy_port=tf_relay.port)
        env["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{client_relay.port}"
        yield env, tf_relay, client_relay


def run_repair(*args: str, env: dict[str, str], with_client: bool) -> Any:
    """``estimator-fix repair ARGS --json`` as a process, with or without the gcs extra."""
    command = (
        cli_command("repair", *args, "--json")
        if with_client
        else [sys.executable, WITHOUT_CLIENT, "repair", *args, "--json"]
    )
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=cli_env(**env),
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def lock_blob(client: storage.Client, model_dir: str) -> storage.Blob:
    bucket, name = gcs.split(f"{model_dir}/{LOCK_NAME}")
    return client.bucket(bucket).blob(name)


def read_lock(client: storage.Client, model_dir: str) -> tuple[dict[str, Any], int] | None:
    """The lock object's JSON and generation, or None when there is none."""
    blob = lock_blob(client, model_dir)
    bucket = client.bucket(blob.bucket.name)
    current = bucket.get_blob(blob.name)
    if current is None:
        return None
    return json.loads(current.download_as_bytes()), int(current.generation)


def foreign_lock(client: storage.Client, model_dir: str, *, expires: float) -> None:
    """Puts another run's lock object (another host) at ``model_dir``."""
    holder = gcs.Holder("estimator-fix", "alice", "other-host", 4242, "f" * 32, expires)
    lock_blob(client, model_dir).upload_from_string(holder.to_bytes())


# --- the copy ------------------------------------------------------------------------------------


def test_repair_with_the_extra_copies_inside_the_store(
    root: str, gcs_env: gcs_testing.Server, tmp_path: Path
) -> None:
    data_bytes = write_model(tmp_path / "model")
    model_dir = upload(tmp_path / "model", f"{root}/model")
    with counted(gcs_env) as (env, tf_relay, client_relay):
        doc = run_repair(f"--model_dir={model_dir}", f"--step={STEP}", env=env, with_client=True)
    assert (doc["copy_method"], doc["copied_bytes"]) == ("server_side", data_bytes)
    assert doc["worker_bytes"] == 0 and doc["linked"] is False
    # Measured: only the index, the step's shard, the state file and requests went through.
    assert tf_relay.total + client_relay.total < data_bytes / 8, (tf_relay.total, client_relay)
    assert client_relay.requests >= 3  # the lock, the source's metadata, a rewrite, ...
    assert doc["new_prefix"] == f"{model_dir}/{FIXED}"
    assert_int64_step(f"{model_dir}/{FIXED}", STEP)
    assert_same_tensors(f"{model_dir}/{PREFIX}", f"{model_dir}/{FIXED}")
    assert temporaries(model_dir) == [] and LOCK_NAME not in gfile.listdir(model_dir)


def test_repair_without_the_extra_streams_through_the_worker(
    root: str, gcs_env: gcs_testing.Server, tmp_path: Path
) -> None:
    data_bytes = write_model(tmp_path / "model")
    model_dir = upload(tmp_path / "model", f"{root}/model")
    with counted(gcs_env) as (env, tf_relay, client_relay):
        doc = run_repair(f"--model_dir={model_dir}", f"--step={STEP}", env=env, with_client=False)
    assert (doc["copy_method"], doc["copied_bytes"]) == ("stream", data_bytes)
    assert doc["worker_bytes"] == 2 * data_bytes
    assert tf_relay.total >= 2 * data_bytes  # down and up again, as the report says
    assert client_relay.total == 0  # no client, no lock object
    assert_int64_step(f"{model_dir}/{FIXED}", STEP)
    assert_same_tensors(f"{model_dir}/{PREFIX}", f"{model_dir}/{FIXED}")
    assert temporaries(model_dir) == []


def test_output_dir_on_gs_copies_inside_the_store(root: str, gcs_env: gcs_testing.Server) -> None:
    source = upload(TESTDATA / "int32_step", f"{root}/int32_step")
    before = digest(source)
    out = f"{root}/repaired"
    proc = run_cli("repair", f"--model_dir={source}", f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert "data files: copied inside the object store" in proc.stdout
    assert "0 B through this process" in proc.stdout
    assert digest(source) == before
    assert_int64_step(f"{out}/model.ckpt-6", 6)
    assert_same_tensors(f"{source}/model.ckpt-6", f"{out}/model.ckpt-6", skip=("global_step",))


def test_local_repair_reports_hard_links(tmp_path: Path) -> None:
    data_bytes = write_model(tmp_path / "model")
    proc = run_cli("repair", f"--model_dir={tmp_path / 'model'}", f"--step={STEP}", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["copy_method"], doc["copied_bytes"], doc["worker_bytes"]) == (
        "hard_link",
        data_bytes,
        0,
    )


def test_copy_of_a_missing_object_names_it(root: str, client: storage.Client) -> None:
    with pytest.raises(errors.PathNotFoundError) as e:
        atomic.carry(f"{root}/missing.data", f"{root}/copy.data")
    assert str(e.value).startswith(f"{root}/missing.data: not found") and e.value.exit_code == 1
    assert not gfile.exists(f"{root}/copy.data")


# --- the lock ------------------------------------------------------------------------------------


def test_emulator_enforces_generation_match_on_multipart_uploads(
    root: str, client: storage.Client
) -> None:
    """The premise of the lock tests: a small upload with ifGenerationMatch=0 fails if present."""
    blob = lock_blob(client, root)
    blob.upload_from_string(b"first", if_generation_match=0)
    with pytest.raises(api.PreconditionFailed):
        lock_blob(client, root).upload_from_string(b"second", if_generation_match=0)
    with pytest.raises(api.PreconditionFailed):
        lock_blob(client, root).upload_from_string(
            b"third", if_generation_match=blob.generation + 1
        )


def test_lock_object_while_held_and_gone_after(root: str, client: storage.Client) -> None:
    with gcs.lock(root):
        seen = read_lock(client, root)
        assert seen is not None
        doc = seen[0]
        assert (doc["owner"], doc["pid"]) == ("estimator-fix", os.getpid())
        assert doc["host"] and doc["user"]
        assert time.time() < doc["expires"] <= time.time() + gcs.LOCK_TTL_SECS
    assert read_lock(client, root) is None


def test_second_lock_is_refused(root: str, client: storage.Client) -> None:
    with gcs.lock(root):
        with pytest.raises(errors.LockedError) as e, gcs.lock(root):
            pass
        assert e.value.exit_code == 6 and str(e.value).startswith(f"{root}: another")
        assert read_lock(client, root) is not None  # the refused run did not remove ours
    assert read_lock(client, root) is None


def test_racing_locks_one_wins(root: str, client: storage.Client) -> None:
    outcomes: list[str] = []
    start = threading.Barrier(4)
    inside = threading.Event()

    def take() -> None:
        start.wait(10)
        try:
            with gcs.lock(root):
                outcomes.append("held")
                inside.wait(10)
        except errors.LockedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(outcomes) < 4 and time.monotonic() < deadline:
        if outcomes.count("refused") == 3:
            inside.set()
        time.sleep(0.05)
    inside.set()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["held", "refused", "refused", "refused"]


def test_lock_is_refreshed_while_held(root: str, client: storage.Client) -> None:
    with gcs.lock(root, ttl=2.0):
        first = read_lock(client, root)
        time.sleep(1.6)  # three refreshes, one every ttl / 4
        later = read_lock(client, root)
        assert first is not None and later is not None
        assert later[1] != first[1] and later[0]["expires"] > first[0]["expires"]
        assert later[0]["token"] == first[0]["token"]
    assert read_lock(client, root) is None


def test_lost_lock_is_not_deleted(root: str, client: storage.Client) -> None:
    """Another run took over while we stalled: our refresh sees it and our release keeps it."""
    with gcs.lock(root, ttl=1.0):
        foreign_lock(client, root, expires=time.time() + 600)
        time.sleep(0.8)  # a refresh (every 0.25 s) fails its precondition
    seen = read_lock(client, root)
    assert seen is not None and seen[0]["host"] == "other-host"


def test_expired_lock_is_taken_over(
    root: str, client: storage.Client, caplog: pytest.LogCaptureFixture
) -> None:
    foreign_lock(client, root, expires=time.time() - 5)
    with gcs.lock(root):
        seen = read_lock(client, root)
        assert seen is not None and seen[0]["pid"] == os.getpid()
    assert read_lock(client, root) is None
    assert "taking over a stale lock (held by alice@other-host pid 4242" in caplog.text


def test_lock_of_a_killed_run_on_this_host_is_taken_over(
    root: str, client: storage.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGKILLed run cannot release its lock; its pid on this host tells it is gone."""
    child = subprocess.Popen(["true"])
    child.wait(30)  # reaped: no process has its pid now
    dead_pid = child.pid
    holder = gcs.Holder("estimator-fix", "bob", HOST, dead_pid, "d" * 32, time.time() + 600)
    lock_blob(client, root).upload_from_string(holder.to_bytes())
    with gcs.lock(root):
        seen = read_lock(client, root)
        assert seen is not None and seen[0]["pid"] == os.getpid()
    assert f"held by bob@{HOST} pid {dead_pid}, a process that is gone" in caplog.text


def test_repair_cli_exits_6_while_locked(root: str, client: storage.Client) -> None:
    model_dir = upload(TESTDATA / "missing_step", f"{root}/missing_step")
    foreign_lock(client, model_dir, expires=time.time() + 600)
    before = digest(model_dir)
    proc = run_cli("repair", f"--model_dir={model_dir}")
    assert proc.returncode == 6, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"estimator-fix: error: {model_dir}: another")
    assert "alice@other-host pid 4242" in lines[0]
    assert digest(model_dir) == before


def test_repair_cli_takes_over_an_expired_lock(root: str, client: storage.Client) -> None:
    model_dir = upload(TESTDATA / "missing_step", f"{root}/missing_step")
    foreign_lock(client, model_dir, expires=time.time() - 60)
    proc = run_cli("repair", f"--model_dir={model_dir}")
    assert proc.returncode == 0, proc.stderr
    assert "taking over a stale lock (held by alice@other-host pid 4242" in proc.stderr
    assert read_lock(client, model_dir) is None
    assert tf.train.latest_checkpoint(model_dir) == f"{model_dir}/model.ckpt-fixed-6"


# --- bad input -----------------------------------------------------------------------------------


def test_lock_in_a_bucket_that_does_not_exist(client: storage.Client) -> None:
    model_dir = f"gs://no-such-bucket-{uuid.uuid4().hex[:8]}/model"
    with pytest.raises(errors.PathNotFoundError) as e, gcs.lock(model_dir):
        pass
    assert e.value.exit_code == 1
    assert str(e.value).startswith(f"{model_dir}/{LOCK_NAME}: not found")


def test_client_server_unreachable(root: str, gcs_env: gcs_testing.Server) -> None:
    """TensorFlow reaches the store, the client does not: one line, exit 1, nothing written."""
    model_dir = upload(TESTDATA / "missing_step", f"{root}/missing_step")
    before = digest(model_dir)
    with gcs_testing.refusing_port() as port:
        start = time.monotonic()
        proc = run_cli(
            "repair",
            f"--model_dir={model_dir}",
            env={"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"},
        )
        seconds = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"estimator-fix: error: {model_dir}/{LOCK_NAME}: the storage server")
    assert seconds < gcs.RETRY_DEADLINE_SECS + 60
    assert digest(model_dir) == before
