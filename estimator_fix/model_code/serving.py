"""A serving input function without code: ``--serving_features=spec.json``.

The spec is a JSON list (or ``{"features": [...]}``) of features::

  [{"name": "x0", "dtype": "float32", "shape": []},
   {"name": "tokens", "dtype": "string", "kind": "varlen"}]

``kind`` is ``fixed`` (default; ``shape`` is the per-example shape, ``default`` optional) or
``varlen`` (a variable-length list, parsed as a SparseTensor). ``--serving_format=example``
builds a receiver that parses serialized ``tf.train.Example`` protos (TensorFlow Serving's
classify/regress APIs need it); ``raw`` feeds each feature as its own tensor.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from estimator_fix import errors

FORMATS = ("example", "raw")
_EXAMPLE_DTYPES = ("float32", "int64", "string")
_RAW_DTYPES = (
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool",
    "string",
)


@dataclasses.dataclass(frozen=True)
class ServingSpec:
    """Exactly one of a user function SPEC and a features spec file."""

    input_fn: str | None = None
    features: str | None = None
    format: str = "example"


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    dtype: str
    shape: tuple[int, ...]
    varlen: bool
    default: Any = None


def parse_features(text: str, *, path: str) -> tuple[Feature, ...]:
    """Validates a features spec. Does not import TensorFlow.

    Raises:
      errors.InputError: not valid JSON, or a feature entry is malformed.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise errors.InputError(
            f"{path}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg})", path=path
        ) from e
    if isinstance(doc, dict):
        doc = doc.get("features")
    if not isinstance(doc, list) or not doc:
        raise errors.InputError(
            f'{path}: expected a non-empty list of features, or {{"features": [...]}}', path=path
        )
    features = []
    seen = set()
    for i, item in enumerate(doc):
        where = f"{path}: feature {i}"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise errors.InputError(f'{where}: needs a string "name"', path=path)
        name = item["name"]
        if name in seen:
            raise errors.InputError(f"{where}: duplicate name {name!r}", path=path)
        seen.add(name)
        dtype = item.get("dtype", "float32")
        if dtype not in _RAW_DTYPES:
            raise errors.InputError(
                f"{where} ({name}): unknown dtype {dtype!r}; one of {', '.join(_RAW_DTYPES)}",
                path=path,
            )
        kind = item.get("kind", "fixed")
        if kind not in ("fixed", "varlen"):
            raise errors.InputError(f"{where} ({name}): kind must be fixed or varlen", path=path)
        shape = item.get("shape", [])
        if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
            raise errors.InputError(
                f"{where} ({name}): shape must be a list of positive integers", path=path
            )
        features.append(Feature(name, dtype, tuple(shape), kind == "varlen", item.get("default")))
    return tuple(features)


def serving_input_fn(features: tuple[Feature, ...], fmt: str, *, path: str) -> Callable[[], Any]:
    """Builds the serving input receiver function.

    Raises:
      errors.UsageError: an unknown format.
      errors.InputError: a dtype or kind the format cannot carry.
    """
    if fmt not in FORMATS:
        raise errors.UsageError(f"--serving_format={fmt}: must be one of {', '.join(FORMATS)}")
    import tensorflow as tf

    if fmt == "example":
        spec: dict[str, Any] = {}
        for f in features:
            if f.dtype not in _EXAMPLE_DTYPES:
                raise errors.InputError(
                    f"{path}: feature {f.name!r} is {f.dtype}; tf.Example carries only "
                    f"{', '.join(_EXAMPLE_DTYPES)} (use --serving_format=raw)",
                    path=path,
                )
            dtype = tf.as_dtype(f.dtype)
            spec[f.name] = (
                tf.io.VarLenFeature(dtype)
                if f.varlen
                else tf.io.FixedLenFeature(list(f.shape), dtype, default_value=f.default)
            )
        return tf.estimator.export.build_parsing_serving_input_receiver_fn(spec)
    for f in features:
        if f.varlen:
            raise errors.InputError(
                f"{path}: feature {f.name!r} is varlen; raw receivers need fixed shapes "
                "(use --serving_format=example)",
                path=path,
            )

    def raw_fn() -> Any:
        placeholders = {
            f.name: tf.compat.v1.placeholder(tf.as_dtype(f.dtype), [None, *f.shape], name=f.name)
            for f in features
        }
        return tf.estimator.export.ServingInputReceiver(placeholders, placeholders)

    return raw_fn
