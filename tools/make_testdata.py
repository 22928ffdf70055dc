r"""Generates the frozen checkpoint fixtures in testdata/ (and testdata/MANIFEST.json).

Usage:
  .venv/bin/python tools/make_testdata.py --overwrite        # what `make testdata` runs
  .venv/bin/python tools/make_testdata.py --out /tmp/td      # a fresh copy elsewhere

Why the fixtures are frozen:
  The fixture directories are committed bytes. Tests copy them into tmp_path and never train.
  Two runs of this script on one machine and TF build give byte-identical files (checked),
  but nothing promises that across TF versions, CPUs (oneDNN kernels) or platforms, and a
  test suite must not depend on re-training reproducing the checkpoints, steps and
  predictions it asserts. Regenerating therefore changes committed bytes: it is a deliberate
  act that needs `--overwrite` and a reviewed diff (MANIFEST.json shows the steps, keys and
  predictions that moved). Changing testdata/models.py in a way that alters variables or
  numerics makes the fixtures stale: regenerate in the same change.

  Content is kept as deterministic as is reasonable: Python's `random` (old
  tf.compat.v1.layers initializers draw their seeds from it), NumPy and the graph seed are
  fixed, training data are seeded NumPy arrays fed without shuffling, and every fixture is
  trained in its own fresh graph.

Healthy fixtures (each trained for 6 steps, a checkpoint every 3 steps, keep 2):
  dnn_classifier/          canned tf.estimator.DNNClassifier; `global_step` int64.
  linear_regressor/        canned tf.estimator.LinearRegressor; `global_step` int64.
  custom_model_fn/         tf.estimator.Estimator(custom_model_fn): two dense layers,
                           Adagrad, get_global_step(); `global_step` int64. The only
                           fixture that keeps its `.meta` files.
  dnn_linear_partitioned/  tf.compat.v1.estimator.DNNLinearCombinedClassifier with
                           input_layer_partitioner=fixed_size_partitioner(2): partitioned
                           linear weights stored as slices, data in 2 shards (the part_1
                           variables are placed on a second CPU device while training).
  keras_object_based/      tf.keras.estimator.model_to_estimator: object-based keys, step at
                           `estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE`, a `keras/`
                           warm-start folder, data in 2 shards, 3 checkpoints (-0, -3, -6:
                           its Saver ignores keep_checkpoint_max). Keras writes ABSOLUTE
                           paths into the state file; the frozen copy's state file is
                           rewritten to relative paths.
  v1_format/               custom_model_fn whose Scaffold Saver writes the V1 format: one
                           file `model.ckpt-N` per checkpoint, no .index.

Broken fixtures (derived from the healthy ones by reading every tensor with
tf.train.load_checkpoint and saving again with a graph-mode Saver over new variables;
nothing is edited byte by byte):
  session_loop_int32_step/    plain Session + Saver loop (no Estimator), its step
                              `my_global_step` int32, no `global_step` key.
  missing_step/               dnn_classifier without `global_step`; the prefix suffix `-N`
                              is the only step evidence.
  missing_step_no_evidence/   the same, latest checkpoint only, prefix renamed to
                              `model.ckpt`: no evidence at all.
  renamed_step/               step stored as `training/global_step` (int64).
  scoped_step/                step stored as `global_step/global_step` (int64).
  int32_step/                 `global_step` stored as int32.
  float_step/                 `global_step` stored as float32 (integral value).
  conflicting_step/           step stored as `global_step_1` = suffix + 100.
  foreign_state_file/         healthy dnn_classifier files, but the `checkpoint` state file
                              lists /home/alice/models/run7/model.ckpt-N.
  missing_shard/              dnn_linear_partitioned with the latest checkpoint's
                              `.data-00001-of-00002` deleted (the older checkpoint is whole).
  keras_missing_step/         keras_object_based without its step: the key is gone and so is
                              its node in `_CHECKPOINTABLE_OBJECT_GRAPH` (re-saved: 1 shard).

MANIFEST.json, keyed by fixture name, records for each: builder and serving input fn (names
in testdata/models.py), the checkpoint prefixes (oldest first) with the step each should
resolve to (null when nothing says), the step key, dtype and value as stored, the number of
data shards, the files, the export error expected from TF 2.15, and the predictions of the
original healthy checkpoint on models.PREDICT_FEATURES (taken before breaking it).

What is dropped from the trained directories: events.out.tfevents*, graph.pbtxt and eval/
(timestamps and hostnames, hundreds of KB each), and `.meta` files (100-200 KB each)
except in custom_model_fn/, so that one fixture shows what a real directory carries.

Files, before and after (one fixture shown):
  before:  testdata/models.py  testdata/README.md
  after:   testdata/MANIFEST.json
           testdata/dnn_classifier/checkpoint
           testdata/dnn_classifier/model.ckpt-3.{index,data-00000-of-00001}
           testdata/dnn_classifier/model.ckpt-6.{index,data-00000-of-00001}
           ... one directory per fixture above

Everything is built in a temporary directory `<out>/.make_testdata-*` first and moved into
place only when all fixtures were made; a failed run leaves the old fixtures untouched.

Exit codes:
  0  fixtures written
  1  fixtures exist and --overwrite was not given (nothing written), or generation failed
"""


# The parts, in tools/: testdata_layout.py (fixture names, file names, expected export errors),
# testdata_checkpoints.py (reading and writing checkpoints), testdata_train.py (training the
# healthy fixtures), testdata_break.py (the ways they are broken) and testdata_build.py (every
# fixture and its MANIFEST.json record). This file holds the flags and puts the result in place.

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from absl import app, flags, logging
from testdata_layout import FIXTURES, MANIFEST

_REPO = Path(__file__).resolve().parent.parent
_MODELS_FILE = _REPO / "testdata" / "models.py"

_OUT = flags.DEFINE_string(
    "out", str(_REPO / "testdata"), "Directory to write the fixture directories and MANIFEST.json."
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace existing fixtures. They are frozen, committed bytes: regenerate on purpose only.",
)

_TMP_PREFIX = ".make_testdata-"


@dataclasses.dataclass(frozen=True)
class Options:
    """What main() was asked to do."""

    out: Path
    overwrite: bool


def _import_tf() -> None:
    """Imports TensorFlow quietly, once and only when building (~2 s, with banners)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow

    tensorflow.get_logger().setLevel("ERROR")


def _existing(out: Path) -> list[str]:
    """The fixture directories and manifest already present in `out`."""
    return [n for n in (*FIXTURES, MANIFEST) if (out / n).exists()]


def _install(tmp: Path, out: Path, names: Iterable[str]) -> None:
    """Replaces each fixture directory in `out` by the one built in `tmp`, then the manifest."""
    for name in names:
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp / name, target)
    os.replace(tmp / MANIFEST, out / MANIFEST)


def make_testdata(options: Options) -> dict[str, dict[str, Any]]:
    """Builds every fixture in a temporary directory under options.out, then moves them in.

    Args:
      options: where to write, and whether existing fixtures may be replaced.

    Returns:
      The MANIFEST.json content written.

    Raises:
      FileExistsError: fixtures exist in options.out and options.overwrite is False.
    """
    existing = _existing(options.out)
    if existing and not options.overwrite:
        raise FileExistsError(
            f"refusing to replace {len(existing)} existing fixture(s) in {options.out} "
            f"(e.g. {existing[0]}): they are frozen, committed bytes; regenerate on purpose "
            "with --overwrite (make testdata) and review the diff"
        )
    options.out.mkdir(parents=True, exist_ok=True)
    stale = sorted(p.name for p in options.out.glob(f"{_TMP_PREFIX}*"))
    if stale:
        logging.warning("stale temporary directories in %s (not reused): %s", options.out, stale)
    _import_tf()
    # These import TensorFlow: only now, so that --help and the refusal above stay fast.
    from testdata_build import build_fixtures
    from testdata_train import load_models

    models = load_models(_MODELS_FILE)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=options.out))
    try:
        manifest = build_fixtures(models, tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        _install(tmp, options.out, FIXTURES)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def main(argv: list[str]) -> int:
    """Makes the fixtures as the flags say and prints one line per fixture.

    Args:
      argv: the arguments left after flag parsing (only the program name is accepted).

    Returns:
      The exit code: 0 when written, 1 when fixtures exist and --overwrite was not given.

    Raises:
      app.UsageError: positional arguments were given.
    """
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    options = Options(out=Path(_OUT.value).resolve(), overwrite=_OVERWRITE.value)
    started = time.monotonic()
    try:
        manifest = make_testdata(options)
    except FileExistsError as e:
        print(f"make_testdata: {e}", file=sys.stderr)
        return 1
    for name, entry in manifest.items():
        print(
            f"{name:26} {entry['latest_checkpoint']:14} step={entry['step']!s:5} "
            f"key={entry['step_key']} ({entry['step_dtype']})"
        )
    print(f"wrote {len(manifest)} fixtures to {options.out} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    app.run(main)
