"""The new checkpoint, built in a temporary directory: the source's index entries byte for byte
under their new keys, the data files hard-linked, new small tensors and a rewritten object graph
each as one more data shard. ``layout`` decides everything without I/O; ``build`` writes it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from estimator_fix import errors
from estimator_fix.checkpoint import index_file, protos
from estimator_fix.checkpoint.index_file import Index
from estimator_fix.checkpoint.keys import OBJECT_GRAPH_KEY
from estimator_fix.storage import atomic, fs

if TYPE_CHECKING:
    from estimator_fix.surgery.edit import Edit, NewTensor

_ESCAPE_RE = re.compile(rb"[\x00\xff]")


@dataclasses.dataclass(frozen=True)
class Layout:
    """The new checkpoint, decided from the source index and the edit. Does not perform I/O.

    Attributes:
      items: the kept source entries as (new key, value), the value byte for byte.
      expected: every final full name -> (dtype name, shape): what TensorFlow must read back.
      renames: old -> new, only the names that change.
      dropped: the names left out.
      num_source_shards: the source's data shard count (kept, same numbers).
      additions_shard: the shard of the new small tensors, or None.
      graph_shard: the shard of the rewritten object graph, or None.
      total_shards: the new checkpoint's shard count.
    """

    items: tuple[tuple[bytes, bytes], ...]
    expected: Mapping[str, tuple[str, tuple[int, ...]]]
    renames: Mapping[str, str]
    dropped: tuple[str, ...]
    num_source_shards: int
    additions_shard: int | None
    graph_shard: int | None
    total_shards: int

    def data_files(self, prefix: str) -> list[str]:
        """The data file paths under ``prefix``, in shard order. Does not perform I/O."""
        return [
            index_file.data_path(prefix, i, self.total_shards) for i in range(self.total_shards)
        ]


def _escape(name: bytes) -> bytes:
    return _ESCAPE_RE.sub(lambda m: m[0] + (b"\xff" if m[0] == b"\x00" else b"\x00"), name)


def rename_slice_key(key: bytes, new_name: str) -> bytes:
    """A binary slice key with its full tensor name replaced by ``new_name``.

    The key is the ordered code of (0, name, rank, extents...): the byte 00, the name with 00
    escaped as 00 ff and ff as ff 00, the terminator 00 01, then the rank and extents, which
    are kept as they are. Does not perform I/O.

    Raises:
      ValueError: ``key`` is not a slice key.
    """
    pos, n = 1, len(key)
    if key[:1] != b"\x00":
        raise ValueError(f"not a slice key: {key!r}")
    while pos + 1 < n:
        pair = key[pos : pos + 2]
        if pair == b"\x00\x01":
            return b"\x00" + _escape(new_name.encode()) + key[pos:]
        pos += 2 if pair in (b"\x00\xff", b"\xff\x00") else 1
    raise ValueError(f"slice key without a terminated name: {key!r}")


def layout(index: Index, edit: Edit, *, rewrite_graph: bool) -> Layout:
    """Where every kept entry goes. ``edit`` was validated against ``index``.

    Does not perform I/O.
    """
    items: list[tuple[bytes, bytes]] = []
    expected: dict[str, tuple[str, tuple[int, ...]]] = {}
    renames: dict[str, str] = {}
    dropped: list[str] = []
    for e in index.entries:
        final = edit.final_name(e.name)
        if final is None:
            if not e.is_slice:
                dropped.append(e.name)
            continue
        if e.name == OBJECT_GRAPH_KEY and rewrite_graph:
            expected[final] = (e.dtype_name, e.shape)
            continue
        if e.is_slice:
            key = rename_slice_key(e.key, final) if final != e.name else e.key
        else:
            key = final.encode()
            expected[final] = (e.dtype_name, e.shape)
            if final != e.name:
                renames[e.name] = final
        items.append((key, e.raw_value))
    if rewrite_graph:  # also where the source had no object graph (migrate --to=tf2-object)
        expected[OBJECT_GRAPH_KEY] = ("string", ())
    n = index.header.num_shards
    additions_shard = n if edit.additions else None
    graph_shard = n + (1 if edit.additions else 0) if rewrite_graph else None
    total = n + (additions_shard is not None) + (graph_shard is not None)
    return Layout(
        items=tuple(items),
        expected=expected,
        renames=renames,
        dropped=tuple(dropped),
        num_source_shards=n,
        additions_shard=additions_shard,
        graph_shard=graph_shard,
        total_shards=total,
    )


def build(
    index: Index,
    source_prefix: str,
    tmp_prefix: str,
    plan: Layout,
    additions: tuple[NewTensor, ...],
    graph_payload: bytes | None,
    *,
    link: Callable[[str, str], bool] = atomic.link_or_copy,
) -> tuple[bool, int]:
    """Writes the new checkpoint at ``tmp_prefix``. Returns (hard-linked, new bytes written).

    ``link`` puts a source data file at a new path and says whether it avoided a copy (a hard
    link; ``preview`` passes a symbolic link).

    Raises:
      errors.WriteError: a write failed.
    """
    linked = True
    new_bytes = 0
    n = plan.num_source_shards
    for shard in range(n):
        src = index_file.data_path(source_prefix, shard, n)
        dst = index_file.data_path(tmp_prefix, shard, plan.total_shards)
        if fs.exists(src):
            if not link(src, dst):
                linked = False
                new_bytes += fs.size(dst)
        else:  # a shard no entry references (the scan checked): keep the numbering whole
            atomic.write_bytes(dst, b"")
    items = list(plan.items)
    if plan.additions_shard is not None:
        added, size = _write_additions(tmp_prefix, additions, plan.additions_shard, plan)
        items.extend(added)
        new_bytes += size
    if plan.graph_shard is not None:
        assert graph_payload is not None
        from estimator_fix.repair import object_graph

        data, crc = object_graph.encode_string_scalar(graph_payload)
        path = index_file.data_path(tmp_prefix, plan.graph_shard, plan.total_shards)
        atomic.write_bytes(path, data)
        value = protos.encode_entry(
            dtype=protos.DT_STRING,
            shape=(),
            shard_id=plan.graph_shard,
            offset=0,
            size=len(data),
            crc32c=crc,
        )
        items.append((OBJECT_GRAPH_KEY.encode(), value))
        new_bytes += len(data)
    h = index.header
    header = protos.encode_header(
        num_shards=plan.total_shards,
        endianness=h.endianness,
        producer=h.producer,
        min_consumer=h.min_consumer,
    )
    items.append((b"", header))
    atomic.failpoint("surgery-before-index")
    data = index_file.encode_index(items)
    atomic.write_bytes(index_file.index_path(tmp_prefix), data)
    return linked, new_bytes + len(data)


def _write_additions(
    tmp_prefix: str, additions: tuple[NewTensor, ...], shard: int, plan: Layout
) -> tuple[list[tuple[bytes, bytes]], int]:
    """Saves the new tensors with a ``Saver`` in a graph-mode session (TensorFlow's bytes and
    crc32c) and moves its one data file to shard ``shard``. Returns their index items and the
    bytes written."""
    import tensorflow as tf

    prefix = fs.join(fs.dirname(tmp_prefix), "added")
    graph = tf.Graph()
    with graph.as_default():
        variables = {
            t.name: tf.compat.v1.Variable(t.value, name=f"added_{i}", trainable=False)
            for i, t in enumerate(additions)
        }
        saver = tf.compat.v1.train.Saver(
            var_list=variables, write_version=tf.compat.v1.train.SaverDef.V2, sharded=False
        )
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.variables_initializer(list(variables.values())))
            try:
                with atomic.write_errors(prefix):
                    saver.save(sess, prefix, write_meta_graph=False, write_state=False)
            except tf.errors.OpError as e:
                raise errors.WriteError(
                    f"{prefix}: TensorFlow could not write the new tensors "
                    f"({errors.tf_reason(e)}); nothing was committed",
                    path=prefix,
                ) from e
    saved = index_file.read_index(index_file.index_path(prefix))
    items = [
        (
            e.key,
            protos.encode_entry(
                dtype=e.dtype,
                shape=e.shape,
                shard_id=shard,
                offset=e.offset,
                size=e.size,
                crc32c=e.crc32c,
            ),
        )
        for e in saved.entries
    ]
    src = index_file.data_path(prefix, 0, 1)
    size = fs.size(src)
    atomic.replace(src, index_file.data_path(tmp_prefix, shard, plan.total_shards))
    fs.remove(index_file.index_path(prefix))
    return items, size
