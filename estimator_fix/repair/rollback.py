"""Undoing a committed repair, for ``fix`` when it cannot deliver a verified SavedModel.

``fix`` is all or nothing: a repair it committed before the export or the verification failed
is taken back, so the directory is as ``fix`` found it (the state file first, the commit point
in reverse, then the files the repair added). The lock file ``.estimator-fix.lock`` stays:
removing it would race with another repair waiting on it.
"""

from __future__ import annotations

from typing import Protocol

from estimator_fix.repair import commit
from estimator_fix.repair.result import Undo
from estimator_fix.storage import atomic, fs


class Undoable(Protocol):
    """A result that says how to take it back: a ``RepairResult``, a ``SurgeryResult``."""

    @property
    def undo(self) -> Undo | None: ...


def rollback(result: Undoable | None) -> tuple[str, ...]:
    """Takes ``result``'s repair (or rename) back; None does nothing. Returns what was done,
    one phrase each.

    Raises:
      errors.WriteError: the state file could not be put back (the message says which file;
        the repair's files are then left in place, so the directory still loads).
    """
    undo = result.undo if result is not None else None
    if undo is None:
        return ()
    done: list[str] = []
    if undo.output_dir is not None:
        atomic.remove_tree(undo.output_dir)
        if undo.output_existed:
            fs.makedirs(undo.output_dir)
        done.append(f"removed the repaired copy {undo.output_dir}")
        return tuple(done)
    if undo.state_changed:
        if undo.previous_state is None:
            atomic.remove_path(undo.state_path)
            done.append(f"removed the new state file {undo.state_path}")
        else:
            atomic.write_bytes(undo.state_path, undo.previous_state)
            done.append(f"restored the state file {undo.state_path}")
    commit.remove_quietly(reversed(undo.created))
    if undo.created:
        done.append(f"removed the {len(undo.created)} files the repair added")
    if not fs.has_scheme(undo.state_path):
        atomic.fsync_dir(fs.dirname(undo.state_path))
    return tuple(done)
