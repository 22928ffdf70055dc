"""The SavedModel side: find it, load it in a fresh graph, read its step, run its signatures.

``load_and_run`` loads the MetaGraph as TensorFlow Serving's TF1 loader does
(``tf.compat.v1.saved_model.loader.load``, in a session with soft placement on, as Serving and
``tf.saved_model.load`` have it: variables pinned to ``/cpu:1`` or ``/gpu:0`` by multi-device
training restore on this machine's CPU), reads the ``global_step`` the export restored, plans
every signature, feeds the ones it can and keeps their outputs. Every failure is an
``ExportError`` naming the SavedModel's directory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from estimator_fix import errors
from estimator_fix.model_code import deadline
from estimator_fix.model_code.deadline import DEFAULT_TIMEOUT_SECONDS
from estimator_fix.storage import fs
from estimator_fix.verify.inputs import (
    CannotSynthesizeError,
    Inputs,
    feed_for,
    inputs_for,
    missing_reason,
)
from estimator_fix.verify.signatures import SignaturePlan, plan_signature, signature_order

_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclasses.dataclass(frozen=True)
class Run:
    """What running the SavedModel's signatures gave.

    Attributes:
      signatures: every signature_def key, in report order.
      exported_step: the ``global_step`` the SavedModel restored; None if it has none.
      inputs: the examples every signature was fed.
      outputs: signature -> output key -> the array it returned.
      run: the signatures that ran.
      skipped: the signatures that could not be fed.
      used_features: the features of the signatures that ran (what ``Estimator.predict`` gets).
      checks: one line per thing checked: the load, the step, ignored inputs, each signature.
      feeds: signature -> tensor name -> the value fed (what ``verify --runtime`` feeds there).
      fetches: signature -> output key -> tensor name.
    """

    signatures: tuple[str, ...]
    exported_step: int | None
    inputs: Inputs
    outputs: Mapping[str, Mapping[str, np.ndarray]]
    run: tuple[str, ...]
    skipped: tuple[str, ...]
    used_features: frozenset[str]
    checks: tuple[str, ...]
    feeds: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    fetches: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)


def resolve_saved_model(path: str) -> str:
    """A SavedModel directory, or the newest numeric version folder under an export base.

    ``Estimator.export_saved_model`` writes ``BASE/<timestamp>/``; users pass either.

    Raises:
      errors.PathNotFoundError: nothing at ``path``.
      errors.InputError: a file, or a directory that neither is nor holds a SavedModel.
    """
    path = fs.normalize(path)
    if not fs.exists(path):
        raise errors.PathNotFoundError(f"{path}: no such SavedModel directory", path=path)
    if not fs.isdir(path):
        raise errors.InputError(f"{path}: is a file; pass the SavedModel directory", path=path)
    names = fs.listdir(path)
    if any(f in names for f in _SAVED_MODEL_FILES):
        return path
    versions = sorted(
        (int(n), n)
        for n in names
        if n.isdigit() and any(fs.exists(fs.join(path, n, f)) for f in _SAVED_MODEL_FILES)
    )
    if versions:
        return fs.join(path, versions[-1][1])
    raise errors.InputError(
        f"{path}: no saved_model.pb here and no numeric version folder holding one; pass the "
        "directory the export printed",
        path=path,
    )


def load_and_run(
    export_path: str,
    tags: Sequence[str],
    given: Mapping[str, np.ndarray] | None,
    inputs_source: str,
    num_synthesized: int,
    seed: int,
    step_check: Callable[[int | None], str],
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
) -> Run:
    """Loads the SavedModel in a fresh graph and runs every signature it can feed.

    ``step_check`` turns the exported step into its check line, or raises before any
    signature runs. ``timeout`` bounds the whole load and run (None or 0 = no limit), and
    each TensorFlow run in the session (``operation_timeout_in_ms``).

    Raises:
      errors.ExportError: the SavedModel does not load, has no signatures, no signature could
        be fed, one failed to run, or there are no synthetic values for a dtype; a
        ``deadline.UserCodeTimeoutError`` when it took longer than ``timeout``.
      errors.InputError: the given inputs miss a feature or do not fit a signature.
    """
    with deadline.deadline(timeout, f"loading and running the SavedModel {export_path}"):
        return _load_and_run(
            export_path, tags, given, inputs_source, num_synthesized, seed, step_check, timeout
        )


def _load_and_run(
    export_path: str,
    tags: Sequence[str],
    given: Mapping[str, np.ndarray] | None,
    inputs_source: str,
    num_synthesized: int,
    seed: int,
    step_check: Callable[[int | None], str],
    timeout: float | None,
) -> Run:
    import tensorflow as tf

    checks: list[str] = []
    graph = tf.Graph()
    config = deadline.session_config(None, timeout)
    with graph.as_default(), tf.compat.v1.Session(graph=graph, config=config) as sess:
        meta_graph = _load(export_path, tags, graph, sess)
        signatures = signature_order(list(meta_graph.signature_def))
        if not signatures:
            raise errors.ExportError(
                f"{export_path}: the SavedModel has no signatures; re-export it with a "
                "serving_input_receiver_fn",
                path=export_path,
            )
        checks.append(
            f"loaded {export_path} (tags {','.join(tags)}) in a fresh graph: "
            f"{len(signatures)} signature(s): {', '.join(signatures)}"
        )
        exported_step = _read_exported_step(graph, sess)
        checks.append(step_check(exported_step))
        plans = [plan_signature(k, meta_graph.signature_def[k], graph, sess) for k in signatures]
        try:
            inputs = inputs_for(plans, given, inputs_source, num_synthesized, seed)
        except CannotSynthesizeError as e:
            raise errors.ExportError(
                f"{export_path}: cannot synthesize {e} inputs for its signatures; pass --inputs "
                "with real examples",
                path=export_path,
            ) from e
        if given is not None:
            unused = sorted(set(given) - set(inputs.values))
            if unused:
                checks.append(f"ignored input(s) no signature takes: {', '.join(unused)}")
        outputs: dict[str, dict[str, np.ndarray]] = {}
        feeds: dict[str, Mapping[str, Any]] = {}
        run: list[str] = []
        skipped: list[str] = []
        for plan in plans:
            reason = plan.unsupported or missing_reason(plan, inputs.values)
            if reason:
                skipped.append(plan.signature)
                checks.append(f"skipped signature {plan.signature!r}: {reason}")
                continue
            feeds[plan.signature] = feed_for(plan, inputs)
            outputs[plan.signature] = _run_signature(plan, sess, feeds[plan.signature], export_path)
            run.append(plan.signature)
            shapes = ", ".join(
                f"{k} {tuple(v.shape)}" for k, v in sorted(outputs[plan.signature].items())
            )
            checks.append(
                f"ran signature {plan.signature!r} ({plan.method}) on {inputs.rows} example(s) "
                f"{inputs.description}{' as serialized tf.Example' if plan.parsed else ''}: "
                f"{shapes}"
            )
    if not run:
        raise errors.ExportError(
            f"{export_path}: no signature could be fed ({'; '.join(checks[2:])}); pass "
            "--inputs or export with a raw or tf.Example serving receiver",
            path=export_path,
        )
    used = frozenset(f.name for p in plans if p.signature in run for f in p.features)
    return Run(
        tuple(signatures),
        exported_step,
        inputs,
        outputs,
        tuple(run),
        tuple(skipped),
        used,
        tuple(checks),
        feeds=feeds,
        fetches={p.signature: dict(p.outputs) for p in plans if p.signature in run},
    )


def _load(export_path: str, tags: Sequence[str], graph: Any, sess: Any) -> Any:
    """Loads the MetaGraph into ``sess``; every failure is an ExportError naming the path."""
    import tensorflow as tf

    if not fs.exists(export_path):
        raise errors.ExportError(
            f"{export_path}: no such SavedModel directory; pass the directory the export printed",
            path=export_path,
        )
    if not any(fs.exists(fs.join(export_path, name)) for name in _SAVED_MODEL_FILES):
        raise errors.ExportError(
            f"{export_path}: not a SavedModel (no saved_model.pb); pass the BASE/<version> "
            "directory the export printed",
            path=export_path,
        )
    try:
        with graph.as_default():
            return tf.compat.v1.saved_model.loader.load(sess, list(tags), export_path)
    except RuntimeError as e:  # no MetaGraph with these tags
        raise errors.ExportError(
            f"{export_path}: {' '.join(str(e).split())[:300]}; pass the tags it was exported with",
            path=export_path,
        ) from e
    except (tf.errors.OpError, OSError, ValueError, KeyError) as e:
        message = getattr(e, "message", None) or str(e)
        raise errors.ExportError(
            f"{export_path}: the SavedModel does not load ({type(e).__name__}: "
            f"{' '.join(message.split())[:300]}); re-export it",
            path=export_path,
        ) from e


def _read_exported_step(graph: Any, sess: Any) -> int | None:
    import tensorflow as tf

    step = tf.compat.v1.train.get_global_step(graph)
    if step is not None:
        return int(sess.run(step))
    try:
        op = graph.get_operation_by_name("global_step")
    except KeyError:
        return None
    if op.type == "VarHandleOp":
        with graph.as_default():
            value = tf.raw_ops.ReadVariableOp(resource=op.outputs[0], dtype=tf.int64)
        return int(sess.run(value))
    return int(sess.run(op.outputs[0]))


def _run_signature(
    plan: SignaturePlan, sess: Any, feed: Mapping[str, Any], export_path: str
) -> dict[str, np.ndarray]:
    import tensorflow as tf

    try:
        values = sess.run(dict(plan.outputs), feed_dict=dict(feed))
    except (tf.errors.OpError, ValueError, TypeError) as e:
        message = getattr(e, "message", None) or str(e)
        raise errors.ExportError(
            f"{export_path}: signature {plan.signature!r} failed on the inputs "
            f"({type(e).__name__}: {' '.join(message.split())[:300]}); check the inputs "
            "match its serving receiver",
            path=export_path,
        ) from e
    return {k: np.asarray(v) for k, v in values.items()}
