"""Real data: scikit-learn's bundled digits (no network access needed)."""

import numpy as np
import pytest

import fastgd

datasets = pytest.importorskip("sklearn.datasets")
model_selection = pytest.importorskip("sklearn.model_selection")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_digits_classifier_reaches_95_percent(dtype):
    X, y = datasets.load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = model_selection.train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    net = fastgd.Network([64, 64, 10], activation="tanh", loss="crossentropy", dtype=dtype, random_state=0)
    history = net.fit(X_train, y_train, optimizer=fastgd.Adam(lr=1e-3), epochs=60, batch_size=32)
    accuracy = np.mean(net.predict(X_test).argmax(axis=1) == y_test)
    assert accuracy >= 0.95, accuracy
    assert history.loss[-1] < history.loss[0] / 10
