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
     process that has already imported TensorFlow and repaired one directory (so the figures
     hold no start-up): scan and repair time against tensor count (--scaling_tensors) and
     against checkpoint size (--scaling_mib: one directory whose big tensors total that many
     MiB), the repair both with hard links (local disk) and with the data files copied (links
     disabled, as on stores that cannot link), and the file-system calls one scan and one repair
     make on TensorFlow's `ram://` file system (what becomes object-store requests on `gs://`).
  4. Prints the side-by-side table (command, runner, workers, dirs, median wall, dirs/s, the
     Beam/local ratio at the same worker count, CPU, peak RSS, mean and median seconds per
     directory inside the workers, the fixed part of the wall time), the goals (scan of 1,000
     < 10 s; repair of 1,000 < 60 s; Beam DirectRunner <= 3x the local run with as many
     workers), the scaling figures with least-squares fits, and the load average before and
     after. --json: one JSON document instead.

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

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from absl import app, flags, logging
from benchlib import EXPECTED, FIRST_STEP, BenchError, Case, Writer, measure, tail

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

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEAM_TOOL = os.path.join(REPO_ROOT, "tools", "beam_fleet.py")
GOAL_DIRS = 1000
GOAL_SECONDS = {"scan": 10.0, "repair": 60.0}
GOAL_BEAM_RATIO = 3.0
EXIT_CODE = {"scan": 3, "repair": 0}  # some directories are repairable; all repaired
LOCAL = "local"
BEAM = "beam"
RUNNER_LABELS = {LOCAL: "estimator-fix", BEAM: "beam DirectRunner"}
_MB = 10**6
_MIB = 2**20
_TAIL_LINES = 8  # of a failed child's stderr, in the error message


# The cases whose repair writes a new checkpoint `model.ckpt-fixed-N` (foreign: state file only).
_NEW_CHECKPOINT = frozenset({Case.NO_STEP, Case.INT32_STEP, Case.RENAMED_STEP})
_OTHER_PROBLEMS = (Case.INT32_STEP, Case.RENAMED_STEP, Case.FOREIGN)


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


@dataclasses.dataclass(frozen=True)
class ModelDir:
    name: str  # the basename: d0001-no_step
    path: str
    case: Case
    step: int
    tensor_count: int


@dataclasses.dataclass(frozen=True)
class Config:
    """One benchmarked configuration."""

    command: str  # scan | repair
    runner: str  # LOCAL | BEAM
    workers: int

    @property
    def label(self) -> str:
        """Does not perform I/O."""
        return f"{self.command}-{self.runner}-w{self.workers}"


@dataclasses.dataclass(frozen=True)
class Run:
    """One verified whole-process run."""

    config: Config
    repeat: int
    wall: float  # seconds, whole process
    peak_rss: int  # bytes, largest process of the tree
    cpu: float  # user + system seconds of the whole process tree
    tool_seconds: float  # what the tool's own summary says
    mean_dir_seconds: float  # the results' mean seconds, each worker's slowest left out
    median_dir_seconds: float  # the median result's seconds


@dataclasses.dataclass(frozen=True)
class Row:
    """Medians of one configuration's runs."""

    config: Config
    dirs: int
    runs: tuple[float, ...]
    wall: float
    dirs_per_second: float
    peak_rss: float
    cpu: float
    tool_seconds: float
    mean_dir_seconds: float
    median_dir_seconds: float
    fixed_seconds: float  # wall minus the per-directory work spread over the workers
    beam_ratio: float | None  # beam wall / local wall at the same workers (beam rows only)


# --- generation -------------------------------------------------------------------------------


def case_for(i: int) -> Case:
    """A third healthy, a third without a step, a third other problems. Does not perform I/O."""
    if i % 3 == 0:
        return Case.HEALTHY
    if i % 3 == 1:
        return Case.NO_STEP
    return _OTHER_PROBLEMS[(i // 3) % len(_OTHER_PROBLEMS)]


def _offsets(step: int) -> tuple[int, float]:
    """What a checkpoint's int64 and float32 values are shifted by. Pure."""
    return step % 997, step * 1e-6


def generate(root: str, *, num_dirs: int, tensors: int) -> list[ModelDir]:
    """Writes the fleet under ``root``: ``d<i>-<case>`` for i < ``num_dirs``."""
    writer = Writer(tensors, offsets=_offsets)
    os.makedirs(root)
    dirs = []
    for i in range(num_dirs):
        case = case_for(i)
        name = f"d{i:04d}-{case.value}"
        path = os.path.join(root, name)
        count = writer.write(path, case, FIRST_STEP + i)
        dirs.append(ModelDir(name, path, case, FIRST_STEP + i, count))
    return dirs


# --- files ------------------------------------------------------------------------------------


def fingerprint(root: str, *, hash_limit: int = 4 * _MIB) -> dict[str, tuple[int, ...] | str]:
    """Every file under ``root``: inode, size, mtime; and the sha256 of files up to
    ``hash_limit`` bytes. Equal fingerprints: nothing was written, renamed over or removed."""
    prints: dict[str, tuple[int, ...] | str] = {}
    for parent, _, names in os.walk(root):
        for name in names:
            path = os.path.join(parent, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            prints[rel] = (st.st_ino, st.st_size, st.st_mtime_ns)
            if st.st_size <= hash_limit:
                with open(path, "rb") as f:
                    prints[rel + "#sha256"] = hashlib.sha256(f.read()).hexdigest()
    return prints


def link_copy(src: str, dst: str) -> None:
    """A hard-linked copy of the tree ``src`` (``cp -al``): new directories, the same inodes."""
    subprocess.run(["cp", "-al", src, dst], check=True)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# --- one measured run -------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


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


def read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_run_results(config: Config, results: str) -> list[dict[str, Any]]:
    """The per-directory results a run wrote (the journal, or Beam's done + dead letters)."""
    if config.runner == LOCAL:
        return read_jsonl(results)
    return read_jsonl(results + "-done.jsonl") + read_jsonl(results + "-failed.jsonl")


def check_results(
    command: str, results: Sequence[Mapping[str, Any]], dirs: Sequence[ModelDir]
) -> None:
    """Raises BenchError unless every directory has one correct result. Does not perform I/O."""
    by_name: dict[str, Mapping[str, Any]] = {}
    for r in results:
        name = os.path.basename(str(r.get("model_dir")).rstrip("/"))
        if name in by_name:
            raise BenchError(f"two results for {name}")
        by_name[name] = r
    expected_names = {d.name for d in dirs}
    if set(by_name) != expected_names:
        missing = sorted(expected_names - set(by_name))[:3]
        extra = sorted(set(by_name) - expected_names)[:3]
        raise BenchError(f"{len(by_name)} results for {len(dirs)} dirs; missing {missing} {extra}")
    want = Counter(EXPECTED[d.case][0] for d in dirs)
    got = Counter(str(r.get("verdict")) for r in results)
    if got != want:
        raise BenchError(f"verdicts {dict(got)}, generated {dict(want)}")
    for d in dirs:
        r = by_name[d.name]
        verdict, code = EXPECTED[d.case]
        problems = list(r.get("problems") or [])
        if r.get("status") != "done" or r.get("verdict") != verdict:
            raise BenchError(f"{d.name}: {r.get('status')}, verdict {r.get('verdict')}: {r}")
        if code is not None and code not in problems:
            raise BenchError(f"{d.name}: problems {problems} lack {code}")
        if command == "scan":
            if r.get("exit_code") != (0 if d.case is Case.HEALTHY else 3):
                raise BenchError(f"{d.name}: scan exit code {r.get('exit_code')}")
            continue
        repaired = d.case is not Case.HEALTHY
        step = d.step if d.case in _NEW_CHECKPOINT else None
        if (
            r.get("exit_code") != 0
            or r.get("repaired") != repaired
            or r.get("step") != step
            or bool(r.get("changed")) != repaired
        ):
            raise BenchError(
                f"{d.name}: expected repaired={repaired} step={step}, got exit code "
                f"{r.get('exit_code')} repaired={r.get('repaired')} step={r.get('step')} "
                f"changed={r.get('changed')}"
            )


def check_repaired_tree(tree: str, dirs: Sequence[ModelDir]) -> None:
    """Every repaired copy scans healthy, its target the checkpoint the repair should name."""
    from estimator_fix.scan import scan

    for d in dirs:
        report = scan(os.path.join(tree, d.name))
        fixed = "-fixed" if d.case in _NEW_CHECKPOINT else ""
        want = f"model.ckpt{fixed}-{d.step}"
        target = os.path.basename(report.target or "")
        if report.verdict.value != "healthy" or target != want:
            codes = [p.code for p in report.problems]
            raise BenchError(
                f"{d.name} after repair: {report.verdict.value} {codes}, target {target}, "
                f"expected healthy with {want}"
            )


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
        command_line(config, tree, results), cwd=REPO_ROOT, log_stem=stem, env=_env()
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


def rows(runs: Sequence[Run], dirs: int) -> list[Row]:
    """Medians per configuration, in the order first run. Does not perform I/O."""
    order: list[Config] = []
    for r in runs:
        if r.config not in order:
            order.append(r.config)
    walls: dict[Config, float] = {}
    out = []
    for config in order:
        mine = [r for r in runs if r.config == config]
        wall = statistics.median(r.wall for r in mine)
        walls[config] = wall
        mean_dir = statistics.median(r.mean_dir_seconds for r in mine)
        local = walls.get(Config(config.command, LOCAL, config.workers))
        out.append(
            Row(
                config=config,
                dirs=dirs,
                runs=tuple(r.wall for r in mine),
                wall=wall,
                dirs_per_second=dirs / wall,
                peak_rss=statistics.median(r.peak_rss for r in mine),
                cpu=statistics.median(r.cpu for r in mine),
                tool_seconds=statistics.median(r.tool_seconds for r in mine),
                mean_dir_seconds=mean_dir,
                median_dir_seconds=statistics.median(r.median_dir_seconds for r in mine),
                fixed_seconds=wall - dirs * mean_dir / config.workers,
                beam_ratio=wall / local if config.runner == BEAM and local else None,
            )
        )
    return out


# --- the scaling probe (runs in a child process) ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProbeItem:
    label: str
    path: str  # the probe directory (scanned; never written)
    copies: tuple[str, ...]  # hard-linked copies to repair with links
    copy_copies: tuple[str, ...]  # copies to repair with links disabled
    tensors: int
    bytes: int


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def _no_hard_links() -> Iterator[None]:
    """``os.link`` fails as across file systems: the repair copies the data files instead."""
    real = os.link

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EXDEV, "links disabled by the benchmark")

    os.link = refuse
    try:
        yield
    finally:
        os.link = real


class _GfileCounter:
    """Counts the calls estimator_fix makes through ``tf.io.gfile`` (by kind)."""

    _FUNCTIONS = (
        "exists",
        "isdir",
        "stat",
        "listdir",
        "glob",
        "rename",
        "copy",
        "remove",
        "makedirs",
        "rmtree",
    )

    def __init__(self) -> None:
        import tensorflow as tf

        self.counts: Counter[str] = Counter()
        self._gfile = tf.io.gfile
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> _GfileCounter:
        for name in (*self._FUNCTIONS, "GFile"):
            self._saved[name] = getattr(self._gfile, name)
        for name in self._FUNCTIONS:
            setattr(self._gfile, name, self._counting(name, self._saved[name]))
        real_open = self._saved["GFile"]

        def opening(path: str, mode: str = "r") -> Any:
            self.counts["open-write" if "w" in mode or "a" in mode else "open-read"] += 1
            return real_open(path, mode)

        self._gfile.GFile = opening
        return self

    def _counting(self, name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            return real(*args, **kwargs)

        return call

    def __exit__(self, *exc: object) -> None:
        for name, real in self._saved.items():
            setattr(self._gfile, name, real)


def probe_child(spec_path: str) -> None:
    """The scaling probe, in a fresh process: prints one JSON document to stdout."""
    start = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import_seconds = time.perf_counter() - start
    rss_after_import = _rss_now()
    from estimator_fix import plan, repair, scan

    with open(spec_path) as f:
        spec = json.load(f)
    items = [
        ProbeItem(**{**d, "copies": tuple(d["copies"]), "copy_copies": tuple(d["copy_copies"])})
        for d in spec["items"]
    ]

    def fix(path: str) -> tuple[float, float, bool]:
        t0 = time.perf_counter()
        the_plan = plan.plan(scan.scan(path))
        t1 = time.perf_counter()
        result = repair.repair(the_plan)
        t2 = time.perf_counter()
        if result.new_prefix is None:
            raise BenchError(f"{path}: the probe's repair wrote no checkpoint")
        return t2 - t0, t2 - t1, result.linked

    first = fix(spec["warmup"])[0]  # graph, Saver and reader code paths warmed up
    out_items = []
    for item in items:
        n = max(3, min(50, 20_000 // max(item.tensors, 1)))
        scans = []
        for _ in range(n):
            t0 = time.perf_counter()
            scan.scan(item.path)
            scans.append(time.perf_counter() - t0)
        link, copy = [], []
        for c in item.copies:
            total, own, linked = fix(c)
            if not linked:
                raise BenchError(f"{c}: the repair copied instead of linking")
            link.append((total, own))
        with _no_hard_links():
            for c in item.copy_copies:
                total, own, linked = fix(c)
                if linked:
                    raise BenchError(f"{c}: the repair linked although links were disabled")
                copy.append((total, own))
        out_items.append(
            {
                "label": item.label,
                "tensors": item.tensors,
                "bytes": item.bytes,
                "scan_ms": 1e3 * statistics.median(scans),
                "repair_link_ms": 1e3 * statistics.median(t for t, _ in link),
                "repair_link_own_ms": 1e3 * statistics.median(o for _, o in link),
                "repair_copy_ms": 1e3 * statistics.median(t for t, _ in copy),
            }
        )
        logging.info("probe %s: %s", item.label, out_items[-1])

    # Requests on an object store: the same repair on TensorFlow's ram:// file system.
    src = spec["ram_source"]
    ram = "ram://bench_fleet/" + os.path.basename(src)
    tf.io.gfile.makedirs(ram)
    for name in os.listdir(src):
        tf.io.gfile.copy(os.path.join(src, name), f"{ram}/{name}")
    with _GfileCounter() as scan_calls:
        t0 = time.perf_counter()
        report = scan.scan(ram)
        ram_scan = time.perf_counter() - t0
    with _GfileCounter() as repair_calls:
        t0 = time.perf_counter()
        result = repair.repair(plan.plan(report))
        ram_repair = time.perf_counter() - t0
    if result.new_prefix is None or result.linked:
        raise BenchError(f"{ram}: the ram:// repair did not copy a new checkpoint")
    json.dump(
        {
            "import_seconds": import_seconds,
            "rss_after_import": rss_after_import,
            "first_repair_seconds": first,
            "peak_rss": _peak_rss(),
            "items": out_items,
            "ram": {
                "scan_calls": dict(scan_calls.counts),
                "repair_calls": dict(repair_calls.counts),
                "scan_ms": 1e3 * ram_scan,
                "repair_ms": 1e3 * ram_repair,
            },
        },
        sys.stdout,
    )


_PROBE_SNIPPET = """\
import sys
sys.path.insert(0, sys.argv[1])
from bench_fleet import probe_child
probe_child(sys.argv[2])
"""


def fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least squares ``y = a + b x``; returns (a, b). Does not perform I/O."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


def scaling(opts: Options, work: str) -> dict[str, Any]:
    """Generates the probe's directories and copies, runs the probe child, returns its figures.

    Raises:
      BenchError: the probe failed.
    """
    root = os.path.join(work, "scaling")
    os.makedirs(root)
    start = time.perf_counter()
    items = []

    def add(label: str, tensors: int, big_mib: int) -> ProbeItem:
        writer = Writer(tensors + 1, offsets=_offsets)  # + the step key, no_step lacks it
        path = os.path.join(root, label.replace(" ", "_"))
        keys = writer.write(path, Case.NO_STEP, 4242, big_mib=big_mib)
        size = sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
        copies, copy_copies = [], []
        for r in range(opts.scaling_repeats):
            copies.append(f"{path}-link{r}")
            copy_copies.append(f"{path}-copy{r}")
            link_copy(path, copies[-1])
            link_copy(path, copy_copies[-1])
        return ProbeItem(label, path, tuple(copies), tuple(copy_copies), keys, size)

    warmup = add("warmup", opts.tensors_per_dir, 0)
    items += [add(f"{n} tensors", n, 0) for n in opts.scaling_tensors]
    items += [add(f"{m} MiB", opts.tensors_per_dir, m) for m in opts.scaling_mib]
    generation = time.perf_counter() - start
    spec = os.path.join(root, "spec.json")
    with open(spec, "w") as f:
        json.dump(
            {
                "warmup": warmup.copies[0],
                "ram_source": items[0].path,
                "items": [dataclasses.asdict(i) for i in items],
            },
            f,
        )
    os.sync()
    stem = os.path.join(work, "logs", "scaling")
    tools = os.path.join(REPO_ROOT, "tools")
    cmd = [sys.executable, "-c", _PROBE_SNIPPET, tools, spec]
    measured = measure(cmd, cwd=REPO_ROOT, log_stem=stem, env=_env())
    if measured.exit_code != 0:
        raise BenchError(
            f"the scaling probe exited {measured.exit_code}:\n{tail(stem + '.err', _TAIL_LINES)}"
        )
    with open(stem + ".out") as f:
        doc: dict[str, Any] = json.load(f)
    shutil.rmtree(root)
    by_tensors = [i for i in doc["items"] if i["label"].endswith("tensors")]
    by_size = [i for i in doc["items"] if i["label"].endswith("MiB")]
    fits = {
        "scan_ms_per_tensor": fit(
            [i["tensors"] for i in by_tensors], [i["scan_ms"] for i in by_tensors]
        ),
        "repair_link_ms_per_tensor": fit(
            [i["tensors"] for i in by_tensors], [i["repair_link_ms"] for i in by_tensors]
        ),
        "repair_link_ms_per_mib": fit(
            [i["bytes"] / _MIB for i in by_size], [i["repair_link_ms"] for i in by_size]
        ),
        "repair_copy_ms_per_mib": fit(
            [i["bytes"] / _MIB for i in by_size], [i["repair_copy_ms"] for i in by_size]
        ),
    }
    return {
        **doc,
        "fits": fits,
        "generation_seconds": generation,
        "probe_wall": measured.wall,
        "probe_peak_rss": measured.peak_rss_bytes,
    }


# --- report -----------------------------------------------------------------------------------


def _table(cells: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in cells) for c in range(len(cells[0]))]
    return [
        "  ".join(
            cell.ljust(w) if c < 2 else cell.rjust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]


def render(
    opts: Options,
    table_rows: Sequence[Row],
    probe: Mapping[str, Any] | None,
    header: Sequence[str],
) -> str:
    """The report. Does not perform I/O."""
    lines = [*header, ""]
    cells = [
        (
            "command",
            "runner",
            "workers",
            "dirs",
            "median wall",
            "dirs/s",
            "beam/local",
            "CPU s",
            "peak RSS",
            "ms/dir*",
            "median",
            "fixed s**",
        )
    ]
    for r in table_rows:
        cells.append(
            (
                r.config.command,
                RUNNER_LABELS[r.config.runner],
                str(r.config.workers),
                str(r.dirs),
                f"{r.wall:.2f} s",
                f"{r.dirs_per_second:.1f}",
                f"{r.beam_ratio:.2f}x" if r.beam_ratio is not None else "",
                f"{r.cpu:.1f}",
                f"{r.peak_rss / _MB:.0f} MB",
                f"{1e3 * r.mean_dir_seconds:.1f}",
                f"{1e3 * r.median_dir_seconds:.1f}",
                f"{r.fixed_seconds:.1f}",
            )
        )
    lines += _table(cells)
    lines += [
        "",
        "median wall: the whole process (interpreter, imports, workers, pipeline), median of the"
        " runs;",
        "beam/local: Beam's wall / the local run's with as many workers; CPU s: user + system of"
        " every",
        "process of the run (median); peak RSS: its largest process;",
        "* mean seconds per directory inside its worker (the results' `seconds`; each worker's"
        " slowest,",
        "  its first with the TensorFlow import, left out); median: of all the directories;",
        "** wall - dirs x ms/dir / workers: interpreter and worker start-up, imports, hand-offs.",
        "",
        "runs (s):",
    ]
    for r in table_rows:
        runs = ", ".join(f"{s:.2f}" for s in r.runs)
        lines.append(f"  {r.config.label}: {runs} (tool's own: {r.tool_seconds:.2f} s)")
    lines += ["", "goals:"]
    for command, goal in GOAL_SECONDS.items():
        mine = [r for r in table_rows if r.config.command == command and r.config.runner == LOCAL]
        for r in mine:
            seconds = r.wall if r.dirs == GOAL_DIRS else GOAL_DIRS / r.dirs_per_second
            how = "" if r.dirs == GOAL_DIRS else f" (extrapolated from {r.dirs})"
            met = "MET    " if seconds < goal else "NOT MET"
            lines.append(
                f"  {met}  {command} of {GOAL_DIRS:,} dirs < {goal:g} s, estimator-fix "
                f"--workers={r.config.workers}: {seconds:.2f} s{how}"
            )
    for r in table_rows:
        if r.beam_ratio is not None:
            met = "MET    " if r.beam_ratio <= GOAL_BEAM_RATIO else "NOT MET"
            lines.append(
                f"  {met}  {r.config.command}: Beam DirectRunner <= {GOAL_BEAM_RATIO:g}x local"
                f" (both {r.config.workers} workers): {r.beam_ratio:.2f}x"
            )
    if probe is not None:
        lines += ["", *render_probe(probe)]
    return "\n".join(lines) + "\n"


def render_probe(probe: Mapping[str, Any]) -> list[str]:
    """Does not perform I/O."""
    lines = [
        f"scaling probe (one process; TensorFlow imported in {probe['import_seconds']:.2f} s, "
        f"RSS {probe['rss_after_import'] / _MB:.0f} MB after the import, peak "
        f"{probe['peak_rss'] / _MB:.0f} MB; first repair {1e3 * probe['first_repair_seconds']:.0f}"
        " ms, not counted; the rest are medians):",
    ]
    cells = [
        (
            "directory",
            "tensors",
            "size",
            "scan ms",
            "repair ms (links)",
            "of which repair()",
            "repair ms (copies)",
        )
    ]
    for i in probe["items"]:
        cells.append(
            (
                i["label"],
                str(i["tensors"]),
                f"{i['bytes'] / _MIB:.1f} MiB",
                f"{i['scan_ms']:.2f}",
                f"{i['repair_link_ms']:.1f}",
                f"{i['repair_link_own_ms']:.1f}",
                f"{i['repair_copy_ms']:.1f}",
            )
        )
    lines += ["  " + line for line in _table(cells)]
    fits = probe["fits"]
    a, b = fits["scan_ms_per_tensor"]
    c, d = fits["repair_link_ms_per_tensor"]
    e, g = fits["repair_link_ms_per_mib"]
    h, k = fits["repair_copy_ms_per_mib"]
    copied = f"   (~{1000.0 / k:.0f} MiB/s copied)" if k > 0 else ""
    lines += [
        "  fits (least squares over the rows above):",
        f"    scan            = {a:.2f} ms + {1e3 * b:.2f} us x tensors",
        f"    repair (links)  = {c:.1f} ms + {1e3 * d:.2f} us x tensors",
        f"    repair (links)  = {e:.1f} ms + {g:.4f} ms x MiB",
        f"    repair (copies) = {h:.1f} ms + {k:.3f} ms x MiB{copied}",
    ]
    ram = probe["ram"]
    for what in ("scan", "repair"):
        calls = ram[f"{what}_calls"]
        listed = ", ".join(f"{n} {k}" for k, n in sorted(calls.items(), key=lambda kv: -kv[1]))
        lines.append(
            f"  ram:// {what} of the {probe['items'][0]['tensors']}-tensor directory: "
            f"{sum(calls.values())} tf.io.gfile calls ({listed}); {ram[f'{what}_ms']:.1f} ms"
        )
    lines.append(
        "    (plus TensorFlow's own C++ file access: the step's Saver writes a data file and an "
        "index, the read-back opens two indexes and the step's data file)"
    )
    return lines


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
    dirs = generate(gen, num_dirs=opts.num_dirs, tensors=opts.tensors_per_dir)
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
    probe = scaling(opts, work) if opts.scaling else None
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
    return render(opts, table_rows, probe, header), doc


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
