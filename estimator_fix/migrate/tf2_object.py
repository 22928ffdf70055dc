"""``--to=tf2-object``: a name-based checkpoint as ``tf.train.Checkpoint(vars={name: v})``
restores it.

The layout is the one TensorFlow's checkpoint migration guide converts to ("Migrating model
checkpoints", ``convert_tf1_to_tf2``: every tensor as a variable in a dict named ``vars``,
saved with ``tf.train.Checkpoint(vars=...).save``): each key ``name`` becomes
``vars/<name escaped>/.ATTRIBUTES/VARIABLE_VALUE`` (TensorFlow escapes ``.`` as ``..`` and
``/`` as ``.S`` in object names), the checkpoint gets the ``save_counter`` that ``save`` writes
(1), and a ``_CHECKPOINTABLE_OBJECT_GRAPH``: the root with children ``vars`` and
``save_counter``, ``vars`` with one child per original name, each variable node's
``VARIABLE_VALUE`` naming its key and, as ``full_name``, the original name. A partitioned
variable's slices follow its full name, and restore as one tensor.
"""

from __future__ import annotations

import numpy as np

from estimator_fix import errors
from estimator_fix.checkpoint.index_file import Index
from estimator_fix.checkpoint.keys import OBJECT_GRAPH_KEY, OBJECT_SUFFIX, STEP_KEY
from estimator_fix.surgery import Edit, NewTensor

ROOT_CHILD = "vars"
SAVE_COUNTER = "save_counter"
_VARIABLE_VALUE = "VARIABLE_VALUE"


def escape(name: str) -> str:
    """An object name as TensorFlow writes it in a checkpoint key. Does not perform I/O."""
    return name.replace(".", "..").replace("/", ".S")


def object_key(name: str) -> str:
    """The object-based key of the variable ``name`` under ``vars``. Does not perform I/O."""
    return f"{ROOT_CHILD}/{escape(name)}{OBJECT_SUFFIX}"


def object_graph(names: list[str]) -> bytes:
    """The serialized ``TrackableObjectGraph`` of ``Checkpoint(vars={n: ...}).save``."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    root = graph.nodes.add()
    vars_node = graph.nodes.add()
    counter = graph.nodes.add()
    root.children.add(node_id=1, local_name=ROOT_CHILD)
    root.children.add(node_id=2, local_name=SAVE_COUNTER)
    counter.attributes.add(
        name=_VARIABLE_VALUE, full_name=SAVE_COUNTER, checkpoint_key=SAVE_COUNTER + OBJECT_SUFFIX
    )
    for name in names:
        node_id = len(graph.nodes)
        vars_node.children.add(node_id=node_id, local_name=name)
        node = graph.nodes.add()
        node.attributes.add(name=_VARIABLE_VALUE, full_name=name, checkpoint_key=object_key(name))
    for node in graph.nodes:
        node.has_checkpoint_values.value = True
    return bytes(graph.SerializeToString())


def plan(prefix: str, index: Index) -> Edit:
    """Every key of the name-based checkpoint at ``prefix`` under ``vars``, with the graph.

    Raises:
      errors.UsageError: the checkpoint is object-based already.
    """
    names = sorted(e.name for e in index.variables())
    if OBJECT_GRAPH_KEY in names or any(n.endswith(OBJECT_SUFFIX) for n in names):
        raise errors.UsageError(
            f"{prefix}: already an object-based checkpoint ({OBJECT_GRAPH_KEY}, "
            f"...{OBJECT_SUFFIX} keys); it needs no migration; nothing was written"
        )
    step = f"; global_step is {object_key(STEP_KEY)}" if STEP_KEY in names else ""
    return Edit(
        renames={n: object_key(n) for n in names},
        additions=(NewTensor(SAVE_COUNTER + OBJECT_SUFFIX, np.asarray(1, dtype=np.int64)),),
        replace_object_graph=object_graph(names),
        notes=(
            f"{len(names)} tensors under {ROOT_CHILD}/ (restore with "
            f"tf.train.Checkpoint({ROOT_CHILD}={{name: variable}})), {SAVE_COUNTER}=1, and the "
            f"object graph{step}",
        ),
        allow_step_change=True,
    )
