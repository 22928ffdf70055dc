r"""Benchmarks `estimator-fix repair` against the naive recipe on a big checkpoint with no step.

Usage:
  .venv/bin/python tools/bench_repair.py                 # defaults: ~3 GB checkpoint, 3 repeats
  .venv/bin/python tools/bench_repair.py --big_tensors=4 --big_mb=10 --small_tensors=300 \
      --repeats=1 --keep                                 # a quick smoke run; keep the files

What it does:
  1. Generates ONE ordinary V2 checkpoint `model/model.ckpt-1234` with no `global_step`:
     --big_tensors float32 tensors of --big_mb MiB each (`big_<i>/kernel`) and --small_tensors
     16x16 float32 ones (`layer_<i>/kernel`), written by a graph-mode `Saver` over variables
     initialised in the graph (needs the checkpoint's size in RAM once), plus a `checkpoint`
     state file with relative paths. The generation time is reported.
  2. Runs each method as a whole separate process, --repeats times, alternating the order,
     each time on a fresh hard-linked copy of the model directory (`cp -al`, so copying is
     free and the originals are never written; their stat and the bytes of their index and
     state file are checked after every run):
       naive   tools/bench_children/naive_add_step.py: graph mode, a variable for every
               key of the checkpoint, restore them all with a `Saver`, add `global_step` with
               `tf.compat.v1.train.get_or_create_global_step()` assigned the step, and
               `Saver.save` everything to a new prefix in the same directory;
       ours    `python -m estimator_fix repair --model_dir=<copy>`; it must exit 0 and the
               checkpoint the state file names must hold an int64 `global_step` == 1234 and
               every original key;
       floor   `python -c "import tensorflow"`: what any process that imports TF pays.
     For each run: wall time; peak RSS of that one child (`ru_maxrss` from `os.wait4` in a
     ~10 MB launcher process that spawns it, so this process's own RSS does not leak in);
     extra disk (the sizes of files under the copy whose inode did not exist before the run;
     hard links to the original inodes count zero). Page cache is warm for every run
     (the checkpoint was just written); `os.sync()` runs before each one.
  3. Prints every run, then a table of medians with naive/ours ratios, and the goals:
     whole-process >= 10x faster than naive, peak RSS < 600 MB, extra disk < 1 MiB.

Units: MB = 10**6 bytes (peak RSS), MiB = 2**20 bytes (disk, --big_mb).

Work directory (a fresh `bench_repair-*` directory under --workdir, default under /tmp; removed
at the end unless --keep). It needs about twice the checkpoint's size free (the checkpoint,
plus one naive output at a time):
  bench_repair-XXXX/
    model/                   checkpoint, model.ckpt-1234.index, model.ckpt-1234.data-00000-of-00001
    logs/<method>-<r>.{out,err}
    runs/<method>-<r>/       the hard-linked copy of one run (removed after it is measured)

Exit codes:
  0  every run succeeded and was verified, and every goal was met
  1  a run failed or its result did not verify, not enough free disk, or a bad flag (absl)
  2  everything ran and verified, but a goal was missed (the table says which)
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

import benchlib
from absl import app, flags, logging
from benchlib import BenchError, child_script, measure, tail

_BIG_TENSORS = flags.DEFINE_integer(
    "big_tensors", 30, "Number of big float32 tensors in the checkpoint.", lower_bound=0
)
_BIG_MB = flags.DEFINE_integer("big_mb", 100, "Size of each big tensor in MiB.", lower_bound=1)
_SMALL_TENSORS = flags.DEFINE_integer(
    "small_tensors", 3000, "Number of small (16x16 float32) tensors.", lower_bound=0
)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs of each method.", lower_bound=1)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Parent of the fresh work directory (default: the system temp dir, /tmp)."
)
_KEEP = flags.DEFINE_boolean("keep", False, "Keep the work directory at the end.")

STEP = 1234
PREFIX_NAME = f"model.ckpt-{STEP}"
NAIVE = "naive"
OURS = "ours"
FLOOR = "floor"
METHODS = (NAIVE, OURS, FLOOR)
LABELS = {
    NAIVE: "naive: restore all + Saver.save",
    OURS: "estimator-fix repair",
    FLOOR: "floor: import tensorflow",
}
GOAL_SPEEDUP = 10.0
GOAL_RSS_BYTES = 600 * 10**6
GOAL_DISK_BYTES = 2**20
_MB = 10**6
_MIB = 2**20
_SMALL_SHAPE = (16, 16)


@dataclasses.dataclass(frozen=True)
class Config:
    """The flags, read once in ``main``."""

    big_tensors: int
    big_mb: int
    small_tensors: int
    repeats: int
    workdir: str | None
    keep: bool


@dataclasses.dataclass(frozen=True)
class Generated:
    """The generated model directory."""

    model_dir: str
    prefix: str
    keys: int
    total_bytes: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class Run:
    """One measured child process."""

    method: str
    repeat: int
    wall: float  # seconds
    peak_rss: int  # bytes
    extra_disk: int  # bytes


@dataclasses.dataclass(frozen=True)
class Summary:
    """Medians of one method's runs."""

    method: str
    wall: float
    peak_rss: float
    extra_disk: float


# --- the checkpoint -----------------------------------------------------------------------------


def generate_model(
    model_dir: str, *, big_tensors: int, big_mb: int, small_tensors: int
) -> Generated:
    """Writes one V2 checkpoint ``model.ckpt-<STEP>`` without ``global_step`` into ``model_dir``.

    The variables are initialised in the graph (zeros for the big ones, random for the small
    ones), so the process holds the checkpoint's size in RAM once.
    """
    import tensorflow as tf

    os.makedirs(model_dir)
    start = time.perf_counter()
    graph = tf.Graph()
    with graph.as_default():
        variables = {}
        for i in range(big_tensors):
            name = f"big_{i}/kernel"
            # big_mb MiB of float32: big_mb * 256 rows of 1024 floats.
            init = tf.zeros([big_mb * 256, 1024], dtype=tf.float32)
            variables[name] = tf.compat.v1.Variable(init, name=name.replace("/", "_"))
        for i in range(small_tensors):
            name = f"layer_{i}/kernel"
            init = tf.random.uniform(_SMALL_SHAPE, seed=i, dtype=tf.float32)
            variables[name] = tf.compat.v1.Variable(init, name=name.replace("/", "_"))
        saver = tf.compat.v1.train.Saver(
            var_list=variables,
            sharded=False,
            save_relative_paths=True,  # a hard-linked copy must name its own files
            write_version=tf.compat.v1.train.SaverDef.V2,
        )
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(
                sess,
                os.path.join(model_dir, "model.ckpt"),
                global_step=STEP,
                write_meta_graph=False,
            )
    del graph, variables, saver
    gc.collect()
    seconds = time.perf_counter() - start
    if os.path.basename(prefix) != PREFIX_NAME:
        raise BenchError(f"{prefix}: expected the prefix {PREFIX_NAME}")
    total = sum(os.path.getsize(os.path.join(model_dir, n)) for n in os.listdir(model_dir))
    return Generated(
        model_dir=model_dir,
        prefix=prefix,
        keys=big_tensors + small_tensors,
        total_bytes=total,
        seconds=seconds,
    )


def check_step(model_dir: str, *, keys: int, method: str) -> None:
    """Checks the checkpoint the state file names: int64 ``global_step`` == STEP, every key kept.

    Raises:
      BenchError: it does not.
    """
    import numpy as np
    import tensorflow as tf

    prefix = tf.train.latest_checkpoint(model_dir)
    if prefix is None or os.path.basename(prefix) == PREFIX_NAME:
        raise BenchError(
            f"{method}: {model_dir}: the state file names no new checkpoint ({prefix})"
        )
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    if dtypes.get("global_step") != tf.int64:
        raise BenchError(f"{method}: {prefix}: global_step is {dtypes.get('global_step')}")
    value = int(np.asarray(reader.get_tensor("global_step")))
    if value != STEP:
        raise BenchError(f"{method}: {prefix}: global_step = {value}, expected {STEP}")
    if len(dtypes) != keys + 1:
        raise BenchError(f"{method}: {prefix}: {len(dtypes)} keys, expected {keys} + global_step")


# --- files ----------------------------------------------------------------------------------------


def inode_sizes(root: str) -> dict[tuple[int, int], int]:
    """Every regular file under ``root``, by (device, inode): its size. Links counted once."""
    sizes = {}
    for parent, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(parent, name))
            sizes[(st.st_dev, st.st_ino)] = st.st_size
    return sizes


def extra_bytes(before: dict[tuple[int, int], int], after: dict[tuple[int, int], int]) -> int:
    """Bytes in files whose inode is new. Does not perform I/O."""
    return sum(size for inode, size in after.items() if inode not in before)


def fingerprint(model_dir: str) -> dict[str, tuple[int, int, int, str]]:
    """Inode, size, mtime of every original file; the hash of the small ones (index, state)."""
    prints = {}
    for name in sorted(os.listdir(model_dir)):
        path = os.path.join(model_dir, name)
        st = os.stat(path)
        digest = ""
        if ".data-" not in name:
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        prints[name] = (st.st_ino, st.st_size, st.st_mtime_ns, digest)
    return prints


# --- running ------------------------------------------------------------------------------------


def command(method: str, copy: str) -> list[str]:
    """The child's command line for ``method`` on ``copy``. Does not perform I/O."""
    if method == NAIVE:
        return [sys.executable, child_script("naive_add_step"), copy, str(STEP)]
    if method == OURS:
        return [sys.executable, "-m", "estimator_fix", "repair", f"--model_dir={copy}"]
    return [sys.executable, "-c", "import tensorflow"]


def run_one(method: str, repeat: int, *, work: str, generated: Generated) -> Run:
    """One measured run of ``method`` on a fresh hard-linked copy of the model directory.

    Raises:
      BenchError: the child failed, its result did not verify, or an original file changed.
    """
    copy = os.path.join(work, "runs", f"{method}-{repeat}")
    subprocess.run(["cp", "-al", generated.model_dir, copy], check=True)
    originals = fingerprint(generated.model_dir)
    before = inode_sizes(copy)
    os.sync()
    log_stem = os.path.join(work, "logs", f"{method}-{repeat}")
    measured = measure(command(method, copy), cwd=work, log_stem=log_stem)
    wall, rss = measured.wall, measured.peak_rss_bytes
    if measured.exit_code != 0:
        raise BenchError(
            f"{method} run {repeat} exited {measured.exit_code}:\n{tail(log_stem + '.err')}"
        )
    extra = extra_bytes(before, inode_sizes(copy))
    if method in (NAIVE, OURS):
        check_step(copy, keys=generated.keys, method=method)
    if fingerprint(generated.model_dir) != originals:
        raise BenchError(f"{method} run {repeat} changed the original files")
    shutil.rmtree(copy)
    logging.info(
        "%s run %d: %.2f s, peak RSS %.0f MB, extra disk %.3f MiB",
        method,
        repeat,
        wall,
        rss / _MB,
        extra / _MIB,
    )
    return Run(method=method, repeat=repeat, wall=wall, peak_rss=rss, extra_disk=extra)


def order(repeat: int) -> tuple[str, ...]:
    """Alternates the order of the methods across repetitions. Does not perform I/O."""
    return METHODS if repeat % 2 == 0 else tuple(reversed(METHODS))


def summarize(runs: Sequence[Run]) -> dict[str, Summary]:
    """Medians per method. Does not perform I/O."""
    out = {}
    for method in METHODS:
        mine = [r for r in runs if r.method == method]
        out[method] = Summary(
            method=method,
            wall=statistics.median(r.wall for r in mine),
            peak_rss=statistics.median(r.peak_rss for r in mine),
            extra_disk=statistics.median(r.extra_disk for r in mine),
        )
    return out


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "inf"


def render(generated: Generated, runs: Sequence[Run], config: Config) -> tuple[str, bool]:
    """The report and whether every goal was met. Does not perform I/O."""
    medians = summarize(runs)
    naive, ours = medians[NAIVE], medians[OURS]
    width = max(len(v) for v in LABELS.values())
    lines = [
        f"checkpoint: {generated.keys} tensors ({config.big_tensors} x {config.big_mb} MiB + "
        f"{config.small_tensors} x 16x16), {generated.total_bytes / _MIB:.1f} MiB, "
        f"no global_step; generated in {generated.seconds:.1f} s",
        f"repeats: {config.repeats}, whole processes, alternating order, fresh `cp -al` copy each",
        "",
        "runs:",
    ]
    for r in runs:
        lines.append(
            f"  {r.repeat}  {LABELS[r.method]:<{width}}  {r.wall:8.2f} s  "
            f"{r.peak_rss / _MB:8.0f} MB  {r.extra_disk / _MIB:10.3f} MiB"
        )
    header = f"{'method':<{width}}  {'wall (median)':>13}  {'peak RSS':>11}  {'extra disk':>14}"
    lines += ["", header, "-" * len(header)]
    for s in medians.values():
        lines.append(
            f"{LABELS[s.method]:<{width}}  {s.wall:11.2f} s  {s.peak_rss / _MB:8.0f} MB  "
            f"{s.extra_disk / _MIB:10.3f} MiB"
        )
    lines.append(
        f"{'naive / ours':<{width}}  {_ratio(naive.wall, ours.wall):>13}  "
        f"{_ratio(naive.peak_rss, ours.peak_rss):>11}  "
        f"{_ratio(naive.extra_disk, ours.extra_disk):>14}"
    )
    goals = [
        (
            f">= {GOAL_SPEEDUP:.0f}x faster than naive (whole process)",
            f"{naive.wall / ours.wall:.1f}x",
            naive.wall / ours.wall >= GOAL_SPEEDUP,
        ),
        (
            f"peak RSS < {GOAL_RSS_BYTES / _MB:.0f} MB",
            f"{ours.peak_rss / _MB:.0f} MB",
            ours.peak_rss < GOAL_RSS_BYTES,
        ),
        (
            f"extra disk < {GOAL_DISK_BYTES / _MIB:.0f} MiB",
            f"{ours.extra_disk / _MIB:.3f} MiB",
            ours.extra_disk < GOAL_DISK_BYTES,
        ),
    ]
    lines += ["", "goals (estimator-fix repair):"]
    for what, got, met in goals:
        lines.append(f"  {'MET    ' if met else 'NOT MET'}  {what}: {got}")
    return "\n".join(lines) + "\n", all(met for _, _, met in goals)


def bench(config: Config, work: str) -> tuple[str, bool]:
    """Generates the checkpoint in ``work``, runs every method, returns the report.

    Raises:
      BenchError: not enough disk, or a run failed or did not verify.
    """
    need = 2 * (config.big_tensors * config.big_mb * _MIB + config.small_tensors * 1024) + 2**30
    free = shutil.disk_usage(work).free
    if free < need:
        raise BenchError(f"{work}: {free / 2**30:.1f} GiB free, needs {need / 2**30:.1f} GiB")
    os.makedirs(os.path.join(work, "logs"))
    os.makedirs(os.path.join(work, "runs"))
    logging.info("generating the checkpoint in %s", work)
    generated = generate_model(
        os.path.join(work, "model"),
        big_tensors=config.big_tensors,
        big_mb=config.big_mb,
        small_tensors=config.small_tensors,
    )
    logging.info(
        "generated %s: %.1f MiB in %.1f s",
        generated.prefix,
        generated.total_bytes / _MIB,
        generated.seconds,
    )
    runs = [
        run_one(method, r, work=work, generated=generated)
        for r in range(config.repeats)
        for method in order(r)
    ]
    return render(generated, runs, config)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = Config(
        big_tensors=_BIG_TENSORS.value,
        big_mb=_BIG_MB.value,
        small_tensors=_SMALL_TENSORS.value,
        repeats=_REPEATS.value,
        workdir=_WORKDIR.value,
        keep=_KEEP.value,
    )
    text, met = benchlib.in_workdir(
        "bench_repair", config.workdir, config.keep, lambda work: bench(config, work)
    )
    sys.stdout.write(text)
    sys.exit(0 if met else 2)


if __name__ == "__main__":
    app.run(main)
