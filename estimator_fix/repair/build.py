"""Building the repaired checkpoint in a temporary directory: the step written the
Estimator's way (``get_or_create_global_step`` in a graph-mode session, saved by a ``Saver``),
the source's data files hard-linked, a new index written in pure Python (every source entry
byte for byte, plus the step); V1 sources converted one tensor at a time. Object-based (Keras)
checkpoints get the step under the Keras Estimator's key and a node for it in their object
graph (``object_graph``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from estimator_fix import errors
from estimator_fix.checkpoint import data_file, index_file, protos
from estimator_fix.checkpoint.keys import OBJECT_GRAPH_KEY, STEP_KEY
from estimator_fix.repair import object_graph
from estimator_fix.storage import atomic, fs
from estimator_fix.types import Format

if TYPE_CHECKING:
    from estimator_fix.plan import Plan


def build_checkpoint(plan: Plan, tmp_prefix: str) -> atomic.Carried:
    """Writes the repaired checkpoint at ``tmp_prefix``; returns how the data files got there.

    Shards: the source's, then the step's one-tensor data file, then (object-based) the
    rewritten object graph's.
    """
    tmp_dir = fs.dirname(tmp_prefix)
    assert plan.step is not None
    step_prefix = fs.join(tmp_dir, "step")
    write_step_checkpoint(step_prefix, plan.step, key=plan.step_key)
    atomic.failpoint("step-written")
    step_index = index_file.read_index(index_file.index_path(step_prefix))
    step_entry = step_index.get(plan.step_key)
    assert step_entry is not None
    fs.remove(index_file.index_path(step_prefix))  # its one entry is re-encoded below
    extra = 2 if plan.rewrite_object_graph else 1
    if plan.source_format is Format.V1:
        items, num_source_shards = _convert_v1(plan, tmp_prefix)
        carried = atomic.Carried(atomic.REWRITTEN)
    else:
        src = plan.source_index
        assert src is not None, "the scan parsed every V2 index"
        num_source_shards = src.header.num_shards
        items = [
            (e.key, e.raw_value)
            for e in src.entries
            if e.name not in plan.replace_keys or e.is_slice
        ]
        carried = atomic.Carried()
        for shard in range(num_source_shards):
            src_path = index_file.data_path(plan.source_prefix, shard, num_source_shards)
            dst_path = index_file.data_path(tmp_prefix, shard, num_source_shards + extra)
            if fs.exists(src_path):
                carried += atomic.carry(src_path, dst_path)
            else:  # a shard no entry references (scan checked): keep the numbering whole
                atomic.write_bytes(dst_path, b"")
    total = num_source_shards + extra
    # The step's data file becomes the shard after the source's.
    atomic.replace(
        index_file.data_path(step_prefix, 0, 1),
        index_file.data_path(tmp_prefix, num_source_shards, total),
    )
    items.append(
        (
            plan.step_key.encode(),
            protos.encode_entry(
                dtype=step_entry.dtype,
                shape=step_entry.shape,
                shard_id=num_source_shards,
                offset=step_entry.offset,
                size=step_entry.size,
                crc32c=step_entry.crc32c,
            ),
        )
    )
    if plan.rewrite_object_graph:
        items.append(_write_object_graph(plan, tmp_prefix, num_source_shards + 1, total))
    items.append((b"", protos.encode_header(num_shards=total)))
    atomic.failpoint("before-index")
    atomic.write_bytes(index_file.index_path(tmp_prefix), index_file.encode_index(items))
    atomic.failpoint("index-written")
    return carried


def _write_object_graph(plan: Plan, tmp_prefix: str, shard: int, total: int) -> tuple[bytes, bytes]:
    """Writes the source's object graph, with the step's node, as data shard ``shard``.

    Returns the index item for ``_CHECKPOINTABLE_OBJECT_GRAPH``.

    Raises:
      errors.NotRepairableError: the source's object graph is missing or does not parse.
      errors.MissingShardError, errors.CorruptDataError: its bytes cannot be read.
    """
    src = plan.source_index
    assert src is not None, "object-based checkpoints are V2"
    entry = src.get(OBJECT_GRAPH_KEY)
    if entry is None or entry.dtype != protos.DT_STRING or entry.shape != ():
        raise errors.NotRepairableError(
            f"{plan.source_prefix}: no string scalar {OBJECT_GRAPH_KEY} to add the step to",
            path=plan.source_prefix,
        )
    stored = data_file.read_tensor_bytes(plan.source_prefix, src, entry)
    payload = object_graph.with_step(
        object_graph.decode_string_scalar(stored), plan.step_key, plan.source_prefix
    )
    data, crc = object_graph.encode_string_scalar(payload)
    atomic.write_bytes(index_file.data_path(tmp_prefix, shard, total), data)
    value = protos.encode_entry(
        dtype=protos.DT_STRING, shape=(), shard_id=shard, offset=0, size=len(data), crc32c=crc
    )
    return OBJECT_GRAPH_KEY.encode(), value


def write_step_checkpoint(prefix: str, step: int, *, key: str = STEP_KEY) -> None:
    """Writes a one-tensor checkpoint holding the step made the Estimator's way, under ``key``
    (``global_step``, or the Keras Estimator's object-based key)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        assign = global_step.assign(tf.constant(step, dtype=tf.int64))
        saver = tf.compat.v1.train.Saver(
            var_list={key: global_step},
            write_version=tf.compat.v1.train.SaverDef.V2,
            sharded=False,
        )
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(global_step.initializer)
            sess.run(assign)
            with atomic.write_errors(prefix), _tf_write_errors(prefix):
                saver.save(sess, prefix, write_meta_graph=False, write_state=False)


@contextlib.contextmanager
def _tf_write_errors(path: str) -> Iterator[None]:
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as e:
        raise errors.WriteError(
            f"{path}: TensorFlow could not write the step ({errors.tf_reason(e)}); nothing was "
            "committed",
            path=path,
        ) from e


def _convert_v1(plan: Plan, tmp_prefix: str) -> tuple[list[tuple[bytes, bytes]], int]:
    """V1 -> V2, one tensor at a time: each is saved alone by SaveV2 and its bytes appended.

    TensorFlow's reader opens ``plan.source_prefix``: one file, or for a sharded V1 checkpoint
    the pattern ``<stem>-?????-of-0000N``, through which it reads every shard. It silently
    leaves out the tensors of a shard that is not there, so the shards are checked again here
    (one may have gone since the scan): a checkpoint is converted whole or not at all.

    Raises:
      errors.MissingShardError: a shard of the source is missing.
      errors.CorruptDataError: TensorFlow cannot read the source or one of its tensors.
    """
    import tensorflow as tf

    from estimator_fix.checkpoint import state_file

    source = plan.source_prefix
    for i, path in enumerate(state_file.v1_shard_paths(source) or ()):
        if not fs.exists(path):
            raise errors.MissingShardError(
                f"{path}: V1 checkpoint shard {i} of {fs.basename(source)} missing; copy it from "
                "the original checkpoint (nothing was committed)",
                path=path,
            )

    def unreadable(e: Exception, what: str) -> errors.Error:
        return errors.CorruptDataError(
            f"{source}: TensorFlow cannot read {what} ({errors.tf_reason(e)}); copy the "
            "checkpoint again from the original (nothing was committed)",
            path=source,
        )

    try:
        reader = tf.compat.v1.train.NewCheckpointReader(state_file.v1_reader_path(source))
        names = sorted(reader.get_variable_to_dtype_map())
    except tf.errors.OpError as e:
        raise unreadable(e, "the V1 checkpoint") from e
    tmp_dir = fs.dirname(tmp_prefix)
    out_path = index_file.data_path(tmp_prefix, 0, 2)
    items: list[tuple[bytes, bytes]] = []
    offset = 0
    with atomic.write_errors(out_path), fs.writer(out_path) as out:
        for i, name in enumerate(names):
            if name in plan.replace_keys:
                continue
            try:
                value = reader.get_tensor(name)
            except tf.errors.OpError as e:
                raise unreadable(e, f"tensor {name!r}") from e
            one = fs.join(tmp_dir, f"v1-{i}")
            with _tf_write_errors(one):
                tf.raw_ops.SaveV2(
                    prefix=one, tensor_names=[name], shape_and_slices=[""], tensors=[value]
                )
            del value
            index = index_file.read_index(index_file.index_path(one))
            entry = index.get(name)
            assert entry is not None
            out.write(data_file.read_tensor_bytes(one, index, entry))
            items.append(
                (
                    entry.key,
                    protos.encode_entry(
                        dtype=entry.dtype,
                        shape=entry.shape,
                        shard_id=0,
                        offset=offset,
                        size=entry.size,
                        crc32c=entry.crc32c,
                    ),
                )
            )
            offset += entry.size
            for n in fs.listdir(tmp_dir):
                if n.startswith(f"v1-{i}."):
                    fs.remove(fs.join(tmp_dir, n))
    return items, 1


def link_unchanged(src_prefix: str, dst_prefix: str) -> atomic.Carried:
    """Carries every file of ``src_prefix`` (index included) to ``dst_prefix`` unchanged."""
    from estimator_fix.checkpoint import state_file

    carried = atomic.Carried()
    src_dir = fs.dirname(src_prefix)
    stem = fs.basename(src_prefix)
    v1_shards = {fs.basename(p) for p in state_file.v1_shard_paths(src_prefix) or ()}
    for name in fs.listdir(src_dir):
        if name in v1_shards:  # a sharded V1 checkpoint's files keep their names
            dst = fs.join(fs.dirname(dst_prefix), name)
            carried += atomic.carry(fs.join(src_dir, name), dst)
        elif name == stem or name.startswith(stem + ".data-") or name == stem + ".index":
            carried += atomic.carry(fs.join(src_dir, name), dst_prefix + name[len(stem) :])
    return carried
