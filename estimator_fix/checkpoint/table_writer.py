"""Writing the sorted string table of a V2 checkpoint's ``.index``, byte for byte as
TensorFlow's tensorflow/core/lib/io/table_builder.cc does (``table`` describes the format and
why what we write is uncompressed)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import cramjam
import google_crc32c

from estimator_fix.checkpoint.table import (
    BLOCK_RESTART_INTERVAL,
    BLOCK_SIZE,
    BLOCK_SNAPPY,
    BLOCK_UNCOMPRESSED,
    MAGIC_BYTES,
    MAX_HANDLES_SIZE,
    mask_crc,
    put_varint,
)


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
        put_varint(buf, shared)
        put_varint(buf, len(key) - shared)
        put_varint(buf, len(value))
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


def _stored_block(contents: bytes, compression: int) -> tuple[bytes, int]:
    """The block as stored and its type byte, as TensorFlow's ``TableBuilder::WriteBlock``.

    With ``BLOCK_SNAPPY`` the block is stored compressed only when that saves at least 12.5%,
    otherwise uncompressed with type 0, as TensorFlow does.
    """
    if compression == BLOCK_SNAPPY:
        compressed = bytes(cramjam.snappy.compress_raw(contents))
        if len(compressed) < len(contents) - len(contents) // 8:
            return compressed, BLOCK_SNAPPY
    return contents, BLOCK_UNCOMPRESSED


def _with_trailer(stored: bytes, block_type: int) -> bytes:
    """The block as stored, then its trailer: the type byte and the masked crc of both."""
    type_byte = bytes([block_type])
    crc = mask_crc(google_crc32c.value(stored + type_byte))
    return stored + type_byte + struct.pack("<I", crc)


def _handle_bytes(handle: tuple[int, int]) -> bytes:
    """A BlockHandle (offset, size) as two varints, as the index block and the footer hold it."""
    enc = bytearray()
    put_varint(enc, handle[0])
    put_varint(enc, handle[1])
    return bytes(enc)


def build_table(
    ordered: Sequence[tuple[bytes, bytes]], *, compression: int = BLOCK_UNCOMPRESSED
) -> bytes:
    """Builds table file bytes from (key, value) pairs, as TensorFlow's table builder does.

    Uses the tensor bundle's options (block size 262144, restart interval 16, no compression),
    so for the same items the output is byte-identical to the ``.index`` TensorFlow writes.

    Args:
      ordered: the pairs, keys strictly increasing in bytewise order (the caller checks).
      compression: ``BLOCK_UNCOMPRESSED``, what TensorFlow and every index this tool writes
        use (see the module docstring for why), or ``BLOCK_SNAPPY``, for tests: a table like
        those other TensorFlow builds wrote (each block snappy where that saves 12.5%).

    Returns:
      The file's bytes.

    Raises:
      ValueError: ``compression`` is neither type.
    """
    if compression not in (BLOCK_UNCOMPRESSED, BLOCK_SNAPPY):
        raise ValueError(f"no table block type {compression}")
    out = bytearray()
    data_block = _BlockBuilder(BLOCK_RESTART_INTERVAL)
    index_block = _BlockBuilder(1)
    pending_handle: tuple[int, int] | None = None
    last_key = b""

    def write_block(block: _BlockBuilder) -> tuple[int, int]:
        stored, block_type = _stored_block(block.finish(), compression)
        handle = (len(out), len(stored))
        out.extend(_with_trailer(stored, block_type))
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
    out += footer.ljust(MAX_HANDLES_SIZE, b"\x00") + MAGIC_BYTES
    return bytes(out)
