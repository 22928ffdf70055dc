"""Finding the checkpoints in a model directory and reading each one (``CheckpointReport``).

V2 indexes are parsed in pure Python and the parsed ``Index`` is kept in the report, so that
``plan`` and ``repair`` never parse it again; V1 checkpoints need TensorFlow's reader. A sharded
V1 checkpoint is one report whose prefix is TensorFlow's pattern ``<stem>-?????-of-0000N``
(see ``checkpoint.state_file``), with every shard listed and checked before TensorFlow reads it.
"""

from __future__ import annotations

import re

from estimator_fix import errors
from estimator_fix.checkpoint import data_file, index_file, state_file
from estimator_fix.checkpoint.keys import OBJECT_GRAPH_KEY, TABLE_MAGIC
from estimator_fix.scan.step import step_from_suffix, step_report
from estimator_fix.storage import fs
from estimator_fix.storage.names import is_temporary
from estimator_fix.types import CheckpointReport, Format, Problem, Severity, ShardInfo, TensorInfo

_INDEX_SUFFIX = ".index"
_DATA_RE = re.compile(r"\.data-\d{5}-of-\d{5}$")
_NOT_CHECKPOINTS = (".meta", ".pbtxt", ".pb", ".json", ".txt", ".md", ".py", ".csv", ".lock")
_TABLE_MAGIC = TABLE_MAGIC.to_bytes(8, "little")


def find_prefixes(model_dir: str, names: list[str]) -> dict[str, Format]:
    """Maps each checkpoint prefix basename in ``names`` to its (provisional) format.

    The shards of a sharded V1 checkpoint make one prefix, its pattern. A group of shard names
    counts when one of them is a table or its ``<stem>.meta`` is there, so a checkpoint whose
    only shard is truncated is still reported (and a data set sharded the same way is not).
    """
    found: dict[str, Format] = {}
    for name in names:
        if is_temporary(name):
            continue
        if name.endswith(_INDEX_SUFFIX):
            found[name[: -len(_INDEX_SUFFIX)]] = Format.V2
    present = set(names)
    for name in names:
        if (
            name in found
            or is_temporary(name)
            or name == state_file.STATE_FILENAME
            or name.endswith(_INDEX_SUFFIX)
            or _DATA_RE.search(name)
            or name.endswith(_NOT_CHECKPOINTS)
            or name.startswith(("events.out.tfevents", "."))
        ):
            continue
        pattern = state_file.v1_pattern_of(name)
        if pattern is None:
            if _is_v1_file(fs.join(model_dir, name)):
                found[name] = Format.V1
        elif pattern not in found and (
            state_file.v1_stem(pattern) + ".meta" in present
            or _is_v1_file(fs.join(model_dir, name))
        ):
            found[pattern] = Format.V1
    return dict(sorted(found.items(), key=lambda kv: _order_key(kv[0])))


def _is_v1_file(path: str) -> bool:
    """A V1 checkpoint is a single table file: same footer magic as an index."""
    if fs.isdir(path):
        return False
    n = fs.size(path)
    return n >= 48 and fs.read_range(path, n - 8, 8) == _TABLE_MAGIC


def _order_key(name: str) -> tuple[int, str]:
    step = step_from_suffix(state_file.v1_stem(name))
    return (-1 if step is None else step, name)


def inspect(prefix: str, fmt: Format) -> CheckpointReport:
    try:
        if fmt is Format.V1:
            return _inspect_v1(prefix)
        return _inspect_v2(prefix)
    except (
        errors.CorruptIndexError,
        errors.MissingShardError,
        errors.CorruptDataError,
        errors.UnreadableError,
    ) as e:
        problem = Problem(
            code=_ERROR_CODES[type(e)],
            severity=Severity.UNREPAIRABLE,
            message=str(e),
            path=e.path,
        )
        return CheckpointReport(
            prefix=prefix,
            name=fs.basename(prefix),
            format=None,
            tensor_count=0,
            total_bytes=0,
            shards=(),
            step=None,
            error=problem,
        )


_ERROR_CODES: dict[type[errors.Error], str] = {
    errors.CorruptIndexError: "index_corrupt",
    errors.MissingShardError: "shard_missing",
    errors.CorruptDataError: "data_corrupt",
    errors.UnreadableError: "unreadable",
}


def error_for(problem: Problem) -> errors.Error:
    cls = next(c for c, code in _ERROR_CODES.items() if code == problem.code)
    return cls(problem.message, path=problem.path)


def _inspect_v2(prefix: str) -> CheckpointReport:
    index = index_file.read_index(index_file.index_path(prefix))
    shards = _check_shards(prefix, index)
    variables = index.variables()
    keys = {e.name for e in variables}
    fmt = Format.OBJECT_BASED if OBJECT_GRAPH_KEY in keys else Format.V2
    tensors = tuple(TensorInfo(e.name, e.dtype_name, e.shape) for e in variables)

    def read_value(name: str) -> float | int | bool:
        entry = index.get(name)
        assert entry is not None
        return data_file.read_scalar(prefix, index, entry)

    step = step_report(prefix, fmt, tensors, read_value)
    return CheckpointReport(
        prefix=prefix,
        name=fs.basename(prefix),
        format=fmt,
        tensor_count=len(variables),
        total_bytes=index.total_bytes,
        shards=shards,
        step=step,
        error=None,
        tensors=tensors,
        index=index,
    )


def _check_shards(prefix: str, index: index_file.Index) -> tuple[ShardInfo, ...]:
    needed = [0] * index.header.num_shards
    for e in index.entries:
        if e.size and 0 <= e.shard_id < len(needed):
            needed[e.shard_id] = max(needed[e.shard_id], e.offset + e.size)
        elif e.size:
            raise errors.CorruptIndexError(
                f"{index.path}: entry {e.name!r} names data shard {e.shard_id} of "
                f"{index.header.num_shards}; restore the index from the original copy",
                path=index.path,
            )
    shards = []
    for shard_id, need in enumerate(needed):
        path = index_file.data_path(prefix, shard_id, index.header.num_shards)
        present = fs.exists(path)
        size = fs.size(path) if present else None
        shards.append(ShardInfo(path=path, exists=present, size=size, needed=need))
        if need and not present:
            raise errors.MissingShardError(
                f"{path}: data shard missing (the index references {need} bytes in it); copy it "
                "from the original checkpoint",
                path=path,
            )
        if size is not None and size < need:
            raise errors.MissingShardError(
                f"{path}: data shard truncated ({size} bytes, the index needs {need}); copy it "
                "again from the original checkpoint",
                path=path,
            )
    return tuple(shards)


def _check_v1_shards(prefix: str) -> tuple[ShardInfo, ...]:
    """Every shard of a V1 checkpoint present and a whole table (TensorFlow's reader would
    leave a missing shard's tensors out without a word)."""
    paths = state_file.v1_shard_paths(prefix) or (prefix,)
    shards = []
    for i, path in enumerate(paths):
        if not fs.exists(path):
            raise errors.MissingShardError(
                f"{path}: V1 checkpoint shard missing (shard {i} of {len(paths)} of "
                f"{fs.basename(prefix)}); copy it from the original checkpoint",
                path=path,
            )
        if not _is_v1_file(path):
            raise errors.CorruptIndexError(
                f"{path}: not a whole V1 checkpoint table ({fs.size(path)} bytes, no table "
                "footer: truncated or overwritten); copy it again from the original checkpoint",
                path=path,
            )
        size = fs.size(path)
        shards.append(ShardInfo(path=path, exists=True, size=size, needed=size))
    return tuple(shards)


def _inspect_v1(prefix: str) -> CheckpointReport:
    """V1 checkpoints: TensorFlow's own reader (the only TF import ``scan`` may make)."""
    import numpy as np
    import tensorflow as tf

    shards = _check_v1_shards(prefix)
    try:
        reader = tf.compat.v1.train.NewCheckpointReader(state_file.v1_reader_path(prefix))
        dtypes = reader.get_variable_to_dtype_map()
        shapes = reader.get_variable_to_shape_map()
    except Exception as e:  # TF raises DataLossError, OpError, RuntimeError...
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise errors.CorruptIndexError(
            f"{prefix}: unreadable V1 checkpoint ({first}); restore it from the original copy",
            path=prefix,
        ) from e
    tensors = tuple(
        TensorInfo(name, dtypes[name].name, tuple(int(d) for d in shapes[name]))
        for name in sorted(dtypes)
    )

    def read_value(name: str) -> float | int | bool:
        value = np.asarray(reader.get_tensor(name)).reshape(-1)[0]
        return value.item()

    # The stem carries the -N suffix: the pattern's own digits are the shard count.
    stem = fs.join(fs.dirname(prefix), state_file.v1_stem(fs.basename(prefix)))
    step = step_report(stem, Format.V1, tensors, read_value)
    return CheckpointReport(
        prefix=prefix,
        name=fs.basename(prefix),
        format=Format.V1,
        tensor_count=len(tensors),
        total_bytes=sum(s.size or 0 for s in shards),
        shards=shards,
        step=step,
        error=None,
        tensors=tensors,
    )
