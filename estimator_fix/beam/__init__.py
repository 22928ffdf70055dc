"""The fleet's per-directory work as an Apache Beam pipeline (``pip install estimator-fix[beam]``).

The same work as ``fleet.run_fleet``, for runs that outgrow one machine: the runner is chosen by
Beam's standard pipeline options (``--runner=DirectRunner`` locally, ``DataflowRunner``,
``FlinkRunner``, ``SparkRunner``). ``tools/beam_fleet.py`` is the command line; this package is
the library under it and under the tests: ``pipeline`` (options, runner, ``build_pipeline``),
``dofn`` (``RunJobFn`` and its attempt records), ``summary`` (``SummaryFn``, reading the summary
back) and ``outputs`` (the file names, reading the results back).

The pipeline (``build_pipeline``)::

    Create(jobs as dicts) -> Reshuffle -> ParDo(RunJobFn) -done---> <prefix>-done.jsonl
                                                          -failed-> <prefix>-failed.jsonl
              (bad manifest lines, duplicate directories) -failed-^   (the dead letters)
    done + failed -> CombineGlobally(SummaryFn) --------------------> <prefix>-summary.json

- ``RunJobFn`` calls ``fleet.run_job`` (which never raises) and routes each result by its
  ``status``: ``done`` to the main output, ``failed`` to the dead-letter output. Every result is
  a fleet ``JobResult`` document (``RESULT_SCHEMA``); the two files together hold exactly what
  the fleet's results journal holds for the same jobs, in no particular order.
- ``Reshuffle`` breaks fusion with ``Create``, so that a runner spreads the directories over its
  workers instead of running them in the one bundle that created them.
- ``SummaryFn`` counts the results as ``fleet.FleetSummary`` does; ``fleet_summary`` turns the
  written summary back into one, whose ``exit_code`` is the fleet's (9 if any directory failed;
  for ``scan`` 4/3 by the worst verdict; else 0).

Output files. By default each output is one file (``num_shards=1``): fine for results of a few
hundred bytes per directory, even for 100,000 directories, and it gives fixed names. With
``num_shards=0`` the runner picks the sharding and the names get Beam's
``-SSSSS-of-NNNNN`` before the suffix (``<prefix>-done-00000-of-00004.jsonl``); ``read_results``
reads either. Paths are Beam file system paths: local, or ``gs://`` with ``apache-beam[gcp]``.

Retries. Beam re-runs a whole bundle when any part of it fails (a worker lost, killed by the
out-of-memory killer, preempted), including the elements it had already processed, and keeps
the outputs of one successful attempt only. Without more, a retried ``repair`` is still safe:
``run_job`` on a directory that an earlier attempt repaired finds it healthy and changes
nothing, so a directory is never repaired twice; but its result then says ``repaired: false``,
and a retried ``fix`` exports a second SavedModel version. So ``RunJobFn``, given an
``attempts_dir``, records each result that may have changed something (every ``repair`` and
``fix`` that is not a dry run) before emitting it, at ``<attempts_dir>/<attempt_key>.json``
(written atomically), and a later attempt of the same job replays that record instead of doing
the work again: a retried directory gives the identical result and does no second repair and
no second export. The key is ``Job.attempt_key``, a digest of the job's options (the same for
every attempt; no time, randomness or worker identity in it); ``attempts_dir`` is chosen once
per pipeline run at launch (``new_attempts_dir``) and is part of the pickled DoFn, so every
attempt of a run sees the same one, and a new run (a deliberate re-run) does the work again,
finding repaired directories healthy (``repaired: false``). Only a worker lost between the end
of the work and the record's write leaves nothing to replay: that retry re-runs the job, which
for ``repair`` reports ``repaired: false`` and for ``fix`` exports once more (never repairs
twice). ``scan`` and dry runs change nothing and are simply re-run. Two attempts running at the
same time (a worker that was presumed lost but is still working) meet at the directory's repair
lock: the second reports ``LockedError`` (exit code 6) and the directory is repaired once.

The DirectRunner's ``--direct_runner_bundle_repeat=1`` runs every bundle once more before the
attempt whose outputs it keeps: tests/test_beam.py retries every bundle that way.

Running it: ``new_pipeline(args)`` over Beam's standard options, ``build_pipeline``, then
``run().wait_until_finish()``. The jobs travel inside the pipeline graph (``Create``): about
18 bytes per job compressed (10,000 jobs: 0.18 MB; Dataflow accepts graphs up to 10 MB).
Workers import TensorFlow at most once each: in ``RunJobFn.setup`` when the command needs it
(``repair``, ``fix``), else only if a job needs it (a V1-format checkpoint, a ``gs://`` path).
On a remote runner they need ``estimator_fix`` installed (``tools/beam_fleet.py --help``).
"""

from estimator_fix.beam.dofn import DONE_TAG, FAILED_TAG, RunJobFn, new_attempts_dir
from estimator_fix.beam.outputs import Outputs, outputs_for, read_results
from estimator_fix.beam.pipeline import (
    build_pipeline,
    new_pipeline,
    with_local_defaults,
    workers_of,
)
from estimator_fix.beam.summary import (
    MAX_SUMMARY_FAILURES,
    SUMMARY_SCHEMA,
    SummaryFn,
    fleet_summary,
    read_summary,
)

__all__ = [
    "DONE_TAG",
    "FAILED_TAG",
    "MAX_SUMMARY_FAILURES",
    "SUMMARY_SCHEMA",
    "Outputs",
    "RunJobFn",
    "SummaryFn",
    "build_pipeline",
    "fleet_summary",
    "new_attempts_dir",
    "new_pipeline",
    "outputs_for",
    "read_results",
    "read_summary",
    "with_local_defaults",
    "workers_of",
]
