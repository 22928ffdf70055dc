"""What an ``--output_dir`` already is, before anything is written to it.

A repair to another directory must not mix its files with anything else: the directory must
not exist, be empty, or hold only what an interrupted repair left (``names.is_unfinished_output``).
``plan`` asks this once, so that a dry run refuses what the repair would refuse.
"""

from __future__ import annotations

import os

from estimator_fix import errors
from estimator_fix.storage import fs, names


def inspect_output_dir(model_dir: str, out_dir: str) -> bool:
    """Refuses an output directory that would mix with other files. True: it is unfinished.

    Raises:
      errors.UsageError: ``out_dir`` is the model directory or inside it (symlinks followed),
        a file, or a directory holding anything but an interrupted repair's leftovers.
    """
    if not (fs.has_scheme(out_dir) or fs.has_scheme(model_dir)):
        a, b = os.path.realpath(model_dir), os.path.realpath(out_dir)
        if b == a or b.startswith(a + os.sep):
            raise errors.UsageError(
                f"--output_dir={out_dir}: must not be the model directory or inside it; pick a "
                "directory elsewhere"
            )
    if not fs.exists(out_dir):
        return False
    listing = fs.listdir(out_dir) if fs.isdir(out_dir) else None
    if listing is not None and (not listing or names.is_unfinished_output(listing)):
        return bool(listing)
    raise errors.UsageError(
        f"--output_dir={out_dir}: already exists and is not an empty directory; pick a new path"
    )
