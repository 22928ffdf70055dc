"""What an ``--output_dir`` already is, before anything is written to it.

A repair to another directory must not mix its files with anything else: the directory must
not exist, be empty, or hold only what an interrupted repair left (``names.is_unfinished_output``).
``repair.prepare`` asks this once, before ``plan``, so that a dry run refuses what the repair
would refuse and ``plan`` itself reads nothing.
"""

from __future__ import annotations

import dataclasses
import os

from estimator_fix import errors
from estimator_fix.storage import fs, names


@dataclasses.dataclass(frozen=True)
class OutputDir:
    """An ``--output_dir`` as it was found: its normalized path, and whether it holds an
    interrupted repair's leftovers (which the repair removes first)."""

    path: str
    unfinished: bool


def inspect_output_dir(model_dir: str, output_dir: str) -> OutputDir:
    """Refuses an output directory that would mix with other files.

    Raises:
      errors.UsageError: ``output_dir`` is the model directory or inside it (symlinks
        followed), a file, or a directory holding anything but an interrupted repair's
        leftovers.
    """
    out_dir = fs.normalize(output_dir)
    model_dir = fs.normalize(model_dir)
    if out_dir == model_dir or out_dir.startswith(model_dir.rstrip("/") + "/"):
        raise errors.UsageError(
            f"--output_dir={out_dir}: must not be the model directory or inside it; pick a "
            "directory elsewhere"
        )
    if not (fs.has_scheme(out_dir) or fs.has_scheme(model_dir)):
        a, b = os.path.realpath(model_dir), os.path.realpath(out_dir)
        if b == a or b.startswith(a + os.sep):
            raise errors.UsageError(
                f"--output_dir={out_dir}: must not be the model directory or inside it; pick a "
                "directory elsewhere"
            )
    if not fs.exists(out_dir):
        return OutputDir(out_dir, unfinished=False)
    listing = fs.listdir(out_dir) if fs.isdir(out_dir) else None
    if listing is not None and (not listing or names.is_unfinished_output(listing)):
        return OutputDir(out_dir, unfinished=bool(listing))
    raise errors.UsageError(
        f"--output_dir={out_dir}: already exists and is not an empty directory; pick a new path"
    )
