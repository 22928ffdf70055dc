"""Stage 4: pre-flight the model code against the checkpoint, then the real export.

``preflight`` builds the graph ``Estimator.export_saved_model`` would build (a fresh graph,
``global_step``, the serving receiver, ``model_fn`` in the given mode, the scaffold's saver or a
sharded ``Saver``) and compares every key that saver will restore with the checkpoint: missing
keys, dtype and shape mismatches (the Estimator itself exports a checkpoint whose kernels have
other shapes than the code declares), and likely renames (a missing key with the same dtype and
shape as an unused checkpoint key). Object-based (Keras) checkpoints are compared through their
object graph, as TensorFlow's Saver falls back to it.

``export`` then calls the real ``export_saved_model`` with the exact checkpoint, so a broken
state file cannot make it pick another one or none, and removes the empty ``temp-<ts>`` folder
a failed export leaves behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from estimator_fix import errors
from estimator_fix.model_code.deadline import DEFAULT_TIMEOUT_SECONDS, estimator_sessions
from estimator_fix.model_code.userspec import user_code
from estimator_fix.storage import atomic, fs

EXPORT_SCHEMA = "estimator-fix.export/1"
MODES = ("predict", "eval", "train")
STEP_KEY = "global_step"
# Where the Estimator restores its step from: name-based, and a Keras Estimator's object key.
_STEP_KEYS = frozenset({STEP_KEY, "estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE"})
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_MAX_LISTED = 6


@dataclasses.dataclass(frozen=True)
class KeyProblem:
    """One key the model code expects that the checkpoint does not hold as expected."""

    key: str  # the variable's name in the graph
    checkpoint_key: str  # the key looked up (differs for object-based checkpoints)
    expected_dtype: str
    expected_shape: tuple[int, ...] | None
    found_dtype: str | None
    found_shape: tuple[int, ...] | None
    likely_renamed_from: str | None = None

    def describe(self) -> str:
        if self.found_dtype is None:
            hint = (
                f" (likely renamed: {self.likely_renamed_from})" if self.likely_renamed_from else ""
            )
            return f"missing {self.key}{hint}"
        return (
            f"{self.key}: code {self.expected_dtype}{list(self.expected_shape or ())} vs "
            f"checkpoint {self.found_dtype}{list(self.found_shape or ())}"
        )


@dataclasses.dataclass(frozen=True)
class Preflight:
    checkpoint: str
    mode: str
    restored_keys: int  # how many keys the export's saver restores
    missing: tuple[KeyProblem, ...]
    mismatched: tuple[KeyProblem, ...]
    step_missing: bool  # only global_step is missing (a repair fixes that)
    object_based: bool

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "mode": self.mode,
            "restored_keys": self.restored_keys,
            "missing": [dataclasses.asdict(p) for p in self.missing],
            "mismatched": [dataclasses.asdict(p) for p in self.mismatched],
            "step_missing": self.step_missing,
            "object_based": self.object_based,
            "ok": self.ok,
            "rename_map": rename_suggestions(self),
        }


@dataclasses.dataclass(frozen=True)
class ExportResult:
    schema: str
    export_path: str
    checkpoint: str
    mode: str
    as_text: bool
    preflight: Preflight
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["preflight"] = self.preflight.to_dict()
        return out


def _mode_key(mode: str) -> Any:
    import tensorflow as tf

    if mode not in MODES:
        raise errors.UsageError(f"--mode={mode}: must be one of {', '.join(MODES)}")
    return {
        "predict": tf.estimator.ModeKeys.PREDICT,
        "eval": tf.estimator.ModeKeys.EVAL,
        "train": tf.estimator.ModeKeys.TRAIN,
    }[mode]


def _expected_keys(saver: Any) -> dict[str, tuple[str, tuple[int, ...] | None]]:
    """Graph name -> (dtype, full shape) of everything ``saver`` restores."""
    import tensorflow as tf
    from tensorflow.python.training.saving import saveable_object_util

    var_list = saver._var_list  # the Estimator restores with exactly this saver
    if not isinstance(var_list, dict):
        var_list = saveable_object_util.op_list_to_dict(var_list, convert_variable_to_tensor=False)
    out: dict[str, tuple[str, tuple[int, ...] | None]] = {}
    for name, value in var_list.items():
        if isinstance(value, list):  # slices of a partitioned variable
            info = value[0]._save_slice_info
            out[name] = (value[0].dtype.base_dtype.name, tuple(int(d) for d in info.full_shape))
        elif isinstance(value, tf.Variable | tf.Tensor) or hasattr(value, "get_shape"):
            shape = value.get_shape()
            dims = tuple(int(d) for d in shape) if shape.is_fully_defined() else None
            out[name] = (value.dtype.base_dtype.name, dims)
        else:  # a SaveableObject (lookup tables...): one key per spec
            for spec in value.specs:
                out[spec.name] = (spec.dtype.base_dtype.name, None)
    return out


def preflight(
    estimator: Any,
    serving_input_fn: Callable[[], Any],
    checkpoint_path: str,
    *,
    mode: str = "predict",
    step_will_be_added: bool = False,
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
) -> Preflight:
    """Compares what the export will restore with what the checkpoint holds.

    Args:
      estimator: the user's Estimator.
      serving_input_fn: the receiver function for ``mode``.
      checkpoint_path: the checkpoint prefix to export.
      mode: predict, eval or train.
      step_will_be_added: a repair is planned; a missing ``global_step`` is not a problem.
      timeout: seconds each of the serving input function and model_fn may take (None or 0 =
        no limit): code that never returns must not hang a fleet.

    Raises:
      errors.UserCodeError: the serving input function or model_fn raised, or did not return
        within ``timeout`` (``deadline.UserCodeTimeoutError``).
      errors.InputError: TensorFlow cannot read the checkpoint.
    """
    import tensorflow as tf
    from tensorflow.python.training import saver as saver_lib

    mode_key = _mode_key(mode)
    try:
        reader = tf.train.load_checkpoint(checkpoint_path)
        dtypes = {k: v.name for k, v in reader.get_variable_to_dtype_map().items()}
        shapes = {
            k: tuple(int(d) for d in v) for k, v in reader.get_variable_to_shape_map().items()
        }
    except tf.errors.OpError as e:
        raise errors.InputError(
            f"{checkpoint_path}: TensorFlow cannot read it ({e.message.splitlines()[0]})",
            path=checkpoint_path,
        ) from e
    object_based = _OBJECT_GRAPH_KEY in dtypes
    names_to_keys = saver_lib.object_graph_key_mapping(checkpoint_path) if object_based else {}

    with tf.Graph().as_default() as graph:
        estimator._create_and_assert_global_step(graph)
        with user_code("the serving input function", timeout=timeout):
            receiver = serving_input_fn()
        with user_code("model_fn", timeout=timeout):
            spec = estimator._call_model_fn(
                features=receiver.features,
                labels=getattr(receiver, "labels", None),
                mode=mode_key,
                config=estimator.config,
            )
        saver = spec.scaffold.saver
        if saver is None or not hasattr(saver, "_var_list"):
            saver = tf.compat.v1.train.Saver(sharded=True)
        expected = _expected_keys(saver)

    missing: list[KeyProblem] = []
    mismatched: list[KeyProblem] = []
    used = set()
    for name, (dtype, shape) in sorted(expected.items()):
        key = names_to_keys.get(name, name) if object_based else name
        used.add(key)
        if key not in dtypes:
            missing.append(KeyProblem(name, key, dtype, shape, None, None))
        elif dtypes[key] != dtype or (shape is not None and shapes[key] != shape):
            mismatched.append(KeyProblem(name, key, dtype, shape, dtypes[key], shapes[key]))
    unused = {k: (dtypes[k], shapes[k]) for k in dtypes if k not in used and k != _OBJECT_GRAPH_KEY}
    missing = [_with_rename_hint(p, unused) for p in missing]
    step_missing = any(p.key in _STEP_KEYS for p in missing)
    if step_will_be_added:
        missing = [p for p in missing if p.key not in _STEP_KEYS]
        mismatched = [p for p in mismatched if p.key not in _STEP_KEYS]
    return Preflight(
        checkpoint=checkpoint_path,
        mode=mode,
        restored_keys=len(expected),
        missing=tuple(missing),
        mismatched=tuple(mismatched),
        step_missing=step_missing,
        object_based=object_based,
    )


def _with_rename_hint(
    p: KeyProblem, unused: Mapping[str, tuple[str, tuple[int, ...]]]
) -> KeyProblem:
    same = [
        k for k, (dt, sh) in unused.items() if dt == p.expected_dtype and sh == p.expected_shape
    ]
    if not same:
        return p
    last = p.key.rsplit("/", 1)[-1]
    same.sort(key=lambda k: (k.rsplit("/", 1)[-1] != last, k))
    return dataclasses.replace(p, likely_renamed_from=same[0])


def rename_suggestions(report: Preflight) -> dict[str, str]:
    """The likely renames as a ``map.json`` (checkpoint key -> the key the code restores), each
    checkpoint key suggested once. Never applied unless passed back with ``--map_file``."""
    out: dict[str, str] = {}
    for p in report.missing:
        if p.likely_renamed_from and p.likely_renamed_from not in out:
            out[p.likely_renamed_from] = p.checkpoint_key
    return out


def check_preflight(report: Preflight) -> None:
    """Raises ``ModelMismatchError`` listing the keys unless the pre-flight passed."""
    if report.ok:
        return
    keys = {p.key for p in (*report.missing, *report.mismatched)}
    if len(keys) == 1 and keys <= _STEP_KEYS:
        raise errors.ModelMismatchError(
            f'{report.checkpoint}: no usable int64 global_step (export would fail with "Key '
            'global_step not found" or a dtype error); run `estimator-fix repair` first, or '
            "`estimator-fix fix` to repair and export in one go",
            path=report.checkpoint,
        )
    problems = [p.describe() for p in (*report.missing, *report.mismatched)]
    listed = "; ".join(problems[:_MAX_LISTED])
    more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    renames = rename_suggestions(report)
    hint = f"; likely renames as a map.json for --map_file: {json.dumps(renames)}" * bool(renames)
    raise errors.ModelMismatchError(
        f"{report.checkpoint}: the model code does not match the checkpoint ({listed}{more}); "
        "fix the model code or pass the checkpoint it was trained with; nothing was "
        f"exported{hint}",
        path=report.checkpoint,
    )


def check_export_base(export_dir_base: str) -> str:
    """Normalises ``--export_dir`` and refuses a file. Does no writing."""
    base = fs.normalize(export_dir_base)
    if fs.exists(base) and not fs.isdir(base):
        raise errors.UsageError(f"--export_dir={base}: is a file; pass a directory")
    return base


def export(
    estimator: Any,
    serving_input_fn: Callable[[], Any],
    export_dir_base: str,
    checkpoint_path: str,
    *,
    mode: str = "predict",
    as_text: bool = False,
    assets_extra: Mapping[str, str] | None = None,
    checked: Preflight | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
) -> ExportResult:
    """Pre-flights (unless ``checked`` is given), then runs the Estimator's own export.

    The export's session places variables as TensorFlow Serving does (soft placement: a
    variable pinned to ``/gpu:0`` or ``/cpu:1`` restores on this machine's CPU), and the whole
    export is bounded to ``timeout`` seconds (None or 0 = no limit).

    Raises:
      errors.ModelMismatchError: the pre-flight found mismatched keys; nothing exported.
      errors.UserCodeError: the user's code raised during the export, or the export did not
        finish within ``timeout``.
      errors.ExportError: TensorFlow's export failed; no ``temp-*`` folder is left.
    """
    start = time.monotonic()
    base = check_export_base(export_dir_base)
    report = checked or preflight(
        estimator, serving_input_fn, checkpoint_path, mode=mode, timeout=timeout
    )
    check_preflight(report)
    before = set(fs.listdir(base)) if fs.exists(base) else None
    try:
        with (
            user_code("export_saved_model", timeout=timeout),
            estimator_sessions(estimator, timeout),
        ):
            raw = estimator.export_saved_model(
                base,
                serving_input_fn,
                assets_extra=dict(assets_extra) if assets_extra else None,
                as_text=as_text,
                checkpoint_path=checkpoint_path,
                experimental_mode=_mode_key(mode),
            )
    except BaseException:
        _remove_failed_temps(base, before)
        raise
    path = raw.decode() if isinstance(raw, bytes) else str(raw)
    return ExportResult(
        schema=EXPORT_SCHEMA,
        export_path=path,
        checkpoint=checkpoint_path,
        mode=mode,
        as_text=as_text,
        preflight=report,
        seconds=round(time.monotonic() - start, 3),
    )


def _remove_failed_temps(base: str, before: set[str] | None) -> None:
    """A failed export leaves ``temp-<ts>/`` (and maybe ``base`` itself): remove ours only."""
    if not fs.exists(base):
        return
    for name in fs.listdir(base):
        if before is not None and name in before:
            continue
        if name.startswith("temp-"):
            atomic.remove_tree(fs.join(base, name))
    if before is None and not fs.listdir(base) and not fs.has_scheme(base):
        atomic.remove_tree(base)


def parse_assets_extra(values: list[str] | None) -> dict[str, str] | None:
    """``--assets_extra=dest/in/assets.extra=/src/file`` (repeatable); each source must exist."""
    if not values:
        return None
    out = {}
    for v in values:
        dest, sep, src = v.partition("=")
        if not sep or not dest or not src:
            raise errors.UsageError(f"--assets_extra={v}: expected DEST=SOURCE_FILE")
        if not os.path.isfile(src):
            raise errors.UsageError(f"--assets_extra={v}: no such file {src}")
        out[dest] = src
    return out
