"""Short human-readable text for each stage's result. Pure functions: no I/O, no printing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from estimator_fix.types import CheckpointReport, ScanReport, Severity, StepReport, Verdict

if TYPE_CHECKING:
    from estimator_fix.export import ExportResult
    from estimator_fix.fix import FixResult
    from estimator_fix.plan import Plan
    from estimator_fix.repair import RepairResult
    from estimator_fix.surgery import SurgeryResult
    from estimator_fix.verify import VerifyResult

_EXIT = {Verdict.HEALTHY: 0, Verdict.REPAIRABLE: 3, Verdict.UNREPAIRABLE: 4}


def human_bytes(n: int) -> str:
    """Does not perform I/O."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _step_line(step: StepReport | None) -> str:
    if step is None:
        return "unreadable"
    evidence = ", ".join(f"{e.key or e.source.value}={e.value}" for e in step.evidence) or "none"
    key = f" ({step.key}: {step.dtype}{list(step.shape) if step.shape else ''})" if step.key else ""
    conflict = " CONFLICT" if step.conflict else ""
    return f"{step.status.value}{key}; evidence: {evidence}{conflict}"


def _checkpoint_line(c: CheckpointReport, *, target: bool) -> str:
    mark = "*" if target else " "
    if c.error is not None:
        return f" {mark} {c.name}  UNREADABLE: {c.error.message}"
    shards = len(c.shards)
    return (
        f" {mark} {c.name}  {c.format.value if c.format else '?'}  {c.tensor_count} tensors  "
        f"{human_bytes(c.total_bytes)}  {shards} shard{'s' if shards != 1 else ''}  "
        f"step: {_step_line(c.step)}"
    )


def scan_text(r: ScanReport) -> str:
    lines = [f"{r.model_dir}: {r.verdict.value.upper()} (exit {_EXIT[r.verdict]})"]
    sf = r.state_file
    if not sf.present:
        lines.append("state file: missing")
    else:
        latest = sf.tf_latest or "none"
        lines.append(
            f"state file: {len(sf.entries)} entries; tf.train.latest_checkpoint -> {latest}"
        )
    lines.append(f"target checkpoint: {r.target}")
    lines.append("checkpoints on disk (* = target):")
    lines.extend(_checkpoint_line(c, target=c.prefix == r.target) for c in r.checkpoints)
    shown = [p for p in r.problems if p.severity is not Severity.INFO] + [
        p for p in r.problems if p.severity is Severity.INFO
    ]
    if shown:
        lines.append("problems:")
        for p in shown:
            lines.append(f"  [{p.severity.value}] {p.code}: {p.message}")
            if p.fix:
                lines.append(f"      fix: {p.fix}")
    else:
        lines.append("problems: none")
    return "\n".join(lines) + "\n"


def plan_text(p: Plan) -> str:
    head = "nothing to do" if p.is_noop else "plan"
    lines = [f"{p.model_dir}: {head}"]
    if not p.is_noop:
        lines.append(f"source checkpoint: {p.source_prefix}")
        if p.step_evidence is not None:
            e = p.step_evidence
            lines.append(
                f"step: {p.step} from {e.source.value}"
                + (f" ({e.key}, {e.dtype})" if e.key else f" ({e.detail})")
            )
        for prob in p.problems_fixed:
            lines.append(f"fixes: {prob.code}: {prob.message}")
    lines.extend(f"  - {a}" for a in p.actions)
    lines.extend(f"warning: {w}" for w in p.warnings)
    return "\n".join(lines) + "\n"


def repair_text(r: RepairResult) -> str:
    where = r.output_dir if r.output_dir != r.model_dir else r.model_dir
    lines = [f"{where}: repaired" + (f" in {r.seconds:.2f} s" if r.seconds else "")]
    if r.new_prefix:
        lines.append(f"new checkpoint: {r.new_prefix} (global_step = {r.step})")
    lines.append(
        f"state file: {r.state_file}"
        + (f" (old one kept as {r.state_backup})" if r.state_backup else "")
    )
    lines.append("data files: " + _carried_text(r))
    lines.extend(f"  - {a}" for a in r.actions)
    lines.extend(f"check: {c}" for c in r.checks)
    lines.extend(f"removed stale temporary: {s}" for s in r.removed_stale)
    lines.append("originals: untouched")
    return "\n".join(lines) + "\n"


_COPY_METHODS = {
    "hard_link": "hard-linked",
    "server_side": "copied inside the object store",
    "local_copy": "copied (could not be hard-linked)",
    "stream": "copied through this process (tf.io.gfile.copy)",
    "rewritten": "written anew",
    "none": "none copied",
}


def _carried_text(r: RepairResult) -> str:
    """How the data files were carried, and the bytes that moved. Does not perform I/O."""
    text = _COPY_METHODS.get(r.copy_method, r.copy_method)
    if r.copy_method in ("none", "rewritten"):
        return text
    moved = human_bytes(r.worker_bytes)
    return f"{text}, {human_bytes(r.copied_bytes)}; {moved} through this process"


def surgery_text(r: SurgeryResult, *, listed: int = 20) -> str:
    """``rename``/``migrate``: what changed (the first ``listed`` renames) and every file."""
    verb = "would write (dry run, nothing written)" if r.dry_run else "wrote"
    lines = [f"{r.source_prefix} -> {r.new_prefix}"]
    lines.append(
        f"{len(r.renames)} keys renamed, {len(r.dropped)} dropped, {len(r.added)} added"
        + ("" if r.dry_run else f" in {r.seconds:.2f} s")
    )
    items = list(r.renames.items())
    lines.extend(f"  {old} -> {new}" for old, new in items[:listed])
    if len(items) > listed:
        lines.append(f"  ... and {len(items) - listed} more (--json lists all)")
    lines.extend(f"  - {d}" for d in r.dropped)
    lines.extend(f"  + {a}" for a in r.added)
    lines.extend(f"note: {n}" for n in r.notes)
    lines.append(f"{verb}:")
    lines.extend(f"  {f}" for f in r.files)
    if not r.dry_run:
        data = "hard-linked" if r.linked else "copied"
        lines.append(f"data files: {data}; new bytes: {human_bytes(r.new_bytes)}")
    lines.extend(f"check: {c}" for c in r.checks)
    lines.extend(f"removed stale temporary: {s}" for s in r.removed_stale)
    lines.append("originals: untouched")
    return "\n".join(lines) + "\n"


def export_text(r: ExportResult) -> str:
    p = r.preflight
    return (
        f"exported: {r.export_path}\n"
        f"checkpoint: {r.checkpoint} (mode {r.mode})\n"
        f"pre-flight: all {p.restored_keys} keys the export restores match the checkpoint"
        + (" (through its object graph)" if p.object_based else "")
        + f"\nin {r.seconds:.2f} s\n"
    )


def _parity_lines(verify: dict[str, Any]) -> list[str]:
    lines = []
    for p in verify.get("parity", ()):
        if p.get("prediction_key") is None:
            continue
        if p.get("max_abs_diff") is not None:
            how = f"max |diff| = {p['max_abs_diff']:.3g}"
        else:
            how = "equal" if p.get("ok") else f"{p.get('mismatched')} elements differ"
        lines.append(
            f"  {p['signature']}/{p['output']} vs predict()['{p['prediction_key']}']: {how}"
        )
    return lines


def verify_text(r: VerifyResult) -> str:
    d = r.to_dict()
    lines = [
        f"{r.export_path}: {'VERIFIED' if r.ok else 'FAILED'}",
        f"signatures: {', '.join(r.signatures)}; inputs: {r.inputs_source} "
        f"({r.num_examples} examples)",
        f"global_step: exported {r.exported_step}"
        + (f", checkpoint {r.checkpoint_step}" if r.checkpoint_step is not None else ""),
    ]
    parity = _parity_lines(d)
    if parity:
        lines.append(f"parity with Estimator.predict (tolerance {r.tolerance:g}):")
        lines.extend(parity)
    lines.extend(f"check: {c}" for c in r.checks)
    return "\n".join(lines) + "\n"


def fix_text(r: FixResult) -> str:
    lines = [f"{r.model_dir}: was {r.verdict_before.upper()}"]
    for p in r.problems:
        if p.severity in (Severity.REPAIRABLE, Severity.UNREPAIRABLE, Severity.WARNING):
            lines.append(f"  [{p.severity.value}] {p.code}: {p.message}")
    if r.export is None:
        lines.append("plan (dry run, nothing written):")
        lines.extend(f"  - {a}" for a in r.plan.actions)
        return "\n".join(lines) + "\n"
    if r.repair is None:
        lines.append("changed: nothing (the checkpoint needed no repair)")
    else:
        rep = r.repair
        lines.append("changed:")
        lines.extend(f"  + {f}" for f in rep.files_added)
        if rep.state_backup:
            lines.append(f"  state file rewritten; old one kept as {rep.state_backup}")
        lines.append("  originals untouched" + ("; data hard-linked" if rep.linked else ""))
    lines.append(f"SavedModel: {r.export_path}")
    lines.append(f"  from checkpoint {r.export.checkpoint}")
    if r.verify is not None:
        v = r.verify
        lines.append(
            f"verified: loads, serves ({', '.join(v.signatures)}), global_step {v.exported_step}"
        )
        lines.extend(_parity_lines(v.to_dict()))
    lines.append(f"done in {r.seconds:.2f} s")
    return "\n".join(lines) + "\n"
