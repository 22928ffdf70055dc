"""Stage 1: say precisely what is wrong with a model directory, without importing TensorFlow.

``scan(model_dir)`` lists every checkpoint prefix on disk, reads each V2 index in pure Python
(``checkpoint.index_file``), checks that the data shards it references exist and are long
enough, reads the step evidence (scalars are read straight from the data shard, checksum
verified), predicts what TensorFlow's ``latest_checkpoint`` would pick from the ``checkpoint``
state file, and returns a ``ScanReport`` with a verdict and problems that carry stable codes.
The report carries what it read (the directory listing, each parsed index) so that the later
stages never read it again.

- ``inspect``: finding the checkpoints on disk and reading each one;
- ``step``: what a checkpoint says about ``global_step``, and the evidence for its value;
- ``problems``: the findings, with stable codes, from the state file, the step and the rest.

Only V1-format checkpoints (one file per prefix, rare) fall back to TensorFlow's reader.
"""

from __future__ import annotations

from collections.abc import Iterable

from estimator_fix import errors
from estimator_fix.checkpoint import integrity, state_file
from estimator_fix.scan.inspect import error_for, find_prefixes, inspect
from estimator_fix.scan.problems import other_problems, state_problems, step_problems
from estimator_fix.storage import fs
from estimator_fix.storage import names as naming
from estimator_fix.types import (
    SCAN_SCHEMA,
    CheckpointReport,
    Problem,
    ScanReport,
    Severity,
    StateFileReport,
    Verdict,
)


def scan(model_dir: str, *, checkpoint: str | None = None, deep: bool = False) -> ScanReport:
    """Diagnoses one model directory.

    Args:
      model_dir: a local path or any filesystem TensorFlow knows (``gs://...``).
      checkpoint: the prefix (path or basename) to treat as the target instead of the one
        TensorFlow would pick.
      deep: also read every tensor of the target checkpoint and verify its crc32c
        (``checkpoint.integrity``); without it only the shards' presence and sizes are checked.

    Returns:
      The report; its ``verdict`` is healthy, repairable or unrepairable.

    Raises:
      errors.PathNotFoundError: ``model_dir`` or ``checkpoint`` does not exist.
      errors.NotAModelDirError: ``model_dir`` is a file, or holds no checkpoint.
      errors.StateFileError: the state file is not a valid text proto.
      errors.CorruptIndexError, errors.MissingShardError, errors.CorruptDataError: the target
        checkpoint cannot be read (other unreadable checkpoints are reported as warnings);
        with ``deep``, a tensor of the target fails its checksum.
    """
    model_dir = fs.normalize(model_dir)
    if not fs.exists(model_dir):
        raise errors.PathNotFoundError(
            f"{model_dir}: no such directory; pass the model directory that holds the checkpoint "
            "files",
            path=model_dir,
        )
    if not fs.isdir(model_dir):
        hint = fs.dirname(model_dir) or "."
        raise errors.NotAModelDirError(
            f"{model_dir}: is a file, not a model directory; pass --model_dir={hint} and, to pick "
            "this checkpoint, --checkpoint",
            path=model_dir,
        )
    names = fs.listdir(model_dir)
    prefixes = find_prefixes(model_dir, names)
    stale = tuple(fs.join(model_dir, n) for n in names if naming.is_temporary(n)) + tuple(
        fs.join(model_dir, n) for n in naming.orphan_repair_files(names)
    )
    if not prefixes:
        raise errors.NotAModelDirError(
            f"{model_dir}: no checkpoint found (no *.index file or V1 checkpoint); pass the "
            "directory the Estimator was trained with",
            path=model_dir,
        )
    state_report, _ = state_file.read(model_dir, frozenset(prefixes))
    reports = tuple(inspect(fs.join(model_dir, name), fmt) for name, fmt in prefixes.items())
    target = _choose_target(model_dir, state_report, reports, checkpoint)
    target_report = next(r for r in reports if r.prefix == target)
    if target_report.error is not None:
        raise error_for(target_report.error)
    if deep and target_report.index is not None:
        integrity.check_tensors(target_report.prefix, target_report.index)
    problems = (
        state_problems(state_report, target_report)
        + step_problems(target_report)
        + other_problems(reports, target_report, stale)
    )
    return ScanReport(
        schema=SCAN_SCHEMA,
        model_dir=model_dir,
        verdict=_verdict(problems),
        target=target,
        state_file=state_report,
        checkpoints=reports,
        problems=problems,
        stale_temporaries=stale,
        names=tuple(names),
    )


def _verdict(problems: Iterable[Problem]) -> Verdict:
    severities = {p.severity for p in problems}
    if Severity.UNREPAIRABLE in severities:
        return Verdict.UNREPAIRABLE
    if Severity.REPAIRABLE in severities:
        return Verdict.REPAIRABLE
    return Verdict.HEALTHY


def _choose_target(
    model_dir: str,
    state: StateFileReport,
    reports: tuple[CheckpointReport, ...],
    requested: str | None,
) -> str:
    by_name = {r.name: r.prefix for r in reports}
    if requested is not None:
        base = fs.basename(requested)
        if base in by_name and (requested == base or fs.normalize(requested) == by_name[base]):
            return by_name[base]
        raise errors.PathNotFoundError(
            f"{requested}: no such checkpoint in {model_dir}; found: {', '.join(by_name)}",
            path=requested,
        )
    if state.entries and state.entries[0].is_latest:
        latest = state.entries[0]
        if latest.exists and latest.inside_dir and fs.basename(latest.resolves_to) in by_name:
            return by_name[fs.basename(latest.resolves_to)]
        if latest.local_match is not None:
            return by_name[latest.local_match]
    return reports[-1].prefix  # newest by step suffix
