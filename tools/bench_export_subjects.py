"""The subjects of bench_export.py: a broken model directory, its healthy twin, their model code.

  small  the frozen fixtures of testdata/ (picked by --model from testdata/MANIFEST.json); for a
         family without a healthy fixture, the twin is made once by
         tools/bench_children/make_healthy.py.
  large  a wide DNNClassifier trained by tools/bench_children/train_large.py from a copy of
         tools/bench_children/large_model.py; the broken twin is a copy with ``global_step``
         dropped from every ``.index``.

Both are checked: the broken twin must scan as ``repairable``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

from absl import logging
from benchlib import REPO_ROOT, BenchError, child_env, child_script, tail

TESTDATA = os.path.join(REPO_ROOT, "testdata")
MODELS_FILE = os.path.join(TESTDATA, "models.py")
MANIFEST = os.path.join(TESTDATA, "MANIFEST.json")
FAMILIES = {  # --model -> the broken fixture; its healthy twin comes from the manifest
    "dnn_classifier": "missing_step",
    "session_loop": "session_loop_int32_step",
}
# The functions of tools/bench_children/large_model.py.
LARGE_BUILDER = "dnn_classifier_large"
LARGE_SERVING = "dnn_classifier_large_serving_input_fn"
LARGE_TRAIN = "dnn_classifier_large_train_input_fn"
STEP_KEY = "global_step"


@dataclasses.dataclass(frozen=True)
class Subject:
    """A broken model directory, its healthy twin and the model code for both."""

    size: str
    description: str
    healthy_dir: str
    broken_dir: str
    checkpoint_name: str  # the healthy twin's latest prefix, which the bare export names
    models_file: str
    builder: str
    serving_fn: str
    tensors: int
    checkpoint_bytes: int  # the latest checkpoint's .index + .data files
    dir_bytes: int

    @property
    def estimator_spec(self) -> str:
        return f"{self.models_file}:{self.builder}"

    @property
    def serving_spec(self) -> str:
        return f"{self.models_file}:{self.serving_fn}"


def dir_bytes(path: str) -> int:
    """Bytes of every file under ``path``."""
    return sum(
        os.path.getsize(os.path.join(parent, name))
        for parent, _, names in os.walk(path)
        for name in names
    )


def checkpoint_facts(prefix: str) -> tuple[int, int]:
    """(tensor count, bytes of the .index and data files) of a V2 checkpoint prefix."""
    from estimator_fix.checkpoint import index_file

    index = index_file.read_index(index_file.index_path(prefix))
    n = index.header.num_shards
    files = [index_file.index_path(prefix)] + [index_file.data_path(prefix, i, n) for i in range(n)]
    return len(index.variables()), sum(os.path.getsize(f) for f in files)


def check_broken(broken_dir: str) -> None:
    """The broken twin must scan as repairable because of its step (pure Python, no TF).

    Raises:
      BenchError: it does not.
    """
    from estimator_fix.scan import scan

    report = scan(broken_dir)
    codes = sorted({p.code for p in report.problems})
    if report.verdict.value != "repairable" or not codes:
        raise BenchError(f"{broken_dir}: scans as {report.verdict.value} {codes}, not repairable")
    logging.info("%s: %s %s", broken_dir, report.verdict.value, codes)


def run_checked(cmd: Sequence[str], *, what: str, log_stem: str) -> str:
    """Runs an unmeasured setup child; returns the last line of its stdout.

    Raises:
      BenchError: it failed.
    """
    with open(log_stem + ".out", "wb") as out, open(log_stem + ".err", "wb") as err:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=out, stderr=err, env=child_env())
    if proc.returncode != 0:
        raise BenchError(f"{what} exited {proc.returncode}:\n{tail(log_stem + '.err')}")
    with open(log_stem + ".out") as f:
        lines = [line.strip() for line in f if line.strip()]
    if not lines:
        raise BenchError(f"{what} printed nothing")
    return lines[-1]


def small_subject(family: str, work: str) -> Subject:
    """The frozen fixtures of ``family``; makes a healthy twin where testdata has none.

    Raises:
      BenchError: the manifest does not describe the fixtures as expected, or setup failed.
    """
    with open(MANIFEST) as f:
        manifest = json.load(f)
    broken_name = FAMILIES[family]
    broken = manifest[broken_name]
    broken_dir = os.path.join(TESTDATA, broken_name)
    healthy_name = broken["source_fixture"]
    if healthy_name is not None:
        healthy_dir = os.path.join(TESTDATA, healthy_name)
        checkpoint_name = manifest[healthy_name]["latest_checkpoint"]
        if manifest[healthy_name]["builder"] != broken["builder"]:
            raise BenchError(f"{broken_name} and {healthy_name} have different builders")
        twin = f"testdata/{healthy_name}"
    else:
        if broken["step"] is None:
            raise BenchError(f"{broken_name}: the manifest gives no step for a healthy twin")
        healthy_dir = os.path.join(work, "small", "healthy")
        os.makedirs(healthy_dir)
        source = os.path.join(broken_dir, broken["latest_checkpoint"])
        start = time.perf_counter()
        prefix = run_checked(
            [
                sys.executable,
                child_script("make_healthy"),
                source,
                healthy_dir,
                str(broken["step"]),
            ],
            what="making the healthy twin",
            log_stem=os.path.join(work, "logs", "small-make_healthy"),
        )
        logging.info("made %s in %.1f s", prefix, time.perf_counter() - start)
        checkpoint_name = os.path.basename(prefix)
        twin = f"{broken_name} + int64 global_step by the naive recipe"
    check_broken(broken_dir)
    tensors, size = checkpoint_facts(os.path.join(healthy_dir, checkpoint_name))
    return Subject(
        size="small",
        description=(
            f"small: {family} family; fix on testdata/{broken_name}, bare export of "
            f"{checkpoint_name} from {twin}; model code testdata/models.py:{broken['builder']}"
        ),
        healthy_dir=healthy_dir,
        broken_dir=broken_dir,
        checkpoint_name=checkpoint_name,
        models_file=MODELS_FILE,
        builder=broken["builder"],
        serving_fn=broken["serving_input_fn"],
        tensors=tensors,
        checkpoint_bytes=size,
        dir_bytes=dir_bytes(healthy_dir),
    )


def strip_step(prefix: str) -> bool:
    """Rewrites ``prefix``'s ``.index`` without its ``global_step`` entry; False if none.

    The data files are untouched (the step's bytes stay, unreferenced): TensorFlow only reads
    what the index points at.
    """
    from estimator_fix.checkpoint import index_file

    path = index_file.index_path(prefix)
    index = index_file.read_index(path)
    kept = [(e.key, e.raw_value) for e in index.entries if e.key != STEP_KEY.encode()]
    if len(kept) == len(index.entries):
        return False
    data = index_file.encode_index([(b"", index.header.raw_value), *kept])
    tmp = path + ".bench-tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return True


def large_subject(work: str, *, hidden_units: Sequence[int], steps: int) -> Subject:
    """Trains the wide DNNClassifier ``steps`` steps, then makes a copy without ``global_step``.

    Raises:
      BenchError: training failed, or the copy is not broken as intended.
    """
    base = os.path.join(work, "large")
    os.makedirs(base)
    models_file = os.path.join(base, "large_model.py")
    shutil.copyfile(child_script("large_model"), models_file)
    with open(os.path.join(base, "large_model.json"), "w") as f:
        json.dump({"testdata": TESTDATA, "hidden_units": list(hidden_units)}, f)
    healthy_dir = os.path.join(base, "healthy")
    start = time.perf_counter()
    prefix = run_checked(
        [
            sys.executable,
            child_script("train_large"),
            models_file,
            LARGE_BUILDER,
            LARGE_TRAIN,
            healthy_dir,
            str(steps),
        ],
        what="training the large model",
        log_stem=os.path.join(work, "logs", "large-generate"),
    )
    logging.info("trained %s in %.1f s", prefix, time.perf_counter() - start)
    broken_dir = os.path.join(base, "broken")
    subprocess.run(["cp", "-r", healthy_dir, broken_dir], check=True)
    stripped = [
        name[: -len(".index")]
        for name in sorted(os.listdir(broken_dir))
        if name.endswith(".index") and strip_step(os.path.join(broken_dir, name[: -len(".index")]))
    ]
    if not stripped:
        raise BenchError(f"{broken_dir}: no index held {STEP_KEY}")
    logging.info("stripped %s from %s", STEP_KEY, ", ".join(stripped))
    check_broken(broken_dir)
    checkpoint_name = os.path.basename(prefix)
    tensors, size = checkpoint_facts(os.path.join(healthy_dir, checkpoint_name))
    units = ",".join(str(u) for u in hidden_units)
    return Subject(
        size="large",
        description=(
            f"large: DNNClassifier hidden_units=[{units}], {steps} step(s); fix on "
            f"a copy without {STEP_KEY} ({', '.join(stripped)}), bare export of "
            f"{checkpoint_name} from the healthy original"
        ),
        healthy_dir=healthy_dir,
        broken_dir=broken_dir,
        checkpoint_name=checkpoint_name,
        models_file=models_file,
        builder=LARGE_BUILDER,
        serving_fn=LARGE_SERVING,
        tensors=tensors,
        checkpoint_bytes=size,
        dir_bytes=dir_bytes(healthy_dir),
    )
