"""``--to=ema``: serving weights from ``tf.compat.v1.train.ExponentialMovingAverage`` shadows.

A model trained with ``ExponentialMovingAverage(...).apply(variables)`` saves each averaged
variable ``w`` next to its shadow ``w/ExponentialMovingAverage`` (same dtype and shape; a
partitioned variable's shadow is partitioned like it). TF1 serving code restored the shadows
through ``ema.variables_to_restore()``; a plain export restores ``w``. The edit swaps names:
``w`` now names the shadow's bytes, and the non-averaged values stay in the checkpoint under
``w/NonAveraged``; the ``w/ExponentialMovingAverage`` key is gone, so a graph that still builds
the average (the training graph) fails to restore from the result instead of restoring raw
values as averages: resume training from the original checkpoint. Everything else (the step,
optimizer slots, variables that were not averaged, a zero-debiased average's ``biased`` and
``local_step`` helpers) keeps its key. No tensor byte is read. Does not perform I/O.
"""

from __future__ import annotations

from estimator_fix import errors
from estimator_fix.checkpoint.index_file import Index
from estimator_fix.checkpoint.keys import OBJECT_GRAPH_KEY, STEP_KEY
from estimator_fix.surgery import Edit

SHADOW = "ExponentialMovingAverage"  # the average's default name, a suffix of every shadow
NON_AVERAGED = "NonAveraged"  # where the non-averaged values are kept


def plan(prefix: str, index: Index) -> Edit:
    """The name swap that makes every averaged variable's key hold its shadow's values.

    Raises:
      errors.UsageError: an object-based checkpoint (its keys are object paths).
      errors.NotRepairableError: no shadows, a shadow that does not match its variable, or a
        key the non-averaged values would go to is taken.
    """
    names = {e.name: e for e in index.variables()}
    if OBJECT_GRAPH_KEY in names:
        raise errors.UsageError(
            f"{prefix}: an object-based checkpoint; --to=ema works on the name-based "
            "checkpoints of tf.compat.v1 training; nothing was written"
        )
    renames: dict[str, str] = {}
    notes: list[str] = []
    suffix = "/" + SHADOW
    for shadow in sorted(n for n in names if n.endswith(suffix)):
        var = shadow[: -len(suffix)]
        if var not in names or var == STEP_KEY:
            why = "the step is never averaged" if var == STEP_KEY else f"no variable {var!r}"
            notes.append(f"kept {shadow} as it is: {why}")
            continue
        a, b = names[var], names[shadow]
        if (a.dtype, a.shape, len(a.slices)) != (b.dtype, b.shape, len(b.slices)):
            raise errors.NotRepairableError(
                f"{prefix}: {shadow!r} ({b.dtype_name} {list(b.shape)}) does not match "
                f"{var!r} ({a.dtype_name} {list(a.shape)}); it is not that variable's moving "
                "average; nothing was written",
                path=prefix,
            )
        kept = f"{var}/{NON_AVERAGED}"
        if kept in names:
            raise errors.NotRepairableError(
                f"{prefix}: {kept!r} is already a key; the non-averaged values of {var!r} have "
                "nowhere to go; nothing was written",
                path=prefix,
            )
        renames[shadow] = var
        renames[var] = kept
    if not renames:
        raise errors.NotRepairableError(
            f"{prefix}: no <variable>/{SHADOW} keys; the model was not trained with "
            "tf.compat.v1.train.ExponentialMovingAverage (under its default name); nothing "
            "was written",
            path=prefix,
        )
    averaged = len(renames) // 2
    notes.insert(
        0,
        f"{averaged} averaged variable(s): each key now names its {SHADOW} shadow's values; "
        f"the non-averaged values are kept under <variable>/{NON_AVERAGED}; the {SHADOW} keys "
        "are gone, so resume training from the original checkpoint",
    )
    return Edit(renames=renames, notes=tuple(notes))
