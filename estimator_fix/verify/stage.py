"""``verify``, the stage: the checks in order, the ``global_step`` rule, the verdict.

It reads the checkpoint's step first (a bad ``checkpoint_path`` fails before the SavedModel
loads), loads and runs the SavedModel (``savedmodel``), compares with ``Estimator.predict``
when it has the model (``parity``) and sums up in a ``VerifyResult``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from estimator_fix import errors
from estimator_fix.model_code.deadline import DEFAULT_TIMEOUT_SECONDS, check_timeout
from estimator_fix.storage import fs
from estimator_fix.verify import elsewhere, parity, savedmodel
from estimator_fix.verify.result import VERIFY_SCHEMA, OutputParity, VerifyResult


def verify(
    export_path: str,
    *,
    inputs: Mapping[str, np.ndarray] | None = None,
    inputs_source: str = "given",
    estimator: Any | None = None,
    checkpoint_path: str | None = None,
    num_synthesized: int = 4,
    tolerance: float = 1e-5,
    seed: int = 0,
    tags: Sequence[str] = ("serve",),
    require_step_match: bool = True,
    serving_input_fn: Callable[[], Any] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
    runtime: str | None = None,
) -> VerifyResult:
    """Loads, runs and (with the model) checks a SavedModel against its checkpoint.

    Args:
      export_path: the SavedModel directory (``BASE/<version>``).
      inputs: feature name -> array with a leading batch dimension; None = synthesize from
        the serving signature. For parsing receivers these are the features serialized into
        ``tf.train.Example`` protos.
      inputs_source: ``file:<path>``, ``synthesized`` or ``given``; errors about the inputs
        name the file.
      estimator: the user's ``tf.estimator.Estimator``; with ``checkpoint_path`` it enables the
        parity check against ``Estimator.predict``.
      checkpoint_path: the checkpoint prefix the SavedModel was exported from. Its step must
        equal the exported ``global_step``; it is what ``Estimator.predict`` restores (passed
        explicitly: a stale state file would otherwise make predict run on initial weights).
      num_synthesized: rows to synthesize when ``inputs`` is None.
      tolerance: the largest absolute difference accepted per element.
      seed: seeds the synthesized inputs, so a run is reproducible.
      tags: the MetaGraph tags to load.
      require_step_match: False only to compare against a checkpoint of another step on
        purpose (diagnostics, tests); the mismatch is then a check line, not an error.
      serving_input_fn: the receiver the SavedModel was exported with; signature outputs are
        paired with prediction keys in the model_fn's PREDICT graph on its features, as the
        export built it (None = on the features ``Estimator.predict`` gets).
      timeout: seconds each step may take (loading and running the SavedModel, building the
        model's PREDICT graph, ``Estimator.predict``); None or 0 = no limit.
      runtime: another Python interpreter (``--runtime``) that loads and runs the SavedModel on
        the same feeds; its outputs must be within ``tolerance`` of these (``elsewhere``).

    Returns:
      A VerifyResult; ``ok`` is False on a parity mismatch (never raised here).

    Raises:
      errors.ExportError: the SavedModel is missing, does not load, has no signature, a
        signature fails to run, or its step differs from the checkpoint's.
      errors.InputError: the inputs miss a feature or do not fit the signature; the checkpoint
        cannot be read (``errors.PathNotFoundError`` when it does not exist).
      errors.UsageError: an Estimator without a checkpoint, or a bad number.
      errors.UserCodeError: the user's model code raised inside ``Estimator.predict``, or a
        step did not finish within ``timeout`` (``deadline.UserCodeTimeoutError``).
      errors.UsageError: ``runtime`` does not run; errors.ExportError: the SavedModel does
        not load or run there.
    """
    if num_synthesized < 1:
        raise errors.UsageError(f"num_synthesized={num_synthesized}: must be at least 1")
    if not tolerance >= 0:
        raise errors.UsageError(f"--tolerance={tolerance}: must be a number >= 0")
    timeout = check_timeout(timeout)
    if estimator is not None and checkpoint_path is None:
        raise errors.UsageError(
            "parity with Estimator.predict needs the checkpoint prefix the SavedModel was "
            "exported from; pass checkpoint_path (--model_dir/--checkpoint)"
        )
    export_path = fs.normalize(export_path)
    checkpoint_step: int | None = None
    if checkpoint_path is not None:
        checkpoint_path = fs.normalize(checkpoint_path)
        checkpoint_step = parity.read_checkpoint_step(checkpoint_path)

    ran = savedmodel.load_and_run(
        export_path,
        tags,
        inputs,
        inputs_source,
        num_synthesized,
        seed,
        lambda exported: _step_check(
            export_path, exported, checkpoint_path, checkpoint_step, require_step_match
        ),
        timeout,
    )
    checks = list(ran.checks)

    parity_checked = estimator is not None
    if estimator is not None:
        assert checkpoint_path is not None
        rows, parity_checks = parity.compare_with_predict(
            ran,
            estimator,
            checkpoint_path,
            tolerance,
            serving_input_fn=serving_input_fn,
            timeout=timeout,
        )
        checks.extend(parity_checks)
    else:
        rows = [
            OutputParity(
                s,
                o,
                None,
                None,
                tuple(int(d) for d in v.shape),
                v.dtype.name,
                note="no Estimator to compare with",
            )
            for s in ran.run
            for o, v in sorted(ran.outputs[s].items())
        ]
        checks.append("parity not checked: no Estimator and checkpoint given")

    compared = [p for p in rows if p.ok is not None]
    numeric = [p.max_abs_diff for p in compared if p.max_abs_diff is not None]
    non_finite = any(p.compared == "numeric" and p.max_abs_diff is None for p in compared)
    ok = True
    if parity_checked:
        ok = bool(compared) and all(p.ok for p in compared)
        if compared:
            within = sum(1 for p in compared if p.ok)
            checks.append(
                f"{'OK' if ok else 'FAILED'}: {within} of {len(compared)} compared output(s) "
                f"within {tolerance:g}"
            )
        else:
            checks.append("FAILED: no signature output matched an Estimator.predict key")
    elsewhere_parity = None
    if runtime is not None:
        elsewhere_parity, runtime_checks = elsewhere.compare(
            runtime,
            export_path,
            tuple(tags),
            ran.feeds,
            ran.fetches,
            ran.outputs,
            ran.exported_step,
            tolerance,
            timeout,
        )
        checks.extend(runtime_checks)
        ok = ok and elsewhere_parity.ok
    return VerifyResult(
        schema=VERIFY_SCHEMA,
        export_path=export_path,
        tags=tuple(tags),
        signatures=ran.signatures,
        signatures_run=ran.run,
        signatures_skipped=ran.skipped,
        inputs_source=inputs_source if inputs is not None else "synthesized",
        num_examples=ran.inputs.rows,
        exported_step=ran.exported_step,
        checkpoint_path=checkpoint_path,
        checkpoint_step=checkpoint_step,
        parity_checked=parity_checked,
        parity=tuple(rows),
        max_abs_diff=None if not numeric or non_finite else max(numeric),
        tolerance=tolerance,
        ok=ok,
        checks=tuple(checks),
        outputs=ran.outputs,
        runtime=elsewhere_parity,
    )


def _step_check(
    export_path: str,
    exported: int | None,
    checkpoint_path: str | None,
    checkpoint: int | None,
    require: bool,
) -> str:
    """The check line about ``global_step``; raises on a mismatch unless it is allowed."""
    if checkpoint_path is None:
        shown = "none" if exported is None else str(exported)
        return f"global_step in the SavedModel: {shown} (no checkpoint given to compare)"
    if exported is not None and exported == checkpoint:
        return f"global_step in the SavedModel: {exported}, equal to {checkpoint_path}'s"
    if exported is None:
        what = "the SavedModel has no global_step variable"
        fix = f"re-export it with Estimator.export_saved_model from {checkpoint_path}"
    elif checkpoint is None:
        what = f"{checkpoint_path} has no global_step (the SavedModel has {exported})"
        fix = "pass the (repaired) checkpoint prefix the SavedModel was exported from"
    else:
        what = f"global_step {exported} in the SavedModel but {checkpoint} in {checkpoint_path}"
        fix = (
            "the SavedModel was not exported from this checkpoint: pass the right prefix or "
            "re-export from this one"
        )
    if not require:
        return f"MISMATCH (allowed): {what}"
    raise errors.ExportError(f"{export_path}: {what}; {fix}", path=export_path)
