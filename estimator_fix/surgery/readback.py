"""TensorFlow reads the edited checkpoint back before the commit.

Checked: exactly the expected keys with the source's dtype and shape; every kept source entry
under its new key byte for byte (so TensorFlow checks each tensor against the source's crc32c);
the small tensors read in full through the new index (their crc32c verified); the new tensors
equal to their values; an object graph that names only keys the checkpoint holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estimator_fix import errors
from estimator_fix.checkpoint import index_file
from estimator_fix.checkpoint.index_file import Index
from estimator_fix.checkpoint.keys import OBJECT_GRAPH_KEY
from estimator_fix.surgery import graph as graph_lib
from estimator_fix.surgery.build import Layout

if TYPE_CHECKING:
    from estimator_fix.surgery.edit import NewTensor

# Tensors up to this size are read in full (the largest ones never are: no tensor byte of the
# model's weights needs reading for a rename), up to this much in all.
SMALL_TENSOR = 1 << 20
SMALL_BUDGET = 64 << 20


def verify(
    source: Index,
    source_prefix: str,
    prefix: str,
    plan: Layout,
    additions: tuple[NewTensor, ...],
) -> list[str]:
    """Reads ``prefix`` with TensorFlow; returns what was checked.

    Raises:
      errors.NotRepairableError: anything differs (nothing has been committed yet).
    """
    import numpy as np
    import tensorflow as tf

    def fail(what: str) -> errors.Error:
        return errors.NotRepairableError(
            f"{source_prefix}: the edited checkpoint failed its read-back check ({what}); "
            "nothing was committed",
            path=source_prefix,
        )

    expected = dict(plan.expected)
    read = 0
    try:
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)
        dtypes, shapes = reader.get_variable_to_dtype_map(), reader.get_variable_to_shape_map()
        for t in additions:
            value = reader.get_tensor(t.name)
            if not np.array_equal(value, t.value) or value.dtype != np.asarray(t.value).dtype:
                raise fail(f"new tensor {t.name!r} reads back as {value!r}")
            expected[t.name] = (dtypes[t.name].name, tuple(np.shape(t.value)))
        budget = SMALL_BUDGET
        for e in source.variables():
            final = plan.renames.get(e.name, e.name)
            if final not in expected or e.size > SMALL_TENSOR or e.slices or budget < e.size:
                continue
            reader.get_tensor(final)  # TensorFlow verifies the crc32c
            budget -= e.size
            read += 1
        graph_payload = reader.get_tensor(OBJECT_GRAPH_KEY) if OBJECT_GRAPH_KEY in dtypes else None
    except tf.errors.OpError as e:
        raise fail(f"TensorFlow cannot read it: {errors.tf_reason(e)}") from e
    got = {k: (v.name, tuple(shapes[k])) for k, v in dtypes.items()}
    if got != expected:
        diff = sorted(set(got.items()) ^ set(expected.items()))
        raise fail(f"keys, dtypes or shapes differ: {diff[:3]}")
    new_index = index_file.read_index(index_file.index_path(prefix))
    new_entries = {x.key: x.raw_value for x in new_index.entries}
    for key, value in plan.items:
        if new_entries.get(key) != value:
            raise fail(f"the entry for {key!r} differs from the source's")
    checks = [
        f"TensorFlow reads all {len(expected)} keys with the source's dtype and shape",
        f"all {len(plan.items)} kept index entries are the source's byte for byte (same "
        "shard, offset, size, crc32c)",
        f"{read} small tensors read in full through the new index, crc32c verified",
    ]
    if additions:
        checks.append(f"{len(additions)} new tensors read back equal")
    if isinstance(graph_payload, bytes):
        dangling = graph_lib.dangling_keys(graph_payload, set(expected), source_prefix)
        if dangling:
            raise fail(f"the object graph names keys the checkpoint lacks: {dangling[:3]}")
        checks.append("the object graph names only keys the checkpoint holds")
    return checks
