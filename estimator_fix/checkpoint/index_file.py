"""The V2 checkpoint index (``<prefix>.index``): read and write it without importing TensorFlow.

A V2 checkpoint is ``<prefix>.index`` plus data shards ``<prefix>.data-00000-of-0000N``. The
index is a sorted string table (``table``) that maps each tensor key to a serialized
``BundleEntryProto``; the empty key ``""`` holds the ``BundleHeaderProto`` (``protos``).
Reading it in pure Python costs milliseconds, where ``import tensorflow`` costs two seconds and
400 MB, so everything that only needs the index goes through here; ``data_file`` reads the bytes
an entry points at.

Values: ``""`` -> ``BundleHeaderProto`` (num_shards, endianness, version); every other key ->
``BundleEntryProto`` (dtype, shape, shard_id, offset, size, crc32c, slices). Partitioned
variables are stored as one entry under the full name, which lists its ``slices`` and has size
0, plus one entry per slice under a binary key: the ordered code of (0, name, rank, start and
length per dimension), see tensorflow/core/util/saved_tensor_slice_util.cc.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterable

from google.protobuf.message import DecodeError

from estimator_fix import errors
from estimator_fix.checkpoint import keys, protos, table, table_writer
from estimator_fix.storage import fs


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
        return protos.DTYPE_NAMES.get(self.dtype, f"unknown_dtype_{self.dtype}")


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
        """Non-slice entries by name, built once, on the first ``get``."""
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


# --- reading ----------------------------------------------------------------------------------


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


def _entry_fields_slow(value: bytes) -> _EntryFields:
    """Decodes a BundleEntryProto with protobuf. Raises DecodeError."""
    proto = protos.EntryProto.FromString(value)
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
                    cached = tuple([d.size for d in protos.ShapeProto.FromString(raw_shape).dim])
                    shapes[raw_shape] = cached
                shape = cached
                seen_shape = True
                pos = end
            else:
                return None
    except (IndexError, DecodeError):
        return None
    if pos != n or dtype >= _INT32_LIMIT or shard_id >= _INT32_LIMIT or size > keys.INT64_MAX:
        return None
    if offset > keys.INT64_MAX:
        return None
    return dtype, shape, shard_id, offset, size, crc32c, ()


_new_object = object.__new__


def _parse_entry(
    path: str, key: bytes, value: bytes, shapes: dict[bytes, tuple[int, ...]]
) -> Entry:
    """One table item as an ``Entry``; ``shapes`` caches decoded shapes across the index.

    Raises:
      errors.CorruptIndexError: ``value`` is not a valid ``BundleEntryProto``.
    """
    fields = _entry_fields_fast(value, shapes)
    if fields is None:
        try:
            fields = _entry_fields_slow(value)
        except DecodeError as e:
            raise table.corrupt(
                path, f"the entry for {key!r} is not a valid BundleEntryProto"
            ) from e
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
    """The header item as a ``Header``.

    Raises:
      errors.CorruptIndexError: ``value`` does not parse or names fewer than one data shard,
        which no checkpoint has.
    """
    try:
        proto = protos.HeaderProto.FromString(value)
    except DecodeError as e:
        raise table.corrupt(path, "the header entry is not a valid BundleHeaderProto") from e
    if proto.num_shards < 1:
        raise table.corrupt(path, f"the header names {proto.num_shards} data shards")
    return Header(
        num_shards=proto.num_shards,
        endianness=proto.endianness,
        producer=proto.version.producer,
        min_consumer=proto.version.min_consumer,
        bad_consumers=tuple(proto.version.bad_consumers),
        raw_value=value,
    )


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
    for key, value in table.iter_table(index_path, data):
        if key:
            append(_parse_entry(index_path, key, value, shapes))
        else:
            header = _parse_header(index_path, value)
    if header is None:
        raise table.corrupt(
            index_path, "no header entry (the empty key); this is not a checkpoint index"
        )
    return Index(path=index_path, header=header, entries=tuple(entries))


# --- writing ----------------------------------------------------------------------------------


def encode_index(items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Builds ``.index`` file bytes from (key, serialized value) pairs, as TensorFlow writes them.

    For the same items the output is byte-identical to TensorFlow's (see
    ``table_writer.build_table``).

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
    return table_writer.build_table(ordered)
