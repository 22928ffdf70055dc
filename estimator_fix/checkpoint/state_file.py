"""The ``checkpoint`` state file: parse, diagnose like TensorFlow would, and render.

The file is a ``CheckpointState`` text proto (tensorflow/python/checkpoint/checkpoint_state.proto).
TensorFlow's ``latest_checkpoint`` joins relative paths to the model directory, keeps absolute
ones as they are, and returns the latest prefix only if a file matches ``<prefix>.index`` (V2)
or ``<prefix>`` (V1); otherwise it logs "Couldn't match files for checkpoint" and returns None,
and ``Estimator.predict``/``evaluate`` then run on random initial weights. This module predicts
that outcome without importing TensorFlow.

A sharded V1 checkpoint (``Saver(sharded=True, write_version=V1)``) is the files
``<stem>-00000-of-0000N`` ... ``<stem>-0000{N-1}-of-0000N``, and TensorFlow's name for it, in the
state file, in ``Saver.save``'s result and for every reader, is the glob pattern
``<stem>-?????-of-0000N``: the bare ``<stem>`` matches no file, so TensorFlow finds nothing
there. The pattern is this package's prefix for such a checkpoint too.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import posixpath
import re

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.message import Message

from estimator_fix import errors
from estimator_fix.checkpoint import index_file
from estimator_fix.storage import fs
from estimator_fix.types import StateEntry, StateFileReport

STATE_FILENAME = "checkpoint"
# The characters that make TensorFlow's get_matching_files glob instead of testing one path.
_GLOB_CHARS = frozenset("*?[\\")
# Not a V2 data file (``<prefix>.data-00000-of-00001``).
_V1_SHARD_RE = re.compile(r"^(.+)(?<!\.data)-(\d{5})-of-(\d{5})$")
_V1_PATTERN_RE = re.compile(r"^(.+)-\?{5}-of-(\d{5})$")


def _checkpoint_state_class() -> type[Message]:
    """Builds the CheckpointState message in a private pool (no clash with TensorFlow's)."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="estimator_fix/checkpoint_state.proto", package="estimator_fix.proto", syntax="proto3"
    )
    msg = fdp.message_type.add(name="CheckpointState")
    f = descriptor_pb2.FieldDescriptorProto
    for name, number, ftype, label in (
        ("model_checkpoint_path", 1, f.TYPE_STRING, f.LABEL_OPTIONAL),
        ("all_model_checkpoint_paths", 2, f.TYPE_STRING, f.LABEL_REPEATED),
        ("all_model_checkpoint_timestamps", 3, f.TYPE_DOUBLE, f.LABEL_REPEATED),
        ("last_preserved_timestamp", 4, f.TYPE_DOUBLE, f.LABEL_OPTIONAL),
    ):
        msg.field.add(name=name, number=number, type=ftype, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("estimator_fix.proto.CheckpointState")
    )


_CheckpointState = _checkpoint_state_class()


@dataclasses.dataclass(frozen=True)
class CheckpointState:
    """The parsed contents of a state file, paths exactly as written."""

    model_checkpoint_path: str
    all_model_checkpoint_paths: tuple[str, ...]
    all_model_checkpoint_timestamps: tuple[float, ...] = ()
    last_preserved_timestamp: float = 0.0


def state_path(model_dir: str) -> str:
    """Does not perform I/O."""
    return fs.join(model_dir, STATE_FILENAME)


def parse(text: str, *, path: str) -> CheckpointState:
    """Parses state file text the way TensorFlow does (``text_format.Merge``).

    Raises:
      errors.StateFileError: the text is not a CheckpointState text proto.
    """
    msg = _CheckpointState()
    try:
        text_format.Merge(text, msg)
    except text_format.ParseError as e:
        raise errors.StateFileError(
            f"{path}: not a valid CheckpointState text proto ({e}); move it aside and run "
            "`estimator-fix repair`, which writes a fresh one",
            path=path,
        ) from e
    return CheckpointState(
        model_checkpoint_path=msg.model_checkpoint_path,
        all_model_checkpoint_paths=tuple(msg.all_model_checkpoint_paths),
        all_model_checkpoint_timestamps=tuple(msg.all_model_checkpoint_timestamps),
        last_preserved_timestamp=msg.last_preserved_timestamp,
    )


def render(state: CheckpointState) -> str:
    """The text TensorFlow's own ``update_checkpoint_state`` would write. Does not perform I/O."""
    msg = _CheckpointState(
        model_checkpoint_path=state.model_checkpoint_path,
        all_model_checkpoint_paths=list(state.all_model_checkpoint_paths),
        all_model_checkpoint_timestamps=list(state.all_model_checkpoint_timestamps),
        last_preserved_timestamp=state.last_preserved_timestamp,
    )
    return text_format.MessageToString(msg)


def _is_absolute(path: str) -> bool:
    return fs.has_scheme(path) or os.path.isabs(path)


def resolve(model_dir: str, raw: str) -> str:
    """The path TensorFlow looks at for a state file entry. Does not perform I/O."""
    if _is_absolute(raw):
        return raw
    return fs.join(model_dir, raw)


def _inside(model_dir: str, path: str) -> bool:
    if fs.has_scheme(model_dir) or fs.has_scheme(path):
        if not (fs.has_scheme(model_dir) and fs.has_scheme(path)):
            return False
        # Normalise only what follows "scheme://": posixpath.normpath folds its "//".
        scheme, sep, rest = path.partition("://")
        return (scheme + sep + posixpath.normpath(rest)).startswith(model_dir.rstrip("/") + "/")
    return os.path.normpath(path).startswith(os.path.normpath(model_dir) + os.sep)


def v1_pattern_of(name: str) -> str | None:
    """``model.ckpt-7-00001-of-00003`` -> ``model.ckpt-7-?????-of-00003``. Does not perform I/O.

    None when ``name`` is not named like a sharded V1 file.
    """
    m = _V1_SHARD_RE.match(name)
    return f"{m.group(1)}-?????-of-{m.group(3)}" if m else None


def v1_shard_paths(prefix: str) -> tuple[str, ...] | None:
    """Every file of a sharded V1 prefix (``<stem>-?????-of-0000N``). Does not perform I/O.

    None when ``prefix`` is not such a pattern (a V2 prefix or a single-file V1 checkpoint).
    TensorFlow's reader opens whatever files match the pattern and silently leaves out the
    tensors of a missing shard, so the names it should match are spelled out here.
    """
    head, base = fs.dirname(prefix), fs.basename(prefix)
    m = _V1_PATTERN_RE.match(base)
    if not m:
        return None
    n = int(m.group(2))
    return tuple(fs.join(head, f"{m.group(1)}-{i:05d}-of-{n:05d}") for i in range(n))


def v1_stem(name: str) -> str:
    """``model.ckpt-7-?????-of-00003`` -> ``model.ckpt-7`` (other names unchanged).

    The stem carries the step suffix and names the ``.meta`` file. Does not perform I/O.
    """
    m = _V1_PATTERN_RE.match(name)
    return m.group(1) if m else name


def v1_reader_path(prefix: str) -> str:
    """What to hand TensorFlow's V1 reader for ``prefix``. Does not perform I/O.

    That reader globs its argument, so in a directory named like ``run[1]`` it finds nothing:
    glob characters are escaped everywhere but in a sharded prefix's ``?????``.
    """

    def escape(text: str) -> str:
        return "".join(f"\\{c}" if c in _GLOB_CHARS else c for c in text)

    head, base = fs.dirname(prefix), fs.basename(prefix)
    m = _V1_PATTERN_RE.match(base)
    base = f"{escape(m.group(1))}-?????-of-{m.group(2)}" if m else escape(base)
    return fs.join(escape(head), base) if head else base


def _glob(pattern: str) -> list[str]:
    """The paths matching ``pattern``, one directory level at a time, like TensorFlow's
    ``get_matching_files`` (``fnmatch`` per component; ``*`` and ``?`` never match ``/``)."""
    head, base = fs.dirname(pattern), fs.basename(pattern)
    if head and head != pattern and _GLOB_CHARS & set(head):
        dirs = [d for d in _glob(head) if fs.isdir(d)]
    else:
        dirs = [head] if head and fs.isdir(head) else []
    return [fs.join(d, n) for d in dirs for n in fs.listdir(d) if fnmatch.fnmatchcase(n, base)]


def _matches(path: str) -> bool:
    """TensorFlow's ``get_matching_files(path)`` is not empty.

    For a path without glob characters (``*?[\\``) that is a test of that exact path:
    ``fs.exists``, exact on every scheme (on ``ram://`` gfile's own ``exists`` would match any
    longer key by prefix). With them it is a glob, which is how a V1 pattern is found, and also
    why a model directory named like ``run[1]`` has no latest checkpoint for TensorFlow.
    """
    if not _GLOB_CHARS & set(path):
        return fs.exists(path)
    return bool(_glob(path))


def prefix_exists(prefix: str) -> bool:
    """TensorFlow's test: files matching a V2 ``<prefix>.index`` or a V1 ``<prefix>``."""
    return _matches(index_file.index_path(prefix)) or _matches(prefix)


def _local_match(base: str, local_checkpoints: frozenset[str]) -> str | None:
    """The checkpoint here that a state file entry's basename names.

    A sharded V1 checkpoint is also matched by its bare stem or one shard's name, which
    TensorFlow does not resolve to the whole checkpoint (the repair names the pattern).
    """
    if base in local_checkpoints:
        return base
    return next(
        (
            name
            for name in sorted(local_checkpoints)
            if _V1_PATTERN_RE.match(name) and base in (v1_stem(name), *_shard_names(name))
        ),
        None,
    )


def _shard_names(pattern: str) -> tuple[str, ...]:
    return tuple(fs.basename(p) for p in v1_shard_paths(pattern) or ())


def read(
    model_dir: str, local_checkpoints: frozenset[str]
) -> tuple[StateFileReport, CheckpointState | None]:
    """Reads and diagnoses ``<model_dir>/checkpoint``.

    Args:
      model_dir: the normalised model directory.
      local_checkpoints: basenames of the checkpoint prefixes found in ``model_dir``.

    Returns:
      The report, and the parsed state (None when there is no state file).

    Raises:
      errors.StateFileError: the file is not a valid text proto.
      errors.UnreadableError: the file cannot be read.
    """
    path = state_path(model_dir)
    if not fs.exists(path):
        return StateFileReport(path=path, present=False, entries=(), tf_latest=None), None
    state = parse(fs.read_text(path), path=path)
    raws: list[tuple[str, bool]] = []
    if state.model_checkpoint_path:
        raws.append((state.model_checkpoint_path, True))
    raws.extend(
        (p, False) for p in state.all_model_checkpoint_paths if p != state.model_checkpoint_path
    )
    entries = []
    for raw, is_latest in raws:
        resolved = resolve(model_dir, raw)
        base = fs.basename(raw)
        entries.append(
            StateEntry(
                raw=raw,
                is_latest=is_latest,
                is_absolute=_is_absolute(raw),
                resolves_to=resolved,
                exists=prefix_exists(resolved),
                inside_dir=_inside(model_dir, resolved),
                local_match=_local_match(base, local_checkpoints),
            )
        )
    latest = entries[0] if entries and entries[0].is_latest else None
    tf_latest = latest.resolves_to if latest is not None and latest.exists else None
    report = StateFileReport(path=path, present=True, entries=tuple(entries), tf_latest=tf_latest)
    return report, state
