"""The per-directory options: one frozen type, produced by every entry point, validated once.

The CLI's flags (``cli.jobflags.job_template``), a manifest line (``fleet.manifest``) and the
Beam entry point (``tools/beam_fleet.py``) each produce a ``Job``; ``Job.validate()`` is the one
place that checks a job as a whole (which options a command needs, which exclude each other,
value ranges). Flag-level checks (a flag that does not belong to a command, a flag given
without its partner) stay in the absl layer as validators.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from estimator_fix import errors
from estimator_fix.checkpoint.keys import INT64_MAX
from estimator_fix.model_code.deadline import DEFAULT_TIMEOUT_SECONDS, check_timeout
from estimator_fix.model_code.serving import ServingSpec
from estimator_fix.model_code.userspec import ModelSpec
from estimator_fix.storage import fs

COMMANDS = ("scan", "repair", "export", "verify", "fix", "rename", "migrate")
FLEET_COMMANDS = ("scan", "repair", "fix")  # the commands that run over many directories
MODES = ("predict", "eval", "train")
SERVING_FORMATS = ("example", "raw")
MIGRATIONS = ("v2-canned", "ema", "tf2-object")  # `migrate --to`
DEFAULT_TOLERANCE = 1e-5
# Fields added after results journals (estimator-fix.result/1) were first written: left out of
# ``attempt_key`` at their defaults, so that --resume still recognises older journals' jobs.
_LATER_FIELDS = frozenset(
    {
        "deep",
        "rename_map",
        "rename_regex",
        "rename_replacement",
        "drop",
        "allow_unmatched",
        "migrate_to",
        "timeout",
    }
)


@dataclasses.dataclass(frozen=True)
class Job:
    """One directory's work: the options of one ``scan``, ``repair``, ``export``, ``verify`` or
    ``fix`` invocation.

    Plain data only (picklable, JSON-able through ``to_dict``). The fields mean what the CLI
    flags of the same name mean; ``model_dir`` is ``""`` when none was given (``verify``
    without a checkpoint to compare with). In a fleet, ``export_dir`` and ``output_dir`` may
    contain ``{name}``, replaced by the model directory's basename.
    """

    command: str
    model_dir: str
    checkpoint: str | None = None
    deep: bool = False
    step: int | None = None
    output_dir: str | None = None
    drop_renamed: bool = False
    dry_run: bool = False
    estimator: str | None = None
    model_fn: str | None = None
    params: dict[str, Any] | None = None
    serving_input_fn: str | None = None
    serving_features: str | None = None
    serving_format: str = "example"
    export_dir: str | None = None
    mode: str = "predict"
    as_text: bool = False
    assets_extra: dict[str, str] | None = None
    inputs: str | None = None
    tolerance: float = DEFAULT_TOLERANCE
    timeout: float = DEFAULT_TIMEOUT_SECONDS  # seconds per call into the user's model; 0: none
    line: int | None = None  # manifest line number, for messages
    # rename (and fix): the key mapping (--map / --map_file, parsed), --regex/--replacement,
    # --drop; migrate: --to.
    rename_map: dict[str, str] | None = None
    rename_regex: str | None = None
    rename_replacement: str | None = None
    drop: str | None = None
    allow_unmatched: bool = False
    migrate_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def model(self) -> ModelSpec:
        """How to build the user's Estimator. Does not perform I/O."""
        return ModelSpec(estimator=self.estimator, model_fn=self.model_fn, params=self.params)

    @property
    def serving(self) -> ServingSpec:
        """Where the serving input function comes from. Does not perform I/O."""
        return ServingSpec(
            input_fn=self.serving_input_fn,
            features=self.serving_features,
            format=self.serving_format,
        )

    @property
    def has_model(self) -> bool:
        return self.estimator is not None or self.model_fn is not None

    @property
    def attempt_key(self) -> str:
        """A digest of everything that determines the work (not ``line``): equal jobs, equal keys.

        Does not perform I/O.
        """
        doc = {
            k: v
            for k, v in self.to_dict().items()
            if k != "line" and not (k in _LATER_FIELDS and v == _DEFAULTS[k])
        }
        doc["model_dir"] = fs.normalize(self.model_dir)
        text = json.dumps(doc, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def validate(self, *, template: bool = False) -> Job:
        """Checks the job as a whole; returns it, so that callers can chain. Does not perform I/O.

        Args:
          template: this job is the defaults of many directories (``--model_dirs``): each
            brings its own ``model_dir``, so none is needed yet.

        Raises:
          errors.UsageError: an unknown command; an option the command needs is missing; two
            options that exclude each other; a value out of range.
        """
        c = self.command
        if c not in COMMANDS:
            raise errors.UsageError(f"unknown command {c!r}; one of {', '.join(COMMANDS)}")
        if c != "verify" and not self.model_dir and not template:
            raise errors.UsageError(f"`{c}` needs --model_dir or --model_dirs")
        if self.step is not None and not 0 <= self.step <= INT64_MAX:
            raise errors.UsageError(f"--step={self.step}: must be from 0 to 2**63-1")
        check_timeout(self.timeout)
        if self.tolerance < 0:
            raise errors.UsageError(f"--tolerance={self.tolerance}: must be >= 0")
        if self.serving_format not in SERVING_FORMATS:
            raise errors.UsageError(f"--serving_format must be one of {', '.join(SERVING_FORMATS)}")
        if self.mode not in MODES:
            raise errors.UsageError(f"--mode must be one of {', '.join(MODES)}")
        if self.estimator is not None and self.model_fn is not None:
            raise errors.UsageError("--estimator and --model_fn exclude each other")
        if self.serving_input_fn is not None and self.serving_features is not None:
            raise errors.UsageError("--serving_input_fn and --serving_features exclude each other")
        if self.params is not None and self.model_fn is None:
            raise errors.UsageError("--params goes with --model_fn")
        if c in ("export", "verify", "fix") and not self.export_dir:
            raise errors.UsageError(f"`{c}` needs --export_dir")
        if c in ("export", "fix"):
            if not self.has_model:
                raise errors.UsageError(f"`{c}` needs --estimator or --model_fn")
            if self.serving_input_fn is None and self.serving_features is None:
                raise errors.UsageError(f"`{c}` needs --serving_input_fn or --serving_features")
        self._validate_edit()
        if c == "verify" and self.has_model != bool(self.model_dir):
            raise errors.UsageError(
                "`verify` compares with the checkpoint only given both --model_dir and "
                "--estimator/--model_fn"
            )
        return self

    @property
    def has_edit(self) -> bool:
        """A key mapping, pattern or drop was given (``rename``, ``fix``)."""
        return bool(self.rename_map) or self.rename_regex is not None or self.drop is not None

    def _validate_edit(self) -> None:
        """The checks of ``rename``'s, ``fix``'s and ``migrate``'s edit options.

        Raises:
          errors.UsageError: see ``validate``.
        """
        c = self.command
        if c == "rename" and not self.has_edit:
            raise errors.UsageError(
                "`rename` needs --map=OLD=NEW, --map_file=map.json, --regex with "
                "--replacement, or --drop"
            )
        if self.has_edit and c not in ("rename", "fix"):
            raise errors.UsageError("--map, --map_file, --regex and --drop go with rename or fix")
        if self.rename_map and self.rename_regex is not None:
            raise errors.UsageError("--map/--map_file and --regex exclude each other; pass one")
        if (self.rename_regex is None) != (self.rename_replacement is None):
            raise errors.UsageError("--regex and --replacement go together")
        if c == "migrate" and self.migrate_to not in MIGRATIONS:
            raise errors.UsageError(f"`migrate` needs --to, one of {', '.join(MIGRATIONS)}")
        if c != "migrate" and self.migrate_to is not None:
            raise errors.UsageError("--to goes with migrate")


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Job)}
