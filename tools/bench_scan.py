r"""Benchmark: `estimator_fix.scan` over many model directories vs TensorFlow's inspect_checkpoint.

Usage:
  .venv/bin/python tools/bench_scan.py                       # what `make bench-scan` runs
  .venv/bin/python tools/bench_scan.py --num_dirs=200 --anchor_sample=5 --repeats=1 --json
  .venv/bin/python tools/bench_scan.py --workdir=/tmp/bench --keep   # keep the generated dirs

What it does:
  1. Generates --num_dirs model directories (not timed as part of the benchmark; the time is
     logged). Each holds one V2 checkpoint `model.ckpt-N` of --tensors_per_dir small tensors
     (float32 and int64, shapes up to 8x8, names like `dnn/hiddenlayer_0/kernel`) written with
     `tf.raw_ops.SaveV2` in one eager process, and a `checkpoint` state file. The cases cycle:
       healthy    int64 `global_step` = N, state file with a relative path;
       no_step    no `global_step` (the `-N` suffix is the only step evidence);
       int32_step `global_step` stored as int32 (every other directory of the third case);
       foreign    healthy files, but the state file names /home/alice/models/run7/model.ckpt-N.
     So a third is healthy and two thirds are repairable.
  2. Scans every directory in ONE fresh process (tools/bench_children/scan_dirs.py: imports
     `estimator_fix.scan` and calls `scan(d)` for each), --repeats times. The figure is that
     process's whole wall time, interpreter start-up and imports included; the median is
     reported. The run fails if TensorFlow was imported in that process or if any directory's
     verdict (or its expected problem code) differs from what was generated.
  3. The anchor users have today: `python -m tensorflow.python.tools.inspect_checkpoint
     --file_name=<prefix> --all_tensor_names`, one process per directory, on --anchor_sample
     directories spread over the cases (each process's output is checked to list every tensor).
  4. Prints a table (method, directories, median wall, directories/s, the throughput ratio) and
     whether the goals are met: 1,000 directories in under 10 s, and >= 50x the anchor's
     throughput. With --json, one JSON document instead of the table.

Both kinds of subprocess run with TF_CPP_MIN_LOG_LEVEL=2 (as the estimator-fix CLI sets it) and
the repository root as working directory, with the interpreter running this script.

The generated tree (removed at the end, unless --keep; a --workdir you name is never removed):
  <workdir>/d0000-healthy/{checkpoint, model.ckpt-1000.index, model.ckpt-1000.data-00000-of-00001}
  <workdir>/d0001-no_step/...   <workdir>/d0002-int32_step/...   <workdir>/d0005-foreign/...

Exit codes:
  0  the benchmark ran (whether or not the goals are met; the report says)
  1  the benchmark is invalid: a scan or anchor process failed, TensorFlow was imported by the
     scan, or the verdicts differ from what was generated
  2  usage error (a bad flag)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from absl import app, flags, logging
from benchlib import (
    EXPECTED,
    REPO_ROOT,
    BenchError,
    Case,
    ModelDir,
    child_env,
    child_script,
    generate,
)

_NUM_DIRS = flags.DEFINE_integer(
    "num_dirs", 1000, "Model directories to generate and scan.", lower_bound=1
)
_TENSORS_PER_DIR = flags.DEFINE_integer(
    "tensors_per_dir",
    50,
    "Tensors per checkpoint, global_step included (one fewer where it is missing).",
    lower_bound=2,
)
_ANCHOR_SAMPLE = flags.DEFINE_integer(
    "anchor_sample",
    20,
    "Directories inspected with inspect_checkpoint (one process each).",
    lower_bound=1,
)
_REPEATS = flags.DEFINE_integer(
    "repeats", 3, "Times the whole scan process is run; the median is reported.", lower_bound=1
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Where to generate the model directories: must be empty or not exist, and is kept. "
    "Default: a fresh temporary directory, removed at the end unless --keep.",
)
_KEEP = flags.DEFINE_boolean("keep", False, "Keep the generated temporary directory.")
_JSON = flags.DEFINE_boolean("json", False, "Print one JSON document instead of the table.")

flags.register_multi_flags_validator(
    ["num_dirs", "anchor_sample"],
    lambda f: f["anchor_sample"] <= f["num_dirs"],
    message="--anchor_sample must not exceed --num_dirs",
)

GOAL_DIRS = 1000
GOAL_SECONDS = 10.0
GOAL_RATIO = 50.0

# The cases of the third third, in turn (see the module docstring).
OTHERS = (Case.INT32_STEP, Case.FOREIGN)


@dataclasses.dataclass(frozen=True)
class Options:
    """The flags, read once in ``main``."""

    num_dirs: int
    tensors_per_dir: int
    anchor_sample: int
    repeats: int
    workdir: str | None
    keep: bool
    json: bool


@dataclasses.dataclass(frozen=True)
class Measurement:
    method: str
    directories: int
    runs_seconds: tuple[float, ...]
    median_seconds: float  # whole process for the scan; per directory for the anchor
    dirs_per_second: float


# --- measuring --------------------------------------------------------------------------------


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def _check_scan_output(stdout: str, dirs: Sequence[ModelDir]) -> None:
    """Raises BenchError unless TF stayed out and every verdict is the generated one."""
    doc = json.loads(stdout)
    if doc["tensorflow_modules"]:
        shown = ", ".join(doc["tensorflow_modules"][:5])
        raise BenchError(f"the scan process imported TensorFlow ({shown}, ...)")
    results = doc["results"]
    if len(results) != len(dirs):
        raise BenchError(f"the scan process returned {len(results)} results for {len(dirs)} dirs")
    expected = Counter(EXPECTED[d.case][0] for d in dirs)
    got = Counter(verdict for verdict, _ in results)
    if got != expected:
        raise BenchError(f"verdict counts {dict(got)} differ from the generated {dict(expected)}")
    for d, (verdict, codes) in zip(dirs, results, strict=True):
        want_verdict, want_code = EXPECTED[d.case]
        if verdict != want_verdict or (want_code is not None and want_code not in codes):
            raise BenchError(
                f"{d.path}: verdict {verdict} with problems {codes}; expected {want_verdict}"
                + (f" with {want_code}" if want_code else "")
            )


def bench_scan(dirs: Sequence[ModelDir], repeats: int) -> Measurement:
    """Times the whole scan process ``repeats`` times and checks each run's output."""
    paths = "".join(d.path + "\n" for d in dirs)
    runs = []
    for r in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, child_script("scan_dirs")],
            input=paths,
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=child_env(),
            check=False,
        )
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise BenchError(f"the scan process exited {proc.returncode}: {_tail(proc.stderr)}")
        _check_scan_output(proc.stdout, dirs)
        logging.info("scan run %d/%d: %.3f s for %d dirs", r + 1, repeats, seconds, len(dirs))
        runs.append(seconds)
    median = statistics.median(runs)
    return Measurement(
        method="estimator_fix.scan, 1 process",
        directories=len(dirs),
        runs_seconds=tuple(runs),
        median_seconds=median,
        dirs_per_second=len(dirs) / median,
    )


def sample(dirs: Sequence[ModelDir], n: int) -> list[ModelDir]:
    """``n`` directories evenly spread over the list (so over the cases too)."""
    step = len(dirs) / n
    return [dirs[int(i * step)] for i in range(n)]


def bench_anchor(dirs: Sequence[ModelDir]) -> Measurement:
    """``inspect_checkpoint --all_tensor_names``, one process per directory."""
    runs = []
    for d in dirs:
        start = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tensorflow.python.tools.inspect_checkpoint",
                f"--file_name={d.prefix}",
                "--all_tensor_names",
            ],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=child_env(),
            check=False,
        )
        seconds = time.perf_counter() - start
        listed = sum(1 for line in proc.stdout.splitlines() if line.startswith("tensor: "))
        # inspect_checkpoint prints errors and still exits 0: check what it listed.
        if proc.returncode != 0 or listed != d.tensor_count:
            raise BenchError(
                f"inspect_checkpoint on {d.prefix} exited {proc.returncode} listing {listed} of "
                f"{d.tensor_count} tensors: {_tail(proc.stdout + proc.stderr)}"
            )
        logging.info("inspect_checkpoint %s: %.3f s", os.path.basename(d.path), seconds)
        runs.append(seconds)
    median = statistics.median(runs)
    return Measurement(
        method="inspect_checkpoint, 1 process/dir",
        directories=len(dirs),
        runs_seconds=tuple(runs),
        median_seconds=median,
        dirs_per_second=1.0 / median,
    )


# --- report -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Result:
    generation_seconds: float
    cases: dict[str, int]
    ours: Measurement
    anchor: Measurement
    ratio: float
    seconds_for_goal_dirs: float
    seconds_measured: bool  # False: extrapolated from --num_dirs at the measured throughput
    goal_time_met: bool
    goal_ratio_met: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "estimator-fix.bench-scan/1",
            **dataclasses.asdict(self),
            "goals": {"dirs": GOAL_DIRS, "seconds": GOAL_SECONDS, "ratio": GOAL_RATIO},
        }


def summarize(
    generation_seconds: float, dirs: Sequence[ModelDir], ours: Measurement, anchor: Measurement
) -> Result:
    """Does not perform I/O."""
    ratio = ours.dirs_per_second / anchor.dirs_per_second
    measured = ours.directories == GOAL_DIRS
    seconds = ours.median_seconds if measured else GOAL_DIRS / ours.dirs_per_second
    return Result(
        generation_seconds=generation_seconds,
        cases=dict(Counter(d.case.value for d in dirs)),
        ours=ours,
        anchor=anchor,
        ratio=ratio,
        seconds_for_goal_dirs=seconds,
        seconds_measured=measured,
        goal_time_met=seconds < GOAL_SECONDS,
        goal_ratio_met=ratio >= GOAL_RATIO,
    )


def table(result: Result) -> str:
    """Does not perform I/O."""
    ours, anchor = result.ours, result.anchor
    rows = [
        ("method", "dirs", "median wall", "dirs/s", "ratio"),
        (
            ours.method,
            str(ours.directories),
            f"{ours.median_seconds:.3f} s (whole process)",
            f"{ours.dirs_per_second:.1f}",
            f"{result.ratio:.0f}x",
        ),
        (
            anchor.method,
            str(anchor.directories),
            f"{anchor.median_seconds:.3f} s per dir",
            f"{anchor.dirs_per_second:.2f}",
            "1x",
        ),
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if c == 0 else cell.rjust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    how = "measured" if result.seconds_measured else f"extrapolated from {ours.directories}"
    met = {True: "MET", False: "NOT MET"}
    runs = ", ".join(f"{s:.3f}" for s in ours.runs_seconds)
    lines += [
        "",
        f"scan runs (s): {runs}",
        f"goal: {GOAL_DIRS:,} dirs in < {GOAL_SECONDS:g} s: {met[result.goal_time_met]} "
        f"({result.seconds_for_goal_dirs:.3f} s, {how})",
        f"goal: >= {GOAL_RATIO:g}x the anchor's throughput: {met[result.goal_ratio_met]} "
        f"({result.ratio:.0f}x)",
    ]
    return "\n".join(lines) + "\n"


# --- main -------------------------------------------------------------------------------------


def _options() -> Options:
    return Options(
        num_dirs=_NUM_DIRS.value,
        tensors_per_dir=_TENSORS_PER_DIR.value,
        anchor_sample=_ANCHOR_SAMPLE.value,
        repeats=_REPEATS.value,
        workdir=_WORKDIR.value,
        keep=_KEEP.value,
        json=_JSON.value,
    )


def _prepare_workdir(workdir: str | None) -> tuple[str, bool]:
    """The directory to generate into, and whether it is ours to remove."""
    if workdir is None:
        return tempfile.mkdtemp(prefix="bench_scan-"), True
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
        raise app.UsageError(f"--workdir={workdir} must be an empty directory or not exist")
    os.makedirs(workdir, exist_ok=True)
    return workdir, False


def run(opts: Options) -> Result:
    """Generates, measures both methods, and summarizes. Raises BenchError."""
    root, ours_to_remove = _prepare_workdir(opts.workdir)
    try:
        start = time.perf_counter()
        dirs = generate(root, num_dirs=opts.num_dirs, tensors=opts.tensors_per_dir, others=OTHERS)
        generation_seconds = time.perf_counter() - start
        logging.info(
            "generated %d model dirs in %s in %.2f s (not part of the benchmark)",
            len(dirs),
            root,
            generation_seconds,
        )
        ours = bench_scan(dirs, opts.repeats)
        anchor = bench_anchor(sample(dirs, opts.anchor_sample))
        return summarize(generation_seconds, dirs, ours, anchor)
    finally:
        if ours_to_remove and not opts.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            logging.info("kept %s", root)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected argument {argv[1]!r}")
    opts = _options()
    try:
        result = run(opts)
    except BenchError as e:
        sys.stderr.write(f"bench_scan: error: {e} (rerun with --keep to inspect the dirs)\n")
        sys.exit(1)
    if opts.json:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(
            f"generation: {result.generation_seconds:.2f} s for "
            f"{result.ours.directories} dirs {result.cases} (not benchmarked)\n\n"
        )
        sys.stdout.write(table(result))


if __name__ == "__main__":
    app.run(main)
