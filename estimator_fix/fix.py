"""The one command: scan -> plan -> pre-flight -> repair (only if needed) -> export -> verify.

Order matters for safety: everything that can refuse (scan, plan, the user's code, the
pre-flight comparison of model code and checkpoint) runs before the first write, so a refusal
leaves the model directory exactly as it was. The user's Estimator is built over a scratch
``model_dir`` and the checkpoint is always passed explicitly, so neither the Estimator nor a
Keras ``model_to_estimator`` writes into the user's directories.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from estimator_fix import errors, surgery
from estimator_fix import export as export_lib
from estimator_fix import plan as plan_lib
from estimator_fix import repair as repair_lib
from estimator_fix import verify as verify_lib
from estimator_fix.model_code.build import LoadedModel, load_model
from estimator_fix.model_code.deadline import check_timeout
from estimator_fix.options import Job
from estimator_fix.scan import scan
from estimator_fix.serialize import Serializable
from estimator_fix.storage import atomic, fs
from estimator_fix.types import Problem, ScanReport

FIX_SCHEMA = "estimator-fix.fix/1"
REJECTED_PREFIX = "rejected-"


@dataclasses.dataclass(frozen=True)
class FixResult(Serializable):
    """Everything one ``fix`` did, stage by stage (``estimator-fix.fix/1``)."""

    schema: str
    model_dir: str
    verdict_before: str
    problems: tuple[Problem, ...]
    plan: plan_lib.Plan
    repair: repair_lib.RepairResult | None
    export: export_lib.ExportResult | None
    verify: verify_lib.VerifyResult | None
    export_path: str | None
    ok: bool
    seconds: float
    rename: surgery.SurgeryResult | None = None  # --map/--map_file: the rename before the export


def reject_export(export_path: str) -> str:
    """Moves a SavedModel that failed verification out of TensorFlow Serving's sight.

    Serving loads only numeric version folders, so ``rejected-<version>`` stays for
    inspection without ever being served.
    """
    parent, name = fs.dirname(export_path), fs.basename(export_path)
    target = fs.join(parent, f"{REJECTED_PREFIX}{name}")
    atomic.replace(export_path, target)
    return target


def fix(opts: Job, *, report: ScanReport | None = None) -> FixResult:
    """Takes a model directory to a verified SavedModel.

    All or nothing: everything that can refuse (the scan with every tensor's checksum, the
    plan, the user's code, the pre-flight) runs before the first write, and when the export or
    its verification fails after a repair was committed, the repair is rolled back
    (``repair.rollback``): the model directory is left as ``fix`` found it.

    Args:
      opts: the directory and the options of a ``fix`` (validated here).
      report: the directory's deep scan, when the caller already made it (a fleet job).

    Raises:
      Every ``errors.Error`` of the stages (the message says what was rolled back); a
      SavedModel that fails verification is renamed ``rejected-<version>`` (ParityError).
    """
    start = time.monotonic()
    opts.validate()
    assert opts.export_dir is not None
    # Deep: a corrupt tensor must refuse before the first write, not fail the export's
    # restore after a repair was committed.
    if report is None:
        report = scan(opts.model_dir, checkpoint=opts.checkpoint, deep=True)
    edit = surgery.edit_for_job(report, opts)  # --map: refused here, before any write
    the_plan = repair_lib.prepare(report, opts)
    export_base = export_lib.check_export_base(opts.export_dir)
    inputs = verify_lib.load_inputs(opts.inputs) if opts.inputs else None
    if opts.dry_run:
        renamed = None
        if edit is not None:
            renamed = surgery.apply(report, edit, output_dir=opts.output_dir, dry_run=True)
        return _result(report, the_plan, None, None, None, start, renamed)
    timeout = check_timeout(opts.timeout)
    loaded = load_model(opts.model, opts.serving, timeout=timeout)
    renamed = repaired = None
    try:
        target = report.target_report
        assert target is not None
        with surgery.preview(report, edit) as view:  # the renamed keys, nothing written yet
            checked = export_lib.preflight(
                loaded.estimator,
                loaded.serving_input_fn,
                view or target.prefix,
                mode=opts.mode,
                step_will_be_added=the_plan.add_step,
                timeout=timeout,
            )
        export_lib.check_preflight(checked)
        if edit is not None:
            renamed, report, the_plan = surgery.apply_for_fix(report, edit, opts)
        repaired = None if the_plan.is_noop else repair_lib.repair(the_plan)
        checkpoint = (repaired.new_prefix if repaired else None) or _latest(the_plan)
        try:
            exported, verified = _export_and_verify(
                opts, loaded, export_base, inputs, checked, checkpoint, timeout
            )
        except BaseException as e:
            if repaired is None and renamed is None:
                raise
            undone = (*repair_lib.rollback(repaired), *repair_lib.rollback(renamed))
            if not isinstance(e, errors.Error):
                raise
            raise type(e)(
                f"{e}; the repair was rolled back ({'; '.join(undone)}): {opts.model_dir} is as "
                "it was",
                path=e.path,
            ) from e
    finally:
        loaded.close()
    return _result(report, the_plan, repaired, exported, verified, start, renamed)


def _export_and_verify(
    opts: Job,
    loaded: LoadedModel,
    export_base: str,
    inputs: Any,
    checked: export_lib.Preflight,
    checkpoint: str,
    timeout: float | None,
) -> tuple[export_lib.ExportResult, verify_lib.VerifyResult]:
    """The export and its verification; a SavedModel that fails is renamed ``rejected-...``.

    Raises:
      errors.ExportError, errors.ParityError: see ``fix``.
    """
    exported = export_lib.export(
        loaded.estimator,
        loaded.serving_input_fn,
        export_base,
        checkpoint,
        mode=opts.mode,
        as_text=opts.as_text,
        assets_extra=opts.assets_extra,
        checked=checked,
        timeout=timeout,
    )
    verified = verify_lib.verify(
        exported.export_path,
        inputs=inputs,
        inputs_source=f"file:{opts.inputs}" if opts.inputs else "synthesized",
        estimator=loaded.estimator,
        checkpoint_path=checkpoint,
        tolerance=opts.tolerance,
        # The serving receiver's features, as the export built them: outputs are paired with
        # predictions through the same graph tensors.
        serving_input_fn=loaded.serving_input_fn if opts.mode == "predict" else None,
        timeout=timeout,
    )
    if not verified.ok:
        rejected = reject_export(exported.export_path)
        raise errors.ParityError(
            f"{exported.export_path}: the SavedModel does not predict what {checkpoint} "
            f"predicts (max abs diff {verified.max_abs_diff}, tolerance {opts.tolerance}); "
            f"moved to {rejected} so it is never served",
            path=rejected,
        )
    return exported, verified


def _latest(the_plan: plan_lib.Plan) -> str:
    return fs.join(the_plan.output_dir, the_plan.state_latest)


def _result(
    report: ScanReport,
    the_plan: plan_lib.Plan,
    repaired: repair_lib.RepairResult | None,
    exported: export_lib.ExportResult | None,
    verified: verify_lib.VerifyResult | None,
    start: float,
    renamed: surgery.SurgeryResult | None = None,
) -> FixResult:
    return FixResult(
        schema=FIX_SCHEMA,
        model_dir=report.model_dir,
        verdict_before=report.verdict.value,
        problems=report.problems,
        plan=the_plan,
        repair=repaired,
        export=exported,
        verify=verified,
        export_path=exported.export_path if exported else None,
        ok=verified.ok if verified else False,
        seconds=round(time.monotonic() - start, 3),
        rename=renamed,
    )
