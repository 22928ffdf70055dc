"""Which ``Estimator.predict`` key each signature output is, found through the model's graph.

Names alone do not say it: ``PredictOutput(tensor)`` names its one output ``output``, canned
``KMeans`` exports signatures ``all_distances`` and ``cluster_index`` whose output key is
``output`` while ``predict`` yields keys ``all_distances`` and ``cluster_index``, and a
``RegressionOutput`` calls its tensor ``outputs`` whatever the prediction key is. So
``pair_outputs`` builds the graph ``export_saved_model`` builds (a fresh graph, ``global_step``,
the serving receiver's features, ``model_fn`` in PREDICT mode, the same ``export_outputs``) and
maps every ``export_outputs[signature]`` output to the ``predictions`` key whose tensor is the
same graph tensor. Without a serving receiver the features are the ones ``Estimator.predict``
gets. An output that is no prediction's tensor is left to the name rules of ``parity``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from estimator_fix.model_code import userspec
from estimator_fix.verify.inputs import SparseRows

SINGLE_OUTPUT_KEY = "output"  # predictions that are one tensor: PredictOutput's and ours


@dataclasses.dataclass(frozen=True)
class Pairing:
    """Signature outputs paired with prediction keys by graph identity.

    Attributes:
      keys: (signature, output key) -> the predictions key holding the same tensor.
      signatures: every signature the model code's ``export_outputs`` defines.
    """

    keys: Mapping[tuple[str, str], str]
    signatures: frozenset[str]

    def key_for(self, signature: str, output: str) -> str | None:
        """The paired key; ``name:alternative`` signatures (receiver alternatives) as ``name``."""
        key = self.keys.get((signature, output))
        if key is None and ":" in signature:
            key = self.keys.get((signature.split(":", 1)[0], output))
        return key

    def knows(self, signature: str) -> bool:
        return signature in self.signatures or signature.split(":", 1)[0] in self.signatures


def feature_tensors(features: Mapping[str, Any]) -> dict[str, Any]:
    """Constant tensors (SparseTensors for VarLen features) of the features predict gets."""
    import tensorflow as tf

    return {
        name: value.to_tensor() if isinstance(value, SparseRows) else tf.constant(value)
        for name, value in features.items()
    }


def pair_outputs(
    estimator: Any,
    serving_input_fn: Callable[[], Any] | None,
    features: Mapping[str, Any],
    timeout: float | None,
) -> Pairing:
    """Builds the PREDICT graph and pairs each export output with its prediction key.

    Args:
      estimator: the user's Estimator.
      serving_input_fn: the receiver the export used; None = build on ``features``.
      features: what ``Estimator.predict`` gets (used without a receiver).
      timeout: seconds the receiver and the model_fn may each take (None or 0 = no limit).

    Raises:
      errors.UserCodeError: the receiver or model_fn raised, or did not return in time.
    """
    import tensorflow as tf
    from tensorflow_estimator.python.estimator.export import export_lib

    with tf.Graph().as_default() as graph:
        estimator._create_and_assert_global_step(graph)
        labels = None
        if serving_input_fn is not None:
            with userspec.user_code("the serving input function", timeout=timeout):
                receiver = serving_input_fn()
            model_features = receiver.features
            labels = getattr(receiver, "labels", None)
        else:
            model_features = feature_tensors(features)
        with userspec.user_code("model_fn (PREDICT mode)", timeout=timeout):
            spec = estimator._call_model_fn(
                model_features, labels, tf.estimator.ModeKeys.PREDICT, estimator.config
            )
            export_outputs = export_lib.export_outputs_for_mode(
                mode=spec.mode,
                serving_export_outputs=spec.export_outputs,
                predictions=spec.predictions,
                loss=spec.loss,
                metrics=spec.eval_metric_ops,
            )
    predictions = spec.predictions
    if not isinstance(predictions, Mapping):
        predictions = {SINGLE_OUTPUT_KEY: predictions}
    by_tensor: dict[str, list[str]] = {}
    for key, tensor in sorted(predictions.items()):
        name = getattr(tensor, "name", None)  # a SparseTensor has none: pairs by name only
        if isinstance(name, str):
            by_tensor.setdefault(name, []).append(key)
    keys: dict[tuple[str, str], str] = {}
    for signature, export_output in export_outputs.items():
        for output, tensor in _outputs_of(export_output).items():
            same = by_tensor.get(getattr(tensor, "name", None) or "", [])
            if same:
                keys[(signature, output)] = output if output in same else same[0]
    return Pairing(keys, frozenset(export_outputs))


def _outputs_of(export_output: Any) -> dict[str, Any]:
    """Output key -> tensor, as the signature built from ``export_output`` names them."""
    import tensorflow as tf

    if isinstance(export_output, tf.estimator.export.PredictOutput):
        return dict(export_output.outputs)
    if isinstance(export_output, tf.estimator.export.ClassificationOutput):
        pairs = (("classes", export_output.classes), ("scores", export_output.scores))
        return {k: v for k, v in pairs if v is not None}
    if isinstance(export_output, tf.estimator.export.RegressionOutput):
        return {"outputs": export_output.value}
    outputs = getattr(export_output, "outputs", None)
    return dict(outputs) if isinstance(outputs, Mapping) else {}
