"""The activations that need the pre-activation (gelu, gelu_tanh, silu) against PyTorch: the
compiled activations (``activations.apply``, through the public kernels) and the NumPy twins against PyTorch's values
and autograd derivatives stored in
tests/data/torch_activations.npz (written by tests/data/make_torch_activations.py), and, where
PyTorch is installed, the stored file against PyTorch itself and a whole network against its
``to_torch`` module. Also: the estimators take them by name, and a new activation is one table
entry and its two functions."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastgd
from fastgd import kernels
from fastgd.kernels import layout
from fastgd.registry import ACTIVATIONS

DATA = Path(__file__).parent / "data"
with np.load(DATA / "torch_activations.npz", allow_pickle=False) as stored:
    STORED = {name: stored[name] for name in stored.files}
META = json.loads(str(STORED["meta"]))
NEEDS_Z = [name for name, spec in ACTIVATIONS.items() if spec.needs_z]
# float64: the bound. float32 against the float64 values: a few float32 ulp (the
# compiled exp, tanh within 2.5 ulp, erf from libm); and an absolute floor of a few ulp of 1,
# since the derivatives sum terms of order 1 to small values (1 + tanh(...) near z = -3).
RTOL = {"float64": 1e-12, "float32": 2e-6}
ATOL = {"float64": 1e-300, "float32": 1e-6}


def compiled_value_and_derivative(name, z, dtype):
    """The compiled activation ``name`` over one row of ``z`` (``activations.apply``, which the
    passes run): its values, and the slopes f'(z) it writes for the backward pass."""
    code = ACTIVATIONS[name].code
    row = np.ascontiguousarray(z, dtype=dtype).reshape(1, -1)
    value, derivative = np.empty_like(row), np.empty_like(row)
    kernels.activate(row, value, code)
    kernels.activation_derivative(row, value, derivative, code)
    return value[0], derivative[0]


def test_the_stored_file_covers_every_activation_that_needs_z():
    assert sorted(META["activations"]) == sorted(NEEDS_Z) and {"gelu", "gelu_tanh", "silu"} <= set(NEEDS_Z)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", NEEDS_Z)
def test_compiled_activations_equal_torch(name, dtype):
    z = STORED["z"]
    near = np.abs(z) <= 3.0
    value, derivative = compiled_value_and_derivative(name, z, dtype)
    assert value.dtype == np.dtype(dtype) and derivative.dtype == np.dtype(dtype)
    expected_value, expected_derivative = STORED[f"{name}_value"], STORED[f"{name}_derivative"]
    np.testing.assert_allclose(value[near], expected_value[near], rtol=RTOL[dtype], atol=ATOL[dtype])
    np.testing.assert_allclose(derivative[near], expected_derivative[near], rtol=RTOL[dtype], atol=ATOL[dtype])
    # Far out: the saturated values (gelu(-30) underflows to -0 or a denormal in both) within
    # an absolute 1e-12 of PyTorch's, and finite.
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(derivative))
    far = max(ATOL[dtype], 1e-12)
    np.testing.assert_allclose(value[~near], expected_value[~near], rtol=RTOL[dtype], atol=far)
    np.testing.assert_allclose(derivative[~near], expected_derivative[~near], rtol=RTOL[dtype], atol=far)


@pytest.mark.parametrize("name", NEEDS_Z)
def test_numpy_twins_equal_torch(name):
    z = STORED["z"]
    spec = ACTIVATIONS[name]
    value = spec.numpy_value(z)
    derivative = spec.numpy_derivative(z, value)
    # |z| <= 3 to 1e-12 relative; far out (tiny saturated values) to 1e-12 absolute.
    for part, atol in ((np.abs(z) <= 3.0, 1e-300), (np.abs(z) > 3.0, 1e-12)):
        np.testing.assert_allclose(value[part], STORED[f"{name}_value"][part], rtol=1e-12, atol=atol)
        np.testing.assert_allclose(derivative[part], STORED[f"{name}_derivative"][part], rtol=1e-12, atol=atol)


@pytest.mark.parametrize("name", NEEDS_Z)
def test_the_stored_file_is_what_torch_gives_today(name):
    pytest.importorskip("torch")
    sys.path.insert(0, str(DATA))
    try:
        import make_torch_activations
    finally:
        sys.path.remove(str(DATA))
    value, derivative = make_torch_activations.torch_values(name, STORED["z"])
    np.testing.assert_array_equal(value, STORED[f"{name}_value"])
    np.testing.assert_array_equal(derivative, STORED[f"{name}_derivative"])


@pytest.mark.parametrize("name", NEEDS_Z)
def test_a_network_with_it_equals_its_torch_module(name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    X, y = rng.uniform(-2, 2, size=(30, 4)), rng.normal(size=(30, 2))
    net = fastgd.Network(
        [4, 7, 5, 2],
        activation=name,
        output_activation="identity",
        loss="mse",
        dtype="float64",
        init="xavier_normal",
        random_state=1,
    )
    module = net.to_torch()
    inputs = torch.tensor(X)
    outputs = module(inputs)
    loss = 0.5 * ((outputs - torch.tensor(y)) ** 2).sum(dim=1).mean()
    loss.backward()
    np.testing.assert_allclose(net.predict(X), outputs.detach().numpy(), rtol=1e-12, atol=1e-14)
    grads = net.gradients(X, y)
    torch_grads = [p.grad.numpy() for p in module.parameters()]
    for layer, (weights, biases) in enumerate(zip(grads.weights, grads.biases)):
        np.testing.assert_allclose(weights, torch_grads[2 * layer].T, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(biases, torch_grads[2 * layer + 1], rtol=1e-12, atol=1e-14)
    back = fastgd.from_torch(module, loss="mse")
    assert back.activation == name
    np.testing.assert_array_equal(back.predict(X), net.predict(X))


@pytest.mark.parametrize("name", NEEDS_Z)
def test_the_estimators_take_it_by_name(name):
    pytest.importorskip("sklearn")
    from fastgd.sklearn import MLPClassifier, MLPRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    labels = (X[:, 0] + X[:, 1] > 0).astype(int)
    classifier = MLPClassifier((6,), activation=name, max_iter=5, random_state=0).fit(X, labels)
    assert classifier.network_.activation == name
    regressor = MLPRegressor(hidden_layer_sizes=(6,), activation=name, max_iter=5, random_state=0).fit(X, X[:, 0])
    assert regressor.network_.activation == name
    assert np.all(np.isfinite(regressor.predict(X)))


def test_a_network_keeps_no_z_of_its_hidden_layers_whatever_its_activation():
    # The forward pass writes each layer's slopes f'(z) (from z, for gelu & co., while z is at
    # hand), so the backward pass needs no z: a network keeps only the output layer's (its loss
    # reads it), and a gelu network's buffers are a sigmoid network's.
    def sizes(activation):
        net = fastgd.Network([3, 8, 5, 2], activation=activation, output_activation="identity")
        buffers = layout.make_buffers(net.architecture, 10, np.float64)
        return {field: getattr(buffers, field).size for field in buffers._fields}

    assert sizes("sigmoid") == sizes("tanh") == sizes("relu") == sizes("gelu") == sizes("silu")
    found = sizes("gelu")
    assert found["zs"] == 10 * 2  # the output layer's z only
    assert found["acts"] == found["slopes"] == found["deltas"] == 10 * (8 + 5 + 2)


NEW_ACTIVATION = textwrap.dedent("""
    import json, sys
    import numpy as np
    from fastgd.kernels import activations
    from fastgd.kernels.jit import helper

    # softsign z / (1 + |z|): its derivative 1 / (1 + |z|)^2 reads z. One table entry and its two
    # scalar functions (and its NumPy twins): nothing else is edited.
    @helper
    def softsign_value(z, t):
        return z / (t(1.0) + abs(z))

    @helper
    def softsign_derivative(z, a, t):
        d = t(1.0) + abs(z)
        return t(1.0) / (d * d)

    code = max(activations.SPECS) + 1
    activations.SPECS[code] = activations.ActivationSpec(
        "softsign", code, softsign_value, softsign_derivative, lambda z: z / (1 + np.abs(z)),
        lambda z, a: 1 / (1 + np.abs(z)) ** 2, None, ("Softsign", {}), ("Softsign", {}), needs_z=True)

    import fastgd
    from fastgd.gradcheck import gradient_check
    from fastgd.sklearn import MLPRegressor
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 3)), rng.normal(size=(64, 2))
    results = {}
    for backend in ("numba", "numpy"):
        net = fastgd.Network([3, 6, 2], activation="softsign", output_activation="identity", loss="mse",
                             dtype="float64",
                             backend=backend, random_state=0)
        net.fit(X, y, epochs=4, batch_size=16, optimizer="adam")
        results[backend] = net.predict(X)
    report = gradient_check(fastgd.Network([3, 5, 2], activation="softsign", output_activation="identity", loss="mse",
                                           dtype="float64", random_state=1), X[:8], y[:8])
    estimator = MLPRegressor(hidden_layer_sizes=(5,), activation="softsign", max_iter=3, random_state=0).fit(X, y)
    print(json.dumps({"difference": float(np.max(np.abs(results["numba"] - results["numpy"]))),
                      "scale": float(np.max(np.abs(results["numpy"]))), "gradcheck": float(report.max_relative_error),
                      "estimator": estimator.network_.activation}))
""")


def test_a_new_activation_is_one_table_entry_and_its_two_functions(tmp_path):
    # In a process of its own (the table is extended there) with a cache of its own: the new
    # entry trains compiled, agrees with the NumPy twin, passes the gradient check and is
    # accepted by the estimators, with no other file touched.
    pytest.importorskip("sklearn")
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), FASTGD_COMPILE_HELPER="0")
    done = subprocess.run(
        [sys.executable, "-c", NEW_ACTIVATION], capture_output=True, text=True, env=environment, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["difference"] <= 1e-12 * found["scale"], found
    assert found["gradcheck"] < 1e-6, found
    assert found["estimator"] == "softsign"
