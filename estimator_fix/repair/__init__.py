"""Stage 3: carry out a plan: a new checkpoint with an int64 ``global_step``, zero-copy, atomically.

How (WORKSPACE.md says why ``MergeV2Checkpoints`` is not used):

1. Under the directory's lock, remove marked temporaries left by a crashed run.
2. In a fresh temporary directory inside the destination:
   - ``tf.compat.v1.train.get_or_create_global_step()`` makes the step variable in a graph-mode
     session, it is assigned the planned value and a ``Saver`` writes it (int64 scalar, key
     ``global_step``) as a one-tensor checkpoint;
   - the source's data shards are hard-linked (copied where links are impossible) under the
     new prefix, the step's data file becomes one more shard;
   - a new index is written in pure Python: every source entry byte for byte (same shard,
     offset, size, crc32c), plus the new ``global_step`` entry. ``MergeV2Checkpoints`` is not
     used: it moves and deletes its inputs.
   V1 sources are converted tensor by tensor instead (one tensor in memory at a time).
3. TensorFlow reads the new checkpoint back: every kept key with the same dtype and shape, the
   same crc32c per tensor, and ``global_step`` an int64 scalar equal to the plan.
4. Commit: the data files, then the index, are renamed into place; then the old state file is
   backed up and the new one renamed over it. The state file is the commit point.

The original files are never opened for writing, renamed or deleted.

With ``--output_dir`` on a local disk the new directory is built in a temporary sibling and
renamed into place whole. Object stores (``gs://``, ``ram://``) cannot rename a directory, so
there the output directory is created with ``names.INCOMPLETE_MARKER`` in it first, the files
are built in a marked temporary folder inside it and renamed into place one by one, the state
file last (the commit point), and the marker is removed. A re-run finding such an unfinished
directory (marker, no state file) removes its contents and starts again.

Modules: ``build`` writes the new checkpoint in a temporary directory, ``readback`` checks it
with TensorFlow, ``commit`` renames it into place and writes the state file, ``output`` is the
``--output_dir`` flow. The plan has already chosen every name; the source index parsed by the
scan travels in the plan, so the repair never parses it again.
"""

from __future__ import annotations

import dataclasses
import os
import time

from estimator_fix import errors
from estimator_fix import plan as plan_lib
from estimator_fix.checkpoint import index_file, state_file
from estimator_fix.options import Job
from estimator_fix.plan import Plan
from estimator_fix.repair import build, commit, output, readback
from estimator_fix.repair.result import REPAIR_SCHEMA, RepairResult, Undo, written
from estimator_fix.repair.rollback import rollback
from estimator_fix.storage import atomic, fs, outputs
from estimator_fix.storage import names as names_lib
from estimator_fix.types import ScanReport

__all__ = ["REPAIR_SCHEMA", "RepairResult", "prepare", "repair", "rollback"]


def prepare(report: ScanReport, job: Job) -> Plan:
    """The plan for ``job``: its ``--output_dir`` looked at first (the plan reads nothing).

    Raises:
      errors.UsageError: a bad ``--step`` or ``--output_dir``.
      errors.NotRepairableError, errors.StepEvidenceError: see ``plan.plan``.
    """
    output = (
        outputs.inspect_output_dir(report.model_dir, job.output_dir) if job.output_dir else None
    )
    return plan_lib.plan(report, step=job.step, output=output, drop_renamed=job.drop_renamed)


def repair(plan: Plan) -> RepairResult:
    """Carries out ``plan``. A no-op plan returns at once.

    Raises:
      errors.LockedError: another repair holds the directory.
      errors.WriteError: a write failed (disk full, permission); nothing committed.
      errors.NotRepairableError: the read-back check failed; nothing committed.
    """
    start = time.monotonic()
    if plan.is_noop:  # healthy: write nothing (not even the lock file or a new state file)
        return RepairResult(
            schema=REPAIR_SCHEMA,
            model_dir=plan.model_dir,
            output_dir=plan.output_dir,
            new_prefix=None,
            step=None,
            files_added=(),
            linked=False,
            state_file=state_file.state_path(plan.model_dir),
            state_backup=None,
            removed_stale=(),
            adopted_existing=False,
            checks=(),
            actions=plan.actions,
            seconds=round(time.monotonic() - start, 3),
        )
    if plan.in_place:
        if not fs.has_scheme(plan.model_dir) and not os.access(plan.model_dir, os.W_OK):
            raise errors.WriteError(
                f"{plan.model_dir}: not writable; pass --output_dir=NEW_DIR to write the repaired "
                "model directory elsewhere",
                path=plan.model_dir,
            )
        with atomic.lock(plan.model_dir):
            removed = _remove_stale(plan.model_dir)
            result = _repair_in_place(plan)
    else:
        # No lock in the source (it is not written) nor in the output (it does not exist yet):
        # only temporaries whose process died are removed, and an unfinished output.
        removed = atomic.remove_dead_temporaries(
            fs.dirname(plan.output_dir), fs.basename(plan.output_dir)
        ) + output.clear_unfinished_output(plan.output_dir)
        existed = fs.exists(plan.output_dir)
        result = output.repair_to_output(plan)
        result = dataclasses.replace(
            result,
            undo=Undo(
                state_path=state_file.state_path(plan.output_dir),
                previous_state=None,
                state_changed=True,
                created=(),
                output_dir=plan.output_dir,
                output_existed=existed,
            ),
        )
    return dataclasses.replace(
        result, removed_stale=removed, seconds=round(time.monotonic() - start, 3)
    )


# --- in place ---------------------------------------------------------------------------------


def _remove_stale(model_dir: str) -> tuple[str, ...]:
    """Removes our marked temporaries and repaired data files that never got their index."""
    names = fs.listdir(model_dir)
    orphans = set(names_lib.orphan_repair_files(names))
    removed = []
    for name in names:
        path = fs.join(model_dir, name)
        if names_lib.is_temporary(name) or name in orphans:
            atomic.remove_path(path)
            removed.append(path)
    return tuple(removed)


def _repair_in_place(plan: Plan) -> RepairResult:
    model_dir = plan.model_dir
    added: list[str] = []
    checks: list[str] = []
    carried = atomic.Carried()
    adopted = False
    new_prefix = plan.new_prefix
    if new_prefix is not None:
        adopted = plan.adopt_existing
        if adopted:
            checks.append(f"{fs.basename(new_prefix)} already holds this repair; reused it")
        else:
            _check_still_free(new_prefix)
            with commit.temp_dir(model_dir, fs.basename(new_prefix)) as tmp:
                tmp_prefix = fs.join(tmp, fs.basename(new_prefix))
                carried = build.build_checkpoint(plan, tmp_prefix)
                checks.extend(readback.verify_checkpoint(plan, tmp_prefix))
                added = commit.commit_checkpoint(tmp_prefix, new_prefix)
    try:
        state = commit.commit_state(plan, model_dir, new_prefix)
    except errors.Error:
        # The state file still names the old checkpoint: take back the files just committed
        # (index first) so a failed repair leaves the directory as it found it.
        commit.remove_quietly(reversed(added))
        raise
    state_path, backup = state.path, state.backup
    undo = Undo(
        state_path=state_path,
        previous_state=state.previous,
        state_changed=state.changed,
        created=tuple(added) + ((backup,) if backup and state.wrote_backup else ()),
        output_dir=None,
        output_existed=True,
    )
    added.append(state_path)
    if backup:
        added.append(backup)
    return written(
        plan,
        output_dir=model_dir,
        new_prefix=new_prefix,
        files_added=added,
        carried=carried,
        state_file=state_path,
        state_backup=backup,
        adopted_existing=adopted,
        checks=checks,
        undo=undo,
    )


def _check_still_free(new_prefix: str) -> None:
    """The plan chose ``new_prefix`` as free from the scan's listing; under the lock, make sure
    no other run took it since (it would be overwritten otherwise).

    Raises:
      errors.NotRepairableError: it is taken now; re-run to plan again.
    """
    if fs.exists(index_file.index_path(new_prefix)):
        raise errors.NotRepairableError(
            f"{new_prefix}: appeared after the scan (another repair?); run the command again",
            path=new_prefix,
        )
