"""The report of bench_export.py: what was measured, the medians, ratios and stage breakdowns.

Everything here is pure: it turns the measured runs (``Run``) and stage timings (``Stage``) of
one subject (``Result``) into the text bench_export.py prints.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from bench_export_subjects import Subject
from benchlib import Measured

BARE = "bare"
FIX = "fix"
FLOOR = "floor"
METHODS = (BARE, FIX, FLOOR)
LABELS = {
    BARE: "bare: export_saved_model (healthy copy)",
    FIX: "estimator-fix fix (broken copy)",
    FLOOR: "floor: import tensorflow, estimator",
}
GOAL_RATIO = 1.5
_GC_SHOWN = 0.005  # seconds of full garbage collection worth a note on a stage line
NOISY_SPREAD = 0.25  # a method's (slowest - fastest) / median above this: the machine was busy
_MB = 10**6
_MIB = 2**20


@dataclasses.dataclass(frozen=True)
class Stage:
    """One timed stage of a child: its label, nesting depth and seconds."""

    stage: str
    depth: int
    seconds: float
    gc: float = 0.0  # full garbage collections while it ran, not in a child stage (profile only)


@dataclasses.dataclass(frozen=True)
class Run:
    """One measured child process."""

    method: str
    repeat: int
    wall: float
    peak_rss: int
    cpu: float
    fix_json: Mapping[str, float] = dataclasses.field(default_factory=dict)
    stages: tuple[Stage, ...] = ()  # bare: its own stamps (start-up and exit included)


@dataclasses.dataclass(frozen=True)
class Summary:
    """One method's runs: median and fastest wall, median peak RSS, spread of the walls."""

    method: str
    wall: float
    fastest: float
    spread: float  # (slowest - fastest) / median
    cpu: float  # median user + system seconds
    peak_rss: float


@dataclasses.dataclass(frozen=True)
class Result:
    """Everything measured on one subject."""

    subject: Subject
    runs: tuple[Run, ...]
    profiles: tuple[tuple[Stage, ...], ...]  # one per profile run
    profile_walls: tuple[float, ...]
    load_before: float  # 1-minute load average when the measured runs started
    load_after: float


def stamped_stages(doc: Mapping[str, Any], launched: Measured) -> tuple[Stage, ...]:
    """A child's own stage timings framed by interpreter start-up and exit. Does not do I/O."""
    stages = [Stage("interpreter start-up", 0, doc["epoch_start"] - launched.started)]
    stages += [
        Stage(s["stage"], int(s["depth"]), float(s["seconds"]), float(s.get("gc_seconds", 0.0)))
        for s in doc["stages"]
    ]
    stages.append(Stage("exit (after the last line)", 0, launched.ended - doc["epoch_end"]))
    return tuple(stages)


# --- the report ---------------------------------------------------------------------------------


def summarize(runs: Sequence[Run]) -> dict[str, Summary]:
    """Per method. Does not perform I/O."""
    out = {}
    for method in METHODS:
        walls = [r.wall for r in runs if r.method == method]
        median = statistics.median(walls)
        out[method] = Summary(
            method=method,
            wall=median,
            fastest=min(walls),
            spread=(max(walls) - min(walls)) / median,
            cpu=statistics.median(r.cpu for r in runs if r.method == method),
            peak_rss=statistics.median(r.peak_rss for r in runs if r.method == method),
        )
    return out


def median_run(
    stage_lists: Sequence[tuple[Stage, ...]], walls: Sequence[float]
) -> tuple[tuple[Stage, ...], float]:
    """The stages and wall of the run with the median wall (the lower one of an even count).

    One whole run rather than a median per line, so that its lines add up. Does not perform I/O.
    """
    ranked = sorted(range(len(walls)), key=lambda i: walls[i])
    pick = ranked[(len(ranked) - 1) // 2]
    return stage_lists[pick], walls[pick]


def render_stages(stages: Sequence[Stage], *, wall: float) -> list[str]:
    """Indented stage lines; a parent's children are followed by its "(other)" time. Pure."""
    lines: list[str] = []

    def emit(i: int) -> int:
        """Renders ``stages[i]`` and its descendants; returns the index after them."""
        s = stages[i]
        pad = "  " * (s.depth + 1)
        gc = f"  (of which full GC {s.gc:.3f} s)" if s.gc >= _GC_SHOWN else ""
        lines.append(f"{pad}{s.stage:<{52 - len(pad)}} {s.seconds:7.3f} s{gc}")
        j, children = i + 1, 0.0
        while j < len(stages) and stages[j].depth > s.depth:
            children += stages[j].seconds
            j = emit(j)
        if j > i + 1:
            pad = "  " * (s.depth + 2)
            lines.append(f"{pad}{'(other)':<{52 - len(pad)}} {s.seconds - children:7.3f} s")
        return j

    i = 0
    while i < len(stages):
        i = emit(i)
    total = sum(s.seconds for s in stages if s.depth == 0)
    lines.append(
        f"  {'sum of the top-level lines':<50} {total:7.3f} s  (process wall {wall:.3f} s)"
    )
    return lines


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def render(result: Result, *, repeats: int) -> tuple[str, bool]:
    """The report for one subject and whether the goal was met. Does not perform I/O."""
    subject = result.subject
    medians = summarize(result.runs)
    bare, fix, floor = medians[BARE], medians[FIX], medians[FLOOR]
    width = max(len(v) for v in LABELS.values())
    lines = [
        f"== {subject.description}",
        f"checkpoint {subject.checkpoint_name}: {subject.tensors} tensors, "
        f"{subject.checkpoint_bytes / _MIB:.1f} MiB (model directory {subject.dir_bytes / _MIB:.1f}"
        " MiB)",
        f"repeats: {repeats}, whole processes, alternating order, fresh `cp -r` copy each; "
        f"children run with TF_CPP_MIN_LOG_LEVEL=2; {os.cpu_count()} CPU(s), 1-min load average "
        f"{result.load_before:.2f} before the runs, {result.load_after:.2f} after",
        "",
        "runs:",
    ]
    for r in result.runs:
        extra = ""
        if r.fix_json:
            extra = "  JSON: " + ", ".join(f"{k} {v:.3f}" for k, v in r.fix_json.items())
        lines.append(
            f"  {r.repeat}  {LABELS[r.method]:<{width}}  {r.wall:7.2f} s  CPU {r.cpu:6.2f} s  "
            f"{r.peak_rss / _MB:6.0f} MB{extra}"
        )
    header = (
        f"{'method':<{width}}  {'wall (median)':>13}  {'(fastest)':>9}  {'(spread)':>8}  "
        f"{'CPU (median)':>12}  {'peak RSS':>9}"
    )
    lines += ["", header, "-" * len(header)]
    for s in medians.values():
        lines.append(
            f"{LABELS[s.method]:<{width}}  {s.wall:11.2f} s  {s.fastest:7.2f} s  "
            f"{s.spread:8.0%}  {s.cpu:10.2f} s  {s.peak_rss / _MB:6.0f} MB"
        )
    lines.append(
        f"{'fix / bare':<{width}}  {_ratio(fix.wall, bare.wall):>13}  "
        f"{_ratio(fix.fastest, bare.fastest):>9}  {'':>8}  {_ratio(fix.cpu, bare.cpu):>12}  "
        f"{_ratio(fix.peak_rss, bare.peak_rss):>9}"
    )
    above_fix, above_bare = fix.wall - floor.wall, bare.wall - floor.wall
    lines.append(
        f"{'(fix - floor) / (bare - floor)':<{width}}  {_ratio(above_fix, above_bare):>13}  "
        f"{_ratio(fix.fastest - floor.fastest, bare.fastest - floor.fastest):>9}  "
        f"{'':>8}  {_ratio(fix.cpu - floor.cpu, bare.cpu - floor.cpu):>12}  {'':>9}  "
        f"(median walls: {above_fix:.2f} s vs {above_bare:.2f} s above the floor)"
    )
    noisy = [m.method for m in medians.values() if m.spread > NOISY_SPREAD]
    if floor.wall >= bare.wall or noisy:
        lines.append(
            f"NOISY: {', '.join(noisy) or 'none'} spread over {NOISY_SPREAD:.0%}"
            f"{'; the floor is not below bare' if floor.wall >= bare.wall else ''}; load "
            f"average {result.load_before:.2f} -> {result.load_after:.2f} on {os.cpu_count()} "
            "CPU(s): rerun on an idle machine"
        )
    met = fix.wall <= GOAL_RATIO * bare.wall
    lines += [
        "",
        f"goal: {'MET    ' if met else 'NOT MET'}  fix <= {GOAL_RATIO}x bare (whole process, "
        f"median wall): {fix.wall / bare.wall:.2f}x ({fix.wall:.2f} s vs {bare.wall:.2f} s)",
    ]

    fix_runs = [r for r in result.runs if r.method == FIX]
    keys = list(fix_runs[0].fix_json)
    lines += ["", f"where fix's time goes, from `fix --json` (medians of {len(fix_runs)} runs):"]
    json_medians = {
        k: statistics.median(r.fix_json[k] for r in fix_runs if k in r.fix_json) for k in keys
    }
    for k, v in json_medians.items():
        label = f"{k} (fix() in total)" if k == "seconds" else k
        lines.append(f"  {label:<50} {v:7.3f} s")
    total = json_medians.get("seconds")
    if total is not None:
        parts = sum(v for k, v in json_medians.items() if k != "seconds")
        lines.append(
            f"  {'inside fix(), not broken down by the JSON':<50} {total - parts:7.3f} s  "
            "(scan, plan, building the Estimator incl. the TF import, pre-flight, verify)"
        )
        lines.append(
            f"  {'outside fix() (start-up, CLI imports, exit)':<50} {fix.wall - total:7.3f} s  "
            "(median wall minus fix() total)"
        )

    if result.profiles:
        stages, wall = median_run(result.profiles, result.profile_walls)
        lines += [
            "",
            f"fix, in-process stage timings (the median-wall one of {len(result.profiles)} "
            "profile run(s); timers around estimator_fix's own stage functions):",
            *render_stages(stages, wall=wall),
        ]
        bare_runs = [r for r in result.runs if r.method == BARE]
        bare_stages, bare_wall = median_run(
            [r.stages for r in bare_runs], [r.wall for r in bare_runs]
        )
        lines += [
            "",
            f"bare export, its own stamps (the median-wall one of the {len(bare_runs)} "
            "measured runs):",
            *render_stages(bare_stages, wall=bare_wall),
            "",
            *hot_spots(stages, bare_stages, fix.wall - bare.wall),
        ]
    return "\n".join(lines) + "\n", met


_NOT_IN_BARE = (
    "import estimator_fix",
    "scan",
    "plan",
    "pre-flight (build graph, compare keys)",
    "repair",
    "verify",
)


def hot_spots(fix_stages: Sequence[Stage], bare_stages: Sequence[Stage], gap: float) -> list[str]:
    """What fix does that the bare export does not, biggest first; then the shared work.

    Does not perform I/O.
    """
    ours = {s.stage: s.seconds for s in fix_stages}
    theirs = {s.stage: s.seconds for s in bare_stages}
    extra = sorted(
        ((label, ours[label]) for label in _NOT_IN_BARE if label in ours), key=lambda kv: -kv[1]
    )
    lines = [f"work fix does that bare does not (the measured gap of median walls: {gap:.2f} s):"]
    lines += [f"  {label:<50} {seconds:7.3f} s" for label, seconds in extra]
    lines += [
        f"  {'sum':<50} {sum(v for _, v in extra):7.3f} s",
        "work both do (fix's profile run vs bare's median run):",
    ]
    for fix_label, bare_label in _SHARED:
        if fix_label in ours and bare_label in theirs:
            lines.append(
                f"  {bare_label:<50} {ours[fix_label]:7.3f} s in fix, "
                f"{theirs[bare_label]:.3f} s bare"
            )
    return lines


_SHARED = (
    ("interpreter start-up", "interpreter start-up"),
    ("import tensorflow, tensorflow_estimator", "import tensorflow"),
    ("load model code, build the Estimator", "load model code, build the Estimator"),
    ("export (export_saved_model)", "export_saved_model"),
    ("exit (after the last line)", "exit (after the last line)"),
)
