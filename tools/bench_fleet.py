r"""Benchmark: `scan` and `repair` over a fleet of model directories, local workers vs Beam.

Usage:
  .venv/bin/python tools/bench_fleet.py                        # 1,000 dirs, every configuration
  .venv/bin/python tools/bench_fleet.py --num_dirs=90 --scan_repeats=1 --noscaling   # smoke run
  .venv/bin/python tools/bench_fleet.py --commands=scan --runners=local --workers=1,2,4
  .venv/bin/python tools/bench_fleet.py --json --keep --workdir=/tmp/bf   # JSON; keep the files

What it does:
  1. Generates --num_dirs model directories (timed and logged, not benchmarked), in this one
     eager process: each holds one V2 checkpoint `model.ckpt-N` of --tensors_per_dir small
     tensors (float32 and int64, shapes up to 8x8, Estimator-like names) written with
     `tf.raw_ops.SaveV2`, and a `checkpoint` state file. The cases cycle over i:
       i % 3 == 0  healthy       int64 `global_step` = N, relative state file;
       i % 3 == 1  no_step       no `global_step` (the `-N` suffix is the step evidence);
       i % 3 == 2  in turn:      int32_step   `global_step` stored as int32,
                                 renamed_step `my_global_step` (int64) instead of `global_step`,
                                 foreign      healthy files, the state file names
                                              /home/alice/models/run7/model.ckpt-N.
  2. For each configuration it makes a FRESH hard-linked copy of the tree (`cp -al`; a repair
     never writes an original file, it adds files and renames new ones over names, so the
     copies are safe: every original's inode, size, mtime and bytes are checked after every
     run) and runs the real command line as a whole process:
       local  python -m estimator_fix <scan|repair> --model_dirs='<copy>/*/' --workers=W
                  --results=<file> --json                              for each W in --workers
       beam   python tools/beam_fleet.py --command=<scan|repair> --model_dirs='<copy>/*/'
                  --results=<prefix> --direct_num_workers=W --direct_running_mode=multi_processing
                  (repair; a scan takes the tool's default: in_memory, one worker)
                  --json                                           for each W in --beam_workers
     Each process is started by a ~10 MB launcher that reaps it with `os.wait4`, giving its wall
     time, CPU time (user + system of its whole tree) and peak RSS (the largest process of its
     tree) without this process's RSS leaking in.
     Scans run --scan_repeats times, repairs --repair_repeats times, configurations alternating
     order; medians are reported. Every run is verified and the benchmark fails (exit 1) unless:
     the exit code is the documented one (scan 3: some repairable; repair 0); there is exactly
     one result per generated directory, every one `done`; each verdict (and its problem code)
     is the generated case's; a repair repaired exactly the unhealthy ones with the right step
     and left the healthy ones alone; and after a repair every copied directory scans healthy.
  3. With --scaling (default on; about 30-60 s), the marginal cost per directory, in one
     process (tools/bench_children/fleet_probe.py) that has already imported TensorFlow and
     repaired one directory (so the figures hold no start-up): scan and repair time against
     tensor count (--scaling_tensors) and against checkpoint size (--scaling_mib: one directory
     whose big tensors total that many MiB), the repair both with hard links (local disk) and
     with the data files copied (links disabled, as on stores that cannot link), and the
     file-system calls one scan and one repair make on TensorFlow's `ram://` file system (what
     becomes object-store requests on `gs://`).
  4. Prints the side-by-side table (command, runner, workers, dirs, median wall, dirs/s, the
     Beam/local ratio at the same worker count, CPU, peak RSS, mean and median seconds per
     directory inside the workers, the fixed part of the wall time), the goals (scan of 1,000
     < 10 s; repair of 1,000 < 60 s; Beam DirectRunner <= 3x the local run with as many
     workers), the scaling figures with least-squares fits, and the load average before and
     after. --json: one JSON document instead.

The code: this file (flags, the measured runs, main), bench_fleet_checks.py (what a run must
have done), bench_fleet_report.py (medians and tables), bench_fleet_scaling.py (the probe's
directories and fits); the tree comes from benchlib.generate, as bench_scan.py's does.

Every child runs with TF_CPP_MIN_LOG_LEVEL=2, the repository root as working directory and the
interpreter running this script.

Work directory (a fresh `bench_fleet-*` under --workdir, default the system temp dir; removed
at the end unless --keep):
  bench_fleet-XXXX/
    gen/d0000-healthy/{checkpoint, model.ckpt-1000.index, model.ckpt-1000.data-00000-of-00001}
    gen/d0001-no_step/  gen/d0002-int32_step/  gen/d0005-renamed_step/  gen/d0008-foreign/ ...
    runs/<command>-<runner>-w<W>-<r>/         the copy of one run (removed once verified)
    logs/<command>-<runner>-w<W>-<r>.{out,err,rusage}, results files
    scaling/                                  the scaling probe's directories and copies

Exit codes:
  0  the benchmark ran and verified (whether or not the goals are met: the report says)
  1  the benchmark is invalid: a run failed or exited with another code, a result or a
     repaired directory did not verify, an original file changed, or the probe failed
  2  usage error (a bad flag)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from absl import app, flags, logging
from bench_fleet_checks import check_repaired_tree, check_results, fingerprint, read_run_results
from bench_fleet_report import BEAM, LOCAL, Config, Run, render, rows
from bench_fleet_scaling import scaling
from benchlib import (
    REPO_ROOT,
    BenchError,
    Case,
    ModelDir,
    child_env,
    generate,
    link_copy,
    measure,
    tail,
)

_NUM_DIRS = flags.DEFINE_integer("num_dirs", 1000, "Model directories to generate.", lower_bound=3)
_TENSORS_PER_DIR = flags.DEFINE_integer(
    "tensors_per_dir", 50, "Tensors per checkpoint, the step key included.", lower_bound=2
)
_COMMANDS = flags.DEFINE_multi_enum(
    "commands", ["scan", "repair"], ["scan", "repair"], "Commands to benchmark."
)
_RUNNERS = flags.DEFINE_multi_enum(
    "runners", ["local", "beam"], ["local", "beam"], "local: estimator-fix; beam: beam_fleet."
)
_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "--workers values for the local runs.")
_BEAM_WORKERS = flags.DEFINE_list(
    "beam_workers", ["2"], "--direct_num_workers values for the Beam DirectRunner runs."
)
_SCAN_REPEATS = flags.DEFINE_integer(
    "scan_repeats", 3, "Runs of each scan configuration; the median is reported.", lower_bound=1
)
_REPAIR_REPEATS = flags.DEFINE_integer(
    "repair_repeats", 1, "Runs of each repair configuration (each ~10-40 s).", lower_bound=1
)
_SCALING = flags.DEFINE_boolean(
    "scaling", True, "Also measure the per-directory cost against tensor count and size."
)
_SCALING_TENSORS = flags.DEFINE_list(
    "scaling_tensors", ["50", "500", "5000"], "Tensor counts of the scaling probe."
)
_SCALING_MIB = flags.DEFINE_list(
    "scaling_mib", ["1", "100", "1000"], "Checkpoint sizes (MiB) of the scaling probe."
)
_SCALING_REPEATS = flags.DEFINE_integer(
    "scaling_repeats", 3, "Repairs (fresh copies) per probe directory and mode.", lower_bound=1
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Parent of the fresh work directory (default: the system temp dir)."
)
_KEEP = flags.DEFINE_boolean("keep", False, "Keep the work directory at the end.")
_JSON = flags.DEFINE_boolean("json", False, "Print one JSON document instead of the tables.")


def _positive_ints(values: Sequence[str]) -> bool:
    return bool(values) and all(v.isdigit() and int(v) > 0 for v in values)


for _name in ("workers", "beam_workers", "scaling_tensors", "scaling_mib"):
    flags.register_validator(_name, _positive_ints, message=f"--{_name}: positive integers")

BEAM_TOOL = os.path.join(REPO_ROOT, "tools", "beam_fleet.py")
EXIT_CODE = {"scan": 3, "repair": 0}  # some directories are repairable; all repaired
_MB = 10**6
_TAIL_LINES = 8  # of a failed child's stderr, in the error message


# The cases of the third third, in turn (see the module docstring).
OTHERS = (Case.INT32_STEP, Case.RENAMED_STEP, Case.FOREIGN)


@dataclasses.dataclass(frozen=True)
class Options:
    """The flags, read once in ``main``."""

    num_dirs: int
    tensors_per_dir: int
    commands: tuple[str, ...]
    runners: tuple[str, ...]
    workers: tuple[int, ...]
    beam_workers: tuple[int, ...]
    scan_repeats: int
    repair_repeats: int
    scaling: bool
    scaling_tensors: tuple[int, ...]
    scaling_mib: tuple[int, ...]
    scaling_repeats: int
    workdir: str | None
    keep: bool
    json: bool


# --- files ------------------------------------------------------------------------------------


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# --- one measured run -------------------------------------------------------------------------


def command_line(config: Config, tree: str, results: str) -> list[str]:
    """The measured command. Does not perform I/O."""
    dirs = os.path.join(tree, "*") + "/"
    if config.runner == LOCAL:
        return [
            sys.executable,
            "-m",
            "estimator_fix",
            config.command,
            f"--model_dirs={dirs}",
            f"--workers={config.workers}",
            f"--results={results}",
            "--json",
        ]
    return [
        sys.executable,
        BEAM_TOOL,
        f"--command={config.command}",
        f"--model_dirs={dirs}",
        f"--results={results}",
        # A scan takes the tool's default (in_memory: it never imports TensorFlow).
        *(
            []
            if config.command == "scan"
            else [
                f"--direct_num_workers={config.workers}",
                "--direct_running_mode=multi_processing",
            ]
        ),
        "--json",
    ]


def run_one(
    config: Config,
    repeat: int,
    *,
    work: str,
    gen: str,
    dirs: Sequence[ModelDir],
    originals: Mapping[str, Any],
) -> Run:
    """One verified run of ``config`` on a fresh copy of the generated tree.

    Raises:
      BenchError: the run failed, a result did not verify, or an original file changed.
    """
    tag = f"{config.label}-{repeat}"
    tree = os.path.join(work, "runs", tag)
    link_copy(gen, tree)
    os.sync()
    stem = os.path.join(work, "logs", tag)
    results = stem + (".results.jsonl" if config.runner == LOCAL else "")
    measured = measure(
        command_line(config, tree, results), cwd=REPO_ROOT, log_stem=stem, env=child_env()
    )
    code, wall, rss, cpu = measured.exit_code, measured.wall, measured.peak_rss_bytes, measured.cpu
    if code != EXIT_CODE[config.command]:
        raise BenchError(
            f"{tag}: exited {code}, expected {EXIT_CODE[config.command]}:\n"
            f"{tail(stem + '.err', _TAIL_LINES)}"
        )
    with open(stem + ".out") as f:
        summary = json.load(f)
    found = read_run_results(config, results)
    check_results(config.command, found, dirs)
    if config.command == "repair":
        check_repaired_tree(tree, dirs)
    if fingerprint(gen) != originals:
        raise BenchError(f"{tag}: an original file changed (the copy was not independent)")
    shutil.rmtree(tree)
    seconds = sorted(float(r["seconds"]) for r in found)
    # A worker's first directory carries its lazy TensorFlow import: leave the slowest out.
    steady = seconds[: len(seconds) - config.workers] or seconds
    run = Run(
        config=config,
        repeat=repeat,
        wall=wall,
        peak_rss=rss,
        cpu=cpu,
        tool_seconds=float(summary["seconds"]),
        mean_dir_seconds=statistics.fmean(steady),
        median_dir_seconds=statistics.median(seconds),
    )
    logging.info(
        "%s: %.2f s wall (tool %.2f s), %.1f s CPU, %.0f MB peak RSS, mean %.1f ms/dir; load %s",
        tag,
        wall,
        run.tool_seconds,
        cpu,
        rss / _MB,
        1e3 * run.mean_dir_seconds,
        load_average(),
    )
    return run


def configs(opts: Options, command: str) -> list[Config]:
    """Does not perform I/O."""
    out = []
    if LOCAL in opts.runners:
        out += [Config(command, LOCAL, w) for w in opts.workers]
    if BEAM in opts.runners:
        out += [Config(command, BEAM, w) for w in opts.beam_workers]
    return out


# --- main -------------------------------------------------------------------------------------


def _options() -> Options:
    return Options(
        num_dirs=_NUM_DIRS.value,
        tensors_per_dir=_TENSORS_PER_DIR.value,
        commands=tuple(_COMMANDS.value),
        runners=tuple(_RUNNERS.value),
        workers=tuple(int(w) for w in _WORKERS.value),
        beam_workers=tuple(int(w) for w in _BEAM_WORKERS.value),
        scan_repeats=_SCAN_REPEATS.value,
        repair_repeats=_REPAIR_REPEATS.value,
        scaling=_SCALING.value,
        scaling_tensors=tuple(int(n) for n in _SCALING_TENSORS.value),
        scaling_mib=tuple(int(n) for n in _SCALING_MIB.value),
        scaling_repeats=_SCALING_REPEATS.value,
        workdir=_WORKDIR.value,
        keep=_KEEP.value,
        json=_JSON.value,
    )


def bench(opts: Options, work: str) -> tuple[str, dict[str, Any]]:
    """Generates, runs every configuration, probes; returns the report and its JSON.

    Raises:
      BenchError: a run or the probe failed or did not verify.
    """
    load_before = load_average()
    os.makedirs(os.path.join(work, "runs"))
    os.makedirs(os.path.join(work, "logs"))
    gen = os.path.join(work, "gen")
    start = time.perf_counter()
    dirs = generate(gen, num_dirs=opts.num_dirs, tensors=opts.tensors_per_dir, others=OTHERS)
    generation = time.perf_counter() - start
    cases = Counter(d.case.value for d in dirs)
    logging.info("generated %d dirs %s in %.1f s", len(dirs), dict(cases), generation)
    originals = fingerprint(gen)
    runs: list[Run] = []
    for command in ("scan", "repair"):
        if command not in opts.commands:
            continue
        repeats = opts.scan_repeats if command == "scan" else opts.repair_repeats
        mine = configs(opts, command)
        for r in range(repeats):
            for config in mine if r % 2 == 0 else reversed(mine):
                runs.append(run_one(config, r, work=work, gen=gen, dirs=dirs, originals=originals))
    probe = (
        scaling(
            work,
            tensors_per_dir=opts.tensors_per_dir,
            scaling_tensors=opts.scaling_tensors,
            scaling_mib=opts.scaling_mib,
            repeats=opts.scaling_repeats,
        )
        if opts.scaling
        else None
    )
    table_rows = rows(runs, len(dirs))
    header = [
        f"directories: {len(dirs)} ({', '.join(f'{n} {c}' for c, n in cases.items())}), "
        f"{opts.tensors_per_dir} tensors each; generated in {generation:.1f} s (not benchmarked)",
        f"machine: {os.cpu_count()} CPUs; load average (1, 5, 15 min) {load_before} before, "
        f"{load_average()} after",
        f"repeats: scan {opts.scan_repeats}, repair {opts.repair_repeats}; whole processes, "
        "alternating order, each on a fresh `cp -al` copy",
    ]
    doc = {
        "schema": "estimator-fix.bench-fleet/1",
        "cases": dict(cases),
        "load_before": load_before,
        "load_after": load_average(),
        "rows": [
            {**dataclasses.asdict(r), "config": dataclasses.asdict(r.config)} for r in table_rows
        ],
        "scaling": probe,
    }
    return render(table_rows, probe, header), doc


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    opts = _options()
    if "beam" in opts.runners and not os.path.exists(BEAM_TOOL):
        raise app.UsageError(f"{BEAM_TOOL} not found")
    parent = opts.workdir or tempfile.gettempdir()
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench_fleet-", dir=parent)
    try:
        text, doc = bench(opts, work)
    except BenchError as e:
        sys.stderr.write(f"bench_fleet: error: {e} (rerun with --keep to inspect {work})\n")
        sys.exit(1)
    finally:
        if opts.keep:
            logging.info("kept %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if opts.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    app.run(main)
