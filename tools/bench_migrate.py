r"""Benchmarks `estimator-fix rename` (and, later, `migrate`) against the read-everything recipes.

Usage:
  .venv/bin/python tools/bench_migrate.py                 # ~3 GB checkpoint, 3 repeats
  .venv/bin/python tools/bench_migrate.py --big_tensors=4 --big_mb=10 --small_tensors=300 \
      --repeats=1 --keep                                  # a quick smoke run
  .venv/bin/python tools/bench_migrate.py --half=v1-v2    # the v1 -> v2 half (see below)

The rename half:
  1. Generates the checkpoint of tools/bench_repair.py (its generator and flags:
     --big_tensors x --big_mb MiB float32 tensors plus --small_tensors 16x16 ones, no
     `global_step`), so every key can be renamed.
  2. Runs each method as a whole process (the launcher of tools/benchlib.py measures wall time
     and the child's own peak RSS), --repeats times in alternating order, each on a fresh
     `cp -al` copy; the originals' inodes, sizes, mtimes and small files' bytes are checked
     after every run:
       naive   tools/bench_children/naive_rename.py: a variable for every key under its new
               name, restored from the old name, `Saver.save` under the new names;
       ours    `python -m estimator_fix rename --model_dir=<copy> --regex=^
               --replacement=renamed/`;
       floor   `python -c "import tensorflow"`.
     Extra disk: the bytes of files under the copy whose inode is new (hard links count zero).
     Each result is checked: the state file names a new checkpoint holding exactly the
     renamed keys, and a sample of tensors equal to the original's.
  3. Prints every run, the medians with naive/ours ratios, and the goals: >= 10x faster, peak
     RSS < 600 MB, < 1 MiB new bytes on disk.

The v1 -> v2 half (`--half=v1-v2`, `--half=both`): `migrate --to=v2-canned` of a ~1 GB canned
DNN against tensorflow_estimator's checkpoint_converter; `bench_v1_to_v2` is its hook.

Exit codes: 0 every goal met; 1 a run failed or did not verify, or a bad flag; 2 a goal missed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence

import bench_migrate_v2
import bench_repair as repair_bench
import benchlib
from absl import app, flags, logging
from benchlib import BenchError, child_script, measure, tail

_HALF = flags.DEFINE_enum(
    "half", "rename", ["rename", "v1-v2", "both"], "Which benchmark: rename, v1-v2 or both."
)

NEW_SCOPE = "renamed/"
NAIVE, OURS, FLOOR = repair_bench.NAIVE, repair_bench.OURS, repair_bench.FLOOR
LABELS = {
    NAIVE: "naive: restore all + Saver.save",
    OURS: "estimator-fix rename",
    FLOOR: "floor: import tensorflow",
}
_SAMPLE = 16  # tensors compared by value after each run (the small ones and one big one)


def command(method: str, copy: str) -> list[str]:
    """The child's command line for ``method`` on ``copy``. Does not perform I/O."""
    if method == NAIVE:
        return [sys.executable, child_script("naive_rename"), copy, NEW_SCOPE]
    if method == OURS:
        return [
            sys.executable,
            "-m",
            "estimator_fix",
            "rename",
            f"--model_dir={copy}",
            "--regex=^",
            f"--replacement={NEW_SCOPE}",
        ]
    return [sys.executable, "-c", "import tensorflow"]


def check_renamed(copy: str, generated: repair_bench.Generated, method: str) -> None:
    """The state file names a new checkpoint with exactly the renamed keys, values equal.

    Raises:
      BenchError: it does not.
    """
    import numpy as np
    import tensorflow as tf

    prefix = tf.train.latest_checkpoint(copy)
    if prefix is None or os.path.basename(prefix) == repair_bench.PREFIX_NAME:
        raise BenchError(f"{method}: {copy}: the state file names no new checkpoint ({prefix})")
    new = tf.train.load_checkpoint(prefix)
    old = tf.train.load_checkpoint(os.path.join(copy, repair_bench.PREFIX_NAME))
    old_keys = sorted(old.get_variable_to_dtype_map())
    if sorted(new.get_variable_to_dtype_map()) != sorted(NEW_SCOPE + k for k in old_keys):
        raise BenchError(f"{method}: {prefix}: the keys are not exactly the renamed ones")
    sample = [k for k in old_keys if k.startswith("layer_")][:_SAMPLE] + old_keys[:1]
    for key in sample:
        if not np.array_equal(new.get_tensor(NEW_SCOPE + key), old.get_tensor(key)):
            raise BenchError(f"{method}: {prefix}: {NEW_SCOPE + key} differs from {key}")


def run_one(
    method: str, repeat: int, *, work: str, generated: repair_bench.Generated
) -> repair_bench.Run:
    """One measured run on a fresh hard-linked copy. Raises BenchError if it fails."""
    copy = os.path.join(work, "runs", f"{method}-{repeat}")
    subprocess.run(["cp", "-al", generated.model_dir, copy], check=True)
    originals = repair_bench.fingerprint(generated.model_dir)
    before = repair_bench.inode_sizes(copy)
    os.sync()
    log_stem = os.path.join(work, "logs", f"{method}-{repeat}")
    measured = measure(command(method, copy), cwd=work, log_stem=log_stem)
    if measured.exit_code != 0:
        raise BenchError(
            f"{method} run {repeat} exited {measured.exit_code}:\n{tail(log_stem + '.err')}"
        )
    extra = repair_bench.extra_bytes(before, repair_bench.inode_sizes(copy))
    if method != FLOOR:
        check_renamed(copy, generated, method)
    if repair_bench.fingerprint(generated.model_dir) != originals:
        raise BenchError(f"{method} run {repeat} changed the original files")
    shutil.rmtree(copy)
    logging.info(
        "%s run %d: %.2f s, peak RSS %.0f MB, extra disk %.3f MiB",
        method,
        repeat,
        measured.wall,
        measured.peak_rss_bytes / 1e6,
        extra / 2**20,
    )
    return repair_bench.Run(method, repeat, measured.wall, measured.peak_rss_bytes, extra)


def bench_rename(config: repair_bench.Config, work: str) -> tuple[str, bool]:
    """The rename half: generate, run every method, render. Raises BenchError."""
    os.makedirs(os.path.join(work, "logs"))
    os.makedirs(os.path.join(work, "runs"))
    generated = repair_bench.generate_model(
        os.path.join(work, "model"),
        big_tensors=config.big_tensors,
        big_mb=config.big_mb,
        small_tensors=config.small_tensors,
    )
    logging.info("generated %s: %.1f MiB", generated.prefix, generated.total_bytes / 2**20)
    runs = [
        run_one(method, r, work=work, generated=generated)
        for r in range(config.repeats)
        for method in repair_bench.order(r)
    ]
    saved = dict(repair_bench.LABELS)
    repair_bench.LABELS.update(LABELS)  # the same table, this benchmark's labels
    try:
        text, met = repair_bench.render(generated, runs, config)
    finally:
        repair_bench.LABELS.clear()
        repair_bench.LABELS.update(saved)
    text = text.replace("no global_step; generated", "every key renamed; generated")
    return text.replace("goals (estimator-fix repair)", "goals (estimator-fix rename)"), met


def bench_v1_to_v2(config: repair_bench.Config, work: str) -> tuple[str, bool]:
    """The v1 -> v2 half: `migrate --to=v2-canned` against checkpoint_converter.

    It lives in tools/bench_migrate_v2.py (with its --dnn_* flags).

    Raises:
      BenchError: a run failed or did not verify.
    """
    return bench_migrate_v2.bench_v1_to_v2(config, work)


HALVES: dict[str, tuple[Callable[[repair_bench.Config, str], tuple[str, bool]], ...]] = {
    "rename": (bench_rename,),
    "v1-v2": (bench_v1_to_v2,),
    "both": (bench_rename, bench_v1_to_v2),
}


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = repair_bench.Config(
        big_tensors=repair_bench._BIG_TENSORS.value,
        big_mb=repair_bench._BIG_MB.value,
        small_tensors=repair_bench._SMALL_TENSORS.value,
        repeats=repair_bench._REPEATS.value,
        workdir=repair_bench._WORKDIR.value,
        keep=repair_bench._KEEP.value,
    )
    texts, all_met = [], True
    for half in HALVES[_HALF.value]:
        text, met = benchlib.in_workdir(
            "bench_migrate", config.workdir, config.keep, functools.partial(half, config)
        )
        texts.append(text)
        all_met &= met
    sys.stdout.write("\n".join(texts))
    sys.exit(0 if all_met else 2)


if __name__ == "__main__":
    app.run(main)
