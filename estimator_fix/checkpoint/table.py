"""The LevelDB-style sorted string table a V2 checkpoint's ``.index`` is stored in.

This module knows blocks, restarts, trailers and the footer, and nothing of what the keys and
values mean (that is ``index_file``). TensorFlow writes the table with
tensorflow/core/lib/io/table_builder.cc; ``table_writer.build_table`` mirrors it byte for
byte and ``iter_table`` reads it back, verifying checksums, restart arrays and key order.

File layout (all integers little endian; ``varint`` is the protobuf base-128 varint)::

    data block*       entries, then a restart array, then its length:
                        entry   = varint shared, varint unshared, varint value_len,
                                  key[shared:] (the key delta), value
                        restart = fixed32 offset of an entry stored with shared == 0
                                  (one every 16 entries), then fixed32 count
                      each block is followed by a 5-byte trailer: a compression type byte
                      and the masked crc32c of the block as stored plus that type byte
    metaindex block   an empty block (no entries, restart array ``[0]``), with trailer
    index block       one entry per data block: a key >= every key of that block and < every
                      key of the next, mapped to the block's handle (varint offset, varint
                      size of the block as stored); restart interval 1; with trailer
    footer (48 bytes) metaindex handle, index handle, zero padding to 40 bytes, then the
                      fixed64 magic ``keys.TABLE_MAGIC``

Compression. TensorFlow's table format defines two block types (table_options.h):
``BLOCK_UNCOMPRESSED`` (0) and ``BLOCK_SNAPPY`` (1, raw snappy, not the framed format). Its
table builder compresses a block only when snappy saves at least 12.5%, so one file can mix
both types, and any block (data, metaindex, index) may be either. Its reader (format.cc
``ReadBlock``) first checks the trailer crc, which covers the bytes as stored (compressed) plus
the type byte, exactly as in LevelDB, then decompresses; any other type byte is "bad block
type". Every open-source TensorFlow since 1.2 writes checkpoint indexes uncompressed (both
``BundleWriter`` and ``MergeBundles`` force ``kNoCompression``), but files from other builds
use snappy for their data blocks, and TensorFlow 2.15 reads them, so ``iter_table`` does too
(with ``cramjam``). Type bytes 2-7 and 0x40 are other LevelDB-family tables' codecs (RocksDB's
zlib, bzip2, lz4, lz4hc, xpress, zstd, old zstd): no TensorFlow writes them and TensorFlow 2.15
refuses them in an ``.index`` ("bad block type", tested), and so does ``iter_table``, naming the
file and the type.

What we write. ``table_writer.build_table`` always writes type 0, whatever the source used: the
entries are what matters, and they are copied byte for byte either way. Type 0 is what
TensorFlow itself writes, so a rewritten index is byte-identical to TensorFlow's for the same
entries (the tests compare the two), and every TensorFlow reads it, including builds without
snappy, on which a snappy block fails as "corrupted compressed block contents". An index is a
few kilobytes; compressing it would save next to nothing, and the data shards, which hold the
tensors, are never compressed. (``compression=BLOCK_SNAPPY`` exists for tests that need a table
like the ones other builds wrote.)
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator

import cramjam
import google_crc32c

from estimator_fix import errors
from estimator_fix.checkpoint import keys

FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type byte + fixed32 masked crc32c
BLOCK_SIZE = 262144  # table::Options::block_size (tensorflow/core/lib/io/table_options.h)
BLOCK_RESTART_INTERVAL = 16  # table::Options::block_restart_interval
MAX_HANDLES_SIZE = 40  # 2 * BlockHandle::kMaxEncodedLength
BLOCK_UNCOMPRESSED = 0  # table::kNoCompression
BLOCK_SNAPPY = 1  # table::kSnappyCompression: raw snappy
#: Type bytes TensorFlow's table format does not define, by the codec other LevelDB-family
#: tables (RocksDB's CompressionType) mean by them. TensorFlow 2.15 refuses every one.
FOREIGN_BLOCK_TYPES = {
    2: "zlib",
    3: "bzip2",
    4: "lz4",
    5: "lz4hc",
    6: "xpress",
    7: "zstd",
    0x40: "zstd, pre-0.8 format",
}
# Snappy's densest element is a 3-byte copy of 64 bytes, so no n bytes of raw snappy decode to
# more than 64/3 * n: a larger claimed length is corrupt, and is refused before allocating it.
_SNAPPY_MAX_EXPANSION = 22
_CRC_MASK_DELTA = 0xA282EAD8
_MASK32 = 0xFFFFFFFF

MAGIC_BYTES = struct.pack("<Q", keys.TABLE_MAGIC)

#: What every error about a damaged checkpoint file tells the user to do.
RESTORE_HINT = "restore this file from the original copy"


def corrupt(path: str, what: str) -> errors.CorruptIndexError:
    """The error for a damaged ``.index`` file: ``what`` is wrong, and how to recover."""
    return errors.CorruptIndexError(f"{path}: {what}; {RESTORE_HINT}", path=path)


# --- checksums and varints --------------------------------------------------------------------


def mask_crc(crc: int) -> int:
    """LevelDB's crc mask: rotate right by 15 bits and add a constant. Does not perform I/O."""
    return ((((crc >> 15) | (crc << 17)) & _MASK32) + _CRC_MASK_DELTA) & _MASK32


def unmask_crc(masked: int) -> int:
    """Inverse of ``mask_crc``. Does not perform I/O."""
    rot = (masked - _CRC_MASK_DELTA) & _MASK32
    return ((rot >> 17) | (rot << 15)) & _MASK32


def put_varint(out: bytearray, value: int) -> None:
    """Appends ``value`` (non-negative) to ``out`` as a base-128 varint."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def get_varint(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """Decodes a varint at ``pos``, not reading at or past ``limit``.

    Returns:
      (value, position after the varint).

    Raises:
      ValueError: the varint runs past ``limit`` or is longer than 64 bits.
    """
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


def _checked_type(path: str, data: bytes, offset: int, size: int, what: str) -> int:
    """Checks that the block at (offset, size) lies in the file and passes its crc; its type.

    The crc covers the block as stored (compressed or not) and the type byte, as in LevelDB and
    TensorFlow's ``ReadBlock``, so it is checked before anything is decompressed.

    Raises:
      errors.CorruptIndexError: the block lies outside the file or fails its checksum.
    """
    end = offset + size
    if offset < 0 or size < 0 or end + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE:
        raise corrupt(
            path,
            f"{what} at offset {offset} ({size} bytes) lies outside the file "
            f"({len(data)} bytes); the file is truncated or corrupt",
        )
    (stored,) = struct.unpack_from("<I", data, end + 1)
    actual = mask_crc(google_crc32c.value(data[offset : end + 1]))
    if stored != actual:
        raise corrupt(
            path,
            f"{what} at offset {offset} fails its checksum "
            f"(stored {stored:#010x}, computed {actual:#010x})",
        )
    return data[end]


def _read_block(
    path: str, data: bytes, offset: int, size: int, what: str
) -> tuple[bytes, int, int, str]:
    """Verifies the block at (offset, size) and its trailer, decompressing it if it is snappy.

    Returns:
      (buffer, start, end, where): the block's contents are ``buffer[start:end]``; ``buffer`` is
      ``data`` itself for an uncompressed block (no copy), the decompressed bytes otherwise.
      ``where`` names the block for messages.

    Raises:
      errors.CorruptIndexError: the block lies outside the file, fails its checksum, has a type
        TensorFlow does not read, or is not valid snappy.
    """
    ctype = _checked_type(path, data, offset, size, what)
    if ctype == BLOCK_UNCOMPRESSED:
        return data, offset, offset + size, f"{what} at offset {offset}"
    if ctype == BLOCK_SNAPPY:
        contents = _snappy_block(path, data[offset : offset + size], f"{what} at offset {offset}")
        return contents, 0, len(contents), f"{what} at offset {offset} (snappy)"
    codec = FOREIGN_BLOCK_TYPES.get(ctype)
    kind = f"{codec} in RocksDB's numbering" if codec else "undefined"
    raise corrupt(
        path,
        f"{what} at offset {offset} has compression type {ctype} ({kind}); TensorFlow's table "
        "format defines only 0 (uncompressed) and 1 (snappy), and TensorFlow refuses this block "
        "too (bad block type)",
    )


def _snappy_block(path: str, compressed: bytes, where: str) -> bytes:
    """The raw-snappy block ``compressed`` decompressed, as TensorFlow's ``ReadBlock`` does.

    Raises:
      errors.CorruptIndexError: the bytes are not valid raw snappy.
    """
    try:
        claimed = cramjam.snappy.decompress_raw_len(compressed)
        if claimed > _SNAPPY_MAX_EXPANSION * len(compressed):
            raise corrupt(
                path,
                f"{where} claims {claimed} bytes uncompressed, more than snappy can encode in "
                f"{len(compressed)} (corrupted compressed block contents)",
            )
        contents = bytes(cramjam.snappy.decompress_raw(compressed))
    except cramjam.DecompressionError as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise corrupt(
            path, f"{where} is not valid snappy (corrupted compressed block contents: {reason})"
        ) from e
    if len(contents) != claimed:  # the decoder checks this; a mismatch is corruption all the same
        raise corrupt(
            path, f"{where} decompresses to {len(contents)} bytes where it claims {claimed}"
        )
    return contents


def _iter_block(
    path: str, data: bytes, start: int, end: int, where: str
) -> Iterator[tuple[bytes, bytes]]:
    """Yields the (key, value) pairs of block contents ``data[start:end]``, checking its layout.

    ``where`` names the block in messages (``_read_block`` returns it).
    """
    size = end - start
    if size < 4:
        raise corrupt(path, f"{where} is too short ({size} bytes)")
    (num_restarts,) = struct.unpack_from("<I", data, end - 4)
    if num_restarts < 1 or num_restarts > (size - 4) // 4:
        raise corrupt(path, f"{where} has a bad restart count ({num_restarts})")
    limit = end - 4 - 4 * num_restarts  # absolute end of the entries
    restarts = struct.unpack_from(f"<{num_restarts}I", data, limit)
    entries_size = limit - start
    if (
        restarts[0] != 0
        or any(b <= a for a, b in itertools.pairwise(restarts))
        or (restarts[-1] >= entries_size and entries_size > 0)
        or (entries_size == 0 and num_restarts != 1)
    ):
        raise corrupt(path, f"{where} has a bad restart array")

    restart_iter = iter(restarts)
    next_restart = start + next(restart_iter)
    pos = start
    key = b""
    try:
        while pos < limit:
            entry_pos = pos
            # One-byte varints, by far the most common, are decoded without a call.
            shared = data[pos]
            if shared < 0x80:
                pos += 1
            else:
                shared, pos = get_varint(data, pos, limit)
            unshared = data[pos]
            if unshared < 0x80:
                pos += 1
            else:
                unshared, pos = get_varint(data, pos, limit)
            value_len = data[pos]
            if value_len < 0x80:
                pos += 1
            else:
                value_len, pos = get_varint(data, pos, limit)
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
        raise corrupt(path, f"{where} is malformed ({e})") from e
    if entries_size and next_restart != start + size:
        raise corrupt(path, f"{where} has a restart point past its entries")


def _footer(path: str, data: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    """The (offset, size) handles of the metaindex and index blocks, after checking the magic.

    Raises:
      errors.CorruptIndexError: the file is too short, has no table magic or a bad footer.
    """
    n = len(data)
    if n == 0:
        raise corrupt(path, "empty file (0 bytes)")
    if n < FOOTER_SIZE:
        raise corrupt(path, f"truncated ({n} bytes, a table footer needs {FOOTER_SIZE})")
    if data[n - 8 :] != MAGIC_BYTES:
        raise corrupt(
            path,
            f"not a checkpoint index (bad table magic {data[n - 8 :].hex()}, expected "
            f"{MAGIC_BYTES.hex()}); the file is truncated, garbage or not an index",
        )
    footer = n - FOOTER_SIZE
    try:
        meta_off, pos = get_varint(data, footer, footer + MAX_HANDLES_SIZE)
        meta_size, pos = get_varint(data, pos, footer + MAX_HANDLES_SIZE)
        index_off, pos = get_varint(data, pos, footer + MAX_HANDLES_SIZE)
        index_size, pos = get_varint(data, pos, footer + MAX_HANDLES_SIZE)
    except ValueError as e:
        raise corrupt(path, "the table footer's block handles are malformed") from e
    return (meta_off, meta_size), (index_off, index_size)


def _data_handles(
    path: str, data: bytes, index_handle: tuple[int, int]
) -> Iterator[tuple[bytes, int, int]]:
    """Yields (index key, offset, size) for every data block the index block lists.

    Raises:
      errors.CorruptIndexError: the index block is damaged or holds a malformed handle.
    """
    ibuf, istart, iend, iwhere = _read_block(path, data, *index_handle, "the index block")
    for index_key, handle in _iter_block(path, ibuf, istart, iend, iwhere):
        try:
            off, hpos = get_varint(handle, 0, len(handle))
            size, hpos = get_varint(handle, hpos, len(handle))
        except ValueError as e:
            raise corrupt(path, f"the index block holds a malformed handle {handle!r}") from e
        yield index_key, off, size


def iter_table(path: str, data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yields every (key, value) of a table file's bytes in order, verifying its structure.

    Checks the footer magic, every block's checksum and compression type (decompressing snappy
    blocks), every block's restart array and that keys are strictly increasing and within their
    index entries.

    Args:
      path: the file the bytes came from, for error messages.
      data: the whole file.

    Raises:
      errors.CorruptIndexError: the bytes are not an intact table TensorFlow reads: damaged,
        not valid snappy, or with a block type other than 0 (uncompressed) or 1 (snappy).
    """
    meta_handle, index_handle = _footer(path, data)
    _read_block(path, data, *meta_handle, "the metaindex block")
    last_key: bytes | None = None
    for index_key, off, size in _data_handles(path, data, index_handle):
        buf, start, end, where = _read_block(path, data, off, size, "data block")
        for key, value in _iter_block(path, buf, start, end, where):
            if last_key is not None and key <= last_key:
                raise corrupt(path, f"keys out of order at {key!r} in the data block at {off}")
            if key > index_key:
                raise corrupt(path, f"key {key!r} lies beyond its index entry {index_key!r}")
            last_key = key
            yield key, value


def block_handles(path: str, data: bytes) -> tuple[tuple[int, int, int], ...]:
    """(offset, size as stored, compression type byte) of every block, in file order.

    Data blocks first, then the metaindex and the index block. Checks every block's bounds and
    crc, not its type: a diagnostic view of how a table is stored (which blocks are snappy).

    Raises:
      errors.CorruptIndexError: the footer, the index block or a block's crc is damaged.
    """
    meta_handle, index_handle = _footer(path, data)
    handles = [(off, size) for _, off, size in _data_handles(path, data, index_handle)]
    handles += [meta_handle, index_handle]
    return tuple(
        (off, size, _checked_type(path, data, off, size, "block")) for off, size in handles
    )
