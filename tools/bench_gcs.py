r"""Benchmarks `estimator-fix repair` on gs://: server-side copies against the stream copy.

Usage:
  .venv/bin/python tools/bench_gcs.py                  # 1 GiB checkpoint, 3 repeats
  .venv/bin/python tools/bench_gcs.py --mib=64 --repeats=1   # a quick smoke run

What it does:
  1. Writes ONE V2 checkpoint `model.ckpt-1234` with no `global_step` locally (benchlib's
     generator: 50 small tensors and --mib MiB of big ones, one data shard) and a state file.
  2. Starts the tests' local GCS (`tests/gcs`: fake-gcs-server in memory on 127.0.0.1, the
     loopback HTTPS proxy TensorFlow's gs:// goes through) and uploads the directory once with
     google-cloud-storage, straight to the emulator.
  3. For each repeat, both methods in alternating order, each on a fresh copy of the source
     made inside the store: `estimator-fix repair --model_dir=gs://... --json` as a whole
     process (through benchlib's launcher: wall time, peak RSS), either with the gcs extra
     (server-side copies) or with `google.cloud.storage` unimportable
     (`tests/gcs/without_client.py`: the stream copy, no lock). Its network traffic goes
     through two counting relays (`tests/gcs/relay.py`): one in front of the HTTPS proxy
     (TensorFlow's requests, TLS included), one in front of the emulator
     (google-cloud-storage's); their sum is what moved through the worker. Each run must exit
     0, report the expected `copy_method`, and leave a repaired index the state file names.
     The run's objects are deleted afterwards (the emulator holds everything in memory).
  4. Prints medians and ratios, side by side.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags
from benchlib import REPO_ROOT, BenchError, Case, Writer, child_env, measure, tail

sys.path.insert(0, REPO_ROOT)  # the tests' local GCS: tests/gcs
from tests.gcs import server as gcs_server
from tests.gcs.relay import relay_to

_MIB = flags.DEFINE_integer("mib", 1024, "Size of the checkpoint's big tensors, MiB.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs of each method.", lower_bound=1)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where to write (default: a temporary dir).")

STEP = 1234
SERVER_SIDE, STREAM = "server_side", "stream"
WITHOUT_CLIENT = os.path.join(REPO_ROOT, "tests", "gcs", "without_client.py")


@dataclasses.dataclass(frozen=True)
class Run:
    """One measured repair."""

    method: str
    wall: float
    peak_rss_bytes: int
    tf_bytes: int  # through the HTTPS proxy relay
    client_bytes: int  # through the emulator relay
    client_requests: int
    reported_worker_bytes: int
    copied_bytes: int

    @property
    def worker_bytes(self) -> int:
        """Everything the repair process sent and received."""
        return self.tf_bytes + self.client_bytes


def _command(method: str, model_dir: str) -> list[str]:
    args = ["repair", f"--model_dir={model_dir}", "--json"]
    if method == SERVER_SIDE:
        return [sys.executable, "-m", "estimator_fix", *args]
    return [sys.executable, WITHOUT_CLIENT, *args]


def _upload(client: object, bucket: str, local: Path, prefix: str) -> int:
    """Every file of ``local`` to ``gs://bucket/prefix/``; the bytes uploaded."""
    total = 0
    for p in sorted(local.iterdir()):
        blob = client.bucket(bucket).blob(f"{prefix}/{p.name}")  # type: ignore[attr-defined]
        blob.upload_from_filename(str(p), timeout=600)
        total += p.stat().st_size
    return total


def _copy_tree(client: object, bucket: str, src: str, dst: str) -> None:
    """A copy of ``gs://bucket/src/`` at ``dst/`` made inside the store (not measured)."""
    b = client.bucket(bucket)  # type: ignore[attr-defined]
    for blob in client.list_blobs(bucket, prefix=src + "/"):  # type: ignore[attr-defined]
        b.copy_blob(blob, b, dst + blob.name[len(src) :], timeout=600)


def _delete_tree(client: object, bucket: str, prefix: str) -> None:
    for blob in client.list_blobs(bucket, prefix=prefix + "/"):  # type: ignore[attr-defined]
        blob.delete(timeout=60)


def _run_one(
    server: gcs_server.Server, client: object, method: str, model_dir: str, log_stem: str
) -> Run:
    with relay_to(server.proxy.port) as tf_relay, relay_to(server.emulator_port) as c_relay:
        env = {
            **child_env(),
            **server.client_env(proxy_port=tf_relay.port),
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{c_relay.port}",
            # The emulator copies a 1 GiB object in memory for every rename (GCS does it in
            # metadata): longer than the tests' 10 s without a byte.
            "GCS_REQUEST_IDLE_TIMEOUT_SECS": "300",
        }
        measured = measure(_command(method, model_dir), cwd=REPO_ROOT, log_stem=log_stem, env=env)
        time.sleep(0.2)  # the relays' last bytes
        tf_bytes, client_bytes, requests = tf_relay.total, c_relay.total, c_relay.requests
    if measured.exit_code != 0:
        raise BenchError(f"{method}: exit {measured.exit_code}:\n{tail(log_stem + '.err')}")
    with open(log_stem + ".out") as f:
        doc = json.load(f)
    if doc.get("copy_method") != method:
        raise BenchError(f"{method}: the repair reported copy_method={doc.get('copy_method')}")
    bucket, name = doc["new_prefix"][len("gs://") :].split("/", 1)
    if client.bucket(bucket).get_blob(name + ".index") is None:  # type: ignore[attr-defined]
        raise BenchError(f"{method}: {doc['new_prefix']}.index is not there")
    return Run(
        method=method,
        wall=measured.wall,
        peak_rss_bytes=measured.peak_rss_bytes,
        tf_bytes=tf_bytes,
        client_bytes=client_bytes,
        client_requests=requests,
        reported_worker_bytes=int(doc["worker_bytes"]),
        copied_bytes=int(doc["copied_bytes"]),
    )


def _mib(n: float) -> str:
    return f"{n / 2**20:,.3f} MiB"


def _report(runs: Sequence[Run], size: int) -> str:
    rows = []
    medians: dict[str, tuple[float, float]] = {}
    for method in (SERVER_SIDE, STREAM):
        mine = [r for r in runs if r.method == method]
        wall = statistics.median(r.wall for r in mine)
        moved = statistics.median(r.worker_bytes for r in mine)
        medians[method] = (wall, moved)
        rows.append(
            f"{method:12} wall {wall:7.2f} s (runs: {', '.join(f'{r.wall:.2f}' for r in mine)})"
            f"  through the worker {_mib(moved)} (TensorFlow {_mib(mine[0].tf_bytes)}, client "
            f"{_mib(mine[0].client_bytes)} in {mine[0].client_requests} requests)"
            f"  reported worker_bytes {_mib(mine[0].reported_worker_bytes)}"
            f"  peak RSS {_mib(max(r.peak_rss_bytes for r in mine))}"
        )
    (s_wall, s_moved), (t_wall, t_moved) = medians[SERVER_SIDE], medians[STREAM]
    ratio = t_moved / max(s_moved, 1)
    rows.append(
        f"checkpoint data {_mib(size)}; stream / server-side: bytes {ratio:,.0f}x,"
        f" wall {t_wall / s_wall:.2f}x"
    )
    goal = s_moved < 2**20 * (size / 2**30) and ratio >= 1000 and s_wall < t_wall
    rows.append(
        f"goal (< 1 MiB per GiB, >= 1000x fewer bytes, faster): {'met' if goal else 'NOT met'}"
    )
    return "\n".join(rows)


def main(argv: Sequence[str]) -> None:
    del argv
    gcs_server.configure_process()  # before TensorFlow is imported (by the generator)
    binary = gcs_server.find_binary()
    if binary is None:
        raise app.UsageError("fake-gcs-server not found: install the test extra (make setup)")
    work = Path(_WORKDIR.value or tempfile.mkdtemp(prefix="bench_gcs-"))
    local = work / "model"
    start = time.monotonic()
    Writer(50).write(str(local), Case.NO_STEP, STEP, big_mib=_MIB.value)
    size = sum(p.stat().st_size for p in local.glob("*.data-*"))
    print(f"generated {_mib(size)} of data in {time.monotonic() - start:.1f} s at {local}")
    with gcs_server.running(binary, work / "gcs") as server:
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{server.emulator_port}"
        from google.cloud import storage

        client = storage.Client()
        start = time.monotonic()
        _upload(client, server.bucket, local, "source")
        print(f"uploaded to gs://{server.bucket}/source in {time.monotonic() - start:.1f} s")
        runs: list[Run] = []
        for i in range(_REPEATS.value):
            order = (SERVER_SIDE, STREAM) if i % 2 == 0 else (STREAM, SERVER_SIDE)
            for method in order:
                prefix = f"run{i}-{method}"
                _copy_tree(client, server.bucket, "source", prefix)
                run = _run_one(
                    server, client, method, f"gs://{server.bucket}/{prefix}", str(work / prefix)
                )
                _delete_tree(client, server.bucket, prefix)
                print(f"  {prefix}: {run.wall:.2f} s, {_mib(run.worker_bytes)} through the worker")
                runs.append(run)
    print(_report(runs, size))


if __name__ == "__main__":
    app.run(main)
