"""The edited checkpoint as a scratch view, for ``fix --map``'s pre-flight before any write.

The view is a new index in a local temporary directory (outside the model directory) whose data
files are symbolic links to the source's: TensorFlow reads it like the checkpoint the edit will
commit, and nothing is written into the user's directories. Object stores have no symbolic
links: there ``fix --map`` is refused (rename first, then fix).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from estimator_fix import errors
from estimator_fix.storage import fs
from estimator_fix.surgery import build as build_lib
from estimator_fix.surgery import graph as graph_lib
from estimator_fix.surgery.apply import surgery_index
from estimator_fix.surgery.edit import Edit, validate
from estimator_fix.types import ScanReport


def _symlink(src: str, dst: str) -> bool:
    os.symlink(os.path.abspath(src), dst)
    return True


@contextlib.contextmanager
def preview(report: ScanReport, edit: Edit | None) -> Iterator[str | None]:
    """Yields the prefix of a scratch view of ``edit`` applied to the report's target (None
    without an edit); the view is removed afterwards.

    Raises:
      errors.UsageError: the edit is refused (``validate``), or the model directory is on an
        object store (no symbolic links there: rename first, then fix).
      errors.WriteError: the local temporary directory cannot be written.
    """
    if edit is None:
        yield None
        return
    index = surgery_index(report)
    validate(index, edit)
    target = report.target_report
    assert target is not None
    if fs.has_scheme(target.prefix):
        raise errors.UsageError(
            f"{report.model_dir}: fix --map pre-flights a local view of the renamed checkpoint, "
            "which an object store cannot hold; run `estimator-fix rename` with the same map "
            "first, then `fix` without it"
        )
    scratch = tempfile.mkdtemp(prefix="estimator-fix-preview-")
    try:
        payload = graph_lib.new_payload(index, target.prefix, edit)
        plan = build_lib.layout(index, edit, rewrite_graph=payload is not None)
        prefix = os.path.join(scratch, target.name)
        build_lib.build(index, target.prefix, prefix, plan, edit.additions, payload, link=_symlink)
        yield prefix
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
