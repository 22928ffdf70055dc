"""The ways the broken fixtures are made from the healthy ones.

A broken fixture is derived by reading every tensor of each checkpoint of a healthy one,
passing them through a `Transform` (move, retype or drop the step; drop the Keras step and
its object-graph node) and saving them again with a graph-mode Saver over new variables, or
by copying its checkpoint files as they are (the caller then writes a foreign state file or
deletes a shard). Nothing is edited byte by byte. Importing this module imports TensorFlow.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy
from testdata_checkpoints import read_tensors, save_tensors, write_state_file
from testdata_layout import Trained, suffix_step

np: Any = numpy

# Takes a checkpoint's tensors and the step of its prefix suffix; returns the tensors to save.
Transform = Callable[[dict[str, Any], int], dict[str, Any]]


def derive(
    source: Trained, model_dir: Path, transform: Transform, *, rename: Callable[[str], str]
) -> tuple[str, ...]:
    """Re-saves every checkpoint of `source` through `transform`; returns the new prefixes.

    Args:
      source: the healthy fixture (only the checkpoints in source.prefixes are read).
      model_dir: the new model directory, created here, with a state file of its own.
      transform: what to do to each checkpoint's tensors.
      rename: maps each prefix of `source` to the prefix to save it under.

    Returns:
      The new prefixes, oldest first.
    """
    model_dir.mkdir()
    prefixes = []
    for prefix in source.prefixes:
        tensors = transform(read_tensors(source.model_dir / prefix), suffix_step(prefix))
        new_prefix = rename(prefix)
        save_tensors(tensors, model_dir / new_prefix)
        prefixes.append(new_prefix)
    write_state_file(model_dir, prefixes)
    return tuple(prefixes)


def move_step(new_key: str | None, dtype: str = "int64", offset: int = 0) -> Transform:
    """A transform that removes `global_step` and, unless new_key is None, stores it anew.

    Args:
      new_key: the key to store the step under, or None to store it nowhere.
      dtype: the NumPy dtype to store it as.
      offset: added to the step before it is stored.

    Returns:
      The transform; it raises RuntimeError if `global_step` disagrees with the suffix.
    """

    def transform(tensors: dict[str, Any], step: int) -> dict[str, Any]:
        value = tensors.pop("global_step")
        if int(value) != step:
            raise RuntimeError(f"global_step {value} disagrees with suffix {step}")
        if new_key is not None:
            tensors[new_key] = np.array(step + offset, dtype=dtype)
        return tensors

    return transform


def drop_keras_step(tensors: dict[str, Any], step: int) -> dict[str, Any]:
    """Removes the Keras step key and its node from the object graph, renumbering nodes.

    Args:
      tensors: a model_to_estimator checkpoint's tensors (changed in place).
      step: the step of its prefix suffix, checked against the stored one.

    Returns:
      `tensors`, without the step and with the rewritten `_CHECKPOINTABLE_OBJECT_GRAPH`.

    Raises:
      RuntimeError: the stored step disagrees with the suffix.
    """
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    key = "estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE"
    if int(tensors.pop(key)) != step:
        raise RuntimeError(f"{key} disagrees with suffix {step}")
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tensors["_CHECKPOINTABLE_OBJECT_GRAPH"])
    (gone,) = [
        i
        for i, node in enumerate(graph.nodes)
        if any(a.checkpoint_key == key for a in node.attributes)
    ]
    kept = trackable_object_graph_pb2.TrackableObjectGraph()
    for i, node in enumerate(graph.nodes):
        if i == gone:
            continue
        new = kept.nodes.add()
        new.CopyFrom(node)
        del new.children[:]
        for child in node.children:
            if child.node_id != gone:
                new.children.add(
                    node_id=child.node_id - (child.node_id > gone), local_name=child.local_name
                )
        for slot in new.slot_variables:
            slot.original_variable_node_id -= slot.original_variable_node_id > gone
            slot.slot_variable_node_id -= slot.slot_variable_node_id > gone
    tensors["_CHECKPOINTABLE_OBJECT_GRAPH"] = np.array(kept.SerializeToString(), dtype=object)
    return tensors


def copy_checkpoints(source: Trained, model_dir: Path) -> None:
    """Copies the index/data files of every checkpoint of `source` (not the state file).

    Args:
      source: the healthy fixture.
      model_dir: the new model directory, created here.
    """
    model_dir.mkdir()
    for prefix in source.prefixes:
        for path in source.model_dir.glob(f"{prefix}.*"):
            if path.suffix != ".meta":
                shutil.copy2(path, model_dir / path.name)
