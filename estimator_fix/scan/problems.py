"""The scan's findings as ``Problem``s with stable codes (the README lists them): the state
file, the step of the target checkpoint, and everything else in the directory."""

from __future__ import annotations

from estimator_fix.checkpoint.keys import OBJECT_STEP_KEY, STEP_KEY
from estimator_fix.scan.step import FLOAT_DTYPES, INTEGER_DTYPES, is_scalarish
from estimator_fix.storage import fs
from estimator_fix.types import (
    CheckpointReport,
    EvidenceSource,
    Format,
    Problem,
    Severity,
    StateFileReport,
    StepEvidence,
    StepStatus,
)

_RANDOM_WEIGHTS = (
    "tf.train.latest_checkpoint returns None: export_saved_model fails with \"Couldn't find "
    'trained model" and Estimator.predict/evaluate silently run on random initial weights'
)


def state_problems(state: StateFileReport, target: CheckpointReport) -> tuple[Problem, ...]:
    out: list[Problem] = []
    rewrite = f"repair rewrites the state file with relative paths, naming {target.name}"
    if not state.present:
        out.append(
            Problem(
                "state_file_missing",
                Severity.REPAIRABLE,
                f"no checkpoint state file: {_RANDOM_WEIGHTS}",
                state.path,
                rewrite,
            )
        )
        return tuple(out)
    if not state.entries:
        out.append(
            Problem(
                "state_file_empty",
                Severity.REPAIRABLE,
                f"the state file names no checkpoint: {_RANDOM_WEIGHTS}",
                state.path,
                rewrite,
            )
        )
        return tuple(out)
    for entry in state.entries:
        which = "latest checkpoint" if entry.is_latest else "listed checkpoint"
        severity = Severity.REPAIRABLE if entry.is_latest else Severity.WARNING
        if not entry.exists and entry.is_absolute and entry.local_match:
            out.append(
                Problem(
                    "state_foreign_path",
                    severity,
                    f"{which} {entry.raw!r} is an absolute path from another machine "
                    f"(the checkpoint is here as {entry.local_match})",
                    state.path,
                    rewrite,
                )
            )
        elif not entry.exists:
            out.append(
                Problem(
                    "state_dangling_path",
                    severity,
                    f"{which} {entry.raw!r} does not exist",
                    state.path,
                    rewrite,
                )
            )
        elif not entry.inside_dir:
            out.append(
                Problem(
                    "state_outside_dir",
                    severity,
                    f"{which} {entry.raw!r} points outside the model directory "
                    f"(to {entry.resolves_to})",
                    state.path,
                    rewrite,
                )
            )
        elif entry.is_absolute:
            out.append(
                Problem(
                    "state_absolute_path",
                    Severity.WARNING,
                    f"{which} {entry.raw!r} is an absolute path: it breaks when the directory "
                    "is copied or moved",
                    state.path,
                    rewrite,
                )
            )
    if state.tf_latest is None:
        out.append(
            Problem(
                "no_latest_checkpoint", Severity.REPAIRABLE, _RANDOM_WEIGHTS, state.path, rewrite
            )
        )
    return tuple(out)


def step_problems(target: CheckpointReport) -> tuple[Problem, ...]:
    step = target.step
    assert step is not None
    values = ", ".join(_describe(e) for e in step.evidence) or "none"
    if step.status is StepStatus.OK:
        if step.conflict:
            return (
                Problem(
                    "step_evidence_disagrees",
                    Severity.WARNING,
                    f"{target.name}: step evidence disagrees ({values}); the checkpoint's "
                    f"{step.key} is used as it is",
                    target.prefix,
                ),
            )
        return ()
    out: list[Problem] = []
    object_based = target.format is Format.OBJECT_BASED
    key = "estimator_global_step" if object_based else STEP_KEY
    graph = " and its node in the object graph" if object_based else ""
    if step.status is StepStatus.MISSING and object_based:
        out.append(
            Problem(
                "object_based_step_missing",
                Severity.REPAIRABLE,
                f"{target.name}: object-based (Keras) checkpoint without {OBJECT_STEP_KEY}, "
                'where the Keras Estimator restores its step (export fails with "Saver was '
                'attempting to load an object-based checkpoint")',
                target.prefix,
                f"repair adds an int64 {key}{graph}",
            )
        )
    elif step.status is StepStatus.MISSING:
        out.append(
            Problem(
                "step_missing",
                Severity.REPAIRABLE,
                f'{target.name}: no global_step (export fails with "Key global_step not '
                'found in checkpoint")',
                target.prefix,
                "repair adds an int64 global_step",
            )
        )
    elif step.status is StepStatus.RENAMED:
        out.append(
            Problem(
                "step_renamed",
                Severity.REPAIRABLE,
                f"{target.name}: no {key} key, the step is stored as {step.key!r} ({step.dtype})",
                target.prefix,
                f"repair adds an int64 {key}{graph} and keeps {step.key!r}",
            )
        )
    elif step.status is StepStatus.WRONG_DTYPE:
        fixable = step.dtype in INTEGER_DTYPES | FLOAT_DTYPES and any(
            e.source is EvidenceSource.STEP_KEY for e in step.evidence
        )
        out.append(
            Problem(
                "step_wrong_dtype",
                Severity.REPAIRABLE if fixable else Severity.UNREPAIRABLE,
                f"{target.name}: {key} is {step.dtype}, Estimators need int64 "
                '("expected dtype int64 does not equal original dtype")',
                target.prefix,
                f"repair replaces it with an int64 {key} of the same value"
                if fixable
                else "this tool cannot read a step from it; retrain or pass a healthy checkpoint",
            )
        )
    elif step.status is StepStatus.WRONG_SHAPE:
        fixable = step.shape is not None and is_scalarish(step.shape)
        out.append(
            Problem(
                "step_wrong_shape",
                Severity.REPAIRABLE if fixable else Severity.UNREPAIRABLE,
                f"{target.name}: {key} has shape {list(step.shape or ())}, Estimators "
                "need a scalar",
                target.prefix,
                "repair replaces it with an int64 scalar of the same value"
                if fixable
                else "this tool cannot tell which element is the step",
            )
        )
    if step.conflict:
        out.append(
            Problem(
                "step_conflict",
                Severity.REPAIRABLE,
                f"{target.name}: step evidence disagrees ({values})",
                target.prefix,
                "pass --step=N with the step you trust",
            )
        )
    elif not step.evidence:
        out.append(
            Problem(
                "step_no_evidence",
                Severity.REPAIRABLE,
                f"{target.name}: no evidence of the training step (no step key, no optimizer "
                "counter, no -N suffix)",
                target.prefix,
                "pass --step=N",
            )
        )
    return tuple(out)


def _describe(e: StepEvidence) -> str:
    where = e.key if e.key else e.source.value
    return f"{where}={e.value}"


def other_problems(
    reports: tuple[CheckpointReport, ...], target: CheckpointReport, stale: tuple[str, ...]
) -> tuple[Problem, ...]:
    out: list[Problem] = []
    for r in reports:
        if r is not target and r.error is not None:
            out.append(
                Problem(
                    r.error.code,
                    Severity.WARNING,
                    f"older checkpoint {r.name} is unreadable: {r.error.message}",
                    r.error.path,
                    "delete it or restore it from the original copy",
                )
            )
    if target.format is Format.V1:
        out.append(
            Problem(
                "v1_format",
                Severity.INFO,
                f"{target.name}: V1-format checkpoint (TensorFlow still reads it)",
                target.prefix,
                "repair, when needed, writes a V2 checkpoint",
            )
        )
    newest = reports[-1]
    if newest is not target and newest.error is None:
        out.append(
            Problem(
                "newer_checkpoint_on_disk",
                Severity.INFO,
                f"{newest.name} is newer than the target {target.name}",
                newest.prefix,
                f"pass --checkpoint={newest.name} to use it",
            )
        )
    for path in stale:
        out.append(
            Problem(
                "stale_temporary",
                Severity.WARNING,
                f"{fs.basename(path)}: left by an interrupted repair",
                path,
                "the next repair removes it",
            )
        )
    return tuple(out)
