"""Tensor bytes in a V2 checkpoint's data shards: read them, check them, decode scalars.

An index entry (``index_file.Entry``) names a shard, an offset and a size; this module reads
those bytes and verifies them against the entry's ``crc32c`` the way TensorFlow does, so that a
damaged shard is reported before anything is built on it.

Checksums: ``BundleEntryProto.crc32c`` is MASKED (the LevelDB mask, as the block trailers), as
measured on files written by TensorFlow 2.15. For numeric and bool tensors it covers exactly
the ``size`` stored bytes. For ``string`` tensors it covers each element's length as a fixed
uint32 (uint64 above 4 GiB) rather than the stored varint, then the stored 4-byte masked length
checksum, then the string bytes; for ``variant`` tensors each element's length as a fixed
uint64, its bytes and its stored 4-byte checksum (tensorflow/core/util/tensor_bundle).
"""

from __future__ import annotations

import struct

import google_crc32c

from estimator_fix import errors
from estimator_fix.checkpoint import index_file, protos, table
from estimator_fix.storage import fs

# struct format character of each scalar dtype read_scalar supports (bfloat16 is special-cased).
_SCALAR_FORMATS: dict[int, str] = {
    protos.DT_FLOAT: "f",
    protos.DT_DOUBLE: "d",
    protos.DT_INT32: "i",
    protos.DT_UINT8: "B",
    protos.DT_INT16: "h",
    protos.DT_INT8: "b",
    protos.DT_INT64: "q",
    protos.DT_BOOL: "?",
    protos.DT_BFLOAT16: "H",
    protos.DT_UINT16: "H",
    protos.DT_HALF: "e",
    protos.DT_UINT32: "I",
    protos.DT_UINT64: "Q",
}

_UINT32_MAX = 0xFFFFFFFF  # longer strings store their length as a uint64


def _num_elements(shape: tuple[int, ...]) -> int:
    """How many elements a tensor of ``shape`` has: string and variant checksums walk each one."""
    n = 1
    for d in shape:
        n *= d
    return n


def _string_tensor_crc(data: bytes, num_elements: int, endianness: int) -> int:
    """The unmasked crc TensorFlow keeps for a string tensor's stored bytes.

    Raises:
      ValueError: the stored length prefix is malformed.
    """
    order = ">" if endianness == protos.ENDIANNESS_BIG else "<"
    crc = 0
    pos = 0
    total = 0
    for _ in range(num_elements):
        length, pos = table.get_varint(data, pos, len(data))
        total += length
        if length <= _UINT32_MAX:
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
        length, body = table.get_varint(data, pos, len(data))
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
    if dtype == protos.DT_STRING:
        crc = _string_tensor_crc(data, _num_elements(shape), endianness)
    elif dtype == protos.DT_VARIANT:
        crc = _variant_tensor_crc(data, _num_elements(shape))
    else:
        crc = google_crc32c.value(data)
    return table.mask_crc(int(crc))


def read_tensor_bytes(prefix: str, index: index_file.Index, entry: index_file.Entry) -> bytes:
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
        raise table.corrupt(
            index.path,
            f"entry {entry.name!r} names data shard {entry.shard_id} but the header says "
            f"there are {num_shards}",
        )
    path = index_file.data_path(prefix, entry.shard_id, num_shards)
    if entry.size == 0:
        return b""
    try:
        data = fs.read_range(path, entry.offset, entry.size)
    except errors.PathNotFoundError as e:
        raise errors.MissingShardError(
            f"{path}: data shard {entry.shard_id} of {num_shards} is missing (needed for "
            f"{entry.name!r}); {table.RESTORE_HINT}",
            path=path,
        ) from e
    if len(data) < entry.size:
        raise errors.MissingShardError(
            f"{path}: truncated ({fs.size(path)} bytes) but {entry.name!r} needs bytes "
            f"{entry.offset} to {entry.offset + entry.size}; {table.RESTORE_HINT}",
            path=path,
        )
    try:
        actual = tensor_crc32c(
            data, dtype=entry.dtype, shape=entry.shape, endianness=index.header.endianness
        )
    except ValueError as e:
        raise errors.CorruptDataError(
            f"{path}: the bytes of {entry.name!r} at offset {entry.offset} are malformed ({e}); "
            f"{table.RESTORE_HINT}",
            path=path,
        ) from e
    if actual != entry.crc32c:
        raise errors.CorruptDataError(
            f"{path}: the {entry.size} bytes of {entry.name!r} at offset {entry.offset} fail "
            f"their checksum (index says {entry.crc32c:#010x}, data gives {actual:#010x}); "
            f"{table.RESTORE_HINT}",
            path=path,
        )
    return data


def read_scalar(
    prefix: str, index: index_file.Index, entry: index_file.Entry
) -> int | float | bool:
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
    fmt = (">" if index.header.endianness == protos.ENDIANNESS_BIG else "<") + fmt
    if entry.size != struct.calcsize(fmt):
        raise table.corrupt(
            index.path,
            f"scalar {entry.name!r} of dtype {entry.dtype_name} has size {entry.size}, "
            f"expected {struct.calcsize(fmt)}",
        )
    data = read_tensor_bytes(prefix, index, entry)
    (value,) = struct.unpack(fmt, data)
    if entry.dtype == protos.DT_BFLOAT16:
        # bfloat16 is the high half of a float32.
        (value,) = struct.unpack("<f", struct.pack("<I", value << 16))
    return value
