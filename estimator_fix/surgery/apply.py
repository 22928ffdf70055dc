"""Carrying out an ``Edit``: checked, built in a temporary directory, read back, committed.

In place: under the directory's lock, the new checkpoint (``names.renamed_candidates``: the
first free ``model.ckpt-renamed[K]-N``) is built in a marked temporary folder inside the model
directory, read back with TensorFlow, its data files then its index renamed into place, the
state file backed up and replaced last (``repair.commit``). With ``output_dir``: a complete new
directory, renamed into place whole on a local disk, file by file under
``names.INCOMPLETE_MARKER`` on an object store, the state file last. The source's files are
never opened for writing, renamed or deleted.
"""

from __future__ import annotations

import dataclasses
import os
import time

from estimator_fix import errors
from estimator_fix.checkpoint import index_file, state_file
from estimator_fix.checkpoint.index_file import Index
from estimator_fix.repair import commit
from estimator_fix.repair.output import clear_unfinished_output
from estimator_fix.repair.result import Undo
from estimator_fix.storage import atomic, fs, names, outputs
from estimator_fix.surgery import build as build_lib
from estimator_fix.surgery import graph as graph_lib
from estimator_fix.surgery import readback
from estimator_fix.surgery.edit import Edit, validate
from estimator_fix.surgery.result import SURGERY_SCHEMA, SurgeryResult
from estimator_fix.types import Format, ScanReport


@dataclasses.dataclass(frozen=True)
class _Latest:
    state_latest: str


def surgery_index(report: ScanReport) -> Index:
    """The target checkpoint's parsed index, which an edit applies to.

    Raises:
      errors.NotAModelDirError: no target checkpoint.
      errors.InputError: the target cannot be read (the scan's error).
      errors.NotRepairableError: the target is a V1 checkpoint (no index to rewrite).
    """
    target = report.target_report
    if target is None:
        raise errors.NotAModelDirError(
            f"{report.model_dir}: no checkpoint to edit; pass --checkpoint=PREFIX",
            path=report.model_dir,
        )
    if target.error is not None:
        raise errors.InputError(target.error.message, path=target.prefix)
    if target.format is Format.V1 or target.index is None:
        raise errors.NotRepairableError(
            f"{target.prefix}: a V1-format checkpoint has no index to rename keys in; convert it "
            f"first with `estimator-fix repair --model_dir={report.model_dir} --step=N "
            "--output_dir=DIR2`, then rename there",
            path=target.prefix,
        )
    return target.index


def apply(
    report: ScanReport, edit: Edit, *, output_dir: str | None = None, dry_run: bool = False
) -> SurgeryResult:
    """Applies ``edit`` to the report's target checkpoint; no tensor byte is read or copied.

    Args:
      report: the scan of the model directory (its target is the checkpoint edited).
      edit: what to do; checked here with ``validate`` before anything is written.
      output_dir: write a new model directory there instead of editing in place.
      dry_run: decide and check everything, write nothing; ``files`` lists what would be.

    Raises:
      errors.UsageError: the edit is refused (see ``validate``), changes nothing, or the
        output directory is unusable.
      errors.NotRepairableError: a V1 source, or the read-back check failed.
      errors.LockedError: another run holds the directory.
      errors.WriteError: a write failed; nothing committed.
    """
    start = time.monotonic()
    index = surgery_index(report)
    target = report.target_report
    assert target is not None
    validate(index, edit)
    if edit.is_empty:
        raise errors.UsageError(
            f"{target.prefix}: the edit changes no key; check the map against the checkpoint's "
            "keys (`estimator-fix scan --json`); nothing was written"
        )
    out = outputs.inspect_output_dir(report.model_dir, output_dir) if output_dir else None
    dest = out.path if out else report.model_dir
    new_name = _new_name(report, target.name, in_place=out is None)
    new_prefix = fs.join(dest, new_name)
    payload = graph_lib.new_payload(index, target.prefix, edit)
    plan = build_lib.layout(index, edit, rewrite_graph=payload is not None)
    files = (
        *plan.data_files(new_prefix),
        index_file.index_path(new_prefix),
        state_file.state_path(dest),
    )
    result = SurgeryResult(
        schema=SURGERY_SCHEMA,
        model_dir=report.model_dir,
        output_dir=dest,
        source_prefix=target.prefix,
        new_prefix=new_prefix,
        dry_run=dry_run,
        renames=plan.renames,
        dropped=plan.dropped,
        added=tuple(t.name for t in edit.additions),
        files=files,
        linked=True,
        new_bytes=0,
        state_file=state_file.state_path(dest),
        state_backup=None,
        removed_stale=(),
        checks=(),
        notes=edit.notes,
        seconds=0.0,
    )
    if not dry_run:
        result = _write(result, index, plan, edit, payload, output=out is not None)
    return dataclasses.replace(result, seconds=round(time.monotonic() - start, 3))


def _new_name(report: ScanReport, source_name: str, *, in_place: bool) -> str:
    """The first candidate name no checkpoint in the directory holds. Does not perform I/O.

    Raises:
      errors.NotRepairableError: every candidate is taken.
    """
    present = set(report.names)
    for candidate in names.renamed_candidates(source_name, in_place=in_place):
        if not in_place or f"{candidate}.index" not in present:
            return candidate
    raise errors.NotRepairableError(
        f"{report.model_dir}: {names.MAX_FIXED_CANDIDATES} renamed checkpoints of {source_name} "
        "exist; remove old ones",
        path=report.model_dir,
    )


def _build(
    result: SurgeryResult,
    index: Index,
    plan: build_lib.Layout,
    edit: Edit,
    payload: bytes | None,
    tmp_prefix: str,
) -> SurgeryResult:
    linked, new_bytes = build_lib.build(
        index, result.source_prefix, tmp_prefix, plan, edit.additions, payload
    )
    checks = readback.verify(index, result.source_prefix, tmp_prefix, plan, edit.additions)
    return dataclasses.replace(result, linked=linked, new_bytes=new_bytes, checks=tuple(checks))


def _write(
    result: SurgeryResult,
    index: Index,
    plan: build_lib.Layout,
    edit: Edit,
    payload: bytes | None,
    *,
    output: bool,
) -> SurgeryResult:
    if output:
        if fs.has_scheme(result.output_dir):
            return _write_output_file_by_file(result, index, plan, edit, payload)
        return _write_output_dir(result, index, plan, edit, payload)
    model_dir = result.model_dir
    if not fs.has_scheme(model_dir) and not os.access(model_dir, os.W_OK):
        raise errors.WriteError(
            f"{model_dir}: not writable; pass --output_dir=NEW_DIR to write the edited model "
            "directory elsewhere",
            path=model_dir,
        )
    with atomic.lock(model_dir):
        listing = fs.listdir(model_dir)
        orphans = set(names.orphan_surgery_files(listing))  # a crashed commit's data files
        stale = [fs.join(model_dir, n) for n in listing if names.is_temporary(n) or n in orphans]
        for path in stale:
            atomic.remove_path(path)
        new_prefix = result.new_prefix
        if fs.exists(index_file.index_path(new_prefix)):
            raise errors.NotRepairableError(
                f"{new_prefix}: appeared after the scan (another run?); run the command again",
                path=new_prefix,
            )
        with commit.temp_dir(model_dir, fs.basename(new_prefix)) as tmp:
            tmp_prefix = fs.join(tmp, fs.basename(new_prefix))
            result = _build(result, index, plan, edit, payload, tmp_prefix)
            added = commit.commit_checkpoint(tmp_prefix, new_prefix)
        try:
            state = commit.commit_state(_Latest(fs.basename(new_prefix)), model_dir, new_prefix)
        except errors.Error:
            commit.remove_quietly(reversed(added))
            raise
    backup = state.backup if state.wrote_backup else None
    undo = Undo(
        state_path=state.path,
        previous_state=state.previous,
        state_changed=state.changed,
        created=tuple(added) + ((backup,) if backup else ()),
        output_dir=None,
        output_existed=True,
    )
    return dataclasses.replace(
        result,
        files=(*added, state.path, *((backup,) if backup else ())),
        state_backup=state.backup,
        removed_stale=tuple(stale),
        undo=undo,
    )


def _write_output_dir(
    result: SurgeryResult,
    index: Index,
    plan: build_lib.Layout,
    edit: Edit,
    payload: bytes | None,
) -> SurgeryResult:
    """A new local directory, built in a temporary sibling and renamed into place whole."""
    out = result.output_dir
    parent = fs.dirname(out)
    removed = atomic.remove_dead_temporaries(parent, fs.basename(out))
    removed += clear_unfinished_output(out)
    existed = fs.exists(out)
    with atomic.write_errors(parent):
        fs.makedirs(parent)
    name = fs.basename(result.new_prefix)
    with commit.temp_dir(parent, fs.basename(out)) as tmp:
        result = _build(result, index, plan, edit, payload, fs.join(tmp, name))
        commit.commit_state(_Latest(name), tmp, fs.join(tmp, name))
        if fs.exists(out):  # an empty directory (checked before): a rename needs it gone
            with atomic.write_errors(out):
                os.rmdir(out)
        atomic.replace(tmp, out)
    undo = Undo(
        state_path=result.state_file,
        previous_state=None,
        state_changed=True,
        created=(),
        output_dir=out,
        output_existed=existed,
    )
    files = tuple(fs.join(out, n) for n in sorted(fs.listdir(out)))
    return dataclasses.replace(result, files=files, removed_stale=removed, undo=undo)


def _write_output_file_by_file(
    result: SurgeryResult,
    index: Index,
    plan: build_lib.Layout,
    edit: Edit,
    payload: bytes | None,
) -> SurgeryResult:
    """An object store has no directory rename: the marker first, the files one by one (data,
    index), the state file last (the commit point), then the marker removed."""
    out = result.output_dir
    removed = clear_unfinished_output(out)
    existed = fs.exists(out)
    with atomic.write_errors(out):
        fs.makedirs(out)
    marker = fs.join(out, names.INCOMPLETE_MARKER)
    atomic.write_bytes(marker, f"unfinished estimator-fix rename of {result.model_dir}\n".encode())
    added: list[str] = []
    try:
        with commit.temp_dir(out, fs.basename(result.new_prefix)) as tmp:
            tmp_prefix = fs.join(tmp, fs.basename(result.new_prefix))
            result = _build(result, index, plan, edit, payload, tmp_prefix)
            added = commit.commit_checkpoint(tmp_prefix, result.new_prefix)
        commit.commit_state(_Latest(fs.basename(result.new_prefix)), out, result.new_prefix)
    except errors.Error:
        commit.remove_quietly(reversed(added))
        raise
    commit.remove_quietly([marker])
    undo = Undo(
        state_path=result.state_file,
        previous_state=None,
        state_changed=True,
        created=(),
        output_dir=out,
        output_existed=existed,
    )
    files = (*added, result.state_file)
    return dataclasses.replace(result, files=files, removed_stale=removed, undo=undo)
