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
                                global_step, Saver.save), not timed.
              (testdata/keras_missing_step is not offered: scan calls it unrepairable.)
              The model code is testdata/models.py (builder and serving fn from the manifest).
       large  a DNNClassifier like testdata/models.py:dnn_classifier but with
              --large_hidden_units (default 8192,8192: a 512 MiB checkpoint with the Adagrad
              accumulators, 256 MiB of weights exported), trained --large_steps step(s) in a
              child process (the generation time is logged, not timed) keeping one checkpoint;
              the model code is a generated large_model.py. The broken twin is a copy whose
              every `.index` has the `global_step` entry dropped (rewritten with
              estimator_fix.checkpoint.bundle: read_index, then encode_index over the header and the
              other entries' (key, raw value) pairs); the data files are left as they are,
              which TensorFlow reads fine.
     The broken twin must scan as `repairable` (checked in-process; scan needs no TensorFlow).
  2. Runs each method as a whole separate process, --repeats times, alternating the order,
     each on a fresh `cp -r` copy of its model directory under runs/ (removed afterwards):
       bare   a script written into the work directory: import TensorFlow, load the model
              code, build the Estimator over a scratch model_dir, then `export_saved_model(
              base, serving_input_fn, checkpoint_path=<healthy copy>/<latest prefix>)`;
              it must print a SavedModel directory holding saved_model.pb. It records when
              it started, how long the TensorFlow import, the build and the export took.
       fix    `python -m estimator_fix fix --model_dir=<broken copy> --export_dir=<base>
              --estimator=SPEC --serving_input_fn=SPEC --json`; it must exit 0, its JSON must
              say `"ok": true` with a repair done and a SavedModel on disk.
       floor  `python -c "import tensorflow, tensorflow_estimator"`: what both pay anyway.
     Per run: wall time, CPU time and peak RSS of that one child (`os.wait4` in a ~10 MB launcher
     process that spawns it, as tools/bench_repair.py does, so this process's RSS does not leak
     in). Page cache is warm (the copy was just made); `os.sync()` runs before each run.
  3. Where fix's time goes, two ways:
       - from the measured runs' JSON: `seconds` (inside fix()), `repair.seconds`,
         `export.seconds` (export_saved_model only); the rest is not broken down by the JSON;
       - --profile_repeats extra runs (not in the table above) of a child script that calls
         `estimator_fix.fix.fix` itself, with timers wrapped around the stage functions it
         calls (scan, plan, load_model, preflight, repair, export, verify and verify's
         _read_checkpoint_step, _load_and_run and _predict): the same code path as the CLI,
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
    bare_export.py, profile_fix.py       the child scripts
    make_healthy.py, small/healthy/      (--model=session_loop only: its healthy twin)
    large/large_model.py, large/generate.py, large/healthy/, large/broken/
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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from absl import app, flags, logging
from benchlib import BenchError, Measured, measure, tail

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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTDATA = os.path.join(REPO, "testdata")
MODELS_FILE = os.path.join(TESTDATA, "models.py")
MANIFEST = os.path.join(TESTDATA, "MANIFEST.json")

BARE = "bare"
FIX = "fix"
FLOOR = "floor"
METHODS = (BARE, FIX, FLOOR)
LABELS = {
    BARE: "bare: export_saved_model (healthy copy)",
    FIX: "estimator-fix fix (broken copy)",
    FLOOR: "floor: import tensorflow, estimator",
}
GOAL_RATIO = 1.5
_GC_SHOWN = 0.005  # seconds of full garbage collection worth a note on a stage line
NOISY_SPREAD = 0.25  # a method's (slowest - fastest) / median above this: the machine was busy
FAMILIES = {  # --model -> the broken fixture; its healthy twin comes from the manifest
    "dnn_classifier": "missing_step",
    "session_loop": "session_loop_int32_step",
}
LARGE_BUILDER = "dnn_classifier_large"
LARGE_SERVING = "dnn_classifier_large_serving_input_fn"
STEP_KEY = "global_step"
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # what the estimator-fix CLI sets; same for all
_MB = 10**6
_MIB = 2**20

# --- child scripts ------------------------------------------------------------------------------

BARE_SCRIPT = '''\
"""The bare export: what a user with a healthy checkpoint runs. Written by bench_export.py.

argv: models_file builder serving_fn checkpoint_path export_base scratch_model_dir timings_json
"""

import time

EPOCH_START = time.time()
_t0 = time.perf_counter()
import tensorflow as tf  # noqa: E402

_t1 = time.perf_counter()
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def main(models_file, builder, serving_fn, checkpoint, base, scratch, timings):
    t1 = time.perf_counter()
    sys.path.insert(0, os.path.dirname(models_file))
    spec = importlib.util.spec_from_file_location("bench_models", models_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    estimator = getattr(module, builder)(scratch)
    t2 = time.perf_counter()
    path = estimator.export_saved_model(
        base, getattr(module, serving_fn), checkpoint_path=checkpoint
    )
    t3 = time.perf_counter()
    stages = [
        {"stage": "import tensorflow", "depth": 0, "seconds": _t1 - _t0},
        {"stage": "load model code, build the Estimator", "depth": 0, "seconds": t2 - t1},
        {"stage": "export_saved_model", "depth": 0, "seconds": t3 - t2},
    ]
    print(path.decode() if isinstance(path, bytes) else path)
    sys.stdout.flush()
    with open(timings, "w") as f:
        json.dump({"epoch_start": EPOCH_START, "epoch_end": time.time(), "stages": stages}, f)


if __name__ == "__main__":
    main(*sys.argv[1:8])
'''

PROFILE_SCRIPT = '''\
"""estimator_fix.fix.fix in-process, a timer around each stage function. By bench_export.py.

argv: model_dir export_base estimator_spec serving_spec timings_json
"""

import time

EPOCH_START = time.time()
import functools  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

STAGES = []
_OPEN = []  # the records of the stages running now, innermost last
_GC_START = [0.0]


def _on_gc(phase, info):
    """Charges every full (generation 2) collection to the innermost stage running."""
    if info["generation"] != 2:
        return
    if phase == "start":
        _GC_START[0] = time.perf_counter()
    elif _OPEN:
        _OPEN[-1]["gc_seconds"] += time.perf_counter() - _GC_START[0]


gc.callbacks.append(_on_gc)

# As estimator_fix.cli.run sets them up.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("tensorflow").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=UserWarning)


def timed(label, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        record = {"stage": label, "depth": len(_OPEN), "seconds": None, "gc_seconds": 0.0}
        STAGES.append(record)
        _OPEN.append(record)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record["seconds"] = time.perf_counter() - start
            _OPEN.pop()

    return wrapper


def main(model_dir, export_base, estimator, serving, timings):
    def imports():
        # What userspec.build_estimator imports first thing; the CLI gets there in load_model.
        import tensorflow  # noqa: F401
        import tensorflow_estimator.python.estimator.estimator  # noqa: F401

    def our_imports():
        global export_lib, fix_lib, plan_lib, repair_lib, verify_lib, ModelSpec, ServingSpec
        from estimator_fix import export as export_lib
        from estimator_fix import fix as fix_lib
        from estimator_fix import plan as plan_lib
        from estimator_fix import repair as repair_lib
        from estimator_fix import verify as verify_lib
        from estimator_fix.model_code.serving import ServingSpec
        from estimator_fix.model_code.userspec import ModelSpec

    # The CLI's order: estimator_fix first, TensorFlow later. It matters: one-time set-up
    # (~0.15 s) lands in the pre-flight or in the repair depending on it.
    timed("import estimator_fix", our_imports)()
    timed("import tensorflow, tensorflow_estimator", imports)()
    patches = [
        (fix_lib, "scan", "scan"),
        (plan_lib, "plan", "plan"),
        (fix_lib, "load_model", "load model code, build the Estimator"),
        (export_lib, "preflight", "pre-flight (build graph, compare keys)"),
        (repair_lib, "repair", "repair"),
        (export_lib, "export", "export (export_saved_model)"),
        (verify_lib, "verify", "verify"),
        (verify_lib, "_read_checkpoint_step", "read the checkpoint's step"),
        (verify_lib, "_load_and_run", "load the SavedModel, run its signatures"),
        (verify_lib, "_predict", "Estimator.predict on the checkpoint (parity)"),
    ]
    unpatched = []
    for module, attr, label in patches:
        fn = getattr(module, attr, None)
        if fn is None:
            unpatched.append(f"{module.__name__}.{attr}")
        else:
            setattr(module, attr, timed(label, fn))
    options = fix_lib.FixOptions(
        model_dir=model_dir,
        model=ModelSpec(estimator=estimator),
        serving=ServingSpec(input_fn=serving),
        export_dir=export_base,
    )
    result = timed("fix()", fix_lib.fix)(options)
    with open(timings, "w") as f:
        json.dump(
            {
                "epoch_start": EPOCH_START,
                "epoch_end": time.time(),
                "stages": STAGES,
                "ok": result.ok,
                "export_path": result.export_path,
                "repaired": result.repair is not None,
                "fix_seconds": result.seconds,
                "unpatched": unpatched,
            },
            f,
        )


if __name__ == "__main__":
    main(*sys.argv[1:6])
'''

MAKE_HEALTHY_SCRIPT = '''\
"""The naive recipe: a variable per key, restore, add an int64 global_step, save. By bench_export.

argv: source_prefix destination_dir step. Prints the new prefix.
"""

import os
import sys

import tensorflow as tf


def main(source, destination, step):
    dtypes = tf.train.load_checkpoint(source).get_variable_to_dtype_map()
    graph = tf.Graph()
    with graph.as_default():
        variables = {
            name: tf.compat.v1.get_variable(name, shape=shape, dtype=dtypes[name])
            for name, shape in tf.train.list_variables(source)
            if name != "global_step"
        }
        global_step = tf.compat.v1.train.get_or_create_global_step()
        restorer = tf.compat.v1.train.Saver(var_list=variables)
        saver = tf.compat.v1.train.Saver(
            var_list={**variables, "global_step": global_step}, save_relative_paths=True
        )
        with tf.compat.v1.Session(graph=graph) as sess:
            restorer.restore(sess, source)
            sess.run(global_step.initializer)
            sess.run(global_step.assign(step))
            prefix = saver.save(
                sess,
                os.path.join(destination, "model.ckpt"),
                global_step=step,
                write_meta_graph=False,
            )
    print(prefix)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
'''

LARGE_MODEL_TEMPLATE = '''\
"""testdata/models.py:dnn_classifier, wider: the --size=large subject of bench_export.py."""

import sys

import tensorflow as tf

sys.path.insert(0, {testdata!r})
import models  # noqa: E402  (testdata/models.py)

HIDDEN_UNITS = {hidden_units!r}


def {builder}(model_dir):
    return tf.estimator.DNNClassifier(
        hidden_units=HIDDEN_UNITS,
        feature_columns=[tf.feature_column.numeric_column(n) for n in ("x0", "x1", "x2")],
        n_classes=3,
        optimizer=lambda: tf.keras.optimizers.legacy.Adagrad(learning_rate=0.5),
        model_dir=model_dir,
        config=models.run_config(keep_checkpoint_max=1),  # one checkpoint: half the copying
    )


{serving} = models.dnn_classifier_serving_input_fn
dnn_classifier_large_train_input_fn = models.dnn_classifier_train_input_fn
'''

GENERATE_LARGE_SCRIPT = '''\
"""Trains the --size=large model. By bench_export.py. argv: model_dir steps. Prints the prefix."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import large_model  # noqa: E402
import tensorflow as tf  # noqa: E402

model_dir, steps = sys.argv[1], int(sys.argv[2])
estimator = large_model.{builder}(model_dir)
estimator.train(large_model.dnn_classifier_large_train_input_fn, steps=steps)
print(tf.train.latest_checkpoint(model_dir))
'''


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


@dataclasses.dataclass(frozen=True)
class Stage:
    """One timed stage of a child: its label, nesting depth and seconds."""

    stage: str
    depth: int
    seconds: float
    gc: float = 0.0  # full garbage collections while it ran, not in a child stage (profile only)


@dataclasses.dataclass(frozen=True)
class Run:
    """One measured child process."""

    method: str
    repeat: int
    wall: float
    peak_rss: int
    cpu: float
    fix_json: Mapping[str, float] = dataclasses.field(default_factory=dict)
    stages: tuple[Stage, ...] = ()  # bare: its own stamps (start-up and exit included)


@dataclasses.dataclass(frozen=True)
class Summary:
    """One method's runs: median and fastest wall, median peak RSS, spread of the walls."""

    method: str
    wall: float
    fastest: float
    spread: float  # (slowest - fastest) / median
    cpu: float  # median user + system seconds
    peak_rss: float


@dataclasses.dataclass(frozen=True)
class Result:
    """Everything measured on one subject."""

    subject: Subject
    runs: tuple[Run, ...]
    profiles: tuple[tuple[Stage, ...], ...]  # one per profile run
    profile_walls: tuple[float, ...]
    load_before: float  # 1-minute load average when the measured runs started
    load_after: float


# --- subjects -----------------------------------------------------------------------------------


def dir_bytes(path: str) -> int:
    """Bytes of every file under ``path``."""
    return sum(
        os.path.getsize(os.path.join(parent, name))
        for parent, _, names in os.walk(path)
        for name in names
    )


def checkpoint_facts(prefix: str) -> tuple[int, int]:
    """(tensor count, bytes of the .index and data files) of a V2 checkpoint prefix."""
    from estimator_fix.checkpoint import bundle

    index = bundle.read_index(bundle.index_path(prefix))
    n = index.header.num_shards
    files = [bundle.index_path(prefix)] + [bundle.data_path(prefix, i, n) for i in range(n)]
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
        proc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=err, env=child_env())
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
        script = os.path.join(work, "make_healthy.py")
        with open(script, "w") as f:
            f.write(MAKE_HEALTHY_SCRIPT)
        source = os.path.join(broken_dir, broken["latest_checkpoint"])
        start = time.perf_counter()
        prefix = run_checked(
            [sys.executable, script, source, healthy_dir, str(broken["step"])],
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
    from estimator_fix.checkpoint import bundle

    path = bundle.index_path(prefix)
    index = bundle.read_index(path)
    kept = [(e.key, e.raw_value) for e in index.entries if e.key != STEP_KEY.encode()]
    if len(kept) == len(index.entries):
        return False
    data = bundle.encode_index([(b"", index.header.raw_value), *kept])
    tmp = path + ".bench-tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return True


def large_subject(config: Config, work: str) -> Subject:
    """Trains the wide DNNClassifier, then makes a copy without ``global_step``.

    Raises:
      BenchError: training failed, or the copy is not broken as intended.
    """
    base = os.path.join(work, "large")
    os.makedirs(base)
    models_file = os.path.join(base, "large_model.py")
    with open(models_file, "w") as f:
        f.write(
            LARGE_MODEL_TEMPLATE.format(
                testdata=TESTDATA,
                hidden_units=list(config.large_hidden_units),
                builder=LARGE_BUILDER,
                serving=LARGE_SERVING,
            )
        )
    generate = os.path.join(base, "generate.py")
    with open(generate, "w") as f:
        f.write(GENERATE_LARGE_SCRIPT.format(builder=LARGE_BUILDER))
    healthy_dir = os.path.join(base, "healthy")
    start = time.perf_counter()
    prefix = run_checked(
        [sys.executable, generate, healthy_dir, str(config.large_steps)],
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
    units = ",".join(str(u) for u in config.large_hidden_units)
    return Subject(
        size="large",
        description=(
            f"large: DNNClassifier hidden_units=[{units}], {config.large_steps} step(s); fix on "
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


# --- running ------------------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    return {**os.environ, **CHILD_ENV}


def stamped_stages(doc: Mapping[str, Any], launched: Measured) -> tuple[Stage, ...]:
    """A child's own stage timings framed by interpreter start-up and exit. Does not do I/O."""
    stages = [Stage("interpreter start-up", 0, doc["epoch_start"] - launched.started)]
    stages += [
        Stage(s["stage"], int(s["depth"]), float(s["seconds"]), float(s.get("gc_seconds", 0.0)))
        for s in doc["stages"]
    ]
    stages.append(Stage("exit (after the last line)", 0, launched.ended - doc["epoch_end"]))
    return tuple(stages)


def check_saved_model(path: str, *, what: str) -> None:
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise BenchError(f"{what}: {path} holds no saved_model.pb")


def run_one(method: str, repeat: int, *, subject: Subject, work: str, bare_script: str) -> Run:
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
            bare_script,
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
    launched = measure(cmd, cwd=REPO, log_stem=log_stem, env=child_env())
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


def profile_one(
    repeat: int, *, subject: Subject, work: str, profile_script: str
) -> tuple[tuple[Stage, ...], float]:
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
        profile_script,
        model,
        os.path.join(run_dir, "export"),
        subject.estimator_spec,
        subject.serving_spec,
        timings,
    ]
    os.sync()
    log_stem = os.path.join(work, "logs", name)
    launched = measure(cmd, cwd=REPO, log_stem=log_stem, env=child_env())
    if launched.exit_code != 0:
        raise BenchError(f"{name} exited {launched.exit_code}:\n{tail(log_stem + '.err')}")
    with open(timings) as f:
        doc = json.load(f)
    if doc["ok"] is not True or not doc["repaired"]:
        raise BenchError(f"{name}: fix returned ok={doc['ok']}, repaired={doc['repaired']}")
    if doc["unpatched"]:
        logging.warning("%s: no such functions to time: %s", name, ", ".join(doc["unpatched"]))
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
    bare_script = os.path.join(work, "bare_export.py")
    profile_script = os.path.join(work, "profile_fix.py")
    load_before = os.getloadavg()[0]
    runs = tuple(
        run_one(method, r, subject=subject, work=work, bare_script=bare_script)
        for r in range(config.repeats)
        for method in order(r)
    )
    profiled = [
        profile_one(r, subject=subject, work=work, profile_script=profile_script)
        for r in range(config.profile_repeats)
    ]
    return Result(
        subject=subject,
        runs=runs,
        profiles=tuple(p for p, _ in profiled),
        profile_walls=tuple(w for _, w in profiled),
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )


# --- the report ---------------------------------------------------------------------------------


def summarize(runs: Sequence[Run]) -> dict[str, Summary]:
    """Per method. Does not perform I/O."""
    out = {}
    for method in METHODS:
        walls = [r.wall for r in runs if r.method == method]
        median = statistics.median(walls)
        out[method] = Summary(
            method=method,
            wall=median,
            fastest=min(walls),
            spread=(max(walls) - min(walls)) / median,
            cpu=statistics.median(r.cpu for r in runs if r.method == method),
            peak_rss=statistics.median(r.peak_rss for r in runs if r.method == method),
        )
    return out


def median_run(
    stage_lists: Sequence[tuple[Stage, ...]], walls: Sequence[float]
) -> tuple[tuple[Stage, ...], float]:
    """The stages and wall of the run with the median wall (the lower one of an even count).

    One whole run rather than a median per line, so that its lines add up. Does not perform I/O.
    """
    ranked = sorted(range(len(walls)), key=lambda i: walls[i])
    pick = ranked[(len(ranked) - 1) // 2]
    return stage_lists[pick], walls[pick]


def render_stages(stages: Sequence[Stage], *, wall: float) -> list[str]:
    """Indented stage lines; a parent's children are followed by its "(other)" time. Pure."""
    lines: list[str] = []

    def emit(i: int) -> int:
        """Renders ``stages[i]`` and its descendants; returns the index after them."""
        s = stages[i]
        pad = "  " * (s.depth + 1)
        gc = f"  (of which full GC {s.gc:.3f} s)" if s.gc >= _GC_SHOWN else ""
        lines.append(f"{pad}{s.stage:<{52 - len(pad)}} {s.seconds:7.3f} s{gc}")
        j, children = i + 1, 0.0
        while j < len(stages) and stages[j].depth > s.depth:
            children += stages[j].seconds
            j = emit(j)
        if j > i + 1:
            pad = "  " * (s.depth + 2)
            lines.append(f"{pad}{'(other)':<{52 - len(pad)}} {s.seconds - children:7.3f} s")
        return j

    i = 0
    while i < len(stages):
        i = emit(i)
    total = sum(s.seconds for s in stages if s.depth == 0)
    lines.append(
        f"  {'sum of the top-level lines':<50} {total:7.3f} s  (process wall {wall:.3f} s)"
    )
    return lines


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def render(result: Result, config: Config) -> tuple[str, bool]:
    """The report for one subject and whether the goal was met. Does not perform I/O."""
    subject = result.subject
    medians = summarize(result.runs)
    bare, fix, floor = medians[BARE], medians[FIX], medians[FLOOR]
    width = max(len(v) for v in LABELS.values())
    lines = [
        f"== {subject.description}",
        f"checkpoint {subject.checkpoint_name}: {subject.tensors} tensors, "
        f"{subject.checkpoint_bytes / _MIB:.1f} MiB (model directory {subject.dir_bytes / _MIB:.1f}"
        " MiB)",
        f"repeats: {config.repeats}, whole processes, alternating order, fresh `cp -r` copy each; "
        f"children run with TF_CPP_MIN_LOG_LEVEL=2; {os.cpu_count()} CPU(s), 1-min load average "
        f"{result.load_before:.2f} before the runs, {result.load_after:.2f} after",
        "",
        "runs:",
    ]
    for r in result.runs:
        extra = ""
        if r.fix_json:
            extra = "  JSON: " + ", ".join(f"{k} {v:.3f}" for k, v in r.fix_json.items())
        lines.append(
            f"  {r.repeat}  {LABELS[r.method]:<{width}}  {r.wall:7.2f} s  CPU {r.cpu:6.2f} s  "
            f"{r.peak_rss / _MB:6.0f} MB{extra}"
        )
    header = (
        f"{'method':<{width}}  {'wall (median)':>13}  {'(fastest)':>9}  {'(spread)':>8}  "
        f"{'CPU (median)':>12}  {'peak RSS':>9}"
    )
    lines += ["", header, "-" * len(header)]
    for s in medians.values():
        lines.append(
            f"{LABELS[s.method]:<{width}}  {s.wall:11.2f} s  {s.fastest:7.2f} s  "
            f"{s.spread:8.0%}  {s.cpu:10.2f} s  {s.peak_rss / _MB:6.0f} MB"
        )
    lines.append(
        f"{'fix / bare':<{width}}  {_ratio(fix.wall, bare.wall):>13}  "
        f"{_ratio(fix.fastest, bare.fastest):>9}  {'':>8}  {_ratio(fix.cpu, bare.cpu):>12}  "
        f"{_ratio(fix.peak_rss, bare.peak_rss):>9}"
    )
    above_fix, above_bare = fix.wall - floor.wall, bare.wall - floor.wall
    lines.append(
        f"{'(fix - floor) / (bare - floor)':<{width}}  {_ratio(above_fix, above_bare):>13}  "
        f"{_ratio(fix.fastest - floor.fastest, bare.fastest - floor.fastest):>9}  "
        f"{'':>8}  {_ratio(fix.cpu - floor.cpu, bare.cpu - floor.cpu):>12}  {'':>9}  "
        f"(median walls: {above_fix:.2f} s vs {above_bare:.2f} s above the floor)"
    )
    noisy = [m.method for m in medians.values() if m.spread > NOISY_SPREAD]
    if floor.wall >= bare.wall or noisy:
        lines.append(
            f"NOISY: {', '.join(noisy) or 'none'} spread over {NOISY_SPREAD:.0%}"
            f"{'; the floor is not below bare' if floor.wall >= bare.wall else ''}; load "
            f"average {result.load_before:.2f} -> {result.load_after:.2f} on {os.cpu_count()} "
            "CPU(s): rerun on an idle machine"
        )
    met = fix.wall <= GOAL_RATIO * bare.wall
    lines += [
        "",
        f"goal: {'MET    ' if met else 'NOT MET'}  fix <= {GOAL_RATIO}x bare (whole process, "
        f"median wall): {fix.wall / bare.wall:.2f}x ({fix.wall:.2f} s vs {bare.wall:.2f} s)",
    ]

    fix_runs = [r for r in result.runs if r.method == FIX]
    keys = list(fix_runs[0].fix_json)
    lines += ["", f"where fix's time goes, from `fix --json` (medians of {len(fix_runs)} runs):"]
    json_medians = {
        k: statistics.median(r.fix_json[k] for r in fix_runs if k in r.fix_json) for k in keys
    }
    for k, v in json_medians.items():
        label = f"{k} (fix() in total)" if k == "seconds" else k
        lines.append(f"  {label:<50} {v:7.3f} s")
    total = json_medians.get("seconds")
    if total is not None:
        parts = sum(v for k, v in json_medians.items() if k != "seconds")
        lines.append(
            f"  {'inside fix(), not broken down by the JSON':<50} {total - parts:7.3f} s  "
            "(scan, plan, building the Estimator incl. the TF import, pre-flight, verify)"
        )
        lines.append(
            f"  {'outside fix() (start-up, CLI imports, exit)':<50} {fix.wall - total:7.3f} s  "
            "(median wall minus fix() total)"
        )

    if result.profiles:
        stages, wall = median_run(result.profiles, result.profile_walls)
        lines += [
            "",
            f"fix, in-process stage timings (the median-wall one of {len(result.profiles)} "
            "profile run(s); timers around estimator_fix's own stage functions):",
            *render_stages(stages, wall=wall),
        ]
        bare_runs = [r for r in result.runs if r.method == BARE]
        bare_stages, bare_wall = median_run(
            [r.stages for r in bare_runs], [r.wall for r in bare_runs]
        )
        lines += [
            "",
            f"bare export, its own stamps (the median-wall one of the {len(bare_runs)} "
            "measured runs):",
            *render_stages(bare_stages, wall=bare_wall),
            "",
            *hot_spots(stages, bare_stages, fix.wall - bare.wall),
        ]
    return "\n".join(lines) + "\n", met


_NOT_IN_BARE = (
    "import estimator_fix",
    "scan",
    "plan",
    "pre-flight (build graph, compare keys)",
    "repair",
    "verify",
)


def hot_spots(fix_stages: Sequence[Stage], bare_stages: Sequence[Stage], gap: float) -> list[str]:
    """What fix does that the bare export does not, biggest first; then the shared work.

    Does not perform I/O.
    """
    ours = {s.stage: s.seconds for s in fix_stages}
    theirs = {s.stage: s.seconds for s in bare_stages}
    extra = sorted(
        ((label, ours[label]) for label in _NOT_IN_BARE if label in ours), key=lambda kv: -kv[1]
    )
    lines = [f"work fix does that bare does not (the measured gap of median walls: {gap:.2f} s):"]
    lines += [f"  {label:<50} {seconds:7.3f} s" for label, seconds in extra]
    lines += [
        f"  {'sum':<50} {sum(v for _, v in extra):7.3f} s",
        "work both do (fix's profile run vs bare's median run):",
    ]
    for fix_label, bare_label in _SHARED:
        if fix_label in ours and bare_label in theirs:
            lines.append(
                f"  {bare_label:<50} {ours[fix_label]:7.3f} s in fix, "
                f"{theirs[bare_label]:.3f} s bare"
            )
    return lines


_SHARED = (
    ("interpreter start-up", "interpreter start-up"),
    ("import tensorflow, tensorflow_estimator", "import tensorflow"),
    ("load model code, build the Estimator", "load model code, build the Estimator"),
    ("export (export_saved_model)", "export_saved_model"),
    ("exit (after the last line)", "exit (after the last line)"),
)


# --- main ---------------------------------------------------------------------------------------


def bench(config: Config, work: str) -> tuple[str, bool]:
    """Builds each subject, runs everything, returns the report and whether every goal was met.

    Raises:
      BenchError: a subject could not be built, or a run failed or did not verify.
    """
    for sub in ("logs", "runs"):
        os.makedirs(os.path.join(work, sub))
    with open(os.path.join(work, "bare_export.py"), "w") as f:
        f.write(BARE_SCRIPT)
    with open(os.path.join(work, "profile_fix.py"), "w") as f:
        f.write(PROFILE_SCRIPT)
    texts, all_met = [], True
    for size in config.sizes:
        subject = (
            small_subject(config.model, work) if size == "small" else large_subject(config, work)
        )
        logging.info("subject: %s", subject.description)
        text, met = render(bench_subject(config, subject, work), config)
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
    parent = config.workdir or tempfile.gettempdir()
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench_export-", dir=parent)
    try:
        text, met = bench(config, work)
    except BenchError as e:
        sys.stderr.write(f"bench_export: error: {e}\n")
        sys.exit(1)
    finally:
        if config.keep:
            logging.info("kept %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.stdout.write(text)
    sys.exit(0 if met else 2)


if __name__ == "__main__":
    app.run(main)
