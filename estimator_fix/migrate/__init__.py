"""``migrate``: a checkpoint's keys moved to the layout another program restores.

``plan_migration`` decides the ``surgery.Edit`` (renames, drops, new small tensors, a new
object graph, and notes on what was dropped or derived and why); ``surgery.apply`` carries it
out without copying tensor bytes. Targets:

- ``v2-canned`` (``canned``): a ``tf.compat.v1`` canned DNN, Linear or DNNLinearCombined
  checkpoint for the ``tf.estimator`` (v2) estimator of the same kind, with the trained
  optimizer hyperparameters read from the training graph (``graphdef``).
- ``ema`` (``ema``): every variable's key names its ``ExponentialMovingAverage`` shadow's bytes,
  so an export without the average in its graph serves the averaged model.
- ``tf2-object`` (``tf2_object``): the name-based checkpoint as the object-based one that
  ``tf.train.Checkpoint(vars={name: variable})`` restores.

    report = scan.scan(model_dir)
    edit = plan_migration(report, to="v2-canned", model_dir=model_dir)
    result = surgery.apply(report, edit, output_dir=output_dir)
"""

from __future__ import annotations

from estimator_fix import errors
from estimator_fix.migrate import canned, ema, graphdef, tf2_object
from estimator_fix.surgery import Edit, surgery_index
from estimator_fix.types import ScanReport

V2_CANNED = "v2-canned"
EMA = "ema"
TF2_OBJECT = "tf2-object"
TARGETS = (V2_CANNED, EMA, TF2_OBJECT)


def plan_migration(report: ScanReport, *, to: str, model_dir: str) -> Edit:
    """The edit that migrates the report's target checkpoint to the layout ``to`` names.

    Reads the target's ``.meta`` or the directory's ``graph.pbtxt`` (``v2-canned`` only) and a
    few scalars of the checkpoint (``global_step``, Adam's beta powers); writes nothing.

    Args:
      report: the scan of the model directory; its target is the checkpoint migrated.
      to: one of ``TARGETS``.
      model_dir: the model directory (as the user named it, for messages).

    Raises:
      errors.UsageError: an unknown target, or a checkpoint already in the target layout.
      errors.NotRepairableError: a checkpoint this target cannot be computed for (the message
        says why).
      errors.InputError: the target checkpoint cannot be read.
    """
    if to not in TARGETS:
        raise errors.UsageError(
            f"--to={to}: not a migration target; use one of {', '.join(TARGETS)}"
        )
    index = surgery_index(report)
    target = report.target_report
    assert target is not None
    if to == V2_CANNED:
        canned.check_source(target.prefix, index)
        return canned.plan(target.prefix, index, graphdef.load(report))
    if to == EMA:
        return ema.plan(target.prefix, index)
    return tf2_object.plan(target.prefix, index)


__all__ = ["EMA", "TARGETS", "TF2_OBJECT", "V2_CANNED", "plan_migration"]
