"""Each ``tf.compat.v1.train`` optimizer and the Keras (legacy) optimizer a v2 canned Estimator
builds in its place: slot names, the hyperparameters the v2 one keeps in its checkpoint, and
the constructor arguments no checkpoint holds.

=========== ===================== ================================ ============================
v1          v2 (``training/N``)   slots v1 -> v2                   hyperparameter variables
=========== ===================== ================================ ============================
Adagrad     ``Adagrad``           accum -> accumulator             learning_rate, decay
Adam        ``Adam``              m -> m, v -> v (beta powers      learning_rate, decay,
                                  derived from ``iterations``)     beta_1, beta_2
Ftrl        ``Ftrl``              accum -> accumulator,            learning_rate, decay,
                                  linear -> linear                 learning_rate_power, beta,
                                                                   l1/l2_regularization_strength
RMSProp     ``RMSprop``           ms -> rms, mom -> momentum (only learning_rate, decay, rho,
                                  when momentum > 0), mg -> mg     momentum
Momentum    ``SGD``               accum -> momentum, times -lr     learning_rate, decay, momentum
SGD         ``SGD``               (none)                           learning_rate, decay, momentum
=========== ===================== ================================ ============================

``decay`` is the Keras optimizers' learning-rate decay, which v1 optimizers do not have (0).
v1 RMSProp's ``decay`` is Keras' ``rho``. v1 Momentum accumulates gradients (``a = m a + g``,
``w -= lr a``) where Keras SGD accumulates updates (``a = m a - lr g``, ``w += a``): the same
trajectory with the slot scaled by ``-lr``. v1 Ftrl feeds ``l2 + beta / (2 lr)`` to its update
op; Keras Ftrl adds ``beta / (2 lr)`` itself. Does not perform I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

V2_CLASS = {
    "Adagrad": "Adagrad",
    "Adam": "Adam",
    "Ftrl": "Ftrl",
    "RMSProp": "RMSprop",
    "Momentum": "SGD",
    "SGD": "SGD",
}
# The Keras default of ``epsilon`` (``tf.keras.backend.epsilon()``), a constructor argument
# that the v2 optimizers do not save.
KERAS_EPSILON = 1e-7


@dataclasses.dataclass(frozen=True)
class Conversion:
    """How one trained v1 optimizer becomes its v2 successor.

    Attributes:
      v2_class: the Keras legacy optimizer class (and its default name).
      hypers: the v2 hyperparameter variables' values, by name.
      slots: v1 slot input -> v2 slot name, or None when the slot is dropped.
      scale: v1 slot input -> the factor its values are multiplied by (read, then written as
        a new tensor), for slots whose meaning differs.
      dropped_why: v1 slot input -> why it is dropped.
      constructor: the v2 constructor arguments the checkpoint cannot carry, as text.
    """

    v2_class: str
    hypers: Mapping[str, float]
    slots: Mapping[str, str | None]
    scale: Mapping[str, float]
    dropped_why: Mapping[str, str]
    constructor: tuple[str, ...]


def _epsilon_note(v1: float | None, *, inside_sqrt: bool = False) -> tuple[str, ...]:
    if v1 is None:
        return ()
    where = " (v1 adds it inside the square root, Keras outside)" if inside_sqrt else ""
    return (f"epsilon={v1:g}{where}",)


def convert(
    kind: str, values: Mapping[str, float], *, centered: bool, nesterov: bool
) -> Conversion:
    """The v2 form of a ``kind`` optimizer trained with hyperparameter ``values``.

    Args:
      kind: ``Adagrad``, ``Adam``, ``Ftrl``, ``RMSProp``, ``Momentum`` or ``SGD``.
      values: the update op's hyperparameter inputs (``lr``, ``beta1``, ``l2``, ...) and, for
        Ftrl, ``beta`` when the graph has it.
      centered: a centered RMSProp.
      nesterov: Nesterov momentum (Momentum, Adam).

    Raises:
      KeyError: a hyperparameter the kind needs is not in ``values``.
    """
    lr = values["alpha"] if kind == "SGD" else values["lr"]
    base = {"learning_rate": lr, "decay": 0.0}
    if kind == "Adagrad":
        return Conversion(
            "Adagrad",
            base,
            {"accum": "accumulator"},
            {},
            {},
            (
                "Keras Adagrad adds epsilon (1e-07 at the least) to the denominator that v1 "
                "Adagrad leaves bare",
            ),
        )
    constructor: tuple[str, ...]
    if kind == "Adam":
        constructor = _epsilon_note(values.get("epsilon"))
        if nesterov:
            constructor += ("v1 Adam used Nesterov updates, which Keras Adam does not offer",)
        return Conversion(
            "Adam",
            {**base, "beta_1": values["beta1"], "beta_2": values["beta2"]},
            {"m": "m", "v": "v"},
            {},
            {},
            constructor,
        )
    if kind == "Ftrl":
        beta = values.get("beta", 0.0)
        l2 = values["l2"] - beta / (2.0 * max(lr, 1e-36))
        shrinkage = values.get("l2_shrinkage", 0.0)
        ftrl_notes = (f"l2_shrinkage_regularization_strength={shrinkage:g}",) if shrinkage else ()
        return Conversion(
            "Ftrl",
            {
                **base,
                "learning_rate_power": values["lr_power"],
                "l1_regularization_strength": values["l1"],
                "l2_regularization_strength": l2,
                "beta": beta,
            },
            {"accum": "accumulator", "linear": "linear"},
            {},
            {},
            ftrl_notes,
        )
    if kind == "RMSProp":
        momentum = values["momentum"]
        slots: dict[str, str | None] = {"ms": "rms", "mom": "momentum" if momentum else None}
        dropped = {}
        if not momentum:
            dropped["mom"] = (
                "trained with momentum 0: the slot holds only the last update, which the next "
                "step multiplies by 0, and Keras RMSprop has no momentum slot then"
            )
        constructor = _epsilon_note(values.get("epsilon"), inside_sqrt=True)
        if momentum:
            constructor += (f"momentum={momentum:g} (0 would make no momentum slot)",)
        if centered:
            slots["mg"] = "mg"
            constructor += ("centered=True",)
        return Conversion(
            "RMSprop",
            {**base, "rho": values["rho"], "momentum": momentum},
            slots,
            {},
            dropped,
            constructor,
        )
    if kind == "Momentum":
        constructor = (f"momentum={values['momentum']:g}",)
        if nesterov:
            constructor += ("nesterov=True",)
        return Conversion(
            "SGD",
            {**base, "momentum": values["momentum"]},
            {"accum": "momentum"},
            {"accum": -lr},
            {},
            constructor,
        )
    if kind == "SGD":
        return Conversion("SGD", {**base, "momentum": 0.0}, {}, {}, {}, ())
    raise KeyError(kind)
