r"""The v1 -> v2 half of bench_migrate.py: `migrate --to=v2-canned` of a ~1 GB canned DNN
against tensorflow_estimator's checkpoint_converter.

Usage (through bench_migrate.py, which owns the shared flags --repeats, --workdir, --keep):
  .venv/bin/python tools/bench_migrate.py --half=v1-v2          # ~1.1 GB, 3 repeats
  .venv/bin/python tools/bench_migrate.py --half=v1-v2 --dnn_hidden=512 --repeats=1  # smoke

1. Trains a `tf.compat.v1.estimator.DNNClassifier` (tools/bench_children/train_v1_canned.py:
   --dnn_input floats, --dnn_layers x --dnn_hidden units, 2 steps of --dnn_optimizer at
   --dnn_learning_rate); with Adagrad the checkpoint holds the weights and as many slot bytes.
2. Runs each method as a whole process (tools/benchlib.py's launcher: wall time, the child's
   peak RSS), --repeats times in alternating order, each on a fresh `cp -al` copy; the
   originals' inodes, sizes, mtimes and small files' bytes are checked after every run:
     converter  `python -m tensorflow_estimator.python.estimator.tools.checkpoint_converter
                dnn <prefix> <graph.pbtxt> <copy>/converted/<name>` (reads every tensor,
                writes a full copy);
     ours       `python -m estimator_fix migrate --model_dir=<copy> --to=v2-canned`;
     floor      `python -c "import tensorflow"`.
   Extra disk: the bytes of files under the copy whose inode is new (hard links count zero).
   Each result is checked: the v2 key set (the same for both), sampled tensors equal to the
   source's, and the learning rate each one wrote (ours must keep the trained one).
3. Prints every run, the medians with converter/ours ratios, the goals (>= 10x faster, peak
   RSS < 600 MB, < 1 MiB new bytes on disk) and what the converter lost.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

import bench_repair as repair_bench
from absl import flags, logging
from benchlib import BenchError, child_env, child_script, link_copy, measure, tail

_INPUT = flags.DEFINE_integer("dnn_input", 1024, "v1 -> v2: input floats.", lower_bound=1)
_HIDDEN = flags.DEFINE_integer("dnn_hidden", 8192, "v1 -> v2: units per layer.", lower_bound=1)
_LAYERS = flags.DEFINE_integer("dnn_layers", 3, "v1 -> v2: hidden layers.", lower_bound=1)
_OPTIMIZER = flags.DEFINE_enum(
    "dnn_optimizer",
    "Adagrad",
    ["Adagrad", "Adam", "Ftrl", "RMSProp", "SGD"],
    "v1 -> v2: optimizer.",
)
_LR = flags.DEFINE_float("dnn_learning_rate", 0.05, "v1 -> v2: the trained learning rate.")

CONVERTER, OURS, FLOOR = "converter", "ours", "floor"
METHODS = (CONVERTER, OURS, FLOOR)
LABELS = {
    CONVERTER: "checkpoint_converter",
    OURS: "estimator-fix migrate",
    FLOOR: "floor: import tensorflow",
}
STEPS = 2
_MB, _MIB = 10**6, 2**20
_SAMPLE = 8
_CONVERTER_MODULE = "tensorflow_estimator.python.estimator.tools.checkpoint_converter"
_V2_NAME = {"RMSProp": "RMSprop"}


@dataclasses.dataclass(frozen=True)
class Model:
    """The trained v1 model directory."""

    model_dir: str
    prefix: str
    keys: int
    total_bytes: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class Run:
    """One measured child process and the learning rate its checkpoint holds."""

    method: str
    repeat: int
    wall: float
    peak_rss: int
    extra_disk: int
    learning_rate: float | None


def train(model_dir: str) -> Model:
    """Trains the v1 DNN in a child process. Raises BenchError if it fails."""
    start = time.monotonic()
    cmd = [
        sys.executable,
        child_script("train_v1_canned"),
        model_dir,
        str(_INPUT.value),
        str(_HIDDEN.value),
        str(_LAYERS.value),
        _OPTIMIZER.value,
        repr(_LR.value),
        str(STEPS),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), check=False)
    if done.returncode != 0:
        raise BenchError(f"training the v1 DNN failed:\n{done.stderr[-2000:]}")
    prefix = done.stdout.strip().splitlines()[-1]
    import tensorflow as tf

    shapes = tf.train.list_variables(prefix)
    name = os.path.basename(prefix) + ".data-"
    total = sum(
        os.path.getsize(os.path.join(model_dir, n)) for n in os.listdir(model_dir) if name in n
    )
    return Model(model_dir, prefix, len(shapes), total, time.monotonic() - start)


def command(method: str, copy: str, model: Model) -> list[str]:
    """The child's command line for ``method`` on ``copy``. Does not perform I/O."""
    name = os.path.basename(model.prefix)
    if method == CONVERTER:
        return [
            sys.executable,
            "-m",
            _CONVERTER_MODULE,
            "dnn",
            os.path.join(copy, name),
            os.path.join(copy, "graph.pbtxt"),
            os.path.join(copy, "converted", name),
        ]
    if method == OURS:
        return [
            sys.executable,
            "-m",
            "estimator_fix",
            "migrate",
            f"--model_dir={copy}",
            "--to=v2-canned",
        ]
    return [sys.executable, "-c", "import tensorflow"]


def check(copy: str, model: Model, method: str) -> float:
    """The v2 keys are there, sampled tensors equal the source's. Returns the learning rate.

    Raises:
      BenchError: they are not.
    """
    import numpy as np
    import tensorflow as tf

    if method == CONVERTER:
        prefix = os.path.join(copy, "converted", os.path.basename(model.prefix))
    else:
        prefix = tf.train.latest_checkpoint(copy)
        if prefix is None or prefix == os.path.join(copy, os.path.basename(model.prefix)):
            raise BenchError(f"{method}: {copy}: the state file names no new checkpoint")
    new = tf.train.load_checkpoint(prefix)
    old = tf.train.load_checkpoint(model.prefix)
    opt = _V2_NAME.get(_OPTIMIZER.value, _OPTIMIZER.value)
    keys = set(new.get_variable_to_dtype_map())
    model_keys = [k for k in old.get_variable_to_dtype_map() if "/" + _OPTIMIZER.value not in k]
    missing = [k for k in model_keys if k not in keys and "_power" not in k]
    if missing or f"training/{opt}/learning_rate" not in keys:
        raise BenchError(f"{method}: {prefix}: v2 keys missing ({missing[:3]})")
    sample = sorted(model_keys, key=lambda k: old.get_variable_to_shape_map()[k])[:_SAMPLE]
    for key in [*sample, model_keys[0]]:
        if not np.array_equal(new.get_tensor(key), old.get_tensor(key)):
            raise BenchError(f"{method}: {prefix}: {key} differs from the source")
    return float(new.get_tensor(f"training/{opt}/learning_rate"))


def run_one(method: str, repeat: int, *, work: str, model: Model) -> Run:
    """One measured run on a fresh hard-linked copy. Raises BenchError if it fails."""
    copy = os.path.join(work, "runs", f"{method}-{repeat}")
    link_copy(model.model_dir, copy)
    if method == CONVERTER:  # its Saver needs the target's directory
        os.makedirs(os.path.join(copy, "converted"))
    originals = repair_bench.fingerprint(model.model_dir)
    before = repair_bench.inode_sizes(copy)
    os.sync()
    log_stem = os.path.join(work, "logs", f"{method}-{repeat}")
    measured = measure(command(method, copy, model), cwd=work, log_stem=log_stem, env=child_env())
    if measured.exit_code != 0:
        raise BenchError(
            f"{method} run {repeat} exited {measured.exit_code}:\n{tail(log_stem + '.err')}"
        )
    extra = repair_bench.extra_bytes(before, repair_bench.inode_sizes(copy))
    lr = check(copy, model, method) if method != FLOOR else None
    if repair_bench.fingerprint(model.model_dir) != originals:
        raise BenchError(f"{method} run {repeat} changed the original files")
    shutil.rmtree(copy)
    logging.info(
        "%s run %d: %.2f s, peak RSS %.0f MB, extra disk %.3f MiB, learning_rate %s",
        method,
        repeat,
        measured.wall,
        measured.peak_rss_bytes / _MB,
        extra / _MIB,
        lr,
    )
    return Run(method, repeat, measured.wall, measured.peak_rss_bytes, extra, lr)


def _median(runs: Sequence[Run], method: str, field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs if r.method == method)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "inf"


def render(model: Model, runs: Sequence[Run], repeats: int) -> tuple[str, bool]:
    """The report and whether every goal was met. Does not perform I/O."""
    width = max(len(v) for v in LABELS.values())
    lines = [
        f"v1 DNNClassifier: {_LAYERS.value} x {_HIDDEN.value} units over {_INPUT.value} inputs, "
        f"{_OPTIMIZER.value} at learning rate {_LR.value:g}, {STEPS} steps; {model.keys} "
        f"tensors, {model.total_bytes / _MIB:.1f} MiB; trained in {model.seconds:.1f} s",
        f"repeats: {repeats}, whole processes, alternating order, fresh `cp -al` copy each",
        "",
        "runs:",
    ]
    for r in runs:
        lr = "" if r.learning_rate is None else f"  learning_rate {r.learning_rate:g}"
        lines.append(
            f"  {r.repeat}  {LABELS[r.method]:<{width}}  {r.wall:8.2f} s  "
            f"{r.peak_rss / _MB:8.0f} MB  {r.extra_disk / _MIB:10.3f} MiB{lr}"
        )
    header = f"{'method':<{width}}  {'wall (median)':>13}  {'peak RSS':>11}  {'extra disk':>14}"
    lines += ["", header, "-" * len(header)]
    med = {m: {f: _median(runs, m, f) for f in ("wall", "peak_rss", "extra_disk")} for m in METHODS}
    for m in METHODS:
        lines.append(
            f"{LABELS[m]:<{width}}  {med[m]['wall']:11.2f} s  {med[m]['peak_rss'] / _MB:8.0f} MB"
            f"  {med[m]['extra_disk'] / _MIB:10.3f} MiB"
        )
    conv, ours = med[CONVERTER], med[OURS]
    lines.append(
        f"{'converter / ours':<{width}}  {_ratio(conv['wall'], ours['wall']):>13}  "
        f"{_ratio(conv['peak_rss'], ours['peak_rss']):>11}  "
        f"{_ratio(conv['extra_disk'], ours['extra_disk']):>14}"
    )
    speedup = conv["wall"] / ours["wall"]
    rss, disk = ours["peak_rss"], ours["extra_disk"]
    goals = [
        (
            f">= {repair_bench.GOAL_SPEEDUP:.0f}x faster than checkpoint_converter",
            f"{speedup:.1f}x",
            speedup >= repair_bench.GOAL_SPEEDUP,
        ),
        (
            f"peak RSS < {repair_bench.GOAL_RSS_BYTES / _MB:.0f} MB",
            f"{rss / _MB:.0f} MB",
            rss < repair_bench.GOAL_RSS_BYTES,
        ),
        (
            f"extra disk < {repair_bench.GOAL_DISK_BYTES / _MIB:.0f} MiB",
            f"{disk / _MIB:.3f} MiB",
            disk < repair_bench.GOAL_DISK_BYTES,
        ),
    ]
    kept = {r.learning_rate for r in runs if r.method == OURS and r.learning_rate is not None}
    lost = {r.learning_rate for r in runs if r.method == CONVERTER and r.learning_rate is not None}
    shown = f"ours {sorted(f'{v:g}' for v in kept)}, converter {sorted(f'{v:g}' for v in lost)}"
    goals.append(
        (
            f"trained learning rate {_LR.value:g} kept",
            shown,
            all(abs(v - _LR.value) < 1e-6 for v in kept),
        )
    )
    lines += ["", "goals (estimator-fix migrate --to=v2-canned):"]
    for what, got, met in goals:
        lines.append(f"  {'MET    ' if met else 'NOT MET'}  {what}: {got}")
    return "\n".join(lines) + "\n", all(met for _, _, met in goals)


def bench_v1_to_v2(config: repair_bench.Config, work: str) -> tuple[str, bool]:
    """Trains the v1 DNN, runs every method, renders. Raises BenchError."""
    os.makedirs(os.path.join(work, "logs"))
    os.makedirs(os.path.join(work, "runs"))
    model = train(os.path.join(work, "model"))
    logging.info("trained %s: %.1f MiB", model.prefix, model.total_bytes / _MIB)
    order = (METHODS, tuple(reversed(METHODS)))
    runs = [
        run_one(method, r, work=work, model=model)
        for r in range(config.repeats)
        for method in order[r % 2]
    ]
    return render(model, runs, config.repeats)
