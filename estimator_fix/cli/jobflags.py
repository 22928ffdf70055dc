"""The per-directory flags shared by `estimator-fix` and `tools/beam_fleet.py` (absl layer).

Flags are module-level holders, read once by each binary's ``main``; library code never reads
them. ``job_template`` turns them into the ``options.Job`` every directory starts from; checks
between flags are absl validators, checks of the job as a whole are ``Job.validate``.
"""

from __future__ import annotations

import sys

from absl import flags

from estimator_fix import errors
from estimator_fix.checkpoint.keys import INT64_MAX
from estimator_fix.export import parse_assets_extra
from estimator_fix.model_code.deadline import DEFAULT_TIMEOUT_SECONDS
from estimator_fix.model_code.userspec import parse_params
from estimator_fix.options import DEFAULT_TOLERANCE, Job

CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Checkpoint prefix (basename or path) to use instead of the latest."
)
DEEP = flags.DEFINE_boolean(
    "deep",
    False,
    "scan, repair: also verify the crc32c of every tensor of the checkpoint (reads all its "
    "data; fix always does).",
)
JSON = flags.DEFINE_boolean("json", False, "Print one JSON document to stdout instead of text.")
STEP = flags.DEFINE_integer(
    "step",
    None,
    "The training step to give global_step; overrides all evidence.",
    lower_bound=0,
    upper_bound=INT64_MAX,
)
OUTPUT_DIR = flags.DEFINE_string(
    "output_dir",
    None,
    "Write the repaired model directory here ({name} in a fleet); the source is not written.",
)
DRY_RUN = flags.DEFINE_boolean("dry_run", False, "Print the plan and stop; write nothing.")
DROP_RENAMED = flags.DEFINE_boolean(
    "drop_renamed", False, "Leave a renamed step key (e.g. my_global_step) out of the repair."
)

EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "export, fix: the export base directory; verify: the SavedModel."
)
SERVING_INPUT_FN = flags.DEFINE_string(
    "serving_input_fn", None, "SPEC of the serving input receiver function."
)
SERVING_FEATURES = flags.DEFINE_string(
    "serving_features", None, "A JSON features spec to build the serving input function from."
)
SERVING_FORMAT = flags.DEFINE_enum(
    "serving_format",
    None,
    ["example", "raw"],
    "With --serving_features: parse tf.Example protos (default) or feed raw tensors.",
)
ESTIMATOR = flags.DEFINE_string(
    "estimator", None, "SPEC of an Estimator, or of a function(model_dir) returning one."
)
MODEL_FN = flags.DEFINE_string("model_fn", None, "SPEC of a model_fn for tf.estimator.Estimator.")
PARAMS = flags.DEFINE_string("params", None, "With --model_fn: params as JSON or @file.json.")
AS_TEXT = flags.DEFINE_boolean("as_text", False, "Write saved_model.pbtxt instead of .pb.")
ASSETS_EXTRA = flags.DEFINE_multi_string(
    "assets_extra", None, "DEST=FILE: copy FILE to assets.extra/DEST in the SavedModel."
)
MODE = flags.DEFINE_enum("mode", None, ["predict", "eval", "train"], "Export mode (predict).")
INPUTS = flags.DEFINE_string(
    "inputs", None, "Inputs for verification: JSON {feature: [rows]} or .npz; default synthesized."
)
TIMEOUT = flags.DEFINE_float(
    "timeout",
    None,
    "Seconds each call into your model code may take (building it, pre-flight, export, "
    "predict) before it is stopped with an error; 0 = no limit (600).",
)
TOLERANCE = flags.DEFINE_float(
    "tolerance", None, "Largest allowed |SavedModel - checkpoint| per output (1e-5).", lower_bound=0
)
RUNTIME = flags.DEFINE_string(
    "runtime",
    None,
    "verify: also load and run the SavedModel with this Python interpreter (one with TensorFlow "
    "and NumPy, e.g. the serving stack's) on the same inputs, and compare its outputs.",
)

MODEL_DIRS = flags.DEFINE_string(
    "model_dirs", None, "Many directories: a glob (gs://... too) or @file listing one per line."
)
MANIFEST = flags.DEFINE_string(
    "manifest", None, "fix: a JSON-lines file, one job per directory (flags are defaults)."
)

MAP = flags.DEFINE_multi_string(
    "map",
    None,
    "rename, fix: OLD=NEW, a key or a scope (every key under OLD/ goes under NEW/); repeatable.",
)
MAP_FILE = flags.DEFINE_string(
    "map_file", None, "rename, fix: a JSON object, old key -> new key (see --map)."
)
REGEX = flags.DEFINE_string(
    "regex", None, "rename: rename every key this pattern matches (re.search), with --replacement."
)
REPLACEMENT = flags.DEFINE_string(
    "replacement", None, "rename: with --regex, the new name (re.sub syntax: \\1 for a group)."
)
DROP = flags.DEFINE_string("drop", None, "rename: leave out every key this pattern matches.")
ALLOW_UNMATCHED = flags.DEFINE_boolean(
    "allow_unmatched", False, "rename, fix: a map entry or pattern that matches no key is noted."
)
TO = flags.DEFINE_enum(
    "to",
    None,
    ["v2-canned", "ema", "tf2-object"],
    "migrate: v2-canned (tf.compat.v1 canned -> tf.estimator), ema (serve the moving "
    "averages), tf2-object (a tf.train.Checkpoint layout).",
)

flags.mark_flags_as_mutual_exclusive(["map", "map_file", "regex"])
flags.mark_flags_as_mutual_exclusive(["estimator", "model_fn"])
flags.mark_flags_as_mutual_exclusive(["serving_input_fn", "serving_features"])


flags.register_multi_flags_validator(
    ["params", "model_fn"],
    lambda f: f["params"] is None or f["model_fn"] is not None,
    message="--params goes with --model_fn",
)
flags.register_multi_flags_validator(
    ["serving_format", "serving_features"],
    lambda f: f["serving_format"] is None or f["serving_features"] is not None,
    message="--serving_format goes with --serving_features",
)

# The per-directory flags each fleet command takes (`estimator-fix` and tools/beam_fleet.py).
REPAIR_FLAGS = ("checkpoint", "step", "output_dir", "dry_run", "drop_renamed")
EXPORT_FLAGS = (
    "export_dir",
    "serving_input_fn",
    "serving_features",
    "serving_format",
    "estimator",
    "model_fn",
    "params",
    "mode",
    "as_text",
    "assets_extra",
    "inputs",
    "tolerance",
    "timeout",
)
FLEET_COMMAND_FLAGS = {
    "scan": ("checkpoint", "deep"),
    "repair": (*REPAIR_FLAGS, "deep"),
    "fix": (*REPAIR_FLAGS, *EXPORT_FLAGS),
}


def job_template(command: str, *, model_dir: str = "") -> Job:
    """The flags as the ``Job`` of one directory, or the one every directory (or manifest
    line) starts from (``model_dir`` empty). Not yet validated: see ``Job.validate``.

    Raises:
      errors.UsageError: bad --params or --assets_extra.
    """
    assets = parse_assets_extra(ASSETS_EXTRA.value)
    rename_map = None
    if MAP.value or MAP_FILE.value:
        from estimator_fix.surgery.rules import parse_map_flags

        rename_map = parse_map_flags(MAP.value, MAP_FILE.value)
    return Job(
        command=command,
        model_dir=model_dir,
        checkpoint=CHECKPOINT.value,
        deep=DEEP.value,
        step=STEP.value,
        output_dir=OUTPUT_DIR.value,
        drop_renamed=DROP_RENAMED.value,
        dry_run=DRY_RUN.value,
        estimator=ESTIMATOR.value,
        model_fn=MODEL_FN.value,
        params=parse_params(PARAMS.value),
        serving_input_fn=SERVING_INPUT_FN.value,
        serving_features=SERVING_FEATURES.value,
        serving_format=SERVING_FORMAT.value or "example",
        export_dir=EXPORT_DIR.value,
        mode=MODE.value or "predict",
        as_text=AS_TEXT.value,
        assets_extra=dict(assets) if assets else None,
        inputs=INPUTS.value,
        tolerance=DEFAULT_TOLERANCE if TOLERANCE.value is None else TOLERANCE.value,
        timeout=DEFAULT_TIMEOUT_SECONDS if TIMEOUT.value is None else TIMEOUT.value,
        rename_map=rename_map,
        rename_regex=REGEX.value,
        rename_replacement=REPLACEMENT.value,
        drop=DROP.value,
        allow_unmatched=ALLOW_UNMATCHED.value,
        migrate_to=TO.value,
    )


_HELP_FLAGS = frozenset({"help", "h", "?", "helpshort", "helpfull", "helpxml"})


def parse_flags(argv: list[str], *, prog: str, known_only: bool = False) -> list[str]:
    """absl's flag parsing for ``app.run(flags_parser=...)``, but a bad flag is one line on
    stderr and exit code 2, not a help dump; and asking for help exits 0 (absl exits 1, which
    would collide with exit code 1, bad input). ``known_only`` leaves unknown flags in the
    returned argv (for Beam's pipeline options)."""
    try:
        return flags.FLAGS(argv, known_only=known_only)
    except SystemExit:
        if any(a.split("=")[0].lstrip("-") in _HELP_FLAGS for a in argv[1:]):
            sys.exit(errors.EXIT_OK)
        raise
    except flags.Error as e:
        sys.stderr.write(f"{prog}: usage error: {e} (see `{prog} --help`)\n")
        sys.exit(errors.EXIT_USAGE)
