"""What a checkpoint surgery does, as data: renames, drops, new small tensors, a new object graph.

``Edit`` is built by ``rename`` (from ``--map``/``--map_file``/``--regex`` and ``--drop``, see
``surgery.rules``) and by ``migrate`` (from what it knows about the source); ``validate``
checks it against the source index once, before anything is written. Does not perform I/O.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from estimator_fix import errors
from estimator_fix.checkpoint.keys import OBJECT_GRAPH_KEY, OBJECT_STEP_KEY, STEP_KEY

if TYPE_CHECKING:
    import numpy

    from estimator_fix.checkpoint.index_file import Index

# Keys an Estimator restores its step from: an edit never renames or drops them by accident.
STEP_KEYS = frozenset({STEP_KEY, OBJECT_STEP_KEY})
_PART_RE = re.compile(r"^(?P<full>.+)/part_\d+$")


@dataclasses.dataclass(frozen=True)
class NewTensor:
    """A small tensor the edit adds (Adam's beta powers, a step).

    Attributes:
      name: its checkpoint key.
      value: its value; written through a graph-mode session ``Saver``, as ``repair`` writes
        the step, so its bytes and crc32c are TensorFlow's own.
    """

    name: str
    value: numpy.ndarray


@dataclasses.dataclass(frozen=True)
class Edit:
    """What to do to the target checkpoint's keys.

    Attributes:
      renames: old key -> new key, for full tensor names (a partitioned variable's slices
        follow its full name).
      drops: keys left out (a partitioned variable's slices with it).
      additions: small new tensors.
      replace_object_graph: a new ``_CHECKPOINTABLE_OBJECT_GRAPH`` payload (a serialized
        ``TrackableObjectGraph``), or None: then an object-based source's graph is kept, with
        the ``checkpoint_key`` of every renamed or dropped attribute updated.
      notes: what was dropped or derived and why, for the report.
      allow_step_change: the edit may rename or drop the step key (``migrate`` to a layout
        with its own step); ``rename`` never sets it.
    """

    renames: Mapping[str, str]
    drops: tuple[str, ...] = ()
    additions: tuple[NewTensor, ...] = ()
    replace_object_graph: bytes | None = None
    notes: tuple[str, ...] = ()
    allow_step_change: bool = False

    @property
    def is_empty(self) -> bool:
        """Nothing to do: no rename that changes a name, no drop, no addition, no new graph."""
        return (
            not any(old != new for old, new in self.renames.items())
            and not self.drops
            and not self.additions
            and self.replace_object_graph is None
        )

    def final_name(self, name: str) -> str | None:
        """``name`` after the edit, or None when it is dropped. Does not perform I/O."""
        if name in self.drops:
            return None
        return self.renames.get(name, name)


def _refuse(index: Index, what: str, fix: str) -> errors.UsageError:
    prefix = index.path[: -len(".index")] if index.path.endswith(".index") else index.path
    return errors.UsageError(f"{prefix}: {what}; {fix}; nothing was written")


def validate(index: Index, edit: Edit) -> None:
    """Checks ``edit`` against the source checkpoint's index. Does not perform I/O.

    Refused: a renamed or dropped key the checkpoint does not hold; the slices of a partitioned
    variable named apart from its full name; two keys mapped to one; a new name that another
    (kept) key or an addition already has; the step key renamed or dropped (unless
    ``allow_step_change``); an empty or binary new name; the object graph key renamed.

    Raises:
      errors.UsageError: the first problem found, as one line.
    """
    names = {e.name for e in index.variables()}
    partitioned = {e.name for e in index.variables() if e.slices}
    for old in (*edit.renames, *edit.drops):
        if old in names:
            continue
        m = _PART_RE.match(old)
        if m and m["full"] in partitioned:
            raise _refuse(
                index,
                f"{old!r} is a slice of the partitioned variable {m['full']!r}, whose slices are "
                "stored under its full name",
                f"rename or drop {m['full']!r} instead (its slices follow it)",
            )
        raise _refuse(
            index,
            f"no key {old!r} in the checkpoint, nor keys under the scope {old.rstrip('/') + '/'!r}",
            "check the map against `estimator-fix scan --json` or pass --allow_unmatched",
        )
    for old, new in edit.renames.items():
        if not new or new.startswith("\x00"):
            raise _refuse(index, f"{old!r} is mapped to an empty or binary name", "fix the map")
        if old in edit.drops:
            raise _refuse(index, f"{old!r} is both renamed and dropped", "keep one of the two")
        if old == OBJECT_GRAPH_KEY and new != old:
            raise _refuse(index, f"{OBJECT_GRAPH_KEY} cannot be renamed", "leave it out of the map")
    if not edit.allow_step_change:
        for key in sorted(STEP_KEYS & names):
            if key in edit.drops or edit.renames.get(key, key) != key:
                raise _refuse(
                    index,
                    f"{key!r} would be renamed away or dropped (the Estimator restores its step "
                    "from it)",
                    "leave it out of the map and --drop",
                )
    by_target: dict[str, str] = {}
    for name in sorted(names):
        final = edit.final_name(name)
        if final is None:
            continue
        other = by_target.get(final)
        if other is not None:
            a, b = sorted((other, name))
            if final in (a, b):
                raise _refuse(
                    index,
                    f"{b if final == a else a!r} is mapped to {final!r}, which the checkpoint "
                    "already holds and keeps",
                    f"drop {final!r} too, or pick another name",
                )
            raise _refuse(index, f"{a!r} and {b!r} are both mapped to {final!r}", "fix the map")
        by_target[final] = name
    for t in edit.additions:
        if t.name in by_target:
            raise _refuse(
                index, f"the new tensor {t.name!r} is already a key after the edit", "drop it first"
            )
        by_target[t.name] = t.name
