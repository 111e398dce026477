"""Hardening, property by property: every generated argument works or raises a ValueError/
TypeError naming it, with everything as it was; files are checked field by field; no accepted
combination of activation, loss, targets and weights gives a gradient that disagrees with its
loss."""

import json
import os
import warnings
import zipfile

import numpy as np
import pytest
from _helpers import assert_same_state, junk, regression_data, state_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgd
from fastgd import schedules
from fastgd.registry import ACTIVATIONS, LOSSES

EXPECTED_ERRORS = (ValueError, TypeError)
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JUNK = junk(st.just(np.zeros(3)))


@pytest.fixture(scope="module")
def net():
    X, y = regression_data(n=20, n_in=3, n_out=2)
    network = fastgd.Network([3, 5, 2], random_state=0)
    network.fit(X, y, optimizer=fastgd.Adam(lr=0.01), epochs=2, batch_size=8)
    return network


# ----------------------------------------------------------------------------------------- fit


@SETTINGS
@given(data=st.data())
def test_fit_arguments_beyond_the_old_ones(net, data, tmp_path_factory):
    # checkpoint paths (checked before training), grad_shards, restore_best, schedules given as
    # arrays, clipping, gradient tracking: any value trains or names itself, with the network
    # unchanged.
    network = net.copy()
    X, y = regression_data(n=12, n_in=3, n_out=2)
    folder = tmp_path_factory.mktemp("ckpt")
    unwritable = folder / "missing" / "net.npz"
    name, value = data.draw(
        st.one_of(
            # (No junk text: a short string is a valid relative path, and a checkpoint would be
            # written into the working folder.)
            st.tuples(
                st.just("checkpoint"),
                st.one_of(
                    JUNK.filter(lambda value: not isinstance(value, str)),
                    st.sampled_from(["", str(folder), str(unwritable), str(folder / "n.npz")]),
                ),
            ),
            st.tuples(st.just("grad_shards"), st.one_of(JUNK, st.integers(-2, 20))),
            st.tuples(st.just("restore_best"), JUNK),
            st.tuples(st.just("lr_schedule"), JUNK),
            st.tuples(st.just("checkpoint_every"), st.one_of(JUNK, st.integers(-2, 3))),
            st.tuples(st.sampled_from(["clip_grad_norm", "clip_grad_value"]), st.one_of(JUNK, st.floats(-1, 10))),
            st.tuples(st.just("track_gradients"), JUNK),
        ),
        label="argument",
    )
    before = state_of(network)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            network.fit(X, y, epochs=1, batch_size=4, **{name: value})
    except EXPECTED_ERRORS as error:
        assert name.split("_")[0] in str(error), str(error)
        assert_same_state(network, before)


def test_checkpoint_paths_are_refused_before_any_epoch(net, tmp_path):
    X, y = regression_data(n=12, n_in=3, n_out=2)
    network = net.copy()
    before = state_of(network)
    for bad, words in (
        ("", "checkpoint must be a file path"),
        (tmp_path, "folder"),
        (tmp_path / "no" / "x.npz", "does not exist"),
    ):
        with pytest.raises(ValueError, match=words):
            network.fit(X, y, epochs=3, checkpoint=bad)
        assert_same_state(network, before)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="cannot write"):
            network.fit(X, y, epochs=3, checkpoint=locked / "x.npz")


@SETTINGS
@given(X=st.one_of(JUNK, st.just(np.ones((3, 3)))), y=JUNK, weight=JUNK)
def test_evaluation_and_partial_fit_take_any_value(net, X, y, weight):
    before = state_of(net)
    for call in (
        lambda: net.loss(X, y, weight),
        lambda: net.gradients(X, y, weight),
        lambda: net.copy().partial_fit(X, y, sample_weight=weight),
    ):
        try:
            call()
        except EXPECTED_ERRORS as error:
            assert any(word in str(error) for word in ("X", "y", "sample_weight")), str(error)
    assert_same_state(net, before)


def test_missing_targets_are_named(net):
    X, _ = regression_data(n=4, n_in=3, n_out=2)
    for call in (net.loss, net.gradients):
        with pytest.raises(TypeError, match="y must be an array of targets, got None"):
            call(X, None)


@SETTINGS
@given(data=st.data())
def test_schedules_take_any_value_or_name_the_bad_argument(data):
    cls, names = data.draw(
        st.sampled_from(
            [
                (schedules.StepDecay, ("step_size", "gamma")),
                (schedules.Exponential, ("gamma",)),
                (schedules.InverseScaling, ("power",)),
                (schedules.Cosine, ("total_steps", "eta_min")),
            ]
        )
    )
    name = data.draw(st.sampled_from(names))
    good = {"step_size": 2, "gamma": 0.5, "power": 0.5, "total_steps": 5, "eta_min": 0.0}
    arguments = {n: good[n] for n in names}
    arguments[name] = data.draw(JUNK)
    try:
        schedule = cls(**arguments)
    except EXPECTED_ERRORS as error:
        assert name.split("_")[0] in str(error), str(error)
    else:
        assert np.isfinite(schedule.parameters()).all()


# ------------------------------------------------------------------------- gradients and weights


def _targets(draw, loss, rows, n_out):
    if loss == "crossentropy":
        kind = draw(st.sampled_from(["labels", "one-hot", "probabilities", "soft rows"]))
        if kind == "labels":
            return np.arange(rows) % n_out
        if kind == "one-hot":
            return np.eye(n_out)[np.arange(rows) % n_out]
        values = np.array(draw(st.lists(st.floats(0, 1), min_size=rows * n_out, max_size=rows * n_out))).reshape(
            rows, n_out
        )
        if kind == "probabilities":
            values = values + 1e-3
            return values / values.sum(axis=1, keepdims=True)
        return values  # rows that sum to anything in [0, n_out], zero rows included
    return np.array(draw(st.lists(st.floats(0, 1), min_size=rows * n_out, max_size=rows * n_out))).reshape(rows, n_out)


def combinations():
    for loss in LOSSES.values():
        outputs = [loss.required_output] if loss.required_output else list(ACTIVATIONS)
        for hidden in (name for name, a in ACTIVATIONS.items() if not a.output_only):
            for output in outputs:
                yield hidden, output, loss.name


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_backprop_agrees_with_finite_differences_for_every_accepted_input(data):
    # float64, five-point stencil: relative error <= 1e-7 for any activation pair, loss,
    # target kind (soft cross-entropy rows that do not sum to one included) and weights.
    hidden, output, loss = data.draw(st.sampled_from(list(combinations())), label="network")
    rows, n_out = 5, 3
    # Weights within [1e-3, 10]: sse is a weighted sum, so larger weights scale the loss up and
    # with it the finite differences' rounding error (~1e-16·|C|/eps), not the backprop's.
    # Extreme weights are the subject of test_scaling_every_weight_changes_no_mean_loss.
    weights = data.draw(
        st.one_of(st.none(), st.lists(st.floats(1e-3, 10), min_size=rows, max_size=rows)), label="weights"
    )
    y = _targets(data.draw, loss, rows, n_out)
    if hidden in ("relu", "leaky_relu") or output in ("relu", "leaky_relu"):
        seeds = range(200)  # a point with no pre-activation near the kink (finite differences fail there)
    else:
        seeds = range(1)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(rows, 4))
        net = fastgd.Network(
            [4, 6, n_out], activation=hidden, output_activation=output, loss=loss, random_state=seed, l1=0.001, l2=0.01
        )
        z = X @ net.weights[0] + net.biases[0]
        if np.abs(z).min() > 0.02 or seeds == range(1):
            break
    check = fastgd.gradient_check(net, X, y, sample_weight=weights)
    assert check.max_relative_error < 1e-7, (hidden, output, loss, check.max_relative_error)


@settings(max_examples=40, deadline=None)
@given(
    scale=st.sampled_from([1e-300, 1e-30, 1.0, 1e30, 1e300]),
    loss=st.sampled_from(["mse", "binary_crossentropy", "crossentropy"]),
)
def test_scaling_every_weight_changes_no_mean_loss(scale, loss):
    # Equal weights of 1e308 used to make loss() 0, subnormal ones made it inf: a mean loss is
    # now normalised by the largest weight first.
    X, y = regression_data(n=6, n_in=3, n_out=3)
    if loss == "crossentropy":
        y = np.eye(3)[np.arange(6) % 3]
    net = fastgd.Network([3, 4, 3], loss=loss, random_state=0)
    weights = np.linspace(1, 2, 6)
    expected = net.loss(X, y, weights)
    assert net.loss(X, y, weights * scale) == pytest.approx(expected, rel=1e-12)
    g, h = net.gradients(X, y, weights), net.gradients(X, y, weights * scale)
    for a, b in zip(g.weights + g.biases, h.weights + h.biases):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------------------- files


def _saved(tmp_path):
    net = fastgd.Network([3, 4, 2], random_state=0, n_threads=1)
    net.fit(*regression_data(n=10), optimizer=fastgd.Adam(), epochs=2, batch_size=5)
    path = tmp_path / "net.npz"
    net.save(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return net, path, arrays


FIELDS = [
    "layer_sizes",
    "activation",
    "output_activation",
    "loss",
    "init",
    "dtype",
    "backend",
    "n_threads",
    "l1",
    "l2",
    "shuffle_seed",
    "epochs_trained",
    "optimizer",
    "history",
    "format",
    "format_version",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_description_loads_or_names_the_field_and_the_file(tmp_path_factory, data):
    tmp_path = tmp_path_factory.mktemp("mutated")
    net, path, arrays = _saved(tmp_path)
    description = json.loads(arrays["description"].tobytes())
    field = data.draw(st.sampled_from(FIELDS), label="field")
    value = data.draw(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**70), 2**70),
            st.floats(),
            st.text(max_size=4),
            st.lists(st.integers(-3, 5), max_size=4),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
            st.just({"name": "adam", "config": {"lr": -1}}),
            st.just({"name": "nadam", "config": {}}),
        ),
        label="value",
    )
    if data.draw(st.booleans(), label="delete"):
        description.pop(field)
    else:
        description[field] = value
    arrays["description"] = np.frombuffer(json.dumps(description).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    try:
        loaded = fastgd.load(path)
    except (ValueError, TypeError) as error:
        assert str(path) in str(error), str(error)
        assert field in str(error) or "format" in str(error) or "network" in str(error), (field, str(error))
    else:
        assert np.isfinite(loaded.flat_parameters).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_array_loads_or_names_the_array_and_the_file(tmp_path_factory, data):
    tmp_path = tmp_path_factory.mktemp("arrays")
    net, path, arrays = _saved(tmp_path)
    name = data.draw(
        st.sampled_from(["parameters", "initial_parameters", "optimizer_state", "optimizer_step"]), label="array"
    )
    edit = data.draw(st.sampled_from(["shorter", "dtype", "2-D", "NaN", "negative", "huge header"]), label="edit")
    array = arrays[name]
    if edit == "shorter":
        arrays[name] = array.reshape(-1)[:-1]
    elif edit == "dtype":
        arrays[name] = array.astype(np.float32 if array.dtype != np.float32 else np.float64)
    elif edit == "2-D":
        arrays[name] = array.reshape(1, -1)
    elif edit == "NaN":
        arrays[name] = np.full_like(array, np.nan) if array.dtype.kind == "f" else np.full_like(array, -1)
    elif edit == "negative":
        arrays[name] = -np.abs(array) - 1 if array.dtype.kind == "i" else array
    np.savez(path, **arrays)
    if edit == "huge header":
        # A header that claims an array of petabytes: refused before anything is allocated.
        with zipfile.ZipFile(path) as archive:
            members = {n: archive.read(n) for n in archive.namelist()}
        raw = members[name + ".npy"]
        header_end = raw.index(b"\n") + 1
        header = raw[:header_end].decode("latin1")
        shape_text = header[header.index("'shape': ") + 9 : header.index(")", header.index("'shape': ")) + 1]
        members[name + ".npy"] = (header.replace(shape_text, "(100000000000000,)")).encode("latin1") + raw[header_end:]
        with zipfile.ZipFile(path, "w") as archive:
            for member, content in members.items():
                archive.writestr(member, content)
    try:
        loaded = fastgd.load(path)
    except ValueError as error:
        assert str(path) in str(error) and (name in str(error) or "corrupt" in str(error)), str(error)
    else:
        assert edit == "negative" and name != "optimizer_step"
        np.testing.assert_array_equal(loaded.predict(np.ones((1, 3))), net.predict(np.ones((1, 3))))


def test_a_file_saved_with_more_threads_than_this_machine_has_loads(tmp_path):
    net = fastgd.Network([3, 4, 2], random_state=0, n_threads=64)
    net.save(tmp_path / "big.npz")
    loaded = fastgd.load(tmp_path / "big.npz")
    assert loaded.n_threads == 64  # kept as asked; fastgd runs on the cores this machine has
    np.testing.assert_array_equal(loaded.predict(np.ones((2, 3))), net.predict(np.ones((2, 3))))


@pytest.mark.parametrize("value", [-(2**63) - 1, 2**64, 10**400])
def test_a_penalty_beyond_int64_or_float_in_a_file_is_named(tmp_path, value):
    # JSON holds ints of any size: numpy's isfinite refused them with a TypeError naming nothing
    # (found by the property test above with l1 = -2**63 - 1).
    net, path, arrays = _saved(tmp_path)
    description = json.loads(arrays["description"].tobytes())
    description["l1"] = value
    arrays["description"] = np.frombuffer(json.dumps(description).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    if value == 2**64:  # a finite number >= 0: a valid (if useless) penalty
        assert fastgd.load(path).l1 == float(value)
        return
    with pytest.raises(ValueError, match="l1") as error:
        fastgd.load(path)
    assert str(path) in str(error.value)
