"""The scaling probe of bench_fleet.py: the marginal cost of one directory, in a warm process.

Usage: python tools/bench_children/fleet_probe.py SPEC_JSON

SPEC_JSON (written by bench_fleet_scaling.py): ``{"warmup": <a directory to repair first, not
counted>, "ram_source": <a directory copied to ram:// for the file-operation counts>, "items":
[{"label", "path", "copies", "copy_copies", "tensors", "bytes"}, ...]}``. Each item's ``path``
is scanned (never written), its ``copies`` are repaired with hard links and its
``copy_copies`` with ``os.link`` failing, as across file systems, so that the repair copies the
data files. Every directory lacks ``global_step``, so every repair writes a checkpoint.

Prints one JSON document to stdout: the TensorFlow import's seconds and the RSS after it, the
first (warm-up) repair's seconds, the peak RSS, per item the medians ``scan_ms``,
``repair_link_ms`` (scan + plan + repair), ``repair_link_own_ms`` (``repair`` alone) and
``repair_copy_ms``, and under ``ram`` the ``tf.io.gfile`` calls, by kind, of one scan and one
repair on TensorFlow's ``ram://`` file system.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from absl import logging


class ProbeError(RuntimeError):
    """A repair did not do what the probe needs measured."""


@dataclasses.dataclass(frozen=True)
class ProbeItem:
    """One directory of the spec and its copies."""

    label: str
    path: str  # the probe directory (scanned; never written)
    copies: tuple[str, ...]  # hard-linked copies to repair with links
    copy_copies: tuple[str, ...]  # copies to repair with links disabled
    tensors: int
    bytes: int


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def _no_hard_links() -> Iterator[None]:
    """``os.link`` fails as across file systems: the repair copies the data files instead."""
    real = os.link

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EXDEV, "links disabled by the benchmark")

    os.link = refuse
    try:
        yield
    finally:
        os.link = real


class _GfileCounter:
    """Counts the calls estimator_fix makes through ``tf.io.gfile`` (by kind)."""

    _FUNCTIONS = (
        "exists",
        "isdir",
        "stat",
        "listdir",
        "glob",
        "rename",
        "copy",
        "remove",
        "makedirs",
        "rmtree",
    )

    def __init__(self) -> None:
        import tensorflow as tf

        self.counts: Counter[str] = Counter()
        self._gfile = tf.io.gfile
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> _GfileCounter:
        for name in (*self._FUNCTIONS, "GFile"):
            self._saved[name] = getattr(self._gfile, name)
        for name in self._FUNCTIONS:
            setattr(self._gfile, name, self._counting(name, self._saved[name]))
        real_open = self._saved["GFile"]

        def opening(path: str, mode: str = "r") -> Any:
            self.counts["open-write" if "w" in mode or "a" in mode else "open-read"] += 1
            return real_open(path, mode)

        self._gfile.GFile = opening
        return self

    def _counting(self, name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            return real(*args, **kwargs)

        return call

    def __exit__(self, *exc: object) -> None:
        for name, real in self._saved.items():
            setattr(self._gfile, name, real)


def main(spec_path: str) -> None:
    """Runs the probe over the spec's directories; prints one JSON document to stdout."""
    start = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import_seconds = time.perf_counter() - start
    rss_after_import = _rss_now()
    from estimator_fix import plan, repair, scan

    with open(spec_path) as f:
        spec = json.load(f)
    items = [
        ProbeItem(**{**d, "copies": tuple(d["copies"]), "copy_copies": tuple(d["copy_copies"])})
        for d in spec["items"]
    ]

    def fix(path: str) -> tuple[float, float, bool]:
        t0 = time.perf_counter()
        the_plan = plan.plan(scan.scan(path))
        t1 = time.perf_counter()
        result = repair.repair(the_plan)
        t2 = time.perf_counter()
        if result.new_prefix is None:
            raise ProbeError(f"{path}: the probe's repair wrote no checkpoint")
        return t2 - t0, t2 - t1, result.linked

    first = fix(spec["warmup"])[0]  # graph, Saver and reader code paths warmed up
    out_items = []
    for item in items:
        n = max(3, min(50, 20_000 // max(item.tensors, 1)))
        scans = []
        for _ in range(n):
            t0 = time.perf_counter()
            scan.scan(item.path)
            scans.append(time.perf_counter() - t0)
        link, copy = [], []
        for c in item.copies:
            total, own, linked = fix(c)
            if not linked:
                raise ProbeError(f"{c}: the repair copied instead of linking")
            link.append((total, own))
        with _no_hard_links():
            for c in item.copy_copies:
                total, own, linked = fix(c)
                if linked:
                    raise ProbeError(f"{c}: the repair linked although links were disabled")
                copy.append((total, own))
        out_items.append(
            {
                "label": item.label,
                "tensors": item.tensors,
                "bytes": item.bytes,
                "scan_ms": 1e3 * statistics.median(scans),
                "repair_link_ms": 1e3 * statistics.median(t for t, _ in link),
                "repair_link_own_ms": 1e3 * statistics.median(o for _, o in link),
                "repair_copy_ms": 1e3 * statistics.median(t for t, _ in copy),
            }
        )
        logging.info("probe %s: %s", item.label, out_items[-1])

    # Requests on an object store: the same repair on TensorFlow's ram:// file system.
    src = spec["ram_source"]
    ram = "ram://bench_fleet/" + os.path.basename(src)
    tf.io.gfile.makedirs(ram)
    for name in os.listdir(src):
        tf.io.gfile.copy(os.path.join(src, name), f"{ram}/{name}")
    with _GfileCounter() as scan_calls:
        t0 = time.perf_counter()
        report = scan.scan(ram)
        ram_scan = time.perf_counter() - t0
    with _GfileCounter() as repair_calls:
        t0 = time.perf_counter()
        result = repair.repair(plan.plan(report))
        ram_repair = time.perf_counter() - t0
    if result.new_prefix is None or result.linked:
        raise ProbeError(f"{ram}: the ram:// repair did not copy a new checkpoint")
    json.dump(
        {
            "import_seconds": import_seconds,
            "rss_after_import": rss_after_import,
            "first_repair_seconds": first,
            "peak_rss": _peak_rss(),
            "items": out_items,
            "ram": {
                "scan_calls": dict(scan_calls.counts),
                "repair_calls": dict(repair_calls.counts),
                "scan_ms": 1e3 * ram_scan,
                "repair_ms": 1e3 * ram_repair,
            },
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main(sys.argv[1])
