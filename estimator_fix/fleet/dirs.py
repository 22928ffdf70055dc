"""Which directories a fleet runs over: ``--model_dirs`` expanded, ``{name}`` filled in.

``expand_model_dirs`` turns a glob or an ``@list.txt`` into directories; ``jobs_for_dirs`` turns
them into one ``Job`` each from the command line's template. ``expand_names`` and
``check_shared`` are shared with the manifest reader: both refuse a target directory that
several jobs would write.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Mapping, Sequence

from estimator_fix import errors
from estimator_fix.options import Job
from estimator_fix.storage import fs

NAME_PLACEHOLDER = "{name}"


def expand_model_dirs(spec: str) -> list[str]:
    """``--model_dirs``: a glob, or ``@list.txt`` with one directory per line.

    Matches are not checked to be model directories: one that is not (a file, an empty or
    unreadable directory) gets its own failed result from ``run_job``. End a glob with ``/`` to
    match directories only. A list file skips blank lines and ``#`` comments; its relative
    paths, like a glob's, are relative to the working directory.

    Args:
      spec: ``/models/*/run*``, ``gs://bucket/models/*`` (``tf.io.gfile.glob``, which imports
        TensorFlow) or ``@dirs.txt``.

    Returns:
      Normalised (absolute) paths, sorted, without duplicates.

    Raises:
      errors.UsageError: the glob matches nothing, or the list file is missing, unreadable or
        lists nothing.
    """
    if not spec:
        raise errors.UsageError("--model_dirs: empty; pass a glob or @file listing directories")
    if spec.startswith("@"):
        path = spec[1:]
        try:
            text = fs.read_text(fs.normalize(path))
        except errors.Error as e:
            raise errors.UsageError(
                f"--model_dirs=@{path}: cannot read the list file ({e}); pass an existing file "
                "with one model directory per line",
                path=path,
            ) from e
        found = [
            s for s in (raw.strip() for raw in text.splitlines()) if s and not s.startswith("#")
        ]
        if not found:
            raise errors.UsageError(
                f"--model_dirs=@{path}: lists no directories (only blank lines and # comments)",
                path=path,
            )
    else:
        if fs.has_scheme(spec):
            import tensorflow as tf

            found = list(tf.io.gfile.glob(spec))
        else:
            found = glob.glob(os.path.expanduser(spec))
        if not found:
            raise errors.UsageError(
                f"--model_dirs={spec}: matches nothing; check the pattern (and quote it, so that "
                "the shell does not expand it)"
            )
    return sorted({fs.normalize(d) for d in found})


def _with_name(value: str | None, model_dir: str) -> str | None:
    """Replaces ``{name}`` by the model directory's basename. Does not perform I/O."""
    if value is None or NAME_PLACEHOLDER not in value:
        return value
    return value.replace(NAME_PLACEHOLDER, fs.basename(fs.normalize(model_dir)))


def expand_names(job: Job) -> Job:
    """``job`` with ``{name}`` in its ``export_dir`` and ``output_dir`` filled in.

    Does not perform I/O.
    """
    return dataclasses.replace(
        job,
        export_dir=_with_name(job.export_dir, job.model_dir),
        output_dir=_with_name(job.output_dir, job.model_dir),
    )


def check_shared(targets: Mapping[str, str | None], count: int, where: str) -> None:
    """A directory flag shared by several jobs must say ``{name}``: they cannot share a target.

    Args:
      targets: flag name -> the value ``count`` jobs would share.
      count: how many jobs share it.
      where: what shares it, for the message ("directories", "manifest lines ...").

    Raises:
      errors.UsageError: ``count`` > 1 and a value without ``{name}``.
    """
    if count < 2:
        return
    for flag, value in targets.items():
        if value is not None and NAME_PLACEHOLDER not in value:
            raise errors.UsageError(
                f"--{flag}={value}: would be shared by {count} {where}; put {NAME_PLACEHOLDER} "
                f"in it (e.g. --{flag}={value.rstrip('/')}/{NAME_PLACEHOLDER}: the model "
                "directory's name)"
            )


def jobs_for_dirs(model_dirs: Sequence[str], template: Job) -> list[Job]:
    """One job per directory, each ``template`` with its ``model_dir`` (and ``{name}``) filled in.

    Raises:
      errors.UsageError: more than one directory and an ``export_dir`` or ``output_dir``
        without ``{name}`` (every directory would write to the same place).
    """
    targets = {"export_dir": template.export_dir, "output_dir": template.output_dir}
    check_shared(targets, len(model_dirs), "directories")
    return [
        expand_names(dataclasses.replace(template, model_dir=fs.normalize(d))) for d in model_dirs
    ]
