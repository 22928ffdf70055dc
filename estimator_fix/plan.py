"""Stage 2: decide what a repair will do, from the scan alone. Does not perform I/O.

The step value is taken from evidence in this order, and the plan names the evidence it used:

1. ``--step`` (``step=``), which overrides everything;
2. the value of a renamed step key (``my_global_step``) or of a mistyped ``global_step``;
3. an optimizer iteration counter (``.../iter``, ``.../iterations``) or a TF2 ``step``;
4. the ``-N`` suffix of the checkpoint prefix.

Evidence that disagrees, or no evidence at all, raises ``StepEvidenceError``: the tool never
guesses a step and never defaults to 0. ``--step`` on a checkpoint whose int64 step already
holds that value changes nothing (pipelines retry whole commands, so the second identical run
must succeed); a different value is refused, naming both.

The step goes where the Estimator restores it from: ``global_step``, or for an object-based
(Keras ``model_to_estimator``) checkpoint ``estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE``
plus its node in the ``_CHECKPOINTABLE_OBJECT_GRAPH``, which is rewritten so that an
object-graph restore (``tf.train.Checkpoint``, the Saver's fallback) finds the step too.

The plan also decides every name the repair writes (``storage.names``), from the directory
listing and the parsed indexes the scan carries: ``--dry_run`` prints exactly what ``repair``
writes. What an ``--output_dir`` already holds comes in as a ``storage.outputs.OutputDir``,
looked at by ``repair.prepare`` (the stage that does I/O) before the plan is made.
"""

from __future__ import annotations

import dataclasses

from estimator_fix import errors
from estimator_fix.checkpoint.index_file import Index
from estimator_fix.checkpoint.keys import INT64_MAX, OBJECT_GRAPH_KEY, STEP_KEY
from estimator_fix.scan.step import step_key_for
from estimator_fix.serialize import Serializable, hidden
from estimator_fix.storage import fs, names
from estimator_fix.storage.outputs import OutputDir
from estimator_fix.types import (
    CheckpointReport,
    EvidenceSource,
    Format,
    Problem,
    ScanReport,
    Severity,
    StepEvidence,
    StepStatus,
    Verdict,
)

PLAN_SCHEMA = "estimator-fix.plan/1"

_SOURCE_RANK = {
    EvidenceSource.STEP_KEY: 1,
    EvidenceSource.RENAMED_KEY: 1,
    EvidenceSource.OPTIMIZER_ITERATIONS: 2,
    EvidenceSource.TF2_STEP: 2,
    EvidenceSource.PREFIX_SUFFIX: 3,
}


@dataclasses.dataclass(frozen=True)
class Plan(Serializable):
    """What ``repair`` will write. ``actions`` is the same in words."""

    schema: str
    model_dir: str
    output_dir: str  # equals model_dir for an in-place repair
    in_place: bool
    source_prefix: str
    source_format: Format
    new_prefix: str | None  # None when the checkpoint itself needs no change
    step: int | None  # the value global_step will hold (None: checkpoint unchanged)
    step_evidence: StepEvidence | None  # why that value
    add_step: bool  # write a new int64 scalar global_step
    replace_keys: tuple[str, ...]  # source keys left out of the new index (retyped, rewritten
    # or dropped)
    kept_renamed_key: str | None  # a renamed step key kept beside the new global_step
    rewrite_state: bool
    state_latest: str  # what the state file's model_checkpoint_path will be (relative)
    problems_fixed: tuple[Problem, ...]
    warnings: tuple[str, ...]
    actions: tuple[str, ...]
    is_noop: bool
    # The key the step is written under (``global_step``, or the Keras Estimator's object key).
    step_key: str = STEP_KEY
    # Object-based: the object graph is rewritten with a node for ``step_key``.
    rewrite_object_graph: bool = False
    # ``new_prefix`` already holds exactly this repair (an interrupted run's): reuse it.
    adopt_existing: bool = hidden(default=False)
    # The source's parsed index (V2), from the scan: the repair does not parse it again.
    source_index: Index | None = hidden(default=None, compare=False, repr=False)


def choose_step(target: CheckpointReport, step: int | None) -> StepEvidence:
    """Picks the step value and the evidence behind it.

    Raises:
      errors.UsageError: ``step`` is negative or does not fit int64.
      errors.StepEvidenceError: no evidence, or evidence that disagrees, and no ``step``.
    """
    if step is not None:
        if not 0 <= step <= INT64_MAX:
            raise errors.UsageError(f"--step={step}: must be between 0 and {INT64_MAX}")
        return StepEvidence(EvidenceSource.FLAG, step, detail="--step")
    assert target.step is not None
    evidence = target.step.evidence
    found = ", ".join(f"{e.key or e.source.value}={e.value}" for e in evidence)
    if not evidence:
        raise errors.StepEvidenceError(
            f"{target.prefix}: no evidence of the training step (no step key, no optimizer "
            "counter, no -N suffix); pass --step=N",
            path=target.prefix,
        )
    if len({e.value for e in evidence}) > 1:
        raise errors.StepEvidenceError(
            f"{target.prefix}: step evidence disagrees ({found}); pass --step=N with the step "
            "you trust",
            path=target.prefix,
        )
    return min(evidence, key=lambda e: _SOURCE_RANK[e.source])


def plan(
    report: ScanReport,
    *,
    step: int | None = None,
    output: OutputDir | None = None,
    drop_renamed: bool = False,
) -> Plan:
    """Turns a scan into a repair plan.

    Args:
      report: the scan of the model directory (its target is the checkpoint to repair).
      step: ``--step``; overrides all evidence.
      output: write a complete new model directory there instead of repairing in place (as
        ``storage.outputs.inspect_output_dir`` found it).
      drop_renamed: leave a renamed step key out of the new checkpoint.

    Raises:
      errors.UsageError: a bad ``step``.
      errors.NotRepairableError: the scan found a problem this tool cannot fix.
      errors.StepEvidenceError: the step is needed and the evidence is missing or disagrees.
    """
    target = report.target_report
    assert target is not None and target.step is not None and target.format is not None
    in_place = output is None
    out_dir = report.model_dir if output is None else output.path
    unfinished = output is not None and output.unfinished
    unrepairable = [p for p in report.problems if p.severity is Severity.UNREPAIRABLE]
    if unrepairable:
        raise errors.NotRepairableError(
            f"{report.model_dir}: {unrepairable[0].code}: {unrepairable[0].message}"
            + (f"; {unrepairable[0].fix}" if unrepairable[0].fix else ""),
            path=unrepairable[0].path,
        )
    fixed = tuple(p for p in report.problems if p.severity is Severity.REPAIRABLE)
    warnings = tuple(p.message for p in report.problems if p.severity is Severity.WARNING)
    status = target.step.status
    step_key = step_key_for(target.format)
    object_based = target.format is Format.OBJECT_BASED
    if step is not None and status is StepStatus.OK:
        _check_same_step(target, step)
        step = None  # the step is already that value: the rest of the plan is as without it
    if report.verdict is Verdict.HEALTHY and in_place:
        return Plan(
            schema=PLAN_SCHEMA,
            model_dir=report.model_dir,
            output_dir=out_dir,
            in_place=True,
            source_prefix=target.prefix,
            source_format=target.format,
            new_prefix=None,
            step=None,
            step_evidence=None,
            add_step=False,
            replace_keys=(),
            kept_renamed_key=None,
            rewrite_state=False,
            state_latest=target.name,
            problems_fixed=(),
            warnings=warnings,
            actions=(f"nothing to do: {report.model_dir} is healthy",),
            is_noop=True,
            source_index=target.index,
        )

    evidence: StepEvidence | None = None
    new_name: str | None = None
    adopt = False
    replace: list[str] = []
    kept: str | None = None
    actions: list[str] = []
    if unfinished:
        actions.append(
            f"remove what an interrupted repair left in {out_dir} (it has no state file, so it "
            "is not a finished output)"
        )
    if status is not StepStatus.OK:
        evidence = choose_step(target, step)
        new_name = names.repaired_name(target.name, evidence.value, in_place=in_place)
        if status in (StepStatus.WRONG_DTYPE, StepStatus.WRONG_SHAPE):
            replace.append(step_key)
            actions.append(
                f"replace {step_key} ({target.step.dtype}{list(target.step.shape or ())}) with an "
                f"int64 scalar = {evidence.value} (from {evidence.source.value}: {_why(evidence)})"
            )
        else:
            actions.append(
                f"add an int64 {step_key} = {evidence.value} "
                f"(from {evidence.source.value}: {_why(evidence)})"
            )
            if status is StepStatus.RENAMED and target.step.key is not None:
                if drop_renamed and object_based:
                    kept = target.step.key
                    actions.append(
                        f"keep the renamed step key {target.step.key!r} despite --drop_renamed: "
                        "the object graph names it"
                    )
                elif drop_renamed:
                    replace.append(target.step.key)
                    actions.append(f"leave out the renamed step key {target.step.key!r}")
                else:
                    kept = target.step.key
        if object_based:
            replace.append(OBJECT_GRAPH_KEY)
            actions.append(
                f"rewrite {OBJECT_GRAPH_KEY} with a node for {step_key} (a new data file; the "
                "original object graph's bytes stay where they are)"
            )
        if in_place:
            new_name, adopt = _free_or_identical(
                report, target, new_name, evidence.value, replace, step_key
            )
        if adopt:
            actions.append(f"reuse {new_name}: it already holds exactly this repair")
        else:
            if target.format is Format.V1:
                actions.append(f"convert {target.name} from V1 to V2, one tensor at a time")
            how = "new data file" if target.format is Format.V1 else "hard links to the original"
            verb = "write" if target.format is Format.V1 else "link"
            actions.append(
                f"{verb} the model's tensors unchanged into {new_name} ({how}"
                f"{' data files' if verb == 'link' else ''}) with a new index"
            )
    elif not in_place:
        new_name = target.name
        actions.append(f"link {target.name} unchanged into {out_dir}")
    latest = new_name or target.name
    actions.append(
        f"{'write' if not in_place else 'rewrite'} the state file {fs.join(out_dir, 'checkpoint')}"
        f" naming {latest} (relative path)"
        + (", keeping a backup of the old one" if in_place and report.state_file.present else "")
    )
    if not in_place:
        actions.append(f"the source {report.model_dir} is not written")
    return Plan(
        schema=PLAN_SCHEMA,
        model_dir=report.model_dir,
        output_dir=out_dir,
        in_place=in_place,
        source_prefix=target.prefix,
        source_format=target.format,
        new_prefix=fs.join(out_dir, new_name) if new_name else None,
        step=evidence.value if evidence else None,
        step_evidence=evidence,
        add_step=evidence is not None,
        replace_keys=tuple(replace),
        kept_renamed_key=kept,
        rewrite_state=True,
        state_latest=latest,
        problems_fixed=fixed,
        warnings=warnings,
        actions=tuple(actions),
        is_noop=False,
        step_key=step_key,
        rewrite_object_graph=object_based and evidence is not None,
        adopt_existing=adopt,
        source_index=target.index,
    )


def _check_same_step(target: CheckpointReport, step: int) -> None:
    """``--step`` on a checkpoint whose step is fine: the same value is a retried command and
    changes nothing; another value would overwrite a trained step and is refused.

    Raises:
      errors.UsageError: the checkpoint's step is another value.
    """
    assert target.step is not None
    current = {e.value for e in target.step.evidence if e.source is EvidenceSource.STEP_KEY}
    if current != {step}:
        have = ", ".join(str(v) for v in sorted(current)) or "unknown"
        raise errors.UsageError(
            f"--step={step}: {target.name} already has an int64 {target.step.key} = {have}; "
            "--step applies only to checkpoints whose step is missing or broken (pass "
            f"--step={have} or leave it out)"
        )


def _why(e: StepEvidence) -> str:
    return e.detail if e.key is None else f"{e.key} ({e.dtype})"


def _free_or_identical(
    report: ScanReport,
    target: CheckpointReport,
    name: str,
    step: int,
    replace: list[str],
    step_key: str,
) -> tuple[str, bool]:
    """The first repaired name the directory does not hold, or one that already holds this
    exact repair (adopted: a repair interrupted after its index was renamed into place but
    before the state file was replaced; reusing it keeps the re-run from writing a second copy).

    Decided from the scan's listing and parsed indexes.

    Raises:
      errors.NotRepairableError: every candidate name holds another repair.
    """
    present = set(report.names)
    for candidate in names.repaired_candidates(name):
        if f"{candidate}.index" not in present:
            return candidate, False
        existing = report.checkpoint(candidate)
        if existing is not None and _is_identical_repair(target, existing, step, replace, step_key):
            return candidate, True
    raise errors.NotRepairableError(
        f"{fs.join(report.model_dir, name)}: {names.MAX_FIXED_CANDIDATES} repaired checkpoints "
        "with this name exist; remove old ones",
        path=fs.join(report.model_dir, name),
    )


def _is_identical_repair(
    target: CheckpointReport,
    existing: CheckpointReport,
    step: int,
    replace: list[str],
    step_key: str,
) -> bool:
    """``existing`` holds every entry of ``target`` that the repair keeps, byte for byte, plus
    an int64 scalar ``step_key`` equal to ``step`` (and, object-based, the rewritten object
    graph, which the scan does not decode), and nothing else."""
    src, new = target.index, existing.index
    if src is None or new is None or existing.step is None:
        return False
    status, key = existing.step.status, existing.step.key
    if status is not StepStatus.OK or key != step_key:
        return False
    values = {e.value for e in existing.step.evidence if e.source is EvidenceSource.STEP_KEY}
    if values != {step}:
        return False
    kept = [e for e in src.entries if e.is_slice or e.name not in replace]
    by_key = {e.key: e.raw_value for e in new.entries}
    # Exactly these keys: a key the plan leaves out (--drop_renamed) must not be there.
    added = {step_key.encode()} | {k.encode() for k in replace if k == OBJECT_GRAPH_KEY}
    if set(by_key) != {e.key for e in kept} | added:
        return False
    return all(by_key[e.key] == e.raw_value for e in kept)
