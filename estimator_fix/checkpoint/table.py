"""The LevelDB-style sorted string table a V2 checkpoint's ``.index`` is stored in.

This module knows blocks, restarts, trailers and the footer, and nothing of what the keys and
values mean (that is ``index_file``). TensorFlow writes the table with
tensorflow/core/lib/io/table_builder.cc; ``build_table`` mirrors it byte for byte and
``iter_table`` reads it back, verifying checksums, restart arrays and key order.

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
                      fixed64 magic ``keys.TABLE_MAGIC``
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator, Sequence

import google_crc32c

from estimator_fix import errors
from estimator_fix.checkpoint import keys

FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type byte + fixed32 masked crc32c
BLOCK_SIZE = 262144  # table::Options::block_size (tensorflow/core/lib/io/table_options.h)
BLOCK_RESTART_INTERVAL = 16  # table::Options::block_restart_interval
_MAX_HANDLES_SIZE = 40  # 2 * BlockHandle::kMaxEncodedLength
_COMPRESSION_NONE = 0
_COMPRESSION_SNAPPY = 1
_CRC_MASK_DELTA = 0xA282EAD8
_MASK32 = 0xFFFFFFFF

_MAGIC_BYTES = struct.pack("<Q", keys.TABLE_MAGIC)

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


def _put_varint(out: bytearray, value: int) -> None:
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


def _read_block(path: str, data: bytes, offset: int, size: int, what: str) -> tuple[int, int]:
    """Verifies the block at (offset, size) and its trailer; returns its content range."""
    end = offset + size
    if offset < 0 or size < 0 or end + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE:
        raise corrupt(
            path,
            f"{what} at offset {offset} ({size} bytes) lies outside the file "
            f"({len(data)} bytes); the file is truncated or corrupt",
        )
    ctype = data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    actual = mask_crc(google_crc32c.value(data[offset : end + 1]))
    if stored != actual:
        raise corrupt(
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
        raise corrupt(path, f"{what} at offset {start} is too short ({size} bytes)")
    (num_restarts,) = struct.unpack_from("<I", data, end - 4)
    if num_restarts < 1 or num_restarts > (size - 4) // 4:
        raise corrupt(path, f"{what} at offset {start} has a bad restart count ({num_restarts})")
    limit = end - 4 - 4 * num_restarts  # absolute end of the entries
    restarts = struct.unpack_from(f"<{num_restarts}I", data, limit)
    entries_size = limit - start
    if (
        restarts[0] != 0
        or any(b <= a for a, b in itertools.pairwise(restarts))
        or (restarts[-1] >= entries_size and entries_size > 0)
        or (entries_size == 0 and num_restarts != 1)
    ):
        raise corrupt(path, f"{what} at offset {start} has a bad restart array")

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
        raise corrupt(path, f"{what} at offset {start} is malformed ({e})") from e
    if entries_size and next_restart != start + size:
        raise corrupt(path, f"{what} at offset {start} has a restart point past its entries")


def iter_table(path: str, data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yields every (key, value) of a table file's bytes in order, verifying its structure.

    Checks the footer magic, every block's checksum and compression type, every block's restart
    array and that keys are strictly increasing and within their index entries.

    Args:
      path: the file the bytes came from, for error messages.
      data: the whole file.

    Raises:
      errors.CorruptIndexError: the bytes are not an intact, uncompressed table.
    """
    n = len(data)
    if n == 0:
        raise corrupt(path, "empty file (0 bytes)")
    if n < FOOTER_SIZE:
        raise corrupt(path, f"truncated ({n} bytes, a table footer needs {FOOTER_SIZE})")
    if data[n - 8 :] != _MAGIC_BYTES:
        raise corrupt(
            path,
            f"not a checkpoint index (bad table magic {data[n - 8 :].hex()}, expected "
            f"{_MAGIC_BYTES.hex()}); the file is truncated, garbage or not an index",
        )
    footer = n - FOOTER_SIZE
    try:
        meta_off, pos = get_varint(data, footer, footer + _MAX_HANDLES_SIZE)
        meta_size, pos = get_varint(data, pos, footer + _MAX_HANDLES_SIZE)
        index_off, pos = get_varint(data, pos, footer + _MAX_HANDLES_SIZE)
        index_size, pos = get_varint(data, pos, footer + _MAX_HANDLES_SIZE)
    except ValueError as e:
        raise corrupt(path, "the table footer's block handles are malformed") from e
    _read_block(path, data, meta_off, meta_size, "the metaindex block")
    istart, iend = _read_block(path, data, index_off, index_size, "the index block")

    last_key: bytes | None = None
    for index_key, handle in _iter_block(path, data, istart, iend, "the index block"):
        try:
            off, hpos = get_varint(handle, 0, len(handle))
            size, hpos = get_varint(handle, hpos, len(handle))
        except ValueError as e:
            raise corrupt(path, f"the index block holds a malformed handle {handle!r}") from e
        start, end = _read_block(path, data, off, size, "data block")
        for key, value in _iter_block(path, data, start, end, "data block"):
            if last_key is not None and key <= last_key:
                raise corrupt(path, f"keys out of order at {key!r} in the data block at {off}")
            if key > index_key:
                raise corrupt(path, f"key {key!r} lies beyond its index entry {index_key!r}")
            last_key = key
            yield key, value


# --- writing ----------------------------------------------------------------------------------


class _BlockBuilder:
    """tensorflow/core/lib/io/block_builder.cc: prefix-compressed entries with restart points."""

    def __init__(self, restart_interval: int) -> None:
        self._interval = restart_interval
        self._buf = bytearray()
        self._restarts = [0]
        self._counter = 0
        self._last_key = b""

    def reset(self) -> None:
        """Empties the builder so that the next block starts afresh."""
        self._buf = bytearray()
        self._restarts = [0]
        self._counter = 0
        self._last_key = b""

    def empty(self) -> bool:
        """Whether no entry was added since the last ``finish``."""
        return not self._buf

    def size_estimate(self) -> int:
        """The finished block's size: entries, restart array and its count."""
        return len(self._buf) + 4 * len(self._restarts) + 4

    def add(self, key: bytes, value: bytes) -> None:
        """Appends an entry; ``key`` must sort after the previous one."""
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
        """The block's contents (without trailer); resets the builder."""
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
    """``contents`` followed by its trailer: type byte 0 (uncompressed) and the masked crc."""
    type_byte = bytes([_COMPRESSION_NONE])
    crc = mask_crc(google_crc32c.value(contents + type_byte))
    return contents + type_byte + struct.pack("<I", crc)


def _handle_bytes(handle: tuple[int, int]) -> bytes:
    """A BlockHandle (offset, size) as two varints, as the index block and the footer hold it."""
    enc = bytearray()
    _put_varint(enc, handle[0])
    _put_varint(enc, handle[1])
    return bytes(enc)


def build_table(ordered: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Builds table file bytes from (key, value) pairs, as TensorFlow's table builder does.

    Uses the tensor bundle's options (block size 262144, restart interval 16, no compression),
    so for the same items the output is byte-identical to the ``.index`` TensorFlow writes.

    Args:
      ordered: the pairs, keys strictly increasing in bytewise order (the caller checks).

    Returns:
      The file's bytes.
    """
    out = bytearray()
    data_block = _BlockBuilder(BLOCK_RESTART_INTERVAL)
    index_block = _BlockBuilder(1)
    pending_handle: tuple[int, int] | None = None
    last_key = b""

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
            index_block.add(_shortest_separator(last_key, key), _handle_bytes(pending_handle))
            pending_handle = None
        last_key = key
        data_block.add(key, value)
        if data_block.size_estimate() >= BLOCK_SIZE:
            flush()
    flush()
    metaindex_handle = write_block(_BlockBuilder(BLOCK_RESTART_INTERVAL))
    if pending_handle is not None:
        index_block.add(_short_successor(last_key), _handle_bytes(pending_handle))
    index_handle = write_block(index_block)
    footer = _handle_bytes(metaindex_handle) + _handle_bytes(index_handle)
    out += footer.ljust(_MAX_HANDLES_SIZE, b"\x00") + _MAGIC_BYTES
    return bytes(out)
