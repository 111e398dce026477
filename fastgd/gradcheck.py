"""Gradient checking: backprop against finite differences of the loss."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validation as check
from .kernels import layout
from .network import Gradients, Network

# Stencils (offsets in units of eps, weights) for the derivative of the loss along one parameter.
_STENCILS = {
    # (C(θ+ε) − C(θ−ε)) / 2ε: error O(ε²)
    "central": ((1, 0.5), (-1, -0.5)),
    # (−C(θ+2ε) + 8C(θ+ε) − 8C(θ−ε) + C(θ−2ε)) / 12ε: still central, error O(ε⁴)
    "five_point": ((2, -1 / 12), (1, 8 / 12), (-1, -8 / 12), (-2, 1 / 12)),
}


@dataclass
class GradientCheck:
    """Result of :func:`gradient_check`.

    Attributes
    ----------
    max_relative_error : float
        The largest relative error over all parameters.
    relative_error, backprop, numeric : Gradients
        Per-parameter relative errors and both gradients, laid out like ``net.weights``/``net.biases``.
    """

    max_relative_error: float
    relative_error: Gradients
    backprop: Gradients
    numeric: Gradients

    def __float__(self) -> float:
        return self.max_relative_error


def gradient_check(
    net: Network, X, y, eps: float = 1e-3, method: str = "five_point", tiny: float = 1e-5, sample_weight=None
) -> GradientCheck:
    """Compare backprop gradients with central finite differences of the loss.

    The check runs on a float64 copy of ``net`` with the same backend, so float32 networks are
    checked at float64 precision and ``net`` itself is not touched. For each parameter θ the
    relative error is ``|g_bp − g_num| / max(|g_bp|, |g_num|, tiny)``.

    Finite differences are only valid where the loss is smooth: with relu or leaky_relu a step
    that carries a pre-activation across 0 gives a wrong numeric gradient, not a wrong backprop.

    Parameters
    ----------
    net : Network
    X : array-like, shape (n, n_in)
    y : array-like
        Targets as for ``net.loss``.
    eps : float, default 1e-3
        Finite-difference step. The default five-point stencil has truncation error O(eps⁴), so a
        step this large keeps rounding error (about 1e-16/eps) negligible.
    method : {"five_point", "central"}
        ``central`` is the two-point formula (C(θ+ε) − C(θ−ε)) / 2ε; use eps≈1e-6 with it.
    tiny : float, default 1e-5
        Floor of the denominator. A finite difference carries rounding noise of about
        ``1e-16·|C|/eps`` (~1e-13 at the default eps), so a gradient smaller than ~1e-5 cannot be
        resolved to 1e-7 relative: below the floor errors are measured against ``tiny`` instead.
    sample_weight : array-like, optional

    Returns
    -------
    GradientCheck
    """
    if not isinstance(net, Network):
        raise TypeError(f"net must be a fastgd.Network, got {type(net).__name__}")
    if not isinstance(method, str) or method not in _STENCILS:
        raise ValueError(f"method must be one of {sorted(_STENCILS)}, got {method!r}")
    for name, value in (("eps", eps), ("tiny", tiny)):
        if check.as_real(value, name) <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    clone = net.copy(dtype="float64")
    X, Y, weight = clone.check_inputs(X, y, sample_weight)
    penalties = clone.penalties(sample_weight, X.shape[0])
    backprop = clone.flat_gradients(X, Y, weight, penalties)
    row_scale = clone.row_scale(weight)
    buffers = layout.make_buffers(clone.architecture, X.shape[0], clone.dtype)
    params, architecture, engine, code = clone.flat_parameters, clone.architecture, clone.engine, clone.loss_code
    scratch = np.zeros_like(params)
    threads = clone.team(X.shape[0])

    def loss():
        value = engine.evaluate_loss(
            params, architecture, X, Y, row_scale, buffers, code, threads, parameter=clone.loss_parameter
        )
        return value + engine.weight_penalty(params, scratch, architecture, *penalties)

    numeric = np.empty_like(backprop)
    with clone.compiled_call(threads):
        for i in range(params.size):
            original = params[i]
            total = 0.0
            for offset, coefficient in _STENCILS[method]:
                params[i] = original + offset * eps
                total += coefficient * loss()
            params[i] = original
            numeric[i] = total / eps
    relative = np.abs(backprop - numeric) / np.maximum(np.maximum(np.abs(backprop), np.abs(numeric)), tiny)
    layout_of = clone.layer_views  # per-layer views of flat buffers

    return GradientCheck(float(relative.max()), layout_of(relative), layout_of(backprop), layout_of(numeric))
