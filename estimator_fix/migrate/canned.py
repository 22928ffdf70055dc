"""``--to=v2-canned``: a ``tf.compat.v1`` canned DNN, Linear or DNNLinearCombined checkpoint as
the ``tf.estimator`` (v2) canned estimator of the same kind restores it.

The model variables and ``global_step`` keep their names. Each optimizer found in the training
graph (``graphdef.Graph.updates``) becomes its Keras successor (``optimizers.convert``) under
``training/<Name>/``: every slot renamed to ``training/<Name>/<variable>/<slot>`` (v1's
``/part_0`` or ``/t_0`` before the slot name goes), its trained hyperparameters written as new
scalar variables, Adam's beta powers dropped for the ``iterations``-based bias correction. The
v2 ``DNNLinearCombined`` estimator counts its DNN optimizer's steps with ``global_step`` and
its linear optimizer's with that optimizer's own ``iter``, written as a new tensor (for Adam,
the update count its beta powers encode). Two optimizers of one class are ``training/<Name>``
(the DNN one, whose updates Keras creates first) and ``training/<Name>_1``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping

import numpy as np

from estimator_fix import errors
from estimator_fix.checkpoint import data_file
from estimator_fix.checkpoint.index_file import Entry, Index
from estimator_fix.checkpoint.keys import STEP_KEY
from estimator_fix.migrate import optimizers
from estimator_fix.migrate.graphdef import Graph
from estimator_fix.surgery import Edit, NewTensor

V2_SCOPE = "training"
# Momentum slots are read and written again (rescaled); above this many bytes held in memory
# (the slots read, and written through graph constants) the migration refuses.
SCALED_LIMIT = 1 << 30
_PART_RE = re.compile(r"/(?:part|t)_\d+$")
_TOWERS = ("dnn", "linear")


@dataclasses.dataclass
class _Optimizer:
    """One trained v1 optimizer: the updates that share its hyperparameter nodes."""

    kind: str
    hyper_nodes: Mapping[str, str]
    centered: bool
    nesterov: bool
    primaries: set[str] = dataclasses.field(default_factory=set)
    suffixes: dict[str, str] = dataclasses.field(default_factory=dict)  # slot input -> suffix
    powers: dict[str, str] = dataclasses.field(default_factory=dict)  # beta1_power -> key
    tower: str = ""
    name: str = ""  # the v2 name, e.g. "Adam_1"


def _fail(prefix: str, what: str) -> errors.NotRepairableError:
    return errors.NotRepairableError(f"{prefix}: {what}; nothing was written", path=prefix)


def _primary(node: str, names: Mapping[str, Entry]) -> str | None:
    """The checkpoint key of a trained variable's graph node. Does not perform I/O."""
    if node in names:
        return node
    full = _PART_RE.sub("", node)
    return full if full in names else None


def _optimizers(graph: Graph, names: Mapping[str, Entry], prefix: str) -> list[_Optimizer]:
    """The trained optimizers, in graph order, with their variables and slot suffixes."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], _Optimizer] = {}
    for u in graph.updates():
        key = (u.kind, tuple(sorted(u.hypers.items())))
        opt = found.setdefault(key, _Optimizer(u.kind, u.hypers, u.centered, u.nesterov))
        primary = _primary(u.var, names)
        if primary is None:
            raise _fail(
                prefix,
                f"the graph's update op {u.op!r} trains {u.var!r}, which the checkpoint does "
                f"not hold: {graph.path} is not the graph of this checkpoint",
            )
        opt.primaries.add(primary)
        for slot, node in u.slots.items():
            opt.suffixes.setdefault(slot, node.rsplit("/", 1)[-1])
        opt.powers.update({k: v for k, v in u.powers.items() if v in names})
    return list(found.values())


def _towers(opts: list[_Optimizer], prefix: str) -> None:
    for opt in opts:
        towers = {p.split("/", 1)[0] for p in opt.primaries}
        if len(towers) != 1 or not towers <= set(_TOWERS):
            raise _fail(
                prefix,
                f"a {opt.kind} optimizer trains variables under {sorted(towers)}, not under one "
                "of dnn/ or linear/ as a canned DNN, Linear or DNNLinearCombined estimator does",
            )
        opt.tower = towers.pop()
    by_tower = [o.tower for o in opts]
    if len(set(by_tower)) != len(by_tower):
        raise _fail(
            prefix,
            "more than one optimizer trains the same tower; a canned estimator has one per tower",
        )
    opts.sort(key=lambda o: _TOWERS.index(o.tower))
    used: dict[str, int] = {}
    for opt in opts:
        cls = optimizers.V2_CLASS[opt.kind]
        n = used.get(cls, 0)
        used[cls] = n + 1
        opt.name = cls if n == 0 else f"{cls}_{n}"


def _values(graph: Graph, opt: _Optimizer, prefix: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for hyper, node in opt.hyper_nodes.items():
        value = graph.constant(node)
        if value is None:
            raise _fail(
                prefix,
                f"the {opt.kind} optimizer's {hyper} ({node!r} in {graph.path}) is computed "
                "while training (a schedule or a variable), not a constant the v2 optimizer's "
                "hyperparameter variable can hold",
            )
        values[hyper] = value
    if opt.kind == "Ftrl":
        scope = opt.hyper_nodes["lr"].rsplit("/", 1)[0]
        beta = graph.constant(f"{scope}/beta")
        if beta is not None:
            values["beta"] = beta
    return values


def _slot_owner(
    name: str, opts: list[_Optimizer], names: Mapping[str, Entry]
) -> tuple[_Optimizer, str, str] | None:
    """(optimizer, slot input, primary) of a slot key, or None. Does not perform I/O."""
    candidates = []
    for opt in opts:
        for slot, suffix in opt.suffixes.items():
            if not name.endswith("/" + suffix):
                continue
            base = name[: -len(suffix) - 1]
            primary = base if base in names else _PART_RE.sub("", base)
            if primary in names and primary != name:
                candidates.append((opt, slot, primary))
    exact = [c for c in candidates if c[2] in c[0].primaries]
    if exact:
        return exact[0]
    # A variable whose updates are not one fused op (Adam's sparse updates): by its tower.
    by_tower = [c for c in candidates if c[2].split("/", 1)[0] == c[0].tower]
    return by_tower[0] if len(by_tower) == 1 else None


def _updates_made(prefix: str, index: Index, opt: _Optimizer, beta1: float) -> int | None:
    """The update count Adam's ``beta1_power`` encodes (it holds beta1 ** (count + 1))."""
    key = opt.powers.get("beta1_power")
    entry = index.get(key) if key else None
    if entry is None or not 0.0 < beta1 < 1.0:
        return None
    power = float(data_file.read_scalar(prefix, index, entry))
    if not 0.0 < power <= 1.0:
        return None
    return round(math.log(power) / math.log(beta1)) - 1


def check_source(prefix: str, index: Index) -> None:
    """Refuses a checkpoint that is not a v1 canned estimator's before its graph is read.

    Raises:
      errors.UsageError: the checkpoint already has the v2 layout.
      errors.NotRepairableError: no ``dnn/`` or ``linear/`` variables.
    """
    names = [e.name for e in index.variables()]
    if any(n.startswith(V2_SCOPE + "/") for n in names):
        raise errors.UsageError(
            f"{prefix}: already has v2 optimizer keys ({V2_SCOPE}/...); it needs no migration; "
            "nothing was written"
        )
    if not any(n.split("/", 1)[0] in _TOWERS for n in names):
        raise _fail(
            prefix,
            "no dnn/ or linear/ variables: not a canned DNN, Linear or DNNLinearCombined "
            "estimator's checkpoint",
        )


def plan(prefix: str, index: Index, graph: Graph) -> Edit:
    """The edit that migrates the v1 canned checkpoint at ``prefix`` to the v2 layout.

    Reads only ``global_step`` and Adam's beta powers (scalars) and, for a Momentum optimizer,
    its slots (which v2 stores scaled).

    Raises:
      errors.UsageError: the checkpoint already has the v2 layout.
      errors.NotRepairableError: it is not a canned estimator's, or a hyperparameter is not a
        constant.
    """
    check_source(prefix, index)
    names = {e.name: e for e in index.variables()}
    opts = _optimizers(graph, names, prefix)
    if not opts:
        raise _fail(
            prefix,
            f"{graph.path} has no optimizer update ops (it is not a training graph); copy the "
            "graph.pbtxt or .meta that training wrote back into the directory",
        )
    _towers(opts, prefix)
    step_entry = index.get(STEP_KEY)
    step = int(data_file.read_scalar(prefix, index, step_entry)) if step_entry else None
    renames: dict[str, str] = {}
    drops: list[str] = []
    additions: list[NewTensor] = []
    notes: list[str] = []
    scaled: list[tuple[str, str, float]] = []
    conversions = {}
    for opt in opts:
        values = _values(graph, opt, prefix)
        conv = optimizers.convert(opt.kind, values, centered=opt.centered, nesterov=opt.nesterov)
        conversions[opt.name] = conv
        scope = f"{V2_SCOPE}/{opt.name}"
        for hyper, value in conv.hypers.items():
            additions.append(NewTensor(f"{scope}/{hyper}", np.asarray(value, dtype=np.float32)))
        shown = ", ".join(f"{k}={v:g}" for k, v in conv.hypers.items() if k != "decay")
        notes.append(
            f"{opt.tower} optimizer: v1 {opt.kind} -> tf.keras.optimizers.legacy.{conv.v2_class} "
            f"under {scope}/, trained hyperparameters kept ({shown})"
        )
        if conv.constructor:
            notes.append(
                f"{scope}: not stored in a checkpoint, construct the v2 optimizer with: "
                + "; ".join(conv.constructor)
            )
        count = _updates_made(prefix, index, opt, values["beta1"]) if opt.kind == "Adam" else None
        for power, key in sorted(opt.powers.items()):
            drops.append(key)
            notes.append(
                f"dropped {key}: Adam's accumulated {power}; v2 Adam computes it from its "
                "iterations and beta_1/beta_2"
            )
        owns_iter = opt.tower == "linear" and any(o.tower == "dnn" for o in opts)
        if owns_iter:
            iterations = count if count is not None else step
            if iterations is None:
                raise _fail(prefix, "no global_step to count the linear optimizer's steps from")
            additions.append(NewTensor(f"{scope}/iter", np.asarray(iterations, dtype=np.int64)))
            notes.append(f"{scope}/iter={iterations}: the linear optimizer's own step count")
        elif count is not None and step is not None and count != step:
            notes.append(
                f"{opt.tower} Adam made {count} updates but global_step is {step}: v2 Adam's bias "
                "correction counts from global_step"
            )
    for name in sorted(names):
        if name == STEP_KEY or name in drops or any(name in o.primaries for o in opts):
            continue
        owner = _slot_owner(name, opts, names)
        if owner is None:
            if name.split("/", 1)[0] not in _TOWERS:  # a tower's own variable needs no note
                notes.append(f"kept {name} as it is: not a slot of the optimizers in the graph")
            continue
        opt, slot, primary = owner
        conv = conversions[opt.name]
        v2_slot = conv.slots.get(slot)
        if v2_slot is None:
            drops.append(name)
            why = conv.dropped_why.get(slot, f"Keras {conv.v2_class} has no such slot")
            notes.append(f"dropped {name}: {why}")
            continue
        new = f"{V2_SCOPE}/{opt.name}/{primary}/{v2_slot}"
        if slot in conv.scale:
            scaled.append((name, new, conv.scale[slot]))
        else:
            renames[name] = new
    if scaled:
        size = sum(int(np.prod(names[old].shape)) * 8 for old, _, _ in scaled)
        if size > SCALED_LIMIT:
            raise _fail(
                prefix,
                f"its Momentum slots need about {size / 2**20:.0f} MiB in memory to be rescaled "
                f"for Keras SGD, more than the {SCALED_LIMIT // 2**20} MiB this migration "
                "rewrites; drop them first (estimator-fix rename --drop='/Momentum$'), migrate "
                "that, and give the v2 SGD momentum=0 (momentum restarts from zero)",
            )
        additions.extend(_scaled(prefix, scaled))
        drops.extend(old for old, _, _ in scaled)
        notes.append(
            f"{len(scaled)} Momentum slot(s) rewritten as new tensors (v1 accumulates gradients, "
            "Keras SGD accumulates updates: values times -learning_rate); these bytes are read "
            "and written, not linked"
        )
    notes.append(
        "v1 canned estimators sum the loss over the batch; the v2 ones default to its mean: "
        "construct the v2 estimator with loss_reduction=tf.losses.Reduction.SUM to train on "
        "with the same gradient scale the optimizer's slots were accumulated with"
    )
    return Edit(renames=renames, drops=tuple(drops), additions=tuple(additions), notes=tuple(notes))


def _scaled(prefix: str, scaled: list[tuple[str, str, float]]) -> list[NewTensor]:
    """New tensors holding ``factor`` times each old slot's values (read with TensorFlow)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    out = []
    for old, new, factor in scaled:
        value = reader.get_tensor(old)
        out.append(NewTensor(new, (value * factor).astype(value.dtype)))
    return out
