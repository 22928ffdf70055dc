"""The examples verify feeds: read from ``--inputs`` or synthesized from the signatures.

``load_inputs`` reads a ``--inputs`` file (JSON or ``.npz``). ``inputs_for`` turns given arrays
(cast and reshaped to what the signatures declare) or synthesized ones (seeded, so a run is
reproducible) into one value per feature name, plus what ``Estimator.predict`` must get for
the same examples. ``feed_for`` makes one signature's ``feed_dict``: its raw tensors, or one
serialized ``tf.train.Example`` per row for a parsing receiver.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from estimator_fix import errors
from estimator_fix.verify.signatures import (
    DEFAULT_SIGNATURE,
    PREDICT_SIGNATURE,
    Feature,
    SignaturePlan,
)

_UNKNOWN_DIM_SIZE = 2  # what an unknown non-batch dimension becomes when synthesizing

_KIND_WORDS = {
    "b": "booleans",
    "i": "integers",
    "u": "integers",
    "f": "floats",
    "c": "complex numbers",
    "S": "strings",
    "U": "strings",
    "O": "objects",
}


class CannotSynthesizeError(Exception):
    """A dtype verify has no synthetic values for; ``verify`` turns it into an ExportError."""


@dataclasses.dataclass(frozen=True)
class SparseRows:
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


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The examples, as the SavedModel is fed them and as ``Estimator.predict`` gets them."""

    values: Mapping[str, Any]  # feature -> array (sparse: list of value lists per row)
    rows: int
    estimator_features: Mapping[str, Any]  # feature -> array or SparseRows
    description: str  # "synthesized", "given" or "from <file>"


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
            f'{path}: holds no features; expected {{"feature": [[...], ...]}}', path=path
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
            f'{path}: not UTF-8 text; pass JSON like {{"feature": [[...], ...]}} or an .npz',
            path=path,
        ) from e
    except json.JSONDecodeError as e:
        raise errors.InputError(
            f"{path}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg}); expected "
            '{"feature": [[...], ...]}',
            path=path,
        ) from e
    except OSError as e:
        raise errors.UnreadableError(f"{path}: cannot read ({e.strerror})", path=path) from e
    if not isinstance(value, dict):
        raise errors.InputError(
            f"{path}: must be a JSON object of feature name -> rows, got {type(value).__name__}",
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


# --- One value per feature, for the SavedModel and for Estimator.predict. ---------------------


def inputs_for(
    plans: Sequence[SignaturePlan],
    given: Mapping[str, np.ndarray] | None,
    inputs_source: str,
    num_synthesized: int,
    seed: int,
) -> Inputs:
    """Feature values for every feedable signature, and what ``Estimator.predict`` gets.

    One value per feature name: signatures that share a feature get the same values, and
    ``Estimator.predict`` gets exactly what the SavedModel sees (dense arrays as fed or as
    parsed, VarLen features as the SparseTensor ParseExample makes, parse defaults for
    optional features that were not given).

    Raises:
      CannotSynthesizeError: a feature's dtype has no synthetic values.
      errors.InputError: the given inputs miss a feature or do not fit the signature.
    """
    feedable = [p for p in plans if not p.unsupported]
    by_name: dict[str, tuple[Feature, bool]] = {}
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
                    f"{path or 'inputs'}: feature {name!r} is a scalar; give one row per example",
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
            estimator_features[name] = SparseRows(feature.dtype, value) if sparse else value
        elif (
            parsed
            and feature.default is not None
            and feature.shape is not None
            and all(d is not None for d in feature.shape)
        ):
            shape = tuple(d for d in feature.shape if d is not None)
            default = np.asarray(feature.default).reshape(shape)
            estimator_features[name] = np.broadcast_to(default, (rows, *shape)).copy()
    return Inputs(values, rows, estimator_features, description)


def missing_reason(plan: SignaturePlan, values: Mapping[str, Any]) -> str:
    """Why ``values`` cannot feed ``plan`` (required features it lacks), or ""."""
    missing = [f.name for f in plan.features if f.required and f.name not in values]
    return f"the inputs lack {', '.join(missing)}" if missing else ""


def feed_for(plan: SignaturePlan, inputs: Inputs) -> dict[str, Any]:
    """The feed_dict of one signature: its raw tensors, or one serialized Example per row."""
    if plan.parsed:
        [tensor] = plan.inputs.values()
        return {tensor: _serialize_examples(plan.features, inputs.values, inputs.rows)}
    return {plan.inputs[f.name]: inputs.values[f.name] for f in plan.features}


def _check_required(
    plans: Sequence[SignaturePlan], arrays: Mapping[str, np.ndarray], path: str | None
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


# --- Synthesizing, coercing and serializing values. ------------------------------------------


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
    raise CannotSynthesizeError(dtype.name)


def _synthesize(
    features: Sequence[Feature], parsed: bool, rows: int, rng: np.random.Generator
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
    array: np.ndarray, feature: Feature, parsed: bool, rows: int, source: str
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


def _fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    return len(shape) == len(expected) and all(
        e is None or e == s for s, e in zip(shape, expected, strict=True)
    )


def _serialize_examples(features: Sequence[Feature], values: Mapping[str, Any], rows: int) -> Any:
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
