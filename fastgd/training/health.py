"""Gradient health: ``fit(..., track_gradients=True)`` records, per epoch and layer, what the
compiled loop measured (``fastgd.kernels.layout.HEALTH`` records) and warns when a layer's gradient
vanishes or explodes relative to the output layer's."""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np

# History attributes, one (n_layers,) float64 array per epoch each: the HEALTH records' fields.
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
        """``rows``: HEALTH records (epochs, n_layers) of the epochs just completed; epoch
        numbers in warnings count from ``first_epoch`` + 1 within the fit. (Whole arrays at a
        time: a compiled call may hold thousands of one-step epochs.)"""
        if rows.shape[0] == 0:
            return
        for history in histories:
            # Called before the epochs' losses are appended: epoch numbers of that history.
            base = len(history.loss)
            history.health_epochs.extend(range(base + 1, base + rows.shape[0] + 1))
            for field in HEALTH_FIELDS:
                getattr(history, field).extend(np.array(rows[field], dtype=np.float64))  # one (n_layers,) row per epoch
        self._check(np.array(rows["grad_norm"], dtype=np.float64), first_epoch)

    def _check(self, norms, first_epoch):
        tracking = self.tracking
        if not tracking.warn or norms.shape[1] < 2:
            return
        output = norms[:, -1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where((output > 0) & np.isfinite(output), norms[:, :-1] / output, np.nan)
        for kind, limit, found in (
            ("vanishing", tracking.vanishing, ratios < tracking.vanishing),
            ("exploding", tracking.exploding, ratios > tracking.exploding),
        ):
            for layer in np.flatnonzero(found.any(axis=0)):
                if (layer, kind) in self.warned:
                    continue
                self.warned.add((layer, kind))
                index = int(np.argmax(found[:, layer]))
                norm, ratio, out = norms[index, layer], ratios[index, layer], norms[index, -1]
                warnings.warn(
                    f"layer {layer} (of {norms.shape[1]}, input layer 0): gradient {kind} at epoch "
                    f"{first_epoch + index + 1}: its gradient norm {norm:.3g} is {ratio:.3g} times the output "
                    f"layer's {out:.3g} (threshold {limit:g}; history.grad_norm holds every layer's)",
                    GradientWarning,
                    stacklevel=4,
                )
