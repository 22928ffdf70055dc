"""Every naming rule of the files estimator-fix writes, in one place. Nothing here performs I/O.

- temporaries: ``.estimator-fix-tmp-<host>-<pid>-<rand>-<final name>``, so a crashed run's
  leftovers are recognisable and their owner known (``scan`` reports them, ``repair`` removes
  the dead ones and never reuses them);
- the lock file ``.estimator-fix.lock`` and the ``--output_dir`` marker of an unfinished output;
- repaired checkpoints: ``model.ckpt-fixed-N`` in place (the step stays the ``-N`` suffix;
  ``-fixed2-N``, ``-fixed3-N``... when ``-fixed-N`` holds another repair), ``model.ckpt-N`` in
  a new directory;
- orphans: repaired data files whose index never arrived (a crash inside the commit);
- the state file's backup ``checkpoint.bak-<UTC time>[-n]``.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Iterable

from estimator_fix.checkpoint.state_file import STATE_FILENAME, v1_stem

TEMP_MARKER = ".estimator-fix-tmp"
LOCK_NAME = ".estimator-fix.lock"
# Present in an --output_dir from the first write until the state file is committed: whatever
# such a directory holds was written by an unfinished repair (see ``is_unfinished_output``).
INCOMPLETE_MARKER = TEMP_MARKER + "-incomplete-output"
FIXED_INFIX = "-fixed-"
MAX_FIXED_CANDIDATES = 99
BACKUP_PREFIX = f"{STATE_FILENAME}.bak-"

HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"
_TEMP_RE = re.compile(
    re.escape(TEMP_MARKER) + r"-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-[0-9a-f]+-(?P<name>.+)$"
)
# model.ckpt-fixed-N and -fixedK-N data files.
_REPAIRED_DATA_RE = re.compile(r"-fixed\d*-\d+\.data-\d{5}-of-\d{5}$")
_REPAIRED_STEM_RE = re.compile(r"-fixed\d*$")


def is_temporary(name: str) -> bool:
    return TEMP_MARKER in name


def temp_name(final_name: str) -> str:
    """A unique temporary sibling name for ``final_name``: host and pid name its owner."""
    return f"{TEMP_MARKER}-{HOST}-{os.getpid()}-{secrets.token_hex(4)}-{final_name}"


def temp_owner(name: str, final_name: str) -> tuple[str, int] | None:
    """(host, pid) of the run that made temporary ``name`` for ``final_name``, else None."""
    m = _TEMP_RE.match(name)
    if m is None or m["name"] != final_name:
        return None
    return m["host"], int(m["pid"])


def repaired_name(source_name: str, step: int, *, in_place: bool) -> str:
    """The repaired checkpoint's basename; the step stays its ``-N`` suffix.

    In place: ``model.ckpt-200`` -> ``model.ckpt-fixed-200`` (beside the original, whose name
    it must not take). In a new directory: ``model.ckpt-200``. A sharded V1 source
    (``model.ckpt-200-?????-of-00002``) is named by its stem.
    """
    head, _, tail = v1_stem(source_name).rpartition("-")
    stem = head if head and tail.isdigit() else v1_stem(source_name)
    stem = _REPAIRED_STEM_RE.sub("", stem)  # repairing a repaired checkpoint
    return f"{stem}{FIXED_INFIX}{step}" if in_place else f"{stem}-{step}"


def repaired_candidates(name: str) -> list[str]:
    """``model.ckpt-fixed-N``, then ``-fixed2-N`` ... ``-fixed99-N``: the names a repair may
    take when an earlier one holds the first."""
    return [name] + [
        name.replace(FIXED_INFIX, f"-fixed{n}-") for n in range(2, MAX_FIXED_CANDIDATES + 1)
    ]


def orphan_repair_files(names: Iterable[str]) -> list[str]:
    """Repaired data files whose index is not there: a crash inside the commit left them."""
    names = list(names)
    present = set(names)
    out = []
    for name in names:
        if _REPAIRED_DATA_RE.search(name):
            stem = name[: name.index(".data-")]
            if f"{stem}.index" not in present:
                out.append(name)
    return out


def is_unfinished_output(names: Iterable[str]) -> bool:
    """An output directory an interrupted repair left: no state file, and our marker or only
    our marked temporaries.

    On object stores the marker is written before anything else and removed after the state
    file is committed, so everything in such a directory was written by that repair and may be
    removed. A directory with a state file is a finished output (a leftover marker in it is a
    stale temporary) and is never emptied.
    """
    names = list(names)
    if STATE_FILENAME in names:
        return False
    return INCOMPLETE_MARKER in names or all(is_temporary(n) for n in names)


def backup_base(state_path: str, now: float | None = None) -> str:
    """``<state file>.bak-<UTC time>``; ``backup_candidates`` gives the names after it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{state_path}.bak-{stamp}"


def backup_candidates(state_path: str, now: float | None = None) -> Iterable[str]:
    """``checkpoint.bak-<UTC time>``, then ``-2``, ``-3``...: two repairs within one second
    (a re-repair with ``--checkpoint``) must not replace the backup of the original."""
    base = backup_base(state_path, now)
    yield base
    n = 2
    while True:
        yield f"{base}-{n}"
        n += 1


def is_backup(name: str) -> bool:
    return name.startswith(BACKUP_PREFIX)


# --- checkpoint surgery (rename, migrate) -----------------------------------------------------

RENAMED_INFIX = "-renamed"
_SURGERY_STEM_RE = re.compile(r"-(?:fixed|renamed)\d*$")
_SURGERY_DATA_RE = re.compile(r"-renamed\d*(?:-\d+)?\.data-\d{5}-of-\d{5}$")


def renamed_candidates(source_name: str, *, in_place: bool) -> list[str]:
    """The names a checkpoint edited by ``rename`` or ``migrate`` may take, first choice first.

    The step stays the ``-N`` suffix. In place: ``model.ckpt-200`` -> ``model.ckpt-renamed-200``
    (beside the original), then ``-renamed2-200`` ... ``-renamed99-200`` when earlier edits hold
    those; a prefix without a step suffix (``model.ckpt``) -> ``model.ckpt-renamed``. An edited
    or repaired source loses its ``-fixedK``/``-renamedK`` first, so edits never stack infixes.
    In a new directory: the source's name without those infixes (``model.ckpt-200``).
    Does not perform I/O.
    """
    head, _, tail = v1_stem(source_name).rpartition("-")
    has_step = bool(head) and tail.isdigit()
    stem = _SURGERY_STEM_RE.sub("", head if has_step else v1_stem(source_name))
    suffix = f"-{tail}" if has_step else ""
    if not in_place:
        return [f"{stem}{suffix}"]
    return [f"{stem}{RENAMED_INFIX}{suffix}"] + [
        f"{stem}{RENAMED_INFIX}{n}{suffix}" for n in range(2, MAX_FIXED_CANDIDATES + 1)
    ]


def orphan_surgery_files(names: Iterable[str]) -> list[str]:
    """Edited (``-renamedK-N``) data files whose index is not there: a crashed commit's."""
    names = list(names)
    present = set(names)
    return [
        n
        for n in names
        if _SURGERY_DATA_RE.search(n) and f"{n[: n.index('.data-')]}.index" not in present
    ]
