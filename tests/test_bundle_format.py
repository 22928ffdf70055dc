"""Tests of the checkpoint index, table and data file modules on input made by hand.

Tensors written by the ``SaveV2`` op directly (variant, string, empty), slice keys with
ordered-code escapes, the encoder's refusals, the table's crc mask, the pure path helpers, a
3,000-entry index, and that the checkpoint modules import no TensorFlow yet read what its
protobuf classes write.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import tensorflow as tf

from estimator_fix import errors
from estimator_fix.checkpoint import data_file, index_file, protos, table
from tests.conftest import items_of

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- helpers ----------------------------------------------------------------------------------


def ordered_code_string(raw: bytes) -> bytes:
    """Escapes a string as OrderedCode::WriteString does, without its 00 01 terminator."""
    escapes = {0x00: b"\x00\xff", 0xFF: b"\xff\x00"}
    return b"".join(escapes.get(b, bytes([b])) for b in raw)


# --- input made by hand -----------------------------------------------------------------------


def test_variant_string_and_empty_tensors(tmp_path: Path) -> None:
    """Checksums of variant, string and empty tensors, written by the SaveV2 op directly."""
    prefix = str(tmp_path / "raw")
    tensor_list = tf.raw_ops.TensorListPushBack(
        input_handle=tf.raw_ops.EmptyTensorList(
            element_shape=tf.constant(-1), max_num_elements=-1, element_dtype=tf.float32
        ),
        tensor=tf.constant([1.0, 2.0]),
    )
    strings = tf.constant([[b"", b"x" * 200], [b"abc", b"\x00\xff"]])
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=["list", "strings", "empty"],
        shape_and_slices=["", "", ""],
        tensors=[tensor_list, strings, tf.zeros([0, 3])],
    )
    index = index_file.read_index(index_file.index_path(prefix))
    got = {e.name: (e.dtype_name, e.shape, e.size) for e in index.entries}
    assert got["list"][:2] == ("variant", ())
    assert got["strings"][:2] == ("string", (2, 2))
    assert got["empty"] == ("float32", (0, 3), 0)
    for entry in index.entries:
        data_file.read_tensor_bytes(prefix, index, entry)  # checksums verify


def test_slice_key_names_are_decoded(tmp_path: Path) -> None:
    """Ordered-code escapes of 0x00 and 0xff inside a slice key's tensor name."""
    raw_name = b"odd\x00name\xff/x"
    key = b"\x00" + ordered_code_string(raw_name) + b"\x00\x01" + b"\x01\x01\x80\x84"
    entry_value = protos.encode_entry(
        dtype=protos.DT_FLOAT, shape=(4,), shard_id=0, offset=0, size=16, crc32c=0
    )
    items = [(b"", protos.encode_header(num_shards=1)), (key, entry_value)]
    path = tmp_path / "slice.index"
    path.write_bytes(index_file.encode_index(items))
    (entry,) = index_file.read_index(str(path)).entries
    assert entry.is_slice
    assert entry.name == raw_name.decode("utf-8", "backslashreplace")
    assert entry.shape == (4,)


def test_encode_index_rejects_duplicates_and_a_missing_header() -> None:
    header = protos.encode_header(num_shards=1)
    value = protos.encode_entry(dtype=protos.DT_INT64, shape=(), shard_id=0, offset=0, size=8,
                                crc32c=0)  # fmt: skip
    with pytest.raises(errors.InputError, match="twice"):
        index_file.encode_index([(b"", header), (b"a", value), (b"a", value)])
    with pytest.raises(errors.InputError, match="header"):
        index_file.encode_index([(b"a", value)])


def test_crc_mask_round_trip() -> None:
    for crc in (0, 1, 0xFFFFFFFF, google_crc32c.value(b"global_step")):
        assert table.unmask_crc(table.mask_crc(crc)) == crc


def test_paths_are_pure() -> None:
    assert index_file.index_path("/m/model.ckpt-5") == "/m/model.ckpt-5.index"
    assert index_file.data_path("/m/model.ckpt-5", 1, 2) == "/m/model.ckpt-5.data-00001-of-00002"


def test_large_index_parses(tmp_path: Path) -> None:
    """3,000 entries (a big Adam-trained model) parse back to exactly the items written."""
    items = [(b"", protos.encode_header(num_shards=1))]
    offset = 0
    for i in range(3000):
        shape = (i % 7 + 1, 64) if i % 3 else (i % 50 + 1,)
        size = 4 * int(np.prod(shape))
        key = f"dnn/hiddenlayer_{i // 30}/kernel_{i}/Adam_1".encode()
        value = protos.encode_entry(dtype=protos.DT_FLOAT, shape=shape, shard_id=0,
                                    offset=offset, size=size, crc32c=i)  # fmt: skip
        items.append((key, value))
        offset += size
    path = tmp_path / "big.index"
    path.write_bytes(index_file.encode_index(items))
    index = index_file.read_index(str(path))
    assert len(index.entries) == 3000
    assert items_of(index) == sorted(items)
    assert index.total_bytes == offset


def test_bundle_does_not_import_tensorflow_and_coexists_with_it() -> None:
    code = (
        "import sys\n"
        "from estimator_fix.checkpoint import data_file, index_file, keys, protos\n"
        "from estimator_fix.checkpoint import state_file, table\n"
        "assert 'tensorflow' not in sys.modules, 'a checkpoint module imported tensorflow'\n"
        "from tensorflow.core.protobuf import tensor_bundle_pb2 as tb\n"
        "h = tb.BundleHeaderProto.FromString(protos.encode_header(num_shards=3))\n"
        "assert h.num_shards == 3 and h.version.producer == 1\n"
        "e = tb.BundleEntryProto.FromString(protos.encode_entry(\n"
        "    dtype=9, shape=(2, 3), shard_id=1, offset=8, size=48, crc32c=0xDEADBEEF))\n"
        "assert (e.dtype, [d.size for d in e.shape.dim], e.shard_id) == (9, [2, 3], 1)\n"
        "assert (e.offset, e.size, e.crc32c) == (8, 48, 0xDEADBEEF)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
