"""Trained networks to and from scikit-learn, PyTorch and ONNX (``fastgd.convert``): the same
predictions on the other side, and clear refusals of what cannot be represented."""

import subprocess
import sys

import numpy as np
import pytest

import fastgd
from fastgd.registry import ACTIVATIONS

# Every activation the registry declares (a new one is tested as soon as it is declared).
HIDDEN = [name for name, spec in ACTIVATIONS.items() if not spec.output_only]
OUTPUTS = [name for name, spec in ACTIVATIONS.items() if spec.exportable]
# Declared without a PyTorch or ONNX equivalent in fastgd's conversions: refused by name.
UNEXPORTABLE = [name for name, spec in ACTIVATIONS.items() if not spec.exportable]
# Outputs of the same network, computed by another library in the same dtype: both evaluate
# the same formulas in possibly another order (BLAS blocking, exp implementations).
TOLERANCE = {"float32": 1e-6, "float64": 1e-12}
# The NumPy backend trains and predicts here: it computes what the compiled kernels do (the
# kernel tests hold them together) without compiling 60 configurations for these tests;
# test_compiled_predict_exports_too checks one compiled network.
BACKEND = "numpy"


def inputs(dtype, n=64, n_in=5):
    return (3 * np.random.default_rng(1).normal(size=(n, n_in))).astype(dtype)


def trained(activation, output_activation, dtype):
    loss = {"softmax": "crossentropy"}.get(output_activation, "mse")
    net = fastgd.Network(
        [5, 8, 6, 3],
        activation=activation,
        output_activation=output_activation,
        loss=loss,
        dtype=dtype,
        random_state=4,
        backend=BACKEND,
    )
    X = inputs(dtype)
    y = np.random.default_rng(2).integers(0, 3, size=X.shape[0]) if loss == "crossentropy" else np.tanh(X[:, :3])
    net.fit(X, y, optimizer="adam", epochs=3, batch_size=16)
    return net


def assert_same_outputs(theirs, ours, dtype):
    assert theirs.shape == ours.shape and theirs.dtype == ours.dtype
    np.testing.assert_allclose(theirs, ours, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


# -- ONNX ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output_activation", OUTPUTS)
@pytest.mark.parametrize("activation", HIDDEN)
def test_onnx_export_runs_in_onnxruntime_with_predicts_outputs(tmp_path, activation, output_activation, dtype):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    net = trained(activation, output_activation, dtype)
    path = tmp_path / "net.onnx"
    net.to_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    X = inputs(dtype)
    assert_same_outputs(session.run(None, {"X": X})[0], net.predict(X), dtype)
    ops = [node.op_type for node in net.to_onnx().graph.node]
    assert ops.count("Gemm") == 3  # one dense layer each, no reshaping around them


def test_compiled_predict_exports_too():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    net = trained("tanh", "softmax", "float32").copy(backend="numba")
    session = ort.InferenceSession(net.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    X = inputs("float32")
    assert_same_outputs(session.run(None, {"X": X})[0], net.predict(X), "float32")


# -- scikit-learn -------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["logistic", "tanh", "relu", "identity"])
@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel", "regression"])
def test_from_sklearn_predicts_as_the_scikit_learn_model(activation, task):
    neural_network = pytest.importorskip("sklearn.neural_network")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    targets = {
        "multiclass": rng.integers(0, 3, size=80),
        "binary": rng.integers(0, 2, size=80),
        "multilabel": rng.integers(0, 2, size=(80, 2)),
        "regression": X @ rng.normal(size=(4, 2)),
    }
    Model = neural_network.MLPRegressor if task == "regression" else neural_network.MLPClassifier
    mlp = Model(hidden_layer_sizes=(7, 5), activation=activation, max_iter=30, random_state=0)
    with pytest.warns(Warning):  # not converged in 30 iterations, on purpose (fast)
        mlp.fit(X, targets[task])
    net = fastgd.from_sklearn(mlp, backend=BACKEND)
    theirs = {
        "multiclass": lambda x: mlp.predict_proba(x),
        "binary": lambda x: mlp.predict_proba(x)[:, 1:],
        "multilabel": lambda x: mlp.predict_proba(x),
        "regression": lambda x: mlp.predict(x),
    }[task](X)
    assert_same_outputs(theirs, net.predict(X), "float64")
    expected_loss = {"multiclass": "crossentropy", "binary": "binary_crossentropy", "multilabel": "binary_crossentropy"}
    assert net.loss_name == expected_loss.get(task, "mse")
    # Training goes on from the converted weights; restart() comes back to them.
    start = net.flat_parameters.copy()
    net.fit(X, targets[task] if task != "binary" else targets[task][:, None], epochs=1, batch_size=16)
    net.restart()
    assert np.array_equal(net.flat_parameters, start)


def test_from_sklearn_keeps_float32():
    neural_network = pytest.importorskip("sklearn.neural_network")
    X = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    mlp = neural_network.MLPRegressor(hidden_layer_sizes=(4,), max_iter=5, random_state=0)
    with pytest.warns(Warning):
        mlp.fit(X, X[:, 0])
    net = fastgd.from_sklearn(mlp)
    assert net.dtype == np.float32
    assert_same_outputs(mlp.predict(X).astype(np.float32)[:, None], net.predict(X), "float32")


def test_from_sklearn_refuses_what_is_not_a_fitted_mlp():
    neural_network = pytest.importorskip("sklearn.neural_network")
    linear_model = pytest.importorskip("sklearn.linear_model")
    with pytest.raises(ValueError, match="not fitted"):
        fastgd.from_sklearn(neural_network.MLPClassifier())
    with pytest.raises(TypeError, match="mlp must be a scikit-learn MLPClassifier or MLPRegressor"):
        fastgd.from_sklearn(linear_model.LinearRegression())
    with pytest.raises(TypeError, match="mlp must be"):
        fastgd.from_sklearn(fastgd.Network([2, 1]))


# -- PyTorch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output_activation", OUTPUTS)
@pytest.mark.parametrize("activation", HIDDEN)
def test_torch_round_trip_keeps_the_predictions(activation, output_activation, dtype):
    torch = pytest.importorskip("torch")
    net = trained(activation, output_activation, dtype)
    module = net.to_torch()
    X = inputs(dtype)
    with torch.no_grad():
        assert_same_outputs(module(torch.from_numpy(X)).numpy(), net.predict(X), dtype)
    back = fastgd.from_torch(module)
    assert back.get_config()["activation"] == (activation if len(net.weights) > 1 else "identity")
    assert back.get_config()["output_activation"] == output_activation
    assert np.array_equal(back.flat_parameters, net.flat_parameters)


def test_from_torch_refuses_what_a_network_cannot_be():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    refusals = [
        (nn.Linear(3, 2), TypeError, "module must be a torch.nn.Sequential"),
        (nn.Sequential(nn.Conv1d(1, 1, 3)), ValueError, "module\\[0\\] is a Conv1d"),
        (
            nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1)),
            ValueError,
            "different activations",
        ),
        (
            nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=-1), nn.Linear(4, 1)),
            ValueError,
            "softmax is allowed only after the last",
        ),
        (nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.2), nn.Linear(4, 1)), ValueError, "slope 0.01"),
        (nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=0)), ValueError, "dim=0"),
        (nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 1)), ValueError, "takes 5 inputs but layer 0 gives 4"),
        (nn.Sequential(nn.Tanh(), nn.Linear(3, 1)), ValueError, "before any Linear"),
        (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Sigmoid(), nn.Linear(4, 1)), ValueError, "one per layer"),
        (nn.Sequential(), ValueError, "no Linear layer"),
        (nn.Sequential(nn.Linear(3, 4, dtype=torch.float16)), ValueError, "float32 or all float64"),
    ]
    for module, error, message in refusals:
        with pytest.raises(error, match=message):
            fastgd.from_torch(module)


def test_from_torch_takes_layers_without_bias():
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False, dtype=torch.float64), torch.nn.Sigmoid())
    net = fastgd.from_torch(module)
    X = inputs("float64", n_in=3)
    with torch.no_grad():
        assert_same_outputs(module(torch.from_numpy(X)).numpy(), net.predict(X), "float64")
    assert net.loss_name == "binary_crossentropy"


def test_import_fastgd_imports_none_of_the_converters_libraries():
    code = "import sys, fastgd; print([m for m in ('torch', 'onnx', 'onnxruntime', 'sklearn') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("output_activation", UNEXPORTABLE)
def test_activations_without_an_equivalent_are_refused_by_name(output_activation):
    net = fastgd.Network(
        [3, 4, 2], activation="tanh", output_activation=output_activation, random_state=0, backend=BACKEND
    )
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match=f"activation '{output_activation}' has no onnx equivalent"):
        net.to_onnx()
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match=f"activation '{output_activation}' has no torch equivalent"):
        net.to_torch()
