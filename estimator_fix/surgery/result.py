"""What a checkpoint surgery wrote, or would write (``estimator-fix.rename/1``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from estimator_fix.repair.result import Undo
from estimator_fix.serialize import Serializable, hidden

SURGERY_SCHEMA = "estimator-fix.rename/1"


@dataclasses.dataclass(frozen=True)
class SurgeryResult(Serializable):
    """One surgery; paths are full paths.

    Attributes:
      schema: ``estimator-fix.rename/1``.
      model_dir: the source model directory.
      output_dir: where the new checkpoint went (the model directory when in place).
      source_prefix: the checkpoint edited.
      new_prefix: the new checkpoint.
      dry_run: nothing was written; ``files`` says what would be.
      renames: old key -> new key, every full tensor name whose name changes.
      dropped: keys left out.
      added: new tensors' keys.
      files: every file written (or, for a dry run, that would be), in commit order, the state
        file last.
      linked: data files were hard-linked (False: copied, e.g. on an object store).
      new_bytes: bytes written that are not hard links (the index, new small tensors, copies).
      state_file: the state file that names the new checkpoint.
      state_backup: the old state file's backup, if one was written.
      removed_stale: temporaries of a crashed run removed first.
      checks: what the read-back with TensorFlow verified.
      notes: the edit's notes (what was dropped or derived and why).
      seconds: wall time.
      undo: what ``repair.rollback`` needs to take this back (not in the JSON).
    """

    schema: str
    model_dir: str
    output_dir: str
    source_prefix: str
    new_prefix: str
    dry_run: bool
    renames: Mapping[str, str]
    dropped: tuple[str, ...]
    added: tuple[str, ...]
    files: tuple[str, ...]
    linked: bool
    new_bytes: int
    state_file: str
    state_backup: str | None
    removed_stale: tuple[str, ...]
    checks: tuple[str, ...]
    notes: tuple[str, ...]
    seconds: float
    undo: Undo | None = hidden(default=None, compare=False, repr=False)
