"""What ``verify`` returns: ``VerifyResult`` and one ``OutputParity`` row per signature output.

Both derive from ``Serializable``; their fields are declared in the order of the
``estimator-fix.verify/1`` JSON document (README, "JSON"). The arrays the signatures returned
ride along in ``VerifyResult.outputs`` for callers and tests, hidden from the JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from estimator_fix import serialize

if TYPE_CHECKING:
    from estimator_fix.verify.elsewhere import RuntimeParity

VERIFY_SCHEMA = "estimator-fix.verify/1"


@dataclasses.dataclass(frozen=True)
class OutputParity(serialize.Serializable):
    """One signature output and how it compared with ``Estimator.predict``.

    Attributes:
      signature: the signature_def key.
      output: the signature's output key.
      prediction_key: the ``Estimator.predict`` key it was compared with; None = not compared.
      max_abs_diff: the largest absolute difference (numeric outputs); None when not compared
        or compared exactly (strings), or when a NaN/inf differs (then ``mismatched`` > 0).
      shape: the output's shape as run.
      dtype: the output's numpy dtype name.
      compared: ``numeric``, ``exact`` (strings) or ``none``.
      mismatched: elements beyond the tolerance (numeric) or unequal (exact); None if not
        compared.
      ok: the comparison passed; None when not compared.
      note: why it was not compared, or what failed, in words.
      paired_by: how ``prediction_key`` was found: ``tensor`` (the model_fn exported that
        prediction's own tensor under this output), ``name`` (the output's name, or a known
        alias such as ``scores`` for ``probabilities``) or "" when not compared.
    """

    signature: str
    output: str
    prediction_key: str | None
    max_abs_diff: float | None
    shape: tuple[int, ...]
    dtype: str = ""
    compared: str = "none"
    mismatched: int | None = None
    ok: bool | None = None
    note: str = ""
    paired_by: str = ""


@dataclasses.dataclass(frozen=True)
class VerifyResult(serialize.Serializable):
    """What ``verify`` checked about one SavedModel.

    ``ok`` means: the SavedModel loaded, every signature that was run ran, the step matched
    the checkpoint's (when one was given) and, when parity was checked (an Estimator and a
    checkpoint were given), at least one output was compared and every compared output is
    within ``tolerance``.

    Attributes:
      schema: ``VERIFY_SCHEMA``.
      export_path: the SavedModel directory that was loaded.
      tags: the MetaGraph tags it was loaded with.
      signatures: every signature_def key, serving_default and predict first.
      signatures_run: the signatures that were fed and run.
      signatures_skipped: the signatures that could not be fed (``checks`` says why).
      inputs_source: ``synthesized``, ``given`` or ``file:<path>``.
      num_examples: the rows each signature was run on.
      exported_step: the ``global_step`` the SavedModel restored; None if it has none.
      checkpoint_path: the checkpoint prefix compared with; None without one.
      checkpoint_step: that checkpoint's ``global_step``.
      parity_checked: an Estimator and a checkpoint were given, so outputs were compared.
      parity: one row per output of every signature run.
      max_abs_diff: the largest difference over the numeric comparisons; None when there were
        none or one of them met a NaN or inf.
      tolerance: the largest absolute difference accepted per element.
      ok: see above.
      checks: what was checked, in order, one line each (the text report is built from them).
      outputs: signature -> output key -> the array it returned; not in the JSON, so that the
        report stays small.
      runtime: with ``--runtime``, what the other interpreter gave on the same feeds.
    """

    schema: str
    export_path: str
    tags: tuple[str, ...]
    signatures: tuple[str, ...]
    signatures_run: tuple[str, ...]
    signatures_skipped: tuple[str, ...]
    inputs_source: str
    num_examples: int
    exported_step: int | None
    checkpoint_path: str | None
    checkpoint_step: int | None
    parity_checked: bool
    parity: tuple[OutputParity, ...]
    max_abs_diff: float | None
    tolerance: float
    ok: bool
    checks: tuple[str, ...]
    outputs: Mapping[str, Mapping[str, np.ndarray]] = serialize.hidden(
        default_factory=dict, repr=False, compare=False
    )
    runtime: RuntimeParity | None = None
