"""The ``checkpoint`` state file: parse, diagnose like TensorFlow would, and render.

The file is a ``CheckpointState`` text proto (tensorflow/python/checkpoint/checkpoint_state.proto).
TensorFlow's ``latest_checkpoint`` joins relative paths to the model directory, keeps absolute
ones as they are, and returns the latest prefix only if ``<prefix>.index`` (V2) or ``<prefix>``
(V1) exists; otherwise it logs "Couldn't match files for checkpoint" and returns None, and
``Estimator.predict``/``evaluate`` then run on random initial weights. This module predicts that
outcome without importing TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.message import Message

from estimator_fix import errors
from estimator_fix.checkpoint import index_file
from estimator_fix.storage import fs
from estimator_fix.types import StateEntry, StateFileReport

STATE_FILENAME = "checkpoint"


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


def prefix_exists(prefix: str) -> bool:
    """TensorFlow's test: a V2 ``<prefix>.index`` or a V1 file named ``<prefix>``.

    TensorFlow asks ``get_matching_files`` for those two paths, which for a path without glob
    characters (``*?[\\``) is a test of that exact path: ``fs.exists``, exact on every scheme
    (on ``ram://`` gfile's own ``exists`` would match any longer key by prefix).
    """
    return fs.exists(index_file.index_path(prefix)) or fs.exists(prefix)


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
                local_match=base if base in local_checkpoints else None,
            )
        )
    latest = entries[0] if entries and entries[0].is_latest else None
    tf_latest = latest.resolves_to if latest is not None and latest.exists else None
    report = StateFileReport(path=path, present=True, entries=tuple(entries), tf_latest=tf_latest)
    return report, state
