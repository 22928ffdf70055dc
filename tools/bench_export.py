r"""Benchmarks `estimator-fix fix` against a bare `export_saved_model`, as whole processes.

Usage:
  .venv/bin/python tools/bench_export.py                      # small fixture, 5 repeats
  .venv/bin/python tools/bench_export.py --size=large         # a generated wide DNNClassifier
  .venv/bin/python tools/bench_export.py --size=both --repeats=3 --profile_repeats=1
  .venv/bin/python tools/bench_export.py --model=session_loop --keep

The question: what does `fix` (scan -> plan -> pre-flight -> repair -> export -> verify) cost
on top of the export a user with a healthy checkpoint would run anyway? Goal: `fix` takes no
more than 1.5x the wall time of the bare export.

What it does, for each --size:
  1. The subject, a broken model directory and its healthy twin:
       small  frozen fixtures from testdata/ (never modified; every run works on a copy). The
              --model family picks them from testdata/MANIFEST.json:
                dnn_classifier  broken testdata/missing_step, healthy testdata/dnn_classifier
                session_loop    broken testdata/session_loop_int32_step (int32 my_global_step);
                                there is no healthy fixture, so the healthy twin is made once
                                by the naive recipe (restore every key, add an int64
                                global_step, Saver.save: tools/bench_children/make_healthy.py),
                                not timed.
              (testdata/keras_missing_step is not offered: scan calls it unrepairable.)
              The model code is testdata/models.py (builder and serving fn from the manifest).
       large  a DNNClassifier like testdata/models.py:dnn_classifier but with
              --large_hidden_units (default 8192,8192: a 512 MiB checkpoint with the Adagrad
              accumulators, 256 MiB of weights exported), trained --large_steps step(s) by
              tools/bench_children/train_large.py (the generation time is logged, not timed)
              keeping one checkpoint; the model code is a copy of
              tools/bench_children/large_model.py with its parameters in large_model.json
              beside it. The broken twin is a copy whose
              every `.index` has the `global_step` entry dropped (rewritten with
              estimator_fix.checkpoint.index_file: read_index, then encode_index over the header
              and the other entries' (key, raw value) pairs); the data files are left as they are,
              which TensorFlow reads fine.
     The broken twin must scan as `repairable` (checked in-process; scan needs no TensorFlow).
  2. Runs each method as a whole separate process, --repeats times, alternating the order,
     each on a fresh `cp -r` copy of its model directory under runs/ (removed afterwards):
       bare   tools/bench_children/bare_export.py: import TensorFlow, load the model
              code, build the Estimator over a scratch model_dir, then `export_saved_model(
              base, serving_input_fn, checkpoint_path=<healthy copy>/<latest prefix>)`;
              it must print a SavedModel directory holding saved_model.pb. It records when
              it started, how long the TensorFlow import, the build and the export took.
       fix    `python -m estimator_fix fix --model_dir=<broken copy> --export_dir=<base>
              --estimator=SPEC --serving_input_fn=SPEC --json`; it must exit 0, its JSON must
              say `"ok": true` with a repair done and a SavedModel on disk.
       floor  `python -c "import tensorflow, tensorflow_estimator"`: what both pay anyway.
     Per run: wall time, CPU time and peak RSS of that one child (`os.wait4` in a ~10 MB launcher
     process that spawns it, tools/bench_children/launch.py, as tools/bench_repair.py does, so
     this process's RSS does not leak in). Page cache is warm (the copy was just made);
     `os.sync()` runs before each run.
  3. Where fix's time goes, two ways:
       - from the measured runs' JSON: `seconds` (inside fix()), `repair.seconds`,
         `export.seconds` (export_saved_model only); the rest is not broken down by the JSON;
       - --profile_repeats extra runs (not in the table above) of
         tools/bench_children/profile_fix.py, which calls `estimator_fix.fix.fix` itself, with
         timers wrapped around the public stage functions it calls (scan, plan, load_model,
         preflight, repair, export, verify, and inside verify parity.read_checkpoint_step,
         savedmodel.load_and_run and parity.predict): the same code path as the CLI,
         except that TensorFlow is imported just before fix() (after estimator_fix, as in the
         CLI, which imports it inside load_model), so the import shows as its own line.
         Interpreter start (launcher spawn to the script's first line) and exit (last line to
         reaped) come from wall-clock stamps.
         The bare script's own stamps give the same lines for the bare export. Each
         breakdown shown is one whole run, the one with the median wall, so its lines add up.
         The profile also charges every full (generation 2) garbage collection to the stage
         it ran in (`gc.callbacks`): with TensorFlow's heap one takes ~0.15 s, and it lands in
         whichever stage happens to allocate past the threshold.
  4. Prints every run; a table per method of the median wall (the figure the goal is judged
     on), the fastest wall, the spread ((slowest - fastest) / median), the median CPU time
     (user + system, from the same rusage; less disturbed by other load than the wall) and
     the median peak RSS;
     the fix/bare ratios and the ratio of the work above the import floor; a NOISY line when
     a spread exceeds 25% or the floor is not below bare (with the load average: another
     process was competing for the CPUs); the goal line; and both breakdowns.

Units: MB = 10**6 bytes (RSS), MiB = 2**20 bytes (files).

Work directory (a fresh `bench_export-*` under --workdir, default the system temp dir; removed
at the end unless --keep):
  bench_export-XXXX/
    small/healthy/                       (--model=session_loop only: its healthy twin)
    large/large_model.py, large/large_model.json, large/healthy/, large/broken/
    logs/<size>-<method>-<r>.{out,err,rusage}
    runs/<size>-<method>-<r>/model/, export/, scratch/   (removed after each run)

Exit codes:
  0  every run succeeded and verified, and fix <= 1.5x bare for every size run
  1  a run failed or did not verify, the subject is not what it should be, not enough disk,
     or a bad flag (absl)
  2  everything ran and verified, but the goal was missed for a size (the report says which)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

import benchlib
from absl import app, flags, logging
from bench_export_report import BARE, FIX, METHODS, Result, Run, Stage, render, stamped_stages
from bench_export_subjects import Subject, large_subject, small_subject
from benchlib import REPO_ROOT, BenchError, child_env, child_script, measure, tail

_MODEL = flags.DEFINE_enum(
    "model",
    "dnn_classifier",
    ["dnn_classifier", "session_loop"],
    "Fixture family for --size=small (see the module docstring).",
)
_SIZE = flags.DEFINE_enum(
    "size", "small", ["small", "large", "both"], "Which subject(s) to benchmark."
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Measured runs of each method.", lower_bound=1)
_PROFILE_REPEATS = flags.DEFINE_integer(
    "profile_repeats", 3, "In-process stage-timing runs of fix (0: skip).", lower_bound=0
)
_LARGE_HIDDEN_UNITS = flags.DEFINE_list(
    "large_hidden_units", ["8192", "8192"], "hidden_units of the --size=large DNNClassifier."
)
_LARGE_STEPS = flags.DEFINE_integer(
    "large_steps", 1, "Training steps of the --size=large model.", lower_bound=1
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Parent of the fresh work directory (default: the system temp dir)."
)
_KEEP = flags.DEFINE_boolean("keep", False, "Keep the work directory at the end.")


def _positive_ints(values: list[str]) -> bool:
    return bool(values) and all(v.strip().isdigit() and int(v) > 0 for v in values)


flags.register_validator(
    "large_hidden_units", _positive_ints, message="a comma-separated list of positive integers"
)


_MB = 10**6


@dataclasses.dataclass(frozen=True)
class Config:
    """The flags, read once in ``main``."""

    model: str
    sizes: tuple[str, ...]
    repeats: int
    profile_repeats: int
    large_hidden_units: tuple[int, ...]
    large_steps: int
    workdir: str | None
    keep: bool


# --- running ------------------------------------------------------------------------------------


def check_saved_model(path: str, *, what: str) -> None:
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise BenchError(f"{what}: {path} holds no saved_model.pb")


def run_one(method: str, repeat: int, *, subject: Subject, work: str) -> Run:
    """One measured run of ``method`` on a fresh ``cp -r`` copy.

    Raises:
      BenchError: the child failed or its result did not verify.
    """
    name = f"{subject.size}-{method}-{repeat}"
    run_dir = os.path.join(work, "runs", name)
    model = os.path.join(run_dir, "model")
    export_base = os.path.join(run_dir, "export")
    scratch = os.path.join(run_dir, "scratch")
    os.makedirs(scratch)
    timings = os.path.join(run_dir, "bare-timings.json")
    if method == BARE:
        subprocess.run(["cp", "-r", subject.healthy_dir, model], check=True)
        cmd = [
            sys.executable,
            child_script("bare_export"),
            subject.models_file,
            subject.builder,
            subject.serving_fn,
            os.path.join(model, subject.checkpoint_name),
            export_base,
            scratch,
            timings,
        ]
    elif method == FIX:
        subprocess.run(["cp", "-r", subject.broken_dir, model], check=True)
        cmd = [
            sys.executable,
            "-m",
            "estimator_fix",
            "fix",
            f"--model_dir={model}",
            f"--export_dir={export_base}",
            f"--estimator={subject.estimator_spec}",
            f"--serving_input_fn={subject.serving_spec}",
            "--json",
        ]
    else:
        cmd = [sys.executable, "-c", "import tensorflow, tensorflow_estimator"]
    os.sync()
    log_stem = os.path.join(work, "logs", name)
    launched = measure(cmd, cwd=REPO_ROOT, log_stem=log_stem, env=child_env())
    if launched.exit_code != 0:
        raise BenchError(f"{name} exited {launched.exit_code}:\n{tail(log_stem + '.err')}")
    fix_json: dict[str, float] = {}
    stages: tuple[Stage, ...] = ()
    if method == BARE:
        with open(log_stem + ".out") as f:
            printed = f.read().strip().splitlines()
        check_saved_model(printed[-1] if printed else export_base, what=name)
        with open(timings) as f:
            stages = stamped_stages(json.load(f), launched)
    elif method == FIX:
        fix_json = check_fix_output(log_stem + ".out", what=name)
    shutil.rmtree(run_dir)
    logging.info(
        "%s: %.2f s (CPU %.2f s), peak RSS %.0f MB",
        name,
        launched.wall,
        launched.cpu,
        launched.peak_rss_bytes / _MB,
    )
    return Run(
        method, repeat, launched.wall, launched.peak_rss_bytes, launched.cpu, fix_json, stages
    )


def check_fix_output(stdout_path: str, *, what: str) -> dict[str, float]:
    """Checks ``fix --json`` said ok after a repair; returns its per-stage seconds.

    Raises:
      BenchError: it did not, or its SavedModel is not on disk.
    """
    with open(stdout_path) as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise BenchError(f"{what}: stdout is not one JSON document ({e})") from e
    if doc.get("ok") is not True:
        raise BenchError(f"{what}: fix JSON says ok={doc.get('ok')!r}")
    if not doc.get("repair"):
        raise BenchError(f"{what}: fix did not repair anything (the subject is not broken?)")
    check_saved_model(doc["export_path"], what=what)
    out = {"seconds": float(doc["seconds"])}
    for stage in ("repair", "export", "verify"):
        section = doc.get(stage) or {}
        if "seconds" in section:
            out[f"{stage}.seconds"] = float(section["seconds"])
    return out


def profile_one(repeat: int, *, subject: Subject, work: str) -> tuple[tuple[Stage, ...], float]:
    """One in-process stage-timing run of fix on a fresh broken copy; (stages, wall).

    Raises:
      BenchError: it failed, or fix did not repair and verify.
    """
    name = f"{subject.size}-profile-{repeat}"
    run_dir = os.path.join(work, "runs", name)
    model = os.path.join(run_dir, "model")
    os.makedirs(run_dir)
    subprocess.run(["cp", "-r", subject.broken_dir, model], check=True)
    timings = os.path.join(run_dir, "timings.json")
    cmd = [
        sys.executable,
        child_script("profile_fix"),
        model,
        os.path.join(run_dir, "export"),
        subject.estimator_spec,
        subject.serving_spec,
        timings,
    ]
    os.sync()
    log_stem = os.path.join(work, "logs", name)
    launched = measure(cmd, cwd=REPO_ROOT, log_stem=log_stem, env=child_env())
    if launched.exit_code != 0:
        raise BenchError(f"{name} exited {launched.exit_code}:\n{tail(log_stem + '.err')}")
    with open(timings) as f:
        doc = json.load(f)
    if doc["ok"] is not True or not doc["repaired"]:
        raise BenchError(f"{name}: fix returned ok={doc['ok']}, repaired={doc['repaired']}")
    if doc["untimed"]:
        logging.warning("%s: no such functions to time: %s", name, ", ".join(doc["untimed"]))
    check_saved_model(doc["export_path"], what=name)
    shutil.rmtree(run_dir)
    logging.info("%s: %.2f s (fix() %.2f s)", name, launched.wall, doc["fix_seconds"])
    return stamped_stages(doc, launched), launched.wall


def order(repeat: int) -> tuple[str, ...]:
    """Alternates the order of the methods across repetitions. Does not perform I/O."""
    return METHODS if repeat % 2 == 0 else tuple(reversed(METHODS))


def bench_subject(config: Config, subject: Subject, work: str) -> Result:
    """Measured runs of every method, then the profile runs of fix.

    Raises:
      BenchError: not enough disk, or a run failed or did not verify.
    """
    need = 3 * subject.dir_bytes + 2**30
    free = shutil.disk_usage(work).free
    if free < need:
        raise BenchError(f"{work}: {free / 2**30:.1f} GiB free, needs {need / 2**30:.1f} GiB")
    load_before = os.getloadavg()[0]
    runs = tuple(
        run_one(method, r, subject=subject, work=work)
        for r in range(config.repeats)
        for method in order(r)
    )
    profiled = [profile_one(r, subject=subject, work=work) for r in range(config.profile_repeats)]
    return Result(
        subject=subject,
        runs=runs,
        profiles=tuple(p for p, _ in profiled),
        profile_walls=tuple(w for _, w in profiled),
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )


# --- main ---------------------------------------------------------------------------------------


def bench(config: Config, work: str) -> tuple[str, bool]:
    """Builds each subject, runs everything, returns the report and whether every goal was met.

    Raises:
      BenchError: a subject could not be built, or a run failed or did not verify.
    """
    for sub in ("logs", "runs"):
        os.makedirs(os.path.join(work, sub))
    texts, all_met = [], True
    for size in config.sizes:
        subject = (
            small_subject(config.model, work)
            if size == "small"
            else large_subject(
                work, hidden_units=config.large_hidden_units, steps=config.large_steps
            )
        )
        logging.info("subject: %s", subject.description)
        text, met = render(bench_subject(config, subject, work), repeats=config.repeats)
        texts.append(text)
        all_met = all_met and met
    return "\n".join(texts), all_met


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = Config(
        model=_MODEL.value,
        sizes=("small", "large") if _SIZE.value == "both" else (_SIZE.value,),
        repeats=_REPEATS.value,
        profile_repeats=_PROFILE_REPEATS.value,
        large_hidden_units=tuple(int(u) for u in _LARGE_HIDDEN_UNITS.value),
        large_steps=_LARGE_STEPS.value,
        workdir=_WORKDIR.value,
        keep=_KEEP.value,
    )
    text, met = benchlib.in_workdir(
        "bench_export", config.workdir, config.keep, lambda work: bench(config, work)
    )
    sys.stdout.write(text)
    sys.exit(0 if met else 2)


if __name__ == "__main__":
    app.run(main)
