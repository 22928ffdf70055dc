"""What a checkpoint says about ``global_step``: its status and every piece of step evidence.

Evidence is gathered, never resolved: the step key's value, renamed step keys, optimizer
iteration counters, a TF2 ``step`` variable and the prefix's ``-N`` suffix are all listed with
their source, and values that disagree are a conflict for ``plan`` to refuse. Does not perform
I/O itself: values are read through the callback the caller passes.

Which key is "the step" depends on the format: ``global_step`` for name-based checkpoints, and
``estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE`` for object-based ones, because the only
Estimator that writes those (``tf.keras.estimator.model_to_estimator``) restores its step from
that key and nothing else. Keras optimizers count steps under ``optimizer/iter`` (legacy) or
``optimizer/_iterations`` (the new ones); a ``save_weights`` prefix (``model.ckpt``) has no
``-N`` suffix, so for it the counter (or ``--step``) is the only evidence.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from estimator_fix.checkpoint.keys import OBJECT_STEP_KEY, OBJECT_SUFFIX, STEP_KEY
from estimator_fix.storage import fs
from estimator_fix.types import (
    EvidenceSource,
    Format,
    StepEvidence,
    StepReport,
    StepStatus,
    TensorInfo,
)

_SUFFIX_RE = re.compile(r"-(\d+)$")
# Last key component that names a training step: global_step, global_step_1, my_global_step,
# RL_global_step, estimator_global_step, globalStep.
_STEP_NAME_RE = re.compile(r"^(\w+_)?global_?step(_\d+)?$", re.IGNORECASE)
# Legacy Keras optimizers save `iter`, the new ones `_iterations`, TF2 / Keras 3 `iterations`.
_ITERATIONS_NAMES = frozenset({"iter", "iterations", "_iterations"})
_TF2_STEP_NAMES = frozenset({"step"})
INTEGER_DTYPES = frozenset(
    {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
)
FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})


def step_from_suffix(prefix: str) -> int | None:
    """The ``N`` of ``.../model.ckpt-N``. Does not perform I/O."""
    m = _SUFFIX_RE.search(fs.basename(prefix))
    return int(m.group(1)) if m else None


def _base_name(key: str) -> str:
    return key[: -len(OBJECT_SUFFIX)] if key.endswith(OBJECT_SUFFIX) else key


def _last(key: str) -> str:
    return _base_name(key).rsplit("/", 1)[-1]


def step_key_for(fmt: Format) -> str:
    """The key the Estimator restores the step from, for a checkpoint of this format.

    Does not perform I/O.
    """
    return OBJECT_STEP_KEY if fmt is Format.OBJECT_BASED else STEP_KEY


def is_scalarish(shape: tuple[int, ...]) -> bool:
    return all(d == 1 for d in shape)


def step_report(
    prefix: str,
    fmt: Format,
    tensors: tuple[TensorInfo, ...],
    read_value: Callable[[str], float | int | bool],
) -> StepReport:
    """Classifies the step and gathers every piece of evidence for its value."""
    evidence: list[StepEvidence] = []
    by_name = {t.name: t for t in tensors}

    def add(source: EvidenceSource, t: TensorInfo, detail: str) -> None:
        if t.dtype not in INTEGER_DTYPES | FLOAT_DTYPES or not is_scalarish(t.shape):
            return
        value = read_value(t.name)
        if isinstance(value, float) and not value.is_integer():
            return
        evidence.append(StepEvidence(source, int(value), key=t.name, dtype=t.dtype, detail=detail))

    step_key = step_key_for(fmt)
    step_t = by_name.get(step_key)
    if step_t is not None:
        add(EvidenceSource.STEP_KEY, step_t, f"value of the {_base_name(step_key)} key")
    renamed: list[TensorInfo] = []
    for t in tensors:
        if t.name == step_key:
            continue
        last = _last(t.name)
        if _STEP_NAME_RE.match(last):
            renamed.append(t)
            add(EvidenceSource.RENAMED_KEY, t, "a step variable under another key")
        elif last in _ITERATIONS_NAMES and t.dtype in INTEGER_DTYPES:
            add(EvidenceSource.OPTIMIZER_ITERATIONS, t, "optimizer iteration counter")
        elif last in _TF2_STEP_NAMES and t.dtype in INTEGER_DTYPES:
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
        return StepReport(status, step_key, step_t.dtype, step_t.shape, tuple(evidence), conflict)
    if renamed:
        t = renamed[0]
        return StepReport(StepStatus.RENAMED, t.name, t.dtype, t.shape, tuple(evidence), conflict)
    return StepReport(StepStatus.MISSING, None, None, None, tuple(evidence), conflict)
