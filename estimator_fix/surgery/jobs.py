"""A ``Job``'s edit options as an ``Edit``, and the rename step of ``fix --map``."""

from __future__ import annotations

import dataclasses

from estimator_fix.options import Job
from estimator_fix.plan import Plan
from estimator_fix.scan import scan
from estimator_fix.surgery.apply import apply, surgery_index
from estimator_fix.surgery.edit import Edit, validate
from estimator_fix.surgery.result import SurgeryResult
from estimator_fix.surgery.rules import edit_from_rules
from estimator_fix.types import ScanReport


def edit_for_job(report: ScanReport, job: Job) -> Edit | None:
    """The validated edit ``job``'s ``--map``/``--regex``/``--drop`` make, or None without one.

    Raises:
      errors.UsageError: the edit is refused (``rules.edit_from_rules``, ``validate``).
      errors.NotRepairableError: the target is a V1 checkpoint.
    """
    if not job.has_edit:
        return None
    index = surgery_index(report)
    edit = edit_from_rules(
        index,
        mapping=job.rename_map,
        regex=job.rename_regex,
        replacement=job.rename_replacement,
        drop=job.drop,
        allow_unmatched=job.allow_unmatched,
    )
    validate(index, edit)
    return edit


def apply_for_fix(
    report: ScanReport, edit: Edit, job: Job
) -> tuple[SurgeryResult, ScanReport, Plan]:
    """Commits ``edit`` (in place, or as ``job.output_dir``), then scans and plans the repair of
    the result where it now is: in place there, since ``--output_dir`` is the rename's.

    Raises:
      Every error of ``apply``, ``scan`` and ``repair.prepare``.
    """
    from estimator_fix import repair as repair_lib

    renamed = apply(report, edit, output_dir=job.output_dir)
    where = renamed.output_dir
    checkpoint = renamed.new_prefix.rsplit("/", 1)[-1]
    new_report = scan(where, checkpoint=checkpoint)
    new_job = dataclasses.replace(job, model_dir=where, output_dir=None, checkpoint=checkpoint)
    return renamed, new_report, repair_lib.prepare(new_report, new_job)
