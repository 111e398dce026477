"""The classic XOR example of ../shared/spec/background.md, reproduced exactly."""

import numpy as np
import pytest

import fastgd

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
Y = np.array([[0], [1], [1], [0]], dtype=float)
EPOCHS = 10_000
LR = 0.1


def classic_xor():
    """The classic code, transcribed line by line: returns final weights and the printed losses."""

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    np.random.seed(42)
    W1 = np.random.uniform(-1, 1, (2, 4))
    W2 = np.random.uniform(-1, 1, (4, 1))
    b1 = np.zeros((1, 4))
    b2 = np.zeros((1, 1))
    losses = []
    for _ in range(EPOCHS):
        h = sigmoid(X @ W1 + b1)
        out = sigmoid(h @ W2 + b2)
        losses.append(np.mean(0.5 * (Y - out) ** 2))
        d_out = (Y - out) * out * (1 - out)
        d_hidden = (d_out @ W2.T) * h * (1 - h)
        W2 += h.T @ d_out * LR
        b2 += np.sum(d_out, axis=0, keepdims=True) * LR
        W1 += X.T @ d_hidden * LR
        b1 += np.sum(d_hidden, axis=0, keepdims=True) * LR
    return (W1, b1.ravel(), W2, b2.ravel()), np.array(losses)


@pytest.fixture(scope="module")
def classic():
    return classic_xor()


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_xor_reproduces_the_classic_code(classic, backend):
    (W1, b1, W2, b2), classic_losses = classic
    net = fastgd.Network(
        [2, 4, 1],
        activation="sigmoid",
        loss="sse",
        init="uniform",
        random_state=np.random.RandomState(42),
        backend=backend,
    )
    # Same initial weights as the classic code's draws from the legacy generator seeded with 42.
    np.random.seed(42)
    np.testing.assert_array_equal(net.weights[0], np.random.uniform(-1, 1, (2, 4)))
    np.testing.assert_array_equal(net.weights[1], np.random.uniform(-1, 1, (4, 1)))

    history = net.fit(X, Y, optimizer=fastgd.SGD(lr=LR), epochs=EPOCHS, batch_size=None)

    for got, want in zip([net.weights[0], net.biases[0], net.weights[1], net.biases[1]], [W1, b1, W2, b2]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # sse = ½ Σ (y − a)²; the classic prints mean(½ (y − a)²) over its 4 rows x 1 output.
    np.testing.assert_allclose(np.array(history.loss) / 4, classic_losses, rtol=1e-10)
    # And it solves XOR.
    np.testing.assert_array_equal(np.round(net.predict(X)), Y)
    assert history.loss[-1] < 0.01 < history.loss[0]
