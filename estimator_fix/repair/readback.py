"""Reading the repaired checkpoint back with TensorFlow before anything is committed: every
kept key with the source's dtype and shape, the same index entry (shard, offset, size, crc32c)
per tensor, the data shards' sizes, and ``global_step`` an int64 scalar equal to the plan.
For an object-based checkpoint the step is the Keras Estimator's key, and the rewritten object
graph must keep every source node and name that key from the root's ``estimator_global_step``.

The source side of the comparison is the index the scan parsed (``plan.source_index``); only a
V1 source, which has no index, is read with TensorFlow's reader (through its pattern when it is
sharded: ``checkpoint.state_file.v1_reader_path``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from estimator_fix import errors
from estimator_fix.checkpoint import index_file, state_file
from estimator_fix.checkpoint.keys import OBJECT_GRAPH_KEY
from estimator_fix.repair import object_graph
from estimator_fix.storage import fs
from estimator_fix.types import Format

if TYPE_CHECKING:
    from estimator_fix.plan import Plan


def verify_checkpoint(plan: Plan, prefix: str) -> list[str]:
    """Reads the new checkpoint with TensorFlow and compares it with the source.

    Raises:
      errors.NotRepairableError: anything differs (nothing has been committed yet).
    """
    import numpy as np
    import tensorflow as tf

    def fail(what: str) -> errors.Error:
        return errors.NotRepairableError(
            f"{plan.source_prefix}: the repaired checkpoint failed its read-back check ({what}); "
            "nothing was committed",
            path=plan.source_prefix,
        )

    try:
        # Not tf.train.load_checkpoint: it first asks isdir(prefix), which on ram:// is true
        # for any string prefix of a stored file, and then fails to find a state file there.
        new = tf.compat.v1.train.NewCheckpointReader(prefix)
        new_dtypes, new_shapes = new.get_variable_to_dtype_map(), new.get_variable_to_shape_map()
        step_value = new.get_tensor(plan.step_key)
        if plan.source_format is Format.V1:  # no index to compare with: TensorFlow's reader
            old = tf.compat.v1.train.NewCheckpointReader(
                state_file.v1_reader_path(plan.source_prefix)
            )
            old_shapes = old.get_variable_to_shape_map()
            source = {
                k: (dtype.name, tuple(old_shapes[k]))
                for k, dtype in old.get_variable_to_dtype_map().items()
            }
        else:
            assert plan.source_index is not None, "the scan parsed every V2 index"
            source = {e.name: (e.dtype_name, e.shape) for e in plan.source_index.variables()}
    except tf.errors.OpError as e:
        raise fail(f"TensorFlow cannot read it: {errors.tf_reason(e)}") from e
    kept = [k for k in source if k not in plan.replace_keys]
    for key in kept:
        if key not in new_dtypes:
            raise fail(f"key {key!r} missing")
        if (new_dtypes[key].name, tuple(new_shapes[key])) != source[key]:
            raise fail(f"key {key!r} changed dtype or shape")
    key = plan.step_key
    if new_dtypes[key] != tf.int64 or list(new_shapes[key]) != []:
        raise fail(f"{key} is not an int64 scalar")
    if int(np.asarray(step_value)) != plan.step:
        raise fail(f"{key} is {int(np.asarray(step_value))}, planned {plan.step}")
    checks = [
        f"TensorFlow reads all {len(kept)} kept keys with the same dtype and shape",
        f"{key} is an int64 scalar = {plan.step}",
    ]
    if plan.rewrite_object_graph:
        checks.append(_check_object_graph(plan, new, fail))
    if plan.source_format is Format.V1:
        for key in kept:  # converted bytes: compare values, one tensor at a time
            if not np.array_equal(new.get_tensor(key), old.get_tensor(key)):
                raise fail(f"key {key!r} changed value")
        checks.append("every converted tensor has the same value")
        return checks
    src = plan.source_index
    assert src is not None, "the scan parsed every V2 index"
    dst = {x.key: x for x in index_file.read_index(index_file.index_path(prefix)).entries}
    for entry in src.entries:
        if entry.name in plan.replace_keys and not entry.is_slice:
            continue
        d = dst.get(entry.key)
        if d is None or d.raw_value != entry.raw_value:
            raise fail(f"entry {entry.name!r} differs from the source index")
    checks.append(f"all {len(src.entries)} source index entries kept with the same crc32c")
    total = src.header.num_shards + (2 if plan.rewrite_object_graph else 1)
    for shard in range(src.header.num_shards):
        a = index_file.data_path(plan.source_prefix, shard, src.header.num_shards)
        b = index_file.data_path(prefix, shard, total)
        if fs.exists(a) and fs.size(a) != fs.size(b):
            raise fail(f"data shard {shard} differs in size")
    checks.append("every data shard has the source's size (hard link or full copy)")
    return checks


def _check_object_graph(plan: Plan, new: Any, fail: Callable[[str], errors.Error]) -> str:
    """The rewritten object graph, as TensorFlow reads it, names the step and keeps every
    source node (a new node is only appended; an existing step node only gets its key).

    Raises:
      errors.NotRepairableError: it does not.
    """
    import tensorflow as tf

    try:
        graph = object_graph.parse(new.get_tensor(OBJECT_GRAPH_KEY), plan.source_prefix)
        old = tf.compat.v1.train.NewCheckpointReader(plan.source_prefix)
        before = object_graph.parse(old.get_tensor(OBJECT_GRAPH_KEY), plan.source_prefix)
    except tf.errors.OpError as e:
        raise fail(f"TensorFlow cannot read {OBJECT_GRAPH_KEY}: {errors.tf_reason(e)}") from e
    if object_graph.step_checkpoint_key(graph) != plan.step_key:
        raise fail(f"the object graph does not name {plan.step_key}")
    step_node = object_graph.step_node(graph)
    if len(graph.nodes) < len(before.nodes):
        raise fail("the object graph lost nodes")
    for i, node in enumerate(before.nodes):
        if i == step_node:
            continue
        if i == 0:
            old_children = [(c.node_id, c.local_name) for c in node.children]
            new_children = [(c.node_id, c.local_name) for c in graph.nodes[0].children]
            if new_children[: len(old_children)] != old_children:
                raise fail("the object graph's root lost children")
        elif graph.nodes[i] != node:
            raise fail(f"object graph node {i} changed")
    return (
        f"the object graph keeps all {len(before.nodes)} source nodes and names {plan.step_key} "
        f"from the root's {object_graph.STEP_CHILD}"
    )
