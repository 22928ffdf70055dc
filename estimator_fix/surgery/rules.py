"""From what a user writes (``--map``, ``--map_file``, ``--regex``/``--replacement``, ``--drop``)
to an ``Edit`` over one checkpoint's keys.

- A map entry ``OLD=NEW`` renames the key ``OLD``, or else, as a scope, every key under
  ``OLD/`` to the same path under ``NEW/`` (an exact key wins over a scope, a longer scope over
  a shorter one). A map file is one JSON object, old -> new.
- ``--regex=PATTERN --replacement=REPL`` renames every key ``PATTERN`` matches (``re.search``)
  to ``re.sub(PATTERN, REPL, key)``.
- ``--drop=REGEX`` leaves out every key it matches (``re.search``).
``_CHECKPOINTABLE_OBJECT_GRAPH`` is never matched by a scope or pattern (it follows the keys).
A map entry, pattern or drop that matches nothing is refused unless ``allow_unmatched``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from estimator_fix import errors
from estimator_fix.checkpoint.index_file import Index
from estimator_fix.checkpoint.keys import OBJECT_GRAPH_KEY
from estimator_fix.storage import fs
from estimator_fix.surgery.edit import Edit


def parse_map_flags(entries: list[str] | None, map_file: str | None) -> dict[str, str] | None:
    """``--map=OLD=NEW`` (repeatable) or ``--map_file=map.json`` as one mapping, or None.

    Raises:
      errors.UsageError: both given; an entry without ``=``; a key given twice; a map file that
        is missing or not one JSON object of strings.
    """
    if entries and map_file:
        raise errors.UsageError("--map and --map_file exclude each other; pass one of them")
    if map_file:
        return read_map_file(map_file)
    if not entries:
        return None
    out: dict[str, str] = {}
    for entry in entries:
        old, sep, new = entry.partition("=")
        if not sep or not old or not new:
            raise errors.UsageError(f"--map={entry}: expected OLD=NEW (a key or a scope)")
        if old in out and out[old] != new:
            raise errors.UsageError(f"--map: {old!r} is mapped twice ({out[old]!r}, {new!r})")
        out[old] = new
    return out


def read_map_file(path: str) -> dict[str, str]:
    """A ``map.json``: one JSON object, old key -> new key.

    Raises:
      errors.UsageError: the file is missing, unreadable, not JSON, not an object of strings,
        or has a key twice.
    """
    try:
        text = fs.read_text(path)
    except errors.Error as e:
        raise errors.UsageError(f"--map_file={path}: cannot read it ({e})") from e

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        seen: dict[str, object] = {}
        for k, v in items:
            if k in seen:
                raise errors.UsageError(f"--map_file={path}: the key {k!r} appears twice")
            seen[k] = v
        return seen

    try:
        doc = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise errors.UsageError(
            f"--map_file={path}: not JSON ({e.msg} at line {e.lineno}); write one object, "
            '{"old/key": "new/key", ...}'
        ) from e
    if not isinstance(doc, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in doc.items()
    ):
        raise errors.UsageError(
            f'--map_file={path}: must be one JSON object of non-empty strings, {{"old/key": '
            '"new/key", ...}'
        )
    return dict(doc)


def _compile(flag: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise errors.UsageError(f"--{flag}={pattern}: not a regular expression ({e})") from e


def edit_from_rules(
    index: Index,
    *,
    mapping: Mapping[str, str] | None = None,
    regex: str | None = None,
    replacement: str | None = None,
    drop: str | None = None,
    allow_unmatched: bool = False,
) -> Edit:
    """The ``Edit`` the rules make of ``index``'s keys (not yet validated: see ``validate``).

    Raises:
      errors.UsageError: a bad pattern or replacement; a rule that matches nothing (unless
        ``allow_unmatched``); map and regex both given.
    """
    if mapping and regex is not None:
        raise errors.UsageError("--map/--map_file and --regex exclude each other; pass one")
    names = sorted(e.name for e in index.variables() if e.name != OBJECT_GRAPH_KEY)
    notes: list[str] = []
    unmatched: list[str] = []
    drops: list[str] = []
    if drop is not None:
        pattern = _compile("drop", drop)
        drops = [n for n in names if pattern.search(n)]
        if not drops:
            unmatched.append(f"--drop={drop}")
        notes.extend(f"dropped {n} (--drop={drop})" for n in drops)
    dropped = set(drops)
    renames: dict[str, str] = {}
    if mapping:
        exact = set(names)
        used: set[str] = set()
        scopes = sorted(mapping, key=len, reverse=True)
        for name in names:
            if name in dropped:
                continue
            if name in mapping:
                renames[name] = mapping[name]
                used.add(name)
                continue
            for old in scopes:
                scope = old.rstrip("/") + "/"
                if name.startswith(scope):
                    renames[name] = mapping[old].rstrip("/") + "/" + name[len(scope) :]
                    used.add(old)
                    break
        for old in mapping:
            if old in used:
                continue
            if old in exact:  # dropped: validate refuses a key both renamed and dropped
                renames[old] = mapping[old]
            elif allow_unmatched:
                notes.append(f"map entry {old!r} matches no key (--allow_unmatched)")
            else:
                renames[old] = mapping[old]  # validate refuses it, naming a slice if it is one
    if regex is not None:
        pattern = _compile("regex", regex)
        for name in names:
            if name in dropped or not pattern.search(name):
                continue
            try:
                renames[name] = pattern.sub(replacement or "", name)
            except (re.error, IndexError) as e:
                raise errors.UsageError(
                    f"--replacement={replacement}: does not fit --regex={regex} ({e})"
                ) from e
        if not any(pattern.search(n) for n in names if n not in dropped):
            unmatched.append(f"--regex={regex}")
    if unmatched and not allow_unmatched:
        raise errors.UsageError(
            f"{index.path}: {', '.join(unmatched)} matches no key of the checkpoint; check it "
            "against `estimator-fix scan --json` or pass --allow_unmatched; nothing was written"
        )
    notes.extend(f"{u} matches no key (--allow_unmatched)" for u in unmatched)
    return Edit(
        renames={k: v for k, v in renames.items() if k != v},
        drops=tuple(drops),
        notes=tuple(notes),
    )
