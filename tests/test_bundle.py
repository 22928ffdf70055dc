"""Tests of the checkpoint index, table and data file modules on checkpoints written by TF 2.15.

Two data shards come from ``Saver(sharded=True)`` with variables placed on two devices
(``/cpu:0`` and ``/cpu:1``) in a session configured with ``device_count={"CPU": 2}``: the sharded
saver writes one shard per distinct variable device, then merges the indexes.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from estimator_fix import errors
from estimator_fix.checkpoint import data_file, index_file, keys, protos, table

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- helpers ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VarSpec:
    """One variable to save: its name, dtype name, shape, partition count (0: none), device."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    partitions: int = 0
    device: int = 0


def _random_value(spec: VarSpec, rng: np.random.Generator) -> np.ndarray:
    shape = spec.shape
    if spec.dtype in ("float16", "float32", "float64"):
        return rng.standard_normal(shape).astype(spec.dtype)
    if spec.dtype in ("int32", "int64"):
        return rng.integers(-(2**31), 2**31, shape).astype(spec.dtype)
    if spec.dtype == "uint8":
        return rng.integers(0, 256, shape).astype(np.uint8)
    if spec.dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    assert spec.dtype == "string"
    # Lengths past 127 need two-byte varints in the stored length prefix.
    n = int(np.prod(shape, dtype=np.int64))
    items = [rng.bytes(int(rng.choice([0, 1, 5, 130, 300]))) for _ in range(n)]
    return np.array([*items, b""], dtype=object)[:n].reshape(shape)


def save_checkpoint(directory: Path, specs: list[VarSpec], *, sharded: bool, seed: int) -> str:
    """Saves ``specs`` with a graph-mode ``tf.compat.v1.train.Saver``; returns the prefix."""
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        for spec in specs:
            dtype = tf.as_dtype(spec.dtype)
            with tf.device(f"/cpu:{spec.device}"):
                if spec.partitions:
                    init = (
                        tf.compat.v1.random_uniform_initializer(-1.0, 1.0, seed=seed)
                        if dtype.is_floating
                        else tf.compat.v1.constant_initializer(7)
                    )
                    tf.compat.v1.get_variable(
                        spec.name,
                        shape=spec.shape,
                        dtype=dtype,
                        initializer=init,
                        partitioner=tf.compat.v1.fixed_size_partitioner(spec.partitions),
                    )
                else:
                    value = tf.constant(_random_value(spec, rng), dtype=dtype)
                    tf.compat.v1.get_variable(spec.name, initializer=value)
        saver = tf.compat.v1.train.Saver(sharded=sharded)
        config = tf.compat.v1.ConfigProto(device_count={"CPU": 2})
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return str(saver.save(sess, str(directory / "model.ckpt"), global_step=5))


def copy_checkpoint(prefix: str, dest_dir: Path) -> str:
    """Copies a checkpoint's index and data files into ``dest_dir``; returns the new prefix."""
    src_dir, base = os.path.split(prefix)
    for name in os.listdir(src_dir):
        if name.startswith(base + "."):
            shutil.copy(os.path.join(src_dir, name), dest_dir / name)
    return str(dest_dir / base)


def items_of(index: index_file.Index) -> list[tuple[bytes, bytes]]:
    return [(b"", index.header.raw_value)] + [(e.key, e.raw_value) for e in index.entries]


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


def ordered_code_string(raw: bytes) -> bytes:
    """Escapes a string as OrderedCode::WriteString does, without its 00 01 terminator."""
    escapes = {0x00: b"\x00\xff", 0xFF: b"\xff\x00"}
    return b"".join(escapes.get(b, bytes([b])) for b in raw)


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


# --- property test ----------------------------------------------------------------------------

_SEGMENTS = ["dense", "kernel", "bias", "layer_1", "w", "Adam", "global_step", "a.b", "x-y", "B9"]
_PLAIN_DTYPES = ["float32", "float64", "int32", "int64", "bool", "string", "uint8", "float16"]


def _drop_nested_names(names: list[str]) -> list[str]:
    """Keeps names that are neither a scope of nor inside another kept name ("w", "w/b")."""
    kept: list[str] = []
    for name in names:
        if not any(name.startswith(k + "/") or k.startswith(name + "/") for k in kept):
            kept.append(name)
    return kept


@st.composite
def variable_sets(draw: st.DrawFn) -> tuple[list[VarSpec], bool]:
    names = draw(
        st.lists(
            st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=3).map("/".join),
            min_size=1,
            max_size=7,
            unique=True,
        ).map(_drop_nested_names)
    )
    specs = []
    for name in names:
        device = draw(st.integers(0, 1))
        if draw(st.integers(0, 4)) == 0:
            partitions = draw(st.integers(2, 3))
            dim0 = draw(st.integers(partitions, 6))
            rest = draw(st.lists(st.integers(1, 3), max_size=1))
            dtype = draw(st.sampled_from(["float32", "float64", "int64"]))
            specs.append(VarSpec(name, dtype, (dim0, *rest), partitions, device))
        else:
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
            specs.append(VarSpec(name, draw(st.sampled_from(_PLAIN_DTYPES)), shape, 0, device))
    return specs, draw(st.booleans())


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=variable_sets(), seed=st.integers(0, 2**16))
def test_index_matches_tensorflow(
    case: tuple[list[VarSpec], bool], seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    specs, sharded = case
    prefix = save_checkpoint(tmp_path_factory.mktemp("prop"), specs, sharded=sharded, seed=seed)
    index = index_file.read_index(index_file.index_path(prefix))
    reader = tf.train.load_checkpoint(prefix)

    # Shards: sharded saves get one per distinct device, plain saves exactly one.
    expected_shards = len({s.device for s in specs}) if sharded else 1
    event(f"data shards: {expected_shards}")
    event(f"partitioned variables: {sum(1 for s in specs if s.partitions)}")
    assert index.header.num_shards == expected_shards
    for shard in range(expected_shards):
        assert os.path.exists(index_file.data_path(prefix, shard, expected_shards))

    # What the user sees: names, shapes, dtypes, exactly as TensorFlow lists them.
    ours = sorted((e.name, list(e.shape)) for e in index.variables())
    assert ours == sorted((n, list(s)) for n, s in tf.train.list_variables(prefix))
    assert {e.name for e in index.variables()} == {s.name for s in specs}
    tf_dtypes = {name: dtype.name for name, dtype in reader.get_variable_to_dtype_map().items()}
    assert {e.name: e.dtype_name for e in index.variables()} == tf_dtypes
    assert index.total_bytes == sum(e.size for e in index.entries)

    by_name = {s.name: s for s in specs}
    for entry in index.entries:
        # The fast path builds the same frozen dataclass as its __init__ and as protobuf.
        rebuilt = index_file.Entry(
            **{f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)}
        )
        assert entry == rebuilt and hash(entry) == hash(rebuilt)
        slow = index_file._entry_fields_slow(entry.raw_value)
        assert slow == (entry.dtype, entry.shape, entry.shard_id, entry.offset, entry.size,
                        entry.crc32c, entry.slices)  # fmt: skip
        spec = by_name[entry.name]
        if entry.slices:
            assert entry.size == 0 and len(entry.slices) == spec.partitions
            slice_keys = [e for e in index.entries if e.is_slice and e.name == entry.name]
            assert len(slice_keys) == spec.partitions
            continue
        assert (
            protos.encode_entry(
                dtype=entry.dtype,
                shape=entry.shape,
                shard_id=entry.shard_id,
                offset=entry.offset,
                size=entry.size,
                crc32c=entry.crc32c,
            )
            == entry.raw_value
        )
        data = data_file.read_tensor_bytes(prefix, index, entry)  # verifies the checksum
        if not entry.is_slice and entry.dtype != protos.DT_STRING:
            assert data == reader.get_tensor(entry.name).tobytes()

    # Writing the parsed items back reproduces TensorFlow's file byte for byte.
    original = Path(index_file.index_path(prefix)).read_bytes()
    assert index_file.encode_index(items_of(index)) == original
    assert protos.encode_header(num_shards=expected_shards) == index.header.raw_value


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
