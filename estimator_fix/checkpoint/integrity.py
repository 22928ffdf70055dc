"""The deep check: every tensor's bytes against the crc32c its index entry records.

``scan`` checks that data shards exist and are long enough; only reading the bytes finds a
flipped byte inside a kernel, which TensorFlow otherwise reports at the export's restore, after
a repair was committed. The check reads each data shard once, in offset order, in chunks (a
tensor of several GB is never held in memory), and needs no TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import google_crc32c

from estimator_fix import errors
from estimator_fix.checkpoint import data_file, index_file, protos, table
from estimator_fix.storage import fs

_CHUNK = 8 << 20  # bytes read at a time


@dataclasses.dataclass(frozen=True)
class Checked:
    """What the deep check read: tensors and bytes (slices of partitioned variables counted)."""

    tensors: int
    bytes: int


def check_tensors(
    prefix: str, index: index_file.Index, names: Iterable[str] | None = None
) -> Checked:
    """Verifies the crc32c of every tensor of ``index`` (or of those named ``names``).

    Args:
      prefix: the checkpoint prefix the index belongs to.
      index: its parsed index.
      names: tensor names to check (a partitioned variable's name checks its slices); all
        when None.

    Returns:
      How many tensors and bytes were checked.

    Raises:
      errors.CorruptDataError: a tensor's bytes do not match their checksum (the message
        names the shard, the tensor and the offset).
      errors.MissingShardError: a data shard is missing or shorter than its entries need.
      errors.UnreadableError: a data shard cannot be read.
    """
    wanted = None if names is None else set(names)
    entries = [
        e for e in index.entries if e.size and not e.slices and (wanted is None or e.name in wanted)
    ]
    entries.sort(key=lambda e: (e.shard_id, e.offset))
    total = 0
    for entry in entries:
        if entry.dtype in (protos.DT_STRING, protos.DT_VARIANT):
            data_file.read_tensor_bytes(prefix, index, entry)  # their own crc schemes; small
        else:
            _check_numeric(prefix, index, entry)
        total += entry.size
    return Checked(tensors=len(entries), bytes=total)


def _check_numeric(prefix: str, index: index_file.Index, entry: index_file.Entry) -> None:
    num_shards = index.header.num_shards
    path = index_file.data_path(prefix, entry.shard_id, num_shards)
    crc = 0
    for chunk in _chunks(path, entry):
        crc = google_crc32c.extend(crc, chunk)
    actual = table.mask_crc(int(crc))
    if actual != entry.crc32c:
        raise errors.CorruptDataError(
            f"{path}: the {entry.size} bytes of {entry.name!r} at offset {entry.offset} fail "
            f"their checksum (index says {entry.crc32c:#010x}, data gives {actual:#010x}); "
            f"{table.RESTORE_HINT}",
            path=path,
        )


def _chunks(path: str, entry: index_file.Entry) -> Iterator[bytes]:
    """The entry's bytes, ``_CHUNK`` at a time, from one open file where the path is local.

    Raises:
      errors.MissingShardError: the shard is missing or shorter than the entry needs.
    """
    if fs.has_scheme(path):
        reader = None
    else:
        try:
            reader = open(path, "rb")  # noqa: SIM115 (closed below; one open per tensor)
        except FileNotFoundError as e:
            raise _missing(path, entry) from e
        except OSError as e:
            raise errors.UnreadableError(f"{path}: {e.strerror}", path=path) from e
    try:
        if reader is not None:
            reader.seek(entry.offset)
        done = 0
        while done < entry.size:
            n = min(_CHUNK, entry.size - done)
            if reader is not None:
                chunk = reader.read(n)
            else:
                try:
                    chunk = fs.read_range(path, entry.offset + done, n)
                except errors.PathNotFoundError as e:
                    raise _missing(path, entry) from e
            if len(chunk) < n:
                raise errors.MissingShardError(
                    f"{path}: truncated, but {entry.name!r} needs bytes {entry.offset} to "
                    f"{entry.offset + entry.size}; {table.RESTORE_HINT}",
                    path=path,
                )
            yield chunk
            done += n
    finally:
        if reader is not None:
            reader.close()


def _missing(path: str, entry: index_file.Entry) -> errors.MissingShardError:
    return errors.MissingShardError(
        f"{path}: data shard {entry.shard_id} is missing (needed for {entry.name!r}); "
        f"{table.RESTORE_HINT}",
        path=path,
    )
