"""fastgd against PyTorch everywhere, PyTorch installed or not: PyTorch's trajectories for every
optimizer configuration, learning-rate schedule, clipping rule and loss with a parameter (Huber),
and every optimizer's steps alone, are in a committed file
(tests/data/torch_reference.npz, written by tests/data/make_torch_reference.py: see its
docstring for what it holds); fastgd trains the same network on the same data through its
public API only (Network, fit, the optimizers, the schedules, fit's clipping keywords) and must
take the same trajectory. The live comparisons (tests/test_clipping.py, tests/test_convert.py)
still run where PyTorch is installed."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastgd
from fastgd import kernels, optimizers, reference, schedules
from fastgd.optimizers import OPTIMIZERS_UNDER_TEST
from fastgd.registry import LOSSES

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "torch_reference.npz"
SCRIPT = DATA / "make_torch_reference.py"

# float64 over 50 steps, as the live comparisons (tests/test_clipping.py) allow: fastgd's
# compiled loop and PyTorch sum in other orders (BLAS blocking, fast-math reassociation).
RTOL = 1e-10
# Parameters that pass close to zero are compared against this absolute floor (the live
# comparisons' RTOL · 1e-3); the parameters here are of order 0.1 to 1.
ATOL = RTOL * 1e-3
# NAdam, RAdam and Adamax (added with the declarations: PyTorch's order of operations) are held
# to 1e-12 over their trajectories too (measured: at most 4e-14 relative, float64); the other
# cases keep the tolerance they were committed with.
TIGHT = {"NAdam", "RAdam", "Adamax"}
TIGHT_RTOL = 1e-12
# An optimizer's steps alone, without a network (no sum whose order could differ): PyTorch's
# order of operations, to a few ulps (float64).
STEP_RTOL = 1e-12

with np.load(REFERENCE, allow_pickle=False) as stored:
    FILE = {name: stored[name] for name in stored.files}
META = json.loads(str(FILE["meta"]))
CASES = META["cases"]


def as_fastgd_options(options):
    # JSON keeps tuples (Adam's betas) as lists.
    return {key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}


def torch_layout(net):
    """The network's parameters in the file's (PyTorch's) layout: per layer W.T row by row, then b."""
    return np.concatenate([np.concatenate([W.T.ravel(), b]) for W, b in zip(net.weights, net.biases)])


def starting_network(backend, loss=None):
    """The file's network (with ``loss``, default the file's) at the file's initial parameters,
    through the public API."""
    net = fastgd.Network(
        META["layer_sizes"],
        activation=META["activation"],
        loss=loss or META["loss"],
        l2=META["l2"],
        dtype="float64",
        random_state=0,
        backend=backend,
    )
    initial, offset = FILE["initial"], 0
    for layer, W in enumerate(net.weights):
        n_out, n_in = W.shape[1], W.shape[0]
        net.weights[layer] = initial[offset : offset + n_out * n_in].reshape(n_out, n_in).T
        offset += n_out * n_in
        net.biases[layer] = initial[offset : offset + n_out]
        offset += n_out
    assert offset == initial.size and np.array_equal(torch_layout(net), initial)
    return net


def fastgd_trajectory(case, backend):
    """fastgd's parameters after each epoch (epochs, n_params), in the file's layout, and the fit's History."""
    net = starting_network(backend, case.get("loss"))
    optimizer = getattr(optimizers, case["optimizer"])(**as_fastgd_options(case["options"]))
    schedule = None if case["schedule"] is None else getattr(schedules, case["schedule"][0])(**case["schedule"][1])
    after_each_epoch = []

    def record(epoch, history, network):  # a callback: runs after every epoch
        after_each_epoch.append(torch_layout(network))

    history = net.fit(
        FILE["X"],
        FILE["y"] * case.get("target_scale", 1.0),
        optimizer=optimizer,
        epochs=META["epochs"],
        batch_size=META["batch_size"],
        shuffle=META["shuffle"],
        lr_schedule=schedule,
        callbacks=record,
        **case["clip"],
    )
    return np.array(after_each_epoch), history


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("index", range(len(CASES)), ids=[case["key"] for case in CASES])
def test_fastgd_takes_pytorchs_trajectory(index, backend):
    case = CASES[index]
    trajectory, history = fastgd_trajectory(case, backend)
    expected = FILE["parameters"][index]
    assert trajectory.shape == expected.shape
    # The case moves the network (a trajectory that stays put would match anything).
    assert np.abs(expected[-1] - FILE["initial"]).max() > 1e-3
    rtol = TIGHT_RTOL if case["optimizer"] in TIGHT else RTOL
    np.testing.assert_allclose(
        trajectory, expected, rtol=rtol, atol=rtol * 1e-3, err_msg=f"{case['key']} ({case['torch']})"
    )
    np.testing.assert_allclose(history.loss, FILE["loss"][index], rtol=rtol, err_msg=f"{case['key']} loss")


@pytest.mark.parametrize("kind", ["compiled", "twin"])
@pytest.mark.parametrize(
    "index",
    range(len(OPTIMIZERS_UNDER_TEST)),
    ids=[f"{cls.__name__}-{options}" for cls, options in OPTIMIZERS_UNDER_TEST],
)
def test_the_optimizer_takes_pytorchs_steps(index, kind):
    # Every optimizer configuration, alone: the same starting vector and gradients, step after
    # step, compiled (kernels.optimizer_step) and in NumPy (reference.optimizer_step).
    cls, options = OPTIMIZERS_UNDER_TEST[index]
    optimizer = cls(**options)
    step = kernels.optimizer_step if kind == "compiled" else reference.optimizer_step
    params = FILE["step_initial"].copy()
    state = optimizer.initial_state(params.size, np.float64)
    expected = FILE["step_parameters"][index]
    after = []
    for count, g in enumerate(FILE["step_grads"], start=1):
        step(optimizer.code, params, g.copy(), state, count, optimizer.lr, optimizer.hyper_vector())
        after.append(params.copy())
    assert np.abs(expected[-1] - FILE["step_initial"]).max() > 1e-3  # the steps move the parameters
    np.testing.assert_allclose(
        np.array(after), expected, rtol=STEP_RTOL, atol=STEP_RTOL * 1e-3, err_msg=f"{cls.__name__}({options})"
    )


def test_the_file_covers_every_optimizer_configuration():
    stored = [
        (case["optimizer"], as_fastgd_options(case["options"]))
        for case in CASES
        if case["key"].startswith("optimizer/")
    ]
    assert stored == [(cls.__name__, dict(options)) for cls, options in OPTIMIZERS_UNDER_TEST], (
        "fastgd.optimizers.OPTIMIZERS_UNDER_TEST changed: run python tests/data/make_torch_reference.py"
    )


def test_the_file_covers_every_loss_with_a_parameter():
    # Huber's δ: the loss whose value a parameter changes; the others are mse's trajectories'
    # business (the live comparisons and the kernel tests cover their formulas).
    with_parameter = {name for name, spec in LOSSES.items() if spec.parameter is not None}
    assert "huber" in with_parameter
    assert {case["loss"] for case in CASES if "loss" in case} == with_parameter, (
        "a loss changed: run make_torch_reference.py"
    )
    assert META["steps"] == {"count": FILE["step_grads"].shape[0], "size": FILE["step_initial"].size}
    assert FILE["step_parameters"].shape == (len(OPTIMIZERS_UNDER_TEST), *FILE["step_grads"].shape)


def test_the_huber_cases_take_both_of_its_pieces():
    # Outputs in (-1, 1) against targets times 3: some errors beyond δ = 1 (the linear piece),
    # some within (the quadratic one), at the start and at the end of the run.
    for case in CASES:
        if case.get("loss") != "huber":
            continue
        net = starting_network("numpy", "huber")
        target = FILE["y"] * case["target_scale"]
        for errors in (np.abs(net.predict(FILE["X"]) - target), None):
            if errors is None:
                trained, _ = fastgd_trajectory(case, "numpy")
                errors = np.abs(_predict_with(net, trained[-1]) - target)
            assert 0.1 < np.mean(errors > 1.0) < 0.9, case["key"]


def _predict_with(net, parameters):
    # The network's prediction at ``parameters`` (the file's layout).
    offset = 0
    for layer, W in enumerate(net.weights):
        n_in, n_out = W.shape
        net.weights[layer] = parameters[offset : offset + n_out * n_in].reshape(n_out, n_in).T
        offset += n_out * n_in
        net.biases[layer] = parameters[offset : offset + n_out]
        offset += n_out
    return net.predict(FILE["X"])


def test_the_file_covers_every_schedule():
    declared = {
        name
        for name, value in vars(schedules).items()
        if isinstance(value, type) and issubclass(value, schedules.Schedule) and value is not schedules.Schedule
    }
    assert declared >= {"Constant", "StepDecay", "Exponential", "InverseScaling", "Cosine", "SampleInverseScaling"}
    stored = {case["schedule"][0] for case in CASES if case["schedule"] is not None}
    assert stored == declared, "fastgd.schedules changed: add the schedule to make_torch_reference.py and run it"


def test_the_file_covers_every_clipping_rule_with_every_optimizer():
    rules = {
        "clip_grad_norm": {"clip_grad_norm"},
        "clip_grad_value": {"clip_grad_value"},
        "both": {"clip_grad_norm", "clip_grad_value"},
    }
    for name, keywords in rules.items():
        clipped = [
            (case["optimizer"], as_fastgd_options(case["options"])) for case in CASES if set(case["clip"]) == keywords
        ]
        assert clipped == [(cls.__name__, dict(options)) for cls, options in OPTIMIZERS_UNDER_TEST], name


def test_the_file_records_its_origin_and_stays_small():
    assert META["torch_version"] and META["command"] == "python tests/data/make_torch_reference.py"
    assert REFERENCE.stat().st_size < 400 * 1024
    assert FILE["step_parameters"].dtype == np.float64 and np.isfinite(FILE["step_parameters"]).all()
    assert FILE["parameters"].shape == (len(CASES), META["epochs"], FILE["initial"].size)
    assert FILE["loss"].shape == (len(CASES), META["epochs"])
    assert FILE["parameters"].dtype == np.float64 and np.isfinite(FILE["parameters"]).all()
    assert len({case["key"] for case in CASES}) == len(CASES)


def test_a_wrong_trajectory_is_caught():
    # The comparison can fail: the same case with another learning rate leaves the tolerance.
    case = dict(CASES[0], options=dict(CASES[0]["options"], lr=CASES[0]["options"]["lr"] * (1 + 1e-6)))
    trajectory, _ = fastgd_trajectory(case, "numpy")
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(trajectory, FILE["parameters"][0], rtol=RTOL, atol=ATOL)


def test_the_committed_file_is_what_this_script_writes(tmp_path):
    torch = pytest.importorskip("torch")
    output = tmp_path / "torch_reference.npz"
    # The script imports the installed fastgd, as the test does; the repository root is its folder.
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=SCRIPT.parent.parent.parent,
    )
    assert done.returncode == 0, done.stderr
    with np.load(output, allow_pickle=False) as written:
        fresh = {name: written[name] for name in written.files}
    assert sorted(fresh) == sorted(FILE)
    meta = json.loads(str(fresh["meta"]))
    assert meta["torch_version"] == torch.__version__
    versions = ("torch_version", "numpy_version", "fastgd_version", "python_version")
    assert {k: v for k, v in meta.items() if k not in versions} == {
        k: v for k, v in META.items() if k not in versions
    }, "the committed file is stale: run python tests/data/make_torch_reference.py"
    for name in (
        "X",
        "y",
        "initial",
        "step_initial",
        "step_grads",
    ):  # drawn by NumPy's generator and fastgd's initializer: bitwise
        assert np.array_equal(fresh[name], FILE[name]), name
    # Another PyTorch build or CPU may sum in another order: the tolerance of the comparisons.
    np.testing.assert_allclose(fresh["parameters"], FILE["parameters"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(fresh["loss"], FILE["loss"], rtol=RTOL)
    np.testing.assert_allclose(fresh["step_parameters"], FILE["step_parameters"], rtol=STEP_RTOL, atol=STEP_RTOL * 1e-3)
