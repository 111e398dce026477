"""Gradient health: ``fit(..., track_gradients=True)`` records, per epoch and layer, what the
compiled loop measured (``fastgd.kernels.layout.HEALTH_*``) and warns when a layer's gradient
vanishes or explodes relative to the output layer's."""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from ..kernels import layout

# History attributes, one (n_layers,) float64 array per epoch each, in HEALTH_* order.
HEALTH_FIELDS = ("grad_norm", "weight_norm", "update_ratio", "saturation")


class GradientWarning(UserWarning):
    """A layer's gradient norm is far below (vanishing) or far above (exploding) the output
    layer's (``GradientTracking``)."""


@dataclass(frozen=True)
class GradientTracking:
    """What ``fit(..., track_gradients=GradientTracking(...))`` warns about.

    A :class:`GradientWarning` names the layer and epoch the first time in a fit that a layer's
    gradient 2-norm (mean over the epoch's steps) is below ``vanishing`` times the output
    layer's, or above ``exploding`` times it. ``track_gradients=True`` is
    ``GradientTracking()``.

    Parameters
    ----------
    vanishing : float, default 1e-4
    exploding : float, default 1e4
    warn : bool, default True
        False records without warning.
    """

    vanishing: float = 1e-4
    exploding: float = 1e4
    warn: bool = True

    def __post_init__(self):
        for name in ("vanishing", "exploding"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (np.isfinite(value) and value > 0):
                raise ValueError(f"track_gradients {name} must be a finite number > 0, got {value!r}")
        if not self.vanishing < self.exploding:
            raise ValueError(f"track_gradients vanishing ({self.vanishing}) must be below exploding ({self.exploding})")
        if not isinstance(self.warn, bool):
            raise TypeError(f"track_gradients warn must be a bool, got {type(self.warn).__name__}")


def check_tracking(value):
    """``track_gradients`` as a GradientTracking, or None when off."""
    if value is False or value is None:
        return None
    if value is True:
        return GradientTracking()
    if isinstance(value, GradientTracking):
        return value
    raise TypeError(f"track_gradients must be a bool or a fastgd.GradientTracking, got {type(value).__name__}")


class HealthRecorder:
    """Moves each completed epoch's health rows into the histories and warns once per layer
    and kind in a fit."""

    def __init__(self, tracking):
        self.tracking = tracking
        self.warned = set()

    def record(self, rows, histories, first_epoch):
        """``rows``: (epochs, n_layers, HEALTH_WIDTH) of the epochs just completed; epoch
        numbers in warnings count from ``first_epoch`` + 1 within the fit."""
        for offset, row in enumerate(rows):
            for history in histories:
                # Called before the epochs' losses are appended: epoch numbers of that history.
                history.health_epochs.append(len(history.loss) + offset + 1)
                for field, column in zip(HEALTH_FIELDS, range(layout.HEALTH_WIDTH)):
                    getattr(history, field).append(row[:, column].copy())
            self._check(row[:, layout.HEALTH_GRAD_NORM], first_epoch + offset + 1)

    def _check(self, norms, epoch):
        tracking = self.tracking
        if not tracking.warn or norms.size < 2:
            return
        output = norms[-1]
        if not (np.isfinite(output) and output > 0):
            return
        for layer, norm in enumerate(norms[:-1]):
            ratio = norm / output
            for kind, bad in (("vanishing", ratio < tracking.vanishing), ("exploding", ratio > tracking.exploding)):
                if bad and (layer, kind) not in self.warned:
                    self.warned.add((layer, kind))
                    limit = tracking.vanishing if kind == "vanishing" else tracking.exploding
                    warnings.warn(f"layer {layer} (of {norms.size}, input layer 0): gradient {kind} at epoch {epoch}: its "
                                  f"gradient norm {norm:.3g} is {ratio:.3g} times the output layer's {output:.3g} "
                                  f"(threshold {limit:g}; history.grad_norm holds every layer's)", GradientWarning,
                                  stacklevel=4)  # fmt: skip
