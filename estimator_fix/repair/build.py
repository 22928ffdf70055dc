"""Building the repaired checkpoint in a temporary directory: the step written the
Estimator's way (``get_or_create_global_step`` in a graph-mode session, saved by a ``Saver``),
the source's data files hard-linked, a new index written in pure Python (every source entry
byte for byte, plus the step); V1 sources converted one tensor at a time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from estimator_fix import errors
from estimator_fix.checkpoint import data_file, index_file, protos
from estimator_fix.checkpoint.keys import STEP_KEY
from estimator_fix.storage import atomic, fs
from estimator_fix.types import Format

if TYPE_CHECKING:
    from estimator_fix.plan import Plan


def build_checkpoint(plan: Plan, tmp_prefix: str) -> bool:
    """Writes the repaired checkpoint at ``tmp_prefix``. True if the data was hard-linked."""
    tmp_dir = fs.dirname(tmp_prefix)
    assert plan.step is not None
    step_prefix = fs.join(tmp_dir, "step")
    write_step_checkpoint(step_prefix, plan.step)
    atomic.failpoint("step-written")
    step_index = index_file.read_index(index_file.index_path(step_prefix))
    step_entry = step_index.get(STEP_KEY)
    assert step_entry is not None
    fs.remove(index_file.index_path(step_prefix))  # its one entry is re-encoded below
    if plan.source_format is Format.V1:
        items, num_source_shards = _convert_v1(plan, tmp_prefix)
        linked = False
    else:
        src = plan.source_index
        assert src is not None, "the scan parsed every V2 index"
        num_source_shards = src.header.num_shards
        items = [
            (e.key, e.raw_value)
            for e in src.entries
            if e.name not in plan.replace_keys or e.is_slice
        ]
        linked = True
        for shard in range(num_source_shards):
            src_path = index_file.data_path(plan.source_prefix, shard, num_source_shards)
            dst_path = index_file.data_path(tmp_prefix, shard, num_source_shards + 1)
            if fs.exists(src_path):
                linked &= atomic.link_or_copy(src_path, dst_path)
            else:  # a shard no entry references (scan checked): keep the numbering whole
                atomic.write_bytes(dst_path, b"")
    total = num_source_shards + 1
    # The step's data file becomes the last shard.
    atomic.replace(
        index_file.data_path(step_prefix, 0, 1),
        index_file.data_path(tmp_prefix, num_source_shards, total),
    )
    items.append(
        (
            STEP_KEY.encode(),
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
    items.append((b"", protos.encode_header(num_shards=total)))
    atomic.failpoint("before-index")
    atomic.write_bytes(index_file.index_path(tmp_prefix), index_file.encode_index(items))
    atomic.failpoint("index-written")
    return linked


def write_step_checkpoint(prefix: str, step: int) -> None:
    """Writes a one-tensor checkpoint holding ``global_step`` made the Estimator's way."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        assign = global_step.assign(tf.constant(step, dtype=tf.int64))
        saver = tf.compat.v1.train.Saver(
            var_list={STEP_KEY: global_step},
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
    """V1 -> V2, one tensor at a time: each is saved alone by SaveV2 and its bytes appended."""
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(plan.source_prefix)
    names = sorted(reader.get_variable_to_dtype_map())
    tmp_dir = fs.dirname(tmp_prefix)
    out_path = index_file.data_path(tmp_prefix, 0, 2)
    items: list[tuple[bytes, bytes]] = []
    offset = 0
    with atomic.write_errors(out_path), fs.writer(out_path) as out:
        for i, name in enumerate(names):
            if name in plan.replace_keys:
                continue
            one = fs.join(tmp_dir, f"v1-{i}")
            with _tf_write_errors(one):
                tf.raw_ops.SaveV2(
                    prefix=one,
                    tensor_names=[name],
                    shape_and_slices=[""],
                    tensors=[reader.get_tensor(name)],
                )
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


def link_unchanged(src_prefix: str, dst_prefix: str) -> bool:
    linked = True
    src_dir = fs.dirname(src_prefix)
    stem = fs.basename(src_prefix)
    for name in fs.listdir(src_dir):
        if name == stem or name.startswith(stem + ".data-") or name == stem + ".index":
            linked &= atomic.link_or_copy(fs.join(src_dir, name), dst_prefix + name[len(stem) :])
    return linked
