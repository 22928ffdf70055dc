"""The V2 checkpoint index (``<prefix>.index``): read and write it without importing TensorFlow.

A V2 checkpoint is ``<prefix>.index`` plus data shards ``<prefix>.data-00000-of-0000N``. The
index is a LevelDB-style sorted string table (tensorflow/core/lib/io/table_builder.cc) that maps
each tensor key to a serialized ``BundleEntryProto``; the empty key ``""`` holds the
``BundleHeaderProto``. Reading it in pure Python costs milliseconds, where ``import tensorflow``
costs two seconds and 400 MB, so everything that only needs the index goes through here.

File layout (all integers little endian; ``varint`` is the protobuf base-128 varint)::

    data block*       entries, then a restart array, then its length:
                        entry   = varint shared, varint unshared, varint value_len,
                                  key[shared:] (the key delta), value
                        restart = fixed32 offset of an entry stored with shared == 0
                                  (one every 16 entries), then fixed32 count
                      each block is followed by a 5-byte trailer: a compression type byte
                      (TensorFlow writes 0, uncompressed) and the masked crc32c of the
                      block contents plus that type byte
    metaindex block   an empty block (no entries, restart array ``[0]``), with trailer
    index block       one entry per data block: a key >= every key of that block and < every
                      key of the next, mapped to the block's handle (varint offset, varint
                      size); restart interval 1; with trailer
    footer (48 bytes) metaindex handle, index handle, zero padding to 40 bytes, then the
                      fixed64 magic 0xdb4775248b80fb57

Values: ``""`` -> ``BundleHeaderProto`` (num_shards, endianness, version); every other key ->
``BundleEntryProto`` (dtype, shape, shard_id, offset, size, crc32c, slices). Partitioned
variables are stored as one entry under the full name, which lists its ``slices`` and has size
0, plus one entry per slice under a binary key: the ordered code of (0, name, rank, start and
length per dimension), see tensorflow/core/util/saved_tensor_slice_util.cc.

Checksums: ``BundleEntryProto.crc32c`` is MASKED (the LevelDB mask, as the block trailers), as
measured on files written by TensorFlow 2.15. For numeric and bool tensors it covers exactly
the ``size`` stored bytes. For ``string`` tensors it covers each element's length as a fixed
uint32 (uint64 above 4 GiB) rather than the stored varint, then the stored 4-byte masked length
checksum, then the string bytes; for ``variant`` tensors each element's length as a fixed
uint64, its bytes and its stored 4-byte checksum (tensorflow/core/util/tensor_bundle).

The protobuf messages are defined here from their field numbers, in a private descriptor pool
under a package of our own, so that importing TensorFlow in the same process never clashes.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import google_crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from estimator_fix import errors
from estimator_fix.storage import fs

# --- TensorFlow DataType enum (tensorflow/core/framework/types.proto) -------------------------

DT_INVALID = 0
DT_FLOAT = 1
DT_DOUBLE = 2
DT_INT32 = 3
DT_UINT8 = 4
DT_INT16 = 5
DT_INT8 = 6
DT_STRING = 7
DT_COMPLEX64 = 8
DT_INT64 = 9
DT_BOOL = 10
DT_BFLOAT16 = 14
DT_UINT16 = 17
DT_COMPLEX128 = 18
DT_HALF = 19
DT_RESOURCE = 20
DT_VARIANT = 21
DT_UINT32 = 22
DT_UINT64 = 23

# Names as ``tf.dtypes.as_dtype(n).name`` spells them.
DTYPE_NAMES: dict[int, str] = {
    DT_FLOAT: "float32",
    DT_DOUBLE: "float64",
    DT_INT32: "int32",
    DT_UINT8: "uint8",
    DT_INT16: "int16",
    DT_INT8: "int8",
    DT_STRING: "string",
    DT_COMPLEX64: "complex64",
    DT_INT64: "int64",
    DT_BOOL: "bool",
    DT_BFLOAT16: "bfloat16",
    DT_UINT16: "uint16",
    DT_COMPLEX128: "complex128",
    DT_HALF: "float16",
    DT_RESOURCE: "resource",
    DT_VARIANT: "variant",
    DT_UINT32: "uint32",
    DT_UINT64: "uint64",
}

# struct format character of each scalar dtype read_scalar supports (bfloat16 is special-cased).
_SCALAR_FORMATS: dict[int, str] = {
    DT_FLOAT: "f",
    DT_DOUBLE: "d",
    DT_INT32: "i",
    DT_UINT8: "B",
    DT_INT16: "h",
    DT_INT8: "b",
    DT_INT64: "q",
    DT_BOOL: "?",
    DT_BFLOAT16: "H",
    DT_UINT16: "H",
    DT_HALF: "e",
    DT_UINT32: "I",
    DT_UINT64: "Q",
}

ENDIANNESS_LITTLE = 0
ENDIANNESS_BIG = 1

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type byte + fixed32 masked crc32c
BLOCK_SIZE = 262144  # table::Options::block_size (tensorflow/core/lib/io/table_options.h)
BLOCK_RESTART_INTERVAL = 16  # table::Options::block_restart_interval
_MAX_HANDLES_SIZE = 40  # 2 * BlockHandle::kMaxEncodedLength
_COMPRESSION_NONE = 0
_COMPRESSION_SNAPPY = 1
_CRC_MASK_DELTA = 0xA282EAD8
_MASK32 = 0xFFFFFFFF

_MAGIC_BYTES = struct.pack("<Q", TABLE_MAGIC)
_RESTORE_HINT = "restore this file from the original copy"


# --- protobuf messages, defined in a private pool ---------------------------------------------

_PROTO_PACKAGE = "estimator_fix_private.bundle"


def _build_messages() -> tuple[Any, Any, Any]:
    """Builds BundleHeaderProto, BundleEntryProto, TensorShapeProto from their field numbers.

    The field numbers and types mirror tensorflow/core/protobuf/tensor_bundle.proto and the
    protos it imports (versions.proto, tensor_shape.proto, tensor_slice.proto, types.proto).
    A private pool and package keep them apart from TensorFlow's own registrations.
    """
    fdp = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(
        name="estimator_fix_private/tensor_bundle.proto", package=_PROTO_PACKAGE, syntax="proto3"
    )
    pkg = "." + _PROTO_PACKAGE

    def add_field(
        msg: Any,
        name: str,
        number: int,
        ftype: int,
        *,
        repeated: bool = False,
        type_name: str | None = None,
        oneof_index: int | None = None,
    ) -> None:
        field = msg.field.add(
            name=name,
            number=number,
            type=ftype,
            label=fdp.LABEL_REPEATED if repeated else fdp.LABEL_OPTIONAL,
        )
        if type_name is not None:
            field.type_name = type_name
        if oneof_index is not None:
            field.oneof_index = oneof_index

    data_type = f.enum_type.add(name="DataType")
    data_type.value.add(name="DT_INVALID", number=0)
    for number, name in sorted(DTYPE_NAMES.items()):
        data_type.value.add(name=f"DT_{name.upper()}", number=number)

    version = f.message_type.add(name="VersionDef")
    add_field(version, "producer", 1, fdp.TYPE_INT32)
    add_field(version, "min_consumer", 2, fdp.TYPE_INT32)
    add_field(version, "bad_consumers", 3, fdp.TYPE_INT32, repeated=True)

    shape = f.message_type.add(name="TensorShapeProto")
    dim = shape.nested_type.add(name="Dim")
    add_field(dim, "size", 1, fdp.TYPE_INT64)
    add_field(dim, "name", 2, fdp.TYPE_STRING)
    add_field(
        shape, "dim", 2, fdp.TYPE_MESSAGE, repeated=True, type_name=f"{pkg}.TensorShapeProto.Dim"
    )
    add_field(shape, "unknown_rank", 3, fdp.TYPE_BOOL)

    tslice = f.message_type.add(name="TensorSliceProto")
    extent = tslice.nested_type.add(name="Extent")
    extent.oneof_decl.add(name="has_length")
    add_field(extent, "start", 1, fdp.TYPE_INT64)
    add_field(extent, "length", 2, fdp.TYPE_INT64, oneof_index=0)
    add_field(
        tslice,
        "extent",
        1,
        fdp.TYPE_MESSAGE,
        repeated=True,
        type_name=f"{pkg}.TensorSliceProto.Extent",
    )

    header = f.message_type.add(name="BundleHeaderProto")
    endianness = header.enum_type.add(name="Endianness")
    endianness.value.add(name="LITTLE", number=ENDIANNESS_LITTLE)
    endianness.value.add(name="BIG", number=ENDIANNESS_BIG)
    add_field(header, "num_shards", 1, fdp.TYPE_INT32)
    add_field(
        header, "endianness", 2, fdp.TYPE_ENUM, type_name=f"{pkg}.BundleHeaderProto.Endianness"
    )
    add_field(header, "version", 3, fdp.TYPE_MESSAGE, type_name=f"{pkg}.VersionDef")

    entry = f.message_type.add(name="BundleEntryProto")
    add_field(entry, "dtype", 1, fdp.TYPE_ENUM, type_name=f"{pkg}.DataType")
    add_field(entry, "shape", 2, fdp.TYPE_MESSAGE, type_name=f"{pkg}.TensorShapeProto")
    add_field(entry, "shard_id", 3, fdp.TYPE_INT32)
    add_field(entry, "offset", 4, fdp.TYPE_INT64)
    add_field(entry, "size", 5, fdp.TYPE_INT64)
    add_field(entry, "crc32c", 6, fdp.TYPE_FIXED32)
    add_field(
        entry, "slices", 7, fdp.TYPE_MESSAGE, repeated=True, type_name=f"{pkg}.TensorSliceProto"
    )

    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    header_cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PROTO_PACKAGE}.BundleHeaderProto")
    )
    entry_cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PROTO_PACKAGE}.BundleEntryProto")
    )
    shape_cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PROTO_PACKAGE}.TensorShapeProto")
    )
    return header_cls, entry_cls, shape_cls


_HeaderProto, _EntryProto, _ShapeProto = _build_messages()


# --- data model ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SliceExtent:
    """One dimension of a tensor slice.

    Attributes:
      start: first index along the dimension.
      length: number of indices, or None for the whole dimension.
    """

    start: int
    length: int | None


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tensor key of the index and its ``BundleEntryProto``.

    Attributes:
      key: the raw table key.
      name: the tensor name: the key decoded as UTF-8 (undecodable bytes backslash-escaped), or
        for a binary slice key the name of the full tensor the slice belongs to.
      is_slice: True for the binary slice keys of partitioned variables.
      dtype: the TensorFlow DataType enum value.
      shape: the tensor's shape (for a slice key: the slice's shape).
      shard_id: which data shard holds the bytes.
      offset: where the bytes start in that shard.
      size: how many bytes; 0 for the full-name entry of a partitioned variable.
      crc32c: the masked crc32c TensorFlow checks the bytes against.
      slices: for the full-name entry of a partitioned variable, the slices it is stored as.
      raw_value: the serialized ``BundleEntryProto`` exactly as stored.
    """

    key: bytes
    name: str
    is_slice: bool
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int
    slices: tuple[tuple[SliceExtent, ...], ...]
    raw_value: bytes

    @property
    def dtype_name(self) -> str:
        """The dtype as ``tf.dtypes`` names it, e.g. ``'int64'``."""
        return DTYPE_NAMES.get(self.dtype, f"unknown_dtype_{self.dtype}")


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    """The ``BundleHeaderProto`` stored under the empty key.

    Attributes:
      num_shards: how many ``.data-*`` files the checkpoint has.
      endianness: 0 little endian, 1 big endian.
      producer: ``version.producer`` (TensorFlow writes 1).
      min_consumer: ``version.min_consumer``.
      bad_consumers: ``version.bad_consumers``.
      raw_value: the serialized header exactly as stored.
    """

    num_shards: int
    endianness: int
    producer: int
    min_consumer: int
    bad_consumers: tuple[int, ...]
    raw_value: bytes


@dataclasses.dataclass(frozen=True)
class Index:
    """A parsed ``.index`` file.

    Attributes:
      path: the file it was read from.
      header: its header.
      entries: every tensor entry in table (bytewise key) order, without the header key.
    """

    path: str
    header: Header
    entries: tuple[Entry, ...]

    def variables(self) -> tuple[Entry, ...]:
        """The non-slice entries: exactly what ``tf.train.list_variables`` shows."""
        return tuple(e for e in self.entries if not e.is_slice)

    def get(self, name: str) -> Entry | None:
        """The non-slice entry named ``name``, or None."""
        return self._by_name.get(name)

    @functools.cached_property
    def _by_name(self) -> dict[str, Entry]:
        return {e.name: e for e in self.entries if not e.is_slice}

    @property
    def total_bytes(self) -> int:
        """The sum of all entries' sizes: the tensor bytes the data shards hold."""
        return sum(e.size for e in self.entries)


# --- paths ------------------------------------------------------------------------------------


def index_path(prefix: str) -> str:
    """``<prefix>.index``. Does not perform I/O."""
    return f"{prefix}.index"


def data_path(prefix: str, shard_id: int, num_shards: int) -> str:
    """``<prefix>.data-<shard_id>-of-<num_shards>``, both five digits. Does not perform I/O."""
    return f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"


# --- checksums and varints --------------------------------------------------------------------


def mask_crc(crc: int) -> int:
    """LevelDB's crc mask: rotate right by 15 bits and add a constant. Does not perform I/O."""
    return ((((crc >> 15) | (crc << 17)) & _MASK32) + _CRC_MASK_DELTA) & _MASK32


def unmask_crc(masked: int) -> int:
    """Inverse of ``mask_crc``. Does not perform I/O."""
    rot = (masked - _CRC_MASK_DELTA) & _MASK32
    return ((rot >> 17) | (rot << 15)) & _MASK32


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _get_varint(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """Decodes a varint at ``pos``; returns (value, next position). Raises ValueError."""
    result = 0
    shift = 0
    while pos < limit and shift <= 63:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
    raise ValueError("bad varint")


# --- reading ----------------------------------------------------------------------------------


def _corrupt(path: str, what: str) -> errors.CorruptIndexError:
    return errors.CorruptIndexError(f"{path}: {what}; {_RESTORE_HINT}", path=path)


def _read_block(path: str, data: bytes, offset: int, size: int, what: str) -> tuple[int, int]:
    """Verifies the block at (offset, size) and its trailer; returns its content range."""
    end = offset + size
    if offset < 0 or size < 0 or end + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE:
        raise _corrupt(
            path,
            f"{what} at offset {offset} ({size} bytes) lies outside the file "
            f"({len(data)} bytes); the file is truncated or corrupt",
        )
    ctype = data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    actual = mask_crc(google_crc32c.value(data[offset : end + 1]))
    if stored != actual:
        raise _corrupt(
            path,
            f"{what} at offset {offset} fails its checksum "
            f"(stored {stored:#010x}, computed {actual:#010x})",
        )
    if ctype != _COMPRESSION_NONE:
        kind = "snappy" if ctype == _COMPRESSION_SNAPPY else "unknown"
        raise errors.CorruptIndexError(
            f"{path}: {what} at offset {offset} uses compression type {ctype} ({kind}), which "
            "this tool does not support (TensorFlow writes checkpoint indexes uncompressed)",
            path=path,
        )
    return offset, end


def _iter_block(
    path: str, data: bytes, start: int, end: int, what: str
) -> Iterator[tuple[bytes, bytes]]:
    """Yields the (key, value) pairs of block contents ``data[start:end]``, checking its layout."""
    size = end - start
    if size < 4:
        raise _corrupt(path, f"{what} at offset {start} is too short ({size} bytes)")
    (num_restarts,) = struct.unpack_from("<I", data, end - 4)
    if num_restarts < 1 or num_restarts > (size - 4) // 4:
        raise _corrupt(path, f"{what} at offset {start} has a bad restart count ({num_restarts})")
    limit = end - 4 - 4 * num_restarts  # absolute end of the entries
    restarts = struct.unpack_from(f"<{num_restarts}I", data, limit)
    entries_size = limit - start
    if (
        restarts[0] != 0
        or any(b <= a for a, b in itertools.pairwise(restarts))
        or (restarts[-1] >= entries_size and entries_size > 0)
        or (entries_size == 0 and num_restarts != 1)
    ):
        raise _corrupt(path, f"{what} at offset {start} has a bad restart array")

    restart_iter = iter(restarts)
    next_restart = start + next(restart_iter)
    pos = start
    key = b""
    try:
        while pos < limit:
            entry_pos = pos
            shared = data[pos]
            if shared < 0x80:
                pos += 1
            else:
                shared, pos = _get_varint(data, pos, limit)
            unshared = data[pos]
            if unshared < 0x80:
                pos += 1
            else:
                unshared, pos = _get_varint(data, pos, limit)
            value_len = data[pos]
            if value_len < 0x80:
                pos += 1
            else:
                value_len, pos = _get_varint(data, pos, limit)
            if entry_pos == next_restart:
                if shared:
                    raise ValueError(f"restart point at {entry_pos - start} shares key bytes")
                next_restart = start + next(restart_iter, size)
            elif entry_pos > next_restart:
                raise ValueError(f"restart point {next_restart - start} is not an entry")
            key_end = pos + unshared
            value_end = key_end + value_len
            if shared > len(key) or value_end > limit:
                raise ValueError(f"entry at {entry_pos - start} runs past the block")
            key = key[:shared] + data[pos:key_end] if shared else data[pos:key_end]
            yield key, data[key_end:value_end]
            pos = value_end
    except (ValueError, IndexError) as e:
        raise _corrupt(path, f"{what} at offset {start} is malformed ({e})") from e
    if entries_size and next_restart != start + size:
        raise _corrupt(path, f"{what} at offset {start} has a restart point past its entries")


def _decode_slice_name(key: bytes) -> str:
    """The full tensor name in a binary slice key (one starting with a 0 byte)."""
    # Ordered code (tensorflow/core/lib/strings/ordered_code.cc): the number 0 is the single
    # byte 00; a string follows with 00 escaped as 00 ff, ff escaped as ff 00, ended by 00 01.
    name = bytearray()
    pos = 1
    n = len(key)
    while pos < n:
        nul = key.find(b"\x00", pos)
        ff = key.find(b"\xff", pos)
        special = nul if ff == -1 else ff if nul == -1 else min(nul, ff)
        if special == -1 or special + 1 >= n:
            break  # malformed: no terminator; keep the best effort
        name += key[pos:special]
        pair = key[special : special + 2]
        if pair == b"\x00\x01":
            break
        if pair == b"\x00\xff":
            name.append(0x00)
        elif pair == b"\xff\x00":
            name.append(0xFF)
        else:
            break  # malformed escape; keep the best effort
        pos = special + 2
    return bytes(name).decode("utf-8", "backslashreplace")


# (dtype, shape, shard_id, offset, size, crc32c, slices)
_EntryFields = tuple[int, tuple[int, ...], int, int, int, int, tuple[tuple[SliceExtent, ...], ...]]

_INT32_LIMIT = 1 << 31
_INT64_LIMIT = 1 << 63


def _entry_fields_slow(value: bytes) -> _EntryFields:
    """Decodes a BundleEntryProto with protobuf. Raises DecodeError."""
    proto = _EntryProto.FromString(value)
    slices: tuple[tuple[SliceExtent, ...], ...] = ()
    if proto.slices:
        slices = tuple(
            tuple(
                SliceExtent(x.start, x.length if x.HasField("length") else None) for x in s.extent
            )
            for s in proto.slices
        )
    return (
        proto.dtype,
        tuple([d.size for d in proto.shape.dim]),
        proto.shard_id,
        proto.offset,
        proto.size,
        proto.crc32c,
        slices,
    )


def _entry_fields_fast(value: bytes, shapes: dict[bytes, tuple[int, ...]]) -> _EntryFields | None:
    """Decodes the common BundleEntryProto layout by hand; None when protobuf must decide.

    Creating protobuf wrapper objects for every shape dimension costs more than the rest of the
    parse, so the scalar fields are read directly and each distinct serialized shape is decoded
    once (by protobuf) and cached in ``shapes``. Anything unusual (slices, a repeated shape,
    negative numbers, unknown fields, a malformed value) returns None and goes to protobuf,
    which keeps its exact semantics.
    """
    dtype = shard_id = offset = size = crc32c = 0
    shape: tuple[int, ...] = ()
    seen_shape = False
    n = len(value)
    pos = 0
    try:
        while pos < n:
            tag = value[pos]
            pos += 1
            if tag == 0x35:  # field 6, fixed32: crc32c
                crc32c = int.from_bytes(value[pos : pos + 4], "little")
                pos += 4
                continue
            x = value[pos]
            pos += 1
            if x >= 0x80:  # a multi-byte varint (inline: a call per field costs 10% here)
                x &= 0x7F
                shift = 7
                while True:
                    b = value[pos]
                    pos += 1
                    x |= (b & 0x7F) << shift
                    if b < 0x80:
                        break
                    shift += 7
                    if shift > 63:
                        return None
            if tag == 0x08:  # field 1, varint: dtype
                dtype = x
            elif tag == 0x20:  # field 4, varint: offset
                offset = x
            elif tag == 0x28:  # field 5, varint: size
                size = x
            elif tag == 0x18:  # field 3, varint: shard_id
                shard_id = x
            elif tag == 0x12 and not seen_shape:  # field 2, length-delimited: shape
                end = pos + x
                if end > n:
                    return None
                raw_shape = value[pos:end]
                cached = shapes.get(raw_shape)
                if cached is None:
                    cached = tuple([d.size for d in _ShapeProto.FromString(raw_shape).dim])
                    shapes[raw_shape] = cached
                shape = cached
                seen_shape = True
                pos = end
            else:
                return None
    except (IndexError, DecodeError):
        return None
    if pos != n or dtype >= _INT32_LIMIT or shard_id >= _INT32_LIMIT or size >= _INT64_LIMIT:
        return None
    if offset >= _INT64_LIMIT:
        return None
    return dtype, shape, shard_id, offset, size, crc32c, ()


_new_object = object.__new__


def _parse_entry(
    path: str, key: bytes, value: bytes, shapes: dict[bytes, tuple[int, ...]]
) -> Entry:
    fields = _entry_fields_fast(value, shapes)
    if fields is None:
        try:
            fields = _entry_fields_slow(value)
        except DecodeError as e:
            raise _corrupt(path, f"the entry for {key!r} is not a valid BundleEntryProto") from e
    dtype, shape, shard_id, offset, size, crc32c, slices = fields
    if key[:1] == b"\x00":
        name, is_slice = _decode_slice_name(key), True
    else:
        name, is_slice = key.decode("utf-8", "backslashreplace"), False
    # The frozen dataclass's __init__ sets each field through object.__setattr__, which is a
    # third of the parse time of a large index; filling __dict__ in one call builds the same
    # object (tests compare it with one built by __init__).
    entry: Entry = _new_object(Entry)
    entry.__dict__.update(
        key=key,
        name=name,
        is_slice=is_slice,
        dtype=dtype,
        shape=shape,
        shard_id=shard_id,
        offset=offset,
        size=size,
        crc32c=crc32c,
        slices=slices,
        raw_value=value,
    )
    return entry


def _parse_header(path: str, value: bytes) -> Header:
    try:
        proto = _HeaderProto.FromString(value)
    except DecodeError as e:
        raise _corrupt(path, "the header entry is not a valid BundleHeaderProto") from e
    if proto.num_shards < 1:
        raise _corrupt(path, f"the header names {proto.num_shards} data shards")
    return Header(
        num_shards=proto.num_shards,
        endianness=proto.endianness,
        producer=proto.version.producer,
        min_consumer=proto.version.min_consumer,
        bad_consumers=tuple(proto.version.bad_consumers),
        raw_value=value,
    )


def iter_table(path: str, data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yields every (key, value) of a table file's bytes in order, verifying its structure.

    Args:
      path: the file the bytes came from, for error messages.
      data: the whole file.

    Raises:
      errors.CorruptIndexError: the bytes are not an intact, uncompressed table.
    """
    n = len(data)
    if n == 0:
        raise _corrupt(path, "empty file (0 bytes)")
    if n < FOOTER_SIZE:
        raise _corrupt(path, f"truncated ({n} bytes, a table footer needs {FOOTER_SIZE})")
    if data[n - 8 :] != _MAGIC_BYTES:
        raise _corrupt(
            path,
            f"not a checkpoint index (bad table magic {data[n - 8 :].hex()}, expected "
            f"{_MAGIC_BYTES.hex()}); the file is truncated, garbage or not an index",
        )
    footer = n - FOOTER_SIZE
    try:
        meta_off, pos = _get_varint(data, footer, footer + _MAX_HANDLES_SIZE)
        meta_size, pos = _get_varint(data, pos, footer + _MAX_HANDLES_SIZE)
        index_off, pos = _get_varint(data, pos, footer + _MAX_HANDLES_SIZE)
        index_size, pos = _get_varint(data, pos, footer + _MAX_HANDLES_SIZE)
    except ValueError as e:
        raise _corrupt(path, "the table footer's block handles are malformed") from e
    _read_block(path, data, meta_off, meta_size, "the metaindex block")
    istart, iend = _read_block(path, data, index_off, index_size, "the index block")

    last_key: bytes | None = None
    for index_key, handle in _iter_block(path, data, istart, iend, "the index block"):
        try:
            off, hpos = _get_varint(handle, 0, len(handle))
            size, hpos = _get_varint(handle, hpos, len(handle))
        except ValueError as e:
            raise _corrupt(path, f"the index block holds a malformed handle {handle!r}") from e
        start, end = _read_block(path, data, off, size, "data block")
        for key, value in _iter_block(path, data, start, end, "data block"):
            if last_key is not None and key <= last_key:
                raise _corrupt(path, f"keys out of order at {key!r} in the data block at {off}")
            if key > index_key:
                raise _corrupt(path, f"key {key!r} lies beyond its index entry {index_key!r}")
            last_key = key
            yield key, value


def read_index(index_path: str) -> Index:
    """Reads and verifies a checkpoint ``.index`` file.

    Checks the footer magic, every block's checksum and compression type, every block's restart
    array, key order, and that the header entry is present and parses.

    Args:
      index_path: path of the ``.index`` file (local or with a ``tf.io.gfile`` scheme).

    Returns:
      The parsed index.

    Raises:
      errors.CorruptIndexError: the file is empty, truncated, garbage or fails a checksum.
      errors.PathNotFoundError: the file does not exist.
      errors.UnreadableError: the file cannot be read.
    """
    data = fs.read_bytes(index_path)
    header: Header | None = None
    entries: list[Entry] = []
    append = entries.append
    shapes: dict[bytes, tuple[int, ...]] = {}
    for key, value in iter_table(index_path, data):
        if key:
            append(_parse_entry(index_path, key, value, shapes))
        else:
            header = _parse_header(index_path, value)
    if header is None:
        raise _corrupt(
            index_path, "no header entry (the empty key); this is not a checkpoint index"
        )
    return Index(path=index_path, header=header, entries=tuple(entries))


def _num_elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _string_tensor_crc(data: bytes, num_elements: int, endianness: int) -> int:
    """The unmasked crc TensorFlow keeps for a string tensor's stored bytes.

    Raises:
      ValueError: the stored length prefix is malformed.
    """
    order = ">" if endianness == ENDIANNESS_BIG else "<"
    crc = 0
    pos = 0
    total = 0
    for _ in range(num_elements):
        length, pos = _get_varint(data, pos, len(data))
        total += length
        if length <= _MASK32:
            crc = google_crc32c.extend(crc, struct.pack(order + "I", length))
        else:
            crc = google_crc32c.extend(crc, struct.pack(order + "Q", length))
    if pos + 4 + total != len(data):
        raise ValueError("string lengths do not add up to the entry size")
    return int(google_crc32c.extend(crc, data[pos:]))


def _variant_tensor_crc(data: bytes, num_elements: int) -> int:
    """The unmasked crc TensorFlow keeps for a variant tensor's stored bytes.

    Raises:
      ValueError: the stored layout is malformed.
    """
    crc = 0
    pos = 0
    for _ in range(num_elements):
        length, body = _get_varint(data, pos, len(data))
        crc = google_crc32c.extend(crc, struct.pack("<Q", length))
        pos = body + length + 4
        if pos > len(data):
            raise ValueError("variant element runs past the entry")
        crc = google_crc32c.extend(crc, data[body:pos])
    if pos != len(data):
        raise ValueError("variant elements do not add up to the entry size")
    return int(crc)


def tensor_crc32c(data: bytes, *, dtype: int, shape: tuple[int, ...], endianness: int = 0) -> int:
    """The masked crc32c TensorFlow stores in ``BundleEntryProto.crc32c`` for these bytes.

    Args:
      data: the tensor's bytes exactly as stored in the data shard.
      dtype: the DataType enum value.
      shape: the tensor's shape (string and variant tensors need the element count).
      endianness: the header's endianness (matters for string tensors only).

    Returns:
      The masked crc32c.

    Raises:
      ValueError: string or variant bytes whose length prefixes are malformed.
    """
    if dtype == DT_STRING:
        crc = _string_tensor_crc(data, _num_elements(shape), endianness)
    elif dtype == DT_VARIANT:
        crc = _variant_tensor_crc(data, _num_elements(shape))
    else:
        crc = google_crc32c.value(data)
    return mask_crc(int(crc))


def read_tensor_bytes(prefix: str, index: Index, entry: Entry) -> bytes:
    """Reads an entry's bytes from its data shard and verifies their checksum.

    Args:
      prefix: the checkpoint prefix (``.../model.ckpt-5``).
      index: the checkpoint's parsed index.
      entry: one of ``index.entries``; not the full-name entry of a partitioned variable.

    Returns:
      The ``entry.size`` bytes at ``entry.offset``, as stored.

    Raises:
      errors.InputError: the entry is the full-name entry of a partitioned variable, whose
        bytes live in its slice entries.
      errors.CorruptIndexError: the entry names a shard the header does not have.
      errors.MissingShardError: the data shard is missing or shorter than the entry needs.
      errors.CorruptDataError: the bytes do not match the entry's checksum.
      errors.UnreadableError: the data shard cannot be read.
    """
    num_shards = index.header.num_shards
    if entry.slices:
        raise errors.InputError(
            f"{index.path}: {entry.name!r} is a partitioned variable; its bytes are stored in "
            f"its {len(entry.slices)} slice entries, read those instead",
            path=index.path,
        )
    if not 0 <= entry.shard_id < num_shards:
        raise _corrupt(
            index.path,
            f"entry {entry.name!r} names data shard {entry.shard_id} but the header says "
            f"there are {num_shards}",
        )
    path = data_path(prefix, entry.shard_id, num_shards)
    if entry.size == 0:
        return b""
    try:
        data = fs.read_range(path, entry.offset, entry.size)
    except errors.PathNotFoundError as e:
        raise errors.MissingShardError(
            f"{path}: data shard {entry.shard_id} of {num_shards} is missing (needed for "
            f"{entry.name!r}); {_RESTORE_HINT}",
            path=path,
        ) from e
    if len(data) < entry.size:
        raise errors.MissingShardError(
            f"{path}: truncated ({fs.size(path)} bytes) but {entry.name!r} needs bytes "
            f"{entry.offset} to {entry.offset + entry.size}; {_RESTORE_HINT}",
            path=path,
        )
    try:
        actual = tensor_crc32c(
            data, dtype=entry.dtype, shape=entry.shape, endianness=index.header.endianness
        )
    except ValueError as e:
        raise errors.CorruptDataError(
            f"{path}: the bytes of {entry.name!r} at offset {entry.offset} are malformed ({e}); "
            f"{_RESTORE_HINT}",
            path=path,
        ) from e
    if actual != entry.crc32c:
        raise errors.CorruptDataError(
            f"{path}: the {entry.size} bytes of {entry.name!r} at offset {entry.offset} fail "
            f"their checksum (index says {entry.crc32c:#010x}, data gives {actual:#010x}); "
            f"{_RESTORE_HINT}",
            path=path,
        )
    return data


def read_scalar(prefix: str, index: Index, entry: Entry) -> int | float | bool:
    """Reads a numeric or bool scalar (shape ``()``), checksum verified.

    Args:
      prefix: the checkpoint prefix.
      index: the checkpoint's parsed index.
      entry: a scalar entry of ``index``.

    Returns:
      The value: ``bool`` for bool, ``int`` for integer and ``float`` for floating dtypes.

    Raises:
      errors.InputError: the entry is not a scalar or its dtype is not numeric or bool.
      errors.CorruptIndexError: the entry's size does not fit its dtype.
      errors.MissingShardError: see ``read_tensor_bytes``.
      errors.CorruptDataError: see ``read_tensor_bytes``.
    """
    fmt = _SCALAR_FORMATS.get(entry.dtype)
    if fmt is None or entry.shape != () or entry.slices:
        raise errors.InputError(
            f"{index.path}: {entry.name!r} is a {entry.dtype_name} tensor of shape "
            f"{list(entry.shape)}, not a numeric or bool scalar",
            path=index.path,
        )
    fmt = (">" if index.header.endianness == ENDIANNESS_BIG else "<") + fmt
    if entry.size != struct.calcsize(fmt):
        raise _corrupt(
            index.path,
            f"scalar {entry.name!r} of dtype {entry.dtype_name} has size {entry.size}, "
            f"expected {struct.calcsize(fmt)}",
        )
    data = read_tensor_bytes(prefix, index, entry)
    (value,) = struct.unpack(fmt, data)
    if entry.dtype == DT_BFLOAT16:
        # bfloat16 is the high half of a float32.
        (value,) = struct.unpack("<f", struct.pack("<I", value << 16))
    return value


# --- writing ----------------------------------------------------------------------------------


def encode_entry(
    *, dtype: int, shape: tuple[int, ...], shard_id: int, offset: int, size: int, crc32c: int
) -> bytes:
    """Serializes a (non-partitioned) ``BundleEntryProto`` as TensorFlow does.

    The shape is always present, even for a scalar, like TensorFlow's ``AsProto``, so that an
    entry re-encoded from a parsed one is byte-identical to what TensorFlow wrote.

    Args:
      dtype: the DataType enum value.
      shape: the tensor's shape.
      shard_id: the data shard holding the bytes.
      offset: where the bytes start in the shard.
      size: how many bytes.
      crc32c: the masked crc32c of the bytes (see ``tensor_crc32c``).

    Returns:
      The serialized proto.
    """
    proto = _EntryProto(dtype=dtype, shard_id=shard_id, offset=offset, size=size, crc32c=crc32c)
    proto.shape.SetInParent()
    for d in shape:
        proto.shape.dim.add(size=d)
    return bytes(proto.SerializeToString())


def encode_header(
    *,
    num_shards: int,
    endianness: int = ENDIANNESS_LITTLE,
    producer: int = 1,
    min_consumer: int = 0,
) -> bytes:
    """Serializes a ``BundleHeaderProto`` as TensorFlow's ``BundleWriter`` does.

    Args:
      num_shards: how many data shards the checkpoint has.
      endianness: 0 little endian, 1 big endian.
      producer: ``version.producer`` (TensorFlow writes 1).
      min_consumer: ``version.min_consumer`` (TensorFlow writes 0).

    Returns:
      The serialized proto.
    """
    proto = _HeaderProto(num_shards=num_shards, endianness=endianness)
    proto.version.SetInParent()
    proto.version.producer = producer
    proto.version.min_consumer = min_consumer
    return bytes(proto.SerializeToString())


class _BlockBuilder:
    """tensorflow/core/lib/io/block_builder.cc: prefix-compressed entries with restart points."""

    def __init__(self, restart_interval: int) -> None:
        self._interval = restart_interval
        self._buf = bytearray()
        self._restarts = [0]
        self._counter = 0
        self._last_key = b""

    def reset(self) -> None:
        self._buf = bytearray()
        self._restarts = [0]
        self._counter = 0
        self._last_key = b""

    def empty(self) -> bool:
        return not self._buf

    def size_estimate(self) -> int:
        return len(self._buf) + 4 * len(self._restarts) + 4

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self._counter < self._interval:
            last = self._last_key
            limit = min(len(last), len(key))
            while shared < limit and last[shared] == key[shared]:
                shared += 1
        else:
            self._restarts.append(len(self._buf))
            self._counter = 0
        buf = self._buf
        _put_varint(buf, shared)
        _put_varint(buf, len(key) - shared)
        _put_varint(buf, len(value))
        buf += key[shared:]
        buf += value
        self._last_key = key
        self._counter += 1

    def finish(self) -> bytes:
        out = self._buf + struct.pack(f"<{len(self._restarts)}I", *self._restarts)
        out += struct.pack("<I", len(self._restarts))
        self.reset()
        return bytes(out)


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """A short key in [start, limit), as TensorFlow's table builder picks for its index."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i >= n:
        return start  # one is a prefix of the other: do not shorten
    b = start[i]
    if b < 0xFF and b + 1 < limit[i]:
        return start[:i] + bytes([b + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """A short key >= ``key``, as TensorFlow's table builder picks for the last block."""
    for i, b in enumerate(key):
        if b != 0xFF:
            return key[:i] + bytes([b + 1])
    return key


def _block_with_trailer(contents: bytes) -> bytes:
    type_byte = bytes([_COMPRESSION_NONE])
    crc = mask_crc(google_crc32c.value(contents + type_byte))
    return contents + type_byte + struct.pack("<I", crc)


def encode_index(items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Builds ``.index`` file bytes from (key, serialized value) pairs, as TensorFlow writes them.

    Mirrors tensorflow/core/lib/io/table_builder.cc with the tensor bundle's options (block size
    262144, restart interval 16, no compression): for the same items the output is
    byte-identical to TensorFlow's.

    Args:
      items: every (key, value) pair, including the header under the empty key ``b""``; any
        order.

    Returns:
      The file's bytes.

    Raises:
      errors.InputError: two items have the same key, or there is no header item.
    """
    ordered = sorted(items, key=lambda kv: kv[0])
    if not ordered or ordered[0][0] != b"":
        raise errors.InputError("cannot encode an index without its header entry (key b'')")
    for (a, _), (b, _) in itertools.pairwise(ordered):
        if a == b:
            raise errors.InputError(f"cannot encode an index with the key {a!r} twice")

    out = bytearray()
    data_block = _BlockBuilder(BLOCK_RESTART_INTERVAL)
    index_block = _BlockBuilder(1)
    pending_handle: tuple[int, int] | None = None
    last_key = b""

    def handle_bytes(handle: tuple[int, int]) -> bytes:
        enc = bytearray()
        _put_varint(enc, handle[0])
        _put_varint(enc, handle[1])
        return bytes(enc)

    def write_block(block: _BlockBuilder) -> tuple[int, int]:
        contents = block.finish()
        handle = (len(out), len(contents))
        out.extend(_block_with_trailer(contents))
        return handle

    def flush() -> None:
        nonlocal pending_handle
        if not data_block.empty():
            pending_handle = write_block(data_block)

    for n, (key, value) in enumerate(ordered):
        if n > 0 and len(key) + len(value) >= 2 * BLOCK_SIZE:
            flush()
        if pending_handle is not None:
            index_block.add(_shortest_separator(last_key, key), handle_bytes(pending_handle))
            pending_handle = None
        last_key = key
        data_block.add(key, value)
        if data_block.size_estimate() >= BLOCK_SIZE:
            flush()
    flush()
    metaindex_handle = write_block(_BlockBuilder(BLOCK_RESTART_INTERVAL))
    if pending_handle is not None:
        index_block.add(_short_successor(last_key), handle_bytes(pending_handle))
    index_handle = write_block(index_block)
    footer = handle_bytes(metaindex_handle) + handle_bytes(index_handle)
    out += footer.ljust(_MAX_HANDLES_SIZE, b"\x00") + _MAGIC_BYTES
    return bytes(out)
