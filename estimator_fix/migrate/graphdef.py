"""The training graph of a model directory, read for what its checkpoint does not hold.

A ``tf.compat.v1`` optimizer keeps its hyperparameters in the graph, not in the checkpoint: the
learning rate, Adam's betas, Ftrl's regularization strengths are constants fed to the fused
update ops (``ResourceApplyAdam``, ``ResourceSparseApplyFtrl``, ...). Each update op names, by
its input's position, the variable it trains, its slot variables (Adam's ``m`` and ``v``) and
the hyperparameters, so the graph says which optimizer trained which variable, which slot key
suffix holds which slot, and with which values, whatever the optimizer was named.

The graph is the target checkpoint's ``.meta`` (the graph that wrote it) or else the
directory's ``graph.pbtxt`` (the graph of the first ``train`` call). Hyperparameters are
evaluated from constant subgraphs in numpy (Ftrl's L2 strength is an ``AddV2`` of constants);
one that depends on a variable or a placeholder (a learning-rate schedule) is not a constant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from estimator_fix import errors
from estimator_fix.storage import fs

if TYPE_CHECKING:
    from estimator_fix.types import ScanReport

GRAPH_PBTXT = "graph.pbtxt"

# The inputs of each fused update op, by name, as tensorflow/core/ops/training_ops.cc defines
# them. The ``Resource`` variants take the same inputs; the ``Sparse`` variants add ``indices``
# after ``grad``.
_DENSE_INPUTS: Mapping[str, tuple[str, ...]] = {
    "ApplyGradientDescent": ("var", "alpha", "delta"),
    "ApplyAdagrad": ("var", "accum", "lr", "grad"),
    "ApplyAdam": (
        "var",
        "m",
        "v",
        "beta1_power",
        "beta2_power",
        "lr",
        "beta1",
        "beta2",
        "epsilon",
        "grad",
    ),
    "ApplyFtrl": ("var", "accum", "linear", "grad", "lr", "l1", "l2", "lr_power"),
    "ApplyFtrlV2": ("var", "accum", "linear", "grad", "lr", "l1", "l2", "l2_shrinkage", "lr_power"),
    "ApplyRMSProp": ("var", "ms", "mom", "lr", "rho", "momentum", "epsilon", "grad"),
    "ApplyCenteredRMSProp": ("var", "mg", "ms", "mom", "lr", "rho", "momentum", "epsilon", "grad"),
    "ApplyMomentum": ("var", "accum", "lr", "grad", "momentum"),
}
# The optimizer each update op belongs to (``tf.compat.v1.train.<kind>Optimizer``).
_KIND = {
    "ApplyGradientDescent": "SGD",
    "ApplyAdagrad": "Adagrad",
    "ApplyAdam": "Adam",
    "ApplyFtrl": "Ftrl",
    "ApplyFtrlV2": "Ftrl",
    "ApplyRMSProp": "RMSProp",
    "ApplyCenteredRMSProp": "RMSProp",
    "ApplyMomentum": "Momentum",
}
# Inputs that are slot variables, and Adam's accumulated beta powers (non-slot variables).
SLOT_INPUTS = frozenset({"accum", "linear", "m", "v", "ms", "mom", "mg"})
POWER_INPUTS = frozenset({"beta1_power", "beta2_power"})
_NOT_HYPER = frozenset({"var", "grad", "delta", "indices"}) | SLOT_INPUTS | POWER_INPUTS


def _op_table() -> dict[str, tuple[str, tuple[str, ...]]]:
    table: dict[str, tuple[str, tuple[str, ...]]] = {}
    for op, inputs in _DENSE_INPUTS.items():
        base = op[len("Apply") :]
        grad = inputs.index("grad") if "grad" in inputs else len(inputs)
        sparse = (*inputs[: grad + 1], "indices", *inputs[grad + 1 :])
        for name, args in (
            (op, inputs),
            (f"Resource{op}", inputs),
            (f"SparseApply{base}", sparse),
            (f"ResourceSparseApply{base}", sparse),
        ):
            table[name] = (_KIND[op], args)
    return table


UPDATE_OPS = _op_table()

_UNARY: dict[str, Callable[[Any], Any]] = {
    "Identity": lambda x: x,
    "Snapshot": lambda x: x,
    "StopGradient": lambda x: x,
    "Neg": np.negative,
    "Sqrt": np.sqrt,
    "Square": np.square,
    "Reciprocal": np.reciprocal,
}
_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "Add": np.add,
    "AddV2": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "RealDiv": np.divide,
    "Div": np.divide,
    "Maximum": np.maximum,
    "Minimum": np.minimum,
    "Pow": np.power,
}


@dataclasses.dataclass(frozen=True)
class Update:
    """One fused update op: an optimizer applied to one variable.

    Attributes:
      op: the op's name in the graph.
      kind: the optimizer (``Adagrad``, ``Adam``, ``Ftrl``, ``RMSProp``, ``Momentum``, ``SGD``).
      centered: a centered RMSProp update.
      nesterov: the op's ``use_nesterov`` attribute (Momentum, Adam).
      var: the trained variable's graph node (``dnn/hiddenlayer_0/kernel/part_0``).
      slots: slot input -> the slot variable's graph node.
      powers: Adam's ``beta1_power``/``beta2_power`` -> the variable node they read.
      hypers: hyperparameter input -> the node that computes it.
    """

    op: str
    kind: str
    centered: bool
    nesterov: bool
    var: str
    slots: Mapping[str, str]
    powers: Mapping[str, str]
    hypers: Mapping[str, str]


class Graph:
    """The nodes of a ``GraphDef``, with the updates and constants a migration needs."""

    def __init__(self, graph_def: Any, path: str) -> None:
        """Indexes ``graph_def`` (read from ``path``) by node name. Does not perform I/O."""
        self.path = path
        self.nodes: dict[str, Any] = {n.name: n for n in graph_def.node}
        self._values: dict[str, np.ndarray | None] = {}

    def _source(self, name: str) -> str:
        """The variable node a (possibly read) input comes from: through ``ReadVariableOp``,
        ``Identity`` and ``/read`` nodes. Does not perform I/O."""
        node = self.nodes.get(_node_name(name))
        while node is not None and node.op in ("ReadVariableOp", "Identity") and node.input:
            node = self.nodes.get(_node_name(node.input[0]))
        return node.name if node is not None else _node_name(name)

    def updates(self) -> list[Update]:
        """Every fused optimizer update op in the graph, in graph order. Does not perform I/O."""
        out = []
        for node in self.nodes.values():
            spec = UPDATE_OPS.get(node.op)
            if spec is None:
                continue
            kind, args = spec
            inputs = [i for i in node.input if not i.startswith("^")]
            if len(inputs) != len(args):
                continue
            named = dict(zip(args, inputs, strict=True))
            nesterov = "use_nesterov" in node.attr and bool(node.attr["use_nesterov"].b)
            out.append(
                Update(
                    op=node.name,
                    kind=kind,
                    centered="Centered" in node.op,
                    nesterov=nesterov,
                    var=self._source(named["var"]),
                    slots={k: self._source(v) for k, v in named.items() if k in SLOT_INPUTS},
                    powers={k: self._source(v) for k, v in named.items() if k in POWER_INPUTS},
                    hypers={k: _node_name(v) for k, v in named.items() if k not in _NOT_HYPER},
                )
            )
        return out

    def constant(self, name: str) -> float | None:
        """The scalar value node ``name`` computes from constants alone, or None. No I/O."""
        value = self._evaluate(_node_name(name), depth=0)
        if value is None or value.size != 1:
            return None
        return float(value.reshape(()))

    def _evaluate(self, name: str, depth: int) -> np.ndarray | None:
        if name in self._values:
            return self._values[name]
        node = self.nodes.get(name)
        value: np.ndarray | None = None
        if node is not None and depth < 64:
            inputs = [
                self._evaluate(_node_name(i), depth + 1)
                for i in node.input
                if not i.startswith("^")
            ]
            if node.op == "Const":
                value = _tensor_value(node.attr["value"].tensor)
            elif any(v is None for v in inputs):
                value = None
            elif node.op in _UNARY and len(inputs) == 1:
                value = np.asarray(_UNARY[node.op](inputs[0]))
            elif node.op in _BINARY and len(inputs) == 2:
                value = np.asarray(_BINARY[node.op](inputs[0], inputs[1]))
            elif node.op == "Cast" and len(inputs) == 1:
                value = np.asarray(inputs[0], dtype=np.float64)
        self._values[name] = value
        return value


def _node_name(tensor_name: str) -> str:
    """``scope/op:1`` or ``^scope/op`` as the node name ``scope/op``. Does not perform I/O."""
    return tensor_name.lstrip("^").split(":")[0]


def _tensor_value(proto: Any) -> np.ndarray | None:
    import tensorflow as tf

    try:
        return np.asarray(tf.make_ndarray(proto), dtype=np.float64)
    except (TypeError, ValueError):
        return None


def load(report: ScanReport) -> Graph:
    """The graph that trained the report's target checkpoint: its ``.meta``, else the
    directory's ``graph.pbtxt``.

    Raises:
      errors.NotRepairableError: neither file is there, or neither parses.
    """
    from google.protobuf import message, text_format
    from tensorflow.core.framework import graph_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    target = report.target_report
    candidates = []
    if target is not None:
        candidates.append(target.prefix + ".meta")
    candidates.append(fs.join(report.model_dir, GRAPH_PBTXT))
    problems = []
    for path in candidates:
        if not fs.exists(path):
            continue
        try:
            if path.endswith(".meta"):
                meta = meta_graph_pb2.MetaGraphDef()
                meta.ParseFromString(fs.read_bytes(path))
                return Graph(meta.graph_def, path)
            graph_def = graph_pb2.GraphDef()
            text_format.Parse(fs.read_text(path), graph_def)
            return Graph(graph_def, path)
        except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as e:
            problems.append(f"{fs.basename(path)} does not parse ({str(e)[:80]})")
    what = "; ".join(problems) if problems else f"no {GRAPH_PBTXT} and no .meta next to it"
    raise errors.NotRepairableError(
        f"{report.model_dir}: {what}: the optimizer's hyperparameters (learning rate, betas) are "
        f"kept only in the training graph; copy the original {GRAPH_PBTXT} or the checkpoint's "
        ".meta file back into the directory",
        path=report.model_dir,
    )
