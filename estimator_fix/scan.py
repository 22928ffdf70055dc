"""Stage 1: say precisely what is wrong with a model directory, without importing TensorFlow.

``scan(model_dir)`` lists every checkpoint prefix on disk, reads each V2 index in pure Python
(``bundle``), checks that the data shards it references exist and are long enough, reads the
step evidence (scalars are read straight from the data shard, checksum verified), predicts what
TensorFlow's ``latest_checkpoint`` would pick from the ``checkpoint`` state file, and returns a
``ScanReport`` with a verdict and problems that carry stable codes.

Only V1-format checkpoints (one file per prefix, rare) fall back to TensorFlow's reader.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from estimator_fix import errors
from estimator_fix.checkpoint import bundle, state_file
from estimator_fix.storage import atomic, fs
from estimator_fix.types import (
    SCAN_SCHEMA,
    CheckpointReport,
    EvidenceSource,
    Format,
    Problem,
    ScanReport,
    Severity,
    ShardInfo,
    StateFileReport,
    StepEvidence,
    StepReport,
    StepStatus,
    TensorInfo,
    Verdict,
)

STEP_KEY = "global_step"
OBJECT_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"

_INDEX_SUFFIX = ".index"
_DATA_RE = re.compile(r"\.data-\d{5}-of-\d{5}$")
_V1_SHARD_RE = re.compile(r"-\d{5}-of-\d{5}$")
_SUFFIX_RE = re.compile(r"-(\d+)$")
# Last key component that names a training step: global_step, global_step_1, my_global_step,
# RL_global_step, estimator_global_step, globalStep.
_STEP_NAME_RE = re.compile(r"^(\w+_)?global_?step(_\d+)?$", re.IGNORECASE)
_ITERATIONS_NAMES = frozenset({"iter", "iterations"})
_TF2_STEP_NAMES = frozenset({"step"})
_NOT_CHECKPOINTS = (".meta", ".pbtxt", ".pb", ".json", ".txt", ".md", ".py", ".csv", ".lock")
_INTEGER_DTYPES = frozenset(
    {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
)
_FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})
_TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")


def scan(model_dir: str, *, checkpoint: str | None = None) -> ScanReport:
    """Diagnoses one model directory.

    Args:
      model_dir: a local path or any filesystem TensorFlow knows (``gs://...``).
      checkpoint: the prefix (path or basename) to treat as the target instead of the one
        TensorFlow would pick.

    Returns:
      The report; its ``verdict`` is healthy, repairable or unrepairable.

    Raises:
      errors.PathNotFoundError: ``model_dir`` or ``checkpoint`` does not exist.
      errors.NotAModelDirError: ``model_dir`` is a file, or holds no checkpoint.
      errors.StateFileError: the state file is not a valid text proto.
      errors.CorruptIndexError, errors.MissingShardError, errors.CorruptDataError: the target
        checkpoint cannot be read (other unreadable checkpoints are reported as warnings).
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
    prefixes = _find_prefixes(model_dir, names)
    stale = tuple(fs.join(model_dir, n) for n in names if atomic.is_temporary(n)) + tuple(
        fs.join(model_dir, n) for n in orphan_repair_files(names)
    )
    if not prefixes:
        raise errors.NotAModelDirError(
            f"{model_dir}: no checkpoint found (no *.index file or V1 checkpoint); pass the "
            "directory the Estimator was trained with",
            path=model_dir,
        )
    state_report, _ = state_file.read(model_dir, frozenset(prefixes))
    reports = tuple(_inspect(fs.join(model_dir, name), fmt) for name, fmt in prefixes.items())
    target = _choose_target(model_dir, state_report, reports, checkpoint)
    target_report = next(r for r in reports if r.prefix == target)
    if target_report.error is not None:
        raise _error_for(target_report.error)
    problems = (
        _state_problems(state_report, target_report)
        + _step_problems(target_report)
        + _other_problems(reports, target_report, stale)
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
    )


def _verdict(problems: Iterable[Problem]) -> Verdict:
    severities = {p.severity for p in problems}
    if Severity.UNREPAIRABLE in severities:
        return Verdict.UNREPAIRABLE
    if Severity.REPAIRABLE in severities:
        return Verdict.REPAIRABLE
    return Verdict.HEALTHY


# --- finding checkpoints ----------------------------------------------------------------------


def _find_prefixes(model_dir: str, names: list[str]) -> dict[str, Format]:
    """Maps each checkpoint prefix basename in ``names`` to its (provisional) format."""
    found: dict[str, Format] = {}
    for name in names:
        if atomic.is_temporary(name):
            continue
        if name.endswith(_INDEX_SUFFIX):
            found[name[: -len(_INDEX_SUFFIX)]] = Format.V2
    for name in names:
        if (
            name in found
            or atomic.is_temporary(name)
            or name == state_file.STATE_FILENAME
            or name.endswith(_INDEX_SUFFIX)
            or _DATA_RE.search(name)
            or name.endswith(_NOT_CHECKPOINTS)
            or name.startswith(("events.out.tfevents", "."))
        ):
            continue
        if _is_v1_file(fs.join(model_dir, name)):
            found[_V1_SHARD_RE.sub("", name)] = Format.V1
    return dict(sorted(found.items(), key=lambda kv: _order_key(kv[0])))


# model.ckpt-fixed-N and -fixed2-N (repair picks the latter when -fixed-N holds another repair).
_REPAIRED_DATA_RE = re.compile(r"-fixed\d*-\d+\.data-\d{5}-of-\d{5}$")


def orphan_repair_files(names: list[str]) -> list[str]:
    """Data files of a repaired checkpoint whose index never arrived (an interrupted commit)."""
    present = set(names)
    return [
        n
        for n in names
        if _REPAIRED_DATA_RE.search(n) and n.split(".data-")[0] + _INDEX_SUFFIX not in present
    ]


def _is_v1_file(path: str) -> bool:
    """A V1 checkpoint is a single table file: same footer magic as an index."""
    if fs.isdir(path):
        return False
    n = fs.size(path)
    return n >= 48 and fs.read_range(path, n - 8, 8) == _TABLE_MAGIC


def step_from_suffix(prefix: str) -> int | None:
    """The ``N`` of ``.../model.ckpt-N``. Does not perform I/O."""
    m = _SUFFIX_RE.search(fs.basename(prefix))
    return int(m.group(1)) if m else None


def _order_key(name: str) -> tuple[int, str]:
    step = step_from_suffix(name)
    return (-1 if step is None else step, name)


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


# --- one checkpoint ---------------------------------------------------------------------------


def _inspect(prefix: str, fmt: Format) -> CheckpointReport:
    try:
        if fmt is Format.V1:
            return _inspect_v1(prefix)
        return _inspect_v2(prefix)
    except (
        errors.CorruptIndexError,
        errors.MissingShardError,
        errors.CorruptDataError,
        errors.UnreadableError,
    ) as e:
        problem = Problem(
            code=_ERROR_CODES[type(e)],
            severity=Severity.UNREPAIRABLE,
            message=str(e),
            path=e.path,
        )
        return CheckpointReport(
            prefix=prefix,
            name=fs.basename(prefix),
            format=None,
            tensor_count=0,
            total_bytes=0,
            shards=(),
            step=None,
            error=problem,
        )


_ERROR_CODES: dict[type[errors.Error], str] = {
    errors.CorruptIndexError: "index_corrupt",
    errors.MissingShardError: "shard_missing",
    errors.CorruptDataError: "data_corrupt",
    errors.UnreadableError: "unreadable",
}


def _error_for(problem: Problem) -> errors.Error:
    cls = next(c for c, code in _ERROR_CODES.items() if code == problem.code)
    return cls(problem.message, path=problem.path)


def _inspect_v2(prefix: str) -> CheckpointReport:
    index = bundle.read_index(bundle.index_path(prefix))
    shards = _check_shards(prefix, index)
    variables = index.variables()
    keys = {e.name for e in variables}
    fmt = Format.OBJECT_BASED if OBJECT_GRAPH_KEY in keys else Format.V2
    tensors = tuple(TensorInfo(e.name, e.dtype_name, e.shape) for e in variables)

    def read_value(name: str) -> float | int | bool:
        entry = index.get(name)
        assert entry is not None
        return bundle.read_scalar(prefix, index, entry)

    step = _step_report(prefix, fmt, tensors, read_value)
    return CheckpointReport(
        prefix=prefix,
        name=fs.basename(prefix),
        format=fmt,
        tensor_count=len(variables),
        total_bytes=index.total_bytes,
        shards=shards,
        step=step,
        error=None,
        tensors=tensors,
    )


def _check_shards(prefix: str, index: bundle.Index) -> tuple[ShardInfo, ...]:
    needed = [0] * index.header.num_shards
    for e in index.entries:
        if e.size and 0 <= e.shard_id < len(needed):
            needed[e.shard_id] = max(needed[e.shard_id], e.offset + e.size)
        elif e.size:
            raise errors.CorruptIndexError(
                f"{index.path}: entry {e.name!r} names data shard {e.shard_id} of "
                f"{index.header.num_shards}; restore the index from the original copy",
                path=index.path,
            )
    shards = []
    for shard_id, need in enumerate(needed):
        path = bundle.data_path(prefix, shard_id, index.header.num_shards)
        present = fs.exists(path)
        size = fs.size(path) if present else None
        shards.append(ShardInfo(path=path, exists=present, size=size, needed=need))
        if need and not present:
            raise errors.MissingShardError(
                f"{path}: data shard missing (the index references {need} bytes in it); copy it "
                "from the original checkpoint",
                path=path,
            )
        if size is not None and size < need:
            raise errors.MissingShardError(
                f"{path}: data shard truncated ({size} bytes, the index needs {need}); copy it "
                "again from the original checkpoint",
                path=path,
            )
    return tuple(shards)


def _inspect_v1(prefix: str) -> CheckpointReport:
    """V1 checkpoints: TensorFlow's own reader (the only TF import ``scan`` may make)."""
    import numpy as np
    import tensorflow as tf

    try:
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)
        dtypes = reader.get_variable_to_dtype_map()
        shapes = reader.get_variable_to_shape_map()
    except Exception as e:  # TF raises DataLossError, OpError, RuntimeError...
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise errors.CorruptIndexError(
            f"{prefix}: unreadable V1 checkpoint ({first}); restore it from the original copy",
            path=prefix,
        ) from e
    tensors = tuple(
        TensorInfo(name, dtypes[name].name, tuple(int(d) for d in shapes[name]))
        for name in sorted(dtypes)
    )

    def read_value(name: str) -> float | int | bool:
        value = np.asarray(reader.get_tensor(name)).reshape(-1)[0]
        return value.item()

    step = _step_report(prefix, Format.V1, tensors, read_value)
    size = fs.size(prefix) if fs.exists(prefix) else 0
    return CheckpointReport(
        prefix=prefix,
        name=fs.basename(prefix),
        format=Format.V1,
        tensor_count=len(tensors),
        total_bytes=size,
        shards=(ShardInfo(path=prefix, exists=True, size=size, needed=size),),
        step=None if step is None else step,
        error=None,
        tensors=tensors,
    )


# --- the step -------------------------------------------------------------------------------


def _base_name(key: str) -> str:
    return key[: -len(OBJECT_SUFFIX)] if key.endswith(OBJECT_SUFFIX) else key


def _last(key: str) -> str:
    return _base_name(key).rsplit("/", 1)[-1]


def _is_scalarish(shape: tuple[int, ...]) -> bool:
    return all(d == 1 for d in shape)


def _step_report(
    prefix: str,
    fmt: Format,
    tensors: tuple[TensorInfo, ...],
    read_value: object,
) -> StepReport:
    """Classifies the step and gathers every piece of evidence for its value."""
    assert callable(read_value)
    evidence: list[StepEvidence] = []
    by_name = {t.name: t for t in tensors}

    def add(source: EvidenceSource, t: TensorInfo, detail: str) -> None:
        if t.dtype not in _INTEGER_DTYPES | _FLOAT_DTYPES or not _is_scalarish(t.shape):
            return
        value = read_value(t.name)
        if isinstance(value, float) and not value.is_integer():
            return
        evidence.append(StepEvidence(source, int(value), key=t.name, dtype=t.dtype, detail=detail))

    step_t = by_name.get(STEP_KEY)
    if step_t is not None:
        add(EvidenceSource.STEP_KEY, step_t, "value of the global_step key")
    renamed: list[TensorInfo] = []
    for t in tensors:
        if t.name == STEP_KEY:
            continue
        last = _last(t.name)
        if _STEP_NAME_RE.match(last):
            renamed.append(t)
            add(EvidenceSource.RENAMED_KEY, t, "a step variable under another key")
        elif last in _ITERATIONS_NAMES and t.dtype in _INTEGER_DTYPES:
            add(EvidenceSource.OPTIMIZER_ITERATIONS, t, "optimizer iteration counter")
        elif last in _TF2_STEP_NAMES and t.dtype in _INTEGER_DTYPES:
            add(EvidenceSource.TF2_STEP, t, "TF2 step variable")
    suffix = step_from_suffix(prefix)
    if suffix is not None:
        evidence.append(
            StepEvidence(
                EvidenceSource.PREFIX_SUFFIX,
                suffix,
                detail=f"the -{suffix} suffix of {fs.basename(prefix)}",
            )
        )
    conflict = len({e.value for e in evidence}) > 1

    if step_t is not None:
        if step_t.dtype != "int64":
            status = StepStatus.WRONG_DTYPE
        elif step_t.shape != ():
            status = StepStatus.WRONG_SHAPE
        else:
            status = StepStatus.OK
        return StepReport(status, STEP_KEY, step_t.dtype, step_t.shape, tuple(evidence), conflict)
    if fmt is Format.OBJECT_BASED:
        ok = [
            t
            for t in renamed
            if t.name.endswith(OBJECT_SUFFIX) and t.dtype == "int64" and t.shape == ()
        ]
        if ok:
            t = ok[0]
            return StepReport(StepStatus.OK, t.name, t.dtype, t.shape, tuple(evidence), conflict)
    if renamed:
        t = renamed[0]
        return StepReport(StepStatus.RENAMED, t.name, t.dtype, t.shape, tuple(evidence), conflict)
    return StepReport(StepStatus.MISSING, None, None, None, tuple(evidence), conflict)


# --- problems -------------------------------------------------------------------------------


_RANDOM_WEIGHTS = (
    "tf.train.latest_checkpoint returns None: export_saved_model fails with \"Couldn't find "
    'trained model" and Estimator.predict/evaluate silently run on random initial weights'
)


def _state_problems(state: StateFileReport, target: CheckpointReport) -> tuple[Problem, ...]:
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


def _step_problems(target: CheckpointReport) -> tuple[Problem, ...]:
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
    if target.format is Format.OBJECT_BASED:
        return (
            Problem(
                "object_based_step_missing",
                Severity.UNREPAIRABLE,
                f"{target.name}: TF2 object-based checkpoint without an int64 step; a plain "
                "global_step key would be ignored by the object-graph restore",
                target.prefix,
                "re-export from the Keras model, or retrain one step to write a new checkpoint",
            ),
        )
    if step.status is StepStatus.MISSING:
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
                f"{target.name}: no global_step key, the step is stored as {step.key!r} "
                f"({step.dtype})",
                target.prefix,
                f"repair adds an int64 global_step and keeps {step.key!r}",
            )
        )
    elif step.status is StepStatus.WRONG_DTYPE:
        fixable = step.dtype in _INTEGER_DTYPES | _FLOAT_DTYPES and any(
            e.source is EvidenceSource.STEP_KEY for e in step.evidence
        )
        out.append(
            Problem(
                "step_wrong_dtype",
                Severity.REPAIRABLE if fixable else Severity.UNREPAIRABLE,
                f"{target.name}: global_step is {step.dtype}, Estimators need int64 "
                '("expected dtype int64 does not equal original dtype")',
                target.prefix,
                "repair replaces it with an int64 global_step of the same value"
                if fixable
                else "this tool cannot read a step from it; retrain or pass a healthy checkpoint",
            )
        )
    elif step.status is StepStatus.WRONG_SHAPE:
        fixable = step.shape is not None and _is_scalarish(step.shape)
        out.append(
            Problem(
                "step_wrong_shape",
                Severity.REPAIRABLE if fixable else Severity.UNREPAIRABLE,
                f"{target.name}: global_step has shape {list(step.shape or ())}, Estimators "
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


def _other_problems(
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
