"""What every bench_fleet.py run must have done: its results and its files, checked.

A run is only measured if it verifies: one correct result per generated directory (the
verdict and problem code of its case; for a repair, the step written and the healthy left
alone), every repaired copy scanning healthy, and the originals untouched (``fingerprint``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from bench_fleet_report import LOCAL, Config
from benchlib import EXPECTED, BenchError, Case, ModelDir

_MIB = 2**20
# The cases whose repair writes a new checkpoint `model.ckpt-fixed-N` (foreign: state file only).
NEW_CHECKPOINT = frozenset({Case.NO_STEP, Case.INT32_STEP, Case.RENAMED_STEP})


def fingerprint(root: str, *, hash_limit: int = 4 * _MIB) -> dict[str, tuple[int, ...] | str]:
    """Every file under ``root``: inode, size, mtime; and the sha256 of files up to
    ``hash_limit`` bytes. Equal fingerprints: nothing was written, renamed over or removed."""
    prints: dict[str, tuple[int, ...] | str] = {}
    for parent, _, names in os.walk(root):
        for name in names:
            path = os.path.join(parent, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            prints[rel] = (st.st_ino, st.st_size, st.st_mtime_ns)
            if st.st_size <= hash_limit:
                with open(path, "rb") as f:
                    prints[rel + "#sha256"] = hashlib.sha256(f.read()).hexdigest()
    return prints


def read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_run_results(config: Config, results: str) -> list[dict[str, Any]]:
    """The per-directory results a run wrote (the journal, or Beam's done + dead letters)."""
    if config.runner == LOCAL:
        return read_jsonl(results)
    return read_jsonl(results + "-done.jsonl") + read_jsonl(results + "-failed.jsonl")


def check_results(
    command: str, results: Sequence[Mapping[str, Any]], dirs: Sequence[ModelDir]
) -> None:
    """Raises BenchError unless every directory has one correct result. Does not perform I/O."""
    by_name: dict[str, Mapping[str, Any]] = {}
    for r in results:
        name = os.path.basename(str(r.get("model_dir")).rstrip("/"))
        if name in by_name:
            raise BenchError(f"two results for {name}")
        by_name[name] = r
    expected_names = {d.name for d in dirs}
    if set(by_name) != expected_names:
        missing = sorted(expected_names - set(by_name))[:3]
        extra = sorted(set(by_name) - expected_names)[:3]
        raise BenchError(f"{len(by_name)} results for {len(dirs)} dirs; missing {missing} {extra}")
    want = Counter(EXPECTED[d.case][0] for d in dirs)
    got = Counter(str(r.get("verdict")) for r in results)
    if got != want:
        raise BenchError(f"verdicts {dict(got)}, generated {dict(want)}")
    for d in dirs:
        r = by_name[d.name]
        verdict, code = EXPECTED[d.case]
        problems = list(r.get("problems") or [])
        if r.get("status") != "done" or r.get("verdict") != verdict:
            raise BenchError(f"{d.name}: {r.get('status')}, verdict {r.get('verdict')}: {r}")
        if code is not None and code not in problems:
            raise BenchError(f"{d.name}: problems {problems} lack {code}")
        if command == "scan":
            if r.get("exit_code") != (0 if d.case is Case.HEALTHY else 3):
                raise BenchError(f"{d.name}: scan exit code {r.get('exit_code')}")
            continue
        repaired = d.case is not Case.HEALTHY
        step = d.step if d.case in NEW_CHECKPOINT else None
        if (
            r.get("exit_code") != 0
            or r.get("repaired") != repaired
            or r.get("step") != step
            or bool(r.get("changed")) != repaired
        ):
            raise BenchError(
                f"{d.name}: expected repaired={repaired} step={step}, got exit code "
                f"{r.get('exit_code')} repaired={r.get('repaired')} step={r.get('step')} "
                f"changed={r.get('changed')}"
            )


def check_repaired_tree(tree: str, dirs: Sequence[ModelDir]) -> None:
    """Every repaired copy scans healthy, its target the checkpoint the repair should name."""
    from estimator_fix.scan import scan

    for d in dirs:
        report = scan(os.path.join(tree, d.name))
        fixed = "-fixed" if d.case in NEW_CHECKPOINT else ""
        want = f"model.ckpt{fixed}-{d.step}"
        target = os.path.basename(report.target or "")
        if report.verdict.value != "healthy" or target != want:
            codes = [p.code for p in report.problems]
            raise BenchError(
                f"{d.name} after repair: {report.verdict.value} {codes}, target {target}, "
                f"expected healthy with {want}"
            )
