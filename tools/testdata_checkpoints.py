"""Reading and writing the fixtures' checkpoints, in graph mode, with public TF APIs only.

The state file (its prefixes, and writing one as TF's Saver formats it), every tensor of a
checkpoint (read whole, saved again under exactly its keys), and the facts MANIFEST.json
records about a checkpoint as stored: the step key, dtype and value, and the data-shard count.
Importing this module imports TensorFlow; tools/make_testdata.py imports it only once it
builds, after quieting TF's C++ logging.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tensorflow
from testdata_layout import STATE_FILE

tf: Any = tensorflow


def state_prefixes(model_dir: Path) -> tuple[str, ...]:
    """Checkpoint prefixes (basenames) in the state file, oldest first.

    Args:
      model_dir: a model directory with a `checkpoint` state file.

    Returns:
      The basenames of all_model_checkpoint_paths (or of the latest alone).

    Raises:
      RuntimeError: there is no state file, or its latest checkpoint is not listed last.
    """
    state = tf.train.get_checkpoint_state(str(model_dir))
    if state is None:
        raise RuntimeError(f"{model_dir} has no checkpoint state file")
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    if paths[-1] != state.model_checkpoint_path:
        raise RuntimeError(f"{model_dir}: latest checkpoint is not the last one listed")
    return tuple(os.path.basename(p) for p in paths)


def write_state_file(model_dir: Path, paths: Sequence[str]) -> None:
    """Writes the `checkpoint` state file exactly as TF's Saver formats it; last = latest.

    Args:
      model_dir: where to write it.
      paths: the checkpoint paths to list, oldest first, written as given.
    """
    from google.protobuf import text_format
    from tensorflow.python.training import checkpoint_state_pb2

    state = checkpoint_state_pb2.CheckpointState(
        model_checkpoint_path=paths[-1], all_model_checkpoint_paths=list(paths)
    )
    (model_dir / STATE_FILE).write_text(text_format.MessageToString(state))


def read_tensors(prefix: Path) -> dict[str, Any]:
    """Every tensor of a checkpoint, by key (partitioned variables come back whole).

    Args:
      prefix: the checkpoint prefix.

    Returns:
      NumPy values keyed by checkpoint key.
    """
    reader = tf.train.load_checkpoint(str(prefix))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_dtype_map()}


def save_tensors(tensors: Mapping[str, Any], prefix: Path) -> None:
    """Saves `tensors` under exactly their keys at `prefix`, with a sharded V2 Saver.

    Each value becomes a new variable in a fresh graph; the dtype is the array's dtype. No
    .meta and no state file are written (the caller writes the state file).

    Args:
      tensors: NumPy values keyed by the checkpoint key to store them under.
      prefix: the checkpoint prefix to write.
    """
    with tf.Graph().as_default():
        variables = {
            key: tf.compat.v1.Variable(value, name=f"v{i}", trainable=False)
            for i, (key, value) in enumerate(sorted(tensors.items()))
        }
        saver = tf.compat.v1.train.Saver(variables, sharded=True, save_relative_paths=True)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(prefix), write_meta_graph=False, write_state=False)


def step_facts(prefix: Path, step_key: str | None) -> dict[str, Any]:
    """The step key, dtype and value as actually stored (read back, not assumed).

    Args:
      prefix: the checkpoint prefix.
      step_key: the key the step is stored under, or None when it is stored nowhere.

    Returns:
      `step_key`, `step_dtype` and `stored_step` (all None when step_key is None).
    """
    if step_key is None:
        return {"step_key": None, "step_dtype": None, "stored_step": None}
    reader = tf.train.load_checkpoint(str(prefix))
    dtype = reader.get_variable_to_dtype_map()[step_key]
    value = reader.get_tensor(step_key)
    stored = float(value) if dtype.is_floating else int(value)
    return {"step_key": step_key, "step_dtype": dtype.name, "stored_step": stored}


def data_shards(model_dir: Path, prefix: str) -> int | None:
    """The shard count in a V2 prefix's data-file names; None for V1 (no data files).

    Args:
      model_dir: the model directory.
      prefix: the checkpoint prefix's basename.

    Returns:
      The `-of-N` count, None for a V1 checkpoint file, 0 when neither exists.
    """
    names = sorted(p.name for p in model_dir.glob(f"{prefix}.data-*-of-*"))
    if not names:
        return None if (model_dir / prefix).is_file() else 0
    return int(names[0].rsplit("-of-", 1)[1])
