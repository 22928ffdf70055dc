"""The scaling probe of bench_fleet.py (--scaling): the marginal cost of one directory.

Generates the probe's directories (no ``global_step``: every repair writes a checkpoint) and
their copies, runs tools/bench_children/fleet_probe.py on them in one measured process (which
has imported TensorFlow and repaired a warm-up directory before it times anything), and fits
straight lines to its figures: scan and repair time against tensor count, repair time against
checkpoint size with hard links and with the data files copied.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchlib import (
    REPO_ROOT,
    BenchError,
    Case,
    Writer,
    child_env,
    child_script,
    link_copy,
    measure,
    tail,
)

_MIB = 2**20
_TAIL_LINES = 8  # of a failed child's stderr, in the error message


def fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least squares ``y = a + b x``; returns (a, b). Does not perform I/O."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


@dataclasses.dataclass(frozen=True)
class ProbeItem:
    """One probe directory and its copies: an item of the spec fleet_probe.py reads."""

    label: str
    path: str  # the probe directory (scanned; never written)
    copies: tuple[str, ...]  # hard-linked copies to repair with links
    copy_copies: tuple[str, ...]  # copies to repair with links disabled
    tensors: int
    bytes: int


def scaling(
    work: str,
    *,
    tensors_per_dir: int,
    scaling_tensors: Sequence[int],
    scaling_mib: Sequence[int],
    repeats: int,
) -> dict[str, Any]:
    """Generates the probe's directories and copies, runs the probe child, returns its figures.

    ``tensors_per_dir`` tensors in the warm-up directory and in those of ``scaling_mib`` (which
    add big tensors of that many MiB); ``scaling_tensors`` tensors in the others; ``repeats``
    copies of each to repair per mode.

    Raises:
      BenchError: the probe failed.
    """
    root = os.path.join(work, "scaling")
    os.makedirs(root)
    start = time.perf_counter()
    items = []

    def add(label: str, tensors: int, big_mib: int) -> ProbeItem:
        writer = Writer(tensors + 1)  # + the step key, no_step lacks it
        path = os.path.join(root, label.replace(" ", "_"))
        keys = writer.write(path, Case.NO_STEP, 4242, big_mib=big_mib)
        size = sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
        copies, copy_copies = [], []
        for r in range(repeats):
            copies.append(f"{path}-link{r}")
            copy_copies.append(f"{path}-copy{r}")
            link_copy(path, copies[-1])
            link_copy(path, copy_copies[-1])
        return ProbeItem(label, path, tuple(copies), tuple(copy_copies), keys, size)

    warmup = add("warmup", tensors_per_dir, 0)
    items += [add(f"{n} tensors", n, 0) for n in scaling_tensors]
    items += [add(f"{m} MiB", tensors_per_dir, m) for m in scaling_mib]
    generation = time.perf_counter() - start
    spec = os.path.join(root, "spec.json")
    with open(spec, "w") as f:
        json.dump(
            {
                "warmup": warmup.copies[0],
                "ram_source": items[0].path,
                "items": [dataclasses.asdict(i) for i in items],
            },
            f,
        )
    os.sync()
    stem = os.path.join(work, "logs", "scaling")
    cmd = [sys.executable, child_script("fleet_probe"), spec]
    measured = measure(cmd, cwd=REPO_ROOT, log_stem=stem, env=child_env())
    if measured.exit_code != 0:
        raise BenchError(
            f"the scaling probe exited {measured.exit_code}:\n{tail(stem + '.err', _TAIL_LINES)}"
        )
    with open(stem + ".out") as f:
        doc: dict[str, Any] = json.load(f)
    shutil.rmtree(root)
    by_tensors = [i for i in doc["items"] if i["label"].endswith("tensors")]
    by_size = [i for i in doc["items"] if i["label"].endswith("MiB")]
    fits = {
        "scan_ms_per_tensor": fit(
            [i["tensors"] for i in by_tensors], [i["scan_ms"] for i in by_tensors]
        ),
        "repair_link_ms_per_tensor": fit(
            [i["tensors"] for i in by_tensors], [i["repair_link_ms"] for i in by_tensors]
        ),
        "repair_link_ms_per_mib": fit(
            [i["bytes"] / _MIB for i in by_size], [i["repair_link_ms"] for i in by_size]
        ),
        "repair_copy_ms_per_mib": fit(
            [i["bytes"] / _MIB for i in by_size], [i["repair_copy_ms"] for i in by_size]
        ),
    }
    return {
        **doc,
        "fits": fits,
        "generation_seconds": generation,
        "probe_wall": measured.wall,
        "probe_peak_rss": measured.peak_rss_bytes,
    }
