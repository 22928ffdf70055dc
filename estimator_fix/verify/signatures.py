"""What each signature of a loaded SavedModel needs to be fed, read from its graph.

A signature with one string input that reaches a ``ParseExample`` op (through pass-through ops
such as ``Identity``) takes serialized ``tf.train.Example`` protos: its features (keys, dtypes,
per-example shapes, defaults, VarLen features) come from the parse op's inputs and attributes.
Any other signature is fed raw tensors, one per input key. A signature verify cannot feed gets
a reason in words instead (composite tensors, ragged features, other parse ops).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_SIGNATURE = "serving_default"
PREDICT_SIGNATURE = "predict"

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


@dataclasses.dataclass(frozen=True)
class Feature:
    """One feature a signature needs, as the SavedModel will see it."""

    name: str
    dtype: Any  # tf.DType
    shape: tuple[int | None, ...] | None  # full shape incl. batch (raw); per-example (parsed)
    kind: str = "dense"  # dense | sparse
    required: bool = True
    default: Any = None  # a parsed dense feature's default (np.ndarray), used when not given


@dataclasses.dataclass(frozen=True)
class SignaturePlan:
    """How to feed one signature."""

    signature: str
    method: str
    inputs: Mapping[str, str]  # input key -> tensor name
    outputs: Mapping[str, str]  # output key -> tensor name
    features: tuple[Feature, ...]
    parsed: bool  # a single serialized-tf.Example input
    unsupported: str = ""  # why the signature cannot be fed


def signature_order(keys: Sequence[str]) -> list[str]:
    """serving_default first, then predict, then the rest by name: the report reads top-down."""
    first = [k for k in (DEFAULT_SIGNATURE, PREDICT_SIGNATURE) if k in keys]
    return first + sorted(k for k in keys if k not in first)


def plan_signature(key: str, signature: Any, graph: Any, sess: Any) -> SignaturePlan:
    """Which features ``signature`` takes and whether they arrive as serialized Examples."""
    import tensorflow as tf

    plan = SignaturePlan(
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
                return dataclasses.replace(plan, features=features, parsed=True, unsupported=reason)
    raw_features: list[Feature] = []
    for in_key, info in sorted(signature.inputs.items()):
        dtype = tf.as_dtype(info.dtype)
        if dtype in (tf.resource, tf.variant):
            return dataclasses.replace(
                plan, unsupported=f"input {in_key!r} is a {dtype.name} tensor"
            )
        raw_features.append(Feature(in_key, dtype, _tensor_shape(info)))
    return dataclasses.replace(plan, features=tuple(raw_features))


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


def _parse_features(op: Any, sess: Any) -> tuple[tuple[Feature, ...], str]:
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
    features: list[Feature] = []
    for key, dtype, shape, default in zip(
        dense_keys, dense_types, dense_shapes, defaults, strict=True
    ):
        dims = None if shape.rank is None else tuple(shape.as_list())
        value = np.asarray(_static(default, sess))
        has_default = value.size > 0
        features.append(
            Feature(
                key,
                tf.as_dtype(dtype),
                dims,
                "dense",
                not has_default,
                value if has_default else None,
            )
        )
    for key, dtype in zip(sparse_keys, sparse_types, strict=True):
        features.append(Feature(key, tf.as_dtype(dtype), None, "sparse", False))
    return tuple(features), ""
