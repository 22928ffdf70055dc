"""The checkpoint side: its ``global_step``, ``Estimator.predict`` on it, output-by-output parity.

``compare_with_predict`` runs ``Estimator.predict`` on exactly the features the SavedModel was
fed, restoring the checkpoint prefix given (never the state file's latest), takes its first
batch (exactly the rows fed: a model whose predictions do not read the input would otherwise
never reach the end of it) and compares every signature output with the prediction key it is:
the one whose tensor the model_fn's ``export_outputs`` exported (``pairing``), else the one its
name says. Numbers by max absolute difference against the tolerance (NaN equals NaN, an inf
equals the same inf), strings exactly.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from estimator_fix import errors
from estimator_fix.model_code import deadline, userspec
from estimator_fix.model_code.deadline import DEFAULT_TIMEOUT_SECONDS
from estimator_fix.storage import fs
from estimator_fix.verify.pairing import SINGLE_OUTPUT_KEY, Pairing, feature_tensors, pair_outputs
from estimator_fix.verify.result import OutputParity
from estimator_fix.verify.savedmodel import Run

# The name rules, for outputs the graph does not pair: signature outputs whose key differs from
# the Estimator's prediction key, in the order tried (the first candidate with a matching shape
# wins). The canned heads' classification signature has `scores` (= probabilities) and `classes`
# (= all_classes, the class names tiled per row: another tensor than any prediction); the
# regression signature has `outputs` (= predictions). A model_fn whose ``predictions`` is one
# tensor, not a dict, exports it as `output` (the PredictOutput default); ``predict`` files such
# predictions under that same key.
_OUTPUT_ALIASES: dict[str, tuple[str, ...]] = {
    "scores": ("probabilities", SINGLE_OUTPUT_KEY),
    "classes": ("classes", "all_classes"),
    "outputs": ("predictions", SINGLE_OUTPUT_KEY),
}


def read_checkpoint_step(checkpoint_path: str) -> int | None:
    """``global_step`` of a checkpoint prefix (or the object-based step of a Keras one).

    Raises:
      errors.PathNotFoundError: the checkpoint does not exist.
      errors.InputError: it is a directory or cannot be read.
    """
    import tensorflow as tf

    if fs.isdir(checkpoint_path):
        raise errors.InputError(
            f"{checkpoint_path}: is a directory; pass a checkpoint prefix such as "
            f"{fs.join(checkpoint_path, 'model.ckpt-N')}",
            path=checkpoint_path,
        )
    try:
        reader = tf.train.load_checkpoint(checkpoint_path)
    except (tf.errors.NotFoundError, ValueError) as e:
        raise errors.PathNotFoundError(
            f"{checkpoint_path}: no checkpoint with this prefix; pass an existing prefix "
            "(the path without .index)",
            path=checkpoint_path,
        ) from e
    except tf.errors.OpError as e:
        raise errors.InputError(
            f"{checkpoint_path}: cannot read the checkpoint ({errors.tf_reason(e)}); run "
            "estimator-fix scan on its directory",
            path=checkpoint_path,
        ) from e
    keys = reader.get_variable_to_dtype_map()
    key = "global_step" if "global_step" in keys else None
    if key is None:
        object_based = [k for k in keys if k.endswith("global_step/.ATTRIBUTES/VARIABLE_VALUE")]
        key = object_based[0] if len(object_based) == 1 else None
    if key is None:
        return None
    value = np.asarray(reader.get_tensor(key))
    return int(value.reshape(-1)[0]) if value.size == 1 else None


def compare_with_predict(
    ran: Run,
    estimator: Any,
    checkpoint_path: str,
    tolerance: float,
    *,
    serving_input_fn: Callable[[], Any] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
) -> tuple[list[OutputParity], list[str]]:
    """``Estimator.predict`` on the features the SavedModel got, compared output by output.

    Args:
      ran: what the SavedModel's signatures returned, and the features they were fed.
      estimator: the user's Estimator.
      checkpoint_path: the prefix predict restores.
      tolerance: the largest absolute difference accepted per element.
      serving_input_fn: the receiver the export used; the outputs are paired on its features
        (None = on the features predict gets).
      timeout: seconds each call into the model may take (None or 0 = no limit).

    Returns:
      One row per output of every signature run, and the check lines: what predict returned,
      then one line per row.

    Raises:
      errors.UserCodeError: the user's model code raised inside ``Estimator.predict`` or
        building its PREDICT graph, or did not finish within ``timeout``.
      errors.ExportError: ``Estimator.predict`` failed in TensorFlow (the checkpoint does not
        restore into the model).
    """
    features = {
        name: value
        for name, value in ran.inputs.estimator_features.items()
        if name in ran.used_features
    }
    predictions = predict(estimator, features, checkpoint_path, timeout=timeout)
    pairing = pair_outputs(estimator, serving_input_fn, features, timeout)
    checks = [
        f"Estimator.predict on {checkpoint_path} with the same {ran.inputs.rows} example(s), "
        f"first batch: keys {', '.join(sorted(predictions)) or '(none)'}"
    ]
    rows = []
    for signature in ran.run:
        for output, value in sorted(ran.outputs[signature].items()):
            row = _compare(signature, output, value, predictions, tolerance, pairing)
            rows.append(row)
            checks.append(_parity_line(row, tolerance))
    return rows, checks


def predict(
    estimator: Any,
    features: Mapping[str, Any],
    checkpoint_path: str,
    *,
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
) -> dict[str, np.ndarray]:
    """The first batch ``Estimator.predict`` yields for ``features`` (one batch of all rows).

    Only the first: ``predict`` ends when its input runs out, and a model whose predictions do
    not read the input (``BaselineClassifier`` uses only the batch size) never gets there. Its
    session places variables as Serving does (``deadline.estimator_sessions``) and the call is
    bounded to ``timeout`` seconds.

    Raises:
      errors.UserCodeError: the user's model code raised (its file and line are named), or
        predict did not finish within ``timeout``.
      errors.ExportError: TensorFlow failed with no user frame on the stack, typically the
        checkpoint does not restore into the model (a missing or mistyped key).
    """
    import tensorflow as tf

    def input_fn() -> Any:
        return tf.data.Dataset.from_tensors(feature_tensors(features))

    with (
        userspec.user_code("Estimator.predict", timeout=timeout),
        deadline.estimator_sessions(estimator, timeout),
    ):
        try:
            batches = estimator.predict(
                input_fn, checkpoint_path=checkpoint_path, yield_single_examples=False
            )
            try:
                first = next(batches, None)
            finally:
                batches.close()  # ends predict's session without asking for another batch
        except tf.errors.OpError as e:
            if userspec.user_frame(e) is not None:
                raise
            raise errors.ExportError(
                f"{checkpoint_path}: Estimator.predict failed ({type(e).__name__}: "
                f"{_op_error_summary(e)}); run estimator-fix scan on its directory",
                path=checkpoint_path,
            ) from e
    if first is None:
        return {}
    batch = first if isinstance(first, Mapping) else {SINGLE_OUTPUT_KEY: first}
    return {key: np.asarray(value) for key, value in batch.items()}


def _op_error_summary(error: Any) -> str:
    """The line of a TensorFlow error that says what is wrong, not its graph dump.

    ``Saver.restore`` leads its error with a paragraph of advice and names the cause (a key
    not found, an unexpected dtype) after it, so the cause is searched for first.
    """
    message = getattr(error, "message", None) or str(error)
    found = re.search(r"(Key \S+ not found in checkpoint|[^\n]*expected dtype[^\n]*)", message)
    text = found.group(1) if found else message.strip().splitlines()[0] if message.strip() else ""
    return " ".join(text.split())[:300] or "(no message)"


def _compare(
    signature: str,
    output: str,
    value: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    tolerance: float,
    pairing: Pairing,
) -> OutputParity:
    shape = tuple(int(d) for d in value.shape)
    is_text = value.dtype.kind in "SUO"
    base = OutputParity(signature, output, None, None, shape, value.dtype.name)
    paired = pairing.key_for(signature, output)
    if paired is not None and paired in predictions:
        present = matching = [paired]
        if tuple(np.shape(predictions[paired])) != shape:
            matching = []
        paired_by = "tensor"
    else:
        candidates = [output, *(k for k in _OUTPUT_ALIASES.get(output, ()) if k != output)]
        present = [k for k in candidates if k in predictions]
        if not present:
            return dataclasses.replace(base, note=_why_not_compared(signature, pairing))
        matching = [k for k in present if tuple(np.shape(predictions[k])) == shape]
        paired_by = "name"
    key = matching[0] if matching else present[0]
    expected = np.asarray(predictions[key])
    base = dataclasses.replace(base, prediction_key=key, paired_by=paired_by)
    if not matching:
        return dataclasses.replace(
            base,
            compared="exact" if is_text else "numeric",
            ok=False,
            mismatched=int(value.size),
            note=f"shape {shape} but Estimator.predict[{key!r}] has {tuple(expected.shape)}",
        )
    if is_text or expected.dtype.kind in "SUO":
        unequal = int(np.sum(value.astype(object) != expected.astype(object)))
        return dataclasses.replace(
            base,
            compared="exact",
            mismatched=unequal,
            ok=unequal == 0,
            note="" if unequal == 0 else f"{unequal} element(s) differ",
        )
    a = value.astype(np.float64)
    b = expected.astype(np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    same_inf = np.isinf(a) & (a == b)
    diff = np.where(both_nan | same_inf, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)
    worst = float(diff.max()) if diff.size else 0.0
    mismatched = int(np.sum(diff > tolerance))
    if not math.isfinite(worst):
        return dataclasses.replace(
            base,
            compared="numeric",
            mismatched=mismatched,
            ok=False,
            note="NaN or inf where the other side has a number",
        )
    return dataclasses.replace(
        base, compared="numeric", max_abs_diff=worst, mismatched=mismatched, ok=mismatched == 0
    )


def _why_not_compared(signature: str, pairing: Pairing) -> str:
    if pairing.knows(signature):
        return (
            "its tensor is none of the model_fn's predictions and no Estimator.predict key "
            "has its name"
        )
    return (
        f"the model code's export_outputs have no signature {signature!r} and no "
        "Estimator.predict key has this output's name"
    )


def _parity_line(p: OutputParity, tolerance: float) -> str:
    where = f"{p.signature}/{p.output}"
    if p.prediction_key is None:
        return f"not compared {where}: {p.note}"
    how = " (same tensor)" if p.paired_by == "tensor" else ""
    versus = f"vs Estimator.predict[{p.prediction_key!r}]{how}"
    if p.compared == "exact":
        verdict = "equal" if p.ok else f"DIFFERENT ({p.note})"
        return f"{'ok' if p.ok else 'MISMATCH'} {where} {versus}: {verdict}"
    if p.max_abs_diff is None:
        return f"MISMATCH {where} {versus}: {p.note}"
    relation = "<=" if p.ok else ">"
    return (
        f"{'ok' if p.ok else 'MISMATCH'} {where} {versus}: max abs diff {p.max_abs_diff:.3g} "
        f"{relation} {tolerance:g}{'' if p.ok else f' ({p.mismatched} element(s))'}"
    )
