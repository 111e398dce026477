"""A loss's own parameter (``Network(loss_options=...)``): huber's δ, checked, used by every
evaluation of the loss, kept by copies and files."""

import numpy as np
import pytest

import fastgd


def huber_by_hand(a, y, delta):
    # torch.nn.HuberLoss(delta) with reduction="mean": the mean over every element.
    d = np.abs(a - y)
    return float(np.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)).mean())


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((40, 3)), 3.0 * rng.standard_normal((40, 2))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("delta", [0.25, 1.0, 4.0])
def test_the_loss_is_torchs_huber_with_that_delta(data, backend, delta):
    X, Y = data
    net = fastgd.Network(
        [3, 5, 2],
        activation="tanh",
        output_activation="identity",
        loss="huber",
        loss_options={"delta": delta},
        random_state=0,
        backend=backend,
    )
    assert net.loss_parameter == delta
    assert net.loss(X, Y) == pytest.approx(huber_by_hand(net.predict(X), Y, delta), rel=1e-12)


def test_the_default_delta_is_torchs(data):
    X, Y = data
    net = fastgd.Network([3, 5, 2], output_activation="identity", loss="huber", random_state=0)
    assert net.loss_options == {} and net.loss_parameter == 1.0
    assert net.loss(X, Y) == pytest.approx(huber_by_hand(net.predict(X), Y, 1.0), rel=1e-12)


def test_gradients_and_training_use_the_delta(data):
    X, Y = data
    small = fastgd.Network(
        [3, 5, 2], output_activation="identity", loss="huber", loss_options={"delta": 0.1}, random_state=0
    )
    large = fastgd.Network(
        [3, 5, 2], output_activation="identity", loss="huber", loss_options={"delta": 10.0}, random_state=0
    )
    # With δ = 10 every error here is inside δ (the squared error's gradient); with δ = 0.1 the
    # gradient is clipped: they differ.
    assert not np.allclose(small.gradients(X, Y).weights[-1], large.gradients(X, Y).weights[-1])
    assert fastgd.gradient_check(small, X[:5], Y[:5]).max_relative_error < 1e-5
    history = small.fit(X, Y, optimizer=fastgd.SGD(lr=0.05), epochs=3, shuffle=False)
    # The epoch's loss is measured before each step: the first is the loss at the start.
    start = fastgd.Network(
        [3, 5, 2], output_activation="identity", loss="huber", loss_options={"delta": 0.1}, random_state=0
    )
    assert history.loss[0] == pytest.approx(start.loss(X, Y), rel=1e-12)


@pytest.mark.parametrize(
    "loss, options, error, words",
    [
        ("huber", [("delta", 1.0)], TypeError, "loss_options must be a dict"),
        ("huber", {"beta": 1.0}, ValueError, "takes only ['delta']"),
        ("huber", {"delta": 0.0}, ValueError, "must be > 0"),
        ("huber", {"delta": -1.0}, ValueError, "loss_options['delta']"),
        ("huber", {"delta": float("nan")}, ValueError, "finite"),
        ("huber", {"delta": "1"}, TypeError, "real number"),
        ("mse", {"delta": 1.0}, ValueError, "loss 'mse' takes none"),
    ],
)
def test_bad_options_are_refused_by_name(loss, options, error, words):
    with pytest.raises(error, match="loss_options") as raised:
        fastgd.Network([3, 5, 2], loss=loss, loss_options=options)
    assert words in str(raised.value)


def test_copies_and_files_keep_the_options(tmp_path, data):
    X, Y = data
    net = fastgd.Network(
        [3, 5, 2], output_activation="identity", loss="huber", loss_options={"delta": 0.3}, random_state=0
    )
    net.fit(X, Y, epochs=2)
    path = tmp_path / "huber.fgd"
    net.save(path)
    loaded = fastgd.load(path)
    for other in (loaded, net.copy(), net.copy(backend="numpy")):
        assert other.loss_options == {"delta": 0.3} and other.loss_parameter == 0.3
        assert other.loss(X, Y) == pytest.approx(net.loss(X, Y), rel=1e-12)
    assert "loss_options={'delta': 0.3}" in repr(net)
    assert net.get_config()["loss_options"] == {"delta": 0.3}
