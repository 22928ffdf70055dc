"""Building every fixture and its MANIFEST.json record, in MANIFEST.json order.

`build_fixtures` trains the healthy fixtures (testdata_train), derives the broken ones from
them (testdata_break) and describes each in a record whose step facts, format, shard count
and file list are read back from the files just written. Importing this module imports
TensorFlow.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from absl import logging
from testdata_break import Transform, copy_checkpoints, derive, drop_keras_step, move_step
from testdata_checkpoints import data_shards, step_facts, write_state_file
from testdata_layout import (
    CONFLICT_OFFSET,
    FIXTURES,
    FLOAT,
    FOREIGN_DIR,
    INT32,
    KERAS_STEP,
    KEY_NOT_FOUND,
    NO_MODEL,
    PREFIX,
    ExportError,
    Trained,
    suffix_step,
)
from testdata_train import train_estimator, train_keras, train_session_loop


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
        facts = step_facts(model_dir / prefix, step_key)
        checkpoints.append({"prefix": prefix, "step": step, "stored_step": facts["stored_step"]})
    files = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    entry: dict[str, Any] = {
        "description": description,
        "healthy": export_error is None,
        "builder": builder,
        "serving_input_fn": f"{builder}_serving_input_fn",
        "predict_features": builder,
        "source_fixture": source_fixture,
        "format": "V1" if data_shards(model_dir, prefixes[-1]) is None else "V2",
        "checkpoints": checkpoints,
        "latest_checkpoint": prefixes[-1],
        "step": steps[-1],
        "step_key": facts["step_key"],
        "step_dtype": facts["step_dtype"],
        "data_shards": data_shards(model_dir, prefixes[-1]),
        "export_error_type": export_error[0] if export_error else None,
        "export_error": export_error[1] if export_error else None,
        "files": files,
        "predictions_from": f"{source_fixture or name}/{source.prefixes[-1]}",
        "predictions": source.predictions,
    }
    entry.update(extra or {})
    return entry


def _same_name(prefix: str) -> str:
    """The default `rename` of a derived fixture: every prefix keeps its name."""
    return prefix


def build_fixtures(models: types.ModuleType, root: Path) -> dict[str, dict[str, Any]]:
    """Trains and derives every fixture under `root`; returns the MANIFEST.json content.

    Args:
      models: testdata/models.py, loaded.
      root: an empty directory; one model directory per fixture is made in it.

    Returns:
      One record per fixture, keyed by name, in FIXTURES order.
    """
    manifest: dict[str, dict[str, Any]] = {}

    def healthy(name: str, trained: Trained, description: str, step_key: str) -> None:
        manifest[name] = _entry(
            name,
            description=description,
            builder=trained.builder,
            model_dir=trained.model_dir,
            prefixes=trained.prefixes,
            steps=[suffix_step(p) for p in trained.prefixes],
            step_key=step_key,
            export_error=None,
            source=trained,
            source_fixture=None,
        )

    timer = _Timer()
    dnn = train_estimator(models, "dnn_classifier", root / "dnn_classifier")
    healthy("dnn_classifier", dnn, "canned tf.estimator.DNNClassifier (v2)", "global_step")
    linear = train_estimator(models, "linear_regressor", root / "linear_regressor")
    healthy("linear_regressor", linear, "canned tf.estimator.LinearRegressor (v2)", "global_step")
    custom = train_estimator(models, "custom_estimator", root / "custom_model_fn", keep_meta=True)
    healthy(
        "custom_model_fn",
        custom,
        "tf.estimator.Estimator with a custom model_fn (dense layers, Adagrad); keeps .meta",
        "global_step",
    )
    partitioned = train_estimator(models, "dnn_linear_partitioned", root / "dnn_linear_partitioned")
    healthy(
        "dnn_linear_partitioned",
        partitioned,
        "tf.compat.v1.estimator.DNNLinearCombinedClassifier, linear weights partitioned in 2 "
        "slices, data in 2 shards",
        "global_step",
    )
    keras = train_keras(models, root / "keras_object_based")
    healthy(
        "keras_object_based",
        keras,
        "tf.keras.estimator.model_to_estimator: object-based keys, keras/ warm-start folder, "
        "state file rewritten to relative paths",
        "estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE",
    )
    v1 = train_estimator(models, "v1_format_estimator", root / "v1_format")
    healthy(
        "v1_format",
        v1,
        "custom model_fn with a V1-format Saver: one file per checkpoint, no .index",
        "global_step",
    )
    logging.info("trained the healthy fixtures in %.1f s", timer.lap())

    loop = train_session_loop(models, root / "session_loop_int32_step")
    manifest["session_loop_int32_step"] = _entry(
        "session_loop_int32_step",
        description="plain Session + Saver loop: step `my_global_step` int32, no global_step",
        builder=loop.builder,
        model_dir=loop.model_dir,
        prefixes=loop.prefixes,
        steps=[suffix_step(p) for p in loop.prefixes],
        step_key=models.SESSION_LOOP_STEP_NAME,
        export_error=KEY_NOT_FOUND,
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
        prefixes = derive(origin, root / name, transform, rename=rename)
        for extra in extra_dirs:
            shutil.copytree(source.model_dir / extra, root / name / extra)
        manifest[name] = _entry(
            name,
            description=description,
            builder=source.builder,
            model_dir=root / name,
            prefixes=prefixes,
            steps=[suffix_step(p) if step_known else None for p in origin.prefixes],
            step_key=step_key,
            export_error=export_error,
            source=source,
            source_fixture=source_fixture,
        )

    broken(
        "missing_step",
        "dnn_classifier without global_step; the prefix suffix -N is the only evidence",
        move_step(None),
        None,
        KEY_NOT_FOUND,
    )
    broken(
        "missing_step_no_evidence",
        "dnn_classifier (latest) without global_step, prefix renamed to model.ckpt: no evidence",
        move_step(None),
        None,
        KEY_NOT_FOUND,
        rename=lambda prefix: PREFIX,
        latest_only=True,
        step_known=False,
    )
    broken(
        "renamed_step",
        "dnn_classifier with the step stored as training/global_step (int64)",
        move_step("training/global_step"),
        "training/global_step",
        KEY_NOT_FOUND,
    )
    broken(
        "scoped_step",
        "dnn_classifier with the step stored as global_step/global_step (int64)",
        move_step("global_step/global_step"),
        "global_step/global_step",
        KEY_NOT_FOUND,
    )
    broken(
        "int32_step",
        "dnn_classifier with global_step stored as int32",
        move_step("global_step", "int32"),
        "global_step",
        INT32,
    )
    broken(
        "float_step",
        "dnn_classifier with global_step stored as float32 (integral value)",
        move_step("global_step", "float32"),
        "global_step",
        FLOAT,
    )
    broken(
        "conflicting_step",
        f"dnn_classifier with the step stored as global_step_1 = prefix suffix + "
        f"{CONFLICT_OFFSET}: the evidence disagrees",
        move_step("global_step_1", offset=CONFLICT_OFFSET),
        "global_step_1",
        KEY_NOT_FOUND,
        step_known=False,
    )
    manifest["conflicting_step"]["checkpoints"] = [
        {**c, "suffix_step": suffix_step(c["prefix"])}
        for c in manifest["conflicting_step"]["checkpoints"]
    ]
    broken(
        "keras_missing_step",
        "keras_object_based without its step: key and object-graph node removed",
        drop_keras_step,
        None,
        KERAS_STEP,
        source=keras,
        source_fixture="keras_object_based",
        extra_dirs=("keras",),
    )

    foreign = root / "foreign_state_file"
    copy_checkpoints(dnn, foreign)
    write_state_file(foreign, [f"{FOREIGN_DIR}/{p}" for p in dnn.prefixes])
    manifest["foreign_state_file"] = _entry(
        "foreign_state_file",
        description=f"healthy dnn_classifier files; the state file lists absolute paths "
        f"under {FOREIGN_DIR}",
        builder=dnn.builder,
        model_dir=foreign,
        prefixes=dnn.prefixes,
        steps=[suffix_step(p) for p in dnn.prefixes],
        step_key="global_step",
        export_error=NO_MODEL,
        source=dnn,
        source_fixture="dnn_classifier",
        extra={"state_file_paths": [f"{FOREIGN_DIR}/{p}" for p in dnn.prefixes]},
    )

    shard_dir = root / "missing_shard"
    copy_checkpoints(partitioned, shard_dir)
    write_state_file(shard_dir, partitioned.prefixes)
    latest = partitioned.prefixes[-1]
    shards = data_shards(shard_dir, latest) or 0
    deleted = f"{latest}.data-{shards - 1:05d}-of-{shards:05d}"
    (shard_dir / deleted).unlink()
    manifest["missing_shard"] = _entry(
        "missing_shard",
        description=f"dnn_linear_partitioned with {deleted} deleted (older checkpoint whole)",
        builder=partitioned.builder,
        model_dir=shard_dir,
        prefixes=partitioned.prefixes,
        steps=[suffix_step(p) for p in partitioned.prefixes],
        step_key="global_step",
        export_error=("ValueError", f"{deleted}; No such file or directory"),
        source=partitioned,
        source_fixture="dnn_linear_partitioned",
        extra={"deleted_file": deleted},
    )
    logging.info("derived the broken fixtures in %.1f s", timer.lap())
    return {name: manifest[name] for name in FIXTURES}


class _Timer:
    """Seconds between successive laps, for the progress log."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def lap(self) -> float:
        """Seconds since the previous lap (or since the timer was made)."""
        now = time.monotonic()
        elapsed, self._last = now - self._last, now
        return elapsed
