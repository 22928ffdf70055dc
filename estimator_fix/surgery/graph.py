"""An object-based checkpoint's ``_CHECKPOINTABLE_OBJECT_GRAPH`` kept in step with an edit.

Every node attribute names the checkpoint key of its value (``checkpoint_key``); TensorFlow's
name-based fallback and ``tf.train.Checkpoint`` look keys up through it. When keys are renamed
or dropped, the attributes that name them follow (a dropped key's attribute is removed).
"""

from __future__ import annotations

from estimator_fix.checkpoint import data_file
from estimator_fix.checkpoint.index_file import Index
from estimator_fix.checkpoint.keys import OBJECT_GRAPH_KEY
from estimator_fix.surgery.edit import Edit


def new_payload(index: Index, source_prefix: str, edit: Edit) -> bytes | None:
    """The object graph the edited checkpoint needs, or None to keep the source's entry as is.

    Raises:
      errors.NotRepairableError: the source's object graph does not parse.
      errors.MissingShardError, errors.CorruptDataError: its bytes cannot be read.
    """
    if edit.replace_object_graph is not None:
        return edit.replace_object_graph
    entry = index.get(OBJECT_GRAPH_KEY)
    if entry is None or not (edit.drops or any(a != b for a, b in edit.renames.items())):
        return None
    from estimator_fix.repair import object_graph

    payload = object_graph.decode_string_scalar(
        data_file.read_tensor_bytes(source_prefix, index, entry)
    )
    graph = object_graph.parse(payload, source_prefix)
    changed = False
    for node in graph.nodes:
        for i in reversed(range(len(node.attributes))):
            attr = node.attributes[i]
            final = edit.final_name(attr.checkpoint_key)
            changed |= final != attr.checkpoint_key
            if final is None:
                del node.attributes[i]
            else:
                attr.checkpoint_key = final
    return graph.SerializeToString() if changed else None


def dangling_keys(payload: bytes, keys: set[str], path: str) -> list[str]:
    """The checkpoint keys the object graph names that ``keys`` does not hold."""
    from estimator_fix.repair import object_graph

    graph = object_graph.parse(payload, path)
    return sorted({a.checkpoint_key for n in graph.nodes for a in n.attributes} - keys)
