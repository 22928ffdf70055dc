"""Tests of the checkpoint index and data file modules on a two-shard checkpoint written by TF.

Two data shards come from ``Saver(sharded=True)`` with variables placed on two devices
(``/cpu:0`` and ``/cpu:1``) in a session configured with ``device_count={"CPU": 2}``: the sharded
saver writes one shard per distinct variable device, then merges the indexes. Its index
re-encoded (or with a key renamed) reads in TensorFlow; scalars read as TensorFlow reads them;
and every way of damaging the index or a data shard is one error of the library's hierarchy, on
one line, naming the file.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from estimator_fix import errors
from estimator_fix.checkpoint import data_file, index_file, keys, protos, table
from tests.conftest import VarSpec, items_of, save_checkpoint

# --- helpers ----------------------------------------------------------------------------------


def copy_checkpoint(prefix: str, dest_dir: Path) -> str:
    """Copies a checkpoint's index and data files into ``dest_dir``; returns the new prefix."""
    src_dir, base = os.path.split(prefix)
    for name in os.listdir(src_dir):
        if name.startswith(base + "."):
            shutil.copy(os.path.join(src_dir, name), dest_dir / name)
    return str(dest_dir / base)


def flip_byte(path: str, offset: int) -> None:
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0x5A
    Path(path).write_bytes(bytes(data))


def truncate(path: str, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def footer_handles(data: bytes) -> tuple[int, int, int, int]:
    """Decodes (metaindex offset, size, index offset, size) from a table footer."""
    out = []
    pos = len(data) - table.FOOTER_SIZE
    for _ in range(4):
        value = shift = 0
        while True:
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        out.append(value)
    return out[0], out[1], out[2], out[3]


# --- fixtures ---------------------------------------------------------------------------------

BASE_SPECS = [
    VarSpec("my_global_step", "int64", (), device=0),
    VarSpec("step32", "int32", (), device=1),
    VarSpec("lr", "float32", (), device=0),
    VarSpec("flag", "bool", (), device=1),
    VarSpec("rate64", "float64", (), device=1),
    VarSpec("dense/kernel", "float32", (3, 4), device=0),
    VarSpec("vocab", "string", (3,), device=0),
    VarSpec("part", "float32", (10, 3), partitions=3, device=1),
]


@pytest.fixture(scope="module")
def base_prefix(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A sharded two-device checkpoint, written once per module. Copy it before changing it."""
    return save_checkpoint(tmp_path_factory.mktemp("base"), BASE_SPECS, sharded=True, seed=1)


@pytest.fixture(scope="module")
def base_index(base_prefix: str) -> index_file.Index:
    return index_file.read_index(index_file.index_path(base_prefix))


# --- round trips through TensorFlow -----------------------------------------------------------


def test_base_checkpoint_has_two_shards(base_prefix: str, base_index: index_file.Index) -> None:
    assert base_index.header.num_shards == 2
    assert {e.shard_id for e in base_index.entries} == {0, 1}
    part = base_index.get("part")
    assert part is not None and part.size == 0 and len(part.slices) == 3
    assert part.slices[1] == (index_file.SliceExtent(4, 3), index_file.SliceExtent(0, 3))
    assert base_index.get("no/such/variable") is None
    assert [e.name for e in base_index.variables()] == sorted(s.name for s in BASE_SPECS)


def test_reencoded_index_reads_in_tensorflow(
    base_prefix: str, base_index: index_file.Index, tmp_path: Path
) -> None:
    prefix = copy_checkpoint(base_prefix, tmp_path)
    # Entries in reverse order: encode_index sorts them.
    Path(index_file.index_path(prefix)).write_bytes(
        index_file.encode_index(reversed(items_of(base_index)))
    )
    original = tf.train.load_checkpoint(base_prefix)
    rewritten = tf.train.load_checkpoint(prefix)
    names = original.get_variable_to_shape_map()
    assert rewritten.get_variable_to_shape_map() == names
    for name in names:
        np.testing.assert_array_equal(rewritten.get_tensor(name), original.get_tensor(name))


def test_renamed_key_reads_in_tensorflow(
    base_prefix: str, base_index: index_file.Index, tmp_path: Path
) -> None:
    prefix = copy_checkpoint(base_prefix, tmp_path)
    items = [
        (b"global_step" if key == b"my_global_step" else key, value)
        for key, value in items_of(base_index)
    ]
    Path(index_file.index_path(prefix)).write_bytes(index_file.encode_index(items))

    reader = tf.train.load_checkpoint(prefix)
    names = set(reader.get_variable_to_shape_map())
    assert "global_step" in names and "my_global_step" not in names
    assert reader.get_variable_to_dtype_map()["global_step"] == tf.int64
    assert reader.get_tensor("global_step") == tf.train.load_checkpoint(base_prefix).get_tensor(
        "my_global_step"
    )
    index = index_file.read_index(index_file.index_path(prefix))
    step = index.get("global_step")
    assert step is not None
    assert data_file.read_scalar(prefix, index, step) == reader.get_tensor("global_step")


@pytest.mark.parametrize(
    ("name", "python_type"),
    [
        ("my_global_step", int),
        ("step32", int),
        ("lr", float),
        ("rate64", float),
        ("flag", bool),
    ],
)
def test_read_scalar_matches_tensorflow(
    base_prefix: str, base_index: index_file.Index, name: str, python_type: type
) -> None:
    entry = base_index.get(name)
    assert entry is not None
    value = data_file.read_scalar(base_prefix, base_index, entry)
    assert type(value) is python_type
    assert value == tf.train.load_checkpoint(base_prefix).get_tensor(name)


@pytest.mark.parametrize("name", ["dense/kernel", "vocab", "part"])
def test_read_scalar_rejects_non_scalars(
    base_prefix: str, base_index: index_file.Index, name: str
) -> None:
    entry = base_index.get(name)
    assert entry is not None
    with pytest.raises(errors.InputError, match=name):
        data_file.read_scalar(base_prefix, base_index, entry)


def test_read_tensor_bytes_refuses_a_partitioned_full_entry(
    base_prefix: str, base_index: index_file.Index
) -> None:
    entry = base_index.get("part")
    assert entry is not None
    with pytest.raises(errors.InputError, match="slice entries"):
        data_file.read_tensor_bytes(base_prefix, base_index, entry)


# --- bad input --------------------------------------------------------------------------------


def _set_first_block_type(path: str, block_type: int) -> None:
    """Marks the first data block as compressed with ``block_type``, with a valid crc."""
    data = bytearray(Path(path).read_bytes())
    meta_offset = footer_handles(bytes(data))[0]
    size = meta_offset - table.BLOCK_TRAILER_SIZE  # the only data block starts at 0
    data[size] = block_type
    crc = table.mask_crc(google_crc32c.value(bytes(data[: size + 1])))
    data[size + 1 : size + 5] = struct.pack("<I", crc)
    Path(path).write_bytes(bytes(data))


def _flip_in_index_block(path: str) -> None:
    index_offset = footer_handles(Path(path).read_bytes())[2]
    flip_byte(path, index_offset + 1)


def _write_items(items: list[tuple[bytes, bytes]]) -> Callable[[str], None]:
    return lambda path: Path(path).write_bytes(index_file.encode_index(items))


_GARBAGE = random.Random(0).randbytes(700)

# id -> (how to damage the index file, expected error)
INDEX_CASES: dict[str, tuple[Callable[[str], None], type[errors.Error]]] = {
    "empty-file": (lambda p: truncate(p, 0), errors.CorruptIndexError),
    "truncated-to-47-bytes": (lambda p: truncate(p, 47), errors.CorruptIndexError),
    "truncated-by-1-byte": (
        lambda p: truncate(p, os.path.getsize(p) - 1),
        errors.CorruptIndexError,
    ),
    "truncated-to-half": (lambda p: truncate(p, os.path.getsize(p) // 2), errors.CorruptIndexError),
    "garbage": (lambda p: Path(p).write_bytes(_GARBAGE), errors.CorruptIndexError),
    "garbage-with-table-magic": (
        lambda p: Path(p).write_bytes(_GARBAGE + struct.pack("<Q", keys.TABLE_MAGIC)),
        errors.CorruptIndexError,
    ),
    "flipped-byte-in-data-block": (lambda p: flip_byte(p, 30), errors.CorruptIndexError),
    "flipped-byte-in-index-block": (_flip_in_index_block, errors.CorruptIndexError),
    "wrong-magic": (lambda p: flip_byte(p, os.path.getsize(p) - 1), errors.CorruptIndexError),
    "snappy-compressed-block": (
        lambda p: _set_first_block_type(p, 1),
        errors.CorruptIndexError,
    ),
    "unparseable-entry": (
        _write_items([(b"", protos.encode_header(num_shards=1)), (b"w", b"\xff\xff\xff")]),
        errors.CorruptIndexError,
    ),
    "unparseable-header": (_write_items([(b"", b"\x0a\xff")]), errors.CorruptIndexError),
    "missing-index": (os.remove, errors.PathNotFoundError),
}


@pytest.mark.parametrize("case", list(INDEX_CASES), ids=list(INDEX_CASES))
def test_bad_index_raises_one_line_error(base_prefix: str, tmp_path: Path, case: str) -> None:
    damage, expected = INDEX_CASES[case]
    prefix = copy_checkpoint(base_prefix, tmp_path)
    path = index_file.index_path(prefix)
    damage(path)
    with pytest.raises(errors.Error) as info:
        index_file.read_index(path)
    assert type(info.value) is expected, repr(info.value)
    message = str(info.value)
    assert "\n" not in message
    assert os.path.basename(path) in message


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_damaged_index_never_escapes_the_error_hierarchy(
    base_prefix: str, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Any flipped byte or truncation is caught (or harmless, in the footer's padding)."""
    original = Path(index_file.index_path(base_prefix)).read_bytes()
    damaged = bytearray(original)
    if data.draw(st.booleans(), label="truncate"):
        damaged = damaged[: data.draw(st.integers(0, len(original) - 1), label="size")]
    else:
        at = data.draw(st.integers(0, len(original) - 1), label="offset")
        damaged[at] ^= data.draw(st.integers(1, 255), label="xor")
    path = tmp_path_factory.getbasetemp() / "fuzz.index"
    path.write_bytes(bytes(damaged))
    try:
        index = index_file.read_index(str(path))
    except errors.CorruptIndexError as e:
        assert "\n" not in str(e) and "fuzz.index" in str(e)
    else:
        assert index.entries == index_file.read_index(index_file.index_path(base_prefix)).entries


def _entry_on(index: index_file.Index, name: str) -> index_file.Entry:
    entry = index.get(name)
    assert entry is not None
    return entry


def _damage_shard_of(
    name: str, damage: Callable[[str, index_file.Entry], None]
) -> Callable[[str, index_file.Index], str]:
    def apply(prefix: str, index: index_file.Index) -> str:
        entry = _entry_on(index, name)
        path = index_file.data_path(prefix, entry.shard_id, index.header.num_shards)
        damage(path, entry)
        return path

    return apply


# id -> (how to damage a data shard, expected error)
SHARD_CASES: dict[str, tuple[Callable[[str, index_file.Index], str], type[errors.Error]]] = {
    "missing-data-shard": (
        _damage_shard_of("step32", lambda p, e: os.remove(p)),
        errors.MissingShardError,
    ),
    "truncated-data-shard": (
        _damage_shard_of("step32", lambda p, e: truncate(p, e.offset + 1)),
        errors.MissingShardError,
    ),
    "flipped-byte-in-float-tensor": (
        _damage_shard_of("dense/kernel", lambda p, e: flip_byte(p, e.offset + 5)),
        errors.CorruptDataError,
    ),
    "flipped-byte-in-string-tensor": (
        _damage_shard_of("vocab", lambda p, e: flip_byte(p, e.offset + e.size - 1)),
        errors.CorruptDataError,
    ),
    "flipped-byte-in-string-lengths": (
        _damage_shard_of("vocab", lambda p, e: flip_byte(p, e.offset)),
        errors.CorruptDataError,
    ),
}


@pytest.mark.parametrize("case", list(SHARD_CASES), ids=list(SHARD_CASES))
def test_bad_data_shard_raises_one_line_error(
    base_prefix: str, base_index: index_file.Index, tmp_path: Path, case: str
) -> None:
    damage, expected = SHARD_CASES[case]
    prefix = copy_checkpoint(base_prefix, tmp_path)
    index = index_file.read_index(index_file.index_path(prefix))
    bad_path = damage(prefix, index)
    with pytest.raises(errors.Error) as info:
        for entry in index.entries:
            if not entry.slices:
                data_file.read_tensor_bytes(prefix, index, entry)
    assert type(info.value) is expected, repr(info.value)
    message = str(info.value)
    assert "\n" not in message
    assert os.path.basename(bad_path) in message
    assert info.value.path == bad_path
