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

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from absl import app, flags, logging

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

MANIFEST = "MANIFEST.json"
STATE_FILE = "checkpoint"
PREFIX = "model.ckpt"
FOREIGN_DIR = "/home/alice/models/run7"
CONFLICT_OFFSET = 100
_TMP_PREFIX = ".make_testdata-"

HEALTHY = (
    "dnn_classifier",
    "linear_regressor",
    "custom_model_fn",
    "dnn_linear_partitioned",
    "keras_object_based",
    "v1_format",
)
BROKEN = (
    "session_loop_int32_step",
    "missing_step",
    "missing_step_no_evidence",
    "renamed_step",
    "scoped_step",
    "int32_step",
    "float_step",
    "conflicting_step",
    "foreign_state_file",
    "missing_shard",
    "keras_missing_step",
)
FIXTURES = HEALTHY + BROKEN

# Expected export errors (TF 2.15.1): (exception type name, a substring of its message).
ExportError = tuple[str, str]
_KEY_NOT_FOUND: ExportError = ("ValueError", "Key global_step not found in checkpoint")
_INT32: ExportError = (
    "InvalidArgumentError",
    "expected dtype int64 does not equal original dtype int32",
)
_FLOAT: ExportError = (
    "InvalidArgumentError",
    "expected dtype int64 does not equal original dtype float",
)
_NO_MODEL: ExportError = ("ValueError", "Couldn't find trained model at")
# model_to_estimator's Saver maps object-based keys; a missing one makes TF fall back to the
# object graph's names, which match nothing, and say so (the step key is named in the list).
_KERAS_STEP: ExportError = ("ValueError", "Saver was attempting to load an object-based checkpoint")


@dataclasses.dataclass(frozen=True)
class Options:
    """What main() was asked to do."""

    out: Path
    overwrite: bool


@dataclasses.dataclass(frozen=True)
class Trained:
    """A healthy fixture as trained: where it is and what its latest checkpoint predicts."""

    builder: str
    model_dir: Path
    prefixes: tuple[str, ...]  # as listed by the state file, oldest first
    predictions: list[dict[str, Any]]


# --- TensorFlow, imported once in main() (its import costs ~2 s and prints banners). -------

tf: Any = None
np: Any = None


def _import_tf() -> None:
    global tf, np
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy
    import tensorflow

    tensorflow.get_logger().setLevel("ERROR")
    tf, np = tensorflow, numpy


def _load_models(path: Path) -> types.ModuleType:
    """Imports testdata/models.py as a plain file (testdata/ is not a package)."""
    spec = importlib.util.spec_from_file_location("testdata_models", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _seed_everything(seed: int) -> None:
    """Seeds what initializers draw from: Python's random, NumPy and TF's global seed."""
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


# --- Reading and writing checkpoints (graph mode, public TF APIs only). ---------------------


def _state_prefixes(model_dir: Path) -> tuple[str, ...]:
    """Checkpoint prefixes (basenames) in the state file, oldest first."""
    state = tf.train.get_checkpoint_state(str(model_dir))
    if state is None:
        raise RuntimeError(f"{model_dir} has no checkpoint state file")
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    if paths[-1] != state.model_checkpoint_path:
        raise RuntimeError(f"{model_dir}: latest checkpoint is not the last one listed")
    return tuple(os.path.basename(p) for p in paths)


def _write_state_file(model_dir: Path, paths: Sequence[str]) -> None:
    """Writes the `checkpoint` state file exactly as TF's Saver formats it; last = latest."""
    from google.protobuf import text_format
    from tensorflow.python.training import checkpoint_state_pb2

    state = checkpoint_state_pb2.CheckpointState(
        model_checkpoint_path=paths[-1], all_model_checkpoint_paths=list(paths)
    )
    (model_dir / STATE_FILE).write_text(text_format.MessageToString(state))


def _read_tensors(prefix: Path) -> dict[str, Any]:
    """Every tensor of a checkpoint, by key (partitioned variables come back whole)."""
    reader = tf.train.load_checkpoint(str(prefix))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_dtype_map()}


def _save_tensors(tensors: Mapping[str, Any], prefix: Path) -> None:
    """Saves `tensors` under exactly their keys at `prefix`, with a sharded V2 Saver.

    Each value becomes a new variable in a fresh graph; the dtype is the array's dtype. No
    .meta and no state file are written (the caller writes the state file).
    """
    with tf.Graph().as_default():
        variables = {
            key: tf.compat.v1.Variable(value, name=f"v{i}", trainable=False)
            for i, (key, value) in enumerate(sorted(tensors.items()))
        }
        saver = tf.compat.v1.train.Saver(variables, sharded=True, save_relative_paths=True)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(prefix), write_meta_graph=False, write_state=False)


def _step_facts(prefix: Path, step_key: str | None) -> dict[str, Any]:
    """The step key, dtype and value as actually stored (read back, not assumed)."""
    if step_key is None:
        return {"step_key": None, "step_dtype": None, "stored_step": None}
    reader = tf.train.load_checkpoint(str(prefix))
    dtype = reader.get_variable_to_dtype_map()[step_key]
    value = reader.get_tensor(step_key)
    stored = float(value) if dtype.is_floating else int(value)
    return {"step_key": step_key, "step_dtype": dtype.name, "stored_step": stored}


def _data_shards(model_dir: Path, prefix: str) -> int | None:
    """The shard count in a V2 prefix's data-file names; None for V1 (no data files)."""
    names = sorted(p.name for p in model_dir.glob(f"{prefix}.data-*-of-*"))
    if not names:
        return None if (model_dir / prefix).is_file() else 0
    return int(names[0].rsplit("-of-", 1)[1])


# --- Training the healthy fixtures. ----------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return _jsonable(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _predict(estimator: Any, models: types.ModuleType, builder: str, prefix: Path) -> list[Any]:
    """Estimator.predict on PREDICT_FEATURES from one explicit checkpoint."""
    features = models.PREDICT_FEATURES[builder]
    count = len(next(iter(features.values())))

    def input_fn() -> Any:
        return tf.data.Dataset.from_tensor_slices(dict(features)).batch(count)

    rows = estimator.predict(input_fn, checkpoint_path=str(prefix), yield_single_examples=True)
    return [{key: _jsonable(value) for key, value in sorted(row.items())} for row in rows]


def _tidy(model_dir: Path, *, keep_meta: bool) -> None:
    """Removes what a fixture does not need: event files, graph.pbtxt, eval/, maybe .meta."""
    doomed = [*model_dir.glob("events.out.tfevents*"), model_dir / "graph.pbtxt"]
    if not keep_meta:
        doomed += model_dir.glob("*.meta")
    for path in doomed:
        if path.is_file():
            path.unlink()
    for sub in model_dir.glob("eval*"):
        shutil.rmtree(sub)


def _train_estimator(
    models: types.ModuleType, builder: str, model_dir: Path, *, keep_meta: bool = False
) -> Trained:
    _seed_everything(models.SEED)
    estimator = getattr(models, builder)(str(model_dir))
    estimator.train(getattr(models, f"{builder}_train_input_fn"), steps=models.TRAIN_STEPS)
    prefixes = _state_prefixes(model_dir)
    predictions = _predict(estimator, models, builder, model_dir / prefixes[-1])
    _tidy(model_dir, keep_meta=keep_meta)
    return Trained(builder, model_dir, prefixes, predictions)


def _train_keras(models: types.ModuleType, model_dir: Path) -> Trained:
    trained = _train_estimator(models, "keras_estimator", model_dir)
    # Keras wrote absolute paths (into our temporary directory): make them relative, else
    # the frozen copy would point at a directory that no longer exists.
    _write_state_file(model_dir, trained.prefixes)
    return trained


def _train_session_loop(models: types.ModuleType, model_dir: Path) -> Trained:
    """A plain TF1 Session + Saver training loop with an int32 `my_global_step`.

    No Estimator is involved, so no `global_step` exists; the variables carry the names
    `models.session_loop_network` gives them, so `models.session_loop_model` can load them.
    """
    _seed_everything(models.SEED)
    model_dir.mkdir()
    builder = "session_loop_model"
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(models.SEED)
        step = tf.compat.v1.Variable(
            0, name=models.SESSION_LOOP_STEP_NAME, dtype=tf.int32, trainable=False
        )
        batch, labels = tf.compat.v1.data.make_one_shot_iterator(
            models.session_loop_model_train_input_fn()
        ).get_next()
        # Placeholders default to the training batch; prediction feeds them instead.
        features = {
            name: tf.compat.v1.placeholder_with_default(tensor, tensor.shape, name=name)
            for name, tensor in batch.items()
        }
        outputs = models.session_loop_network(features)
        loss = tf.compat.v1.losses.mean_squared_error(tf.reshape(labels, [-1, 1]), outputs)
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss, global_step=step)
        saver = tf.compat.v1.train.Saver(
            max_to_keep=models.KEEP_CHECKPOINT_MAX, save_relative_paths=True
        )
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for _ in range(models.TRAIN_STEPS):
                sess.run(train_op)
                done = sess.run(step)
                if done % models.SAVE_CHECKPOINTS_STEPS == 0:
                    saver.save(
                        sess, str(model_dir / PREFIX), global_step=step, write_meta_graph=False
                    )
            feed = {features[n]: v for n, v in models.PREDICT_FEATURES[builder].items()}
            values = sess.run(outputs, feed_dict=feed)
    predictions = [{"predictions": _jsonable(row)} for row in values]
    return Trained(builder, model_dir, _state_prefixes(model_dir), predictions)


# --- Deriving the broken fixtures. -----------------------------------------------------------

Transform = Callable[[dict[str, Any], int], dict[str, Any]]


def _suffix_step(prefix: str) -> int:
    return int(prefix.rsplit("-", 1)[1])


def _derive(
    source: Trained, model_dir: Path, transform: Transform, *, rename: Callable[[str], str]
) -> tuple[str, ...]:
    """Re-saves every checkpoint of `source` through `transform`; returns the new prefixes."""
    model_dir.mkdir()
    prefixes = []
    for prefix in source.prefixes:
        tensors = transform(_read_tensors(source.model_dir / prefix), _suffix_step(prefix))
        new_prefix = rename(prefix)
        _save_tensors(tensors, model_dir / new_prefix)
        prefixes.append(new_prefix)
    _write_state_file(model_dir, prefixes)
    return tuple(prefixes)


def _move_step(new_key: str | None, dtype: str = "int64", offset: int = 0) -> Transform:
    """A transform that removes `global_step` and, unless new_key is None, stores it anew."""

    def transform(tensors: dict[str, Any], step: int) -> dict[str, Any]:
        value = tensors.pop("global_step")
        if int(value) != step:
            raise RuntimeError(f"global_step {value} disagrees with suffix {step}")
        if new_key is not None:
            tensors[new_key] = np.array(step + offset, dtype=dtype)
        return tensors

    return transform


def _drop_keras_step(tensors: dict[str, Any], step: int) -> dict[str, Any]:
    """Removes the Keras step key and its node from the object graph, renumbering nodes."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    key = "estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE"
    if int(tensors.pop(key)) != step:
        raise RuntimeError(f"{key} disagrees with suffix {step}")
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tensors["_CHECKPOINTABLE_OBJECT_GRAPH"])
    (gone,) = [
        i
        for i, node in enumerate(graph.nodes)
        if any(a.checkpoint_key == key for a in node.attributes)
    ]
    kept = trackable_object_graph_pb2.TrackableObjectGraph()
    for i, node in enumerate(graph.nodes):
        if i == gone:
            continue
        new = kept.nodes.add()
        new.CopyFrom(node)
        del new.children[:]
        for child in node.children:
            if child.node_id != gone:
                new.children.add(
                    node_id=child.node_id - (child.node_id > gone), local_name=child.local_name
                )
        for slot in new.slot_variables:
            slot.original_variable_node_id -= slot.original_variable_node_id > gone
            slot.slot_variable_node_id -= slot.slot_variable_node_id > gone
    tensors["_CHECKPOINTABLE_OBJECT_GRAPH"] = np.array(kept.SerializeToString(), dtype=object)
    return tensors


def _copy_checkpoints(source: Trained, model_dir: Path) -> None:
    """Copies the index/data files of every checkpoint of `source` (not the state file)."""
    model_dir.mkdir()
    for prefix in source.prefixes:
        for path in source.model_dir.glob(f"{prefix}.*"):
            if path.suffix != ".meta":
                shutil.copy2(path, model_dir / path.name)


# --- The manifest. ----------------------------------------------------------------------------


def _entry(
    name: str,
    *,
    description: str,
    builder: str,
    model_dir: Path,
    prefixes: Sequence[str],
    steps: Sequence[int | None],
    step_key: str | None,
    export_error: ExportError | None,
    source: Trained,
    source_fixture: str | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One MANIFEST.json record; the step facts are read back from the files just written."""
    checkpoints = []
    facts: dict[str, Any] = {}
    for prefix, step in zip(prefixes, steps, strict=True):
        facts = _step_facts(model_dir / prefix, step_key)
        checkpoints.append({"prefix": prefix, "step": step, "stored_step": facts["stored_step"]})
    files = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    entry: dict[str, Any] = {
        "description": description,
        "healthy": export_error is None,
        "builder": builder,
        "serving_input_fn": f"{builder}_serving_input_fn",
        "predict_features": builder,
        "source_fixture": source_fixture,
        "format": "V1" if _data_shards(model_dir, prefixes[-1]) is None else "V2",
        "checkpoints": checkpoints,
        "latest_checkpoint": prefixes[-1],
        "step": steps[-1],
        "step_key": facts["step_key"],
        "step_dtype": facts["step_dtype"],
        "data_shards": _data_shards(model_dir, prefixes[-1]),
        "export_error_type": export_error[0] if export_error else None,
        "export_error": export_error[1] if export_error else None,
        "files": files,
        "predictions_from": f"{source_fixture or name}/{source.prefixes[-1]}",
        "predictions": source.predictions,
    }
    entry.update(extra or {})
    return entry


def _same_name(prefix: str) -> str:
    return prefix


def build_fixtures(models: types.ModuleType, root: Path) -> dict[str, dict[str, Any]]:
    """Trains and derives every fixture under `root`; returns the MANIFEST.json content."""
    manifest: dict[str, dict[str, Any]] = {}

    def healthy(name: str, trained: Trained, description: str, step_key: str) -> None:
        manifest[name] = _entry(
            name,
            description=description,
            builder=trained.builder,
            model_dir=trained.model_dir,
            prefixes=trained.prefixes,
            steps=[_suffix_step(p) for p in trained.prefixes],
            step_key=step_key,
            export_error=None,
            source=trained,
            source_fixture=None,
        )

    timer = _Timer()
    dnn = _train_estimator(models, "dnn_classifier", root / "dnn_classifier")
    healthy("dnn_classifier", dnn, "canned tf.estimator.DNNClassifier (v2)", "global_step")
    linear = _train_estimator(models, "linear_regressor", root / "linear_regressor")
    healthy("linear_regressor", linear, "canned tf.estimator.LinearRegressor (v2)", "global_step")
    custom = _train_estimator(models, "custom_estimator", root / "custom_model_fn", keep_meta=True)
    healthy(
        "custom_model_fn",
        custom,
        "tf.estimator.Estimator with a custom model_fn (dense layers, Adagrad); keeps .meta",
        "global_step",
    )
    partitioned = _train_estimator(
        models, "dnn_linear_partitioned", root / "dnn_linear_partitioned"
    )
    healthy(
        "dnn_linear_partitioned",
        partitioned,
        "tf.compat.v1.estimator.DNNLinearCombinedClassifier, linear weights partitioned in 2 "
        "slices, data in 2 shards",
        "global_step",
    )
    keras = _train_keras(models, root / "keras_object_based")
    healthy(
        "keras_object_based",
        keras,
        "tf.keras.estimator.model_to_estimator: object-based keys, keras/ warm-start folder, "
        "state file rewritten to relative paths",
        "estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE",
    )
    v1 = _train_estimator(models, "v1_format_estimator", root / "v1_format")
    healthy(
        "v1_format",
        v1,
        "custom model_fn with a V1-format Saver: one file per checkpoint, no .index",
        "global_step",
    )
    logging.info("trained the healthy fixtures in %.1f s", timer.lap())

    loop = _train_session_loop(models, root / "session_loop_int32_step")
    manifest["session_loop_int32_step"] = _entry(
        "session_loop_int32_step",
        description="plain Session + Saver loop: step `my_global_step` int32, no global_step",
        builder=loop.builder,
        model_dir=loop.model_dir,
        prefixes=loop.prefixes,
        steps=[_suffix_step(p) for p in loop.prefixes],
        step_key=models.SESSION_LOOP_STEP_NAME,
        export_error=_KEY_NOT_FOUND,
        source=loop,
        source_fixture=None,
    )

    def broken(
        name: str,
        description: str,
        transform: Transform,
        step_key: str | None,
        export_error: ExportError,
        *,
        source: Trained = dnn,
        source_fixture: str = "dnn_classifier",
        rename: Callable[[str], str] = _same_name,
        latest_only: bool = False,
        step_known: bool = True,
        extra_dirs: Sequence[str] = (),
    ) -> None:
        origin = (
            dataclasses.replace(source, prefixes=source.prefixes[-1:]) if latest_only else source
        )
        prefixes = _derive(origin, root / name, transform, rename=rename)
        for extra in extra_dirs:
            shutil.copytree(source.model_dir / extra, root / name / extra)
        manifest[name] = _entry(
            name,
            description=description,
            builder=source.builder,
            model_dir=root / name,
            prefixes=prefixes,
            steps=[_suffix_step(p) if step_known else None for p in origin.prefixes],
            step_key=step_key,
            export_error=export_error,
            source=source,
            source_fixture=source_fixture,
        )

    broken(
        "missing_step",
        "dnn_classifier without global_step; the prefix suffix -N is the only evidence",
        _move_step(None),
        None,
        _KEY_NOT_FOUND,
    )
    broken(
        "missing_step_no_evidence",
        "dnn_classifier (latest) without global_step, prefix renamed to model.ckpt: no evidence",
        _move_step(None),
        None,
        _KEY_NOT_FOUND,
        rename=lambda prefix: PREFIX,
        latest_only=True,
        step_known=False,
    )
    broken(
        "renamed_step",
        "dnn_classifier with the step stored as training/global_step (int64)",
        _move_step("training/global_step"),
        "training/global_step",
        _KEY_NOT_FOUND,
    )
    broken(
        "scoped_step",
        "dnn_classifier with the step stored as global_step/global_step (int64)",
        _move_step("global_step/global_step"),
        "global_step/global_step",
        _KEY_NOT_FOUND,
    )
    broken(
        "int32_step",
        "dnn_classifier with global_step stored as int32",
        _move_step("global_step", "int32"),
        "global_step",
        _INT32,
    )
    broken(
        "float_step",
        "dnn_classifier with global_step stored as float32 (integral value)",
        _move_step("global_step", "float32"),
        "global_step",
        _FLOAT,
    )
    broken(
        "conflicting_step",
        f"dnn_classifier with the step stored as global_step_1 = prefix suffix + "
        f"{CONFLICT_OFFSET}: the evidence disagrees",
        _move_step("global_step_1", offset=CONFLICT_OFFSET),
        "global_step_1",
        _KEY_NOT_FOUND,
        step_known=False,
    )
    manifest["conflicting_step"]["checkpoints"] = [
        {**c, "suffix_step": _suffix_step(c["prefix"])}
        for c in manifest["conflicting_step"]["checkpoints"]
    ]
    broken(
        "keras_missing_step",
        "keras_object_based without its step: key and object-graph node removed",
        _drop_keras_step,
        None,
        _KERAS_STEP,
        source=keras,
        source_fixture="keras_object_based",
        extra_dirs=("keras",),
    )

    foreign = root / "foreign_state_file"
    _copy_checkpoints(dnn, foreign)
    _write_state_file(foreign, [f"{FOREIGN_DIR}/{p}" for p in dnn.prefixes])
    manifest["foreign_state_file"] = _entry(
        "foreign_state_file",
        description=f"healthy dnn_classifier files; the state file lists absolute paths "
        f"under {FOREIGN_DIR}",
        builder=dnn.builder,
        model_dir=foreign,
        prefixes=dnn.prefixes,
        steps=[_suffix_step(p) for p in dnn.prefixes],
        step_key="global_step",
        export_error=_NO_MODEL,
        source=dnn,
        source_fixture="dnn_classifier",
        extra={"state_file_paths": [f"{FOREIGN_DIR}/{p}" for p in dnn.prefixes]},
    )

    shard_dir = root / "missing_shard"
    _copy_checkpoints(partitioned, shard_dir)
    _write_state_file(shard_dir, partitioned.prefixes)
    latest = partitioned.prefixes[-1]
    shards = _data_shards(shard_dir, latest) or 0
    deleted = f"{latest}.data-{shards - 1:05d}-of-{shards:05d}"
    (shard_dir / deleted).unlink()
    manifest["missing_shard"] = _entry(
        "missing_shard",
        description=f"dnn_linear_partitioned with {deleted} deleted (older checkpoint whole)",
        builder=partitioned.builder,
        model_dir=shard_dir,
        prefixes=partitioned.prefixes,
        steps=[_suffix_step(p) for p in partitioned.prefixes],
        step_key="global_step",
        export_error=("ValueError", f"{deleted}; No such file or directory"),
        source=partitioned,
        source_fixture="dnn_linear_partitioned",
        extra={"deleted_file": deleted},
    )
    logging.info("derived the broken fixtures in %.1f s", timer.lap())
    return {name: manifest[name] for name in FIXTURES}


class _Timer:
    def __init__(self) -> None:
        self._last = time.monotonic()

    def lap(self) -> float:
        now = time.monotonic()
        elapsed, self._last = now - self._last, now
        return elapsed


# --- Putting the fixtures in place. -----------------------------------------------------------


def _existing(out: Path) -> list[str]:
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
    models = _load_models(_MODELS_FILE)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=options.out))
    try:
        manifest = build_fixtures(models, tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        _install(tmp, options.out, FIXTURES)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def main(argv: list[str]) -> int:
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
