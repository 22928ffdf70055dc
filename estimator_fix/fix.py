"""The one command: scan -> plan -> pre-flight -> repair (only if needed) -> export -> verify.

Order matters for safety: everything that can refuse (scan, plan, the user's code, the
pre-flight comparison of model code and checkpoint) runs before the first write, so a refusal
leaves the model directory exactly as it was. The user's Estimator is built over a scratch
``model_dir`` and the checkpoint is always passed explicitly, so neither the Estimator nor a
Keras ``model_to_estimator`` writes into the user's directories.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from estimator_fix import errors
from estimator_fix import export as export_lib
from estimator_fix import plan as plan_lib
from estimator_fix import repair as repair_lib
from estimator_fix import verify as verify_lib
from estimator_fix.model_code import serving, userspec
from estimator_fix.model_code.serving import ServingSpec
from estimator_fix.scan import scan
from estimator_fix.storage import fs
from estimator_fix.types import ScanReport

FIX_SCHEMA = "estimator-fix.fix/1"
REJECTED_PREFIX = "rejected-"


@dataclasses.dataclass(frozen=True)
class FixOptions:
    model_dir: str
    model: userspec.ModelSpec
    serving: ServingSpec
    export_dir: str
    checkpoint: str | None = None
    step: int | None = None
    output_dir: str | None = None
    drop_renamed: bool = False
    dry_run: bool = False
    mode: str = "predict"
    as_text: bool = False
    assets_extra: Mapping[str, str] | None = None
    inputs: str | None = None
    tolerance: float = 1e-5


@dataclasses.dataclass(frozen=True)
class FixResult:
    schema: str
    model_dir: str
    verdict_before: str
    problems: tuple[dict[str, Any], ...]
    plan: dict[str, Any]
    repair: dict[str, Any] | None
    export: dict[str, Any] | None
    verify: dict[str, Any] | None
    export_path: str | None
    ok: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def load_serving_input_fn(spec: ServingSpec) -> Callable[[], Any]:
    """The serving input function from a SPEC or a features file.

    Raises:
      errors.UsageError: neither or both given, or a bad SPEC.
      errors.InputError: the features file is missing or invalid.
    """
    if (spec.input_fn is None) == (spec.features is None):
        raise errors.UsageError("pass exactly one of --serving_input_fn and --serving_features")
    if spec.input_fn is not None:
        return userspec.load_callable(spec.input_fn, flag="--serving_input_fn")
    assert spec.features is not None
    path = fs.normalize(spec.features)
    features = serving.parse_features(fs.read_text(path), path=path)
    return serving.serving_input_fn(features, spec.format, path=path)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    estimator: Any
    serving_input_fn: Callable[[], Any]  # a stub that raises when none was asked for
    scratch_dir: str


def _no_serving_input_fn() -> Any:
    raise errors.UsageError("no serving input function was given")


def load_model(model: userspec.ModelSpec, serving_spec: ServingSpec | None) -> LoadedModel:
    """Builds the user's Estimator over a scratch model_dir (see the module docstring)."""
    serving_input_fn = (
        load_serving_input_fn(serving_spec) if serving_spec is not None else _no_serving_input_fn
    )
    scratch = tempfile.mkdtemp(prefix="estimator-fix-model-")
    try:
        estimator = userspec.build_estimator(model, scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return LoadedModel(estimator, serving_input_fn, scratch)


def reject_export(export_path: str) -> str:
    """Moves a SavedModel that failed verification out of TensorFlow Serving's sight.

    Serving loads only numeric version folders, so ``rejected-<version>`` stays for
    inspection without ever being served.
    """
    parent, name = fs.dirname(export_path), fs.basename(export_path)
    target = fs.join(parent, f"{REJECTED_PREFIX}{name}")
    fs.replace(export_path, target)
    return target


def fix(opts: FixOptions) -> FixResult:
    """Takes a model directory to a verified SavedModel.

    Raises:
      Every ``errors.Error`` of the stages; before the repair nothing has been written, and a
      SavedModel that fails verification is renamed ``rejected-<version>`` (ParityError).
    """
    start = time.monotonic()
    report = scan(opts.model_dir, checkpoint=opts.checkpoint)
    the_plan = plan_lib.plan(
        report, step=opts.step, output_dir=opts.output_dir, drop_renamed=opts.drop_renamed
    )
    export_base = export_lib.check_export_base(opts.export_dir)
    inputs = verify_lib.load_inputs(opts.inputs) if opts.inputs else None
    if opts.dry_run:
        return _result(report, the_plan, None, None, None, start)
    loaded = load_model(opts.model, opts.serving)
    try:
        target = report.target_report
        assert target is not None
        checked = export_lib.preflight(
            loaded.estimator,
            loaded.serving_input_fn,
            target.prefix,
            mode=opts.mode,
            step_will_be_added=the_plan.add_step,
        )
        export_lib.check_preflight(checked)
        repaired = None if the_plan.is_noop else repair_lib.repair(the_plan)
        checkpoint = (repaired.new_prefix if repaired else None) or _latest(the_plan)
        exported = export_lib.export(
            loaded.estimator,
            loaded.serving_input_fn,
            export_base,
            checkpoint,
            mode=opts.mode,
            as_text=opts.as_text,
            assets_extra=opts.assets_extra,
            checked=checked,
        )
        verified = verify_lib.verify(
            exported.export_path,
            inputs=inputs,
            inputs_source=f"file:{opts.inputs}" if opts.inputs else "synthesized",
            estimator=loaded.estimator,
            checkpoint_path=checkpoint,
            tolerance=opts.tolerance,
        )
        if not verified.ok:
            rejected = reject_export(exported.export_path)
            raise errors.ParityError(
                f"{exported.export_path}: the SavedModel does not predict what {checkpoint} "
                f"predicts (max abs diff {verified.max_abs_diff}, tolerance {opts.tolerance}); "
                f"moved to {rejected} so it is never served",
                path=rejected,
            )
    finally:
        shutil.rmtree(loaded.scratch_dir, ignore_errors=True)
    return _result(report, the_plan, repaired, exported, verified, start)


def _latest(the_plan: plan_lib.Plan) -> str:
    return fs.join(the_plan.output_dir, the_plan.state_latest)


def _result(
    report: ScanReport,
    the_plan: plan_lib.Plan,
    repaired: repair_lib.RepairResult | None,
    exported: export_lib.ExportResult | None,
    verified: verify_lib.VerifyResult | None,
    start: float,
) -> FixResult:
    return FixResult(
        schema=FIX_SCHEMA,
        model_dir=report.model_dir,
        verdict_before=report.verdict.value,
        problems=tuple(p.to_dict() for p in report.problems),
        plan=the_plan.to_dict(),
        repair=repaired.to_dict() if repaired else None,
        export=exported.to_dict() if exported else None,
        verify=verified.to_dict() if verified else None,
        export_path=exported.export_path if exported else None,
        ok=verified.ok if verified else False,
        seconds=round(time.monotonic() - start, 3),
    )
