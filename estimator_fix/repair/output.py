"""``--output_dir``: a complete new model directory; the source is not written at all.

On local disk it is built in a temporary sibling and renamed into place whole. Object stores
cannot rename a directory, so there it is built file by file under ``names.INCOMPLETE_MARKER``,
the state file last. The output directory was checked by ``plan`` (``storage.outputs``); an
unfinished one (an interrupted run's) is emptied here, after checking again that it still is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import TYPE_CHECKING

from estimator_fix import errors
from estimator_fix.checkpoint import state_file
from estimator_fix.repair import build, commit, readback
from estimator_fix.repair.result import RepairResult, written
from estimator_fix.storage import atomic, fs, names

if TYPE_CHECKING:
    from estimator_fix.plan import Plan


def clear_unfinished_output(out: str) -> tuple[str, ...]:
    """Empties an output directory an interrupted repair left (see names.is_unfinished_output).

    Raises:
      errors.UsageError: the directory has changed since the plan and holds other files.
    """
    listing = fs.listdir(out) if fs.isdir(out) else []
    if not listing:
        return ()
    if not names.is_unfinished_output(listing):
        raise errors.UsageError(
            f"--output_dir={out}: already exists and is not an empty directory; pick a new path"
        )
    removed = []
    for name in sorted(listing, key=lambda n: n == names.INCOMPLETE_MARKER):  # marker last
        path = fs.join(out, name)
        atomic.remove_path(path)
        removed.append(path)
    return tuple(removed)


def repair_to_output(plan: Plan) -> RepairResult:
    """Writes the repaired model directory at ``plan.output_dir`` (checked and emptied first)."""
    if fs.has_scheme(plan.output_dir):
        return _repair_to_output_file_by_file(plan)
    return _repair_to_output_dir(plan)


def _build_for_output(plan: Plan, tmp_prefix: str) -> tuple[atomic.Carried, list[str]]:
    """The output's checkpoint at ``tmp_prefix``: the source linked as it is when its step is
    fine, else repaired and read back. Returns (how the data files got there, checks)."""
    if plan.step is None:
        carried = build.link_unchanged(plan.source_prefix, tmp_prefix)
        return carried, [f"{fs.basename(tmp_prefix)}: data files linked unchanged"]
    return build.build_checkpoint(plan, tmp_prefix), readback.verify_checkpoint(plan, tmp_prefix)


def _repair_to_output_dir(plan: Plan) -> RepairResult:
    out = plan.output_dir
    parent = fs.dirname(out)
    with atomic.write_errors(parent):
        fs.makedirs(parent)
    new_prefix = plan.new_prefix or fs.join(out, fs.basename(plan.source_prefix))
    with commit.temp_dir(parent, fs.basename(out)) as tmp:
        tmp_prefix = fs.join(tmp, fs.basename(new_prefix))
        carried, checks = _build_for_output(plan, tmp_prefix)
        commit.commit_state(
            dataclasses.replace(plan, state_latest=fs.basename(new_prefix)), tmp, None
        )
        atomic.failpoint("output-commit")
        if fs.exists(out):  # an empty directory (checked by plan): rename needs it gone
            with atomic.write_errors(out):
                os.rmdir(out)
        atomic.replace(tmp, out)
    return written(
        plan,
        output_dir=out,
        new_prefix=new_prefix,
        files_added=(fs.join(out, n) for n in fs.listdir(out)),
        carried=carried,
        state_file=state_file.state_path(out),
        checks=checks,
    )


def _repair_to_output_file_by_file(plan: Plan) -> RepairResult:
    """``--output_dir`` on an object store: no directory rename there, so file by file.

    The marker goes in first; the checkpoint is built and read back in a marked temporary
    folder inside the output directory; its files are renamed into place (data, then index);
    the state file is written last (the commit point); then the marker is removed. A crash
    leaves a directory with the marker and no state file, which the next run empties.
    """
    out = plan.output_dir
    created = not fs.exists(out)
    with atomic.write_errors(out):
        fs.makedirs(out)
    marker = fs.join(out, names.INCOMPLETE_MARKER)
    atomic.write_bytes(
        marker, f"unfinished estimator-fix repair of {plan.model_dir}; no state file yet\n".encode()
    )
    new_prefix = plan.new_prefix or fs.join(out, fs.basename(plan.source_prefix))
    added: list[str] = []
    try:
        with commit.temp_dir(out, fs.basename(new_prefix)) as tmp:
            tmp_prefix = fs.join(tmp, fs.basename(new_prefix))
            carried, checks = _build_for_output(plan, tmp_prefix)
            atomic.failpoint("output-commit")
            added = commit.commit_checkpoint(tmp_prefix, new_prefix)
        state_path = commit.commit_state(plan, out, new_prefix).path
    except errors.Error:
        commit.remove_quietly(reversed(added))
        with contextlib.suppress(Exception):  # leave the marker if anything else is left
            if fs.listdir(out) == [names.INCOMPLETE_MARKER]:
                fs.remove(marker)
                if created:
                    fs.rmtree(out)
        raise
    commit.remove_quietly([marker])  # if this fails: a finished output with a stale temporary
    return written(
        plan,
        output_dir=out,
        new_prefix=new_prefix,
        files_added=(fs.join(out, n) for n in fs.listdir(out)),
        carried=carried,
        state_file=state_path,
        checks=checks,
    )
