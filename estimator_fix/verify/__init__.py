"""Stage 5: prove that a SavedModel loads, runs, and predicts what its checkpoint predicts.

An export that "succeeded" can still be wrong: it may have restored another checkpoint than the
one intended (a stale ``checkpoint`` state file), or serve the checkpoint's tensors under shapes
the model code declares differently. So ``verify``:

1. loads the SavedModel in a fresh graph, exactly as TensorFlow Serving's TF1 loader does
   (``tf.compat.v1.saved_model.loader.load``), lists its signatures and reads the ``global_step``
   the export restored; with a checkpoint it requires the two steps to be equal;
2. feeds the given inputs, or inputs synthesized from the serving signature: raw tensors for
   raw receivers, serialized ``tf.train.Example`` protos for parsing receivers (the feature
   keys, dtypes and shapes come from the graph's ``ParseExample`` op);
3. runs every signature it can feed;
4. with the Estimator and checkpoint, runs ``Estimator.predict`` on the same features and
   compares every signature output that corresponds to a prediction key (max abs difference).

A parity mismatch is a result (``ok=False``), not an exception: the caller decides what to do
with a SavedModel that predicts something else. TensorFlow is imported inside the functions so
that importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from estimator_fix import errors
from estimator_fix.model_code import userspec
from estimator_fix.storage import fs

VERIFY_SCHEMA = "estimator-fix.verify/1"

DEFAULT_SIGNATURE = "serving_default"
PREDICT_SIGNATURE = "predict"

# Signature outputs whose key differs from the Estimator's prediction key, in the order tried
# (the first candidate with a matching shape wins). The canned heads' classification signature
# has `scores` (= probabilities) and `classes` (= all_classes, the class names tiled per row);
# the regression signature has `outputs` (= predictions).
# A model_fn whose ``predictions`` is one tensor, not a dict, exports it as `output` (the
# PredictOutput default); ``_predict`` files such predictions under that same key.
_SINGLE_OUTPUT_KEY = "output"
_OUTPUT_ALIASES: dict[str, tuple[str, ...]] = {
    "scores": ("probabilities", _SINGLE_OUTPUT_KEY),
    "classes": ("classes", "all_classes"),
    "outputs": ("predictions", _SINGLE_OUTPUT_KEY),
}

_PARSE_OPS = ("ParseExample", "ParseExampleV2")
_UNSUPPORTED_PARSE_OPS = (
    "ParseSingleExample",
    "ParseSequenceExample",
    "ParseSequenceExampleV2",
    "ParseSingleSequenceExample",
    "DecodeJSONExample",
)
# Ops a serialized-Example input may pass through before it reaches the parse op.
_PASS_THROUGH_OPS = ("Identity", "Reshape", "ExpandDims", "Squeeze", "StopGradient")
_UNKNOWN_DIM_SIZE = 2  # what an unknown non-batch dimension becomes when synthesizing


@dataclasses.dataclass(frozen=True)
class OutputParity:
    """One signature output and how it compared with ``Estimator.predict``.

    Attributes:
      signature: the signature_def key.
      output: the signature's output key.
      prediction_key: the ``Estimator.predict`` key it was compared with; None = not compared.
      max_abs_diff: the largest absolute difference (numeric outputs); None when not compared
        or compared exactly (strings), or when a NaN/inf differs (then ``mismatched`` > 0).
      shape: the output's shape as run.
      dtype: the output's numpy dtype name.
      compared: ``numeric``, ``exact`` (strings) or ``none``.
      mismatched: elements beyond the tolerance (numeric) or unequal (exact); None if not
        compared.
      ok: the comparison passed; None when not compared.
      note: why it was not compared, or what failed, in words.
    """

    signature: str
    output: str
    prediction_key: str | None
    max_abs_diff: float | None
    shape: tuple[int, ...]
    dtype: str = ""
    compared: str = "none"
    mismatched: int | None = None
    ok: bool | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "output": self.output,
            "prediction_key": self.prediction_key,
            "max_abs_diff": self.max_abs_diff,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "compared": self.compared,
            "mismatched": self.mismatched,
            "ok": self.ok,
            "note": self.note,
        }


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """What ``verify`` checked about one SavedModel.

    ``ok`` means: the SavedModel loaded, every signature that was run ran, the step matched
    the checkpoint's (when one was given) and, when parity was checked (an Estimator and a
    checkpoint were given), at least one output was compared and every compared output is
    within ``tolerance``. ``outputs`` holds the arrays each signature returned (not in
    ``to_dict``: the JSON report stays small).
    """

    schema: str
    export_path: str
    tags: tuple[str, ...]
    signatures: tuple[str, ...]
    inputs_source: str
    num_examples: int
    exported_step: int | None
    checkpoint_step: int | None
    parity: tuple[OutputParity, ...]
    max_abs_diff: float | None
    tolerance: float
    ok: bool
    checks: tuple[str, ...]
    signatures_run: tuple[str, ...] = ()
    signatures_skipped: tuple[str, ...] = ()
    parity_checked: bool = False
    checkpoint_path: str | None = None
    outputs: Mapping[str, Mapping[str, np.ndarray]] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "export_path": self.export_path,
            "tags": list(self.tags),
            "signatures": list(self.signatures),
            "signatures_run": list(self.signatures_run),
            "signatures_skipped": list(self.signatures_skipped),
            "inputs_source": self.inputs_source,
            "num_examples": self.num_examples,
            "exported_step": self.exported_step,
            "checkpoint_path": self.checkpoint_path,
            "checkpoint_step": self.checkpoint_step,
            "parity_checked": self.parity_checked,
            "parity": [p.to_dict() for p in self.parity],
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "ok": self.ok,
            "checks": list(self.checks),
        }


# --- Inputs from a file. ---------------------------------------------------------------------


def load_inputs(path: str) -> dict[str, np.ndarray]:
    """Reads ``--inputs``: a JSON object ``{"feature": [row, ...]}`` or a NumPy ``.npz``.

    Every value needs a leading batch dimension, the same for all features; that is what the
    SavedModel is fed (raw receivers) or serialized into ``tf.train.Example`` protos (parsing
    receivers), and what ``Estimator.predict`` gets.

    Raises:
      errors.PathNotFoundError: no such file.
      errors.InputError: unreadable, not JSON / npz, not an object of arrays, ragged rows,
        no rows, or features with different numbers of rows.
    """
    if not os.path.exists(path):
        raise errors.PathNotFoundError(
            f"{path}: no such inputs file; pass a .json or .npz of feature arrays", path=path
        )
    if os.path.isdir(path):
        raise errors.InputError(f"{path}: is a directory; pass a .json or .npz file", path=path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise errors.UnreadableError(f"{path}: cannot read ({e.strerror})", path=path) from e
    is_npz = path.endswith(".npz") or head.startswith(b"PK")  # npz files are zip archives
    raw = _read_npz(path) if is_npz else _read_json(path)
    if not raw:
        raise errors.InputError(
            f"{path}: holds no features; expected {{\"feature\": [[...], ...]}}", path=path
        )
    arrays: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        arrays[name] = _as_array(value, name, path)
    _batch_size(arrays, f"{path}:", path)
    return arrays


def _read_npz(path: str) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        detail = " ".join(str(e).split())[:200]
        raise errors.InputError(
            f"{path}: not a readable .npz of numeric or string arrays ({detail}); write it "
            "with numpy.savez",
            path=path,
        ) from e


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except UnicodeDecodeError as e:
        raise errors.InputError(
            f"{path}: not UTF-8 text; pass JSON like {{\"feature\": [[...], ...]}} or an .npz",
            path=path,
        ) from e
    except json.JSONDecodeError as e:
        raise errors.InputError(
            f"{path}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg}); expected "
            "{\"feature\": [[...], ...]}",
            path=path,
        ) from e
    except OSError as e:
        raise errors.UnreadableError(f"{path}: cannot read ({e.strerror})", path=path) from e
    if not isinstance(value, dict):
        raise errors.InputError(
            f"{path}: must be a JSON object of feature name -> rows, got "
            f"{type(value).__name__}",
            path=path,
        )
    return value


def _as_array(value: Any, name: str, path: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise errors.InputError(
            f"{path}: feature {name!r} is not a rectangular array (rows of different lengths?)",
            path=path,
        ) from e
    if array.dtype == object or array.dtype.kind not in "biufSU":
        raise errors.InputError(
            f"{path}: feature {name!r} must hold numbers, booleans or strings "
            f"(got {array.dtype}); rows must all have the same length",
            path=path,
        )
    if array.ndim == 0:
        raise errors.InputError(
            f"{path}: feature {name!r} is a scalar; give one row per example, e.g. [{value!r}]",
            path=path,
        )
    return array


def _batch_size(arrays: Mapping[str, np.ndarray], where: str, path: str | None) -> int:
    sizes = {name: int(a.shape[0]) for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{n}: {s}" for n, s in sorted(sizes.items()))
        raise errors.InputError(
            f"{where} features have different numbers of rows ({listed}); give every feature "
            "one row per example",
            path=path,
        )
    size = next(iter(sizes.values()))
    if size == 0:
        raise errors.InputError(f"{where} inputs have no rows; give at least one", path=path)
    return size


# --- Locating the SavedModel. ----------------------------------------------------------------


def resolve_saved_model(path: str) -> str:
    """A SavedModel directory, or the newest numeric version folder under an export base.

    ``Estimator.export_saved_model`` writes ``BASE/<timestamp>/``; users pass either.

    Raises:
      errors.PathNotFoundError: nothing at ``path``.
      errors.InputError: a file, or a directory that neither is nor holds a SavedModel.
    """
    path = fs.normalize(path)
    if not fs.exists(path):
        raise errors.PathNotFoundError(f"{path}: no such SavedModel directory", path=path)
    if not fs.isdir(path):
        raise errors.InputError(f"{path}: is a file; pass the SavedModel directory", path=path)
    names = fs.listdir(path)
    if "saved_model.pb" in names or "saved_model.pbtxt" in names:
        return path
    versions = sorted(
        (int(n), n)
        for n in names
        if n.isdigit() and any(
            fs.exists(fs.join(path, n, f)) for f in ("saved_model.pb", "saved_model.pbtxt")
        )
    )
    if versions:
        return fs.join(path, versions[-1][1])
    raise errors.InputError(
        f"{path}: no saved_model.pb here and no numeric version folder holding one; pass the "
        "directory the export printed",
        path=path,
    )


# --- What a signature needs. -----------------------------------------------------------------


class _CannotSynthesizeError(Exception):
    """A dtype verify has no synthetic values for; ``verify`` turns it into an ExportError."""


@dataclasses.dataclass(frozen=True)
class _Feature:
    """One feature a signature needs, as the SavedModel will see it."""

    name: str
    dtype: Any  # tf.DType
    shape: tuple[int | None, ...] | None  # full shape incl. batch (raw); per-example (parsed)
    kind: str = "dense"  # dense | sparse
    required: bool = True
    default: Any = None  # a parsed dense feature's default (np.ndarray), used when not given


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How to feed one signature."""

    signature: str
    method: str
    inputs: Mapping[str, str]  # input key -> tensor name
    outputs: Mapping[str, str]  # output key -> tensor name
    features: tuple[_Feature, ...]
    parsed: bool  # a single serialized-tf.Example input
    unsupported: str = ""  # why the signature cannot be fed


def _tensor_shape(info: Any) -> tuple[int | None, ...] | None:
    if info.tensor_shape.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)


def _find_parse_op(graph: Any, tensor_name: str) -> tuple[Any | None, str]:
    """The ParseExample op fed by ``tensor_name`` (through pass-through ops), and a reason."""
    frontier = list(graph.get_tensor_by_name(tensor_name).consumers())
    seen: set[str] = set()
    for _ in range(8):
        following = []
        for op in frontier:
            if op.name in seen:
                continue
            seen.add(op.name)
            if op.type in _PARSE_OPS:
                return op, ""
            if op.type in _UNSUPPORTED_PARSE_OPS:
                return None, f"its input is parsed by {op.type}, which verify cannot feed"
            if op.type in _PASS_THROUGH_OPS:
                for out in op.outputs:
                    following.extend(out.consumers())
        frontier = following
    return None, ""


def _static(tensor: Any, sess: Any) -> Any:
    import tensorflow as tf

    value = tf.get_static_value(tensor)
    return value if value is not None else sess.run(tensor)


def _parse_features(op: Any, sess: Any) -> tuple[tuple[_Feature, ...], str]:
    """Dense and sparse (VarLen) features of a ParseExample/ParseExampleV2 op."""
    import tensorflow as tf

    def names(value: Any) -> list[str]:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in np.ravel(value)]

    if op.type == "ParseExampleV2":
        sparse_keys = names(_static(op.inputs[2], sess))
        dense_keys = names(_static(op.inputs[3], sess))
        ragged_keys = names(_static(op.inputs[4], sess))
        defaults = list(op.inputs[5 : 5 + len(dense_keys)])
    else:
        num_sparse = op.get_attr("Nsparse")
        num_dense = op.get_attr("Ndense")
        sparse_keys = [names(_static(t, sess))[0] for t in op.inputs[2 : 2 + num_sparse]]
        start = 2 + num_sparse
        dense_keys = [names(_static(t, sess))[0] for t in op.inputs[start : start + num_dense]]
        ragged_keys = []
        defaults = list(op.inputs[start + num_dense : start + 2 * num_dense])
    if ragged_keys:
        return (), f"it parses ragged features ({', '.join(ragged_keys)}), which verify cannot feed"
    dense_types = op.get_attr("Tdense")
    dense_shapes = [tf.TensorShape(s) for s in op.get_attr("dense_shapes")]
    sparse_types = op.get_attr("sparse_types")
    features: list[_Feature] = []
    for key, dtype, shape, default in zip(
        dense_keys, dense_types, dense_shapes, defaults, strict=True
    ):
        dims = None if shape.rank is None else tuple(shape.as_list())
        value = np.asarray(_static(default, sess))
        has_default = value.size > 0
        features.append(
            _Feature(key, tf.as_dtype(dtype), dims, "dense", not has_default,
                     value if has_default else None)
        )
    for key, dtype in zip(sparse_keys, sparse_types, strict=True):
        features.append(_Feature(key, tf.as_dtype(dtype), None, "sparse", False))
    return tuple(features), ""


def _plan_signature(key: str, signature: Any, graph: Any, sess: Any) -> _Plan:
    """Which features ``signature`` takes and whether they arrive as serialized Examples."""
    import tensorflow as tf

    plan = _Plan(
        signature=key,
        method=signature.method_name,
        inputs={k: v.name for k, v in signature.inputs.items()},
        outputs={k: v.name for k, v in signature.outputs.items()},
        features=(),
        parsed=False,
    )
    infos = [*signature.inputs.values(), *signature.outputs.values()]
    if any(not info.name for info in infos):
        return dataclasses.replace(plan, unsupported="it uses composite (sparse/ragged) tensors")
    if len(signature.inputs) == 1:
        [info] = signature.inputs.values()
        if info.dtype == tf.string.as_datatype_enum:
            op, reason = _find_parse_op(graph, info.name)
            if reason:
                return dataclasses.replace(plan, parsed=True, unsupported=reason)
            if op is not None:
                features, reason = _parse_features(op, sess)
                return dataclasses.replace(
                    plan, features=features, parsed=True, unsupported=reason
                )
    raw_features: list[_Feature] = []
    for in_key, info in sorted(signature.inputs.items()):
        dtype = tf.as_dtype(info.dtype)
        if dtype in (tf.resource, tf.variant):
            return dataclasses.replace(
                plan, unsupported=f"input {in_key!r} is a {dtype.name} tensor"
            )
        raw_features.append(_Feature(in_key, dtype, _tensor_shape(info)))
    return dataclasses.replace(plan, features=tuple(raw_features))


# --- Synthesizing and checking inputs. -------------------------------------------------------


def _random_values(dtype: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Deterministic values of ``dtype``: floats in [-1, 1], small ints, "a"/"b", bools."""
    if dtype.is_floating:
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype.as_numpy_dtype)
    if dtype.is_bool:
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.is_integer:
        return rng.integers(0, 2, size=shape).astype(dtype.as_numpy_dtype)
    if dtype.name == "string":
        return np.array(
            [b"a" if v else b"b" for v in rng.integers(0, 2, size=int(np.prod(shape)))],
            dtype=object,
        ).reshape(shape)
    raise _CannotSynthesizeError(dtype.name)


def _synthesize(
    features: Sequence[_Feature], parsed: bool, rows: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Feature values for ``rows`` examples. Sparse features: a list of value lists per row."""
    if not parsed:
        fixed = {f.shape[0] for f in features if f.shape and f.shape[0] is not None}
        if len(fixed) == 1:
            rows = fixed.pop()  # a signature with a fixed batch size
    out: dict[str, Any] = {}
    for f in sorted(features, key=lambda f: f.name):
        if f.kind == "sparse":
            values = _random_values(f.dtype, (2 * rows,), rng)
            out[f.name] = [list(values[2 * i : 2 * i + 1 + i % 2]) for i in range(rows)]
            continue
        if parsed:
            per_example = f.shape if f.shape is not None else ()
            shape = (rows, *(_UNKNOWN_DIM_SIZE if d is None else d for d in per_example))
        elif f.shape is None:
            shape = (rows,)
        elif not f.shape:
            shape = ()  # a scalar input: one example, no batch dimension
        else:
            rest = (_UNKNOWN_DIM_SIZE if d is None else d for d in f.shape[1:])
            shape = (rows if f.shape[0] is None else f.shape[0], *rest)
        out[f.name] = _random_values(f.dtype, shape, rng)
    return out


def _source_path(source: str) -> str | None:
    return source[len("file:") :] if source.startswith("file:") else None


def _coerce(
    array: np.ndarray, feature: _Feature, parsed: bool, rows: int, source: str
) -> np.ndarray:
    """Casts a given array to the signature's dtype and shape, or says why it does not fit."""
    path = _source_path(source)
    where = f"{path or 'inputs'}: feature {feature.name!r}"
    dtype = feature.dtype
    if dtype.name == "string":
        if array.dtype.kind not in "SUO":
            raise errors.InputError(
                f"{where} holds {_KIND_WORDS.get(array.dtype.kind, str(array.dtype))} but the "
                "SavedModel expects strings",
                path=path,
            )
        converted = np.vectorize(
            lambda v: v if isinstance(v, bytes) else str(v).encode("utf-8"), otypes=[object]
        )(array)
    else:
        target = np.dtype(dtype.as_numpy_dtype)
        if array.dtype.kind in "SUO" or not np.can_cast(array.dtype, target, "same_kind"):
            kind = _KIND_WORDS.get(array.dtype.kind, str(array.dtype))
            raise errors.InputError(
                f"{where} holds {kind} but the SavedModel expects {dtype.name}", path=path
            )
        converted = array.astype(target)
    if feature.kind == "sparse":
        return converted
    if parsed:
        expected: tuple[int | None, ...] | None = (
            None if feature.shape is None else (None, *feature.shape)
        )
    else:
        expected = feature.shape
    if expected is None or _fits(converted.shape, expected):
        return converted
    known = expected[1:]
    if all(d is not None for d in known):
        # Rows given flat for a [-1, 1] input, or [-1] rows given as [[v], ...]: same values.
        per_row = int(np.prod([d for d in known if d is not None], dtype=np.int64))
        if converted.size == rows * per_row and (expected[0] in (None, rows)):
            return converted.reshape((rows, *(d for d in known if d is not None)))
    shown = tuple(-1 if d is None else d for d in expected)
    raise errors.InputError(
        f"{where} has shape {tuple(converted.shape)} but the SavedModel expects {shown}",
        path=path,
    )


_KIND_WORDS = {
    "b": "booleans", "i": "integers", "u": "integers", "f": "floats", "c": "complex numbers",
    "S": "strings", "U": "strings", "O": "objects",
}


def _fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    return len(shape) == len(expected) and all(
        e is None or e == s for s, e in zip(shape, expected, strict=True)
    )


def _serialize_examples(features: Sequence[_Feature], values: Mapping[str, Any], rows: int) -> Any:
    """One serialized ``tf.train.Example`` per row, as a numpy object array of bytes."""
    import tensorflow as tf

    def feature_of(dtype: Any, flat: Sequence[Any]) -> Any:
        if dtype.is_floating:
            return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in flat]))
        if dtype.is_integer or dtype.is_bool:
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in flat]))
        return tf.train.Feature(
            bytes_list=tf.train.BytesList(
                value=[v if isinstance(v, bytes) else str(v).encode() for v in flat]
            )
        )

    serialized = []
    for i in range(rows):
        example = tf.train.Example()
        for f in features:
            if f.name not in values:
                continue
            row = values[f.name][i]
            flat = list(row) if f.kind == "sparse" else list(np.ravel(row))
            example.features.feature[f.name].CopyFrom(feature_of(f.dtype, flat))
        serialized.append(example.SerializeToString())
    return np.array(serialized, dtype=object)


@dataclasses.dataclass(frozen=True)
class _SparseRows:
    """A VarLen feature's values per example, for ``Estimator.predict``."""

    dtype: Any  # tf.DType
    rows: Sequence[Sequence[Any]]

    def to_tensor(self) -> Any:
        """What ParseExample makes of it: row-major indices, dense shape [rows, longest]."""
        import tensorflow as tf

        indices = [[i, j] for i, row in enumerate(self.rows) for j in range(len(row))]
        flat = [v for row in self.rows for v in row]
        numpy_dtype = object if self.dtype.name == "string" else self.dtype.as_numpy_dtype
        return tf.sparse.SparseTensor(
            indices=np.array(indices, dtype=np.int64).reshape(-1, 2),
            values=tf.constant(np.array(flat, dtype=numpy_dtype), dtype=self.dtype),
            dense_shape=[len(self.rows), max((len(r) for r in self.rows), default=0)],
        )


# --- Loading the SavedModel and its step. ----------------------------------------------------


def _read_exported_step(graph: Any, sess: Any) -> int | None:
    import tensorflow as tf

    step = tf.compat.v1.train.get_global_step(graph)
    if step is not None:
        return int(sess.run(step))
    try:
        op = graph.get_operation_by_name("global_step")
    except KeyError:
        return None
    if op.type == "VarHandleOp":
        with graph.as_default():
            value = tf.raw_ops.ReadVariableOp(resource=op.outputs[0], dtype=tf.int64)
        return int(sess.run(value))
    return int(sess.run(op.outputs[0]))


def _read_checkpoint_step(checkpoint_path: str) -> int | None:
    """``global_step`` of a checkpoint prefix (or the object-based step of a Keras one).

    Raises:
      errors.PathNotFoundError: the checkpoint does not exist.
      errors.InputError: it is a directory or cannot be read.
    """
    import tensorflow as tf

    if fs.isdir(checkpoint_path):
        raise errors.InputError(
            f"{checkpoint_path}: is a directory; pass a checkpoint prefix such as "
            f"{fs.join(checkpoint_path, 'model.ckpt-N')}",
            path=checkpoint_path,
        )
    try:
        reader = tf.train.load_checkpoint(checkpoint_path)
    except (tf.errors.NotFoundError, ValueError) as e:
        raise errors.PathNotFoundError(
            f"{checkpoint_path}: no checkpoint with this prefix; pass an existing prefix "
            "(the path without .index)",
            path=checkpoint_path,
        ) from e
    except tf.errors.OpError as e:
        raise errors.InputError(
            f"{checkpoint_path}: cannot read the checkpoint ({e.message.splitlines()[0]}); run "
            "estimator-fix scan on its directory",
            path=checkpoint_path,
        ) from e
    keys = reader.get_variable_to_dtype_map()
    key = "global_step" if "global_step" in keys else None
    if key is None:
        object_based = [k for k in keys if k.endswith("global_step/.ATTRIBUTES/VARIABLE_VALUE")]
        key = object_based[0] if len(object_based) == 1 else None
    if key is None:
        return None
    value = np.asarray(reader.get_tensor(key))
    return int(value.reshape(-1)[0]) if value.size == 1 else None


def _load(export_path: str, tags: Sequence[str], graph: Any, sess: Any) -> Any:
    """Loads the MetaGraph into ``sess``; every failure is an ExportError naming the path."""
    import tensorflow as tf

    if not fs.exists(export_path):
        raise errors.ExportError(
            f"{export_path}: no such SavedModel directory; pass the directory the export "
            "printed",
            path=export_path,
        )
    if not any(
        fs.exists(fs.join(export_path, name)) for name in ("saved_model.pb", "saved_model.pbtxt")
    ):
        raise errors.ExportError(
            f"{export_path}: not a SavedModel (no saved_model.pb); pass the BASE/<version> "
            "directory the export printed",
            path=export_path,
        )
    try:
        with graph.as_default():
            return tf.compat.v1.saved_model.loader.load(sess, list(tags), export_path)
    except RuntimeError as e:  # no MetaGraph with these tags
        raise errors.ExportError(
            f"{export_path}: {' '.join(str(e).split())[:300]}; pass the tags it was exported "
            "with",
            path=export_path,
        ) from e
    except (tf.errors.OpError, OSError, ValueError, KeyError) as e:
        message = getattr(e, "message", None) or str(e)
        raise errors.ExportError(
            f"{export_path}: the SavedModel does not load ({type(e).__name__}: "
            f"{' '.join(message.split())[:300]}); re-export it",
            path=export_path,
        ) from e


# --- Running and comparing. ------------------------------------------------------------------


def _run_signature(plan: _Plan, sess: Any, feed: Mapping[str, Any], export_path: str) -> dict[
    str, np.ndarray
]:
    import tensorflow as tf

    try:
        values = sess.run(dict(plan.outputs), feed_dict=dict(feed))
    except (tf.errors.OpError, ValueError, TypeError) as e:
        message = getattr(e, "message", None) or str(e)
        raise errors.ExportError(
            f"{export_path}: signature {plan.signature!r} failed on the inputs "
            f"({type(e).__name__}: {' '.join(message.split())[:300]}); check the inputs "
            "match its serving receiver",
            path=export_path,
        ) from e
    return {k: np.asarray(v) for k, v in values.items()}


def _predict(estimator: Any, features: Mapping[str, Any], checkpoint_path: str) -> dict[
    str, np.ndarray
]:
    """``Estimator.predict`` on one batch of ``features``, batches concatenated.

    Raises:
      errors.UserCodeError: the user's model code raised (its file and line are named).
      errors.ExportError: TensorFlow failed with no user frame on the stack, typically the
        checkpoint does not restore into the model (a missing or mistyped key).
    """
    import tensorflow as tf

    def input_fn() -> Any:
        # One dataset element: predict stops after one batch (constant tensors never end).
        tensors = {
            name: value.to_tensor() if isinstance(value, _SparseRows) else tf.constant(value)
            for name, value in features.items()
        }
        return tf.data.Dataset.from_tensors(tensors)

    batches: list[Mapping[str, Any]] = []
    with userspec.user_code("Estimator.predict"):
        try:
            for batch in estimator.predict(
                input_fn, checkpoint_path=checkpoint_path, yield_single_examples=False
            ):
                batches.append(
                    batch if isinstance(batch, Mapping) else {_SINGLE_OUTPUT_KEY: batch}
                )
        except tf.errors.OpError as e:
            if userspec.user_frame(e) is not None:
                raise
            raise errors.ExportError(
                f"{checkpoint_path}: Estimator.predict failed ({type(e).__name__}: "
                f"{_op_error_summary(e)}); run estimator-fix scan on its directory",
                path=checkpoint_path,
            ) from e
    if not batches:
        return {}
    return {
        key: np.concatenate([np.asarray(b[key]) for b in batches], axis=0)
        for key in batches[0]
    }


def _op_error_summary(error: Any) -> str:
    """The line of a TensorFlow error that says what is wrong, not its graph dump."""
    message = getattr(error, "message", None) or str(error)
    found = re.search(r"(Key \S+ not found in checkpoint|[^\n]*expected dtype[^\n]*)", message)
    text = found.group(1) if found else message.strip().splitlines()[0] if message.strip() else ""
    return " ".join(text.split())[:300] or "(no message)"


def _compare(
    signature: str,
    output: str,
    value: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    tolerance: float,
) -> OutputParity:
    shape = tuple(int(d) for d in value.shape)
    is_text = value.dtype.kind in "SUO"
    base = OutputParity(signature, output, None, None, shape, value.dtype.name)
    candidates = [output, *(k for k in _OUTPUT_ALIASES.get(output, ()) if k != output)]
    present = [k for k in candidates if k in predictions]
    if not present:
        return dataclasses.replace(base, note="no Estimator.predict key with this name")
    matching = [k for k in present if tuple(np.shape(predictions[k])) == shape]
    key = matching[0] if matching else present[0]
    expected = np.asarray(predictions[key])
    base = dataclasses.replace(base, prediction_key=key)
    if not matching:
        return dataclasses.replace(
            base, compared="exact" if is_text else "numeric", ok=False,
            mismatched=int(value.size),
            note=f"shape {shape} but Estimator.predict[{key!r}] has {tuple(expected.shape)}",
        )
    if is_text or expected.dtype.kind in "SUO":
        unequal = int(np.sum(value.astype(object) != expected.astype(object)))
        return dataclasses.replace(
            base, compared="exact", mismatched=unequal, ok=unequal == 0,
            note="" if unequal == 0 else f"{unequal} element(s) differ",
        )
    a = value.astype(np.float64)
    b = expected.astype(np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    same_inf = np.isinf(a) & (a == b)
    diff = np.where(both_nan | same_inf, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)
    worst = float(diff.max()) if diff.size else 0.0
    mismatched = int(np.sum(diff > tolerance))
    if not math.isfinite(worst):
        return dataclasses.replace(
            base, compared="numeric", mismatched=mismatched, ok=False,
            note="NaN or inf where the other side has a number",
        )
    return dataclasses.replace(
        base, compared="numeric", max_abs_diff=worst, mismatched=mismatched,
        ok=mismatched == 0,
    )


def _signature_order(keys: Sequence[str]) -> list[str]:
    """serving_default first, then predict, then the rest by name: the report reads top-down."""
    first = [k for k in (DEFAULT_SIGNATURE, PREDICT_SIGNATURE) if k in keys]
    return first + sorted(k for k in keys if k not in first)


# --- The stage. ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """The examples, as the SavedModel is fed them and as ``Estimator.predict`` gets them."""

    values: Mapping[str, Any]  # feature -> array (sparse: list of value lists per row)
    rows: int
    estimator_features: Mapping[str, Any]  # feature -> array or _SparseRows
    description: str  # "synthesized", "given" or "from <file>"


@dataclasses.dataclass(frozen=True)
class _Run:
    """What running the SavedModel's signatures gave."""

    signatures: tuple[str, ...]
    exported_step: int | None
    inputs: _Inputs
    outputs: Mapping[str, Mapping[str, np.ndarray]]
    run: tuple[str, ...]
    skipped: tuple[str, ...]
    used_features: frozenset[str]


def verify(
    export_path: str,
    *,
    inputs: Mapping[str, np.ndarray] | None = None,
    inputs_source: str = "given",
    estimator: Any | None = None,
    checkpoint_path: str | None = None,
    num_synthesized: int = 4,
    tolerance: float = 1e-5,
    seed: int = 0,
    tags: Sequence[str] = ("serve",),
    require_step_match: bool = True,
) -> VerifyResult:
    """Loads, runs and (with the model) checks a SavedModel against its checkpoint.

    Args:
      export_path: the SavedModel directory (``BASE/<version>``).
      inputs: feature name -> array with a leading batch dimension; None = synthesize from
        the serving signature. For parsing receivers these are the features serialized into
        ``tf.train.Example`` protos.
      inputs_source: ``file:<path>``, ``synthesized`` or ``given``; errors about the inputs
        name the file.
      estimator: the user's ``tf.estimator.Estimator``; with ``checkpoint_path`` it enables the
        parity check against ``Estimator.predict``.
      checkpoint_path: the checkpoint prefix the SavedModel was exported from. Its step must
        equal the exported ``global_step``; it is what ``Estimator.predict`` restores (passed
        explicitly: a stale state file would otherwise make predict run on initial weights).
      num_synthesized: rows to synthesize when ``inputs`` is None.
      tolerance: the largest absolute difference accepted per element.
      seed: seeds the synthesized inputs, so a run is reproducible.
      tags: the MetaGraph tags to load.
      require_step_match: False only to compare against a checkpoint of another step on
        purpose (diagnostics, tests); the mismatch is then a check line, not an error.

    Returns:
      A VerifyResult; ``ok`` is False on a parity mismatch (never raised here).

    Raises:
      errors.ExportError: the SavedModel is missing, does not load, has no signature, a
        signature fails to run, or its step differs from the checkpoint's.
      errors.InputError: the inputs miss a feature or do not fit the signature; the checkpoint
        cannot be read (``errors.PathNotFoundError`` when it does not exist).
      errors.UsageError: an Estimator without a checkpoint, or a bad number.
      errors.UserCodeError: the user's model code raised inside ``Estimator.predict``.
    """
    if num_synthesized < 1:
        raise errors.UsageError(f"num_synthesized={num_synthesized}: must be at least 1")
    if not tolerance >= 0:
        raise errors.UsageError(f"--tolerance={tolerance}: must be a number >= 0")
    if estimator is not None and checkpoint_path is None:
        raise errors.UsageError(
            "parity with Estimator.predict needs the checkpoint prefix the SavedModel was "
            "exported from; pass checkpoint_path (--model_dir/--checkpoint)"
        )
    export_path = fs.normalize(export_path)
    checks: list[str] = []
    checkpoint_step: int | None = None
    if checkpoint_path is not None:
        checkpoint_path = fs.normalize(checkpoint_path)
        checkpoint_step = _read_checkpoint_step(checkpoint_path)

    ran = _load_and_run(
        export_path, tags, inputs, inputs_source, num_synthesized, seed, checks,
        lambda exported: _step_check(
            export_path, exported, checkpoint_path, checkpoint_step, require_step_match
        ),
    )

    parity_checked = estimator is not None
    if estimator is not None:
        assert checkpoint_path is not None
        parity = _parity(ran, estimator, checkpoint_path, tolerance, checks)
    else:
        parity = [
            OutputParity(s, o, None, None, tuple(int(d) for d in v.shape), v.dtype.name,
                         note="no Estimator to compare with")
            for s in ran.run
            for o, v in sorted(ran.outputs[s].items())
        ]
        checks.append("parity not checked: no Estimator and checkpoint given")

    compared = [p for p in parity if p.ok is not None]
    numeric = [p.max_abs_diff for p in compared if p.max_abs_diff is not None]
    non_finite = any(p.compared == "numeric" and p.max_abs_diff is None for p in compared)
    ok = True
    if parity_checked:
        ok = bool(compared) and all(p.ok for p in compared)
        if compared:
            within = sum(1 for p in compared if p.ok)
            checks.append(
                f"{'OK' if ok else 'FAILED'}: {within} of {len(compared)} compared output(s) "
                f"within {tolerance:g}"
            )
        else:
            checks.append("FAILED: no signature output matched an Estimator.predict key")
    return VerifyResult(
        schema=VERIFY_SCHEMA,
        export_path=export_path,
        tags=tuple(tags),
        signatures=ran.signatures,
        inputs_source=inputs_source if inputs is not None else "synthesized",
        num_examples=ran.inputs.rows,
        exported_step=ran.exported_step,
        checkpoint_step=checkpoint_step,
        parity=tuple(parity),
        max_abs_diff=None if not numeric or non_finite else max(numeric),
        tolerance=tolerance,
        ok=ok,
        checks=tuple(checks),
        signatures_run=ran.run,
        signatures_skipped=ran.skipped,
        parity_checked=parity_checked,
        checkpoint_path=checkpoint_path,
        outputs=ran.outputs,
    )


def _load_and_run(
    export_path: str,
    tags: Sequence[str],
    given: Mapping[str, np.ndarray] | None,
    inputs_source: str,
    num_synthesized: int,
    seed: int,
    checks: list[str],
    step_check: Callable[[int | None], str],
) -> _Run:
    """Loads the SavedModel in a fresh graph and runs every signature it can feed.

    Appends to ``checks`` (the one list the report is built from).
    """
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        meta_graph = _load(export_path, tags, graph, sess)
        signatures = _signature_order(list(meta_graph.signature_def))
        if not signatures:
            raise errors.ExportError(
                f"{export_path}: the SavedModel has no signatures; re-export it with a "
                "serving_input_receiver_fn",
                path=export_path,
            )
        checks.append(
            f"loaded {export_path} (tags {','.join(tags)}) in a fresh graph: "
            f"{len(signatures)} signature(s): {', '.join(signatures)}"
        )
        exported_step = _read_exported_step(graph, sess)
        checks.append(step_check(exported_step))
        plans = [_plan_signature(k, meta_graph.signature_def[k], graph, sess) for k in signatures]
        try:
            inputs = _inputs_for(plans, given, inputs_source, num_synthesized, seed)
        except _CannotSynthesizeError as e:
            raise errors.ExportError(
                f"{export_path}: cannot synthesize {e} inputs for its signatures; pass --inputs "
                "with real examples",
                path=export_path,
            ) from e
        if given is not None:
            unused = sorted(set(given) - set(inputs.values))
            if unused:
                checks.append(f"ignored input(s) no signature takes: {', '.join(unused)}")
        outputs: dict[str, dict[str, np.ndarray]] = {}
        run: list[str] = []
        skipped: list[str] = []
        for plan in plans:
            reason = plan.unsupported or _missing_reason(plan, inputs.values)
            if reason:
                skipped.append(plan.signature)
                checks.append(f"skipped signature {plan.signature!r}: {reason}")
                continue
            outputs[plan.signature] = _run_signature(
                plan, sess, _feed_for(plan, inputs), export_path
            )
            run.append(plan.signature)
            shapes = ", ".join(
                f"{k} {tuple(v.shape)}" for k, v in sorted(outputs[plan.signature].items())
            )
            checks.append(
                f"ran signature {plan.signature!r} ({plan.method}) on {inputs.rows} example(s) "
                f"{inputs.description}{' as serialized tf.Example' if plan.parsed else ''}: "
                f"{shapes}"
            )
    if not run:
        raise errors.ExportError(
            f"{export_path}: no signature could be fed ({'; '.join(checks[2:])}); pass "
            "--inputs or export with a raw or tf.Example serving receiver",
            path=export_path,
        )
    used = frozenset(f.name for p in plans if p.signature in run for f in p.features)
    return _Run(
        tuple(signatures), exported_step, inputs, outputs, tuple(run), tuple(skipped), used
    )


def _parity(
    ran: _Run, estimator: Any, checkpoint_path: str, tolerance: float, checks: list[str]
) -> list[OutputParity]:
    """``Estimator.predict`` on the features the SavedModel got, compared output by output."""
    features = {
        name: value
        for name, value in ran.inputs.estimator_features.items()
        if name in ran.used_features
    }
    predictions = _predict(estimator, features, checkpoint_path)
    checks.append(
        f"Estimator.predict on {checkpoint_path} with the same {ran.inputs.rows} example(s): "
        f"keys {', '.join(sorted(predictions)) or '(none)'}"
    )
    parity = []
    for signature in ran.run:
        for output, value in sorted(ran.outputs[signature].items()):
            result = _compare(signature, output, value, predictions, tolerance)
            parity.append(result)
            checks.append(_parity_line(result, tolerance))
    return parity


def _step_check(
    export_path: str,
    exported: int | None,
    checkpoint_path: str | None,
    checkpoint: int | None,
    require: bool,
) -> str:
    """The check line about ``global_step``; raises on a mismatch unless it is allowed."""
    if checkpoint_path is None:
        shown = "none" if exported is None else str(exported)
        return f"global_step in the SavedModel: {shown} (no checkpoint given to compare)"
    if exported is not None and exported == checkpoint:
        return f"global_step in the SavedModel: {exported}, equal to {checkpoint_path}'s"
    if exported is None:
        what = "the SavedModel has no global_step variable"
        fix = f"re-export it with Estimator.export_saved_model from {checkpoint_path}"
    elif checkpoint is None:
        what = f"{checkpoint_path} has no global_step (the SavedModel has {exported})"
        fix = "pass the (repaired) checkpoint prefix the SavedModel was exported from"
    else:
        what = f"global_step {exported} in the SavedModel but {checkpoint} in {checkpoint_path}"
        fix = (
            "the SavedModel was not exported from this checkpoint: pass the right prefix or "
            "re-export from this one"
        )
    if not require:
        return f"MISMATCH (allowed): {what}"
    raise errors.ExportError(f"{export_path}: {what}; {fix}", path=export_path)


def _inputs_for(
    plans: Sequence[_Plan],
    given: Mapping[str, np.ndarray] | None,
    inputs_source: str,
    num_synthesized: int,
    seed: int,
) -> _Inputs:
    """Feature values for every feedable signature, and what ``Estimator.predict`` gets.

    One value per feature name: signatures that share a feature get the same values, and
    ``Estimator.predict`` gets exactly what the SavedModel sees (dense arrays as fed or as
    parsed, VarLen features as the SparseTensor ParseExample makes, parse defaults for
    optional features that were not given).
    """
    feedable = [p for p in plans if not p.unsupported]
    by_name: dict[str, tuple[_Feature, bool]] = {}
    for plan in feedable:
        for f in plan.features:
            by_name.setdefault(f.name, (f, plan.parsed))
    values: dict[str, Any] = {}
    if given is None:
        rng = np.random.default_rng(seed)
        for plan in feedable:
            todo = [f for f in plan.features if f.name not in values]
            values.update(_synthesize(todo, plan.parsed, num_synthesized, rng))
        made = [v for v in values.values() if isinstance(v, np.ndarray)]
        batched = [v.shape[0] for v in made if v.ndim > 0]
        rows = batched[0] if batched else 1 if made else num_synthesized
        description = "synthesized"
    else:
        path = _source_path(inputs_source)
        arrays = {name: np.asarray(v) for name, v in given.items()}
        if not arrays:
            raise errors.InputError(f"{path or 'inputs'}: no features given", path=path)
        for name, array in arrays.items():
            if array.ndim == 0:
                raise errors.InputError(
                    f"{path or 'inputs'}: feature {name!r} is a scalar; give one row per "
                    "example",
                    path=path,
                )
        rows = _batch_size(arrays, f"{path or 'inputs'}:", path)
        _check_required(plans, arrays, path)
        for name, array in arrays.items():
            if name not in by_name:
                continue  # no signature takes it; listed in the checks
            feature, parsed = by_name[name]
            coerced = _coerce(array, feature, parsed, rows, inputs_source)
            is_sparse = feature.kind == "sparse"
            values[name] = [list(np.ravel(r)) for r in coerced] if is_sparse else coerced
        description = "given" if path is None else f"from {path}"
    estimator_features: dict[str, Any] = {}
    for name, (feature, parsed) in by_name.items():
        if name in values:
            value = values[name]
            sparse = feature.kind == "sparse"
            estimator_features[name] = _SparseRows(feature.dtype, value) if sparse else value
        elif parsed and feature.default is not None and feature.shape is not None and all(
            d is not None for d in feature.shape
        ):
            shape = tuple(d for d in feature.shape if d is not None)
            default = np.asarray(feature.default).reshape(shape)
            estimator_features[name] = np.broadcast_to(default, (rows, *shape)).copy()
    return _Inputs(values, rows, estimator_features, description)


def _check_required(
    plans: Sequence[_Plan], arrays: Mapping[str, np.ndarray], path: str | None
) -> None:
    """Given inputs must feed serving_default and predict (or every signature, if neither)."""
    required = [p for p in plans if p.signature in (DEFAULT_SIGNATURE, PREDICT_SIGNATURE)]
    if not required:
        required = list(plans)
    for plan in required:
        if plan.unsupported:
            continue
        missing = [f.name for f in plan.features if f.required and f.name not in arrays]
        if missing:
            expected = ", ".join(f.name for f in plan.features)
            raise errors.InputError(
                f"{path or 'inputs'}: missing feature(s) {', '.join(missing)} for signature "
                f"{plan.signature!r} (it takes: {expected}); add them with one row per example",
                path=path,
            )


def _missing_reason(plan: _Plan, values: Mapping[str, Any]) -> str:
    missing = [f.name for f in plan.features if f.required and f.name not in values]
    return f"the inputs lack {', '.join(missing)}" if missing else ""


def _feed_for(plan: _Plan, inputs: _Inputs) -> dict[str, Any]:
    """The feed_dict of one signature: its raw tensors, or one serialized Example per row."""
    if plan.parsed:
        [tensor] = plan.inputs.values()
        return {tensor: _serialize_examples(plan.features, inputs.values, inputs.rows)}
    return {plan.inputs[f.name]: inputs.values[f.name] for f in plan.features}


def _parity_line(p: OutputParity, tolerance: float) -> str:
    where = f"{p.signature}/{p.output}"
    if p.prediction_key is None:
        return f"not compared {where}: {p.note}"
    versus = f"vs Estimator.predict[{p.prediction_key!r}]"
    if p.compared == "exact":
        verdict = "equal" if p.ok else f"DIFFERENT ({p.note})"
        return f"{'ok' if p.ok else 'MISMATCH'} {where} {versus}: {verdict}"
    if p.max_abs_diff is None:
        return f"MISMATCH {where} {versus}: {p.note}"
    relation = "<=" if p.ok else ">"
    return (
        f"{'ok' if p.ok else 'MISMATCH'} {where} {versus}: max abs diff {p.max_abs_diff:.3g} "
        f"{relation} {tolerance:g}{'' if p.ok else f' ({p.mismatched} element(s))'}"
    )
