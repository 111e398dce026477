"""Backprop against finite differences for every activation x loss, and the check itself."""

import numpy as np
import pytest

import fastgd
from fastgd import reference
from fastgd.kernels import activations
from fastgd.registry import ACTIVATIONS, LOSSES

HIDDEN = [name for name, a in ACTIVATIONS.items() if not a.output_only]
KINKED = {"relu", "leaky_relu"}


def combinations():
    for loss in LOSSES.values():
        outputs = [loss.required_output] if loss.required_output else list(ACTIVATIONS)
        for hidden in HIDDEN:
            for output in outputs:
                yield pytest.param(hidden, output, loss.name, id=f"{hidden}-{output}-{loss.name}")


def pre_activations(net, X):
    z_all, a = [], X
    for layer, (W, b) in enumerate(zip(net.weights, net.biases)):
        z = a @ W + b
        z_all.append(z.ravel())
        a = np.empty_like(z)
        reference.activate(z, a, int(net.architecture.layers[layer]["activation"]))
    return np.concatenate(z_all)


def smooth_case(hidden, output, loss, rows=5, sizes=(4, 6, 5, 3)):
    """A network and data. Finite differences are wrong where a step crosses a relu kink, so for
    the kinked activations take the first seed whose pre-activations all keep |z| >= 0.02: the
    stencil moves one parameter by ±2e-3, which moves any z by a few times that at most. Huber's
    loss has a kink of its second derivative where |a − y| = δ (where its two pieces meet,
    which the five-point stencil's O(eps⁴) error bound assumes away): likewise, every output
    keeps ||a − y| − δ| >= 0.02."""
    for seed in range(500):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(rows, sizes[0]))
        y = rng.integers(0, sizes[-1], size=rows) if loss == "crossentropy" else rng.uniform(size=(rows, sizes[-1]))
        net = fastgd.Network(sizes, activation=hidden, output_activation=output, loss=loss, random_state=seed)
        kink_free = not ({hidden, output} & KINKED) or np.abs(pre_activations(net, X)).min() >= 0.02
        if loss == "huber":
            errors = np.abs(net.copy(backend="numpy").predict(X) - y)
            kink_free = kink_free and np.abs(errors - net.loss_parameter).min() >= 0.02
        # ... and whose first-layer gradient is not all zero (all-dead relu outputs check nothing;
        # the NumPy twin's gradient: the case is chosen apart from the engine under test).
        if kink_free and np.abs(net.copy(backend="numpy").gradients(X, y).weights[0]).max() > 1e-3:
            return net, X, y
    raise AssertionError("no kink-free case found")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("hidden, output, loss", list(combinations()))
def test_backprop_matches_finite_differences(backend, hidden, output, loss):
    net, X, y = smooth_case(hidden, output, loss)
    net = net.copy(backend=backend)
    before = net.flat_parameters.copy()
    result = fastgd.gradient_check(net, X, y)
    assert result.max_relative_error < 1e-7
    np.testing.assert_array_equal(net.flat_parameters, before)  # the check works on a copy
    assert np.abs(np.concatenate([g.ravel() for g in result.backprop.weights])).max() > 1e-3


def test_float32_network_is_checked_in_float64():
    net, X, y = smooth_case("tanh", "sigmoid", "binary_crossentropy")
    result = fastgd.gradient_check(net.copy(dtype="float32"), X, y)
    # The float32 parameters differ from the float64 ones by rounding only; the check itself is
    # done in float64, so it is as tight as for a float64 network.
    assert result.max_relative_error < 1e-7
    assert result.backprop.weights[0].dtype == np.float64


def test_two_point_central_difference_is_available():
    net, X, y = smooth_case("tanh", "identity", "mse")
    # The O(eps²) formula of the spec: its error at eps=1e-6 is rounding (~1e-10 absolute).
    assert fastgd.gradient_check(net, X, y, eps=1e-6, method="central").max_relative_error < 1e-4


def test_gradient_check_detects_a_wrong_derivative(monkeypatch):
    net, X, y = smooth_case("sigmoid", "sigmoid", "mse")
    net = net.copy(backend="numpy")
    wrong = lambda z, a: 1.05 * a * (1 - a)  # noqa: E731  (5% off)
    monkeypatch.setitem(reference.DERIVATIVES, activations.SIGMOID, wrong)
    assert fastgd.gradient_check(net, X, y).max_relative_error > 1e-3


def test_gradient_check_rejects_bad_arguments():
    net, X, y = smooth_case("tanh", "identity", "mse")
    with pytest.raises(TypeError, match="net"):
        fastgd.gradient_check("not a net", X, y)
    with pytest.raises(ValueError, match="eps"):
        fastgd.gradient_check(net, X, y, eps=0)
    with pytest.raises(ValueError, match="method"):
        fastgd.gradient_check(net, X, y, method="forward")
