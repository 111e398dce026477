"""Small data sets shipped with fastgd, so the demo and benchmarks need no download."""

from __future__ import annotations

from importlib import resources

import numpy as np


def xor():
    """The four XOR rows: ``X`` (4, 2) and ``y`` (4, 1), float64."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    return X, y


def load_digits(test_fraction=0.25, random_state=0):
    """The 8x8 handwritten digits (1797 images, the same data as ``sklearn.datasets.load_digits``).

    Source: UCI ML "Optical Recognition of Handwritten Digits" (E. Alpaydin, C. Kaynak), CC BY 4.0.

    Parameters
    ----------
    test_fraction : float
        Share of rows held out, drawn per class so both parts keep the class balance.
    random_state : int

    Returns
    -------
    X_train, X_test : ndarray of float64, shape (n, 64), pixel values scaled to [0, 1]
    y_train, y_test : ndarray of int64, shape (n,), labels 0..9
    """
    with resources.files("fastgd").joinpath("data/digits.npz").open("rb") as handle:
        data = np.load(handle, allow_pickle=False)
        X = data["images"].astype(np.float64) / 16.0
        y = data["target"].astype(np.int64)
    rng = np.random.default_rng(random_state)
    test = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        test[rng.choice(rows, size=int(round(test_fraction * len(rows))), replace=False)] = True
    return X[~test], X[test], y[~test], y[test]
