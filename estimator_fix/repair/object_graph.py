"""The ``_CHECKPOINTABLE_OBJECT_GRAPH`` of an object-based checkpoint, given a step node.

A Keras Estimator (``model_to_estimator``) restores its step from the key
``estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE`` by name, but an object-graph restore
(``tf.train.Checkpoint``, or the name-based Saver's fallback when a key is missing) finds
variables only through the serialized ``TrackableObjectGraph`` stored as a string scalar under
``_CHECKPOINTABLE_OBJECT_GRAPH``. A step key added to the index alone is invisible to it, so the
repair adds a node the way ``model_to_estimator`` itself tracks the step: a child of the root
named ``estimator_global_step`` whose ``VARIABLE_VALUE`` attribute names the key.

The graph's bytes are rewritten into a new data shard; the original shard keeps the old bytes
unreferenced (it is hard-linked, never modified). String tensors are stored as each element's
varint length, a masked crc32c of the lengths, then the bytes (``checkpoint.data_file`` has
the checksum scheme).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import google_crc32c

from estimator_fix import errors
from estimator_fix.checkpoint import data_file, protos, table

if TYPE_CHECKING:
    from tensorflow.core.protobuf import trackable_object_graph_pb2

STEP_CHILD = "estimator_global_step"  # the root's child model_to_estimator tracks the step as
_VARIABLE_VALUE = "VARIABLE_VALUE"
_STEP_FULL_NAME = "global_step"  # the graph variable's name, as model_to_estimator's node has it


def decode_string_scalar(data: bytes) -> bytes:
    """The payload of a string scalar as a data shard stores it.

    Raises:
      ValueError: the bytes are not one length-prefixed string.
    """
    length, pos = table.get_varint(data, 0, len(data))
    if pos + 4 + length != len(data):
        raise ValueError("not a single string element")
    return data[pos + 4 :]


def encode_string_scalar(payload: bytes) -> tuple[bytes, int]:
    """A string scalar's stored bytes (little endian) and the entry's masked crc32c.

    Does not perform I/O.
    """
    length = len(payload)
    varint = bytearray()
    n = length
    while n >= 0x80:
        varint.append((n & 0x7F) | 0x80)
        n >>= 7
    varint.append(n)
    size_format = "<I" if length <= 0xFFFFFFFF else "<Q"
    length_crc = google_crc32c.value(struct.pack(size_format, length))
    data = bytes(varint) + struct.pack("<I", table.mask_crc(int(length_crc))) + payload
    crc = data_file.tensor_crc32c(data, dtype=protos.DT_STRING, shape=())
    return data, crc


def parse(payload: bytes, path: str) -> trackable_object_graph_pb2.TrackableObjectGraph:
    """The ``TrackableObjectGraph`` in ``payload``, read from the checkpoint ``path``.

    Raises:
      errors.NotRepairableError: it does not parse or has no root.
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    try:
        graph.ParseFromString(payload)
    except DecodeError as e:
        raise errors.NotRepairableError(
            f"{path}: its _CHECKPOINTABLE_OBJECT_GRAPH is not a TrackableObjectGraph; restore "
            "the checkpoint from the original copy",
            path=path,
        ) from e
    if not graph.nodes:
        raise errors.NotRepairableError(
            f"{path}: its _CHECKPOINTABLE_OBJECT_GRAPH has no root object; restore the "
            "checkpoint from the original copy",
            path=path,
        )
    return graph


def step_node(graph: trackable_object_graph_pb2.TrackableObjectGraph) -> int | None:
    """The node the root's ``estimator_global_step`` child points at, if any. No I/O."""
    for child in graph.nodes[0].children:
        if child.local_name == STEP_CHILD and 0 <= child.node_id < len(graph.nodes):
            return int(child.node_id)
    return None


def step_checkpoint_key(graph: trackable_object_graph_pb2.TrackableObjectGraph) -> str | None:
    """The checkpoint key the step node's ``VARIABLE_VALUE`` names, if any. No I/O."""
    node_id = step_node(graph)
    if node_id is None:
        return None
    for attr in graph.nodes[node_id].attributes:
        if attr.name == _VARIABLE_VALUE:
            return str(attr.checkpoint_key)
    return None


def with_step(payload: bytes, step_key: str, path: str) -> bytes:
    """``payload`` (a serialized object graph) with a step node whose value is ``step_key``.

    A root child ``estimator_global_step`` that is already there (its key stripped from the
    index but not from the graph) is kept and pointed at ``step_key``; otherwise a new node is
    appended, so no existing node id changes.

    Raises:
      errors.NotRepairableError: see ``parse``.
    """
    graph = parse(payload, path)
    node_id = step_node(graph)
    if node_id is None:
        node_id = len(graph.nodes)
        graph.nodes.add()
        graph.nodes[0].children.add(node_id=node_id, local_name=STEP_CHILD)
    node = graph.nodes[node_id]
    attrs = [a for a in node.attributes if a.name == _VARIABLE_VALUE]
    attr = attrs[0] if attrs else node.attributes.add(name=_VARIABLE_VALUE)
    attr.checkpoint_key = step_key
    if not attr.full_name:
        attr.full_name = _STEP_FULL_NAME
    node.has_checkpoint_values.value = True
    graph.nodes[0].has_checkpoint_values.value = True
    return graph.SerializeToString()
