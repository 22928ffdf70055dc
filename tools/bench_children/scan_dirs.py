"""The scan process of bench_scan.py: ``estimator_fix.scan.scan`` over many directories.

Usage: python tools/bench_children/scan_dirs.py < paths.txt   (one model directory a line)

Prints one JSON document to stdout: ``{"results": [[verdict, [problem codes, sorted]], ...],
"tensorflow_modules": [...]}``, the results in input order and every ``tensorflow`` module this
process imported (the scan must import none).
"""

import json
import sys

from estimator_fix.scan import scan


def main() -> None:
    """Scans every directory named on stdin; writes the JSON document."""
    results = []
    for d in sys.stdin.read().splitlines():
        r = scan(d)
        results.append([r.verdict.value, sorted(p.code for p in r.problems)])
    tf = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
    json.dump({"results": results, "tensorflow_modules": tf}, sys.stdout)


if __name__ == "__main__":
    main()
