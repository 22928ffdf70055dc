"""Short human-readable text for each stage's result. Pure functions: no I/O, no printing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from estimator_fix.types import CheckpointReport, ScanReport, Severity, StepReport, Verdict

if TYPE_CHECKING:
    from estimator_fix.plan import Plan
    from estimator_fix.repair import RepairResult

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
    lines.append("data files: " + ("hard-linked, no bytes copied" if r.linked else "copied"))
    lines.extend(f"  - {a}" for a in r.actions)
    lines.extend(f"check: {c}" for c in r.checks)
    lines.extend(f"removed stale temporary: {s}" for s in r.removed_stale)
    lines.append("originals: untouched")
    return "\n".join(lines) + "\n"
