"""The CLI, the fleet and the Beam pipeline on ``gs://``: TensorFlow's own GCS filesystem talking
to fake-gcs-server through the loopback HTTPS proxy of ``tests/gcs`` (real HTTP, real objects).

Every CLI run is a separate process that gets the server's client environment through
``run_cli`` (the ``gcs_env`` fixture puts it in ``os.environ`` for the test). Each test works
under a prefix of its own in the run's bucket. What is on the server is read back through the
emulator's JSON API directly (``Server.object_names``) or through ``tf.io.gfile`` in this
process, never through the code under test. Bad input (a bucket that does not exist, a missing
object, a server that refuses, fails or stalls) must give one error line naming the path, exit
code 1, nothing written, and no hang: each failure is timed against a bound that follows from
``GCS_SETTINGS`` (one retry, 10 s of idle time per request). The tests marked slow export,
run the Beam pipeline, kill repairs or wait for a stall.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from estimator_fix import scan
from estimator_fix.storage import names
from estimator_fix.types import Verdict
from tests import gcs
from tests.conftest import (
    REPO,
    TESTDATA,
    assert_int64_step,
    assert_same_tensors,
    cli_command,
    manifest,
    read_checkpoint,
    run_cli,
    temporaries,
    tree_entries,
)

MANIFEST = manifest()
MODELS = str(TESTDATA / "models.py")
STATE = "checkpoint"
SOURCE = "model.ckpt-6"
FIXED = "model.ckpt-fixed-6"
FIXED_FILES = {f"{FIXED}.index", f"{FIXED}.data-00000-of-00002", f"{FIXED}.data-00001-of-00002"}
# What ``repair --output_dir`` writes for the missing_step fixture: the target checkpoint only.
OUTPUT_FILES = {
    STATE,
    f"{SOURCE}.index",
    f"{SOURCE}.data-00000-of-00002",
    f"{SOURCE}.data-00001-of-00002",
}
# A failure that needs no waiting: the TensorFlow import, one retry with its back-off, on a
# loaded 2-core machine. A stalled request: GCS_REQUEST_IDLE_TIMEOUT_SECS twice on top.
FAST_FAILURE_SECS = 60.0
STALL_FAILURE_SECS = 60.0 + 2 * int(gcs.GCS_SETTINGS["GCS_REQUEST_IDLE_TIMEOUT_SECS"])
gfile = tf.io.gfile


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def root(gcs_env: gcs.Server, request: pytest.FixtureRequest) -> str:
    """This test's own prefix in the run's bucket (nothing there yet)."""
    return f"{gcs_env.root}/{request.node.originalname}-{uuid.uuid4().hex[:8]}"


def put_tree(src: Path, dst: str) -> str:
    """Uploads a local directory tree to ``dst`` through gfile; returns ``dst``."""
    for dirpath, _, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        target = dst if rel == "." else "/".join((dst, *Path(rel).parts))
        gfile.makedirs(target)
        for name in filenames:
            gfile.copy(os.path.join(dirpath, name), f"{target}/{name}", overwrite=False)
    return dst


def put_fixture(root: str, fixture: str) -> str:
    """A testdata fixture uploaded under ``root``; the model directory's gs:// path."""
    return put_tree(TESTDATA / fixture, f"{root}/{fixture}")


def digest(root: str) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes, read through gfile."""
    out: dict[str, bytes] = {}
    for rel, is_dir in tree_entries(root).items():
        if not is_dir:
            with gfile.GFile(f"{root}/{rel}", "rb") as f:
                out[rel] = f.read()
    return out


def object_names(server: gcs.Server, path: str) -> list[str]:
    """The emulator's own list of the objects under ``path`` (a gs:// path in its bucket)."""
    prefix = path[len(server.root) + 1 :]
    return server.object_names(prefix)


def without(doc: Any, *roots: str) -> Any:
    """A JSON document with each root replaced by ``<root>``, so two back ends compare equal."""
    text = json.dumps(doc)
    for r in roots:
        text = text.replace(r, "<root>")
    return json.loads(text)


def timed_cli(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``run_cli`` and its wall time in seconds."""
    start = time.monotonic()
    proc = run_cli(*args, env=env)
    return proc, time.monotonic() - start


def assert_one_error_line(proc: subprocess.CompletedProcess[str], path: str) -> str:
    """Exit 1, and stderr is one ``estimator-fix: error:`` line that names ``path``."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"estimator-fix: error: {path}"), lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


# --- the machinery itself -------------------------------------------------------------------------


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # state LISTEN
                address, port = fields[1].split(":")
                if len(address) == 8:  # IPv4, little-endian hex
                    host = socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1])
                else:
                    host = f"ipv6:{address}"
                out.append((host, int(port, 16)))
    return sorted(out)


def test_everything_listens_on_loopback_only(gcs_server: gcs.Server) -> None:
    assert _listening(gcs_server.emulator.pid) == [("127.0.0.1", gcs_server.emulator_port)]
    assert _listening(gcs_server.proxy.process.pid) == [("127.0.0.1", gcs_server.proxy.port)]


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        ("CONNECT example.com:443 HTTP/1.1", 403),
        ("CONNECT www.googleapis.com:80 HTTP/1.1", 403),
        ("CONNECT 127.0.0.1:443 HTTP/1.1", 403),
        ("GET http://www.googleapis.com/storage/v1/b HTTP/1.1", 405),
    ],
)
def test_proxy_tunnels_only_google_storage_over_tls(
    gcs_server: gcs.Server, request_line: str, status: int
) -> None:
    with socket.create_connection(("127.0.0.1", gcs_server.proxy.port), timeout=10) as conn:
        conn.sendall(f"{request_line}\r\nHost: x\r\n\r\n".encode())
        answer = conn.recv(4096).decode("latin-1")
    assert answer.startswith(f"HTTP/1.1 {status} "), answer


# --- scan, repair ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "exit_code"), [("missing_step", 3), ("dnn_classifier", 0)])
def test_scan_cli_gives_the_local_report(
    root: str, tmp_path: Path, fixture: str, exit_code: int
) -> None:
    model_dir = put_fixture(root, fixture)
    local = tmp_path / fixture
    put_tree(TESTDATA / fixture, str(local))
    expected = run_cli("scan", f"--model_dir={local}", "--json")
    got = run_cli("scan", f"--model_dir={model_dir}", "--json")
    assert (got.returncode, expected.returncode) == (exit_code, exit_code), got.stderr
    assert without(json.loads(got.stdout), root) == without(
        json.loads(expected.stdout), str(tmp_path)
    )


def test_repair_cli_in_place(root: str, gcs_env: gcs.Server) -> None:
    model_dir = put_fixture(root, "missing_step")
    before = digest(model_dir)
    proc = run_cli("repair", f"--model_dir={model_dir}", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["new_prefix"] == f"{model_dir}/{FIXED}" and doc["linked"] is False

    after = digest(model_dir)
    assert {k: v for k, v in after.items() if k in before and k != STATE} == {
        k: v for k, v in before.items() if k != STATE
    }
    backups = [n for n in after if n.startswith(f"{STATE}.bak-")]
    assert len(backups) == 1 and after[backups[0]] == before[STATE]
    assert set(after) - set(before) == FIXED_FILES | set(backups)  # no lock on gs://
    assert temporaries(model_dir) == []
    # The emulator's own listing agrees (no object a gfile listing would hide).
    assert {n.rsplit("/", 1)[1] for n in object_names(gcs_env, model_dir)} - {""} == set(after)
    assert tf.train.latest_checkpoint(model_dir) == f"{model_dir}/{FIXED}"
    assert_int64_step(f"{model_dir}/{FIXED}", 6)
    assert_same_tensors(f"{model_dir}/{SOURCE}", f"{model_dir}/{FIXED}")
    assert scan.scan(model_dir).verdict is Verdict.HEALTHY

    again = run_cli("repair", f"--model_dir={model_dir}")
    assert again.returncode == 0, again.stderr
    assert digest(model_dir) == after


def test_repair_cli_to_output_dir(root: str) -> None:
    source = put_fixture(root, "int32_step")
    before = digest(source)
    out = f"{root}/repaired/int32_step"
    proc = run_cli("repair", f"--model_dir={source}", f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert digest(source) == before
    assert set(digest(out)) == OUTPUT_FILES
    assert temporaries(f"{root}/repaired") == []
    assert tf.train.latest_checkpoint(out) == f"{out}/{SOURCE}"
    assert_int64_step(f"{out}/{SOURCE}", 6)
    assert_same_tensors(f"{source}/{SOURCE}", f"{out}/{SOURCE}", skip=("global_step",))
    assert scan.scan(out).verdict is Verdict.HEALTHY


# --- fix: the export on gs:// ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.xfail(
    tuple(int(x) for x in tf.__version__.split(".")[:2]) >= (2, 16),
    reason=(
        "on TensorFlow 2.21 export_saved_model to gs:// through the emulator gets an HTTP 404 "
        "(scan, repair and the fleet on gs:// pass there); not yet traced to TF or the emulator"
    ),
    strict=False,
)
def test_fix_exports_to_gs(root: str, tmp_path: Path) -> None:
    model_dir = put_fixture(root, "missing_step")
    export_base = f"{root}/exports/run7"
    features = _predict_features("dnn_classifier")
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({k: v.tolist() for k, v in features.items()}))
    proc = run_cli(
        "fix",
        f"--model_dir={model_dir}",
        f"--export_dir={export_base}",
        f"--estimator={MODELS}:dnn_classifier",
        f"--serving_input_fn={MODELS}:dnn_classifier_serving_input_fn",
        f"--inputs={inputs}",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["verdict_before"] == "repairable"
    assert doc["verify"]["max_abs_diff"] <= 1e-5 and doc["verify"]["exported_step"] == 6
    export_path = doc["export_path"]
    assert (
        export_path.startswith(f"{export_base}/") and export_path[len(export_base) + 1 :].isdigit()
    )
    assert gfile.exists(f"{export_path}/saved_model.pb")
    assert [p for p in gfile.listdir(export_base) if "temp" in p] == []
    assert tf.train.latest_checkpoint(model_dir) == f"{model_dir}/{FIXED}"

    loaded = tf.saved_model.load(export_path)
    outputs = loaded.signatures["predict"](**{k: tf.constant(v) for k, v in features.items()})
    rows = MANIFEST["missing_step"]["predictions"]
    for key in rows[0]:
        expected = np.asarray([r[key] for r in rows])
        got = outputs[key].numpy().reshape(expected.shape)
        if expected.dtype.kind in "US":
            assert [x.decode() for x in got.ravel()] == list(expected.ravel()), key
        else:
            np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=key)


def _predict_features(builder: str) -> dict[str, np.ndarray]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("testdata_models_for_gcs", MODELS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {k: np.asarray(v) for k, v in module.PREDICT_FEATURES[builder].items()}


# --- many directories: the fleet and the Beam pipeline --------------------------------------------

# fixture -> (scan: status, exit code, verdict), (repair: status, exit code, error type)
MIX: dict[str, tuple[tuple[str, int, str | None], tuple[str, int, str | None]]] = {
    "dnn_classifier": (("done", 0, "healthy"), ("done", 0, None)),
    "missing_step": (("done", 3, "repairable"), ("done", 0, None)),
    "conflicting_step": (("done", 3, "repairable"), ("failed", 5, "StepEvidenceError")),
    "missing_shard": (("failed", 1, None), ("failed", 1, "MissingShardError")),
    "empty": (("failed", 1, None), ("failed", 1, "NotAModelDirError")),
    "a_file": (("failed", 1, None), ("failed", 1, "NotAModelDirError")),
}


def put_mix(root: str) -> str:
    """The MIX under ``root/models``: fixtures, an empty directory, an object that is a file."""
    models = f"{root}/models"
    for name in MIX:
        if name == "empty":
            gfile.makedirs(f"{models}/{name}")
        elif name == "a_file":
            with gfile.GFile(f"{models}/{name}", "wb") as f:
                f.write(b"not a model directory\n")
        else:
            put_fixture(models, name)
    return models


def by_name(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {r["model_dir"].rsplit("/", 1)[1]: r for r in results}
    assert len(out) == len(results), "one result per directory"
    return out


def check_results(results: list[dict[str, Any]], command: str, models: str) -> None:
    which = 0 if command == "scan" else 1
    got = by_name(results)
    for name, r in got.items():
        assert r["model_dir"] == f"{models}/{name}" and r["command"] == command
        status, exit_code, extra = MIX[name][which]
        assert (r["status"], r["exit_code"]) == (status, exit_code), (name, r)
        if command == "scan":
            assert r["verdict"] == extra, name
        else:
            assert (r["error"] or {}).get("type") == extra, name


def test_fleet_scan_over_a_gs_glob(root: str, tmp_path: Path) -> None:
    """``gs://.../*/`` matches the folders under it, not the objects (``*``: see the repair)."""
    models = put_mix(root)
    results = tmp_path / "scan.jsonl"
    proc = run_cli("scan", f"--model_dirs={models}/*/", f"--results={results}", "--workers=2")
    assert proc.returncode == 9, proc.stderr
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert set(by_name(lines)) == set(MIX) - {"a_file"}
    check_results(lines, "scan", models)


@pytest.mark.slow
def test_fleet_repair_over_gs(root: str, tmp_path: Path) -> None:
    """``gs://.../*``: every folder and object under it, each with its result."""
    models = put_mix(root)
    before = {name: digest(f"{models}/{name}") for name in MIX if name not in ("empty", "a_file")}
    results = tmp_path / "repair.jsonl"
    proc = run_cli(
        "repair", f"--model_dirs={models}/*", f"--results={results}", "--workers=2", "--json"
    )
    assert proc.returncode == 9, proc.stderr
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert set(by_name(lines)) == set(MIX)
    check_results(lines, "repair", models)
    assert json.loads(proc.stdout)["total"] == len(MIX)

    for name, files in before.items():
        after = digest(f"{models}/{name}")
        if name == "missing_step":  # the one repaired: originals kept, the repair beside them
            assert set(after) - set(files) - {n for n in after if n.startswith(STATE)} == (
                FIXED_FILES
            )
            assert scan.scan(f"{models}/{name}").verdict is Verdict.HEALTHY
            assert_int64_step(f"{models}/{name}/{FIXED}", 6)
        else:  # healthy, refused or broken: untouched
            assert after == files, name
        assert temporaries(f"{models}/{name}") == []

    # --resume skips what is done: only the failed directories run again.
    again = run_cli("repair", f"--model_dirs={models}/*", f"--results={results}", "--resume")
    assert again.returncode == 9, again.stderr
    rerun = [json.loads(line) for line in results.read_text().splitlines()][len(lines) :]
    assert set(by_name(rerun)) == {n for n, (_, r) in MIX.items() if r[0] == "failed"}


def test_fleet_results_on_gs(root: str) -> None:
    models = put_mix(root)
    results = f"{root}/runs/scan.jsonl"
    proc = run_cli("scan", f"--model_dirs={models}/*", f"--results={results}", "--workers=1")
    assert proc.returncode == 9, proc.stderr
    with gfile.GFile(results, "r") as f:
        lines = [json.loads(line) for line in f.read().splitlines()]
    check_results(lines, "scan", models)


@pytest.mark.slow
def test_beam_pipeline_over_gs(root: str, tmp_path: Path) -> None:
    """The DirectRunner over gs:// model directories. The results are local: Beam writes them
    with its own file systems, which know gs:// only with apache-beam[gcp] (not a test
    dependency), while the per-directory work goes through TensorFlow's filesystem."""
    pytest.importorskip("apache_beam")
    models = put_mix(root)
    prefix = tmp_path / "beam-repair"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "beam_fleet.py"),
            "--command=repair",
            f"--model_dirs={models}/*",
            f"--results={prefix}",
            "--runner=DirectRunner",
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
            "--default_sdk_harness_log_level=WARNING",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 9, proc.stderr[-3000:]
    done = [json.loads(x) for x in Path(f"{prefix}-done.jsonl").read_text().splitlines()]
    failed = [json.loads(x) for x in Path(f"{prefix}-failed.jsonl").read_text().splitlines()]
    assert set(by_name(done)) == {n for n, (_, r) in MIX.items() if r[0] == "done"}
    check_results(done + failed, "repair", models)
    assert scan.scan(f"{models}/missing_step").verdict is Verdict.HEALTHY
    assert_int64_step(f"{models}/missing_step/{FIXED}", 6)
    for name in MIX:
        if name != "a_file":
            assert temporaries(f"{models}/{name}") == [], name


# --- SIGKILL in the middle of a gs:// repair ------------------------------------------------------

# (failpoint, --output_dir?): before the commit, inside it (data renamed in, no index), with the
# complete checkpoint in place but the state file not switched, after it; and an output directory
# killed half-written.
KILLS = [
    pytest.param("index-written", False, id="index-written"),
    pytest.param("commit-data-1", False, id="commit-data-1"),
    pytest.param("state-commit", False, id="state-commit"),
    pytest.param("after-commit", False, id="after-commit"),
    pytest.param("output-commit", True, id="output-commit"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("failpoint", "to_output"), KILLS)
def test_sigkill_during_gs_repair(root: str, failpoint: str, to_output: bool) -> None:
    model_dir = put_fixture(root, "missing_step")
    out = f"{root}/out"
    extra = (f"--output_dir={out}",) if to_output else ()
    before = digest(model_dir)

    killed = run_cli(
        "repair", f"--model_dir={model_dir}", *extra, env={"ESTIMATOR_FIX_KILL_AT": failpoint}
    )
    assert killed.returncode == -signal.SIGKILL, f"{failpoint} not reached: {killed.stderr}"
    after_kill = digest(model_dir)
    committed = after_kill[STATE] != before[STATE]
    assert committed == (failpoint == "after-commit")
    for name, content in before.items():  # the originals, state file included unless committed
        if name != STATE or not committed:
            assert after_kill[name] == content, name
    latest = tf.train.latest_checkpoint(model_dir)
    assert latest == f"{model_dir}/{FIXED if committed else SOURCE}"
    assert len(read_checkpoint(latest)) >= 10  # loads, every key readable
    if to_output:
        assert STATE not in (digest(out) if gfile.exists(out) else {})

    rerun = run_cli("repair", f"--model_dir={model_dir}", *extra)
    assert rerun.returncode == 0, rerun.stderr
    assert "Traceback" not in rerun.stderr
    target = out if to_output else model_dir
    final = digest(target)
    assert scan.scan(target).verdict is Verdict.HEALTHY
    assert temporaries(root) == []
    if to_output:
        assert digest(model_dir) == before
        assert names.INCOMPLETE_MARKER not in final
        assert sorted(final) == sorted(OUTPUT_FILES)
        assert_int64_step(f"{out}/{SOURCE}", 6)
        return
    backups = {n for n in final if n.startswith(f"{STATE}.bak-")}
    # With the gcs extra, the lock object of a run killed after its commit stays until a later
    # repair takes it over: the re-run finds the directory healthy and takes no lock.
    added = set(final) - set(before) - backups - {names.LOCK_NAME}
    assert added == FIXED_FILES, "orphan or unexpected objects"
    assert backups and all(final[b] == before[STATE] for b in backups)
    assert tf.train.latest_checkpoint(model_dir) == f"{model_dir}/{FIXED}"
    assert_int64_step(f"{model_dir}/{FIXED}", 6)
    assert_same_tensors(f"{model_dir}/{SOURCE}", f"{model_dir}/{FIXED}")


# --- bad input ------------------------------------------------------------------------------------


def test_bucket_that_does_not_exist(gcs_env: gcs.Server) -> None:
    buckets = gcs_env.emulator_request("GET", "/storage/v1/b")["items"]
    path = f"gs://estimator-fix-no-such-bucket-{uuid.uuid4().hex[:8]}/models/run7"
    for command in ("scan", "repair"):
        proc, seconds = timed_cli(command, f"--model_dir={path}")
        assert_one_error_line(proc, path)
        assert seconds < FAST_FAILURE_SECS
    assert gcs_env.emulator_request("GET", "/storage/v1/b")["items"] == buckets


def test_object_that_is_not_there(root: str, gcs_env: gcs.Server) -> None:
    model_dir = put_fixture(root, "missing_step")
    objects = object_names(gcs_env, root)
    for command, path in (("scan", f"{root}/nothing/here"), ("repair", f"{model_dir}/x")):
        proc, seconds = timed_cli(command, f"--model_dir={path}")
        assert "no such directory" in assert_one_error_line(proc, path)
        assert seconds < FAST_FAILURE_SECS
    checkpoint = f"{model_dir}/model.ckpt-99"
    proc = run_cli("repair", f"--model_dir={model_dir}", f"--checkpoint={checkpoint}")
    assert proc.returncode == 1, proc.stderr
    assert checkpoint in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert object_names(gcs_env, root) == objects


@pytest.mark.parametrize("failure", ["proxy_refuses", "emulator_down"])
def test_server_unreachable(root: str, gcs_env: gcs.Server, failure: str) -> None:
    """Nothing listens where the client's proxy is, or the proxy's emulator is gone (502s)."""
    model_dir = put_fixture(root, "missing_step")
    objects = object_names(gcs_env, root)
    with gcs.refusing_port() as closed:
        if failure == "proxy_refuses":
            runs = _unreachable_runs(model_dir, gcs_env.client_env(proxy_port=closed))
        else:
            log = gcs_env.logs / f"proxy-{failure}.log"
            with gcs.proxy_to(closed, gcs_env.certs, log) as dead_end:
                runs = _unreachable_runs(model_dir, gcs_env.client_env(proxy_port=dead_end.port))
    for proc, seconds in runs:
        line = assert_one_error_line(proc, model_dir)
        assert "All 1 retry attempts failed" in line
        assert seconds < FAST_FAILURE_SECS, seconds
    assert object_names(gcs_env, root) == objects


def _unreachable_runs(
    model_dir: str, env: dict[str, str]
) -> list[tuple[subprocess.CompletedProcess[str], float]]:
    return [timed_cli(c, f"--model_dir={model_dir}", env=env) for c in ("scan", "repair")]


@dataclasses.dataclass(frozen=True)
class Stalled:
    """One repair run against a proxy that accepts connections and never answers."""

    model_dir: str
    proc: subprocess.CompletedProcess[str]
    seconds: float
    objects_before: list[str]
    objects_after: list[str]


@pytest.fixture(scope="module")
def stalled(gcs_server: gcs.Server) -> Stalled:
    """The run is shared by the two tests below (it takes 2 x the idle timeout)."""
    root = f"{gcs_server.root}/stalled-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as m:
        for name, value in gcs_server.client_env().items():
            m.setenv(name, value)
        model_dir = put_fixture(root, "missing_step")
        before = object_names(gcs_server, root)
        # As a user runs it: TF_CPP_MIN_LOG_LEVEL left to the CLI (run_cli would set it).
        env = {**os.environ, **gcs_server.client_env()}
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
        with gcs.silent_port() as silent:
            env.update(gcs_server.client_env(proxy_port=silent))
            start = time.monotonic()
            proc = subprocess.run(
                cli_command("repair", f"--model_dir={model_dir}"),
                capture_output=True,
                text=True,
                env=env,
                cwd=REPO,
                timeout=300,
            )
            seconds = time.monotonic() - start
    return Stalled(model_dir, proc, seconds, before, object_names(gcs_server, root))


@pytest.mark.slow
def test_server_that_stalls(stalled: Stalled) -> None:
    """The idle timeout ends each attempt: exit 1 after two of them, the error line last."""
    assert stalled.proc.returncode == 1, stalled.proc.stderr
    last = stalled.proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"estimator-fix: error: {stalled.model_dir}: "), last
    assert "All 1 retry attempts failed" in last
    idle = int(gcs.GCS_SETTINGS["GCS_REQUEST_IDLE_TIMEOUT_SECS"])
    assert 2 * idle <= stalled.seconds < STALL_FAILURE_SECS, stalled.seconds
    assert stalled.objects_after == stalled.objects_before


@pytest.mark.slow
def test_server_that_stalls_gives_one_line(stalled: Stalled) -> None:
    assert_one_error_line(stalled.proc, stalled.model_dir)
