"""Zero-copy checkpoint surgery: rename, drop and add keys without reading a tensor byte.

A V2 checkpoint's index maps each key to (shard, offset, size, crc32c) in its data files. The
surgery writes a new index in which the kept entries, byte for byte, sit under their new keys
(a partitioned variable's binary slice keys re-encoded with its new full name), hard-links the
data files under the new prefix (copies them where links are impossible), and appends one data
shard for new small tensors (written by a graph-mode session ``Saver``, as ``repair`` writes
the step) and one for a rewritten object graph. TensorFlow reads the result back (every key's
dtype and shape, the entries unchanged, the new tensors' values) before the commit, which is
``repair``'s: data files, then the index, renamed into place, the state file last.

Uses: ``rename`` (``rules.edit_from_rules`` turns ``--map``/``--regex``/``--drop`` into an
``Edit``), ``fix --map`` and ``migrate`` (which computes its own ``Edit``).

    report = scan.scan(model_dir)
    edit = Edit(renames={"dnn/hiddenlayer_0/kernel": "tower/dense/kernel"})
    validate(report.target_report.index, edit)   # also done by apply
    result = apply(report, edit, output_dir=None, dry_run=False)
"""

from __future__ import annotations

from estimator_fix.surgery.apply import apply, surgery_index
from estimator_fix.surgery.edit import STEP_KEYS, Edit, NewTensor, validate
from estimator_fix.surgery.jobs import apply_for_fix, edit_for_job
from estimator_fix.surgery.preview import preview
from estimator_fix.surgery.result import SURGERY_SCHEMA, SurgeryResult

__all__ = [
    "STEP_KEYS",
    "SURGERY_SCHEMA",
    "Edit",
    "NewTensor",
    "SurgeryResult",
    "apply",
    "apply_for_fix",
    "edit_for_job",
    "preview",
    "surgery_index",
    "validate",
]
