"""Stage 5: prove that a SavedModel loads, runs, and predicts what its checkpoint predicts.

An export that "succeeded" can still be wrong: it may have restored another checkpoint than the
one intended (a stale ``checkpoint`` state file), or serve the checkpoint's tensors under shapes
the model code declares differently. So ``verify``:

1. loads the SavedModel in a fresh graph, exactly as TensorFlow Serving's TF1 loader does
   (``tf.compat.v1.saved_model.loader.load``, soft placement on), lists its signatures and
   reads the ``global_step`` the export restored; with a checkpoint it requires the two steps
   to be equal;
2. feeds the given inputs, or inputs synthesized from the serving signature: raw tensors for
   raw receivers, serialized ``tf.train.Example`` protos for parsing receivers (the feature
   keys, dtypes and shapes come from the graph's ``ParseExample`` op);
3. runs every signature it can feed;
4. with the Estimator and checkpoint, runs ``Estimator.predict`` on the same features (its
   first batch: all the rows fed) and compares every signature output with the prediction
   key it is (max abs difference): the key whose tensor the model_fn's ``export_outputs``
   exported there, found in the model's PREDICT graph, else the key its name says.

Every step has a time limit (``timeout``, default ``deadline.DEFAULT_TIMEOUT_SECONDS``): user
code that never returns ends in one ``UserCodeTimeoutError`` line instead of a hang.

A parity mismatch is a result (``ok=False``), not an exception: the caller decides what to do
with a SavedModel that predicts something else. TensorFlow is imported inside the functions so
that importing this package stays cheap.

Modules, in data-flow order: ``signatures`` (what each signature needs), ``inputs`` (the
``--inputs`` file, synthesized and coerced values), ``savedmodel`` (find, load, run),
``pairing`` (signature outputs to prediction keys through the model's graph), ``parity`` (the
checkpoint's step, ``Estimator.predict``, the comparison), ``stage``
(``verify`` itself) and ``result`` (the result dataclasses).
"""

from estimator_fix.verify.inputs import load_inputs
from estimator_fix.verify.result import VERIFY_SCHEMA, OutputParity, VerifyResult
from estimator_fix.verify.savedmodel import resolve_saved_model
from estimator_fix.verify.stage import verify

__all__ = [
    "VERIFY_SCHEMA",
    "OutputParity",
    "VerifyResult",
    "load_inputs",
    "resolve_saved_model",
    "verify",
]
