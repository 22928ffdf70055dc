"""The report of bench_fleet.py: the configurations, their runs, the medians, the tables.

Everything here is pure: ``rows`` turns the verified runs into one ``Row`` of medians per
configuration, ``render`` the rows and the scaling probe's figures into the text printed.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

GOAL_DIRS = 1000
GOAL_SECONDS = {"scan": 10.0, "repair": 60.0}
GOAL_BEAM_RATIO = 3.0
LOCAL = "local"
BEAM = "beam"
RUNNER_LABELS = {LOCAL: "estimator-fix", BEAM: "beam DirectRunner"}
_MB = 10**6
_MIB = 2**20


@dataclasses.dataclass(frozen=True)
class Config:
    """One benchmarked configuration."""

    command: str  # scan | repair
    runner: str  # LOCAL | BEAM
    workers: int

    @property
    def label(self) -> str:
        """Does not perform I/O."""
        return f"{self.command}-{self.runner}-w{self.workers}"


@dataclasses.dataclass(frozen=True)
class Run:
    """One verified whole-process run."""

    config: Config
    repeat: int
    wall: float  # seconds, whole process
    peak_rss: int  # bytes, largest process of the tree
    cpu: float  # user + system seconds of the whole process tree
    tool_seconds: float  # what the tool's own summary says
    mean_dir_seconds: float  # the results' mean seconds, each worker's slowest left out
    median_dir_seconds: float  # the median result's seconds


@dataclasses.dataclass(frozen=True)
class Row:
    """Medians of one configuration's runs."""

    config: Config
    dirs: int
    runs: tuple[float, ...]
    wall: float
    dirs_per_second: float
    peak_rss: float
    cpu: float
    tool_seconds: float
    mean_dir_seconds: float
    median_dir_seconds: float
    fixed_seconds: float  # wall minus the per-directory work spread over the workers
    beam_ratio: float | None  # beam wall / local wall at the same workers (beam rows only)


def rows(runs: Sequence[Run], dirs: int) -> list[Row]:
    """Medians per configuration, in the order first run. Does not perform I/O."""
    order: list[Config] = []
    for r in runs:
        if r.config not in order:
            order.append(r.config)
    walls: dict[Config, float] = {}
    out = []
    for config in order:
        mine = [r for r in runs if r.config == config]
        wall = statistics.median(r.wall for r in mine)
        walls[config] = wall
        mean_dir = statistics.median(r.mean_dir_seconds for r in mine)
        local = walls.get(Config(config.command, LOCAL, config.workers))
        out.append(
            Row(
                config=config,
                dirs=dirs,
                runs=tuple(r.wall for r in mine),
                wall=wall,
                dirs_per_second=dirs / wall,
                peak_rss=statistics.median(r.peak_rss for r in mine),
                cpu=statistics.median(r.cpu for r in mine),
                tool_seconds=statistics.median(r.tool_seconds for r in mine),
                mean_dir_seconds=mean_dir,
                median_dir_seconds=statistics.median(r.median_dir_seconds for r in mine),
                fixed_seconds=wall - dirs * mean_dir / config.workers,
                beam_ratio=wall / local if config.runner == BEAM and local else None,
            )
        )
    return out


def _table(cells: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in cells) for c in range(len(cells[0]))]
    return [
        "  ".join(
            cell.ljust(w) if c < 2 else cell.rjust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]


def render(
    table_rows: Sequence[Row],
    probe: Mapping[str, Any] | None,
    header: Sequence[str],
) -> str:
    """The report. Does not perform I/O."""
    lines = [*header, ""]
    cells = [
        (
            "command",
            "runner",
            "workers",
            "dirs",
            "median wall",
            "dirs/s",
            "beam/local",
            "CPU s",
            "peak RSS",
            "ms/dir*",
            "median",
            "fixed s**",
        )
    ]
    for r in table_rows:
        cells.append(
            (
                r.config.command,
                RUNNER_LABELS[r.config.runner],
                str(r.config.workers),
                str(r.dirs),
                f"{r.wall:.2f} s",
                f"{r.dirs_per_second:.1f}",
                f"{r.beam_ratio:.2f}x" if r.beam_ratio is not None else "",
                f"{r.cpu:.1f}",
                f"{r.peak_rss / _MB:.0f} MB",
                f"{1e3 * r.mean_dir_seconds:.1f}",
                f"{1e3 * r.median_dir_seconds:.1f}",
                f"{r.fixed_seconds:.1f}",
            )
        )
    lines += _table(cells)
    lines += [
        "",
        "median wall: the whole process (interpreter, imports, workers, pipeline), median of the"
        " runs;",
        "beam/local: Beam's wall / the local run's with as many workers; CPU s: user + system of"
        " every",
        "process of the run (median); peak RSS: its largest process;",
        "* mean seconds per directory inside its worker (the results' `seconds`; each worker's"
        " slowest,",
        "  its first with the TensorFlow import, left out); median: of all the directories;",
        "** wall - dirs x ms/dir / workers: interpreter and worker start-up, imports, hand-offs.",
        "",
        "runs (s):",
    ]
    for r in table_rows:
        runs = ", ".join(f"{s:.2f}" for s in r.runs)
        lines.append(f"  {r.config.label}: {runs} (tool's own: {r.tool_seconds:.2f} s)")
    lines += ["", "goals:"]
    for command, goal in GOAL_SECONDS.items():
        mine = [r for r in table_rows if r.config.command == command and r.config.runner == LOCAL]
        for r in mine:
            seconds = r.wall if r.dirs == GOAL_DIRS else GOAL_DIRS / r.dirs_per_second
            how = "" if r.dirs == GOAL_DIRS else f" (extrapolated from {r.dirs})"
            met = "MET    " if seconds < goal else "NOT MET"
            lines.append(
                f"  {met}  {command} of {GOAL_DIRS:,} dirs < {goal:g} s, estimator-fix "
                f"--workers={r.config.workers}: {seconds:.2f} s{how}"
            )
    for r in table_rows:
        if r.beam_ratio is not None:
            met = "MET    " if r.beam_ratio <= GOAL_BEAM_RATIO else "NOT MET"
            lines.append(
                f"  {met}  {r.config.command}: Beam DirectRunner <= {GOAL_BEAM_RATIO:g}x local"
                f" (both {r.config.workers} workers): {r.beam_ratio:.2f}x"
            )
    if probe is not None:
        lines += ["", *render_probe(probe)]
    return "\n".join(lines) + "\n"


def render_probe(probe: Mapping[str, Any]) -> list[str]:
    """Does not perform I/O."""
    lines = [
        f"scaling probe (one process; TensorFlow imported in {probe['import_seconds']:.2f} s, "
        f"RSS {probe['rss_after_import'] / _MB:.0f} MB after the import, peak "
        f"{probe['peak_rss'] / _MB:.0f} MB; first repair {1e3 * probe['first_repair_seconds']:.0f}"
        " ms, not counted; the rest are medians):",
    ]
    cells = [
        (
            "directory",
            "tensors",
            "size",
            "scan ms",
            "repair ms (links)",
            "of which repair()",
            "repair ms (copies)",
        )
    ]
    for i in probe["items"]:
        cells.append(
            (
                i["label"],
                str(i["tensors"]),
                f"{i['bytes'] / _MIB:.1f} MiB",
                f"{i['scan_ms']:.2f}",
                f"{i['repair_link_ms']:.1f}",
                f"{i['repair_link_own_ms']:.1f}",
                f"{i['repair_copy_ms']:.1f}",
            )
        )
    lines += ["  " + line for line in _table(cells)]
    fits = probe["fits"]
    a, b = fits["scan_ms_per_tensor"]
    c, d = fits["repair_link_ms_per_tensor"]
    e, g = fits["repair_link_ms_per_mib"]
    h, k = fits["repair_copy_ms_per_mib"]
    copied = f"   (~{1000.0 / k:.0f} MiB/s copied)" if k > 0 else ""
    lines += [
        "  fits (least squares over the rows above):",
        f"    scan            = {a:.2f} ms + {1e3 * b:.2f} us x tensors",
        f"    repair (links)  = {c:.1f} ms + {1e3 * d:.2f} us x tensors",
        f"    repair (links)  = {e:.1f} ms + {g:.4f} ms x MiB",
        f"    repair (copies) = {h:.1f} ms + {k:.3f} ms x MiB{copied}",
    ]
    ram = probe["ram"]
    for what in ("scan", "repair"):
        calls = ram[f"{what}_calls"]
        listed = ", ".join(f"{n} {k}" for k, n in sorted(calls.items(), key=lambda kv: -kv[1]))
        lines.append(
            f"  ram:// {what} of the {probe['items'][0]['tensors']}-tensor directory: "
            f"{sum(calls.values())} tf.io.gfile calls ({listed}); {ram[f'{what}_ms']:.1f} ms"
        )
    lines.append(
        "    (plus TensorFlow's own C++ file access: the step's Saver writes a data file and an "
        "index, the read-back opens two indexes and the step's data file)"
    )
    return lines
