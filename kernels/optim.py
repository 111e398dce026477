# stamp: 1bbaebdb5aa0d0723a79b81bbe71fabd
"""Optimizers and learning-rate schedules: the update rule of the PyTorch optimizer of the same
name (``torch.optim``), so that the same hyper-parameters give the same trajectory, each
declared once in ``SPECS``; and ``update``, the step over a chunk of the flat buffers.

An optimizer's declaration (``OptimizerSpec``) holds its hyper-parameters (name, default, the
values allowed: ``Hyper``; ``lr`` first: the layout of the float64 vector the kernels read), its
state buffers (rows of the network's ``(n_slots, n_params)`` state, as many as it needs), and its
rule in two functions:

* ``coefficients(t, step, lr, <hyper-parameters by name>)``: what the step computes once, from
  the 1-based step count and this step's rate, in float64 as PyTorch computes Python floats,
  returned as a tuple of values of the parameters' type ``t`` (booleans stay booleans);
* ``rule(p, g, <state values>, c)``: the new parameter and state values of one element, given
  ``c``, the coefficients. It is straight-line arithmetic, so the same function runs on one
  element in compiled code (in a loop LLVM vectorises) and on whole arrays in NumPy (the twin,
  ``step``), where ``lowlevel.select`` is ``numpy.where``.

From the declaration follow the compiled update (``update``: a branch per optimizer written out
from ``SPECS``), the NumPy twin (``step``), the public classes (``fastgd.optimizers``: their
arguments, defaults and checks), the docs' table and the tests (which walk ``SPECS``).

Adding an optimizer: its two functions and one ``SPECS`` entry here, and its class (a docstring
and the entry) in ``fastgd.optimizers``.

Updates compile with ``SHARDED_FASTMATH_FLAGS`` (``config``): threads and ranks split the
parameters into chunks whose bounds change with their counts, and an element must get the same
operations wherever a bound falls.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from numba.extending import overload

from .config import BASE_OPTIONS, SHARDED_FASTMATH_FLAGS
from .jit import generated, helper, kernel, subroutine
from .lowlevel import select

# --------------------------------------------------------------------------- declarations


class Hyper(NamedTuple):
    """One hyper-parameter: its name (the attribute of the public class), its default, what it
    may be (``kind``: "positive", "non-negative", "unit" for [0, 1), "closed unit" for [0, 1],
    "flag" for a bool), and the argument of the public class that carries it with others
    (``group``: PyTorch's ``betas`` pair), if any."""

    name: str
    default: float
    kind: str
    group: str | None = None


class OptimizerSpec(NamedTuple):
    """An optimizer, everything about it in one place (see the module's docstring).

    ``hyper``: its hyper-parameters (``Hyper``), lr first; ``state``: the names of its state
    buffers, and ``initial``: each one's starting value (a number, or the name of the
    hyper-parameter that sets it); ``coefficients``/``rule``: its update; ``title``: what the
    public class's docstring says first; ``formula``: its update rule as the docs' table states
    it; ``torch``: the ``torch.optim`` class whose rule it follows (None: no PyTorch twin);
    ``check``: ``check(values) -> message or None``, a condition between its hyper-parameters
    (by name) beyond each one's own kind.
    """

    name: str
    code: int
    hyper: tuple
    state: tuple
    initial: tuple
    coefficients: Callable
    rule: Callable
    title: str
    formula: str
    torch: str | None
    check: Callable | None = None

    @property
    def hyper_names(self) -> tuple:
        return tuple(h.name for h in self.hyper)

    @property
    def flags(self) -> tuple:
        return tuple(h.name for h in self.hyper if h.kind == "flag")


# --------------------------------------------------------------------------- the rules
# coefficients(t, step, lr, ...) -> tuple; rule(p, g, *state, c) -> (p, *state).


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def sgd_coefficients(t, step, lr, momentum, dampening, nesterov, weight_decay):
    return t(lr), t(momentum), t(1.0 - dampening), nesterov != 0.0, t(weight_decay), step == 1, momentum != 0.0


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def sgd_rule(p, g, momentum_buffer, c):
    lr, mu, damp, nesterov, wd, first, with_momentum = c
    grad = g + wd * p
    buf = select(first, grad, mu * momentum_buffer + damp * grad)
    direction = select(nesterov, grad + mu * buf, buf)
    return select(with_momentum, p - lr * direction, p - lr * grad), select(with_momentum, buf, momentum_buffer)


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def momentum_coefficients(t, step, lr, beta):
    return t(lr), t(beta), t(1.0 - beta)


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def momentum_rule(p, g, velocity, c):
    lr, beta, one_minus_beta = c
    v = beta * velocity + one_minus_beta * g
    return p - lr * v, v


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def adagrad_coefficients(t, step, lr, lr_decay, weight_decay, initial_accumulator_value, eps):
    return t(lr / (1.0 + (step - 1) * lr_decay)), t(weight_decay), t(eps)


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def adagrad_rule(p, g, state_sum, c):
    clr, wd, eps = c
    grad = g + wd * p
    s = state_sum + grad * grad
    return p - clr * (grad / (np.sqrt(s) + eps)), s


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def rmsprop_coefficients(t, step, lr, alpha, eps, weight_decay, momentum, centered):
    return t(lr), t(alpha), t(1.0 - alpha), t(eps), t(weight_decay), t(momentum), centered != 0.0, momentum > 0.0


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def rmsprop_rule(p, g, square_avg, grad_avg, momentum_buffer, c):
    lr, alpha, one_minus_alpha, eps, wd, mu, centered, with_momentum = c
    grad = g + wd * p
    s = alpha * square_avg + one_minus_alpha * grad * grad
    average = select(centered, alpha * grad_avg + one_minus_alpha * grad, grad_avg)
    denom = select(centered, np.sqrt(s - average * average), np.sqrt(s)) + eps
    buf = select(with_momentum, mu * momentum_buffer + grad / denom, momentum_buffer)
    return select(with_momentum, p - lr * buf, p - lr * (grad / denom)), s, average, buf


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def _adam_coefficients(t, step, lr, beta1, beta2, eps, coupled_decay, decay, amsgrad):
    step_size = lr / (1.0 - beta1 ** np.float64(step))  # pow(), as Python computes float ** int
    bias_correction2_sqrt = t(np.sqrt(1.0 - beta2 ** np.float64(step)))
    return (
        t(1.0 - beta1),
        t(beta2),
        t(1.0 - beta2),
        t(-step_size),
        bias_correction2_sqrt,
        t(eps),
        t(coupled_decay),
        t(decay),
        amsgrad != 0.0,
    )


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def adam_coefficients(t, step, lr, beta1, beta2, eps, weight_decay, amsgrad):
    return _adam_coefficients(t, step, lr, beta1, beta2, eps, weight_decay, 1.0, amsgrad)


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def adamw_coefficients(t, step, lr, beta1, beta2, eps, weight_decay, amsgrad):
    # Decoupled decay: p·(1 − lr·wd) first, and no weight decay in the gradient.
    return _adam_coefficients(t, step, lr, beta1, beta2, eps, 0.0, 1.0 - lr * weight_decay, amsgrad)


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def adam_rule(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, c):
    # Adam and AdamW (``decay``: AdamW's decoupled decay factor, 1 for Adam), in PyTorch's order
    # of operations (see the three below).
    one_minus_b1, b2, one_minus_b2, negative_step_size, bias_correction2_sqrt, eps, wd, decay, amsgrad = c
    p = p * decay
    grad = g + wd * p
    m = exp_avg + one_minus_b1 * (grad - exp_avg)
    v = exp_avg_sq * b2 + one_minus_b2 * grad * grad
    # amsgrad: the largest v so far (a NaN-propagating max) replaces v below.
    largest = select((max_exp_avg_sq > v) | (max_exp_avg_sq != max_exp_avg_sq), max_exp_avg_sq, v)
    used = select(amsgrad, largest, v)
    return (
        p + negative_step_size * m / (np.sqrt(used) / bias_correction2_sqrt + eps),
        m,
        v,
        select(amsgrad, largest, max_exp_avg_sq),
    )


# The three below follow PyTorch's single-tensor code line by line, its order of operations
# included: ``lerp_`` (m + w·(g − m) for w < ½), ``addcmul_`` (v + value·g·g), ``addcdiv_``
# (p + value·a / b).


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def nadam_coefficients(t, step, lr, beta1, beta2, eps, weight_decay, momentum_decay, decoupled_weight_decay):
    decoupled = decoupled_weight_decay != 0.0
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (np.float64(step) * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((np.float64(step) + 1.0) * momentum_decay))
    coupled = 0.0 if decoupled else weight_decay
    decay = 1.0 - lr * weight_decay if decoupled else 1.0
    return (
        t(decay),
        t(coupled),
        t(1.0 - beta1),
        t(beta2),
        t(1.0 - beta2),
        t(1.0 - beta2 ** np.float64(step)),
        t(eps),
        t(mu),
        lr,
        mu,
        mu_next,
        t,
    )


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def nadam_rule(p, g, exp_avg, exp_avg_sq, mu_product, c):
    # mu_product (the product of the step's μ over the steps so far) is a state buffer: PyTorch
    # keeps it as a tensor in the parameters' dtype.
    decay, wd, one_minus_b1, b2, one_minus_b2, bias_correction2, eps, mu_t, lr, mu, mu_next, t = c
    p = p * decay
    grad = g + wd * p
    product = mu_product * mu_t
    m = exp_avg + one_minus_b1 * (grad - exp_avg)
    v = exp_avg_sq * b2 + one_minus_b2 * grad * grad
    denom = np.sqrt(v / bias_correction2) + eps
    product64 = np.float64(product)
    first = t(-lr * (1.0 - mu) / (1.0 - product64))
    second = t((-lr * mu_next) / (1.0 - product64 * mu_next))
    p = p + first * grad / denom
    return p + second * m / denom, m, v, product


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def radam_coefficients(t, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay):
    decoupled = decoupled_weight_decay != 0.0
    step64 = np.float64(step)
    bias_correction1 = 1.0 - beta1**step64
    bias_correction2 = 1.0 - beta2**step64
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step64 * (beta2**step64) / bias_correction2
    rectified = rho_t > 5.0
    rect = (
        np.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        if rectified
        else 1.0
    )
    coupled = 0.0 if decoupled else weight_decay
    decay = 1.0 - lr * weight_decay if decoupled else 1.0
    return (
        t(decay),
        t(coupled),
        t(1.0 - beta1),
        t(beta2),
        t(1.0 - beta2),
        t(bias_correction1),
        t(np.sqrt(bias_correction2)),
        t(eps),
        t(lr),
        t(rect),
        rectified,
    )


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def radam_rule(p, g, exp_avg, exp_avg_sq, c):
    decay, wd, one_minus_b1, b2, one_minus_b2, bias_correction1, bias_correction2_sqrt, eps, lr, rect, rectified = c
    p = p * decay
    grad = g + wd * p
    m = exp_avg + one_minus_b1 * (grad - exp_avg)
    v = exp_avg_sq * b2 + one_minus_b2 * grad * grad
    corrected = m / bias_correction1
    adaptive = bias_correction2_sqrt / (np.sqrt(v) + eps)
    return select(rectified, p - corrected * lr * adaptive * rect, p - corrected * lr), m, v


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def adamax_coefficients(t, step, lr, beta1, beta2, eps, weight_decay):
    return t(weight_decay), t(1.0 - beta1), t(beta2), t(eps), t(-(lr / (1.0 - beta1 ** np.float64(step))))


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def adamax_rule(p, g, exp_avg, exp_inf, c):
    wd, one_minus_b1, b2, eps, negative_clr = c
    grad = g + wd * p
    m = exp_avg + one_minus_b1 * (grad - exp_avg)
    scaled, floor = exp_inf * b2, abs(grad) + eps
    u = select((scaled > floor) | (scaled != scaled), scaled, floor)  # torch.maximum: NaN propagates
    u = select(floor != floor, floor, u)
    return p + negative_clr * m / u, m, u


# --------------------------------------------------------------------------- the table

OPT_SGD = 0
OPT_MOMENTUM = 1
OPT_ADAGRAD = 2
OPT_RMSPROP = 3
OPT_ADAM = 4
OPT_ADAMW = 5
OPT_NADAM = 6
OPT_RADAM = 7
OPT_ADAMAX = 8


def _hypers(*entries):
    # (name, default, kind[, group]) -> Hyper
    return tuple(Hyper(*entry) for entry in entries)


_BETAS = (("beta1", 0.9, "unit", "betas"), ("beta2", 0.999, "unit", "betas"))


def _nesterov_check(values):
    if values["nesterov"] and (values["momentum"] <= 0.0 or values["dampening"] != 0.0):
        return "nesterov=True requires momentum > 0 and dampening = 0"
    return None


SPECS = {
    spec.code: spec
    for spec in (
        OptimizerSpec(
            name="sgd",
            code=OPT_SGD,
            hyper=_hypers(
                ("lr", 0.001, "positive"),
                ("momentum", 0.0, "non-negative"),
                ("dampening", 0.0, "closed unit"),
                ("nesterov", False, "flag"),
                ("weight_decay", 0.0, "non-negative"),
            ),
            state=("momentum_buffer",),
            initial=(0.0,),
            coefficients=sgd_coefficients,
            rule=sgd_rule,
            title="Stochastic gradient descent, as ``torch.optim.SGD``.",
            formula=(
                "g ← g + wd·p; with momentum μ: b ← g (t = 1), b ← μb + (1 − dampening)g (t > 1); "
                "g ← g + μb (nesterov) or b; p ← p − lr·g"
            ),
            torch="SGD",
            check=_nesterov_check,
        ),
        OptimizerSpec(
            name="momentum",
            code=OPT_MOMENTUM,
            hyper=_hypers(("lr", 0.01, "positive"), ("beta", 0.9, "unit")),
            state=("velocity",),
            initial=(0.0,),
            coefficients=momentum_coefficients,
            rule=momentum_rule,
            title="Momentum in exponential-average form (no PyTorch twin).",
            formula="v ← βv + (1 − β)g (v₀ = 0); p ← p − lr·v",
            torch=None,
        ),
        OptimizerSpec(
            name="adagrad",
            code=OPT_ADAGRAD,
            hyper=_hypers(
                ("lr", 0.01, "positive"),
                ("lr_decay", 0.0, "non-negative"),
                ("weight_decay", 0.0, "non-negative"),
                ("initial_accumulator_value", 0.0, "non-negative"),
                ("eps", 1e-10, "non-negative"),
            ),
            state=("sum",),
            initial=("initial_accumulator_value",),
            coefficients=adagrad_coefficients,
            rule=adagrad_rule,
            title="Adagrad, as ``torch.optim.Adagrad``.",
            formula=(
                "g ← g + wd·p; clr = lr / (1 + (t − 1)·lr_decay); s ← s + g² (s₀ = initial_accumulator_value); "
                "p ← p − clr·g / (√s + eps)"
            ),
            torch="Adagrad",
        ),
        OptimizerSpec(
            name="rmsprop",
            code=OPT_RMSPROP,
            hyper=_hypers(
                ("lr", 0.01, "positive"),
                ("alpha", 0.99, "unit"),
                ("eps", 1e-8, "non-negative"),
                ("weight_decay", 0.0, "non-negative"),
                ("momentum", 0.0, "non-negative"),
                ("centered", False, "flag"),
            ),
            state=("square_avg", "grad_avg", "momentum_buffer"),
            initial=(0.0, 0.0, 0.0),
            coefficients=rmsprop_coefficients,
            rule=rmsprop_rule,
            title="RMSprop, as ``torch.optim.RMSprop``.",
            formula=(
                "g ← g + wd·p; s ← αs + (1 − α)g²; "
                "centered: ḡ ← αḡ + (1 − α)g, d = √(s − ḡ²) + eps, else d = √s + eps; "
                "momentum μ > 0: b ← μb + g/d, p ← p − lr·b; else p ← p − lr·g/d"
            ),
            torch="RMSprop",
        ),
        OptimizerSpec(
            name="adam",
            code=OPT_ADAM,
            hyper=_hypers(
                ("lr", 0.001, "positive"),
                *_BETAS,
                ("eps", 1e-8, "non-negative"),
                ("weight_decay", 0.0, "non-negative"),
                ("amsgrad", False, "flag"),
            ),
            state=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
            initial=(0.0, 0.0, 0.0),
            coefficients=adam_coefficients,
            rule=adam_rule,
            title="Adam, as ``torch.optim.Adam``.",
            formula=(
                "g ← g + wd·p; m ← β₁m + (1 − β₁)g; v ← β₂v + (1 − β₂)g²; amsgrad: v ← v_max ← max(v_max, v); "
                "p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)"
            ),
            torch="Adam",
        ),
        OptimizerSpec(
            name="adamw",
            code=OPT_ADAMW,
            hyper=_hypers(
                ("lr", 0.001, "positive"),
                *_BETAS,
                ("eps", 1e-8, "non-negative"),
                ("weight_decay", 0.01, "non-negative"),
                ("amsgrad", False, "flag"),
            ),
            state=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
            initial=(0.0, 0.0, 0.0),
            coefficients=adamw_coefficients,
            rule=adam_rule,
            title="AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay.",
            formula="p ← p·(1 − lr·wd), then Adam with no weight decay in g",
            torch="AdamW",
        ),
        OptimizerSpec(
            name="nadam",
            code=OPT_NADAM,
            hyper=_hypers(
                ("lr", 0.002, "positive"),
                *_BETAS,
                ("eps", 1e-8, "non-negative"),
                ("weight_decay", 0.0, "non-negative"),
                ("momentum_decay", 0.004, "non-negative"),
                ("decoupled_weight_decay", False, "flag"),
            ),
            state=("exp_avg", "exp_avg_sq", "mu_product"),
            initial=(0.0, 0.0, 1.0),
            coefficients=nadam_coefficients,
            rule=nadam_rule,
            title="NAdam (Adam with Nesterov momentum), as ``torch.optim.NAdam``.",
            formula=(
                "g ← g + wd·p (decoupled: p ← p·(1 − lr·wd)); μₜ = β₁(1 − ½·0.96^(tψ)); Πₜ = Πₜ₋₁μₜ; "
                "m ← β₁m + (1 − β₁)g; v ← β₂v + (1 − β₂)g²; d = √(v/(1 − β₂ᵗ)) + eps; "
                "p ← p − lr(1 − μₜ)/(1 − Πₜ)·g/d − lr·μₜ₊₁/(1 − Πₜμₜ₊₁)·m/d (ψ = momentum_decay)"
            ),
            torch="NAdam",
        ),
        OptimizerSpec(
            name="radam",
            code=OPT_RADAM,
            hyper=_hypers(
                ("lr", 0.001, "positive"),
                *_BETAS,
                ("eps", 1e-8, "non-negative"),
                ("weight_decay", 0.0, "non-negative"),
                ("decoupled_weight_decay", False, "flag"),
            ),
            state=("exp_avg", "exp_avg_sq"),
            initial=(0.0, 0.0),
            coefficients=radam_coefficients,
            rule=radam_rule,
            title="RAdam (rectified Adam), as ``torch.optim.RAdam``.",
            formula=(
                "g ← g + wd·p (decoupled: p ← p·(1 − lr·wd)); m ← β₁m + (1 − β₁)g; v ← β₂v + (1 − β₂)g²; "
                "ρ∞ = 2/(1 − β₂) − 1, ρₜ = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ); m̂ = m/(1 − β₁ᵗ); "
                "ρₜ > 5: p ← p − lr·m̂·√(1 − β₂ᵗ)/(√v + eps)·√((ρₜ − 4)(ρₜ − 2)ρ∞/((ρ∞ − 4)(ρ∞ − 2)ρₜ)), "
                "else p ← p − lr·m̂"
            ),
            torch="RAdam",
        ),
        OptimizerSpec(
            name="adamax",
            code=OPT_ADAMAX,
            hyper=_hypers(
                ("lr", 0.002, "positive"), *_BETAS, ("eps", 1e-8, "non-negative"), ("weight_decay", 0.0, "non-negative")
            ),
            state=("exp_avg", "exp_inf"),
            initial=(0.0, 0.0),
            coefficients=adamax_coefficients,
            rule=adamax_rule,
            title="Adamax (Adam with the infinity norm), as ``torch.optim.Adamax``.",
            formula="g ← g + wd·p; m ← β₁m + (1 − β₁)g; u ← max(β₂u, |g| + eps); p ← p − lr/(1 − β₁ᵗ)·m/u",
            torch="Adamax",
        ),
    )
}

# Length of the hyper-parameter vector of every optimizer (the longest declaration).
HYPER_WIDTH = max(len(spec.hyper) for spec in SPECS.values())


def hyper_vector(code, values: dict) -> np.ndarray:
    """The float64 vector the kernels read for optimizer ``code``: ``values`` by the declared
    names (booleans as 1.0 or 0.0), laid out as its ``hyper``."""
    vector = np.zeros(HYPER_WIDTH)
    for index, hyper in enumerate(SPECS[code].hyper):
        vector[index] = float(values[hyper.name])
    return vector


# --------------------------------------------------------------------------- the update


def update(code, params, grads, state, first, stop, step, lr, hyper):
    """One step of optimizer ``code`` over elements ``[first, stop)`` of the flat buffers:
    ``params`` and ``grads`` (n_params,), ``state`` (n_slots, n_params), ``step`` the 1-based
    step count, ``lr`` this step's rate, ``hyper`` the float64 vector (``hyper_vector``).

    The plain-Python form (``NUMBA_DISABLE_JIT``, and the NumPy twin ``step``): the rule over
    the slice. Compiled code runs the rule element by element, in a branch per optimizer written
    out from ``SPECS`` (``_update``)."""
    spec = SPECS[code]
    t = params.dtype.type
    # (the Python functions: the rule runs on the arrays, and the coefficients return ``t``)
    coefficients = getattr(spec.coefficients, "py_func", spec.coefficients)
    c = coefficients(t, step, lr, *(float(hyper[index]) for index in range(1, len(spec.hyper))))
    rule = getattr(spec.rule, "py_func", spec.rule)
    part = slice(first, stop)
    rows = [state[row, part] for row in range(len(spec.state))]
    results = rule(params[part], grads[part], *rows, c)
    params[part] = results[0]
    for row, value in zip(rows, results[1:]):
        row[...] = value


# (unsigned indices: Numba wraps a negative signed index around, a test per element that keeps
# LLVM from vectorising the loop)
_BRANCH = """
    elif code == {code}:
        c = coefficients_{code}(t, step, lr{hyper})
        for i in range(np.uint64(first), np.uint64(stop)):
            params[i]{targets} = rule_{code}(params[i], grads[i]{values}, c)
"""


@overload(update, jit_options=dict(BASE_OPTIONS, fastmath=set(SHARDED_FASTMATH_FLAGS)))
def _update(code, params, grads, state, first, stop, step, lr, hyper):
    branches = []
    namespace = dict(np=np)
    for code, spec in sorted(SPECS.items()):
        rows = range(len(spec.state))
        branches.append(
            _BRANCH.format(
                code=code,
                hyper="".join(f", hyper[{i}]" for i in range(1, len(spec.hyper))),
                targets="".join(f", row{r}[i]" for r in rows),
                values="".join(f", row{r}[i]" for r in rows),
            )
        )
        namespace[f"coefficients_{code}"], namespace[f"rule_{code}"] = spec.coefficients, spec.rule
    width = max(len(spec.state) for spec in SPECS.values())
    source = (
        "def update(code, params, grads, state, first, stop, step, lr, hyper):\n"
        "    t = params.dtype.type\n"
        + "".join(f"    row{r} = state[{r} if {r} < state.shape[0] else 0]\n" for r in range(width))
        + "    if code < 0:\n"
        "        pass\n" + "".join(branches)
    )
    return generated("update", source, namespace)


def step(code, params, grads, state, step_count, lr, hyper):
    """One optimizer step over every element, in NumPy (the twin of ``optimizer_step``)."""
    update(code, params, grads, state, 0, params.size, step_count, lr, hyper)


@kernel
def _optimizer_step(code, params, grads, state, step_count, lr, hyper):
    update(code, params, grads, state, 0, params.size, step_count, lr, hyper)


def optimizer_step(kind, params, grads, state, step, lr, hyper):
    """One optimizer step over the whole flat parameter buffer, compiled.

    Parameters
    ----------
    kind : int
        Optimizer code.
    params, grads : ndarray, shape (n_params,)
    state : ndarray, shape (n_slots, n_params)
    step : int
        1-based step number.
    lr : float
        Learning rate for this step (schedules change it; ``hyper[0]`` is the base rate).
    hyper : ndarray of float64
        Hyper-parameters laid out as ``SPECS[kind].hyper``.
    """
    if kind not in SPECS:
        raise ValueError(f"kind must be an optimizer code ({sorted(SPECS)}), got {kind!r}")
    vector = np.zeros(HYPER_WIDTH)
    vector[: len(hyper)] = hyper
    _optimizer_step(int(kind), params, grads, state, int(step), float(lr), vector)


# --------------------------------------------------------------------------- schedules
# Learning-rate schedules, applied per optimizer step. Each is declared once (code and parameter
# names: the layout of the float64 ``schedule`` vector); t is the 1-based step count.
#
# constant: lr; step: lr·γ^⌊(t−1)/step_size⌋; exponential: lr·γ^(t−1); inverse scaling:
# lr / t^power; cosine: η_min + (lr − η_min)(1 + cos(π·min(t−1, T)/T))/2; sample inverse scaling
# (scikit-learn's ``invscaling``, constant within an epoch): lr / (1 + offset + rows·e)^power, e the
# network's 0-based epoch, so that 1 + offset + rows·e counts the samples seen before the epoch.

SCHEDULE_CONSTANT = 0
SCHEDULE_STEP = 1
SCHEDULE_EXPONENTIAL = 2
SCHEDULE_INVERSE_SCALING = 3
SCHEDULE_COSINE = 4
SCHEDULE_SAMPLE_INVERSE_SCALING = 5


class ScheduleSpec(NamedTuple):
    name: str
    code: int
    parameters: tuple  # names, the layout of the float64 parameter vector


SCHEDULES = {
    spec.code: spec
    for spec in (
        ScheduleSpec("constant", SCHEDULE_CONSTANT, ()),
        ScheduleSpec("step", SCHEDULE_STEP, ("step_size", "gamma")),
        ScheduleSpec("exponential", SCHEDULE_EXPONENTIAL, ("gamma",)),
        ScheduleSpec("inverse_scaling", SCHEDULE_INVERSE_SCALING, ("power",)),
        ScheduleSpec("cosine", SCHEDULE_COSINE, ("total_steps", "eta_min")),
        ScheduleSpec("sample_inverse_scaling", SCHEDULE_SAMPLE_INVERSE_SCALING, ("power", "rows", "offset")),
    )
}

# Length of every schedule's parameter vector (the longest declaration).
SCHEDULE_WIDTH = max(len(spec.parameters) for spec in SCHEDULES.values())


@subroutine
def lr_at(kind, base_lr, step, epoch, schedule):
    """The learning rate of the ``step``-th optimizer step (1-based) in the network's ``epoch``
    (0-based), for schedule ``kind`` with parameters ``schedule`` (laid out as its declaration:
    ``schedule[0]``, ``schedule[1]``... in the order of ``SCHEDULES[kind].parameters``)."""
    t = step - 1
    if kind == SCHEDULE_STEP:  # step_size, gamma
        # float exponents: pow(), as Python computes float ** int
        return base_lr * schedule[1] ** np.floor(t / schedule[0])
    if kind == SCHEDULE_EXPONENTIAL:  # gamma
        return base_lr * schedule[0] ** float(t)
    if kind == SCHEDULE_INVERSE_SCALING:  # power
        return base_lr / float(step) ** schedule[0]
    if kind == SCHEDULE_COSINE:  # total_steps, eta_min
        total, eta_min = schedule[0], schedule[1]
        progress = t if t < total else total
        return eta_min + (base_lr - eta_min) * 0.5 * (1.0 + np.cos(np.pi * progress / total))
    if kind == SCHEDULE_SAMPLE_INVERSE_SCALING:  # power, rows, offset
        seen = schedule[2] + schedule[1] * float(epoch)
        return base_lr / (1.0 + seen) ** schedule[0]
    return base_lr


@kernel
def scheduled_lr(kind, base_lr, step, schedule, epoch=0):
    """Learning rate of the ``step``-th optimizer step (1-based), in the network's ``epoch``
    (0-based).

    Parameters
    ----------
    kind : int
        Schedule code.
    base_lr : float
    step : int
    schedule : ndarray of float64, shape (SCHEDULE_WIDTH,)
        The schedule's parameters, laid out as its declaration.
    epoch : int
    """
    return lr_at(kind, base_lr, step, epoch, schedule)
