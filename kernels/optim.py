"""Optimizer steps: one kernel per optimizer, updating parameters and state in place.

Each kernel works on flat 1-D buffers (the network's whole parameter vector at once) and follows
the update rule of the PyTorch optimizer of the same name (``torch.optim``), so that the same
hyper-parameters give the same trajectory. Scalar coefficients are computed in float64, as PyTorch
does with its Python-float hyper-parameters, then converted to the buffers' dtype before the
elementwise loop, so float32 buffers are updated in float32 arithmetic.

``step`` is the 1-based number of the step being taken. ``UPDATES`` maps each optimizer code to
an update with one common signature, ``(params, grads, state, step, lr, hyper)``, where ``hyper``
is a float64 vector laid out as the optimizer class's ``hyper_names`` (:mod:`fastgd.optimizers`);
``optimizer_step`` calls it by code.
"""

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS
from .codes import OPT_ADAGRAD, OPT_ADAM, OPT_ADAMW, OPT_MOMENTUM, OPT_RMSPROP, OPT_SGD


@njit(**JIT_OPTIONS)
def sgd_step(p, g, momentum_buffer, step, lr, momentum, dampening, nesterov, weight_decay):
    """Stochastic gradient descent, PyTorch's ``SGD``.

    ``g ← g + weight_decay·p``; with momentum μ: ``b ← g`` on the first step, else
    ``b ← μ·b + (1 − dampening)·g``; then ``g ← g + μ·b`` (nesterov) or ``g ← b``;
    finally ``p ← p − lr·g``.

    Parameters
    ----------
    p, g, momentum_buffer : ndarray, shape (n,)
    step : int
    lr, momentum, dampening, weight_decay : float
    nesterov : bool
    """
    t = p.dtype.type
    lr_, mu, damp, wd = t(lr), t(momentum), t(1.0 - dampening), t(weight_decay)
    first = step == 1
    use_momentum = momentum != 0.0
    for i in range(p.size):
        grad = g[i] + wd * p[i]
        if use_momentum:
            if first:
                buf = grad
            else:
                buf = mu * momentum_buffer[i] + damp * grad
            momentum_buffer[i] = buf
            if nesterov:
                grad = grad + mu * buf
            else:
                grad = buf
        p[i] -= lr_ * grad


@njit(**JIT_OPTIONS)
def momentum_step(p, g, velocity, step, lr, beta):
    """Momentum in exponential-average form: ``v ← β·v + (1 − β)·g``, ``p ← p − lr·v``; v₀ = 0.

    Parameters
    ----------
    p, g, velocity : ndarray, shape (n,)
    step : int
        Unused; kept for the common optimizer signature.
    lr, beta : float
    """
    t = p.dtype.type
    lr_, b, one_minus_b = t(lr), t(beta), t(1.0 - beta)
    for i in range(p.size):
        v = b * velocity[i] + one_minus_b * g[i]
        velocity[i] = v
        p[i] -= lr_ * v


@njit(**JIT_OPTIONS)
def adagrad_step(p, g, state_sum, step, lr, lr_decay, weight_decay, eps):
    """Adagrad, PyTorch's ``Adagrad``.

    ``g ← g + weight_decay·p``; ``clr = lr / (1 + (step − 1)·lr_decay)``; ``s ← s + g²``;
    ``p ← p − clr·g / (√s + eps)``. ``s`` starts at ``initial_accumulator_value``.

    Parameters
    ----------
    p, g, state_sum : ndarray, shape (n,)
    step : int
    lr, lr_decay, weight_decay, eps : float
    """
    t = p.dtype.type
    clr = t(lr / (1.0 + (step - 1) * lr_decay))
    wd, eps_ = t(weight_decay), t(eps)
    for i in range(p.size):
        grad = g[i] + wd * p[i]
        s = state_sum[i] + grad * grad
        state_sum[i] = s
        p[i] -= clr * (grad / (np.sqrt(s) + eps_))


@njit(**JIT_OPTIONS)
def rmsprop_step(p, g, square_avg, grad_avg, momentum_buffer, step, lr, alpha, eps, weight_decay, momentum, centered):
    """RMSprop, PyTorch's ``RMSprop``.

    ``g ← g + weight_decay·p``; ``s ← α·s + (1 − α)·g²``; centered: ``ḡ ← α·ḡ + (1 − α)·g`` and
    ``d = √(s − ḡ²) + eps``, else ``d = √s + eps``; with momentum μ > 0: ``b ← μ·b + g/d``,
    ``p ← p − lr·b``, else ``p ← p − lr·g/d``.

    Parameters
    ----------
    p, g, square_avg, grad_avg, momentum_buffer : ndarray, shape (n,)
    step : int
        Unused; kept for the common optimizer signature.
    lr, alpha, eps, weight_decay, momentum : float
    centered : bool
    """
    t = p.dtype.type
    lr_, a, one_minus_a, eps_, wd, mu = t(lr), t(alpha), t(1.0 - alpha), t(eps), t(weight_decay), t(momentum)
    use_momentum = momentum > 0.0
    for i in range(p.size):
        grad = g[i] + wd * p[i]
        s = a * square_avg[i] + one_minus_a * grad * grad
        square_avg[i] = s
        if centered:
            ga = a * grad_avg[i] + one_minus_a * grad
            grad_avg[i] = ga
            denom = np.sqrt(s - ga * ga) + eps_
        else:
            denom = np.sqrt(s) + eps_
        if use_momentum:
            buf = mu * momentum_buffer[i] + grad / denom
            momentum_buffer[i] = buf
            p[i] -= lr_ * buf
        else:
            p[i] -= lr_ * (grad / denom)


@njit(inline="always", **JIT_OPTIONS)
def _adam_update(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, amsgrad):
    # The moment updates shared by Adam and AdamW; weight_decay here is the coupled (L2) form.
    t = p.dtype.type
    b1, one_minus_b1 = t(beta1), t(1.0 - beta1)
    b2, one_minus_b2 = t(beta2), t(1.0 - beta2)
    step_size = t(lr / (1.0 - beta1**step))
    bias_correction2_sqrt = t(np.sqrt(1.0 - beta2**step))
    eps_, wd = t(eps), t(weight_decay)
    for i in range(p.size):
        grad = g[i] + wd * p[i]
        m = b1 * exp_avg[i] + one_minus_b1 * grad
        v = b2 * exp_avg_sq[i] + one_minus_b2 * grad * grad
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if amsgrad:
            v = max(max_exp_avg_sq[i], v)
            max_exp_avg_sq[i] = v
        p[i] -= step_size * (m / (np.sqrt(v) / bias_correction2_sqrt + eps_))


@njit(**JIT_OPTIONS)
def adam_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, amsgrad):
    """Adam, PyTorch's ``Adam``.

    ``g ← g + weight_decay·p``; ``m ← β1·m + (1 − β1)·g``; ``v ← β2·v + (1 − β2)·g²``;
    amsgrad: ``v̂max ← max(v̂max, v)`` and v is replaced by it below;
    ``p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)``.

    Parameters
    ----------
    p, g, exp_avg, exp_avg_sq, max_exp_avg_sq : ndarray, shape (n,)
    step : int
        t, the 1-based step number.
    lr, beta1, beta2, eps, weight_decay : float
    amsgrad : bool
    """
    _adam_update(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, amsgrad)


@njit(**JIT_OPTIONS)
def adamw_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, amsgrad):
    """AdamW, PyTorch's ``AdamW``: decoupled weight decay ``p ← p·(1 − lr·weight_decay)``, then
    the Adam update with no weight decay in the gradient.

    Parameters
    ----------
    p, g, exp_avg, exp_avg_sq, max_exp_avg_sq : ndarray, shape (n,)
    step : int
    lr, beta1, beta2, eps, weight_decay : float
    amsgrad : bool
    """
    decay = p.dtype.type(1.0 - lr * weight_decay)
    for i in range(p.size):
        p[i] *= decay
    _adam_update(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, 0.0, amsgrad)


@njit(inline="always", **JIT_OPTIONS)
def _row(state, k):
    # State row k; rows an optimizer does not use alias row 0.
    return state[min(k, state.shape[0] - 1)]


# One update per optimizer over the whole flat buffers, all with the signature of
# ``optimizer_step`` less ``kind``: ``state`` is the (n_slots, n_params) buffer, ``hyper`` the
# float64 vector in the order of the optimizer class's ``hyper_names`` (hyper[0] is the base lr;
# ``lr`` is this step's, after any schedule). Serial on purpose: a chunk-parallel step saved ~2 %
# of a `mid` step and cost 2 s of compilation.


@njit(inline="always", **JIT_OPTIONS)
def sgd_update(params, grads, state, step, lr, hyper):
    sgd_step(params, grads, _row(state, 0), step, lr, hyper[1], hyper[2], hyper[3] != 0.0, hyper[4])


@njit(inline="always", **JIT_OPTIONS)
def momentum_update(params, grads, state, step, lr, hyper):
    momentum_step(params, grads, _row(state, 0), step, lr, hyper[1])


@njit(inline="always", **JIT_OPTIONS)
def adagrad_update(params, grads, state, step, lr, hyper):
    adagrad_step(params, grads, _row(state, 0), step, lr, hyper[1], hyper[2], hyper[4])


@njit(inline="always", **JIT_OPTIONS)
def rmsprop_update(params, grads, state, step, lr, hyper):
    s0, s1, s2 = _row(state, 0), _row(state, 1), _row(state, 2)
    rmsprop_step(params, grads, s0, s1, s2, step, lr, hyper[1], hyper[2], hyper[3], hyper[4], hyper[5] != 0.0)


@njit(inline="always", **JIT_OPTIONS)
def adam_update(params, grads, state, step, lr, hyper):
    s0, s1, s2 = _row(state, 0), _row(state, 1), _row(state, 2)
    adam_step(params, grads, s0, s1, s2, step, lr, hyper[1], hyper[2], hyper[3], hyper[4], hyper[5] != 0.0)


@njit(inline="always", **JIT_OPTIONS)
def adamw_update(params, grads, state, step, lr, hyper):
    s0, s1, s2 = _row(state, 0), _row(state, 1), _row(state, 2)
    adamw_step(params, grads, s0, s1, s2, step, lr, hyper[1], hyper[2], hyper[3], hyper[4], hyper[5] != 0.0)


# Optimizer code -> its update. The compiled training loop is specialised per entry
# (``fastgd.kernels.train``), so a fit compiles only the optimizer it uses.
UPDATES = {
    OPT_SGD: sgd_update,
    OPT_MOMENTUM: momentum_update,
    OPT_ADAGRAD: adagrad_update,
    OPT_RMSPROP: rmsprop_update,
    OPT_ADAM: adam_update,
    OPT_ADAMW: adamw_update,
}


def optimizer_step(kind, params, grads, state, step, lr, hyper):
    """One optimizer step over the whole flat parameter buffer (the update of ``UPDATES[kind]``,
    called from Python).

    Parameters
    ----------
    kind : int
        Optimizer code.
    params, grads : ndarray, shape (n_params,)
    state : ndarray, shape (n_slots, n_params)
        The optimizer's state buffers, one row each.
    step : int
        1-based step number.
    lr : float
        Learning rate for this step (schedules change it; ``hyper[0]`` is the base rate).
    hyper : ndarray of float64
        Hyper-parameters in the order of the optimizer's ``hyper_names``.
    """
    update = UPDATES.get(kind)
    if update is None:
        raise ValueError(f"kind must be an optimizer code ({sorted(UPDATES)}), got {kind!r}")
    update(params, grads, state, step, lr, hyper)
