"""Real data: scikit-learn's bundled digits (no network access needed)."""

import numpy as np
import pytest

import fastgd

datasets = pytest.importorskip("sklearn.datasets")
model_selection = pytest.importorskip("sklearn.model_selection")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_digits_classifier_reaches_95_percent(dtype):
    X, y = datasets.load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = model_selection.train_test_split(
        X / 16.0, y, test_size=0.25, random_state=0, stratify=y
    )
    net = fastgd.Network([64, 64, 10], activation="tanh", loss="crossentropy", dtype=dtype, random_state=0)
    history = net.fit(X_train, y_train, optimizer=fastgd.Adam(lr=1e-3), epochs=60, batch_size=32)
    accuracy = np.mean(net.predict(X_test).argmax(axis=1) == y_test)
    assert accuracy >= 0.95, accuracy
    assert history.loss[-1] < history.loss[0] / 10


def test_digits_workload_reaches_97_percent_on_average_over_splits():
    # The benchmark workload W5 (64-64-10 sigmoid/softmax, crossentropy, Adam lr 1e-3, batch 32,
    # 200 epochs, float32) on the bundled digits. One split of 450 test images moves accuracy in
    # steps of 0.0022 and the splits here range over 0.96-0.99, so the target is on the mean of
    # five stratified splits; scikit-learn's MLPClassifier with the same recipe averages about
    # the same (0.973) on them.
    from fastgd.datasets import load_digits

    accuracies = []
    for split in range(5):
        X_train, X_test, y_train, y_test = load_digits(random_state=split)
        net = fastgd.Network([64, 64, 10], activation="sigmoid", loss="crossentropy", dtype="float32", random_state=0)
        net.fit(X_train, y_train, optimizer=fastgd.Adam(lr=1e-3), epochs=200, batch_size=32)
        prediction = net.predict(X_test)
        assert prediction.dtype == np.float32
        accuracies.append(np.mean(prediction.argmax(axis=1) == y_test))
    assert np.mean(accuracies) >= 0.97, accuracies
    assert min(accuracies) >= 0.95, accuracies
